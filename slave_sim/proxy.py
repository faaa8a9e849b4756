"""Links a drill can cut: a TCP proxy on 127.0.0.1 per named link (`standby-master`: the standby
master's connection to the master; `master-etcd`: the master's to etcd).

Cut, a link behaves as a partition does, not as a crash: nothing goes through in either
direction, nothing is closed (no RST: the ends find out by their own timeouts), and new
connections are accepted but lead nowhere. Cut one way (`up`: towards the target, `down`: back
from it), connections are made and what goes the other way still passes: an asymmetric
partition. Healed, new connections go through again; the ones that were cut are dropped then,
as their ends would find them dead anyway.
"""

from __future__ import annotations

import asyncio
import contextlib


class Link:
    def __init__(self, name: str, target: tuple[str, int]) -> None:
        self.name = name
        self.target = target
        self.cut_up = False  # what goes to the target is lost
        self.cut_down = False  # what comes back from it is lost
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    async def start(self) -> Link:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        sock = self._server.sockets[0].getsockname()
        self.address = (sock[0], sock[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        self._drop_all()

    @property
    def cut(self) -> bool:
        """Cut both ways: a full partition."""
        return self.cut_up and self.cut_down

    def set_cut(self, cut: bool, direction: str = "both") -> None:
        """Cut (`both`, `up` or `down`), or heal every direction (cut=False)."""
        if not cut:
            if self.cut_up or self.cut_down:
                self._drop_all()  # the ends of a cut connection are dead to each other by now
            self.cut_up = self.cut_down = False
            return
        if direction not in ("both", "up", "down"):
            raise ValueError(f"direction: both, up or down, not {direction!r}")
        self.cut_up = self.cut_up or direction in ("both", "up")
        self.cut_down = self.cut_down or direction in ("both", "down")

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.cut:  # accepted, and leads nowhere
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                while await reader.read(65536):
                    pass
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        for src, dst, up in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.get_running_loop().create_task(self._pump(src, dst, up))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                if not (self.cut_up if up else self.cut_down):  # cut: swallowed, as a partition loses packets
                    dst.write(data)
                    await dst.drain()
            if not (self.cut_up if up else self.cut_down):
                dst.close()
