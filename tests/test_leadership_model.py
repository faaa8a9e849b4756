"""Leadership (daemon/ha/leadership.py) against the model of etcd (licmaster/testing/etcd_model.py),
in memory: one leader at a time, a quorum lost and back, a leader killed. The real etcd is in
tests/test_leadership.py; this is the seam a deterministic simulation stands on."""

from __future__ import annotations

import asyncio
from typing import Any

from licmaster.daemon.ha.leadership import Leadership
from licmaster.testing.etcd_model import EtcdModel


def leadership(model: EtcdModel, name: str, seen: list[tuple[str, Any]], *, in_sync: bool = True) -> Leadership:
    return Leadership(model.client(), "/licmaster/leader", name, f"{name}:4460", ttl_s=1, poll_s=0.05, in_sync=lambda: in_sync,
                      on_won=lambda epoch: seen.append((name, ("won", epoch))),
                      on_follow=lambda leader: seen.append((name, ("follow", leader))),
                      on_suspend=lambda why: seen.append((name, ("suspend", why))),
                      on_resume=lambda: seen.append((name, ("resume", None))),
                      on_lost=lambda leader: seen.append((name, ("lost", leader))))


async def until(predicate: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within the time")


async def test_one_leader_a_quorum_lost_suspends_it_and_a_killed_leader_is_replaced_at_a_higher_epoch() -> None:
    model = EtcdModel()
    seen: list[tuple[str, Any]] = []
    first, second = leadership(model, "m1", seen), leadership(model, "m2", seen)
    first.start()
    await until(lambda: first.leading)
    second.start()
    await until(lambda: ("m2", ("follow", "m1:4460")) in seen)
    won = [(name, what[1]) for name, what in seen if what[0] == "won"]
    assert won == [("m1", first.epoch)] and not second.leading  # one leader, its epoch the key's revision
    assert await first.record_in_sync(["m2:4460"])  # m2 acknowledges every grant m1 answers (daemon/ha/feed.py)

    model.up = False  # the quorum is lost: nobody can renew; the leader stops confirming before its lease ends
    await until(lambda: first.suspended)
    assert ("m1", "suspend") in [(name, what[0]) for name, what in seen] and not second.leading
    model.up = True  # back within the lease's TTL: renewed, resumed
    await until(lambda: not first.suspended)

    assert first._task is not None
    first._task.cancel()  # kill -9: no revoke; the key goes with its lease's TTL
    await until(lambda: second.leading)
    assert second.epoch > first.epoch and second.complete  # an in-sync standby: it knows every grant answered
    assert [name for name, what in seen if what[0] == "won"] == ["m1", "m2"]
    await second.stop()


async def test_only_an_in_sync_standby_or_the_leader_before_may_lead_and_a_deposed_leader_records_nothing() -> None:
    model = EtcdModel()
    seen: list[tuple[str, Any]] = []
    first = leadership(model, "m1", seen)
    first.start()
    await until(lambda: first.leading)
    late = leadership(model, "m2", seen)  # attached once, then dropped: m1 recorded no in-sync standby
    assert await first.record_in_sync([])
    behind = leadership(model, "m3", seen, in_sync=False)  # named in the record, but its stream is not whole
    assert await first.record_in_sync(["m3:4460"])
    late.start()
    behind.start()
    assert first._task is not None
    first._task.cancel()  # kill -9 of the leader
    await until(lambda: "/licmaster/leader" not in model.keys, 3)
    await asyncio.sleep(0.3)
    assert not late.leading and not behind.leading  # neither holds every grant m1 answered
    assert late.state == "waiting" and "in-sync" in late.why
    again = leadership(model, "m1", seen)  # the leader before, restarted: its journal says what it knows
    again.start()
    await until(lambda: again.leading)
    assert not again.complete
    assert not await first.record_in_sync(["m2:4460"])  # the deposed run writes nothing any more
    for one in (late, behind, again):
        await one.stop()


async def test_a_master_leads_through_the_model_of_etcd_and_serves_only_while_it_leads(tmp_path) -> None:
    # The Master's own seam (Master(etcd_client=...)): the real master, the model in place of etcd.
    from licmaster.daemon.role import Role

    from .daemon import in_process

    model = EtcdModel()
    d = await in_process(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 3\n', etcd_client=model.client,
                         etcd_endpoints=["127.0.0.1:2379"], etcd_ttl_s=2, grace_ms=0)
    try:
        assert d.master is not None
        await until(lambda: d.master is not None and d.master.role.state is Role.ACTING)
        assert model.keys["/licmaster/leader"].value  # its address, in the model's key
        pbx = await d.connect()
        assert (await pbx.hello("pbx1"))["ok"] and (await pbx.request("checkout", resource="port", holder="a"))["ok"]
        model.up = False  # quorum lost: it suspends, and refuses with no_quorum
        await until(lambda: d.master is not None and d.master.role.state is Role.SUSPENDED)
        other = await d.connect()
        assert (await other.hello("pbx2"))["error"] == "no_quorum"
    finally:
        await d.stop()


async def test_a_leader_that_loses_its_key_and_wins_it_back_counts_what_it_counted_when_it_gave_way(tmp_path) -> None:
    # A quorum lost past the key's TTL: the leader suspends, then finds its key gone and gives way
    # (its sessions end), then wins the election again, nobody elected meanwhile. What its PBXs
    # hold is what it counted when it gave way, not what its journal held at its start (empty
    # here): the absent PBX's Port stays its own, and nobody else gets it.
    # (`slave-sim sim --seed 61 --etcd`: 5 phones refused at their re-sync after such a loss.)
    from licmaster.daemon.role import Role

    from .daemon import in_process

    model = EtcdModel()
    d = await in_process(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 1\n', etcd_client=model.client,
                         etcd_endpoints=["127.0.0.1:2379"], etcd_ttl_s=2)
    try:
        await until(lambda: d.master is not None and d.master.role.state is Role.ACTING)
        assert d.master is not None
        first_epoch = d.master.epoch
        cut_off = await d.connect()
        assert (await cut_off.hello("branch"))["ok"] and (await cut_off.request("checkout", resource="port", holder="a"))["ok"]
        model.up = False
        await until(lambda: d.master is not None and d.master.role.state is Role.SUSPENDED)
        await asyncio.sleep(2.5)  # past the etcd lease's TTL: the key goes once the quorum is back
        model.up = True
        await until(lambda: d.master is not None and d.master.epoch > first_epoch and d.master.role.state is Role.ACTING, 10)
        assert d.master.dispatch.book.all()  # the branch's Port, adopted again
        other = await d.connect()
        assert (await other.hello("hq"))["ok"]
        refused = await other.request("checkout", resource="port", holder="b")
        assert refused.get("error") == "exhausted", refused  # the branch holds it for its hold
        back = await d.connect()
        assert (await back.hello("branch"))["ok"]
        synced = await back.request("sync", leases=[{"resource": "port", "holder": "a"}])
        assert synced["ok"] and not synced.get("refused"), synced
    finally:
        await d.stop()
