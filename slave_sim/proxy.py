"""Links a drill can cut: a TCP proxy on 127.0.0.1 per named link (`standby-master`: the standby
master's connection to the master; `master-etcd`: the master's to etcd).

Cut, a link behaves as a partition does, not as a crash: nothing goes through in either
direction, nothing is closed (no RST: the ends find out by their own timeouts), and new
connections are accepted but lead nowhere. Healed, new connections go through again; the ones
that were cut are dropped then, as their ends would find them dead anyway.
"""

from __future__ import annotations

import asyncio
import contextlib


class Link:
    def __init__(self, name: str, target: tuple[str, int]) -> None:
        self.name = name
        self.target = target
        self.cut = False
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

    def set_cut(self, cut: bool) -> None:
        if self.cut and not cut:
            self._drop_all()  # the ends of a cut connection are dead to each other by now
        self.cut = cut

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
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                if not self.cut:  # cut: swallowed, as a partition loses packets
                    dst.write(data)
                    await dst.drain()
            if not self.cut:
                dst.close()
