"""One TCP connection of a PBX: framing, request order, back-pressure. No license rule here.

The protocol class reads every whole frame a `data_received` brings, has the master answer
each in order, and writes all the replies with one `write` (pipelined requests cost one system
call per batch, not one per request). A broken frame gets `bad_frame` and the connection closes;
nothing else is touched.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from . import errors as E
from .codec import FrameDecoder, FrameError, encode, encode_many
from .pool import Node

if TYPE_CHECKING:
    from .server import Master


class Session:
    """A node's session: it outlives its connection until `bye`, expiry or takeover."""

    __slots__ = ("node", "id", "conn", "last_seen", "info", "since")

    def __init__(self, node: str, session_id: str, conn: Connection, now: float, info: Node) -> None:
        self.node = node
        self.id = session_id
        self.conn: Connection | None = conn
        self.last_seen = now
        self.info = info
        self.since = now


class Connection(asyncio.Protocol):
    def __init__(self, master: Master) -> None:
        self.master = master
        self.decoder = FrameDecoder(master.config.max_frame)
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.closing = False
        self.shed = False  # over max_connections: the first request is answered `busy`
        self.peer: Any = None
        self._hello_timer: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = transport.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        self._hello_timer = loop.call_later(self.master.config.hello_timeout_ms / 1000, self._hello_timeout)
        self.master.connection_made(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        broken: FrameError | None = None
        try:
            messages = self.decoder.feed(data)
        except FrameError as exc:
            messages, broken = exc.decoded, exc  # type: ignore[attr-defined]
        master = self.master
        now = master.loop.time()
        master.wall = time.time()
        replies = master.handle_batch(self, messages, now)
        if broken is not None and not self.closing:
            replies.append({"id": None, "ok": False, "error": E.BAD_FRAME, "message": f"broken frame: {broken}"})
            self.master.note_bad_frame(self, str(broken))
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
        self.master.connection_lost(self)

    def pause_writing(self) -> None:
        # The peer does not read its replies: stop reading its requests (bounded memory).
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # ---------------------------------------------------------------- for the master

    def hello_done(self) -> None:
        if self._hello_timer:
            self._hello_timer.cancel()
            self._hello_timer = None

    def _hello_timeout(self) -> None:
        if self.session is None and not self.closing:
            self.master.note_hello_timeout(self)
            self.close()

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
