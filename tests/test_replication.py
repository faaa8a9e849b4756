"""The standby's side of replication (daemon/ha/replication.py's Follower) against a real master
process: only silence makes a standby take over, never a refusal or a frame it cannot read; and a
master of city size (30,000 leases) is followed and failed over with nothing lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from licmaster.client import MasterClient
from licmaster.daemon.ha.recovery import Holdings
from licmaster.daemon.ha.replication import Follower
from licmaster.daemon.storage.store import Store

from .daemon import Daemon, next_event

TOKEN = "installation-token-1"
LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 10\n'


class Takeovers:
    """What the follower's on_takeover was called with, and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int]] = []

    def __call__(self, holdings: Holdings, epoch: int) -> None:
        self.calls.append((time.monotonic(), epoch))


@pytest.mark.parametrize(("kind", "follower_args", "says"), [
    ("auth", {"auth": {"token": "another-installation"}}, "auth_failed"),
    ("version", {"auth": {"token": TOKEN}, "stream": 99}, "version"),
    ("frame", {"auth": {"token": TOKEN}, "max_frame": 64}, "frame length"),  # the master's answer does not fit in 64 bytes
])
async def test_a_standby_that_cannot_attach_never_takes_over_while_the_master_answers(
        tmp_path: Path, kind: str, follower_args: dict[str, Any], says: str) -> None:
    master = Daemon(tmp_path / "master", LICENSES, auth_token=TOKEN).start()
    store = Store(tmp_path / "standby.sqlite3")
    takeovers = Takeovers()
    follower = Follower(master.master, "standby", store, 300, takeovers, **follower_args)
    try:
        follower.start()
        await asyncio.sleep(1.5)  # five times takeover_after_ms
        assert takeovers.calls == [], f"a {kind} refusal was taken for a dead master"
        state = follower.state()
        assert state["status"] == "refused" and says in state["why"], state
        assert state["failures"] >= 2  # tried again, with a pause
        # Silence still counts: once the master is really gone, the standby takes over.
        killed = time.monotonic()
        master.kill9()
        for _ in range(50):
            if takeovers.calls:
                break
            await asyncio.sleep(0.1)
        assert takeovers.calls and takeovers.calls[0][0] - killed < 2.0
    finally:
        await follower.stop()
        store.close()
        master.kill9()


async def test_a_standby_process_refused_by_its_master_stays_a_standby_and_says_why(tmp_path: Path) -> None:
    master = Daemon(tmp_path / "master", LICENSES, auth_token=TOKEN).start()
    standby = Daemon(tmp_path / "standby", LICENSES, auth_token="another-installation", standby_of=master.master,
                     takeover_after_ms=300).start()
    try:
        watcher = MasterClient([standby.master], "watcher", role="observer", auth={"token": "another-installation"})
        await watcher.connect()
        await asyncio.sleep(1.5)
        usage = await watcher.usage()
        assert usage["role"] == "standby" and usage["standby_of"] == master.master
        replication = usage["replication"]
        assert replication["status"] == "refused" and "auth_failed" in replication["why"], replication
        assert "promoted" not in standby.log and "replication_refused" in standby.log
        await watcher.close(bye=False)
    finally:
        standby.kill9()
        master.kill9()


CITY = 30_000
PBXS = 10  # 3,000 leases each: a sync of one of them does not fit in one 64 KiB frame


async def test_a_standby_beside_30000_leases_follows_and_fails_over_losing_none(tmp_path: Path) -> None:
    licenses = f'[[license]]\ntype = "PBX-Port13"\ncount = {CITY}\n'
    master = Daemon(tmp_path / "master", licenses, lease_ttl_ms=5000, grace_ms=3000).start()
    standby: Daemon | None = None
    pbxs: list[MasterClient] = []
    try:
        addresses = [master.master]
        for i in range(PBXS):
            pbx = MasterClient(addresses, f"pbx-{i:02}", connect_timeout=1.0)
            await pbx.connect()
            pbxs.append(pbx)
        half = CITY // PBXS // 2
        await checkout_all(pbxs, range(half))  # before the standby: in its snapshot

        standby = Daemon(tmp_path / "standby", licenses, lease_ttl_ms=5000, grace_ms=3000, standby_of=master.master).start()
        watcher = MasterClient([standby.master], "watcher", role="observer")
        await watcher.connect()
        await until(lambda: watcher.usage(), lambda u: u["replication"].get("status") == "attached")
        await checkout_all(pbxs, range(half, 2 * half))  # after: in the stream, batches of thousands of rows
        await until(lambda: watcher.usage(), lambda u: u["replication"]["leases"] == CITY)
        usage = await watcher.usage()
        assert usage["role"] == "standby"  # never a second master beside a big one
        assert usage["replication"]["snapshot_ms"] is not None and usage["replication"]["failures"] == 0

        lost: list[dict] = []
        for pbx in pbxs:
            pbx.masters.append(tuple(standby.address))  # type: ignore[arg-type]
            pbx.on_event = lambda e: lost.append(e) if e.get("event") == "lost" else None
        master.kill9()
        await next_event(watcher, "epoch")
        for pbx in pbxs:
            await next_event(pbx, "reconnected", timeout=30)
        usage = await watcher.usage()
        ports = sum(p["in_use"] for p in usage["pools"] if p["family"] == "PBX-Port")
        assert (ports, lost) == (CITY, [])  # every lease known, none lost, none over installed
        assert sum(len(p.leases) for p in pbxs) == CITY
        await watcher.close(bye=False)
    finally:
        for pbx in pbxs:
            await pbx.close(bye=False)
        if standby is not None:
            standby.kill9()
        master.kill9()


async def checkout_all(pbxs: list[MasterClient], holders: range) -> None:
    """Every PBX checks out a Port for each holder, pipelined."""
    async def one(pbx: MasterClient) -> None:
        await asyncio.gather(*(pbx.checkout("port", f"phone-{h}") for h in holders))
    await asyncio.gather(*(one(pbx) for pbx in pbxs))


async def until(read: Any, done: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done(await read()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {timeout} s: {await read()}")


async def test_one_read_of_several_pushes_is_acknowledged_once_for_its_last_push(tmp_path: Path) -> None:
    # Under load the master pushes once per turn of its loop and the standby reads several pushes
    # at once: one ack for the read (its last seq) spares the master a request per push, and the
    # standby a reply. (The follower's connection here goes nowhere: its sends are only looked at.)
    from licmaster.wire.events import STREAM_VERSION

    store = Store(tmp_path / "standby.sqlite3")
    follower = Follower("127.0.0.1:1", "standby", store, 1000, Takeovers())
    follower.synced = True
    sent: list[tuple[str, dict[str, Any]]] = []
    send = follower.client.send

    def seen(op: str, **fields: Any) -> Any:
        sent.append((op, fields))
        return send(op, **fields)

    follower.client.send = seen  # type: ignore[method-assign]
    row = [1.0, "grant", "pbx1", "port", "alice", "1", "PBX-Port13", None, None]
    for seq in (1, 2, 3):  # one read: three pushes
        follower._on_event({"event": "replica", "v": STREAM_VERSION, "seq": seq, "rows": [[*row[:5], str(seq), *row[6:]]]})
    assert sent == []  # not within the read
    await asyncio.sleep(0)
    assert sent == [("ack", {"seq": 3})]
    assert sorted(follower.holdings.lease_node) == ["1", "2", "3"]  # every push applied
    assert follower.client.events.empty()  # and none kept in a queue nobody reads
    follower._on_event({"event": "replica", "v": STREAM_VERSION, "seq": 4, "rows": []})
    await asyncio.sleep(0)
    assert sent[-1] == ("ack", {"seq": 4})  # the next read, its own ack
    store.close()
