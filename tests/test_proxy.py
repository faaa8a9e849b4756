"""The links a drill cuts (slave_sim/proxy.py): whole, cut both ways, cut one way, healed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from slave_sim.proxy import Link


class Echo:
    """A server that answers each line with the line, and keeps what it received."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.address: tuple[str, int] = ("127.0.0.1", 0)


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    state = Echo()
    received = state.received

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                received.append(line)
                writer.write(line)
                await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.address = server.sockets[0].getsockname()[:2]
    yield state
    server.close()


async def round_trip(link: Link, line: bytes) -> bytes | None:
    reader, writer = await asyncio.open_connection(*link.address)
    writer.write(line)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.readline(), 0.3)
    except TimeoutError:
        return None
    finally:
        writer.transport.abort()


async def test_a_link_carries_until_cut_and_again_once_healed(echo: Echo) -> None:
    link = await Link("l", echo.address).start()
    assert await round_trip(link, b"a\n") == b"a\n"
    link.set_cut(True)
    assert await round_trip(link, b"b\n") is None  # a partition: no answer, no error
    link.set_cut(False)
    assert await round_trip(link, b"c\n") == b"c\n"
    await link.stop()


@pytest.mark.parametrize(("direction", "arrives"), [("up", False), ("down", True)])
async def test_a_one_way_cut_loses_one_direction_only(echo: Echo, direction: str, arrives: bool) -> None:
    link = await Link("l", echo.address).start()
    received = echo.received
    link.set_cut(True, direction)
    assert not link.cut  # not a full partition
    assert await round_trip(link, b"x\n") is None  # either way the sender hears nothing back
    await asyncio.sleep(0.05)
    assert (b"x\n" in received) is arrives  # cut down: the request arrived, its answer was lost
    with pytest.raises(ValueError):
        link.set_cut(True, "sideways")
    await link.stop()
