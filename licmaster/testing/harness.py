"""A real master in this process and loop, its connections fed through a fake transport.

Everything but the socket is the real thing: config parsing, the store and journal (SQLite in a
temporary directory), the pool, the dispatcher, the protocol class, timers (hello timeout,
expiry, grace). A test reads the reply bytes the master wrote, exactly as a client would.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from licmaster.daemon.config import load_config
from licmaster.daemon.ha.etcd import EtcdClient
from licmaster.daemon.master import Master
from licmaster.daemon.protocol import Connection
from licmaster.testing.peers import RawPeer
from licmaster.testing.process import write_config

_ports = itertools.count(40000)
READ_SIZE = 65536  # what one socket read hands the protocol at most


class FakeTransport(asyncio.Transport):
    """What the protocol writes is kept for the peer until it reads it; flow control as asyncio
    does it (pause_writing above the high-water mark, resume_writing below the low one once the
    peer has read); closing is reported the way asyncio does, on the next loop turn."""

    def __init__(self, protocol: Connection) -> None:
        super().__init__()
        self.protocol = protocol
        self.buffer = bytearray()
        self.written = asyncio.Event()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.high, self.low = 64 * 1024, 16 * 1024
        self.inbound = bytearray()  # sent by the peer, not yet read by the protocol
        self.writing_paused = False
        self._peername = ("127.0.0.1", next(_ports))

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = high if high is not None else self.high
        self.low = low if low is not None else self.high // 4

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            return
        self.buffer += data
        self.written.set()
        if not self.writing_paused and len(self.buffer) > self.high:
            self.writing_paused = True
            self.protocol.pause_writing()

    def drained(self) -> None:
        """The peer read what was written: below the low-water mark, writing resumes."""
        if self.writing_paused and len(self.buffer) <= self.low:
            self.writing_paused = False
            self.protocol.resume_writing()

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self.buffer.clear()
        self._lose()

    def _lose(self) -> None:
        if not self.closed:
            self.closed = True
            self.written.set()
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peername if name == "peername" else default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        if not self.reading:
            self.reading = True
            asyncio.get_running_loop().call_soon(self.deliver)

    def receive(self, data: bytes) -> None:
        """Bytes from the peer, handed to the protocol as a socket would: in reads of at most
        64 KiB, and not while the protocol has paused reading (they wait, like a socket buffer)."""
        self.inbound += data
        self.deliver()

    def deliver(self) -> None:
        """One read now; the next on a later loop turn, as the event loop does for a socket."""
        if self.inbound and self.reading and not self.closed:
            data = bytes(self.inbound[:READ_SIZE])
            del self.inbound[:READ_SIZE]
            self.protocol.data_received(data)
            if self.inbound:
                asyncio.get_running_loop().call_soon(self.deliver)

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)


class InProcessPeer(RawPeer):
    """A peer whose bytes go straight into the master's protocol object."""

    def __init__(self, conn: Connection, transport: FakeTransport) -> None:
        super().__init__()
        self.conn, self.transport = conn, transport

    def send_bytes(self, data: bytes) -> None:
        if not self.transport.closed:
            self.transport.receive(data)

    async def _read(self, timeout: float) -> bytes:
        t = self.transport
        async with asyncio.timeout(timeout):
            while not t.buffer and not t.closed:
                t.written.clear()
                await t.written.wait()
        data = bytes(t.buffer)
        t.buffer.clear()
        t.drained()
        return data

    def close(self) -> None:
        self.transport._lose()

    def settle(self) -> None:
        """Do now what the loop would do over its next turns for this connection: every read
        the peer's bytes make, every pending request (for tests that cannot await)."""
        t, conn = self.transport, self.conn
        for _ in range(100_000):
            if t.closed or conn.stalled_since is not None:
                return
            if conn.has_pending:
                conn._pump()
            elif t.inbound and t.reading:
                t.deliver()
            else:
                return

    def take(self) -> list[dict[str, Any]]:
        """Every message the master has written so far (the handling is synchronous: a request
        sent is answered before `send` returns)."""
        data = bytes(self.transport.buffer)
        self.transport.buffer.clear()
        self.transport.drained()
        self.inbox += self.decoder.feed(data)
        out, self.inbox = self.inbox, []
        return out

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """A request answered at once, without awaiting: for hypothesis tests, which are not async."""
        self.ids += 1
        self.send({"op": op, "id": self.ids, **fields})
        self.settle()
        replies = [m for m in self.take() if m.get("id") == self.ids]
        if len(replies) != 1:
            raise AssertionError(f"expected one reply to {op} id {self.ids}, got {replies}")
        return replies[0]


class InProcessMaster:
    """`Master` on a config written as for `licmaster serve`, without a listener."""

    def __init__(self, workdir: Path, licenses: str, *, name: str = "test-master",
                 etcd_client: Callable[[Sequence[str]], EtcdClient] | None = None, **config: Any) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.etcd_client = etcd_client  # a model of etcd in place of the real client (licmaster/testing/etcd_model.py)
        self.workdir = workdir
        self.license_file = workdir / "licenses.toml"
        self.license_file.write_text(licenses)
        self.config = {"data_dir": str(workdir / "data"), "licenses": [str(self.license_file)], **config}
        self.name = name
        self.master: Master | None = None

    async def start(self) -> InProcessMaster:
        path = write_config(self.workdir / "licmaster.toml", self.config)
        self.master = Master(load_config(path), name=self.name) if self.etcd_client is None else \
            Master(load_config(path), name=self.name, etcd_client=self.etcd_client)
        self.master.config_file = path  # as `licmaster serve --config` does: a reload re-reads the tokens
        await self.master.start(listen=False)
        return self

    async def connect(self) -> InProcessPeer:
        return self.connect_now()

    def connect_now(self) -> InProcessPeer:
        """A new connection, made at once (for tests that are not async, e.g. hypothesis)."""
        assert self.master is not None
        conn = self.master.new_connection()
        transport = FakeTransport(conn)
        conn.connection_made(transport)
        return InProcessPeer(conn, transport)

    async def stop(self, reason: str = "stopping") -> None:
        if self.master is not None:
            await self.master.stop(reason)
            self.master = None
            await asyncio.sleep(0)  # let the closed connections report it
