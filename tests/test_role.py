"""The master's role is one state machine: each allowed transition, and a refusal of the rest."""

from __future__ import annotations

import pytest

from licmaster.daemon.role import TRANSITIONS, IllegalTransition, Role, RoleMachine

ALLOWED = [(old, new) for old, targets in TRANSITIONS.items() for new in sorted(targets, key=lambda r: r.value)]
REFUSED = [(old, new) for old in Role for new in Role if new not in TRANSITIONS[old]]


def machine_in(state: Role, seen: list[tuple[Role, Role, str]]) -> RoleMachine:
    """A machine brought to `state` by allowed steps only."""
    paths = {Role.STARTING: [], Role.STANDBY: [Role.STANDBY], Role.GRACE: [Role.GRACE], Role.ACTING: [Role.ACTING],
             Role.STEPPING_DOWN: [Role.ACTING, Role.STEPPING_DOWN], Role.STOPPED: [Role.STOPPED],
             Role.SUSPENDED: [Role.ACTING, Role.SUSPENDED]}
    machine = RoleMachine(on_change=lambda old, new, why: seen.append((old, new, why)))
    for step in paths[state]:
        machine.change(step, "setting up", following="m:1" if step is Role.STANDBY else "", grace_until=5.0)
    seen.clear()
    return machine


@pytest.mark.parametrize(("old", "new"), ALLOWED, ids=[f"{o.value}->{n.value}" for o, n in ALLOWED])
def test_each_allowed_transition_changes_the_state_and_is_reported(old: Role, new: Role) -> None:
    seen: list[tuple[Role, Role, str]] = []
    machine = machine_in(old, seen)
    machine.change(new, "because", following="10.0.0.1:4460", grace_until=12.5)
    assert machine.state is new
    assert seen == [(old, new, "because")]  # the daemon logs and journals each report
    # only a standby follows someone; only grace has a deadline
    assert machine.following == ("10.0.0.1:4460" if new is Role.STANDBY else "")
    assert machine.grace_until == (12.5 if new is Role.GRACE else 0.0)
    assert machine.serving == (new in (Role.GRACE, Role.ACTING, Role.SUSPENDED))  # suspended: sessions served, nothing new granted


@pytest.mark.parametrize(("old", "new"), REFUSED, ids=[f"{o.value}->{n.value}" for o, n in REFUSED])
def test_every_other_transition_raises_and_changes_nothing(old: Role, new: Role) -> None:
    seen: list[tuple[Role, Role, str]] = []
    machine = machine_in(old, seen)
    with pytest.raises(IllegalTransition, match=f"{old.value} -> {new.value}"):
        machine.change(new, "a bug")
    assert machine.state is old and seen == []


def test_stopped_is_final() -> None:
    assert TRANSITIONS[Role.STOPPED] == frozenset()
