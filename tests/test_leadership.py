"""Leadership in etcd: only the leader grants; a standby becomes master only by winning the
election; a leader that cannot renew stops granting before its lease could lapse; with the
quorum lost nobody grants. Real etcd members and real master processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from licmaster.client import LicenseError, MasterClient
from licmaster.daemon.journal import read_journal
from licmaster.testing.etcd import EtcdCluster

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
        await asyncio.sleep(0.5)  # replicated to b
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


async def test_a_leader_cut_from_etcd_stops_granting_keeps_leases_and_says_why(tmp_path: Path, etcd: EtcdCluster) -> None:
    a = Daemon(tmp_path / "a", LICENSES, etcd_endpoints=etcd.endpoints).start()
    try:
        await until_role(a, "acting")
        pbx = MasterClient([a.master], "pbx1", connect_timeout=0.5, max_retry_s=0.5)
        await pbx.connect()
        await pbx.checkout("port", "alice")
        etcd.kill(0)
        usage = await until_role(a, "suspended", timeout=3)  # within the lease TTL (2 s): before it could lapse
        assert usage["pools"][0]["in_use"] == 1
        assert usage["coordination"]["state"] == "suspended" and "cannot renew" in usage["coordination"]["why"]
        with pytest.raises(LicenseError) as refused:
            await pbx.checkout("port", "bob")
        assert refused.value.code == "no_quorum"
        assert (await pbx.checkout("port", "alice")).lease  # what it holds stays valid
        await pbx.call("heartbeat")
        etcd.restart(0)
        etcd.wait_healthy()
        await until_role(a, "acting", timeout=15)  # renewed (etcd refreshes leases at its restart) or re-won
        await pbx.checkout("port", "bob")
        await pbx.close()
    finally:
        a.stop()
    roles = [r["detail"] for r in read_journal(a.workdir / "data" / "journal.sqlite3", event="role")]
    assert any("-> suspended: cannot renew the leadership" in r for r in roles), roles


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

