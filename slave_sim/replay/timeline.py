"""The recorded demand as a timeline simulated PBXs can play: the pure half of `slave-sim replay`.

Rows of a master's journal come in (`iter_rows`), a `Timeline` goes out: the PBXs the record
names, what was in force when the period began, and every event of the period in the record's
order. `segments` cuts it into drill steps on a clock compressed by the speed; `add_losses`
puts `--lose` in; `compare` says how the replay's answers stand against the record's.

Demand is what `licmaster whatif` replays (docs/operations.md, "What if"), read the same way:
- a `grant` (not `adopted`, not a re-sync of what its node already holds) asks from its time
  until its lease's `checkin`/`release` or its node's `bye`/`expire`: the holder's device
  registers, then leaves;
- a `demand` row, one holder refused and retrying within 10 s, asks from its first ask to its
  last;
- an `assign`/`unassign` row is an assignment/unassignment of that user's license, played as one;
- a `takeover` is played as a takeover: the standby PBX takes its failed PBX's leases (under the
  same ids: a check-in by the standby ends the moved lease); a PBX taken over that says `hello`
  again comes back with nothing (`RETURN`);
- `hello` rows say what each PBX is (firmware, platform, MAC, model, whose standby it is).

A recorded refusal is replayed as demand, not as requests: the holder asks once, at its first
ask, and goes at its last. Granted in the replay (a larger candidate), it holds the license until
then; refused, it waits until then (the sizing counts it short) and does not ask again. Its
retries were its PBX's timer (a demand of 12 asks is one phone, not twelve), so replaying them
would replay the timer; and one ask over the demand's span is what whatif's model does with it,
so the model and the real master answer the same question. A `demand` row about an assignment
asks for the assignment once; one about a takeover (R-STBY-2 refused it) asks for the takeover
once.

What was in force when the period began is set up first, in this order: takeovers, user
licenses assigned, the asks then granted, then the refused asks still asking. (Granted ones
first: they were held together, so they fit together; a refused one that would fit now, because
what refused it ended before the period, is served, which the comparison leaves out.)

Events are played one after the other, each answered before the next goes, at the record's time
less the period's start, divided by the speed: outcomes depend on the order, which is kept, not
on the timing, so when the master is slower than the compressed record the replay runs late
rather than out of order. Within one instant, as whatif orders them: a refused holder's first
ask before the instant's rows, then the rows in the journal's order, a row's ends before its
starts.

The reading is whatif's rules written again over the rows (`_Reader`), not whatif's Replayer:
that one is written for a year in a minute (its loops inlined, no hook per ask) and keeps no
ask's end; `whatif.peak_time` (`--at peak`) and its reading of a grant's label are reused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from licmaster.console import whatif
from licmaster.console.report import parse_age
from licmaster.model.types import Node
from licmaster.wire import events
from licmaster.wire.events import DETAIL, EVENT, HOLDER, LEASE, NODE, NOTE, RESOURCE, TS, Row

# What an event is.
ASK, LEAVE = "ask", "leave"  # a holder asks for a license (its device registers), or gives it back (leaves)
ASSIGNMENT, UNASSIGNMENT = "assign", "unassign"  # a user's licenses
TAKING_OVER = "takeover"  # a standby PBX takes over its failed PBX (`holder`)
RETURN = "return"  # a PBX taken over says hello again: it comes back with nothing
LOSE = "lose"  # --lose: these PBXs (`nodes`) die, their standby PBXs take over
# What the replay did with an ask.
GRANTED, REFUSED, UNSERVED = "granted", "refused", "unserved"  # unserved: its PBX was lost without a standby

WINDOWS_S = (1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400, 604800)
MOST_STEPS = 48  # a period is cut into at most this many steps (windows), plus takeovers and losses
NAMED = 10  # holders named in the comparison; the rest are counted
NAMED_PBXS = 20  # PBX names listed when a --lose names none of them


class ReplayError(ValueError):
    """A replay that cannot run; the message names what is wrong (exit status 2)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One thing a PBX did in the record (or does in the replay: a loss)."""

    at: float  # epoch seconds, the record's clock
    kind: str
    node: str  # the PBX (a loss: its target, a node or @site)
    holder: str = ""  # ask, leave: the holder; assign, unassign: the user; takeover: the failed PBX
    resource: str = ""  # ask, leave: port, conference, isdn, operator, queue-monitor
    count: int = 1
    interface: str | None = None
    families: tuple[str, ...] = ()  # assign, unassign
    nodes: tuple[str, ...] = ()  # lose: the PBXs that die
    recorded: bool | None = None  # ask, assign, takeover: granted in the record (True) or refused (False)
    code: str | None = None  # refused in the record: the code of its first refusal

    @property
    def who(self) -> str:
        """How a comparison names it: `hq/alice`, `hq/desk1 (operator)`, `hq/ann (assign PBX-UC)`."""
        what = f"{self.kind} {' '.join(self.families)}" if self.families else self.resource if self.resource != "port" else ""
        return f"{self.node}/{self.holder}" + (f" ({what})" if what else "")


@dataclass
class Timeline:
    """A period of the record, ready to play: who, what was in force at its start, what happened."""

    since: float
    until: float
    pbxs: dict[str, Node]  # every PBX and standby PBX the record names (observers and decentral PBXs left out)
    sites: dict[str, str]  # a PBX's site under the replay's policy (a standby PBX: its failed PBX's)
    carried: list[Event]  # in force when the period began, in the order they are set up
    events: list[Event]  # the period's, in the record's order
    first_row: float | None = None  # the journal's first and last rows (for an empty period's message)
    last_row: float | None = None

    @property
    def asks(self) -> list[Event]:
        return [e for e in self.events if e.kind == ASK]

    def standby_of(self, name: str) -> str | None:
        """The standby PBX that stands in for `name`, if the record has one."""
        return next((n.name for n in self.pbxs.values() if n.role == "standby" and n.standby_for == name), None)


@dataclass(slots=True)
class _Ask:
    """One holder's demand as the record has it: from its event's time to `end` (None: still
    open when the period ends). `moved_in`: begun on a standby PBX by a takeover (the takeover moves it,
    nobody asks); `moved_out`: ended on its failed PBX by one (the lease moves, nobody leaves)."""

    event: Event
    place: int  # the journal's order within one instant (-1: a refused holder's first ask, before its instant's rows)
    end: float | None = None
    end_place: int = 0
    moved_in: bool = False
    moved_out: bool = False


# Within one instant and journal place: what the record did besides asks (a takeover before the
# leases it moves), then ends, then starts (a Port checked in and out again in one read).
_MARK, _END, _START = 0, 1, 2


class _Reader:
    """The rows, one by one, in the journal's order; the timeline out (`timeline`). Keeps what is
    open (leases held, refused asks) and what matters to the period, nothing that ended before it."""

    def __init__(self, since: float, until: float) -> None:
        self.since, self.until = since, until
        self.place = 0
        self.asks: dict[int, _Ask] = {}  # by number: open, or ended within the period
        self.numbers = 0
        self.held: dict[str, dict[tuple[str, str], int]] = {}  # node -> (resource, holder) -> ask number, as recorded
        self.by_lease: dict[str, int] = {}  # lease id -> ask number
        self.marks: list[tuple[float, int, int, Event]] = []  # the period's takeovers, returns, assignments
        self.said: dict[str, Node] = {}  # a PBX as it was when the period began (or first said, later)
        self.assigned: dict[str, tuple[str, dict[str, None]]] = {}  # user -> (node, families), as it stands
        self.taken_over: dict[str, tuple[float, str]] = {}  # failed PBX -> (when, its standby), as it stands
        self.at_since: tuple[list[Event], list[Event]] | None = None  # takeovers and assignments in force at `since`
        self.first_row: float | None = None
        self.last_row: float | None = None

    def feed(self, row: Row) -> None:
        ts, kind, node = row[TS], row[EVENT], row[NODE]
        if self.first_row is None or ts < self.first_row:
            self.first_row = ts
        if self.last_row is None or ts > self.last_row:
            self.last_row = ts
        if ts > self.until:
            return
        if ts >= self.since and self.at_since is None:
            self.at_since = self._in_force()
        self.place += 1
        if node is None:
            return
        if kind == events.GRANT:
            if row[NOTE] != "adopted":
                self._granted(ts, node, row)
        elif kind in (events.CHECKIN, events.RELEASE):
            number = self.by_lease.pop(row[LEASE], None) if row[LEASE] else None
            if number is not None:
                self._end(ts, number)
        elif kind in (events.EXPIRE, events.BYE):
            for number in list(self.held.get(node, {}).values()):
                self._end(ts, number)
        elif kind == events.TAKEOVER and row[DETAIL]:
            self._takeover(ts, node, str(row[DETAIL]))
        elif kind == events.HELLO:
            self._hello(ts, node, row[DETAIL])
        elif kind in (events.ASSIGN, events.UNASSIGN) and row[RESOURCE] and row[HOLDER]:
            self._assignment(ts, kind, node, str(row[HOLDER]), str(row[RESOURCE]))
        elif kind == events.DEMAND and row[RESOURCE] and row[HOLDER]:
            self._refused(node, str(row[RESOURCE]), str(row[HOLDER]), events.read_demand(row[DETAIL]))

    def _granted(self, ts: float, node: str, row: Row) -> None:
        resource, holder = str(row[RESOURCE]), str(row[HOLDER])
        held = self.held.setdefault(node, {})
        number = held.get((resource, holder))
        if number is None:  # a new ask; else a re-sync of what the node holds: the same demand going on
            count, interface = shape(resource, row[DETAIL])
            number = self._start(_Ask(Event(ts, ASK, node, holder, resource, count, interface, recorded=True), self.place))
            held[(resource, holder)] = number
        self.by_lease[str(row[LEASE])] = number

    def _start(self, ask: _Ask) -> int:
        self.numbers += 1
        self.asks[self.numbers] = ask
        return self.numbers

    def _end(self, ts: float, number: int, *, moved: bool = False) -> None:
        ask = self.asks.get(number)
        if ask is None or ask.end is not None:
            return
        held = self.held.get(ask.event.node, {})
        key = (ask.event.resource, ask.event.holder)
        if held.get(key) == number:
            del held[key]
        if ts < self.since:  # over before the period: nothing of it is replayed
            del self.asks[number]
            return
        ask.end, ask.end_place, ask.moved_out = ts, self.place, moved

    def _takeover(self, ts: float, standby: str, failed: str) -> None:
        """The failed PBX's leases move to its standby PBX, under the same ids."""
        moved = list(self.held.get(failed, {}).items())
        moving = {number: self.asks[number] for _, number in moved if number in self.asks}
        for _, number in moved:
            self._end(ts, number, moved=True)
        held = self.held.setdefault(standby, {})
        renumbered: dict[int, int] = {}
        for key, number in moved:
            old = moving.get(number)
            if old is not None:
                held[key] = renumbered[number] = self._start(
                    _Ask(dataclasses.replace(old.event, at=ts, node=standby), self.place, moved_in=True))
        if renumbered:  # a check-in by the standby names the moved lease's id: it ends the moved ask
            for lease, number in self.by_lease.items():
                if number in renumbered:
                    self.by_lease[lease] = renumbered[number]
        self.taken_over[failed] = (ts, standby)
        if ts >= self.since:
            self.marks.append((ts, self.place, _MARK, Event(ts, TAKING_OVER, standby, failed, recorded=True)))

    def _hello(self, ts: float, node: str, detail: Any) -> None:
        said = events.read_hello(node, detail)
        if said is None:
            return
        if ts < self.since:
            self.said[node] = said
        else:
            self.said.setdefault(node, said)
        if self.taken_over.pop(node, None) is not None and ts >= self.since:
            self.marks.append((ts, self.place, _MARK, Event(ts, RETURN, node)))

    def _assignment(self, ts: float, kind: str, node: str, user: str, family: str) -> None:
        if kind == events.ASSIGN:
            self.assigned.setdefault(user, (node, {}))[1][family] = None
        elif user in self.assigned:
            self.assigned[user][1].pop(family, None)
        if ts >= self.since:
            event = Event(ts, ASSIGNMENT if kind == events.ASSIGN else UNASSIGNMENT, node, user, families=(family,), recorded=True)
            self.marks.append((ts, self.place, _MARK, event))

    def _refused(self, node: str, resource: str, holder: str, demand: events.Demand | None) -> None:
        """A `demand` row (written after the last ask): one holder refused, from its first ask to
        its last. Asked again once, at its first ask (the module's docstring says why)."""
        if demand is None or demand.last < self.since:
            return
        if resource == "assign":
            if demand.family and demand.first >= self.since:
                self.marks.append((demand.first, -1, _MARK, Event(demand.first, ASSIGNMENT, node, holder,
                                                                 families=(demand.family,), recorded=False, code=demand.code)))
        elif resource == "takeover":
            if demand.first >= self.since:
                self.marks.append((demand.first, -1, _MARK, Event(demand.first, TAKING_OVER, node, holder, recorded=False,
                                                                                  code=demand.code)))
        else:
            ask = _Ask(Event(demand.first, ASK, node, holder, resource, recorded=False, code=demand.code), -1, demand.last,
                       self.place)
            if demand.last > self.until:
                ask.end = None  # still asking when the period ends
            self._start(ask)

    def _in_force(self) -> tuple[list[Event], list[Event]]:
        takeovers = [Event(when, TAKING_OVER, standby, failed, recorded=True)
                     for failed, (when, standby) in sorted(self.taken_over.items(), key=lambda kv: kv[1])]
        assignments = [Event(self.since, ASSIGNMENT, node, user, families=tuple(families), recorded=True)
                       for user, (node, families) in self.assigned.items() if families]
        return takeovers, assignments

    def timeline(self, site_of: Callable[[str], str | None] | None) -> Timeline:
        takeovers, assignments = self.at_since if self.at_since is not None else self._in_force()
        held: list[Event] = []
        waiting: list[Event] = []
        entries: list[tuple[float, int, int, Event]] = list(self.marks)
        for ask in sorted(self.asks.values(), key=lambda a: (a.event.at, a.place)):
            event = ask.event
            if event.at < self.since:
                (held if event.recorded else waiting).append(event)
            elif not ask.moved_in:
                entries.append((event.at, ask.place, _START, event))
            if ask.end is not None and not ask.moved_out:
                entries.append((ask.end, ask.end_place, _END, Event(ask.end, LEAVE, event.node, event.holder, event.resource)))
        entries.sort(key=lambda entry: entry[:3])
        carried = [*takeovers, *assignments, *held, *waiting]
        period = _joined([event for *_, event in entries])
        pbxs = {name: node for name, node in self.said.items() if node.role != "observer" and node.licensing != "decentral"}
        for event in (*carried, *period):
            if event.node not in pbxs:  # named by an ask without a hello on record: a PBX as the defaults say
                pbxs[event.node] = Node(event.node)
            if event.kind == TAKING_OVER:
                standby = pbxs[event.node]
                if standby.role != "standby" or standby.standby_for != event.holder:
                    pbxs[event.node] = dataclasses.replace(standby, role="standby", standby_for=event.holder)
                pbxs.setdefault(event.holder, Node(event.holder))
        for node in list(pbxs.values()):
            if node.role == "standby" and node.standby_for:
                pbxs.setdefault(node.standby_for, Node(node.standby_for))
        sites: dict[str, str] = {}
        if site_of is not None:
            for name, node in pbxs.items():
                site = site_of(node.standby_for if node.role == "standby" and node.standby_for else name)
                if site is not None:
                    sites[name] = site
        return Timeline(self.since, self.until, pbxs, sites, carried, period, self.first_row, self.last_row)


def shape(resource: str, label: Any) -> tuple[int, str | None]:
    """A grant's count and ISDN interface, read from its label as `licmaster whatif` reads it."""
    return whatif.lease_shape(resource, label)


def extract(rows: Iterable[Row], since: float, until: float, site_of: Callable[[str], str | None] | None = None) -> Timeline:
    """The record's rows (journal tuples, oldest first, as `iter_rows` gives them) as the timeline
    of the period from `since` to `until`; `site_of` names a PBX's site (the replay's policy)."""
    reader = _Reader(since, until)
    width = len(events.FIELDS)
    for row in rows:
        reader.feed(row if len(row) == width else events.full(row))
    return reader.timeline(site_of)


def _joined(found: list[Event]) -> list[Event]:
    """Assignments of one user by one PBX at one instant are one request (the journal has a row
    per family): joined, as they were asked."""
    out: list[Event] = []
    for event in found:
        last = out[-1] if out else None
        if last is not None and event.kind in (ASSIGNMENT, UNASSIGNMENT) and last.kind == event.kind \
                and (last.at, last.node, last.holder, last.recorded) == (event.at, event.node, event.holder, event.recorded):
            out[-1] = dataclasses.replace(last, families=(*last.families, *event.families))
        else:
            out.append(event)
    return out


def empty_period(timeline: Timeline) -> str | None:
    """Why there is nothing to replay, or None."""
    if any(e.kind in (ASK, LEAVE, ASSIGNMENT, UNASSIGNMENT, TAKING_OVER) for e in timeline.events):
        return None
    held = f" ({len(timeline.carried)} thing(s) held through it, nothing asked)" if timeline.carried else ""
    rows = (f"the journal runs from {utc(timeline.first_row)} to {utc(timeline.last_row)}"
            if timeline.first_row is not None and timeline.last_row is not None else "the journal has no rows")
    return f"nothing was asked for or given back from {utc(timeline.since)} to {utc(timeline.until)}{held}: {rows}"


# ---------------------------------------------------------------------------- bad input


def parse_speed(value: Any, what: str = "--speed") -> float:
    """How many times faster than recorded: a number above 0."""
    try:
        speed = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        speed = math.nan
    if not math.isfinite(speed) or speed <= 0:
        raise ReplayError(f"{what} {value!r}: how many times faster than recorded, a number above 0 (60: an hour in a minute)")
    return speed


def parse_time(value: Any, now: float, what: str) -> float:
    """`7d`, `12h`, `30m`, `90s` ago, epoch seconds, or an ISO 8601 time (UTC unless it says)."""
    if isinstance(value, dt.datetime):
        when = (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        when = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            when = parse_age(text, now)
        except ValueError:
            try:
                stamp = dt.datetime.fromisoformat(text)
            except ValueError:
                when = math.nan
            else:
                when = (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).timestamp()
    else:
        when = math.nan
    if not math.isfinite(when):
        raise ReplayError(f"{what} {value!r}: expected 7d, 12h, 30m or 90s ago, epoch seconds, or an ISO 8601 time "
                          "(2026-11-24T09:00Z)")
    return when


def period(since: float, until: float) -> None:
    if not since < until:
        raise ReplayError(f"the period is empty: --since {utc(since)} is not before --until {utc(until)}")


def add_losses(timeline: Timeline, wanted: Sequence[tuple[str, Any]], now: float, peak: Callable[[], float | None],
               site_names: Collection[str] = ()) -> Timeline:
    """`--lose TARGET --at WHEN` pairs put into the timeline, each after the record's own events
    of its instant (as whatif places a loss). TARGET is a PBX of the record or `@site` (a site of
    the policy with PBXs in the record: its PBXs, not their standby PBXs, which survive); WHEN is a
    time in the period or `peak` (the record's peak of floating licenses in use, as whatif finds
    it). ReplayError names what is wrong."""
    found = list(timeline.events)
    for target, at in wanted:
        nodes = _targets(timeline, target, site_names)
        if isinstance(at, str) and at.strip() == "peak":
            when = peak()
            if when is None:
                raise ReplayError(f"--lose {target} --at peak: no floating license was in use in the period, so it has no peak")
        else:
            when = parse_time(at, now, f"--lose {target} --at")
        if not timeline.since <= when <= timeline.until:
            raise ReplayError(f"--lose {target} --at {at}: {utc(when)} is outside the period, {utc(timeline.since)} "
                              f"to {utc(timeline.until)}")
        place = next((i for i, e in enumerate(found) if e.at > when), len(found))
        found.insert(place, Event(when, LOSE, target, nodes=nodes))
    return dataclasses.replace(timeline, events=found)


def _targets(timeline: Timeline, target: str, site_names: Collection[str]) -> tuple[str, ...]:
    if target.startswith("@"):
        site = target[1:]
        if not site_names:
            raise ReplayError(f"--lose {target}: the replay has no site policy, so no site {site!r} "
                              "(the recorded master's config has none: give --policy SITES_TOML)")
        if site not in site_names:
            raise ReplayError(f"--lose {target}: the site policy has no site {site!r} (sites: {', '.join(sorted(site_names))})")
        nodes = tuple(sorted(name for name, s in timeline.sites.items() if s == site and timeline.pbxs[name].role != "standby"))
        if not nodes:
            raise ReplayError(f"--lose {target}: no PBX of site {site!r} is in the record")
        return nodes
    if target not in timeline.pbxs or not target:
        known = sorted(timeline.pbxs)
        shown = ", ".join(known[:NAMED_PBXS]) + (f" and {len(known) - NAMED_PBXS} more" if len(known) > NAMED_PBXS else "")
        raise ReplayError(f"--lose {target!r}: no PBX of that name in the record (PBXs: {shown or 'none'}; a site: @name)")
    return (target,)


# ---------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class Segment:
    """One step of the replay: its drill action (register for asks and leaves; takeover; kill),
    how the report names it, and its events with the second of the replay each is due."""

    action: str
    label: str
    events: tuple[tuple[float, Event], ...]


def segments(timeline: Timeline, speed: float, most: int = MOST_STEPS) -> list[Segment]:
    """The timeline as steps: what was in force first (due at once), then windows of the period
    (at most `most` of them, a round width), a takeover and a loss each a step of its own. An
    event is due (its time less the period's start) / speed seconds into the replay."""
    out: list[Segment] = []
    if timeline.carried:
        out.append(Segment("register", _carried_label(timeline), tuple((0.0, e) for e in timeline.carried)))
    span = timeline.until - timeline.since
    width = next((w for w in WINDOWS_S if math.ceil(span / w) <= most), WINDOWS_S[-1])
    window: list[tuple[float, Event]] = []
    window_start = timeline.since

    resumed = False  # the window goes on after a takeover or a loss cut it

    def close() -> None:
        if window:
            label = _window_label(window_start, window_start + width, window, span)
            out.append(Segment("register", label + (" (after it)" if resumed else ""), tuple(window)))
            window.clear()

    for event in timeline.events:
        due = max(0.0, (event.at - timeline.since) / speed)
        if event.kind in (TAKING_OVER, LOSE):
            close()
            out.append(_alone(timeline, event, due))
            resumed = True
            continue
        if event.at >= window_start + width:
            close()
            window_start = timeline.since + (event.at - timeline.since) // width * width
            resumed = False
        window.append((due, event))
    close()
    return out


def _alone(timeline: Timeline, event: Event, due: float) -> Segment:
    if event.kind == TAKING_OVER:
        said = "as recorded" if event.recorded else "refused in the record, asked again"
        return Segment("takeover", f"{event.node} takes over {event.holder} at {utc(event.at)} ({said})", ((due, event),))
    standbys = [s for s in (timeline.standby_of(n) for n in event.nodes) if s]
    return Segment("takeover" if standbys else "kill",
                   f"lose {event.node} at {utc(event.at)}: {_counted(len(event.nodes), 'PBX', 'PBXs')} ({', '.join(event.nodes)})"
                   + (f", taken over by {', '.join(standbys)}" if standbys else ", no standby PBX"), ((due, event),))


def _carried_label(timeline: Timeline) -> str:
    held = sum(1 for e in timeline.carried if e.kind == ASK and e.recorded)
    waiting = sum(1 for e in timeline.carried if e.kind == ASK and not e.recorded)
    users = sum(1 for e in timeline.carried if e.kind == ASSIGNMENT)
    taken = sum(1 for e in timeline.carried if e.kind == TAKING_OVER)
    parts = [f"{held} held", f"{waiting} refused and still asking" if waiting else "", f"{users} users' licenses" if users else "",
             f"{taken} takeovers" if taken else ""]
    return f"in force at {utc(timeline.since)}: " + ", ".join(p for p in parts if p)


def _window_label(start: float, end: float, window: list[tuple[float, Event]], span: float) -> str:
    counts: dict[str, int] = {}
    for _, e in window:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    words = {ASK: ("ask", "asks"), LEAVE: ("leave", "leaves"), ASSIGNMENT: ("assignment", "assignments"),
             UNASSIGNMENT: ("unassignment", "unassignments"), RETURN: ("return", "returns")}
    shape = "%H:%M:%S" if span <= 86400 else "%m-%d %H:%M"
    return (f"{time.strftime(shape, time.gmtime(start))} to {time.strftime(shape, time.gmtime(end))}Z: "
            + ", ".join(_counted(n, *words.get(kind, (kind, kind))) for kind, n in counts.items()))


def _counted(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# ---------------------------------------------------------------------------- against the record


@dataclass
class Comparison:
    """The replay's answers against the record's, ask by ask (those asked in the period: what
    was in force when it began is set up, not compared)."""

    asks: int = 0
    recorded_refused: list[Event] = field(default_factory=list)
    replay_refused: list[Event] = field(default_factory=list)
    only_record: list[Event] = field(default_factory=list)  # refused in the record, granted in the replay
    only_replay: list[Event] = field(default_factory=list)  # granted in the record, refused in the replay
    unserved: list[Event] = field(default_factory=list)  # their PBX lost (--lose) without a standby

    @property
    def same(self) -> bool:
        return not self.only_record and not self.only_replay and not self.unserved


def compare(outcomes: Iterable[tuple[Event, str]], since: float) -> Comparison:
    """`outcomes`: each ask or assignment the replay made and what it got (GRANTED, REFUSED,
    UNSERVED). Pure."""
    out = Comparison()
    for event, got in outcomes:
        if event.recorded is None or event.at < since:
            continue
        out.asks += 1
        if not event.recorded:
            out.recorded_refused.append(event)
        if got == UNSERVED:
            out.unserved.append(event)
            continue
        if got == REFUSED:
            out.replay_refused.append(event)
        if event.recorded and got == REFUSED:
            out.only_replay.append(event)
        elif not event.recorded and got == GRANTED:
            out.only_record.append(event)
    return out


def describe(comparison: Comparison, exact: bool, why_not: str) -> str:
    """The comparison in a sentence or three: how many were refused on each side, and who differs."""
    c = comparison
    text = (f"{c.asks} asks in the period: {len(c.recorded_refused)} refused in the record, {len(c.replay_refused)} "
            f"in the replay")
    if c.unserved:
        text += f", {len(c.unserved)} unserved (their PBX lost without a standby that took over)"
    if c.same:
        text += "; the same holders" if c.recorded_refused else ""
    else:
        both = len(c.recorded_refused) - len(c.only_record) - sum(1 for e in c.unserved if not e.recorded)
        text += f"; refused in both {both}"
        if c.only_replay:
            text += f"; refused in the replay only {len(c.only_replay)}: {_named(c.only_replay)}"
        if c.only_record:
            text += f"; served in the replay only {len(c.only_record)}: {_named(c.only_record)}"
    if not exact:
        text += f"; not expected to match: {why_not}"
    return text


def _named(found: list[Event]) -> str:
    shown = ", ".join(e.who for e in found[:NAMED])
    return shown + (f" and {len(found) - NAMED} more" if len(found) > NAMED else "")


def utc(ts: float | None) -> str:
    """A time as a person reads it (one no calendar holds, as the number it is)."""
    if ts is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"
    except (OverflowError, OSError, ValueError):
        return f"{ts:g} (epoch seconds)"

