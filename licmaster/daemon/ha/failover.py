"""Who serves, and what a master that starts serving waits for: the grace window and the two
ways a master's role changes after its start, taking over and giving way. One owner for both,
beside the role machine (role.py), so that a change to failover is made here and nowhere else.

- `Grace` owns what the PBXs held before a restart or a takeover (`held`), whether that is the
  whole story (`complete`), and when the window ends: on time (the reaper's `end_if_over`), or
  early, when nothing held is left to wait for and `complete` says nothing unseen can be. Reading
  it (`left_ms`: metrics, the console, hello) never changes the role.
- `Failover` takes over (the standby promoted, the election in etcd won) and gives way (a peer at
  a higher epoch, the leadership in etcd lost), each written once. It acts on the master through
  what it is handed (installing a pool, ending sessions, announcing the epoch): it imports
  nothing of the master, so there is no cycle back to master.py.

No I/O here: the clock is handed in, and every effect goes through a callable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from licmaster.daemon.ha.recovery import Holdings
from licmaster.daemon.role import Role, RoleMachine
from licmaster.model import errors as E
from licmaster.model.errors import Denial
from licmaster.wire import events

Key = tuple[str, str]  # (resource, holder)
Held = dict[str, set[Key]]  # what each node held before


class WaitingResync(NamedTuple):
    """A re-sync that waits (Grace.waits), as the dispatcher answers it later."""

    node: str
    session: Any  # daemon/sessions.py's Session (this module imports nothing of the dispatcher's)
    conn: Any  # the Endpoint it came on, and its reply goes out on
    rid: int
    entries: list[Any]  # its SyncEntry list


class Grace:
    """The grace window: a node may re-take only what it held before; anything new waits."""

    def __init__(self, role: RoleMachine, clock: Callable[[], float],
                 schedule: Callable[[Callable[[], None]], object] | None = None) -> None:
        self.role = role
        self.clock = clock
        self.held: Held = {}
        # `held` lists every lease a PBX may still believe: true after a clean stop (the journal
        # has every grant answered) and for a leader resumed after a suspension (its own book);
        # false after a kill -9 or a takeover (the journal's last batch, a replica a flush behind).
        self.complete = False
        # Re-syncs that wait (`waits`), in the order they came, each as the dispatcher keeps it
        # (node first); `decide` answers them (the dispatcher's), `schedule` runs a callable on
        # the loop's next turn (loop.call_soon).
        self.waiting: list[WaitingResync] = []
        self.decide: Callable[[list[WaitingResync]], None] = lambda waiting: None
        self.schedule = schedule or (lambda callback: callback())

    def open(self, why: str, held: Held, *, complete: bool, until: float, acting_why: str | None = None) -> None:
        """Serve from now on, in a grace window until `until` (loop time) for what was `held`; with
        no time left (grace_ms = 0, or the window is already past), acting at once."""
        self._decide_all()  # any left from an earlier window (their connections closed since): dropped
        self.held, self.complete = held, complete
        if until > self.clock() and (held or not complete):
            self.role.change(Role.GRACE, why, grace_until=until)
            self.end_if_nothing_held()
        else:
            self.held = {}
            self.role.change(Role.ACTING, acting_why or why)

    def left_ms(self) -> int:
        """What is left of the window, in ms (0 outside one). A pure read."""
        role = self.role
        if role.state is not Role.GRACE:
            return 0
        left = role.grace_until - self.clock()
        return int(left * 1000) + 1 if left > 0 else 0

    def denial(self, node: str, resource: str, holder: str) -> Denial | None:
        """During the window a node may only re-take what it held; a new checkout waits."""
        left = self.left_ms()
        if not left and self.waiting and self.role.state is Role.GRACE:
            # The window's time is up, and the reaper's next tick decides the waiting re-syncs:
            # until then what the stale entries freed is theirs (found by review: a checkout in
            # that tick took it, and a waiting re-sync was refused).
            return Denial(E.GRACE, "a new master is taking back what PBXs held; try again", details={"retry_ms": 100})
        if not left or (resource, holder) in self.held.get(node, ()):
            return None
        return Denial(E.GRACE, "a new master is waiting for PBXs to re-sync what they held; try again", details={"retry_ms": left})

    def take(self, node: str) -> set[Key] | None:
        """A node re-syncs: what it held before, which it may re-take past the policy's limits.
        What it does not re-take is free from now on."""
        held = self.held.pop(node, None)
        if held is not None:
            self.end_if_nothing_held()
            self._decide_when_nobody_else()
        return held

    def forget(self, node: str) -> None:
        """A node's session ended (bye, expiry, fenced): it re-takes nothing any more."""
        if self.held.pop(node, None) is not None:
            self.end_if_nothing_held()
            self._decide_when_nobody_else()

    # ------------------------------------------------------------ re-syncs that wait

    def waits(self, node: str) -> bool:
        """Whether a re-sync of `node` that brings leases this master does not count waits for
        the others. Only in a window that is not `complete` (a restart after kill -9, a
        takeover from a journal): the entries this master adopted may be stale, leases checked
        in on a master it never heard of (both masters killed, the other one served meanwhile),
        and they fill the pool until their PBXs re-sync. Taken now, such a re-sync could be
        refused what it really holds; it waits until every other PBX that held leases has
        re-synced (or its session ended) or the window ends, and is then taken, in order, in
        that same turn: new checkouts still wait, so what the stale entries freed goes to it.
        (Taking a stale-looking entry instead would be unsafe: it may be a cut-off PBX's real
        one; docs/operations.md, "Two clocks".)"""
        if self.complete or self.role.state is not Role.GRACE:
            return False
        # Behind those already waiting too: their nodes' stale entries are still counted.
        return bool(self.waiting) or self._others_awaited({node})

    def wait(self, resync: WaitingResync) -> None:
        """Keep a re-sync until it is decided (`waits` said so). If every PBX still awaited is
        now waiting, they are decided (on the next turn)."""
        self.waiting.append(resync)
        self._decide_when_nobody_else()

    def connection_lost(self, conn: object) -> None:
        """A re-sync that came on `conn` waits no more: its node is awaited again (found by
        review: the others, no longer waiting for it, were refused what its stale entries held)."""
        if self.waiting:
            self.waiting = [resync for resync in self.waiting if resync.conn is not conn]

    def _others_awaited(self, besides: set[str]) -> bool:
        """A PBX that held leases before and has not re-synced, other than `besides` and those waiting."""
        waiting = besides | {resync.node for resync in self.waiting}
        return any(node not in waiting for node in self.held)

    def _decide_when_nobody_else(self) -> None:
        """Nobody left to wait for: decide the waiting re-syncs on the next turn (after the
        re-sync or the end that freed the last stale entries is wholly applied)."""
        if self.waiting and not self._others_awaited(set()):
            self.schedule(self._decide_if_still_due)

    def _decide_if_still_due(self) -> None:
        if self.waiting and not self._others_awaited(set()):
            self._decide_all()

    def _decide_all(self) -> None:
        waiting, self.waiting = self.waiting, []
        if waiting:
            self.decide(waiting)

    def move(self, failed: str, standby: str) -> None:
        """A standby PBX took over: what the failed PBX held, the standby may re-take."""
        if failed in self.held:
            self.held.setdefault(standby, set()).update(self.held.pop(failed))

    def end_if_over(self, now: float) -> None:
        """The reaper's tick: a window whose time is over ends, its waiting re-syncs decided
        first (new checkouts still wait while they are)."""
        if self.role.state is Role.GRACE and now >= self.role.grace_until:
            self._decide_all()
            self.held = {}
            self.role.change(Role.ACTING, "grace over: every PBX had its lease TTL to re-sync")

    def end_if_nothing_held(self) -> None:
        """When nothing held before is left to wait for, and `held` is the whole story, new
        checkouts need not wait any longer. When it may not be, the window runs its whole
        length: a grant this master never saw is re-taken whole only while new checkouts still
        wait, and its PBX believes it until a lease TTL after the old master's last answer."""
        if self.complete and not self.held and self.role.state is Role.GRACE:
            self.role.change(Role.ACTING, "every lease held before was re-synced, moved or given back")

    def clear(self) -> None:
        """The master gives way: nothing is waited for; a waiting re-sync is dropped by `decide`
        (its session ended with every other: its PBX re-syncs with the next master)."""
        self._decide_all()
        self.held = {}


class Failover:
    """Taking over and giving way, each once."""

    def __init__(self, role: RoleMachine, grace: Grace, record: Callable[..., None], *, grace_s: float) -> None:
        self.role = role
        self.grace = grace
        self.record = record
        self.grace_s = grace_s

    def take_over(self, why: str, epoch: int, holdings: Holdings, *, install: Callable[[int], None],
                  adopt: Callable[[Holdings], None], announce: Callable[[int], None], detail: str,
                  complete: bool = False) -> None:
        """Serve from a new pool at `epoch` (`install`), counting every lease the PBXs held
        (`adopt`: from the master followed, or this master's journal), and tell every connection
        (`announce`: the `epoch` event). Unless `holdings` are known `complete` (an in-sync
        standby elected in etcd: synchronous replication gave it every grant answered), a grant
        it never saw may exist, so new checkouts wait a grace window for the PBXs to re-sync; when
        complete, every lease a PBX may believe is counted already, and it serves at once."""
        install(epoch)
        adopt(holdings)
        self.grace.open(why, {} if complete else holdings.held(), complete=complete, until=self.grace.clock() + self.grace_s)
        self.record(events.PROMOTE, detail=detail)
        announce(epoch)

    def give_way(self, why: str, *, end_sessions: Callable[[], None], then: str, following: str = "") -> None:
        """Stop serving at once: every session ends (`end_sessions`: told `shutdown`, leases
        released, connections other than the standbys' closed), nothing is waited for any more,
        and this master is a standby (following `following`, or waiting for the election)."""
        self.role.change(Role.STEPPING_DOWN, why)
        self.record(events.STEP_DOWN, detail=why)
        end_sessions()
        self.grace.clear()
        self.role.change(Role.STANDBY, then, following=following)
