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

import dataclasses
import heapq
import math
import time
from collections.abc import Callable, Iterable
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
    node: str
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
    """`--lose`: these PBXs (a node, or every node of a site: `@name`) die at `at` (epoch seconds)."""

    target: str
    at: float


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
    sources: set[tuple[str, str]] = field(default_factory=set)  # (node, holder) that asked
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
    asks: int = 0
    unserved: int = 0  # asks of a lost PBX with no standby: its phones were down

    def family(self, name: str) -> FamilyOutcome:
        out = self.families.get(name)
        if out is None:
            out = self.families[name] = FamilyOutcome(name)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"asks": self.asks, "families": [f.to_dict() for f in sorted(self.families.values(), key=lambda f: f.family)],
                "lost": self.lost, "unserved_after_loss": self.unserved}

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
            sources = len(f.sources)
            engset = traffic.engset(f.installed, sources, erlangs) if erlangs < sources else None
            f.traffic = {"busy_hour": [hour * traffic.HOUR, (hour + 1) * traffic.HOUR], "erlangs": round(erlangs, 3),
                         "erlang_b": round(erlang_b, 4), "engset": None if engset is None else round(engset, 4),
                         "sources": sources, "replay_refused": round(replayed, 4), "asks_in_hour": asked,
                         "servers_for_1pct": traffic.servers_for(erlangs, 0.01) if erlangs > 0 else 0,
                         "note": _disagreement(replayed, erlang_b if engset is None else engset)}


class Replayer:
    """Journal rows in (`feed`), in the journal's order; the replay out (`finish`)."""

    def __init__(self, pool: Pool, *, losses: Iterable[Loss] = (), site_of: Callable[[str], str | None] | None = None,
                 since: float = -math.inf, until: float = math.inf, keep_outcomes: bool = False) -> None:
        self.pool = pool
        self.site_of = site_of
        self.since, self.until = since, until
        self.out = Replay(outcomes=[] if keep_outcomes else None)
        for bucket in pool.buckets():
            self.out.family(bucket.family).installed += bucket.installed
        self.nodes: dict[str, Node] = {}
        self.timeline: list[tuple[float, int, int, Any]] = []  # (time, journal place, what, payload)
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
        for bucket in pool.buckets():
            self.in_use[bucket.family] = self.in_use.get(bucket.family, 0) + bucket.in_use
        self._integrated_to: float | None = None  # the traffic's integral (in use + unmet, per family) runs to here

    # ---------------------------------------------------------------- the record, row by row

    def feed(self, row: Row) -> None:
        """One journal row (`events.FIELDS`, all of them: `events.full`)."""
        ts = row[TS]
        if ts > self.until:
            return
        if ts > self.last_ts:
            self.last_ts = ts
        self.seq += 1
        seq = self.seq
        kind, node = row[EVENT], row[NODE]
        if node is not None:
            if kind == GRANT:
                if row[NOTE] != "adopted":
                    self._granted(ts, seq, node, row)
            elif kind == CHECKIN or kind == RELEASE:
                number = self._by_lease.pop(row[LEASE], None) if row[LEASE] else None
                if number is not None:
                    self._end(ts, seq, number)
            elif kind == events.HELLO:
                said = events.read_hello(node, row[DETAIL])
                if said is not None:
                    self.nodes[node] = said
                    self.pool.set_node(said)
            elif kind in (events.EXPIRE, events.BYE):
                for number in list(self._recorded.get(node, {}).values()):
                    self._end(ts, seq, number)
            elif kind == events.TAKEOVER and row[DETAIL]:
                failed = str(row[DETAIL])
                for number in list(self._recorded.get(failed, {}).values()):
                    ask = self.asks.get(number)
                    self._end(ts, seq, number)
                    if ask is not None:
                        self._start(ts, seq, Ask(ts, seq, node, ask.resource, ask.holder, ask.count, ask.interface))
            elif kind == events.DEMAND and row[RESOURCE] and row[HOLDER]:
                demand = events.read_demand(row[DETAIL])
                if demand is not None:
                    number = self._start(demand.first, -1, Ask(demand.first, -1, node, row[RESOURCE], row[HOLDER],
                                                               recorded_granted=False), recorded=False)
                    heapq.heappush(self.timeline, (demand.last, seq, END, number))
        timeline = self.timeline
        if timeline and timeline[0][0] <= ts - LAG_S:
            self._run(ts - LAG_S)

    def _granted(self, ts: float, seq: int, node: str, row: Row) -> None:
        resource, holder = row[RESOURCE], row[HOLDER]
        key = (resource, holder)
        held = self._recorded.get(node)
        if held is None:
            held = self._recorded[node] = {}
        elif key in held:  # a re-sync of what it holds: the same demand going on
            self._by_lease[row[LEASE]] = held[key]
            return
        count, interface = _shape(resource, row[DETAIL]) if resource in _SHAPED else (1, None)
        self._by_lease[row[LEASE]] = self._start(ts, seq, Ask(ts, seq, node, resource, holder, count, interface))

    def _start(self, ts: float, seq: int, ask: Ask, *, recorded: bool = True) -> int:
        self._numbers += 1
        number = self._numbers
        self.asks[number] = ask
        if recorded:
            self._recorded.setdefault(ask.node, {})[(ask.resource, ask.holder)] = number
        heapq.heappush(self.timeline, (ts, seq, START, number))
        return number

    def _end(self, ts: float, seq: int, number: int) -> None:
        ask = self.asks.get(number)
        if ask is not None:
            held = self._recorded.get(ask.node, {})
            if held.get((ask.resource, ask.holder)) == number:
                del held[(ask.resource, ask.holder)]
        heapq.heappush(self.timeline, (ts, seq, END, number))

    # ---------------------------------------------------------------- the replay, in time order

    def _run(self, before: float) -> None:
        timeline = self.timeline
        while timeline and timeline[0][0] <= before:
            at, _, what, payload = heapq.heappop(timeline)
            self._integrate(at)
            if what == LOSS:
                self._lose(self.losses[payload])
                self._recount()
                touched: Iterable[str] = self.in_use
            elif what == START:
                touched = self._take(at, payload)
            else:
                touched = self._give(at, payload)
            if at >= self.since:
                self._sample(at, touched)

    def _take(self, at: float, number: int) -> Iterable[str]:
        """Check an ask out; the families whose counts it changed."""
        ask = self.asks.get(number)
        if ask is None:
            return ()
        self.out.asks += 1
        if ask.node in self.dead:  # its phones ask through the standby that took over, or not at all
            standby = self.dead[ask.node]
            if standby is None:
                self.out.unserved += 1
                self.asks.pop(number, None)
                return ()
            ask.node = standby
        outcome = self.pool.checkout(ask.node, ask.resource, ask.holder, ask.count, ask.interface)
        counted = at >= self.since
        if isinstance(outcome, Denial):
            family = str((outcome.details or {}).get("family") or ask.resource)
            ask.family = family
            f = self.out.family(family)
            f.unmet += 1
            if self.out.outcomes is not None:
                self.out.outcomes.append((ask, outcome.code))
            if counted:
                _refused(f, ask, outcome)
                _asked(f, ask, at, refused=True)
            return (family,)
        lease, new = outcome
        ask.lease = lease.id
        ask.families = tuple({bucket.family for bucket, _ in lease.took})
        if new:
            for bucket, n in lease.took:
                self.in_use[bucket.family] = self.in_use.get(bucket.family, 0) + n
        if self.out.outcomes is not None:
            self.out.outcomes.append((ask, None))
        if counted:
            for family in ask.families:
                _asked(self.out.family(family), ask, at, refused=False)
        return ask.families

    def _give(self, at: float, number: int) -> Iterable[str]:
        """Give an ask's lease back (or end a refused ask); the families whose counts changed."""
        ask = self.asks.pop(number, None)
        if ask is None:
            return ()
        if ask.lease is not None:
            lease = self.pool.checkin(ask.node, ask.lease)
            if lease is not None:
                for bucket, n in lease.took:
                    self.in_use[bucket.family] -= n
            return ask.families
        if ask.family is not None:
            self.out.family(ask.family).unmet -= 1
            return (ask.family,)
        return ()

    def _recount(self) -> None:
        """In use per family, from the pool (after a loss moved or gave back many leases at once)."""
        self.in_use = {}
        for bucket in self.pool.buckets():
            self.in_use[bucket.family] = self.in_use.get(bucket.family, 0) + bucket.in_use

    def _integrate(self, to: float) -> None:
        """The holding asked for (in use, and unmet asks still asking), per family, added to the
        clock hours from where the integral stood to `to` (clipped to the period): the offered
        traffic, as the integral of a level that changes only at events."""
        start = self._integrated_to
        self._integrated_to = to
        if start is None:
            return
        if start < self.since:
            start = self.since
        end = min(to, self.until, self.last_ts)
        if end <= start:
            return
        in_use = self.in_use
        for f in self.out.families.values():
            level = in_use.get(f.family, 0) + f.unmet
            if not level:
                continue
            hours = f.held_by_hour
            hour, at = int(start // HOUR), start
            while at < end:
                edge = min(end, (hour + 1) * HOUR)
                hours[hour] = hours.get(hour, 0.0) + (edge - at) * level
                at, hour = edge, hour + 1

    def _sample(self, at: float, touched: Iterable[str]) -> None:
        """Peaks of the families an event changed: in use, and in use with what is still unmet."""
        out, in_use = self.out, self.in_use
        for family in touched:
            f = out.family(family)
            used = f.in_use = in_use.get(family, 0)
            if used > f.peak_in_use:
                f.peak_in_use, f.peak_at = used, at
            if used + f.unmet > f.peak_demand:
                f.peak_demand = used + f.unmet

    def _lose(self, loss: Loss) -> None:
        """The PBXs of `loss` die: each one's standby PBX takes over (R-STBY-2 decides, as on the
        master), or its licenses go back with its users down."""
        if loss.target.startswith("@"):
            site = loss.target[1:]
            doomed = sorted(name for name, node in self.nodes.items() if self.site_of is not None
                            and self.site_of(name) == site and node.role != "standby")
        else:
            doomed = [loss.target]
        taken, down = [], []
        for name in doomed:
            standby = next((n.name for n in self.nodes.values() if n.standby_for == name), None)
            held = len(self.pool.node_leases(name))
            outcome = self.pool.takeover(standby, name) if standby is not None else None
            if standby is not None and not isinstance(outcome, Denial):
                taken.append({"failed": name, "standby": standby, "moved": held})
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
                self.dead[name] = None
        self.out.lost.append({"target": loss.target, "at": loss.at, "taken_over": taken, "down": down})

    def finish(self) -> Replay:
        """Every event left, then what is still held counted to the end of the period."""
        self._run(math.inf)
        self._integrate(min(self.until, self.last_ts))  # what is still held, to the end of the period
        return self.out


def replay(rows: Iterable[Row | dict[str, Any]], pool: Pool, *, losses: Iterable[Loss] = (),
           site_of: Callable[[str], str | None] | None = None, since: float = -math.inf, until: float = math.inf,
           keep_outcomes: bool = False) -> Replay:
    """The record's rows (journal tuples, as `iter_rows` gives them, or dicts as `read_journal`
    does) replayed against `pool`: peaks and refusals count from `since` (what was held before
    it is replayed too, so it is known), up to `until`."""
    replayer = Replayer(pool, losses=losses, site_of=site_of, since=since, until=until, keep_outcomes=keep_outcomes)
    feed = replayer.feed
    for row in rows:
        feed(_as_row(row))
    return replayer.finish()


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
    family.sources.add((ask.node, ask.holder))
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


def _shape(resource: str, label: Any) -> tuple[int, str | None]:
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
    for loss in doc["lost"]:
        lines.append(f"  lost {loss['target']} at {_utc(loss['at'])}: "
                     + ", ".join([f"{t['failed']} -> {t['standby']} ({t['moved']} moved)" for t in loss["taken_over"]]
                                 + [f"{d['failed']} down with {d['leases']} leases: {d['why']}" for d in loss["down"]]))
    return "\n".join(lines)


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"
