"""What if: the installation's recorded demand replayed against licenses, a policy and failures
that do not exist yet. Pure: the rows come in, a report goes out; the pool is the master's own
(`Pool`: the same LeaseBook and planner), so the replay and the master cannot disagree.

Demand, from the journal (docs/operations.md, "What if"):
- a `grant` (not an `adopted` one, nor a re-sync of a lease the node already held) asks for a
  license from its time until its lease's `checkin`/`release`, its node's `expire`/`bye`, or the
  end of the period;
- a `demand` row is one holder refused, asking again within the retry window (10 s: a PBX's
  retries are one demand, not one per retry; daemon/denials.py), from its first ask to its
  last: it asks for a license over that interval;
- `hello` rows say what each PBX is (firmware, platform, MAC, whom a standby stands in for), so
  the replay draws licenses as the master did;
- a `takeover` moves the failed PBX's leases to its standby, as on the master.
The replay takes every ask in time order (the journal's order within one instant), checks each
out of the candidate pool and gives it back at its end. What is refused is recorded per family:
how many, when first, who. `--lose NODE|@SITE --at TIME|peak` kills PBXs at that moment: their
standby PBXs take over where one said hello (R-STBY-2 decides, as on the master); a PBX with none
gives its licenses back (its users are down), and its later asks go unserved.

It streams: the journal is read once, row by row, and only what is open (leases held, refused
asks still asking, events due within `LAG_S`) is kept, so a year of a 10,000-phone installation
replays in bounded memory. A `demand` row is written after its holder's last ask (its first may
be well before); events are held back `LAG_S` (an hour) behind the newest row so that such an
ask still takes its place in time; one that asked for longer is taken as soon as it is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import heapq
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from licmaster.model import traffic
from licmaster.model.errors import Denial
from licmaster.model.pool import Pool
from licmaster.model.sites import Policy
from licmaster.model.types import InstalledLicense, Node
from licmaster.wire import events
from licmaster.wire.events import CHECKIN, DETAIL, EVENT, GRANT, HOLDER, LEASE, NODE, NOTE, RELEASE, RESOURCE, TS, Row

ISDN_INTERFACE = {"Relay-PRIs": "pri", "Relay-BRIs": "bri"}
_SHAPED = frozenset({"isdn", "conference"})  # resources whose count and interface come from the grant's label
HOUR = traffic.HOUR
REFUSED_SHOWN = 20  # who was refused: the first this many (every refusal is counted)
# Events wait this far behind the newest row read: a demand row is written after its holder's last
# ask, so an hour of retries is still replayed in its place; a longer one starts when read.
LAG_S = 3600.0
LAST = 2**62  # a loss's place among the rows of its instant: after them
# What an event does, in the order they go at one instant and journal place: a loss after the
# record's own events; ends before starts (a Port checked in and out again in one read).
LOSS, END, START = 0, 1, 2


@dataclass(slots=True)
class Ask:
    """One demand: `node` wants (`resource`, `holder`) from `start` until its end."""

    start: float
    seq: int  # the journal's order within one instant
    node: str  # where the replay holds it (a standby PBX's, once it took over in the replay)
    owner: str  # where the record holds it: the node its rows name (after a recorded takeover, the standby PBX)
    resource: str
    holder: str
    count: int = 1
    interface: str | None = None
    recorded_granted: bool = True  # the master granted it (a grant row), or refused it (a demand row)
    lease: str | None = None  # the replay's lease, while granted
    family: str | None = None  # the replay's refusal's family, while refused and still asking
    families: tuple[str, ...] = ()  # the families its lease took


@dataclass(frozen=True, slots=True)
class Loss:
    """`--lose`: these PBXs (a node, or every node of a site: `@name`) die at `at` (epoch seconds).
    Or a takeover the record holds: `standby` took over `target` at `at`; replayed, R-STBY-2
    decides again under the candidate licenses."""

    target: str
    at: float
    standby: str | None = None


@dataclass
class FamilyOutcome:
    family: str
    installed: int = 0
    in_use: int = 0
    peak_in_use: int = 0
    peak_at: float | None = None
    unmet: int = 0  # asks refused and still asking now
    peak_demand: int = 0  # served + unmet at one instant: the count that would have served everyone
    refused: int = 0
    first_refused: float | None = None
    who: list[dict[str, Any]] = field(default_factory=list)
    held_by_hour: dict[int, float] = field(default_factory=dict)  # clock hour -> seconds of holding asked for
    asks_by_hour: dict[int, list[int]] = field(default_factory=dict)  # clock hour -> [asks, refused]
    # node -> the holders that asked through it: the sources, counted. Not one set of (node,
    # holder): a tuple built per ask and looked up in a set of ten thousand cost 7% of the
    # replay's wall clock, where a small set per node is found in cache (measured).
    holders: dict[str, set[str]] = field(default_factory=dict)
    traffic: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "installed": self.installed, "peak_in_use": self.peak_in_use, "peak_at": self.peak_at,
                "headroom_at_peak": self.installed - self.peak_in_use, "peak_demand": self.peak_demand,
                "would_serve_everyone": max(self.peak_demand, self.peak_in_use), "refused": self.refused,
                "first_refused": self.first_refused, "who": self.who, "traffic": self.traffic}


@dataclass
class Replay:
    """The outcome per family, the losses, and (when asked for) every ask with what the replay did."""

    families: dict[str, FamilyOutcome] = field(default_factory=dict)
    outcomes: list[tuple[Ask, str | None]] | None = None  # (ask, None if granted else the refusal's code)
    lost: list[dict[str, Any]] = field(default_factory=list)  # --lose: what happened at each loss
    takeovers: list[dict[str, Any]] = field(default_factory=list)  # the record's takeovers, decided again (R-STBY-2)
    asks: int = 0
    unserved: int = 0  # asks of a lost PBX with no standby: its phones were down

    def family(self, name: str) -> FamilyOutcome:
        out = self.families.get(name)
        if out is None:
            out = self.families[name] = FamilyOutcome(name)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"asks": self.asks, "families": [f.to_dict() for f in sorted(self.families.values(), key=lambda f: f.family)],
                "lost": self.lost, "unserved_after_loss": self.unserved, "takeovers": self.takeovers}

    def add_traffic(self, since: float, until: float) -> None:
        """Traffic theory beside the replay, per family: the busiest clock hour's offered traffic
        in Erlangs (the holding times asked for, served or not; hours on the clock, as traffic
        reports count them, so a year needs a counter per hour, not per holding), Erlang-B's
        blocking at the candidate count, Engset's for a population of few holders, and the
        replay's own share refused in that hour. Where they disagree, the note says the likely why."""
        for f in self.families.values():
            if not f.held_by_hour or until - since < traffic.HOUR:
                continue
            hour, held = max(f.held_by_hour.items(), key=lambda kv: (kv[1], -kv[0]))
            erlangs = held / traffic.HOUR
            asked, refused = f.asks_by_hour.get(hour, [0, 0])
            replayed = refused / asked if asked else 0.0
            erlang_b = traffic.erlang_b(f.installed, erlangs)
            sources = sum(len(asking) for asking in f.holders.values())
            engset = traffic.engset(f.installed, sources, erlangs) if erlangs < sources else None
            f.traffic = {"busy_hour": [hour * traffic.HOUR, (hour + 1) * traffic.HOUR], "erlangs": round(erlangs, 3),
                         "erlang_b": round(erlang_b, 4), "engset": None if engset is None else round(engset, 4),
                         "sources": sources, "replay_refused": round(replayed, 4), "asks_in_hour": asked,
                         "servers_for_1pct": traffic.servers_for(erlangs, 0.01) if erlangs > 0 else 0,
                         "note": _disagreement(replayed, erlang_b if engset is None else engset)}


Entry = tuple[float, int, int, int]  # (time, journal place, what, ask number or loss index)


class Replayer:
    """Journal rows in (`feed_rows`, or `feed` one at a time), in the journal's order; the replay
    out (`finish`)."""

    def __init__(self, pool: Pool, *, losses: Iterable[Loss] = (), site_of: Callable[[str], str | None] | None = None,
                 since: float = -math.inf, until: float = math.inf, keep_outcomes: bool = False) -> None:
        self.pool = pool
        self.site_of = site_of
        self.since, self.until = since, until
        self.out = Replay(outcomes=[] if keep_outcomes else None)
        for bucket in pool.buckets():
            self.out.family(bucket.family).installed += bucket.installed
        self.nodes: dict[str, Node] = {}
        # Events wait for their time in two queues, popped merged, so they go in exactly the order
        # one heap of them all would give: `due`, those that come in time order as the rows are
        # read (a grant, check-in or expiry at its row's time and place: nearly all), and a heap,
        # `timeline`, for the others (a refused holder's first ask and last, a loss, one whose row
        # went back in time). An hour of events waits: a deque appends and pops them in constant
        # time, where one heap of them all paid a dozen tuple comparisons per pop (7% of the
        # replay, measured).
        self.due: deque[Entry] = deque()
        self.timeline: list[Entry] = []
        self.losses = list(losses)
        for j, loss in enumerate(self.losses):
            heapq.heappush(self.timeline, (loss.at, LAST, LOSS, j))
        self.asks: dict[int, Ask] = {}  # open asks by number
        self._numbers = 0
        # The record as it was: what each node holds, by (resource, holder) and by lease id.
        self._recorded: dict[str, dict[tuple[str, str], int]] = {}
        self._by_lease: dict[str, int] = {}
        self.dead: dict[str, str | None] = {}  # a PBX lost -> its standby PBX that took over (None: down)
        self.seq = 0
        self.last_ts = -math.inf  # the newest row's time: the period's end when `until` is not given
        self.in_use: dict[str, int] = {}  # family -> units in use in the replay, kept as leases come and go
        self._recount()
        self._integrated_to: float | None = None  # the traffic's integral (in use + unmet, per family) runs to here
        self._hour: tuple[int, float, float] = (0, math.inf, -math.inf)  # the clock hour it was last in (none yet), and its bounds

    # ---------------------------------------------------------------- the record, row by row

    def feed(self, row: Row) -> None:
        """One journal row (`events.FIELDS`, all of them: `events.full`)."""
        self._replay((row,), final=False)

    def feed_rows(self, rows: Iterable[Row | dict[str, Any]]) -> None:
        """Journal rows, in the journal's order: tuples of `events.FIELDS` (as `iter_rows` gives
        them; trailing fields may be left off) or dicts (as `read_journal` does)."""
        self._replay(rows, final=False)

    def _replay(self, rows: Iterable[Row | dict[str, Any]], *, final: bool) -> None:
        """The replay's one loop. Each row read makes its event (a grant starts an ask, a check-in
        ends it, ...); after each row, the events `LAG_S` behind it are replayed in time order:
        the traffic integrated up to each, then the ask checked out of the pool (START) or given
        back (END), or the loss, then the peaks of the families it changed. `final`: once the
        rows are done, every event left.

        A year is ten million rows and as many events, so what nearly all of them do (a grant, a
        check-in; an ask checked out, given back) is written out here, with no Python call per
        row or per event but the pool's own; what is rare is in methods (`_other`, `_denied`,
        `_lose`). With the queues and the collector (`_collecting_seldom`), this took the replay
        of a tenth of the year from 7.1 s to 4.6 s (bench/whatif.py --days 37), the same answer."""
        until, since = self.until, self.since
        asks, recorded, by_lease = self.asks, self._recorded, self._by_lease
        due, timeline = self.due, self.timeline
        out, in_use, dead = self.out, self.in_use, self.dead
        families, outcomes = out.families, out.outcomes
        book = self.pool.book  # its checkout and checkin, as Pool's call them: the master's own (under a policy, the counted ones)
        integrated_to = self._integrated_to
        hour, hour_start, hour_end = self._hour
        width = len(events.FIELDS)
        touched: Iterable[str]
        rows = iter(rows)
        done = False
        while not done:
            # ---- the record, row by row, until events are due (`break`: the loop below runs them,
            # then this one goes on with the next row; `else`: the rows are done)
            for row in rows:
                if row.__class__ is not tuple or len(row) != width:
                    row = _as_row(row)
                ts = row[TS]
                if ts > until:
                    continue
                if ts > self.last_ts:
                    self.last_ts = ts
                seq = self.seq = self.seq + 1
                kind, node = row[EVENT], row[NODE]
                entry: Entry | None = None  # the event this row makes, when it is a grant or a check-in
                if node is None:
                    pass
                elif kind == GRANT:
                    if row[NOTE] != "adopted":
                        resource, holder = row[RESOURCE], row[HOLDER]
                        key = (resource, holder)
                        held = recorded.get(node)
                        if held is None:
                            held = recorded[node] = {}
                        if key in held:  # a re-sync of what it holds: the same demand going on
                            by_lease[row[LEASE]] = held[key]
                        else:  # a new ask (`_start`, written out)
                            count, interface = lease_shape(resource, row[DETAIL]) if resource in _SHAPED else (1, None)
                            number = self._numbers = self._numbers + 1
                            asks[number] = Ask(ts, seq, node, node, resource, holder, count, interface)
                            held[key] = number
                            by_lease[row[LEASE]] = number
                            entry = (ts, seq, START, number)
                elif kind == CHECKIN or kind == RELEASE:
                    lease_id = row[LEASE]
                    ending = by_lease.pop(lease_id, None) if lease_id else None
                    if ending is not None:  # its ask ends (`_end`, written out)
                        ask = asks.get(ending)
                        if ask is not None:
                            held = recorded.get(ask.owner)
                            if held is not None:
                                key = (ask.resource, ask.holder)
                                if held.get(key) == ending:
                                    del held[key]
                        entry = (ts, seq, END, ending)
                else:
                    self._other(ts, seq, kind, node, row)
                if entry is not None:  # (`_push`, written out)
                    if not due or entry > due[-1]:
                        due.append(entry)
                    else:
                        heapq.heappush(timeline, entry)
                before = ts - LAG_S
                if (due and due[0][0] <= before) or (timeline and timeline[0][0] <= before):
                    break
            else:
                done = True
                if not final:
                    break
                before = math.inf
            # ---- the replay, in time order: every event due by `before`
            cap = min(until, self.last_ts)  # the integral stops at the period's end
            while True:
                if due and (not timeline or due[0] < timeline[0]):
                    if due[0][0] > before:
                        break
                    at, _, what, number = due.popleft()
                elif timeline and timeline[0][0] <= before:
                    at, _, what, number = heapq.heappop(timeline)
                else:
                    break
                # The holding asked for (in use, and unmet asks still asking) per family, added to the
                # clock hours from where the integral stood to `at` (clipped to the period): the
                # offered traffic, as the integral of a level that changes only at events.
                start, integrated_to = integrated_to, at
                if start is not None:
                    if start < since:
                        start = since
                    end = at if at < cap else cap
                    if end > start:
                        if hour_start <= start and end <= hour_end:
                            # Within the clock hour of the last piece (nearly always), whose bounds
                            # are kept: the loop below in one step, giving the same sums.
                            span = end - start
                            for f in families.values():
                                level = in_use.get(f.family, 0) + f.unmet
                                if level:
                                    hours = f.held_by_hour
                                    hours[hour] = hours.get(hour, 0.0) + span * level
                        else:
                            _add_holding(families.values(), in_use, start, end)
                            hour = int(end // HOUR)
                            hour_start, hour_end = hour * HOUR, (hour + 1) * HOUR
                if what == START:  # check the ask out
                    ask = asks.get(number)
                    if ask is None:
                        continue
                    out.asks += 1
                    if dead and ask.node in dead:  # its phones ask through the standby that took over, or not at all
                        standby = dead[ask.node]
                        if standby is None:
                            out.unserved += 1
                            del asks[number]
                            continue
                        ask.node = standby
                    outcome = book.checkout(ask.node, ask.resource, ask.holder, ask.count, ask.interface, None)
                    if type(outcome) is Denial:
                        touched = self._denied(at, ask, outcome)
                    else:
                        lease, new = outcome
                        ask.lease = lease.id
                        took = lease.took
                        # the families its lease took (one, from a single-bucket plan: no set to build)
                        touched = ask.families = (took[0][0].family,) if len(took) == 1 else tuple({b.family for b, _ in took})
                        if new:
                            for bucket, n in took:
                                in_use[bucket.family] = in_use.get(bucket.family, 0) + n
                        if outcomes is not None:
                            outcomes.append((ask, None))
                        if at >= since:  # (`_asked`, written out)
                            node, holder = ask.node, ask.holder
                            clock = int(at // HOUR)
                            for family in touched:
                                f = families.get(family) or out.family(family)
                                asking = f.holders.get(node)
                                if asking is None:
                                    asking = f.holders[node] = set()
                                asking.add(holder)
                                counts = f.asks_by_hour.get(clock)
                                if counts is None:
                                    counts = f.asks_by_hour[clock] = [0, 0]
                                counts[0] += 1
                elif what == END:  # give the ask's lease back, or end a refused ask
                    ask = asks.pop(number, None)
                    if ask is None:
                        continue
                    if ask.lease is not None:
                        back = book.checkin(ask.node, ask.lease)
                        if back is not None:
                            for bucket, n in back.took:
                                in_use[bucket.family] -= n
                        touched = ask.families
                    elif ask.family is not None:
                        out.family(ask.family).unmet -= 1
                        touched = (ask.family,)
                    else:
                        continue
                else:
                    self._lose(self.losses[number])
                    self._recount()
                    touched = in_use
                if at >= since:  # the peaks of the families it changed: in use, and in use with what is still unmet
                    for family in touched:
                        f = families.get(family) or out.family(family)
                        used = f.in_use = in_use.get(family, 0)
                        if used > f.peak_in_use:
                            f.peak_in_use, f.peak_at = used, at
                        if used + f.unmet > f.peak_demand:
                            f.peak_demand = used + f.unmet
        self._integrated_to = integrated_to
        self._hour = (hour, hour_start, hour_end)

    def _other(self, ts: float, seq: int, kind: str, node: str, row: Row) -> None:
        """A row that is neither a grant nor a check-in."""
        if kind == events.HELLO:
            said = events.read_hello(node, row[DETAIL])
            if said is not None:
                self.nodes[node] = said
                self.pool.set_node(said)
        elif kind in (events.EXPIRE, events.BYE):
            for number in list(self._recorded.get(node, {}).values()):
                self._end(ts, seq, number)
        elif kind == events.TAKEOVER and row[DETAIL]:
            # `node`, a standby PBX, took `failed`'s leases over. From this row on the record names
            # them under the standby (a re-sync there is the same demand; a check-in by it names the
            # lease's old id, which `_by_lease` keeps); the takeover itself is replayed in time order,
            # where R-STBY-2 decides again under the candidate licenses (`_lose`).
            failed = str(row[DETAIL])
            moving = self._recorded.pop(failed, {})
            for number in moving.values():
                ask = self.asks.get(number)
                if ask is not None:
                    ask.owner = node
            if moving:
                self._recorded.setdefault(node, {}).update(moving)
            self.losses.append(Loss(failed, ts, standby=node))
            self._push((ts, seq, LOSS, len(self.losses) - 1))
        elif kind == events.DEMAND and row[RESOURCE] and row[HOLDER]:
            demand = events.read_demand(row[DETAIL])
            if demand is not None:
                number = self._start(demand.first, -1, Ask(demand.first, -1, node, node, row[RESOURCE], row[HOLDER],
                                                           recorded_granted=False), recorded=False)
                self._push((demand.last, seq, END, number))

    def _push(self, entry: Entry) -> None:
        """An event to wait for its time: behind the last in `due` if it comes after it, else in the heap."""
        due = self.due
        if not due or entry > due[-1]:
            due.append(entry)
        else:
            heapq.heappush(self.timeline, entry)

    def _start(self, ts: float, seq: int, ask: Ask, *, recorded: bool = True) -> int:
        self._numbers += 1
        number = self._numbers
        self.asks[number] = ask
        if recorded:
            self._recorded.setdefault(ask.owner, {})[(ask.resource, ask.holder)] = number
        self._push((ts, seq, START, number))
        return number

    def _end(self, ts: float, seq: int, number: int) -> None:
        ask = self.asks.get(number)
        if ask is not None:
            held = self._recorded.get(ask.owner, {})
            if held.get((ask.resource, ask.holder)) == number:
                del held[(ask.resource, ask.holder)]
        self._push((ts, seq, END, number))

    # ---------------------------------------------------------------- the replay, in time order

    def _denied(self, at: float, ask: Ask, denial: Denial) -> tuple[str]:
        """A refused checkout: the ask stays unmet while it asks; the family it counts to."""
        family = str((denial.details or {}).get("family") or ask.resource)
        ask.family = family
        f = self.out.family(family)
        f.unmet += 1
        if self.out.outcomes is not None:
            self.out.outcomes.append((ask, denial.code))
        if at >= self.since:
            _refused(f, ask, denial)
            _asked(f, ask, at, refused=True)
        return (family,)

    def _recount(self) -> None:
        """In use per family, from the pool (at the start, and after a loss moved or gave back many
        leases at once). In place: `_replay` holds the dict."""
        self.in_use.clear()
        for bucket in self.pool.buckets():
            self.in_use[bucket.family] = self.in_use.get(bucket.family, 0) + bucket.in_use

    def _integrate(self, to: float) -> None:
        """The integral of `_replay`, from where it stood to `to`, when no event is left (`finish`)."""
        start = self._integrated_to
        self._integrated_to = to
        if start is None:
            return
        if start < self.since:
            start = self.since
        end = min(to, self.until, self.last_ts)
        if end <= start:
            return
        _add_holding(self.out.families.values(), self.in_use, start, end)

    def _lose(self, loss: Loss) -> None:
        """The PBXs of `loss` die: each one's standby PBX takes over (R-STBY-2 decides, as on the
        master), or its licenses go back with its users down. A recorded takeover (`loss.standby`)
        is decided the same way; what the failed PBX does later, the record says (it may come
        back), so it is not marked dead."""
        recorded = loss.standby is not None
        if recorded:
            doomed = [loss.target]
        elif loss.target.startswith("@"):
            site = loss.target[1:]
            doomed = sorted(name for name, node in self.nodes.items() if self.site_of is not None
                            and self.site_of(name) == site and node.role != "standby")
        else:
            doomed = [loss.target]
        taken, down = [], []
        for name in doomed:
            standby = loss.standby if recorded else next((n.name for n in self.nodes.values() if n.standby_for == name), None)
            held = len(self.pool.node_leases(name))
            outcome = self.pool.takeover(standby, name) if standby is not None else None
            if standby is not None and not isinstance(outcome, Denial):
                taken.append({"failed": name, "standby": standby, "moved": held})
                if not recorded:
                    self.dead[name] = standby
                for ask in self.asks.values():  # the leases moved: their asks end on the standby
                    if ask.node == name and ask.lease is not None:
                        ask.node = standby
            else:
                self.pool.release_node(name)
                for ask in self.asks.values():
                    if ask.node == name and ask.lease is not None:
                        ask.lease = None  # given back with the PBX
                down.append({"failed": name, "leases": held, "standby": standby,
                             "why": outcome.message if isinstance(outcome, Denial) else "no standby PBX said hello for it"})
                if not recorded:
                    self.dead[name] = None
        if recorded:
            self.out.takeovers.append({"failed": loss.target, "standby": loss.standby, "at": loss.at,
                                       "moved": taken[0]["moved"] if taken else 0,
                                       "refused": down[0]["why"] if down else None})
        else:
            self.out.lost.append({"target": loss.target, "at": loss.at, "taken_over": taken, "down": down})

    def finish(self) -> Replay:
        """Every event left, then what is still held counted to the end of the period."""
        self._replay((), final=True)
        self._integrate(min(self.until, self.last_ts))  # what is still held, to the end of the period
        return self.out


def _add_holding(families: Iterable[FamilyOutcome], in_use: dict[str, int], start: float, end: float) -> None:
    """The holding asked for from `start` to `end` (in use, and unmet asks still asking) added to
    each family's clock hours, split where an hour ends."""
    for f in families:
        level = in_use.get(f.family, 0) + f.unmet
        if not level:
            continue
        hours = f.held_by_hour
        hour, at = int(start // HOUR), start
        while at < end:
            edge = min(end, (hour + 1) * HOUR)
            hours[hour] = hours.get(hour, 0.0) + (edge - at) * level
            at, hour = edge, hour + 1


def replay(rows: Iterable[Row | dict[str, Any]], pool: Pool, *, losses: Iterable[Loss] = (),
           site_of: Callable[[str], str | None] | None = None, since: float = -math.inf, until: float = math.inf,
           keep_outcomes: bool = False) -> Replay:
    """The record's rows (journal tuples, as `iter_rows` gives them, or dicts as `read_journal`
    does) replayed against `pool`: peaks and refusals count from `since` (what was held before
    it is replayed too, so it is known), up to `until`."""
    replayer = Replayer(pool, losses=losses, site_of=site_of, since=since, until=until, keep_outcomes=keep_outcomes)
    with _collecting_seldom():
        replayer.feed_rows(rows)
        return replayer.finish()


# The collector's thresholds while a replay runs, as `licmaster serve` runs (serve.py).
SELDOM = (50_000, 20, 20)


@contextlib.contextmanager
def _collecting_seldom() -> Iterator[None]:
    """The cyclic collector runs seldom while the replay runs; the thresholds in force come back
    after (in the master's process they are these already). A replay allocates a few tuples and
    objects per row, none in a cycle; at the default threshold (700) the collector ran ~2,000
    times over a tenth of the year, walking each time the batch of 10,000 journal rows being
    read: 12% of the replay (measured). Process-wide, as thresholds are: what else runs meanwhile
    is collected less often too, never wrongly."""
    before = gc.get_threshold()
    if before[0] >= SELDOM[0]:
        yield
        return
    gc.set_threshold(*SELDOM)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _as_row(row: Row | dict[str, Any]) -> Row:
    if isinstance(row, dict):
        return tuple(row.get(name) for name in events.FIELDS)
    return row if len(row) == len(events.FIELDS) else events.full(row)


def peak_time(rows: Iterable[Row | dict[str, Any]], since: float = -math.inf, until: float = math.inf) -> float | None:
    """When the record had the most floating licenses in use at once (from `since`): `--at peak`.
    One pass of its own over the rows, counting grants and what ends them."""
    held: dict[str, set[tuple[str, str]]] = {}
    by_lease: dict[str, tuple[str, tuple[str, str]]] = {}
    count, best, when = 0, -1, None
    for raw in rows:
        row = _as_row(raw)
        ts, kind, node = row[TS], row[EVENT], row[NODE]
        if ts > until or node is None:
            continue
        if kind == events.GRANT and row[NOTE] != "adopted":
            key = (row[RESOURCE], row[HOLDER])
            by_lease[row[LEASE]] = (node, key)
            if key not in held.setdefault(node, set()):
                held[node].add(key)
                count += 1
        elif kind in (events.CHECKIN, events.RELEASE) and row[LEASE] in by_lease:
            owner, key = by_lease.pop(row[LEASE])
            if key in held.get(owner, ()):
                held[owner].discard(key)
                count -= 1
        elif kind in (events.EXPIRE, events.BYE):
            count -= len(held.pop(node, ()))
        elif kind == events.TAKEOVER and row[DETAIL]:
            moved = held.pop(str(row[DETAIL]), set())
            held.setdefault(node, set()).update(moved)
        if ts >= since and count > best:
            best, when = count, ts
    return when


def answer(rows: Callable[[], Iterable[Row | dict[str, Any]]], licenses: Iterable[InstalledLicense], policy: Policy | None, *,
           since: float, until: float, firmware: int | None = None, lose: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """The whole question, as `licmaster whatif` and GET /api/v1/whatif ask it: the record's
    demand (`rows()` gives its rows, oldest first; called twice for a loss `at` the peak) up to
    `until`, replayed against `licenses` under `policy` (every PBX on `firmware`, if given), with
    each (target, at) of `lose` ("peak" or epoch seconds); counted from `since`, with traffic
    theory beside it. ValueError names a bad `at`."""
    losses = []
    peak: float | None = None
    for target, at in lose:
        if at == "peak":
            peak = peak if peak is not None else peak_time(rows(), since, until)
            when = peak
        else:
            when = _epoch(at)
        if when is None:
            raise ValueError(f"at {at!r}: expected epoch seconds or 'peak' (and a record with a peak)")
        losses.append(Loss(target, when))
    pool = Pool(licenses)
    pool.set_policy(policy)
    site_of = None
    if policy is not None:
        def site_of(name: str) -> str | None:
            site = policy.site_of(name)
            return site.name if site is not None else None
    source: Iterable[Row | dict[str, Any]] = rows()
    if firmware is not None:
        source = (_on_firmware(_as_row(row), firmware) for row in source)
    result = replay(source, pool, losses=losses, site_of=site_of, since=since, until=until)
    result.add_traffic(since, until)
    return {"since": since, "until": until, "firmware": firmware, **result.to_dict()}


def _on_firmware(row: Row, firmware: int) -> Row:
    """A hello row as if the PBX ran `firmware`."""
    if row[EVENT] != events.HELLO or not row[NODE]:
        return row
    said = events.read_hello(row[NODE], row[DETAIL])
    if said is None or said.role == "observer":
        return row
    return (*row[:DETAIL], events.hello_detail(dataclasses.replace(said, firmware=firmware)), *row[DETAIL + 1:])


def _epoch(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _asked(family: FamilyOutcome, ask: Ask, at: float, *, refused: bool) -> None:
    family.holders.setdefault(ask.node, set()).add(ask.holder)
    hour = int(at // HOUR)
    counts = family.asks_by_hour.get(hour)
    if counts is None:
        counts = family.asks_by_hour[hour] = [0, 0]
    counts[0] += 1
    counts[1] += refused


def _refused(family: FamilyOutcome, ask: Ask, denial: Denial) -> None:
    family.refused += 1
    if family.first_refused is None:
        family.first_refused = ask.start
    if len(family.who) < REFUSED_SHOWN:
        family.who.append({"at": ask.start, "node": ask.node, "resource": ask.resource, "holder": ask.holder,
                           "code": denial.code, "rule": denial.rule})


def _disagreement(replayed: float, model: float) -> str | None:
    """Why the replay and the loss formula may differ, when they differ much."""
    if abs(replayed - model) < 0.02 or (min(replayed, model) > 0 and max(replayed, model) / min(replayed, model) < 2):
        return None
    if replayed > model:
        return ("the record refused more than the formula expects: its asks come in bursts (a PBX registering its "
                "phones at once, retries), not as independent Poisson requests")
    return ("the record refused less than the formula expects: its holders are few and ask in turn, or the hour's "
            "asks were spread more evenly than Poisson requests")


def lease_shape(resource: str, label: Any) -> tuple[int, str | None]:
    """A grant's count and ISDN interface, from what it took (its label: "Relay-PRIs bound to
    gw:1 PBX-Channels:30")."""
    if resource not in ("isdn", "conference") or not isinstance(label, str):
        return 1, None
    interface = next((name for family, name in ISDN_INTERFACE.items() if family in label), None)
    counts = [int(part.rsplit(":", 1)[1]) for part in label.split(" ") if ":" in part and part.rsplit(":", 1)[1].isdigit()]
    return max(counts, default=1), interface


def render_text(doc: dict[str, Any]) -> str:
    """The replay as a person reads it: per family, peak, headroom, refused (who first), and the
    count that would have served everyone; then each loss."""
    lines = [f"what if: {doc['asks']} asks replayed from {_utc(doc['since'])} to {_utc(doc['until'])}"
             + (f", every PBX on V{doc['firmware']}" if doc.get("firmware") else "")]
    for f in doc["families"]:
        if not (f["installed"] or f["peak_in_use"] or f["refused"]):
            continue
        lines.append(f"  {f['family']}: {f['installed']} installed, peak {f['peak_in_use']} in use"
                     + (f" at {_utc(f['peak_at'])}" if f["peak_at"] else "") + f", headroom {f['headroom_at_peak']}; "
                     f"{f['refused']} refused" + (f" (first at {_utc(f['first_refused'])})" if f["first_refused"] else "")
                     + f"; {f['would_serve_everyone']} would have served everyone")
        t = f.get("traffic")
        if t:
            lines.append(f"    busiest hour from {_utc(t['busy_hour'][0])}: {t['erlangs']:g} Erlangs offered; refused there "
                         f"{t['replay_refused']:.1%} in the replay, Erlang-B {t['erlang_b']:.1%}"
                         + (f", Engset ({t['sources']} holders) {t['engset']:.1%}" if t["engset"] is not None else "")
                         + f"; {t['servers_for_1pct']} for 1% blocking" + (f" ({t['note']})" if t["note"] else ""))
        for who in f["who"][:5]:
            lines.append(f"    refused {who['node']}/{who['holder']} ({who['resource']}) at {_utc(who['at'])}: {who['code']}"
                         + (f" ({who['rule']})" if who.get("rule") else ""))
    if doc.get("unserved_after_loss"):
        lines.append(f"  {doc['unserved_after_loss']} asks of lost PBXs without a standby went unserved")
    for took in doc.get("takeovers", []):
        lines.append(f"  recorded takeover of {took['failed']} by {took['standby']} at {_utc(took['at'])}: "
                     + (f"refused here, {took['refused']}: its phones down" if took["refused"] else f"allowed ({took['moved']} moved)"))
    for loss in doc["lost"]:
        lines.append(f"  lost {loss['target']} at {_utc(loss['at'])}: "
                     + ", ".join([f"{t['failed']} -> {t['standby']} ({t['moved']} moved)" for t in loss["taken_over"]]
                                 + [f"{d['failed']} down with {d['leases']} leases: {d['why']}" for d in loss["down"]]))
    return "\n".join(lines)


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"
