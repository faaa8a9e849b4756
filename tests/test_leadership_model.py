"""Leadership (daemon/ha/leadership.py) against the model of etcd (licmaster/testing/etcd_model.py),
in memory: one leader at a time, a quorum lost and back, a leader killed. The real etcd is in
tests/test_leadership.py; this is the seam a deterministic simulation stands on."""

from __future__ import annotations

import asyncio
from typing import Any

from licmaster.daemon.ha.leadership import Leadership
from licmaster.testing.etcd_model import EtcdModel


def leadership(model: EtcdModel, name: str, seen: list[tuple[str, Any]]) -> Leadership:
    return Leadership(model.client(), "/licmaster/leader", name, f"{name}:4460", ttl_s=1, poll_s=0.05,
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

    model.up = False  # the quorum is lost: nobody can renew; the leader stops confirming before its lease ends
    await until(lambda: first.suspended)
    assert ("m1", "suspend") in [(name, what[0]) for name, what in seen] and not second.leading
    model.up = True  # back within the lease's TTL: renewed, resumed
    await until(lambda: not first.suspended)

    assert first._task is not None
    first._task.cancel()  # kill -9: no revoke; the key goes with its lease's TTL
    await until(lambda: second.leading)
    assert second.epoch > first.epoch
    assert [name for name, what in seen if what[0] == "won"] == ["m1", "m2"]
    await second.stop()


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
