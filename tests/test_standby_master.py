"""A standby master follows the master and takes over when it dies (real processes, 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from licmaster.client import LicenseError, MasterClient, NotConnected
from licmaster.daemon.storage.journal import read_journal
from licmaster.testing import free_port

from .daemon import Daemon, Raw, next_event, self_signed_cert

LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "App(phone)13"\ncount = 2\n'


def in_use(usage: dict, family: str) -> int:
    return sum(p["in_use"] for p in usage["pools"] if p["family"] == family)


@contextmanager
def master_and_standby(tmp_path: Path, both: dict[str, Any] | None = None, **standby: Any) -> Iterator[tuple[Daemon, Daemon]]:
    """A master and its standby master, real processes, stopped at the end whatever happens.
    `both`: config keys for the two; the others for the standby only."""
    master = Daemon(tmp_path / "master", LICENSES, **(both or {})).start()
    try:
        follower = Daemon(tmp_path / "standby", LICENSES, standby_of=master.master, **(both or {}), **standby).start()
        try:
            yield master, follower
        finally:
            follower.stop()
    finally:
        master.stop()


async def replicated(client: MasterClient) -> None:
    """Until the master that client talks to has a standby attached, and a little more for the
    changes made so far to reach it."""
    for _ in range(100):
        if (await client.usage())["replicas"] == 1:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)


async def test_the_standby_takes_over_with_leases_and_assignments(tmp_path: Path) -> None:
    with master_and_standby(tmp_path, {"grace_ms": 1500}) as (master, standby):
        # The standby serves no PBX: it says where the master is.
        stray = await Raw.open(standby.address)
        refused = await stray.hello("stray")
        assert (refused["error"], refused["master"]) == ("not_master", master.master)

        pbx = MasterClient([master.master, standby.master], "pbx1", connect_timeout=0.5)
        await pbx.connect()
        first_epoch = pbx.epoch
        await pbx.checkout("port", "alice")
        await pbx.checkout("port", "bob")
        await pbx.assign("ann", ["App(phone)"])

        watcher = MasterClient([standby.master], "watcher", role="observer")
        await watcher.connect()
        assert (await watcher.usage())["standby_of"] == master.master
        await replicated(pbx)  # the standby has attached and the changes have flowed

        master.kill9()
        promoted = await next_event(watcher, "epoch")
        assert promoted["epoch"] > first_epoch
        reconnected = await next_event(pbx, "reconnected")
        assert reconnected["master"] == standby.master and pbx.epoch == promoted["epoch"]

        usage = await pbx.usage()
        assert in_use(usage, "PBX-Port") == 2  # re-synced during grace, nothing counted twice
        assert in_use(usage, "App(phone)") == 1  # the user assignment was replicated
        assert (await pbx.assign("ann", ["App(phone)"]))["took"] == []

        newcomer = MasterClient([standby.master], "pbx2")
        await newcomer.connect()
        held = await newcomer.checkout("port", "carol")  # waits out grace (the client retries `grace`)
        assert held.lease
        assert in_use(await newcomer.usage(), "PBX-Port") == 3
        for client in (newcomer, pbx, watcher):
            await client.close()
    assert "promoted" in standby.log


async def test_a_standby_refuses_pbx_requests_but_answers_observers(tmp_path: Path) -> None:
    with master_and_standby(tmp_path) as (master, standby):
        observer = await Raw.open(standby.address)
        assert (await observer.hello("obs", role="observer"))["ok"]
        usage = await observer.request("usage")
        assert usage["ok"] and usage["standby_of"] == master.master
        assert (await observer.request("checkout", resource="port", holder="x"))["error"] == "not_master"


async def test_a_master_back_after_a_failover_follows_the_new_master(tmp_path: Path) -> None:
    with master_and_standby(tmp_path) as (old, standby):
        pbx = MasterClient([old.master, standby.master], "pbx1", connect_timeout=0.5)
        await pbx.connect()
        await pbx.checkout("port", "alice")
        watcher = MasterClient([standby.master], "watcher", role="observer")
        await watcher.connect()
        await replicated(pbx)
        old.kill9()
        promoted = await next_event(watcher, "epoch")
        await next_event(pbx, "reconnected")

        # The old master comes back on its own data, its standby named as a peer: it must not
        # serve (two masters, the old one at an epoch PBXs could not tell from the new one's).
        old.reconfigure(peers=[standby.master]).restart_same_port()
        assert "peer_is_master" in old.log
        refused = await (await Raw.open(old.address)).hello("pbx2")
        assert (refused["error"], refused["master"]) == ("not_master", standby.master)
        await replicated(pbx)  # it follows the new master as its standby
        usage = await pbx.usage()
        assert usage["replicas"] == 1 and usage["standby_of"] is None
        assert pbx.epoch == promoted["epoch"] and in_use(usage, "PBX-Port") == 1
        for client in (pbx, watcher):
            await client.close()


async def test_a_master_whose_peer_is_still_its_standby_serves_after_a_restart(tmp_path: Path) -> None:
    with master_and_standby(tmp_path, takeover_after_ms=60_000) as (master, standby):
        master.kill9()
        master.reconfigure(peers=[standby.master, "127.0.0.1:1"]).restart_same_port()
        assert "peer_is_master" not in master.log
        pbx = MasterClient([master.master], "pbx1")
        await pbx.connect()
        assert (await pbx.checkout("port", "alice")).lease
        await pbx.close()
        observer = await Raw.open(standby.address)
        assert (await observer.hello("obs", role="observer"))["ok"]
        assert (await observer.request("usage"))["standby_of"] == master.master


async def test_a_standby_follows_a_master_that_asks_for_a_token(tmp_path: Path) -> None:
    with master_and_standby(tmp_path, {"auth_token": "s3cret"}) as (master, standby):
        pbx = MasterClient([master.master], "pbx1", auth={"token": "s3cret"})
        await pbx.connect()
        await replicated(pbx)
        assert (await pbx.usage())["replicas"] == 1
        await pbx.close()


async def test_an_observer_follows_both_failovers_there_and_back(tmp_path: Path) -> None:
    # On its way to a standby that has not yet taken over, the client's reconnects are refused
    # (`not_master` to its sync) and the master fences its older connections: none of that may
    # stop it from reconnecting later.
    with master_and_standby(tmp_path) as (first, second):
        watcher = MasterClient([first.master, second.master], "watcher", role="observer", connect_timeout=2.0)
        try:
            await watcher.connect()
            await replicated(watcher)
            first.kill9()
            assert (await next_event(watcher, "reconnected"))["master"] == second.master
            first.reconfigure(peers=[second.master]).restart_same_port()
            await replicated(watcher)  # the first master follows the second now
            epoch = watcher.epoch
            second.kill9()
            back = await next_event(watcher, "reconnected")
            usage = await watcher.usage()
            assert back["master"] == first.master and usage["standby_of"] is None and usage["epoch"] > epoch
        finally:
            await watcher.close()


async def test_over_tls_the_standby_follows_and_does_not_take_over_a_living_master(tmp_path: Path) -> None:
    import ssl

    cert, key = self_signed_cert(tmp_path)  # one certificate for both masters
    tls = {"tls_cert": str(cert), "tls_key": str(key)}
    with master_and_standby(tmp_path, tls, takeover_after_ms=500) as (master, standby):
        pbx = MasterClient([master.master, standby.master], "pbx1", ssl=ssl.create_default_context(cafile=str(cert)))
        await pbx.connect()
        await replicated(pbx)
        await asyncio.sleep(1.0)  # twice takeover_after_ms: a standby that could not follow would have taken over
        assert "promoted" not in standby.log
        master.kill9()
        assert (await next_event(pbx, "reconnected"))["master"] == standby.master
        await pbx.close()


async def test_a_master_that_finds_a_peer_master_at_a_higher_epoch_steps_down(tmp_path: Path) -> None:
    # Two masters that did not see each other (a cut network, say): the one at the lower epoch
    # must give way when they meet again, and its PBXs move over.
    newer_address = f"127.0.0.1:{free_port()}"
    newer = Daemon(tmp_path / "newer", LICENSES, listen=newer_address)
    for _ in range(2):  # two earlier runs: it starts next at epoch 3
        newer.start().stop()
    older = Daemon(tmp_path / "older", LICENSES, peers=[newer_address], takeover_after_ms=300).start()
    try:
        pbx = MasterClient([older.master], "pbx1")
        await pbx.connect()
        await pbx.checkout("port", "alice")
        assert pbx.epoch == 1
        newer.start()
        told = await next_event(pbx, "shutdown")
        assert told["master"] == newer_address
        # The newer master restarted, in its grace window: a re-sync is taken whole up to the
        # installed count, so alice keeps her Port (nothing lost); new checkouts would wait.
        assert (await next_event(pbx, "reconnected"))["master"] == newer_address
        assert ("port", "alice") in pbx.leases
        usage = await pbx.usage()
        assert usage["epoch"] == 3 and in_use(usage, "PBX-Port") == 1
        observer = await Raw.open(older.address)
        assert (await observer.hello("obs", role="observer"))["ok"]
        assert (await observer.request("usage"))["standby_of"] == newer_address  # it follows now
        await pbx.close()
    finally:
        older.stop()
        newer.stop()
    assert "stepping_down" in older.log


# ---------------------------------------------------------------- clients always find the acting master


async def test_a_client_listing_the_standby_first_is_served_by_the_master(tmp_path: Path) -> None:
    with master_and_standby(tmp_path) as (master, standby):
        pbx = MasterClient([standby.master, master.master], "pbx1", connect_timeout=0.5)
        await pbx.connect()
        assert pbx.address == master.address and pbx.session["ok"]
        await pbx.checkout("port", "alice")  # served, not `not_master` for ever
        await pbx.close()


async def test_a_client_listing_only_the_standby_is_sent_to_the_master_and_served_after_a_failover(tmp_path: Path) -> None:
    with master_and_standby(tmp_path, {"grace_ms": 300}) as (master, standby):
        pbx = MasterClient([standby.master], "pbx1", connect_timeout=0.5)
        await pbx.connect()  # the standby's not_master names the master: the client goes there
        assert pbx.address == master.address
        await pbx.checkout("port", "alice")
        await replicated(pbx)
        master.kill9()
        reconnected = await next_event(pbx, "reconnected")
        assert reconnected["master"] == standby.master and ("port", "alice") in pbx.leases
        await pbx.checkout("port", "bob")
        await pbx.close()


async def test_no_grant_is_lost_when_the_master_dies_right_after_granting(tmp_path: Path) -> None:
    """kill -9 within one journal flush of the grants: the standby never saw them, and every
    PBX's re-sync gets them back anyway (taken up to the installed count)."""
    licenses = '[[license]]\ntype = "PBX-Port13"\ncount = 300\n'
    master = Daemon(tmp_path / "master", licenses, journal_flush_ms=5000).start()
    standby = Daemon(tmp_path / "standby", licenses, standby_of=master.master, journal_flush_ms=5000).start()
    try:
        pbxs = [MasterClient([master.master, standby.master], f"pbx{n}", connect_timeout=0.5) for n in range(4)]
        for pbx in pbxs:
            await pbx.connect()
        await asyncio.sleep(0.5)  # the standby has attached (its snapshot: no lease yet)
        for pbx in pbxs:
            await asyncio.gather(*(pbx.checkout("port", f"u{i}") for i in range(50)))
        master.kill9()  # the 200 grants are in no journal flush and no replica event
        for pbx in pbxs:
            await next_event(pbx, "reconnected")
        assert all(len(pbx.leases) == 50 for pbx in pbxs)  # 200 of 200 re-synced, 0 lost
        usage = await pbxs[0].usage()
        assert in_use(usage, "PBX-Port") == 200 and usage["master"] and usage["epoch"] > pbxs[0].epoch - 1
        for pbx in pbxs:
            seen = [pbx.events.get_nowait() for _ in range(pbx.events.qsize())]
            assert [e for e in seen if e.get("event") == "lost"] == []
            await pbx.close()
    finally:
        standby.stop()
        master.stop()


async def test_a_pbx_restarted_after_a_failback_with_its_usual_list_is_served(tmp_path: Path) -> None:
    a_address = f"127.0.0.1:{free_port()}"
    a = Daemon(tmp_path / "a", LICENSES, listen=a_address).start()
    b = Daemon(tmp_path / "b", LICENSES, standby_of=a_address, grace_ms=300).start()
    try:
        first = MasterClient([a_address, b.master], "pbx1", connect_timeout=0.5)
        await first.connect()
        await first.checkout("port", "alice")
        await asyncio.sleep(0.5)
        a.kill9()
        await next_event(first, "reconnected")  # on b, which took over
        a.reconfigure(peers=[b.master]).restart_same_port()  # a returns, finds b acting: follows it
        await first.close(bye=False)
        restarted = MasterClient([a_address, b.master], "pbx1", connect_timeout=0.5)  # its usual list, a first
        await restarted.connect()
        assert restarted.address == b.address
        await restarted.checkout("port", "alice")
        await restarted.close()
    finally:
        b.stop()
        a.stop()


async def test_without_its_standby_the_master_serves_on_degraded_and_says_so(tmp_path: Path) -> None:
    with master_and_standby(tmp_path) as (master, standby):
        pbx = MasterClient([master.master], "pbx1", connect_timeout=0.5)
        await pbx.connect()
        await replicated(pbx)
        assert (await pbx.usage())["replication"] == {"standbys": 1, "in_sync": 1, "degraded": False}
        standby.kill9()
        for _ in range(50):
            usage = await pbx.usage()
            if usage["replication"]["degraded"]:
                break
            await asyncio.sleep(0.05)
        assert usage["replication"] == {"standbys": 0, "in_sync": 0, "degraded": True}
        await pbx.checkout("port", "alice")  # serving on
        await pbx.close()
    assert "replication_degraded" in master.log


async def test_a_standby_that_stops_acknowledging_is_dropped_and_the_master_answers_on_alone(tmp_path: Path) -> None:
    # Synchronous replication must not let a hung standby hang the PBXs: a grant's reply waits
    # for it at most half the takeover delay (plus a reaper tick), then it is dropped.
    import signal

    with master_and_standby(tmp_path, {"takeover_after_ms": 1000}) as (master, standby):
        pbx = MasterClient([master.master], "pbx1", connect_timeout=0.5)
        await pbx.connect()
        await replicated(pbx)
        await pbx.checkout("port", "alice")  # acknowledged: in sync
        standby.signal(signal.SIGSTOP)
        try:
            await asyncio.wait_for(pbx.checkout("port", "bob"), 5)  # held until the standby is dropped
            usage = await pbx.usage()
            assert usage["replication"]["in_sync"] == 0 and usage["replication"]["degraded"]
        finally:
            standby.signal(signal.SIGCONT)
        await pbx.close()
    assert "replica_dropped" in master.log


async def test_a_master_paused_half_a_second_keeps_its_role(tmp_path: Path) -> None:
    """No flapping: with the defaults (takeover_after_ms 1000) a pause of 0.5 s is not a death."""
    import signal

    defaults = {"heartbeat_ms": 1000, "lease_ttl_ms": 3000, "grace_ms": 3000}
    with master_and_standby(tmp_path, defaults) as (master, standby):
        pbx = MasterClient([master.master, standby.master], "pbx1", connect_timeout=0.5)
        await pbx.connect()
        await replicated(pbx)
        epoch = pbx.epoch
        master.signal(signal.SIGSTOP)
        await asyncio.sleep(0.5)
        master.signal(signal.SIGCONT)
        await asyncio.sleep(1.5)  # past takeover_after_ms from the pause's start
        await pbx.checkout("port", "alice")
        assert pbx.address == master.address and pbx.epoch == epoch
        watcher = await Raw.open(standby.address)
        assert (await watcher.hello("obs", role="observer"))["ok"]
        assert (await watcher.request("usage"))["standby_of"] == master.master  # still the standby
        await pbx.close()


async def test_a_standby_without_etcd_is_warned_about_at_start(tmp_path: Path) -> None:
    master = Daemon(tmp_path / "m", LICENSES).start()
    standby = Daemon(tmp_path / "s", LICENSES, standby_of=master.master).start()
    try:
        assert "two_node_mode" in standby.log and "two_node_mode" not in master.log
        watcher = await Raw.open(master.address)
        assert (await watcher.hello("obs", role="observer"))["ok"]
        for _ in range(200):  # until the standby has attached: before, this master knows of no standby ("single")
            usage = await watcher.request("usage")
            if usage["replicas"] == 1:
                break
            await asyncio.sleep(0.05)
        coordination = usage["coordination"]  # the wire says what /api/v1/ha says
        assert coordination["mode"] == "two-node" and "standby master(s) follow this one" in coordination["note"]
    finally:
        standby.stop()
        master.stop()


async def test_a_master_with_unreachable_etcd_and_no_peers_waits_for_the_election(tmp_path: Path) -> None:
    """A master whose etcd is unreachable waits, as a standby, for the election; with no peers it
    needs no warning any more (a suspended leader hands its PBXs over by itself)."""
    nowhere = f"127.0.0.1:{free_port()}"
    lone = Daemon(tmp_path / "m", LICENSES, etcd_endpoints=[nowhere]).start()
    try:
        assert "event=etcd_without_peers" not in lone.log and "event=two_node_mode" not in lone.log
        watcher = await Raw.open(lone.address)
        assert (await watcher.hello("obs", role="observer"))["ok"]
        usage = await watcher.request("usage")
        assert usage["role"] == "standby" and usage["coordination"]["mode"] == "etcd"
        refused = await (await Raw.open(lone.address)).hello("pbx1")
        assert refused["error"] == "not_master"  # nobody grants without the election
    finally:
        lone.stop()


def believed_ids(*clients: MasterClient) -> dict[str, list[list[str]]]:
    """What each PBX may use now, lease by lease with the ids it holds."""
    return {c.node: [[h.resource, h.holder, h.lease] for h in c.believed().values()] for c in clients}


async def counted_ids(observer: MasterClient) -> dict[str, list[list[str]]]:
    """What the master that observer watches counts for each node, with its ids."""
    return {n["node"]: n["held"] for n in await observer.all_nodes(held=True)}


async def test_a_checkin_of_an_old_id_sent_after_the_re_sync_frees_that_lease_and_no_other(tmp_path: Path) -> None:
    # Lease ids used to count from 1 on every master: bob's id on the old master was carol's on
    # the new one, and a check-in of bob sent across the failover freed carol, whom the PBX still
    # believed it held. Now an id names one lease for the installation's whole history: the new
    # master adopts bob and carol with their ids, and names its own grants from another base.
    with master_and_standby(tmp_path, {"grace_ms": 1000}) as (master, standby):
        pbx = MasterClient([master.master, standby.master], "pbx1", connect_timeout=0.5)
        await pbx.connect()
        for holder in ("alice", "bob", "carol"):
            await pbx.checkout("port", holder)
        old_alice = pbx.leases[("port", "alice")].lease
        await pbx.checkin("port", "alice")  # the old master's ids: bob 2, carol 3 (before the fix)
        old_bob, old_carol = pbx.leases[("port", "bob")].lease, pbx.leases[("port", "carol")].lease
        await replicated(pbx)
        master.kill9()
        await next_event(pbx, "reconnected")  # re-synced: bob and carol, adopted with their ids
        assert (pbx.leases[("port", "bob")].lease, pbx.leases[("port", "carol")].lease) == (old_bob, old_carol)
        dave = await pbx.checkout("port", "dave")  # the new master's own grant: an id no other lease ever had
        assert dave.lease not in (old_alice, old_bob, old_carol)
        gone = await pbx.send("checkin", lease=old_alice)  # given back before the failover
        assert gone["error"] == "unknown_lease" and gone["lease"] == old_alice
        del pbx.leases[("port", "bob")]  # the PBX let bob go; its check-in went out with the old id
        late = await pbx.send("checkin", lease=old_bob)
        assert late["ok"]  # it frees bob, the lease it names, and nothing else

        watcher = MasterClient([standby.master], "watcher", role="observer")
        await watcher.connect()
        from slave_sim.chaos.check import belief_violations
        assert belief_violations(believed_ids(pbx), await counted_ids(watcher)) == []
        assert sorted(h for _, h, _ in (await counted_ids(watcher))["pbx1"]) == ["carol", "dave"]
        await watcher.close()
        await pbx.close()


async def test_a_pipelined_burst_across_a_failover_is_all_answered_and_believed_as_counted(tmp_path: Path) -> None:
    # Checkouts and check-ins in flight when the master dies, and more sent while the client is
    # turned away by the standby (not_master) and re-syncs: each is answered, fails with a clear
    # error, or is sent again once; none waits forever; what the PBX believes is what is counted.
    licenses = '[[license]]\ntype = "PBX-Port13"\ncount = 40\n'
    master = Daemon(tmp_path / "master", licenses, grace_ms=800).start()
    standby = Daemon(tmp_path / "standby", licenses, standby_of=master.master, grace_ms=800).start()
    try:
        pbx = MasterClient([master.master, standby.master], "pbx1", connect_timeout=0.5, max_retry_s=10)
        await pbx.connect()
        for i in range(10):
            await pbx.checkout("port", f"kept{i}")
        await replicated(pbx)
        outcomes: list[str] = []

        async def one(i: int) -> None:
            try:
                if i % 3 == 0 and ("port", f"kept{i // 3}") in pbx.leases:
                    await pbx.checkin("port", f"kept{i // 3}")
                else:
                    await pbx.checkout("port", f"burst{i}")
                outcomes.append("ok")
            except (LicenseError, NotConnected) as exc:
                outcomes.append(type(exc).__name__)

        burst = [asyncio.create_task(one(i)) for i in range(30)]
        await asyncio.sleep(0)  # the first requests are on the wire
        master.kill9()
        burst += [asyncio.create_task(one(i)) for i in range(30, 60)]  # sent during the failover
        await asyncio.wait_for(asyncio.gather(*burst), 30)  # before the fix, some never came back
        assert len(outcomes) == 60 and outcomes.count("ok") >= 50, outcomes
        watcher = MasterClient([standby.master], "watcher", role="observer")
        await watcher.connect()
        from slave_sim.chaos.check import belief_violations
        counted = await counted_ids(watcher)
        assert belief_violations(believed_ids(pbx), counted) == []
        assert sorted(h for _, h, _ in counted["pbx1"]) == sorted(h for _, h in pbx.leases)  # no leak either
        await watcher.close()
        await pbx.close()
    finally:
        standby.stop()
        master.stop()


async def test_ha_says_who_takes_over_from_whom_on_a_master_and_its_standby(tmp_path: Path) -> None:
    import aiohttp

    with master_and_standby(tmp_path) as (master, standby):
        pbx = MasterClient([master.master], "pbx1", connect_timeout=0.5)
        await pbx.connect()
        await replicated(pbx)
        await pbx.close()
        async with aiohttp.ClientSession() as http:
            async def coordination(d: Daemon) -> dict[str, Any]:
                async with http.get(f"http://{d.http}/api/v1/ha") as response:
                    return (await response.json())["coordination"]
            on_master, on_standby = await coordination(master), await coordination(standby)
    assert on_master == {"mode": "two-node", "note": "1 standby master(s) follow this one: the standby takes over when it "
                                                     "cannot reach this master (docs/operations.md)"}
    assert on_standby["mode"] == "two-node" and f"this master follows {master.master} and takes over" in on_standby["note"]


async def test_after_a_kill_9_the_new_master_counts_what_a_silent_pbx_holds_for_its_hold(tmp_path: Path) -> None:
    # Issue 22: a PBX that reaches only the old master (here: silent) keeps using its Ports for
    # its hold; the standby that takes over adopts them, shows the PBX absent, and serves new
    # checkouts from what is truly free only, at once after its grace window.
    with master_and_standby(tmp_path, {"grace_ms": 600}) as (master, standby):
        cut_off = await Raw.open(master.address)
        await cut_off.hello("branch")
        ids = [(await cut_off.request("checkout", resource="port", holder=h))["lease"] for h in ("a", "b")]
        watcher = MasterClient([master.master], "watcher", role="observer")
        await watcher.connect()
        await replicated(watcher)
        await watcher.close()
        master.kill9()
        hq = MasterClient([standby.master], "hq", connect_timeout=0.5, max_retry_s=5, follow_named=False)
        for _ in range(100):  # until the standby has taken over (before, it sends PBXs to the dead master)
            try:
                await hq.connect()
                break
            except (NotConnected, LicenseError):
                await asyncio.sleep(0.05)
        await hq.checkout("port", "carol")  # the one free Port, at once
        with pytest.raises(LicenseError, match="exhausted"):
            await hq.checkout("port", "dave")  # 3 installed: branch's 2 are its own for its hold
        roles = [r["detail"] for r in read_journal(standby.workdir / "data" / "journal.sqlite3", event="role")]
        assert not any("-> grace" in r for r in roles), roles  # its stream was whole: nothing unknown to wait for
        usage = await hq.usage()
        assert usage["absent"]["pbxs"] == 1 and usage["absent"]["leases"] == 2
        assert [(a["node"], a["held"]) for a in usage["absent"]["shown"]] == [("branch", {"port": 2})]
        held = {n["node"]: n["held"] for n in await hq.all_nodes(held=True)}
        assert sorted(held["branch"]) == sorted([["port", "a", ids[0]], ["port", "b", ids[1]]])  # with their ids
        await hq.close()


async def test_every_grant_answered_before_a_kill_9_is_counted_by_the_standby_that_takes_over(tmp_path: Path) -> None:
    # Synchronous replication: a checkout's reply goes out only once the standby has the grant.
    # A journal flush of a second (so the old batch-by-batch stream would have sent none of them)
    # and the master killed the moment the last reply is in: the standby adopts all 20.
    licenses = '[[license]]\ntype = "PBX-Port13"\ncount = 20\n'
    master = Daemon(tmp_path / "master", licenses, grace_ms=600, journal_flush_ms=1000).start()
    standby = Daemon(tmp_path / "standby", licenses, standby_of=master.master, grace_ms=600, journal_flush_ms=1000).start()
    try:
        pbx = await Raw.open(master.address)
        await pbx.hello("branch")
        watcher = MasterClient([master.master], "watcher", role="observer")
        await watcher.connect()
        await replicated(watcher)
        assert (await watcher.usage())["replication"]["in_sync"] == 1
        await watcher.close()
        ids = [(await pbx.request("checkout", resource="port", holder=f"u{i}"))["lease"] for i in range(20)]
        master.kill9()
        observer = MasterClient([standby.master], "observer", role="observer")
        for _ in range(100):
            try:
                await observer.connect()
                if (await observer.usage())["role"] in ("grace", "acting"):
                    break
            except (NotConnected, LicenseError):
                pass
            await asyncio.sleep(0.05)
        held = {n["node"]: n["held"] for n in await observer.all_nodes(held=True)}
        assert sorted(lease for _, _, lease in held["branch"]) == sorted(ids)
        await observer.close()
    finally:
        standby.stop()
        master.stop()


async def test_a_master_back_on_a_stale_journal_answers_a_re_sync_once_the_stale_entry_is_gone(tmp_path: Path) -> None:
    # Both masters killed one after the other (`slave-sim sim --seed 701`), with real processes:
    # A's journal still says the left PBX holds the one Port, which it gave back on B, where the
    # right PBX took it. Back on A, the right PBX's re-sync waits until the left PBX, restarted
    # afresh, gives the stale entry back; it was refused `exhausted`, a phone lost.
    one_port = '[[license]]\ntype = "PBX-Port13"\ncount = 1\n'
    both = {"grace_ms": 6000}  # room for a busy machine: the left PBX must be back within it
    a = Daemon(tmp_path / "a", one_port, **both).start()
    b_address = f"127.0.0.1:{free_port()}"
    b = Daemon(tmp_path / "b", one_port, standby_of=a.master, listen=b_address, **both)
    lost: list[str] = []
    left = MasterClient([a.master, b_address], "left", connect_timeout=0.5)
    right: MasterClient | None = None
    try:
        await left.connect()
        await left.checkout("port", "desk")
        await asyncio.sleep(0.3)  # in A's journal
        a.kill9()
        b.start()  # A's standby, A dead: it takes over with its own journal (nothing), and the desk re-synced
        await next_event(left, "reconnected")
        await left.checkin("port", "desk")
        right = MasterClient([b_address, a.master], "right", connect_timeout=0.5,
                             on_event=lambda e: lost.append(str(e.get("holder"))) if e.get("event") == "lost" else None)
        await right.connect()
        await right.checkout("port", "phone")  # the one Port, on B
        await asyncio.sleep(0.3)
        left.abort()  # the left PBX goes down with it
        b.kill9()
        a.restart_same_port()  # alone, on its journal: the left PBX holds the desk
        for _ in range(40):  # until the right PBX is connected to A (its re-sync sent, waiting)
            if right.connected.is_set() and right.address == a.address:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        left_again = MasterClient([a.master], "left", connect_timeout=0.5)  # restarted, holding nothing: `fresh`
        await left_again.connect()
        await asyncio.sleep(0.5)
        usage = await left_again.usage()
        await left_again.close()
        assert lost == [] and right.settled and [h for _, h in right.leases] == ["phone"]
        assert in_use(usage, "PBX-Port") == 1
    finally:
        for client in (left, right):
            if client is not None:
                client.abort()
        a.stop()
        b.stop()
