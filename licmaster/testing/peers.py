"""Raw protocol peers: send maps, read maps (replies and events), over a socket or in-process."""

from __future__ import annotations

import asyncio
from typing import Any

from licmaster.wire.codec import FrameDecoder, encode

DEFAULT_HELLO = {"role": "pbx", "firmware": 13, "platform": "gateway", "mac": "00:90:33:00:00:01", "licensing": "central"}


class RawPeer:
    """The protocol side of a peer; subclasses move the bytes."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder(1 << 24)
        self.inbox: list[dict[str, Any]] = []
        self.ids = 0

    def send_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    async def _read(self, timeout: float) -> bytes:
        """The next bytes from the master; b"" once it closed the connection."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def send(self, message: dict[str, Any]) -> None:
        self.send_bytes(encode(message))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        while not self.inbox:
            data = await self._read(timeout)
            if not data:
                raise ConnectionError("closed by the master")
            self.inbox += self.decoder.feed(data)
        return self.inbox.pop(0)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self.ids += 1
        self.send({"op": op, "id": self.ids, **fields})
        while True:
            reply = await self.recv()
            if reply.get("id") == self.ids or "event" not in reply:
                return reply

    async def hello(self, node: str, **fields: Any) -> dict[str, Any]:
        hello = {"node": node, **DEFAULT_HELLO, **fields}
        return await self.request("hello", **{k: v for k, v in hello.items() if v is not None})

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the master closed this connection (events before the close are kept)."""
        try:
            while True:
                data = await self._read(timeout)
                if not data:
                    return True
                self.inbox += self.decoder.feed(data)
        except ConnectionError:
            return True
        except TimeoutError:
            return False


class SocketPeer(RawPeer):
    """Over a real TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, address: tuple[str, int]) -> SocketPeer:
        return cls(*await asyncio.open_connection(*address))

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    async def _read(self, timeout: float) -> bytes:
        return await asyncio.wait_for(self.reader.read(65536), timeout)

    def close(self) -> None:
        self.writer.close()
