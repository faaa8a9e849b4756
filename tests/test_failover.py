"""Failover's one owner (daemon/ha/failover.py), in memory: the grace window and what it waits for,
taking over and giving way. A clock of our own; the role machine is the real one."""

from __future__ import annotations

from typing import Any

from licmaster.daemon.ha.failover import Failover, Grace, WaitingResync
from licmaster.daemon.ha.recovery import Holdings
from licmaster.daemon.role import Role, RoleMachine
from licmaster.wire import events
from licmaster.wire.events import Change


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def serving(state: Role = Role.STANDBY) -> tuple[RoleMachine, Grace, Clock, list[str]]:
    changes: list[str] = []
    role = RoleMachine(on_change=lambda old, new, why: changes.append(f"{old.value} -> {new.value}: {why}"))
    role.change(state, "start")
    clock = Clock()
    return role, Grace(role, clock), clock, changes


def resync(node: str, tag: str) -> WaitingResync:
    """A waiting re-sync as Grace keeps it; `tag` tells them apart (the dispatcher's session)."""
    return WaitingResync(node, tag, None, 0, [])


HELD = {"pbx1": {("port", "alice")}, "pbx2": {("port", "bob")}}


def test_a_window_known_whole_ends_with_the_last_node_it_waited_for() -> None:
    role, grace, clock, changes = serving()
    grace.open("restarted", {k: set(v) for k, v in HELD.items()}, complete=True, until=clock.now + 60)
    assert role.state is Role.GRACE and grace.denial("pbx3", "port", "new") is not None
    assert grace.take("pbx1") == {("port", "alice")} and role.state is Role.GRACE  # pbx2 still to come
    grace.forget("pbx2")  # its session ended: nothing of it to wait for
    assert role.state is Role.ACTING and changes[-1].endswith("every lease held before was re-synced, moved or given back")
    assert grace.denial("pbx3", "port", "new") is None


def test_a_window_that_may_miss_grants_runs_its_whole_length() -> None:
    # After a takeover the replica may lack the old master's last grants: a PBX may believe one
    # the new master never saw, so new checkouts wait until every such belief has lapsed.
    role, grace, clock, _ = serving()
    grace.open("taking over", {"pbx1": {("port", "alice")}}, complete=False, until=clock.now + 3)
    grace.take("pbx1")
    assert role.state is Role.GRACE and grace.denial("pbx9", "port", "new") is not None
    clock.now += 3
    assert grace.left_ms() == 0 and role.state is Role.GRACE  # reading it changes nothing
    grace.end_if_over(clock.now)
    assert role.state is Role.ACTING


def test_a_window_known_whole_and_empty_ends_at_once_and_one_without_time_is_acting() -> None:
    role, grace, clock, changes = serving()
    grace.open("restarted", {}, complete=True, until=clock.now + 60)
    assert role.state is Role.ACTING
    role2, grace2, clock2, changes2 = serving()
    grace2.open("taking over", HELD, complete=False, until=clock2.now, acting_why="taking over, no grace")
    assert role2.state is Role.ACTING and changes2[-1].endswith("taking over, no grace") and grace2.held == {}


def test_what_a_failed_pbx_held_its_standby_may_re_take() -> None:
    role, grace, clock, _ = serving()
    grace.open("taking over", {"hq": {("port", "alice")}}, complete=True, until=clock.now + 60)
    grace.move("hq", "hq-standby")
    assert grace.denial("hq-standby", "port", "alice") is None and grace.denial("hq", "port", "alice") is not None
    assert grace.take("hq-standby") == {("port", "alice")} and role.state is Role.ACTING


def test_taking_over_installs_adopts_what_was_held_then_opens_grace_then_journals_and_announces() -> None:
    role, grace, clock, changes = serving()
    done: list[Any] = []
    failover = Failover(role, grace, lambda event, **kw: done.append((event, kw["detail"])), grace_s=3.0)
    holdings = Holdings().apply_all([Change(events.GRANT, "pbx1", "port", "a", "7001", "PBX-Port:1")])
    failover.take_over("the master is gone: taking over", 7, holdings,
                       install=lambda epoch: done.append(("install", epoch, role.state)),
                       adopt=lambda held: done.append(("adopt", held.rows(), role.state)),
                       announce=lambda epoch: done.append(("announce", epoch, role.state)), detail="epoch=7")
    assert done == [("install", 7, Role.STANDBY), ("adopt", [("pbx1", "port", "a", "7001", "PBX-Port:1")], Role.STANDBY),
                    (events.PROMOTE, "epoch=7"), ("announce", 7, Role.GRACE)]
    assert role.grace_until == clock.now + 3.0 and not grace.complete and grace.held == {"pbx1": {("port", "a")}}


def test_giving_way_ends_every_session_and_forgets_what_grace_waited_for() -> None:
    role, grace, clock, changes = serving()
    grace.open("restarted", {"pbx1": {("port", "a")}}, complete=False, until=clock.now + 60)
    done: list[Any] = []
    failover = Failover(role, grace, lambda event, **kw: done.append((event, kw["detail"])), grace_s=3.0)
    failover.give_way("m2 is the master at epoch 9 > 8", end_sessions=lambda: done.append(("end", role.state)),
                      then="stepped down", following="m2:4460")
    assert done == [(events.STEP_DOWN, "m2 is the master at epoch 9 > 8"), ("end", Role.STEPPING_DOWN)]
    assert role.state is Role.STANDBY and role.following == "m2:4460" and grace.held == {}
    assert changes[-2:] == ["grace -> stepping_down: m2 is the master at epoch 9 > 8", "stepping_down -> standby: stepped down"]


def test_a_re_sync_bringing_what_the_master_may_not_count_waits_only_in_a_window_that_may_miss_grants() -> None:
    # A restart after kill -9 or a takeover from a journal: its entries may be stale (checked in
    # on a master it never heard of). Known whole (an in-sync standby), nothing waits.
    role, grace, clock, _ = serving()
    grace.open("restarted", {k: set(v) for k, v in HELD.items()}, complete=False, until=clock.now + 3)
    assert grace.waits("pbx3") and grace.waits("pbx1")  # others still to re-sync
    _, whole, whole_clock, _ = serving()
    whole.open("elected in sync", {k: set(v) for k, v in HELD.items()}, complete=True, until=whole_clock.now + 3)
    assert not whole.waits("pbx3")
    role.change(Role.ACTING, "over")
    assert not grace.waits("pbx3")  # no window, nothing to wait for


def test_waiting_re_syncs_are_decided_in_order_on_the_turn_after_the_last_awaited_pbx_re_synced() -> None:
    role, grace, clock, _ = serving()
    turns: list[Any] = []
    decided: list[list[Any]] = []
    grace.schedule, grace.decide = turns.append, decided.append
    grace.open("restarted", {k: set(v) for k, v in HELD.items()}, complete=False, until=clock.now + 3)
    grace.wait(resync("pbx3", "first"))
    assert grace.waits("pbx4")
    grace.wait(resync("pbx4", "second"))
    grace.take("pbx1")
    assert turns == []  # pbx2 may still free a stale entry
    grace.forget("pbx2")  # its session ended: its entries went back
    assert decided == [] and len(turns) == 1  # not inside the end that freed them: on the next turn
    turns.pop()()
    assert decided == [[resync("pbx3", "first"), resync("pbx4", "second")]] and grace.waiting == []
    assert role.state is Role.GRACE  # new checkouts still wait out the window


def test_at_the_window_s_end_its_waiting_re_syncs_are_decided_before_new_checkouts_may_be() -> None:
    role, grace, clock, _ = serving()
    states: list[Role] = []
    grace.decide = lambda waiting: states.append(role.state)
    grace.open("restarted", {"absent": {("port", "x")}}, complete=False, until=clock.now + 3)
    grace.wait(resync("pbx3", "claim"))
    clock.now += 3
    grace.end_if_over(clock.now)  # the absent PBX never re-synced: decided anyway, still in grace
    assert states == [Role.GRACE] and role.state is Role.ACTING
    _, giving_way, other_clock, _ = serving()
    told: list[Any] = []
    giving_way.decide = told.extend
    giving_way.open("restarted", {"absent": {("port", "x")}}, complete=False, until=other_clock.now + 3)
    giving_way.wait(resync("pbx3", "claim"))
    giving_way.clear()  # giving way: decided (its session ended with every other), nothing waits
    assert told == [resync("pbx3", "claim")] and giving_way.waiting == [] and giving_way.held == {}


def test_a_re_sync_queues_behind_those_waiting_and_the_last_awaited_pbx_waiting_too_decides() -> None:
    role, grace, clock, _ = serving()
    turns: list[Any] = []
    decided: list[list[Any]] = []
    grace.schedule, grace.decide = turns.append, decided.append
    grace.open("restarted", {"pbx1": {("port", "a")}}, complete=False, until=clock.now + 3)
    grace.wait(resync("pbx3", "claim"))  # pbx1 awaited
    assert turns == []
    grace.wait(resync("pbx1", "claim too"))  # pbx1 itself brings one it is not counted for: nobody left to wait for
    assert len(turns) == 1 and grace.waits("pbx4")  # behind them: pbx1's stale entries still count
    turns.pop()()
    assert decided == [[resync("pbx3", "claim"), resync("pbx1", "claim too")]]


def test_past_the_window_s_time_new_checkouts_wait_until_the_waiting_re_syncs_are_decided() -> None:
    # Found by review: the window's time up, the reaper's tick not yet come, a checkout took what
    # a waiting re-sync was to get.
    role, grace, clock, _ = serving()
    grace.open("restarted", {"absent": {("port", "x")}}, complete=False, until=clock.now + 3)
    grace.wait(resync("pbx3", "claim"))
    clock.now += 3
    denial = grace.denial("pbx9", "port", "new")
    assert denial is not None and denial.code == "grace" and denial.details["retry_ms"] > 0
    grace.end_if_over(clock.now)
    assert grace.denial("pbx9", "port", "new") is None
