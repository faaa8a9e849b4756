"""`slave-sim sim` (slave_sim/sim/): the real masters and clients on one virtual clock, faults from
the seed, the chaos drill's rules over the history; the same seed gives the same history, it finds
a hole that was fixed, and a simulation that cannot go on is reported, never a hang."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import pytest

from licmaster.client import LicenseError, MasterClient
from licmaster.daemon.ha.etcd import EtcdUnavailable
from licmaster.daemon.master import Master
from licmaster.testing.etcd_model import CLUSTER, EtcdModel
from licmaster.testing.simloop import HOST, VirtualLoop
from licmaster.testing.simmaster import PORT, SimMaster
from slave_sim.chaos.check import OVER_RULE, SERVED_RULE
from slave_sim.sim import SimConfig, run_sim
from slave_sim.sim.command import add_arguments, describe, main
from slave_sim.sim.world import World


def test_the_same_seed_gives_the_same_history_byte_for_byte_and_another_seed_another() -> None:
    first = run_sim(SimConfig(seed=3, hours=0.5, fault_every_s=60))
    again = run_sim(SimConfig(seed=3, hours=0.5, fault_every_s=60))
    other = run_sim(SimConfig(seed=4, hours=0.5, fault_every_s=60))
    assert first.history == again.history and first.history_sha256 == again.history_sha256
    assert other.history_sha256 != first.history_sha256
    assert first.passed and first.faults and first.simulated_s >= 1800 and first.audits and first.leases_audited


def test_undoing_adoption_at_a_takeover_is_found_by_the_chaos_rules_and_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    # Proven able to fail: a new master that counts nothing it did not see re-synced (the hole the
    # two clocks' adoption closes) is found 1.08 simulated hours in; the product passes the same seed.
    monkeypatch.setattr(Master, "adopt", lambda self, holdings: None)
    broken = run_sim(SimConfig(seed=1, hours=1.5, fault_every_s=120, faults=("kill-master", "cut-pbx", "cut-pbx-one-way")))
    assert broken.by_rule[OVER_RULE] == 1 and broken.safety[0].startswith("believed 61 > installed 60"), broken.violations
    assert broken.availability  # PBXs cut off at the takeover lose leases within their hold when they come back
    doc = broken.to_dict()
    doc["trace"] = [list(event) for event in broken.trace()]
    out = describe(broken, doc, 30.0)
    assert "FAILED" in out and "replay: slave-sim sim --seed 1 --hours 1.5 --pbxs 10 --phones 14 --ports 60 " \
                                "--fault-every 120 --faults kill-master,cut-pbx,cut-pbx-one-way --trace" in out
    first = broken.first_violation_t()
    assert first == 3895.0002 and "the first violation (t=3895.000 s)" in out
    assert [event[1:] for event in broken.trace() if event[0] == first] == [("over", 61, 49)]  # believed, counted


@pytest.mark.parametrize(("option", "value"), [("seed", -1), ("hours", 0), ("pbxs", 51), ("phones", 0), ("ports", 0),
                                               ("fault_every_s", 1), ("faults", ("kill-master", "nap"))])
def test_a_seed_or_an_option_out_of_range_is_named(option: str, value: object) -> None:
    config = SimConfig(**{"seed": 1, option: value})  # type: ignore[arg-type]
    named = {"fault_every_s": "--fault-every", "faults": "--faults nap"}.get(option, f"--{option}")
    assert any(problem.startswith(named) for problem in config.problems())


def test_every_option_the_seed_derives_is_printed_first(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert main(parser.parse_args(["--seed", "9", "--hours", "0.3", "--faults", "clock-jump", "--fault-every", "60"])) == 0
    err = capsys.readouterr().err
    derived = SimConfig(seed=9, faults=("clock-jump",)).derived()
    assert f'"latency_s": {derived["latency_s"]}' in err and '"weights": {"clock-jump": ' in err


def test_the_simulated_masters_draw_lease_tags_from_the_models_range() -> None:
    from licmaster.model.leases import LEASE_TAGS
    from licmaster.testing import simmaster

    assert simmaster.LEASE_TAGS == LEASE_TAGS


def test_with_the_leadership_in_a_model_of_etcd_quorum_losses_cuts_and_kills_hold_and_replay_the_same() -> None:
    config = SimConfig(seed=5, hours=0.75, fault_every_s=45, etcd=True,
                       faults=("quorum-lost", "kill-master", "cut-etcd", "cut-etcd-one-way", "cut-masters-one-way"))
    first, again = run_sim(config), run_sim(config)
    assert first.passed, first.violations
    assert first.history_sha256 == again.history_sha256
    kinds = {kind for _, kind, _ in first.faults}
    assert {"quorum-lost", "kill-master", "cut-etcd", "cut-etcd-one-way"} <= kinds
    assert first.to_dict()["replay"].endswith("--etcd --faults quorum-lost,kill-master,cut-etcd,cut-etcd-one-way,cut-masters-one-way")


def test_pauses_longer_than_every_timeout_of_a_master_and_of_pbxs_and_clock_jumps_hold() -> None:
    result = run_sim(SimConfig(seed=11, hours=1, fault_every_s=30, faults=("pause-master", "pause-pbx", "clock-jump")))
    assert result.passed, result.violations
    pauses = [what for _, kind, what in result.faults if kind == "pause-master"]
    assert any(what.endswith(" 120 s") for what in pauses) and any(what.endswith(" 0.3 s") for what in pauses)
    assert any(kind == "clock-jump" for _, kind, _ in result.faults)
    assert any(event[1] == "serving" for event in result.history[1:])  # a long pause of the master made the standby take over


def test_a_simulation_where_every_task_waits_and_no_timer_is_due_is_a_liveness_violation_with_its_trace(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    async def nothing(self: object) -> None:
        return None

    async def waits_for_ever(self: World, *_: object) -> None:
        self.note("waiting", "for ever")
        await asyncio.get_running_loop().create_future()

    monkeypatch.setattr(SimMaster, "start", nothing)
    monkeypatch.setattr(World, "pbx", waits_for_ever)
    monkeypatch.setattr(World, "sample", waits_for_ever)
    result = run_sim(SimConfig(seed=1, hours=1))
    assert not result.passed and result.stalled is not None and "every task waits" in result.liveness[0]
    assert [event[1] for event in result.trace()][-1] == "stalled" and result.by_rule[SERVED_RULE] == 0
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert main(parser.parse_args(["--seed", "1", "--hours", "1", "--trace", "5"])) == 1
    out = capsys.readouterr().out
    assert "liveness: 1 violation(s)\n    stalled: at " in out and "all healed" in out  # the trace: the last events before it


def test_a_master_cut_from_the_model_of_etcd_one_way_renews_without_hearing_it() -> None:
    loop = VirtualLoop()

    async def renew() -> tuple[int, float, float]:
        model = EtcdModel()
        client = model.client(host="m1")
        lease, _ = await client.grant(2)
        model.cut.add((CLUSTER, "m1"))  # the answers do not come back
        with pytest.raises(EtcdUnavailable):
            await client.keep_alive(lease)
        renewed_until = model.leases[lease][1]
        model.cut = {("m1", CLUSTER)}  # the requests do not get there
        with pytest.raises(EtcdUnavailable):
            await client.keep_alive(lease)
        return lease, renewed_until, asyncio.get_running_loop().time()

    try:
        _, renewed_until, now = loop.run_until_complete(renew())
    finally:
        loop.close()
    assert renewed_until == 2.0 and now == 2.0  # renewed at 0 though it failed; each failure heard after its 1 s timeout


A_HOST, B_HOST = "10.1.0.1", "10.1.0.2"


def two_node(tmp_path: Path, licenses: str, *, b_standby: bool = True) -> tuple[SimMaster, SimMaster]:
    """Masters A and B, each the other's peer; B configured as A's standby unless told not."""
    a = SimMaster(tmp_path / "a", A_HOST, licenses, peers=(f"{B_HOST}:{PORT}",), log_level="error")
    b = SimMaster(tmp_path / "b", B_HOST, licenses, peers=(a.address,), log_level="error",
                  standby_of=a.address if b_standby else "")
    return a, b


def run_scenario(loop: VirtualLoop, scenario: Any, masters: tuple[SimMaster, ...], clients: tuple[MasterClient, ...] = ()) -> Any:
    """`scenario()` on the loop's virtual clock; then, whatever happened, the clients aborted,
    the masters killed and every task left ended."""
    async def stop() -> None:
        for client in clients:
            client.abort()
        for master in masters:
            master.kill()

    try:
        with loop.virtual_wall_clock():
            try:
                return loop.run_until_complete(scenario())
            finally:
                loop.run_until_complete(stop())
                _settle(loop)
    finally:
        loop.close()


def _settle(loop: VirtualLoop) -> None:
    """End every task the scenario left (as the simulation's end does)."""
    async def cancel_the_rest() -> None:
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    loop.run_until_complete(cancel_the_rest())


def test_a_master_that_took_over_below_the_epoch_its_dead_peer_served_at_catches_up_once_that_peer_follows_it(
        tmp_path: Path) -> None:
    # Seed 3 of `slave-sim sim --hours 6 --fault-every 60`: A served at epoch 3 and died; B, started
    # as A's standby meanwhile, never heard of 3 and took over at 2, which the PBXs A served refuse
    # (deposed, to them). A, back, follows B: B must move up to A's epoch, or nobody serves them.
    loop = VirtualLoop()
    a, b = two_node(tmp_path, '[[license]]\ntype = "PBX-Port13"\ncount = 3\n')
    pbx = MasterClient([a.address, b.address], "pbx1", connect_timeout=2.0)

    async def scenario() -> dict[str, object]:
        HOST.set("10.0.0.1")
        for _ in range(2):  # two earlier runs: A starts next at epoch 3
            await a.start()
            a.kill()
        await a.start()
        await pbx.connect()
        await pbx.checkout("port", "alice")
        seen: dict[str, object] = {"pbx_epoch": pbx.epoch}
        a.kill()
        await b.start()
        await asyncio.sleep(10)
        assert b.master is not None
        seen.update(b_epoch=b.master.epoch, b_role=b.master.role.state.value, settled_while_a_down=pbx.settled)
        await a.start()  # back on its data (epoch 4): B acts, so A follows it
        assert a.master is not None
        seen.update(a_role=a.master.role.state.value, a_epoch=a.master.epoch)
        await asyncio.sleep(5)
        seen.update(b_epoch_after=b.master.epoch, settled=pbx.settled, on=pbx.address, client_epoch=pbx.epoch,
                    held=sorted(holder for _, holder in pbx.leases))
        try:
            seen["bob"] = bool((await asyncio.wait_for(pbx.checkout("port", "bob"), 5)).lease)
        except (TimeoutError, ConnectionError) as exc:  # the PBX served by nobody
            seen["bob"] = type(exc).__name__
        return seen

    seen = run_scenario(loop, scenario, (a, b), (pbx,))
    assert seen["pbx_epoch"] == 3 and (seen["b_role"], seen["b_epoch"]) == ("acting", 2)
    assert not seen["settled_while_a_down"]  # the one master alive is below what the PBX saw: no one can serve it
    assert (seen["a_role"], seen["a_epoch"]) == ("standby", 4)
    assert seen["b_epoch_after"] == 4 and seen["client_epoch"] == 4
    assert seen["settled"] and seen["on"] == (B_HOST, PORT) and seen["held"] == ["alice"] and seen["bob"] is True


def test_a_follower_stopped_in_the_turn_its_connection_is_made_follows_no_more(tmp_path: Path) -> None:
    # Python 3.11's wait_for swallows a cancel that comes in the loop turn in which what it waits
    # for got done: a follower stopped then (Master._won, _follow_leader) went on following, into
    # the store of a master that leads (and once that master was killed: "closed database").
    from licmaster.daemon.ha.replication import Follower
    from licmaster.daemon.storage.store import Store

    loop = VirtualLoop()
    store = Store(tmp_path / "standby.sqlite3")
    accepted: list[float] = []

    async def scenario() -> bool:
        follower: list[Follower] = []

        def accept() -> asyncio.Protocol:  # the master's side, which never answers: the follower stopped that turn
            accepted.append(loop.time())
            if len(accepted) == 1:
                loop.create_task(follower[0].stop())
            return asyncio.Protocol()

        loop.network.listen("10.1.0.2", PORT, accept)
        HOST.set("10.1.0.1")
        follower.append(Follower(f"10.1.0.2:{PORT}", "10.1.0.1", store, 2000, lambda *_: None, autonomous=False))
        follower[0].start()
        await asyncio.sleep(30)
        task = follower[0]._task
        return task is not None and task.done()

    try:
        ended = loop.run_until_complete(scenario())
        _settle(loop)
    finally:
        loop.close()
        store.close()
    assert ended and len(accepted) == 1, accepted  # was: reconnecting every second, for ever


def test_two_masters_acting_at_the_same_epoch_heal_into_one_master_and_its_standby(tmp_path: Path) -> None:
    # `slave-sim sim --seed 102 --fault-every 60`: B took over from a paused A at epoch 22, and A,
    # killed and restarted meanwhile, came back acting at 22 too (it could not see B). Neither was
    # newer, so neither stepped down: 61 Ports counted for 60 installed, for good. Here the two
    # start cut apart, each acting at epoch 1; healed, one gives way and follows the other.
    loop = VirtualLoop()
    a, b = two_node(tmp_path, '[[license]]\ntype = "PBX-Port13"\ncount = 3\n', b_standby=False)

    async def scenario() -> list[tuple[str, str, int]]:
        loop.network.set_cut(A_HOST, B_HOST)
        await a.start()
        await b.start()
        assert a.master is not None and b.master is not None
        assert (a.master.role.state.value, b.master.role.state.value) == ("acting", "acting")
        assert a.master.epoch == b.master.epoch
        loop.network.heal(A_HOST, B_HOST)
        await asyncio.sleep(10)
        return [(m.host, m.master.role.state.value, m.master.epoch) for m in (a, b) if m.master is not None]

    roles = run_scenario(loop, scenario, (a, b))
    assert sorted(role for _, role, _ in roles) == ["acting", "standby"], roles  # was: both acting for ever
    assert dict((host, role) for host, role, _ in roles)[A_HOST] == "acting"  # "10.1.0.1" sorts first: the tie is a's


def test_a_standby_restarted_while_its_master_is_down_takes_over_with_what_its_journal_knows(tmp_path: Path) -> None:
    # `slave-sim sim --seed 300`: B took over once (its journal has the branch's Port, adopted),
    # was killed, A took over and was killed too; B, restarted as A's standby, never attached and
    # took over with nothing counted: the branch, cut off all along, believed its Port while the
    # next PBX got it (61 believed of 60).
    loop = VirtualLoop()
    a, b = two_node(tmp_path, '[[license]]\ntype = "PBX-Port13"\ncount = 1\n')
    branch = MasterClient([a.address, b.address], "branch", connect_timeout=2.0)
    hq = MasterClient([a.address, b.address], "hq", connect_timeout=2.0, max_retry_s=5)

    async def scenario() -> tuple[bool, object]:
        HOST.set("10.0.0.1")
        await a.start()
        await b.start()
        await branch.connect()
        await branch.checkout("port", "desk")
        await asyncio.sleep(2)  # B in sync
        loop.network.set_cut("10.0.0.1", A_HOST)
        loop.network.set_cut("10.0.0.1", B_HOST)  # the branch cut off from both, for good
        a.kill()
        await asyncio.sleep(10)  # B took over (the branch's Port adopted, in its journal)
        b.kill()
        await a.start()  # A alone: it serves
        await asyncio.sleep(10)
        a.kill()
        await b.start()  # B, A's standby, while A is down: it never attaches, and takes over
        await asyncio.sleep(10)
        HOST.set("10.0.0.2")
        await hq.connect()
        try:
            outcome: object = (await hq.checkout("port", "phone")).lease
        except LicenseError as exc:
            outcome = exc.code
        return bool(branch.believed()), outcome

    believed, outcome = run_scenario(loop, scenario, (a, b), (branch, hq))
    assert believed and outcome == "exhausted", outcome  # was: a lease id, the branch's Port given twice


def test_a_master_back_after_both_were_killed_lets_a_re_sync_wait_for_the_stale_entries_to_go(tmp_path: Path) -> None:
    # `slave-sim sim --seed 701` (and 302, 504, 507, 901): A served the left PBX's Port and was
    # killed; B took over, the left PBX gave the Port back and the right one took it; B was killed
    # and A came back, its journal still saying the left PBX holds it. The right PBX re-synced
    # first and was refused its phone (`exhausted`): the stale entry filled the pool until the
    # left PBX re-synced a moment later. Now its re-sync waits for that, and is then taken.
    loop = VirtualLoop()
    a, b = two_node(tmp_path, '[[license]]\ntype = "PBX-Port13"\ncount = 1\n')
    lost: list[str] = []
    left = MasterClient([a.address, b.address], "left", connect_timeout=2.0)
    right = MasterClient([a.address, b.address], "right", connect_timeout=2.0,
                         on_event=lambda event: lost.append(str(event.get("holder"))) if event.get("event") == "lost" else None)

    async def scenario() -> dict[str, object]:
        HOST.set("10.0.0.1")
        await a.start()
        await left.connect()
        await left.checkout("port", "desk")
        await asyncio.sleep(1)  # in A's journal
        a.kill()
        await b.start()  # A's standby, A down: it takes over with its journal (nothing), and re-syncs the desk
        await asyncio.sleep(5)
        await left.checkin("port", "desk")
        HOST.set("10.0.0.2")
        await right.connect()
        await right.checkout("port", "phone")  # the one Port, on B
        await asyncio.sleep(1)
        loop.network.set_cut("10.0.0.1", A_HOST)  # the left PBX comes back to A a second after the right one
        b.kill()
        await a.start()  # B down: A serves on its journal, where the left PBX still holds the desk
        await asyncio.sleep(1)
        loop.network.heal("10.0.0.1", A_HOST)
        await asyncio.sleep(5)
        return {"right": sorted(holder for _, holder in right.leases), "settled": right.settled,
                "left": sorted(holder for _, holder in left.leases)}

    seen = run_scenario(loop, scenario, (a, b), (left, right))
    assert lost == [], lost  # was: ['phone'], refused at its re-sync while it held it
    assert seen["right"] == ["phone"] and seen["settled"] and seen["left"] == []


def pbxs_telling_losses(a: SimMaster, b: SimMaster, names: list[str], lost: list[str]) -> list[MasterClient]:
    """PBX clients of both masters, each loss they are told added to `lost` as `node:holder`."""
    def pbx(name: str) -> MasterClient:
        return MasterClient([a.address, b.address], name, connect_timeout=2.0,
                            on_event=lambda event: lost.append(f"{name}:{event.get('holder')}") if event.get("event") == "lost" else None)
    return [pbx(name) for name in names]


async def s_and_t_served_by_a_then_by_b(a: SimMaster, b: SimMaster, s: MasterClient, t: MasterClient, hosts: dict[str, str]) -> None:
    """A's journal: S holds a and b, T holds t. Then A is killed and B takes over with nothing
    counted (S and T re-sync to it), where S gives a and b back and takes s2."""
    await a.start()
    for client, holders in ((s, ["a", "b"]), (t, ["t"])):
        HOST.set(hosts[client.node])
        await client.connect()
        for holder in holders:
            await client.checkout("port", holder)
    await asyncio.sleep(1)  # in A's journal
    a.kill()
    await b.start()
    await asyncio.sleep(5)
    await s.checkin("port", "a")
    await s.checkin("port", "b")
    await s.checkout("port", "s2")


async def a_back_alone_s_and_t_cut_from_it(loop: VirtualLoop, a: SimMaster, b: SimMaster, hosts: dict[str, str]) -> None:
    """B killed, A back on its journal (S holds a and b, T holds t), S and T cut from it until healed."""
    loop.network.set_cut(hosts["s"], A_HOST)
    loop.network.set_cut(hosts["t"], A_HOST)
    b.kill()
    await a.start()


def test_a_restarted_pbx_whose_re_sync_waits_does_not_say_its_leases_lapsed_meanwhile(tmp_path: Path) -> None:
    # Found by review: the right PBX of the story above, its client restarted meanwhile, brings
    # its phone never confirmed since; its re-sync waits two seconds for the left PBX, and its
    # client said `lapsed` at its first wake, the phone back only with the reply.
    loop = VirtualLoop()
    a, b = two_node(tmp_path, '[[license]]\ntype = "PBX-Port13"\ncount = 1\n')
    said: list[str] = []
    left = MasterClient([a.address, b.address], "left", connect_timeout=2.0)
    right = MasterClient([a.address, b.address], "right", connect_timeout=2.0)
    restarted = MasterClient([a.address, b.address], "right", connect_timeout=2.0,
                             on_event=lambda event: said.append(str(event.get("event"))) if event.get("event") in ("lapsed", "lost") else None)

    async def scenario() -> list[str]:
        HOST.set("10.0.0.1")
        await a.start()
        await left.connect()
        await left.checkout("port", "desk")
        await asyncio.sleep(1)
        a.kill()
        await b.start()
        await asyncio.sleep(5)
        await left.checkin("port", "desk")
        HOST.set("10.0.0.2")
        await right.connect()
        await right.checkout("port", "phone")
        await asyncio.sleep(1)
        loop.network.set_cut("10.0.0.1", A_HOST)
        b.kill()
        right.abort()
        restarted.adopt(right.leases.values())  # the PBX's client restarted, with what it held
        await a.start()
        await restarted.connect()
        resync = asyncio.ensure_future(restarted.sync())  # waits for the left PBX
        await asyncio.sleep(2)
        loop.network.heal("10.0.0.1", A_HOST)
        await asyncio.wait_for(resync, 10)
        return sorted(holder for _, holder in restarted.leases)

    held = run_scenario(loop, scenario, (a, b), (left, right, restarted))
    assert said == [] and held == ["phone"], (said, held)


def test_waiting_re_syncs_first_give_back_what_each_no_longer_holds_then_are_taken_in_order(tmp_path: Path) -> None:
    # Found by review: two re-syncs waiting, the first refused for want of the Ports that the
    # second's own stale entries held (they went back only when the second was taken).
    # Installed 3: A's journal says S holds a and b, T holds t; on B since, S gave a and b back
    # and took s2, X took x. Back on A, X re-syncs first, S next, T last.
    loop = VirtualLoop()
    a, b = two_node(tmp_path, '[[license]]\ntype = "PBX-Port13"\ncount = 3\n')
    lost: list[str] = []
    hosts = {"s": "10.0.0.1", "t": "10.0.0.2", "x": "10.0.0.3"}
    s, t, x = pbxs_telling_losses(a, b, ["s", "t", "x"], lost)

    async def scenario() -> dict[str, object]:
        await s_and_t_served_by_a_then_by_b(a, b, s, t, hosts)
        HOST.set(hosts["x"])
        await x.connect()
        await x.checkout("port", "x")
        await asyncio.sleep(1)
        await a_back_alone_s_and_t_cut_from_it(loop, a, b, hosts)
        await asyncio.sleep(0.5)
        loop.network.heal(hosts["s"], A_HOST)  # X re-synced first, S next: both wait for T
        await asyncio.sleep(1)
        loop.network.heal(hosts["t"], A_HOST)
        await asyncio.sleep(5)
        return {client.node: sorted(holder for _, holder in client.leases) for client in (s, t, x)}

    held = run_scenario(loop, scenario, (a, b), (s, t, x))
    assert lost == [], lost
    assert held == {"s": ["s2"], "t": ["t"], "x": ["x"]}


def test_a_waiting_re_sync_whose_connection_is_lost_leaves_its_pbx_awaited_again(tmp_path: Path) -> None:
    # Found by review: S's re-sync waited, its connection dropped, and T's re-sync, coming next,
    # found nobody left to wait for; taken at once, it was refused t2 while S's stale entries
    # still counted. Installed 3: A's journal says S holds a and b, T holds t; on B since, S gave
    # a and b back and took s2, T took t2.
    loop = VirtualLoop()
    a, b = two_node(tmp_path, '[[license]]\ntype = "PBX-Port13"\ncount = 3\n')
    lost: list[str] = []
    hosts = {"s": "10.0.0.1", "t": "10.0.0.2"}
    s, t = pbxs_telling_losses(a, b, ["s", "t"], lost)

    async def scenario() -> dict[str, object]:
        await s_and_t_served_by_a_then_by_b(a, b, s, t, hosts)
        await t.checkout("port", "t2")
        await asyncio.sleep(1)
        await a_back_alone_s_and_t_cut_from_it(loop, a, b, hosts)
        await asyncio.sleep(0.3)
        loop.network.heal(hosts["s"], A_HOST)
        await asyncio.sleep(0.5)  # S's re-sync waits for T
        loop.network.reset(hosts["s"])
        loop.network.set_cut(hosts["s"], A_HOST)  # and S is gone again, for a while
        loop.network.heal(hosts["t"], A_HOST)
        await asyncio.sleep(0.5)  # T's re-sync: S is awaited again
        loop.network.heal(hosts["s"], A_HOST)
        await asyncio.sleep(5)
        return {client.node: sorted(holder for _, holder in client.leases) for client in (s, t)}

    held = run_scenario(loop, scenario, (a, b), (s, t))
    assert lost == [], lost
    assert held == {"s": ["s2"], "t": ["t", "t2"]}


def test_a_tie_at_the_same_epoch_is_broken_alike_on_both_sides_whatever_the_peer_strings_say() -> None:
    # Each side compares the two (name, advertised address) pairs as each master reports itself,
    # not its own spelling of the peer's address; with etcd there is no tie to break, and a
    # standby waiting for the election is no acting peer at all.
    from licmaster.daemon.ha.replication import PeerWatch, acting_epoch

    def watch(name: str, address: str, *, etcd: bool = False) -> PeerWatch:
        return PeerWatch([], name, auth=None, tls=None, interval_s=1.0, epoch=lambda: 5, acting=lambda: True,
                         on_newer=lambda *_: None, on_behind=None if etcd else (lambda *_: None), address=address)

    a, b = watch("pbx-master", "0.0.0.0:4460"), watch("pbx-master", "10.1.0.2:4460")
    a_usage = {"master": "pbx-master", "advertise": "0.0.0.0:4460", "epoch": 5, "role": "acting"}
    b_usage = {"master": "pbx-master", "advertise": "10.1.0.2:4460", "epoch": 5, "role": "acting"}
    yields = [a._yields_to("master-b.example:4460", b_usage), b._yields_to("master-a.example:4460", a_usage)]
    assert sorted(yields) == [False, True]  # exactly one, though each names the other by a host name
    assert not watch("m", "10.1.0.1:4460", etcd=True)._yields_to("10.1.0.2:4460", b_usage)
    assert acting_epoch({"epoch": 7, "role": "standby", "standby_of": None}) is None  # etcd: waiting for the election
    assert acting_epoch({"epoch": 7, "role": "grace", "standby_of": None}) == 7


def test_a_master_knows_its_own_standby_by_the_address_it_feeds_whatever_name_the_standby_gives_it() -> None:
    # The epoch catch-up (seed 3) must not depend on the standby spelling this master's address
    # as this master does: it listens on 0.0.0.0, the standby names it by a host name.
    from licmaster.daemon.ha.replication import PeerWatch

    fed = PeerWatch([], "master-a", auth=None, tls=None, interval_s=1.0, epoch=lambda: 2, acting=lambda: True,
                    on_newer=lambda *_: None, on_behind=lambda *_: None, address="0.0.0.0:4460",
                    standbys=lambda: ["10.1.0.2:4460"])
    standby = {"advertise": "10.1.0.2:4460", "standby_of": "master-a.example:4460", "role": "standby", "epoch": 4}
    assert fed._follows_me(standby)
    assert not fed._follows_me({**standby, "advertise": "10.1.0.3:4460"})  # another master's standby


@pytest.mark.parametrize(("seed", "etcd", "hours"), [(700, False, 6.0), (701, False, 6.0), (702, False, 6.0), (800, True, 4.0)])
def test_a_sweep_of_seeds_holds_every_rule(seed: int, etcd: bool, hours: float) -> None:
    # CI's share of the sweep (issue 26: about a minute of seeds): ~300 faults a seed at the
    # default of one a simulated minute. A failure prints the command that replays it. (701 has
    # both masters killed one after the other: the re-sync that waits for stale entries to go.)
    result = run_sim(SimConfig(seed=seed, hours=hours, etcd=etcd))
    assert result.passed, f"{result.to_dict()['replay']} --trace: {result.violations[:3]}"
    assert len(result.faults) > 150
