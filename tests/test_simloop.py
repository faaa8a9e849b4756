"""The virtual-time loop and in-memory network (licmaster/testing/simloop.py): the real Master and
real MasterClients on one virtual clock, an hour in seconds, the same history from the same seed."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from pathlib import Path
from typing import Any

import pytest

from licmaster.client import LicenseError, MasterClient, NotConnected
from licmaster.daemon.config import Config
from licmaster.daemon.master import Master
from licmaster.testing.simloop import HOST, WALL_EPOCH, Inline, Stalled, VirtualLoop

from .daemon import in_virtual_time

LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 12\n'


async def office_day(workdir: Path, seed: int, hours: float) -> list[tuple[Any, ...]]:
    """A master and 5 PBXs whose phones come and go for `hours`; the branch cut off for a minute
    at half time. The history: what each PBX was answered, when (virtual seconds)."""
    random.seed(seed)  # the clients' jitter
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "licenses.toml").write_text(LICENSES)
    master = Master(Config(listen="127.0.0.1:4460", http="", data_dir=workdir / "data", licenses=(workdir / "licenses.toml",)),
                    io_executor=Inline())
    await master.start()
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualLoop)
    history: list[tuple[Any, ...]] = []

    clients: dict[int, MasterClient] = {}

    def branch_believes() -> dict[Any, Any]:
        return clients[5].believed()

    async def pbx(n: int) -> None:
        HOST.set(f"10.0.0.{n}")
        client = clients[n] = MasterClient(["127.0.0.1:4460"], f"pbx{n}", mac=f"00:90:33:00:00:0{n}", connect_timeout=2.0, max_retry_s=5)
        await client.connect()
        if n == 5:
            await client.checkout("port", "the-branch-desk")  # held all day: the branch has something to keep when cut off
        while loop.time() < hours * 3600:
            holder = f"phone{rng.randrange(6)}"
            try:
                if ("port", holder) in client.leases:
                    await client.checkin("port", holder)
                    history.append((round(loop.time(), 6), client.node, "checkin", holder, "ok"))
                else:
                    await client.checkout("port", holder)
                    history.append((round(loop.time(), 6), client.node, "checkout", holder, "ok"))
            except (LicenseError, NotConnected, TimeoutError) as exc:
                history.append((round(loop.time(), 6), client.node, "refused", holder, getattr(exc, "code", type(exc).__name__)))
            await asyncio.sleep(rng.uniform(5, 120))
        history.append((round(loop.time(), 6), client.node, "believed", len(client.believed())))
        await client.close()

    async def cut_the_branch() -> None:
        await asyncio.sleep(hours * 1800)
        loop.network.set_cut("10.0.0.5", "127.0.0.1")
        await asyncio.sleep(60)  # 20 lease TTLs: absent, within its hold
        history.append((round(loop.time(), 6), "network", "absent", master.status().absent_pbxs, len(branch_believes())))
        loop.network.heal("10.0.0.5", "127.0.0.1")

    await asyncio.gather(*(pbx(n) for n in range(1, 6)), cut_the_branch())
    await master.stop()
    return history


def run(workdir: Path, seed: int, hours: float) -> list[tuple[Any, ...]]:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(office_day(workdir, seed, hours))
    finally:
        loop.close()


def digest(history: list[tuple[Any, ...]]) -> str:
    return hashlib.sha256(repr(history).encode()).hexdigest()


def test_an_hour_of_a_real_master_and_its_pbxs_runs_in_seconds_and_the_same_seed_gives_the_same_history(tmp_path: Path) -> None:
    started = time.process_time()
    first = run(tmp_path / "a", seed=7, hours=1.0)
    cpu_s = time.process_time() - started
    again = run(tmp_path / "b", seed=7, hours=1.0)
    other = run(tmp_path / "c", seed=8, hours=1.0)
    assert digest(first) == digest(again) and digest(first) != digest(other)
    assert first[-1][0] >= 3600  # an hour of virtual time...
    print(f"an hour of virtual time in {cpu_s:.2f} CPU s")  # ...in a few seconds of CPU (not asserted: shared machine)
    [(at, _, _, absent, believed)] = [h for h in first if h[1] == "network"]
    assert at == 1860.0 and absent == 1 and believed >= 1  # the branch cut off: absent, and its phones still up
    assert sum(1 for h in first if h[2] in ("checkout", "checkin")) > 100
    assert all(h[4] != "lapsed" for h in first if len(h) > 4)  # nobody lost service within its hold


def test_a_loop_where_every_task_waits_and_no_timer_is_due_says_so_instead_of_hanging() -> None:
    loop = VirtualLoop()

    async def waits_for_ever() -> None:
        await asyncio.get_running_loop().create_future()

    try:
        with pytest.raises(Stalled, match="every task waits"):
            loop.run_until_complete(waits_for_ever())
    finally:
        loop.close()


class Echo(asyncio.Protocol):
    """A server that sends back what it gets, and notes when it got it."""

    def __init__(self, got: list[tuple[float, bytes]]) -> None:
        self.got = got

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got.append((asyncio.get_running_loop().time(), data))
        self.transport.write(data)


class Gather(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""

    def data_received(self, data: bytes) -> None:
        self.data += data


def test_a_paused_host_runs_nothing_its_sockets_queue_in_order_and_its_clock_runs_on() -> None:
    async def main(loop: VirtualLoop) -> tuple[list[tuple[float, bytes]], list[float], bytes, float]:
        got: list[tuple[float, bytes]] = []
        ticks: list[float] = []

        async def server() -> None:  # a process on 10.1.0.1: a listener and a ticker
            HOST.set("10.1.0.1")
            await loop.create_server(lambda: Echo(got), "10.1.0.1", 4460)
            while True:
                await asyncio.sleep(1.0)
                ticks.append(loop.time())

        loop.create_task(server())
        await asyncio.sleep(0.5)
        HOST.set("10.0.0.1")
        transport, client = await loop.create_connection(Gather, "10.1.0.1", 4460)
        assert isinstance(transport, asyncio.Transport) and isinstance(client, Gather)
        loop.pause("10.1.0.1")
        for chunk in (b"1", b"2", b"3"):
            transport.write(chunk)
            await asyncio.sleep(2.0)
        assert not got and client.data == b"" and ticks == []  # stopped: nothing ran, nothing answered
        loop.resume("10.1.0.1")
        resumed = loop.time()
        await asyncio.sleep(0.5)
        return got, ticks, client.data, resumed

    got, ticks, echoed, resumed = in_virtual_time(main)
    assert [data for _, data in got] == [b"1", b"2", b"3"] and {at for at, _ in got} == {resumed}  # queued, then all at once
    assert echoed == b"123" and resumed > 6
    assert ticks[0] == resumed  # its timer, overdue, runs at the resume: the clock ran on meanwhile


def test_what_a_host_wrote_and_closed_before_it_crashed_still_reaches_a_paused_peer() -> None:
    # TCP delivers the data and the FIN of a connection closed before its process died. The
    # network's reset aborted the peer's end too: a standby paused while its master dropped it
    # (`replica_dropped`, then close), the master then killed, never read why, and took over as
    # if its stream were whole (`slave-sim sim --seed 1303`, 61 of 60).
    async def main(loop: VirtualLoop) -> tuple[bytes, bool, bool]:
        HOST.set("10.1.0.1")
        ends: list[asyncio.Transport] = []

        class Dropper(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                ends.append(transport)

        await loop.create_server(Dropper, "10.1.0.1", 4460)
        HOST.set("10.1.0.2")
        _, standby = await loop.create_connection(Closing, "10.1.0.1", 4460)
        assert isinstance(standby, Closing)
        HOST.set("10.0.0.9")  # this test goes on as another host
        loop.pause("10.1.0.2")
        ends[0].write(b"replica_dropped")
        ends[0].close()
        await asyncio.sleep(1)
        ongoing = await loop.create_connection(Closing, "10.1.0.1", 4460)  # open when the host dies
        loop.network.reset("10.1.0.1")  # the master killed
        loop.resume("10.1.0.2")
        await asyncio.sleep(1)
        return standby.data, standby.lost, ongoing[1].lost  # type: ignore[attr-defined]

    data, lost, ongoing_lost = in_virtual_time(main)
    assert data == b"replica_dropped" and lost and ongoing_lost  # read, then its end; the open one reset


class Closing(Gather):
    def __init__(self) -> None:
        super().__init__()
        self.lost = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


def test_bytes_written_in_one_instant_arrive_in_order_among_many_timers() -> None:
    async def main(loop: VirtualLoop) -> bytes:
        HOST.set("10.1.0.1")
        await loop.create_server(lambda: Echo([]), "10.1.0.1", 4460)
        HOST.set("10.0.0.1")
        for n in range(200):  # timers due at the same instant as the bytes: the heap must not reorder them
            loop.call_later(loop.network.latency_s * (n % 3), lambda: None)
        transport, client = await loop.create_connection(Gather, "10.1.0.1", 4460)
        assert isinstance(transport, asyncio.Transport) and isinstance(client, Gather)
        for n in range(100):
            transport.write(b"%d," % n)
            if n % 7 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(1.0)
        return client.data

    assert in_virtual_time(main) == b"".join(b"%d," % n for n in range(100))


def test_the_wall_clock_each_host_reads_follows_the_virtual_clock_and_its_own_offset() -> None:
    async def main(loop: VirtualLoop) -> list[float]:
        seen = []
        with loop.virtual_wall_clock():
            await asyncio.sleep(10.0)
            loop.wall_offset["10.1.0.1"] = 3600.0  # its clock stepped an hour ahead

            async def on(host: str) -> None:
                HOST.set(host)
                seen.append(time.time())

            await asyncio.gather(on("10.1.0.1"), on("10.1.0.2"))
        seen.append(time.time())
        return seen

    ahead, right, after = in_virtual_time(main)
    assert (ahead, right) == (WALL_EPOCH + 10 + 3600, WALL_EPOCH + 10)
    assert abs(after - time.time()) < 60  # the real clock is back once the simulation ends
