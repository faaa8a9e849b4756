"""Leadership in etcd: only the leader grants; a standby becomes master only by winning the
election; a leader that cannot renew stops granting before its lease could lapse; with the
quorum lost nobody grants. Real etcd members and real master processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from licmaster.client import LicenseError, MasterClient
from licmaster.daemon.storage.journal import read_journal
from licmaster.testing.etcd import EtcdCluster
from slave_sim.proxy import Link

from .daemon import Daemon, Raw, next_event

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd-server (scripts/setup-test-host)")
LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 5\n'


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "etcd").start()
    yield cluster
    cluster.stop()


async def role_of(daemon: Daemon) -> dict:
    watcher = await Raw.open(daemon.address)
    try:
        assert (await watcher.hello("watch", role="observer"))["ok"]
        return await watcher.request("usage")
    finally:
        watcher.close()


async def until_role(daemon: Daemon, role: str, timeout: float = 10.0) -> dict:
    for _ in range(int(timeout / 0.1)):
        usage = await role_of(daemon)
        if usage["role"] == role:
            return usage
        await asyncio.sleep(0.1)
    raise AssertionError(f"{daemon.master} never became {role}: {usage['role']}")


async def until_in_sync(leader: Daemon, standby: Daemon, timeout: float = 10.0) -> dict:
    """Until the leader's in-sync record in etcd names the standby (it may lead if the leader goes)."""
    for _ in range(int(timeout / 0.1)):
        usage = await role_of(leader)
        if usage["coordination"].get("in_sync") == [standby.master]:
            return usage
        await asyncio.sleep(0.1)
    raise AssertionError(f"{standby.master} never in sync: {usage['coordination']}")


async def test_only_the_leader_grants_and_a_standby_takes_over_only_by_election(tmp_path: Path, etcd: EtcdCluster) -> None:
    a = Daemon(tmp_path / "a", LICENSES, etcd_endpoints=etcd.endpoints).start()
    await until_role(a, "acting")
    b = Daemon(tmp_path / "b", LICENSES, etcd_endpoints=etcd.endpoints).start()
    try:
        usage_b = await until_role(b, "standby")
        for _ in range(100):  # standby from its start; following once it has read who leads
            if usage_b["standby_of"] is not None:
                break
            await asyncio.sleep(0.1)
            usage_b = await role_of(b)
        assert usage_b["standby_of"] == a.master  # it follows the leader etcd names
        pbx = MasterClient([b.master, a.master], "pbx1", connect_timeout=0.5)
        await pbx.connect()
        assert pbx.address == a.address
        for holder in ("x", "y"):
            await pbx.checkout("port", holder)
        epoch_a = pbx.epoch
        await until_in_sync(a, b)  # replicated to b, and b recorded in sync: it may lead
        a.kill9()
        reconnected = await next_event(pbx, "reconnected", timeout=15)
        assert reconnected["master"] == b.master and pbx.epoch > epoch_a  # the epoch is etcd's revision
        assert len(pbx.leases) == 2
        usage = await role_of(b)
        assert usage["role"] in ("grace", "acting") and sum(p["in_use"] for p in usage["pools"]) == 2
        await pbx.close()
    finally:
        b.stop()
        a.stop()


async def test_an_in_sync_standby_elected_after_a_kill_9_serves_new_checkouts_at_once_counting_every_lease(
        tmp_path: Path, etcd: EtcdCluster) -> None:
    # Issue 22 item 3 and issue 27 item 3: with synchronous replication and the in-sync record in
    # etcd, the standby that wins knows every grant the old leader answered: no grace window
    # holds new checkouts back, and a PBX that never comes back keeps its Ports for its hold.
    a = Daemon(tmp_path / "a", LICENSES, etcd_endpoints=etcd.endpoints, grace_ms=5000).start()
    await until_role(a, "acting")
    b = Daemon(tmp_path / "b", LICENSES, etcd_endpoints=etcd.endpoints, grace_ms=5000).start()
    try:
        usage = await until_in_sync(a, b)
        assert usage["replication"]["in_sync"] == 1
        gone = await Raw.open(a.address)  # a PBX that will never come back (cut off for good)
        await gone.hello("branch")
        ids = [(await gone.request("checkout", resource="port", holder=h))["lease"] for h in ("p1", "p2")]
        a.kill9()  # the moment the last reply is in: the standby has both grants (synchronous replication)
        usage = await until_role(b, "acting", timeout=15)
        roles = [r["detail"] for r in read_journal(b.workdir / "data" / "journal.sqlite3", event="role")]
        assert not any("-> grace" in r for r in roles), roles  # no grace window: nothing unknown to wait for
        pbx = MasterClient([b.master], "hq", connect_timeout=0.5)
        await pbx.connect()
        await pbx.checkout("port", "carol")  # served at once, from what is truly free
        held = {n["node"]: n["held"] for n in await pbx.all_nodes(held=True)}
        assert sorted(lease for _, _, lease in held["branch"]) == sorted(ids)  # adopted, with their ids
        assert (await pbx.usage())["absent"]["leases"] == 2
        await pbx.close()
    finally:
        b.stop()
        a.stop()


async def test_a_leader_cut_from_etcd_sends_its_pbxs_away_says_why_and_they_keep_their_leases_through_the_outage(
        tmp_path: Path, etcd: EtcdCluster) -> None:
    a = Daemon(tmp_path / "a", LICENSES, etcd_endpoints=etcd.endpoints).start()
    try:
        await until_role(a, "acting")
        pbx = MasterClient([a.master], "pbx1", connect_timeout=0.5, max_retry_s=0.5)
        await pbx.connect()
        await pbx.checkout("port", "alice")
        assert pbx.believed()
        etcd.kill(0)
        usage = await until_role(a, "suspended", timeout=3)  # within the lease TTL (2 s): before it could lapse
        # why: the renewal's failure, or the per-read check that got there first
        assert usage["coordination"]["state"] == "suspended" and "renew" in usage["coordination"]["why"]
        shutdown = await next_event(pbx, "shutdown", timeout=3)  # it confirms nothing now: its PBXs are sent away
        assert "cannot confirm its leadership" in shutdown["reason"]
        refused = await (await Raw.open(a.address)).hello("pbx2")
        assert refused["error"] == "no_quorum" and refused["retry_ms"] > 0  # and it takes no new one
        await asyncio.sleep(3)  # longer than the lease TTL (2 s) without a confirmation: within the hold
        assert set(pbx.believed()) == {("port", "alice")}  # the phone stays up
        told = drain(pbx)
        assert not [e for e in told if e.get("event") == "lapsed"]
        refused = [e for e in told if e.get("event") == "refused"]
        # its client tries again by itself, as often as the master's retry_ms (500 ms) asks: not
        # every 50-250 ms (26 hellos in 3 s before it read retry_ms)
        assert refused and all(e["error"] == "no_quorum" for e in refused) and len(refused) <= 8, refused
        etcd.restart(0)
        etcd.wait_healthy()
        await until_role(a, "acting", timeout=15)  # renewed (etcd refreshes leases at its restart) or re-won
        await next_event(pbx, "reconnected", timeout=15)
        assert ("port", "alice") in pbx.believed() and pbx.confirmed()  # re-synced whole
        usage = await role_of(a)
        assert next(p for p in usage["pools"] if p["family"] == "PBX-Port")["in_use"] == 1  # counted once
        await pbx.close()
    finally:
        a.stop()
    roles = [r["detail"] for r in read_journal(a.workdir / "data" / "journal.sqlite3", event="role")]
    assert any("-> suspended: " in r and "renew" in r for r in roles), roles  # the timer's or the per-read check's words


def drain(client: MasterClient) -> list[dict]:
    """Every event the client has delivered so far."""
    out = []
    while not client.events.empty():
        out.append(client.events.get_nowait())
    return out


async def test_a_leader_cut_from_etcd_without_peers_never_lets_two_pools_hold_more_than_installed(
        tmp_path: Path, etcd: EtcdCluster) -> None:
    """The issue's hole: PBXs that reach only the old leader, PBXs that reach only the new one, no
    `peers`. At every sample the leases the PBXs may use, summed, stay within installed; the ones
    that reach the new leader are served by it within 5 s of the cut; the cut-off ones keep theirs."""
    link = await Link("a-etcd", ("127.0.0.1", etcd.client_ports[0])).start()
    a = Daemon(tmp_path / "a", LICENSES, etcd_endpoints=[link.endpoint]).start()
    b = None
    try:
        await until_role(a, "acting")
        b = Daemon(tmp_path / "b", LICENSES, etcd_endpoints=etcd.endpoints).start()
        await until_role(b, "standby")
        await until_in_sync(a, b)
        old_side = MasterClient([a.master], "old-side", connect_timeout=0.5, max_retry_s=0.3)
        both = MasterClient([a.master, b.master], "both", connect_timeout=0.5, max_retry_s=0.3)
        new_side = MasterClient([b.master, a.master], "new-side", connect_timeout=0.5, max_retry_s=0.3)
        for client in (old_side, both):
            await client.connect()
        for holder in ("p1", "p2"):
            await old_side.checkout("port", holder)
        await both.checkout("port", "q1")
        link.set_cut(True)
        cut = asyncio.get_running_loop().time()
        with contextlib.suppress(LicenseError, ConnectionError, TimeoutError):  # in the moment after the cut
            await old_side.checkout("port", "p3")
        samples: list[int] = []
        served_at: float | None = None
        deadline = cut + 9.0
        while asyncio.get_running_loop().time() < deadline:
            if not new_side.connected.is_set():
                with contextlib.suppress(LicenseError, ConnectionError, OSError, TimeoutError):
                    await new_side.connect()
            if new_side.connected.is_set():
                with contextlib.suppress(LicenseError, ConnectionError, TimeoutError):
                    await new_side.checkout("port", f"n{len(new_side.leases)}")
            if served_at is None and both.settled and both.address == b.address and both.confirmed():
                served_at = asyncio.get_running_loop().time()
            samples.append(sum(len(c.believed()) for c in (old_side, both, new_side)))
            await asyncio.sleep(0.05)
        assert max(samples) <= 5, samples  # never more in use, by what the PBXs may use, than installed
        assert served_at is not None and served_at - cut < 5.0  # the PBX that reaches the new leader: served
        # The cut-off side keeps its phones up (its hold); the new leader counts its Ports and
        # serves the others from what is truly free.
        assert {("port", "p1"), ("port", "p2")} <= set(old_side.believed()) and len(new_side.leases) >= 1
        for client in (old_side, both, new_side):
            await client.close(bye=False)
    finally:
        await link.stop()
        for d in (b, a):
            if d is not None:
                d.stop()


async def test_a_leader_paused_past_its_deadline_answers_nothing_it_read_meanwhile(tmp_path: Path, etcd: EtcdCluster) -> None:
    # a lease TTL longer than the pause: the session is not expired when it wakes; what it read
    # meanwhile is what must not be answered as leader
    a = Daemon(tmp_path / "a", LICENSES, etcd_endpoints=etcd.endpoints, lease_ttl_ms=10_000).start()
    b = None
    try:
        # A first election keeps a grace window of one lease TTL (10 s here): the wait must be
        # longer than that, or a loaded machine fails it ("never became acting: grace").
        await until_role(a, "acting", timeout=30)
        b = Daemon(tmp_path / "b", LICENSES, etcd_endpoints=etcd.endpoints, lease_ttl_ms=10_000).start()
        await until_role(b, "standby")
        await until_in_sync(a, b)  # only an in-sync standby may lead when a is gone
        pbx = await Raw.open(a.address)
        assert (await pbx.hello("pbx1"))["ok"]
        a.signal(signal.SIGSTOP)
        try:
            pbx.send({"op": "checkout", "id": 7, "resource": "port", "holder": "late"})  # waits in a's socket
            await until_role(b, "acting", timeout=10)  # a's lease lapsed in etcd: b, in sync, leads at once (no grace)
        finally:
            a.signal(signal.SIGCONT)
        heard = []
        with contextlib.suppress(ConnectionError, TimeoutError):
            while True:  # whatever it says when it wakes, until it closes the connection
                heard.append(await pbx.recv(timeout=3))
        answers = [m for m in heard if m.get("id") == 7]
        assert all(m["ok"] is False for m in answers), heard  # refused, or sent away unanswered: never granted
        assert any(m.get("event") == "shutdown" for m in heard) or answers, heard
    finally:
        for d in (b, a):
            if d is not None:
                d.stop()
    grants = read_journal(a.workdir / "data" / "journal.sqlite3", event="grant")
    assert [g for g in grants if g["holder"] == "late"] == []


async def test_a_leader_renewed_after_a_suspension_still_counts_what_its_pbxs_hold(
        tmp_path: Path, etcd: EtcdCluster) -> None:
    """A hole the chaos drill found (seed 2): quorum lost, the leader suspended and its PBXs sent
    away (still believing their leases), quorum back with the lease refreshed: the leader resumed
    and gave those Ports to others at once. Now the suspended leader keeps its book (the PBXs
    sent away are absent, within their hold) and serves new checkouts from what is truly free."""
    one = '[[license]]\ntype = "PBX-Port13"\ncount = 1\n'
    a = Daemon(tmp_path / "a", one, etcd_endpoints=etcd.endpoints, lease_ttl_ms=2000, heartbeat_ms=500).start()
    try:
        await until_role(a, "acting")
        holder = MasterClient([a.master], "pbx1", connect_timeout=0.5, reconnect=False)
        await holder.connect()
        await holder.checkout("port", "alice")
        etcd.kill(0)
        await until_role(a, "suspended", timeout=3)
        etcd.restart(0)
        etcd.wait_healthy()
        usage = await until_role(a, "acting", timeout=15)  # renewed, its book as it was
        assert usage["coordination"]["epoch"] == (await role_of(a))["coordination"]["epoch"]
        assert set(holder.believed()) == {("port", "alice")}  # within its hold
        rival = await Raw.open(a.address)
        assert (await rival.hello("pbx2"))["ok"]
        refused = await rival.request("checkout", resource="port", holder="bob")
        assert refused["error"] == "exhausted", refused  # not given to another while pbx1 may still use it
        await holder.close(bye=False)
    finally:
        a.stop()


async def test_with_the_quorum_lost_no_master_grants(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "etcd", members=3).start()
    a = b = None
    try:
        a = Daemon(tmp_path / "a", LICENSES, etcd_endpoints=cluster.endpoints).start()
        await until_role(a, "acting")
        b = Daemon(tmp_path / "b", LICENSES, etcd_endpoints=cluster.endpoints).start()
        await until_role(b, "standby")
        cluster.kill(1)
        cluster.kill(2)  # one member of three: no quorum
        await until_role(a, "suspended", timeout=4)
        await asyncio.sleep(3)  # longer than the lease: still nobody may lead
        assert (await role_of(a))["role"] == "suspended" and (await role_of(b))["role"] == "standby"
    finally:
        for d in (b, a):
            if d is not None:
                d.stop()
        cluster.stop()

