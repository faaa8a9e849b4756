"""One TCP connection: framing, request order, back-pressure. No license rule, no session logic.

The protocol reads every whole frame a `data_received` brings, has its handler answer them in
order, and writes the replies with one `write` (pipelined requests cost one system call per
batch, not one per request). A broken frame gets `bad_frame` and the connection closes; nothing
else is touched. It knows its handler only through `Handler`, so request handling runs the same
over a real socket and over the in-process test harness (licmaster.testing).

Bounds, so that one connection cannot hold the loop or the memory:
- at most `CHUNK` requests go to the handler at a time, and a loop turn spends at most
  `TURN_BUDGET_S` on one connection; what is left waits (reading paused) for the next turn;
- while the replies not yet sent exceed the transport's high-water mark (`pause_writing`), no
  request is handled and nothing is read; handling resumes below the low-water mark;
- a connection whose replies stay unsent (`stalled_for`) is aborted by the master's reaper.
The common case — a read of at most `CHUNK` requests, nothing waiting — is the unchanged fast path.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from licmaster.daemon.sessions import Session
from licmaster.wire.codec import DEFAULT_MAX_FRAME, FrameDecoder, FrameError, Reply, encode, encode_many
from licmaster.wire.replies import broken_frame_reply


class Handler(Protocol):
    """What a connection needs of the master."""

    def opened(self, conn: Connection) -> None: ...
    def lost(self, conn: Connection) -> None: ...
    def handle(self, conn: Connection, batch: list[dict[str, Any]]) -> list[Reply]: ...
    def bad_frame(self, conn: Connection, why: str) -> None: ...
    def hello_timeout(self, conn: Connection) -> None: ...


CHUNK = 64  # requests per handler call (one call per read in the common case)
TURN_BUDGET_S = 0.002  # a connection's share of one loop turn
HIGH_WATER = 256 * 1024  # unsent reply bytes that stop handling, and the level that resumes it
LOW_WATER = 64 * 1024


class Connection(asyncio.Protocol):
    def __init__(self, handler: Handler, *, max_frame: int, hello_timeout_s: float) -> None:
        self.handler = handler
        self.decoder = FrameDecoder(max_frame)
        self.hello_timeout_s = hello_timeout_s
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.closing = False
        self.shed = False  # over max_connections: the first request is answered `busy`
        self.peer: Any = None
        self._hello_timer: asyncio.TimerHandle | None = None
        self._pending: list[dict[str, Any]] = []  # decoded, not yet handled from _next on (bounds above)
        self._next = 0
        self._broken: FrameError | None = None  # a broken frame after the pending requests
        self._scheduled = False
        self.stalled_since: float | None = None  # loop time the peer stopped taking its replies
        self.reply_limit = DEFAULT_MAX_FRAME  # the largest frame the peer reads (hello's max_frame): larger replies go in parts

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        self._hello_timer = asyncio.get_running_loop().call_later(self.hello_timeout_s, self._hello_timeout)
        self.handler.opened(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        broken: FrameError | None = None
        try:
            messages = self.decoder.feed(data)
        except FrameError as exc:
            messages, broken = exc.decoded, exc
        if len(messages) > CHUNK or self._pending or self.stalled_since is not None:
            if self._pending:
                self._pending += messages
            else:
                self._pending, self._next = messages, 0  # the read's own list: no copy
            self._broken = broken
            self._pump()
            return
        replies = self.handler.handle(self, messages)
        self._finish(replies, broken)

    def _finish(self, replies: list[Reply], broken: FrameError | None) -> None:
        """Write the replies; after a broken frame, say so and close."""
        if broken is not None and not self.closing:
            replies.append(broken_frame_reply(str(broken)))
            self.handler.bad_frame(self, str(broken))
            self.closing = True
        transport = self.transport
        if transport is None:
            return
        if replies:
            transport.write(encode_many(replies, self.reply_limit))
        if self.closing:
            transport.close()  # after the replies already written

    def _pump(self) -> None:
        """Handle what is pending, a chunk at a time, within this turn's budget and while the
        peer takes its replies; then read again, or come back on a later turn."""
        self._scheduled = False
        transport = self.transport
        if transport is None or self.closing:
            self._pending, self._next = [], 0
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TURN_BUDGET_S
        replies: list[Reply] = []
        pending, start = self._pending, self._next
        while start < len(pending) and self.stalled_since is None and not self.closing:
            chunk = pending[start:start + CHUNK]  # slices, not a pop per request: this is the path of deep pipelines
            start += len(chunk)
            replies += self.handler.handle(self, chunk)
            if loop.time() >= deadline:
                break
        self._next = start
        if start >= len(pending):
            self._pending, self._next = [], 0
        if self._pending and not self.closing:
            if replies:
                transport.write(encode_many(replies, self.reply_limit))
            transport.pause_reading()
            if self.stalled_since is None and not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._pump)  # the rest on the next turn: other connections go first
            return
        broken, self._broken = self._broken, None
        self._finish(replies, broken)
        if self.transport is not None and not self.closing and self.stalled_since is None:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hello_timer:
            self._hello_timer.cancel()
        self.closing = True
        self.transport = None
        self.handler.lost(self)

    def pause_writing(self) -> None:
        # The peer does not take its replies: handle and read nothing more until it does.
        self.stalled_since = asyncio.get_running_loop().time()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.stalled_since = None
        if self.transport is None or self.closing:
            return
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)
        elif not self._pending:
            self.transport.resume_reading()

    @property
    def has_pending(self) -> bool:
        """Requests read but not yet handled (more than a turn's worth came, or the peer stalled)."""
        return bool(self._pending)

    def stalled_for(self, now: float) -> float:
        """Seconds the peer has left its replies unread (0 when it takes them)."""
        return 0.0 if self.stalled_since is None else now - self.stalled_since

    # ---------------------------------------------------------------- for the handler

    def hello_done(self) -> None:
        if self._hello_timer:
            self._hello_timer.cancel()
            self._hello_timer = None

    def _hello_timeout(self) -> None:
        if self.session is None and not self.closing:
            self.handler.hello_timeout(self)
            self.close()

    @property
    def open(self) -> bool:
        """Still connected and not closing: events can reach the peer."""
        return self.transport is not None and not self.closing

    def send_event(self, event: dict[str, Any]) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(encode(event))

    def send_replies(self, replies: list[Reply]) -> None:
        """Replies held until the standby masters had what they follow (daemon/ha/feed.py), in order."""
        transport = self.transport
        if transport is not None and replies:
            transport.write(encode_many(replies, self.reply_limit))

    def send_frames(self, frames: bytes) -> None:
        """Frames already encoded (the replica stream's), written as they are."""
        if self.transport is not None and not self.closing:
            self.transport.write(frames)

    def close(self, event: dict[str, Any] | None = None) -> None:
        """Close after what was written; an event (e.g. `fenced`) goes out first. A peer that is
        not taking what was written would hold a graceful close open for ever: it is aborted."""
        if event is not None:
            self.send_event(event)
        self.closing = True
        transport = self.transport
        if transport is None:
            return
        if self.stalled_since is not None:
            transport.abort()
        else:
            transport.close()

    def abort(self) -> None:
        """Drop the connection at once (RST), whatever is unsent."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()
