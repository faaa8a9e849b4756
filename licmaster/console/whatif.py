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
gives its licenses back (its users are down: counted as lost).
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

ISDN_INTERFACE = {"Relay-PRIs": "pri", "Relay-BRIs": "bri"}
LAST = 2**62  # a loss's place among the rows of its instant: after them
REFUSED_SHOWN = 20  # who was refused: the first this many (every refusal is counted)


@dataclass(frozen=True, slots=True)
class Ask:
    """One demand: `node` wanted (`resource`, `holder`) from `start` to `end` (None: to the end)."""

    start: float
    seq: int  # the journal's order within one instant
    node: str
    resource: str
    holder: str
    count: int = 1
    interface: str | None = None
    end: float | None = None
    end_seq: int = 0  # the journal row that ended it
    recorded_granted: bool = True  # the master granted it (a grant row), or refused it (a demand row)


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
    holdings: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of every unit asked for, from `since`
    sources: set[tuple[str, str]] = field(default_factory=set)  # (node, holder) that asked
    asked: list[tuple[float, bool]] = field(default_factory=list)  # (when, refused) of every ask from `since`
    traffic: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "installed": self.installed, "peak_in_use": self.peak_in_use, "peak_at": self.peak_at,
                "headroom_at_peak": self.installed - self.peak_in_use, "peak_demand": self.peak_demand,
                "would_serve_everyone": max(self.peak_demand, self.peak_in_use), "refused": self.refused,
                "first_refused": self.first_refused, "who": self.who, "traffic": self.traffic}


@dataclass
class Replay:
    """The outcome: per family; every ask with what the replay did (for comparing with the record)."""

    families: dict[str, FamilyOutcome] = field(default_factory=dict)
    outcomes: list[tuple[Ask, str | None]] = field(default_factory=list)  # (ask, None if granted else the refusal's code)
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
        """Traffic theory beside the replay, per family: the busiest hour's offered traffic in
        Erlangs (the holding times asked for, served or not), Erlang-B's blocking at the
        candidate count, Engset's for a population of few holders, and the replay's own share
        refused in that hour. Where they disagree, the note says the likely why."""
        for f in self.families.values():
            if not f.holdings or until - since < traffic.HOUR:
                continue
            busy = traffic.busiest_hour([(max(a, since), min(b, until)) for a, b in f.holdings if b > since], since, until)
            in_hour = [refused for at, refused in f.asked if busy.start <= at < busy.end]
            replayed = sum(in_hour) / len(in_hour) if in_hour else 0.0
            erlang_b = traffic.erlang_b(f.installed, busy.erlangs)
            sources = len(f.sources)
            engset = traffic.engset(f.installed, sources, busy.erlangs) if busy.erlangs < sources else None
            f.traffic = {"busy_hour": [busy.start, busy.end], "erlangs": round(busy.erlangs, 3), "erlang_b": round(erlang_b, 4),
                         "engset": None if engset is None else round(engset, 4), "sources": sources,
                         "replay_refused": round(replayed, 4), "asks_in_hour": len(in_hour),
                         "servers_for_1pct": traffic.servers_for(busy.erlangs, 0.01) if busy.erlangs > 0 else 0,
                         "note": _disagreement(replayed, erlang_b if engset is None else engset)}


def asks_from(rows: Iterable[dict[str, Any]], *, until: float | None = None) -> tuple[list[Ask], dict[str, Node]]:
    """The demand a journal records, and what each PBX said of itself (its last hello)."""
    nodes: dict[str, Node] = {}
    asks: list[Ask] = []
    open_by_lease: dict[str, int] = {}  # lease id -> index in asks, while it is held
    open_by_node: dict[str, dict[tuple[str, str], int]] = {}  # node -> (resource, holder) -> index
    for seq, row in enumerate(rows):
        kind, node, ts = row["event"], row.get("node"), float(row["ts"])
        if until is not None and ts > until:
            break
        if node is None:
            continue
        if kind == events.HELLO:
            said = events.read_hello(node, row.get("detail"))
            if said is not None:
                nodes[node] = said
        elif kind == events.GRANT and row.get("note") != "adopted":
            key = (row["resource"], row["holder"])
            held = open_by_node.setdefault(node, {})
            if key in held:  # a re-sync of what it holds: the same demand going on
                open_by_lease[row["lease"]] = held[key]
                continue
            count, interface = _shape(row["resource"], row.get("detail"))
            held[key] = open_by_lease[row["lease"]] = len(asks)
            asks.append(Ask(ts, seq, node, row["resource"], row["holder"], count, interface))
        elif kind in (events.CHECKIN, events.RELEASE) and row.get("lease"):
            index = open_by_lease.pop(row["lease"], None)
            if index is not None:
                _close(asks, index, ts, seq, open_by_node)
        elif kind in (events.EXPIRE, events.BYE):
            for index in list(open_by_node.get(node, {}).values()):
                _close(asks, index, ts, seq, open_by_node)
        elif kind == events.TAKEOVER and row.get("detail"):
            failed = str(row["detail"])
            for index in list(open_by_node.get(failed, {}).values()):
                ask = asks[index]
                _close(asks, index, ts, seq, open_by_node)
                open_by_node.setdefault(node, {})[(ask.resource, ask.holder)] = len(asks)
                asks.append(Ask(ts, seq, node, ask.resource, ask.holder, ask.count, ask.interface))
        elif kind == events.DEMAND and row.get("resource") and row.get("holder"):
            demand = events.read_demand(row.get("detail"))
            if demand is not None:
                asks.append(Ask(demand.first, seq, node, row["resource"], row["holder"], end=demand.last, end_seq=seq,
                                recorded_granted=False))
    return asks, nodes


def replay(asks: list[Ask], nodes: dict[str, Node], pool: Pool, *, losses: Iterable[Loss] = (),
           site_of: Callable[[str], str | None] | None = None, since: float = -math.inf) -> Replay:
    """Every ask, in time order, checked out of `pool` and given back at its end. Peaks and
    refusals count from `since` (what was held before it is replayed too, so it is known)."""
    for node in nodes.values():
        pool.set_node(node)
    out = Replay(asks=len(asks))
    for bucket in pool.buckets():
        out.family(bucket.family).installed += bucket.installed
    # (time, journal order, what, payload): a start, an end, or a loss. A refused ask is placed by
    # its time (a demand row's, to the microsecond), ahead of the rows of the same instant; the
    # rows of one read share their read's time, so within one read the order of a refused ask
    # among the read's other requests is not known: it comes first (docs/operations.md, "What if").
    timeline: list[tuple[float, int, int, int]] = []
    for i, ask in enumerate(asks):  # what: 0 a loss, 1 an end, 2 a refused ask's end, 3 a start (ends first)
        timeline.append((ask.start, ask.seq if ask.recorded_granted else -1, 3, i))
    lost = list(losses)
    for j, loss in enumerate(lost):
        timeline.append((loss.at, LAST, 0, j))  # after what the record has at that instant (`peak`: after its asks)
    heapq.heapify(timeline)
    granted: dict[int, str] = {}  # ask index -> replay lease id
    unmet: dict[int, str] = {}  # ask index -> family, while a refused ask still asks
    dead: dict[str, str | None] = {}  # a PBX lost -> its standby PBX that took over (None: its users are down)
    while timeline:
        at, _, what, index = heapq.heappop(timeline)
        if what == 0:
            outcome_of_loss = _lose(pool, lost[index], nodes, site_of)
            out.lost.append(outcome_of_loss)
            dead.update({t["failed"]: t["standby"] for t in outcome_of_loss["taken_over"]})
            dead.update({d["failed"]: None for d in outcome_of_loss["down"]})
        elif what == 3:
            ask = asks[index]
            if ask.node in dead:  # its phones ask through the standby that took over, or not at all
                standby = dead[ask.node]
                if standby is None:
                    out.unserved += 1
                    continue
                ask = asks[index] = dataclasses.replace(ask, node=standby)
            outcome = pool.checkout(ask.node, ask.resource, ask.holder, ask.count, ask.interface)
            if isinstance(outcome, Denial):
                family = str((outcome.details or {}).get("family") or ask.resource)
                out.outcomes.append((ask, outcome.code))
                if at >= since:
                    _asked(out.family(family), ask, refused=True)
                if at >= since:
                    _refused(out.family(family), ask, outcome)
                unmet[index] = family  # still asking until its end (to the end of the period, if none)
                out.family(family).unmet += 1
                if ask.end is not None:
                    heapq.heappush(timeline, (ask.end, ask.end_seq, 2, index))
            else:
                lease = outcome[0]
                out.outcomes.append((ask, None))
                if at >= since:
                    for family in {bucket.family for bucket, _ in lease.took}:
                        _asked(out.family(family), ask, refused=False)
                granted[index] = lease.id
                if ask.end is not None:
                    heapq.heappush(timeline, (ask.end, ask.end_seq, 1, index))
        elif what == 1:
            lease_id = granted.pop(index, None)
            if lease_id is not None:
                pool.checkin(_holder_node(pool, lease_id, asks[index].node), lease_id)
        else:
            out.family(unmet.pop(index)).unmet -= 1
        _sample(out, pool, at, counted=at >= since)
    return out


def _asked(family: FamilyOutcome, ask: Ask, *, refused: bool) -> None:
    end = ask.end if ask.end is not None else math.inf
    family.holdings.extend([(ask.start, end)] * ask.count)
    family.sources.add((ask.node, ask.holder))
    family.asked.append((ask.start, refused))


def _disagreement(replayed: float, model: float) -> str | None:
    """Why the replay and the loss formula may differ, when they differ much."""
    if abs(replayed - model) < 0.02 or (min(replayed, model) > 0 and max(replayed, model) / min(replayed, model) < 2):
        return None
    if replayed > model:
        return ("the record refused more than the formula expects: its asks come in bursts (a PBX registering its "
                "phones at once, retries), not as independent Poisson requests")
    return ("the record refused less than the formula expects: its holders are few and ask in turn, or the hour's "
            "asks were spread more evenly than Poisson requests")


def peak_time(asks: list[Ask], since: float = -math.inf) -> float | None:
    """When the record had the most licenses in use at once (from `since`): `--at peak`."""
    changes = sorted([(a.start, 1) for a in asks if a.recorded_granted] +
                     [(a.end, -1) for a in asks if a.recorded_granted and a.end is not None])
    held, best, when = 0, -1, None
    for at, delta in changes:
        held += delta
        if at >= since and held > best:
            best, when = held, at
    return when


def answer(rows: Iterable[dict[str, Any]], licenses: Iterable[InstalledLicense], policy: Policy | None, *, since: float,
           until: float, firmware: int | None = None, lose: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """The whole question, as `licmaster whatif` and GET /api/v1/whatif ask it: the record's
    demand up to `until`, replayed against `licenses` under `policy` (every PBX on `firmware`,
    if given), with each (target, at) of `lose` ("peak" or epoch seconds); counted from
    `since`, with traffic theory beside it. ValueError names a bad `at`."""
    asks, nodes = asks_from(rows, until=until)
    if firmware is not None:
        nodes = {name: dataclasses.replace(node, firmware=firmware) if node.role != "observer" else node
                 for name, node in nodes.items()}
    losses = []
    for target, at in lose:
        when = peak_time(asks, since) if at == "peak" else _epoch(at)
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
    result = replay(asks, nodes, pool, losses=losses, site_of=site_of, since=since)
    result.add_traffic(since, until)
    return {"since": since, "until": until, "firmware": firmware, **result.to_dict()}


def _epoch(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _sample(out: Replay, pool: Pool, at: float, *, counted: bool) -> None:
    in_use: dict[str, int] = {}
    for bucket in pool.buckets():
        in_use[bucket.family] = in_use.get(bucket.family, 0) + bucket.in_use
    for family, used in in_use.items():
        f = out.family(family)
        f.in_use = used
        if counted and used > f.peak_in_use:
            f.peak_in_use, f.peak_at = used, at
    if counted:
        for f in out.families.values():
            f.peak_demand = max(f.peak_demand, f.in_use + f.unmet)


def _refused(family: FamilyOutcome, ask: Ask, denial: Denial) -> None:
    family.refused += 1
    if family.first_refused is None:
        family.first_refused = ask.start
    if len(family.who) < REFUSED_SHOWN:
        family.who.append({"at": ask.start, "node": ask.node, "resource": ask.resource, "holder": ask.holder,
                           "code": denial.code, "rule": denial.rule})


def _lose(pool: Pool, loss: Loss, nodes: dict[str, Node], site_of: Callable[[str], str | None] | None) -> dict[str, Any]:
    """The PBXs of `loss` die: each one's standby PBX takes over (R-STBY-2 decides, as on the
    master), or its licenses go back with its users down."""
    if loss.target.startswith("@"):
        site = loss.target[1:]
        dead = sorted(name for name, node in nodes.items() if site_of is not None and site_of(name) == site
                      and node.role != "standby")
    else:
        dead = [loss.target]
    taken, down = [], []
    for name in dead:
        standby = next((n.name for n in nodes.values() if n.standby_for == name), None)
        held = len(pool.node_leases(name))
        outcome = pool.takeover(standby, name) if standby is not None else None
        if standby is not None and not isinstance(outcome, Denial):
            taken.append({"failed": name, "standby": standby, "moved": held})
        else:
            pool.release_node(name)
            down.append({"failed": name, "leases": held, "standby": standby,
                         "why": outcome.message if isinstance(outcome, Denial) else "no standby PBX said hello for it"})
    return {"target": loss.target, "at": loss.at, "taken_over": taken, "down": down}


def _holder_node(pool: Pool, lease_id: str, node: str) -> str:
    """The node that holds a lease now (a takeover moved it to the standby)."""
    if any(lease.id == lease_id for lease in pool.node_leases(node)):
        return node
    return next((lease.node for lease in pool.leases.values() if lease.id == lease_id), node)


def _close(asks: list[Ask], index: int, ts: float, seq: int, open_by_node: dict[str, dict[tuple[str, str], int]]) -> None:
    ask = asks[index]
    asks[index] = Ask(ask.start, ask.seq, ask.node, ask.resource, ask.holder, ask.count, ask.interface, ts, seq,
                      ask.recorded_granted)
    held = open_by_node.get(ask.node, {})
    if held.get((ask.resource, ask.holder)) == index:
        del held[(ask.resource, ask.holder)]


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
    for loss in doc["lost"]:
        lines.append(f"  lost {loss['target']} at {_utc(loss['at'])}: "
                     + ", ".join([f"{t['failed']} -> {t['standby']} ({t['moved']} moved)" for t in loss["taken_over"]]
                                 + [f"{d['failed']} down with {d['leases']} leases: {d['why']}" for d in loss["down"]]))
    return "\n".join(lines)


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z"
