"""The master's role, as one explicit state machine.

    starting ──► acting ◄──────────── grace ◄─┐
       │  │      │  ▲                   ▲     │
       │  │      ▼  │ (etcd)            │     │ promote (the master is gone / the election won)
       │  │    suspended ───────────────┤     │ (renewed: the PBXs it sent away re-take first)
       │  └────────┼──────► grace ──────┘     │
       │           ▼                          │
       │     stepping_down ──► standby ───────┘  (standby ──► standby: another master to follow)
       └──────────────────────► standby
    any state ──► stopped

- starting: storage open, nothing served yet;
- standby: follows another master (`following`), answers PBXs `not_master`;
- grace: serving, but only what PBXs held before (a restart or a takeover) may be re-taken,
  until `grace_until` (loop time);
- acting: serving;
- suspended: (etcd mode) leadership could not be renewed in time: it confirms nothing, its PBX
  sessions are ended (`shutdown`) and every PBX op answers `no_quorum`; observers still read.
  Renewed, it goes to grace (the PBXs sent away re-take what they held first) or acting;
- stepping_down: a peer acts at a higher epoch; this one is ending its sessions to follow it;
- stopped: the end.

Every change goes through `RoleMachine.change`, which refuses a transition the table does not
allow (IllegalTransition: a bug, never a state to continue from) and reports it to the daemon,
which logs and journals it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class Role(enum.Enum):
    STARTING = "starting"
    STANDBY = "standby"
    GRACE = "grace"
    ACTING = "acting"
    SUSPENDED = "suspended"
    STEPPING_DOWN = "stepping_down"
    STOPPED = "stopped"


S = Role
TRANSITIONS: dict[Role, frozenset[Role]] = {
    S.STARTING: frozenset({S.STANDBY, S.GRACE, S.ACTING, S.STOPPED}),
    # promote, with or without a grace window; or follow another master (etcd names the leader)
    S.STANDBY: frozenset({S.STANDBY, S.GRACE, S.ACTING, S.STOPPED}),
    S.GRACE: frozenset({S.ACTING, S.SUSPENDED, S.STEPPING_DOWN, S.STOPPED}),
    S.ACTING: frozenset({S.SUSPENDED, S.STEPPING_DOWN, S.STOPPED}),
    # leadership renewed (a grace window while the PBXs sent away may still hold what they held), or lost
    S.SUSPENDED: frozenset({S.GRACE, S.ACTING, S.STEPPING_DOWN, S.STOPPED}),
    S.STEPPING_DOWN: frozenset({S.STANDBY, S.STOPPED}),
    S.STOPPED: frozenset(),
}
SERVING = frozenset({S.GRACE, S.ACTING, S.SUSPENDED})  # suspended: observers served, no PBX (they are sent away)


class IllegalTransition(RuntimeError):
    """A role change the table does not allow: a bug in the daemon."""


class RoleMachine:
    def __init__(self, on_change: Callable[[Role, Role, str], None] | None = None) -> None:
        self.state = Role.STARTING
        self.following = ""  # host:port of the master a standby follows
        self.grace_until = 0.0  # loop time; 0 outside grace
        self.on_change = on_change

    @property
    def serving(self) -> bool:
        return self.state in SERVING

    @property
    def standby(self) -> bool:
        return self.state is Role.STANDBY

    def change(self, new: Role, why: str, *, following: str = "", grace_until: float = 0.0) -> None:
        old = self.state
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"{old.value} -> {new.value} is not a transition of the master's role ({why})")
        self.state = new
        self.following = following if new is Role.STANDBY else ""
        self.grace_until = grace_until if new is Role.GRACE else 0.0
        if self.on_change is not None:
            self.on_change(old, new, why)
