"""One TCP connection: framing, request order, back-pressure. No license rule, no session logic.

The protocol reads every whole frame a `data_received` brings, has its handler answer them in
order, and writes all the replies with one `write` (pipelined requests cost one system call per
batch, not one per request). A broken frame gets `bad_frame` and the connection closes; nothing
else is touched. It knows its handler only through `Handler`, so request handling runs the same
over a real socket and over the in-process test harness (licmaster.testing).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from licmaster.daemon.sessions import Session
from licmaster.wire.codec import FrameDecoder, FrameError, Reply, encode, encode_many
from licmaster.wire.replies import broken_frame_reply


class Handler(Protocol):
    """What a connection needs of the master."""

    def opened(self, conn: Connection) -> None: ...
    def lost(self, conn: Connection) -> None: ...
    def handle(self, conn: Connection, batch: list[dict[str, Any]]) -> list[Reply]: ...
    def bad_frame(self, conn: Connection, why: str) -> None: ...
    def hello_timeout(self, conn: Connection) -> None: ...


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

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
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
        replies = self.handler.handle(self, messages)
        if broken is not None and not self.closing:
            replies.append(broken_frame_reply(str(broken)))
            self.handler.bad_frame(self, str(broken))
            self.closing = True
        transport = self.transport
        if transport is None:
            return
        if replies:
            transport.write(encode_many(replies))
        if self.closing:
            transport.close()  # after the replies already written

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hello_timer:
            self._hello_timer.cancel()
        self.closing = True
        self.transport = None
        self.handler.lost(self)

    def pause_writing(self) -> None:
        # The peer does not read its replies: stop reading its requests (bounded memory).
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

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

    def close(self, event: dict[str, Any] | None = None) -> None:
        """Close after what was written; an event (e.g. `fenced`) goes out first."""
        if event is not None:
            self.send_event(event)
        self.closing = True
        if self.transport is not None:
            self.transport.close()
