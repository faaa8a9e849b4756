"""Denials into the journal, bounded whatever a client sends.

Every denial is answered in full on the wire; the journal keeps the history an operator reads,
and a flood of refusals must not turn into a flood of rows. Within a window (`window_s`), the
first denial of a kind from a node — kind: (code, rule, resource; every unknown resource name
counts as one) — is journaled as it comes,
with its holder; repeats of it are only counted, and one `deny_repeated` row carries the count
when the window closes. A node has at most `max_kinds` kinds per window; denials of further kinds
are counted together under `*`. Text is bounded: an unknown resource name is cut to 32 printable
characters. So one node adds at most 2 × (max_kinds + 1) rows per window to the journal — with
the defaults, 66 rows a second however many requests it sends (docs/protocol.md, "Bounds").

Unmet demand: those rows count refusals, and name one holder a kind a second; sizing needs who
went without, and for how long. A refusal about a family's licenses (FAMILY_CODES, a resource
other than `unassign`) is also a demand: its node, resource and holder. The holder asking again
within `retry_s` (10 s) is a retry of the same demand, not a new one; a demand ends once its
holder has not asked for `retry_s`, and one `demand` row records it: first and last ask, how many
asks, the code, rule and family of the first (wire/events.py, `demand_detail`). So five phones
refused together are five demands, and one phone retrying fifty times is one. Bounded: a node
has at most `max_node_demands` (1,024) demands open at once, all nodes together at most
`max_demands` (16,384); a demand holds its place for at least `retry_s`, so a node adds at most
1,024 `demand` rows per 10 s. Holders beyond the bound are not named: for each node and resource,
one `demand_dropped` row per retry window counts their asks and estimates how many distinct
holders they were (linear counting in a bitmap of DROPPED_BITS bits: within a few holders up to a few
hundred, within 1–2% up to 100,000, a lower bound past ~340,000), at most
`max_dropped` (256) such rows a window, the rest under node `*`. A demand still open when the
master stops is written as it stands (close()); a master killed loses the demands still open,
as it loses the journal's last flush (docs/operations.md, "Unmet demand").

Every denial is also counted by (family, code, rule) since start, for `licmaster_denials_total`:
`family_of` names the catalog family a refusal is about, or "" when it is about none (a bad
request, not the master, grace); so the labels stay within the catalog's families, the error
codes and the rules whatever a client sends, and no node name is a label.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import blake2b

from licmaster.model import errors as E
from licmaster.model.catalog import FAMILIES, SMB_PORT
from licmaster.model.errors import Denial
from licmaster.wire.events import DEMAND, DEMAND_DROPPED, DENY, DENY_REPEATED, Demand, demand_detail
from licmaster.wire.requests import describe

KNOWN_RESOURCES = frozenset({"port", "conference", "isdn", "operator", "queue-monitor", "assign", "unassign", "takeover"})
DEMAND_RESOURCES = KNOWN_RESOURCES - {"unassign"}  # what a holder is refused and goes without (giving back is no demand)
MESSAGE_MOST = 240  # a deny row keeps the refusal's words (the MACs an R-IPVA-2 license is bound to), cut here
Kind = tuple[str, str | None, str]  # (code, rule, resource)
DemandKey = tuple[str, str, str | None]  # (node, resource, holder)

RETRY_S = 10.0  # a holder asking again within this is retrying the same demand (docs/operations.md, "Unmet demand")
MAX_NODE_DEMANDS = 1024  # demands a node has open at once, each a holder
MAX_DEMANDS = 16_384  # demands open at once, all nodes together
MAX_DROPPED = 256  # demand_dropped summaries per retry window (node, resource); more go under node "*"
DROPPED_BITS = 1 << 15  # each summary's bitmap of the holders it counts (4 KiB)

# The codes of refusals about a family's licenses (the others, a bad request or not the master, are about none).
FAMILY_CODES = frozenset({E.EXHAUSTED, E.VERSION, E.BOUND_ELSEWHERE, E.SMB, E.STANDBY_UNLICENSED, E.PREREQUISITE, E.POLICY})
RESOURCE_FAMILY = {"port": "PBX-Port", "conference": "PBX-Channels", "operator": "PBX-Operator",
                   "queue-monitor": "PBX-QueueMonitor", "takeover": "PBX-Standby"}
# A family named in a refusal's words ("not enough free PBX-Port for port ..."), a version suffix
# allowed (PBX-Port11); "Port" and "Fax" are also plain words, so they are not looked for.
_NAMED = re.compile(r"(?<![\w(-])(" + "|".join(re.escape(f) for f in sorted(FAMILIES, key=len, reverse=True)
                                               if f not in (SMB_PORT, "Fax")) + r")(?![A-Za-z(-])")


def family_of(code: str, resource: str | None, message: str | None, named: object = None) -> str:
    """The catalog family a refusal is about, or "" (not about a family's licenses). `named`: the
    denial's `details["family"]`, when the model said it; else the words, else the resource."""
    if code not in FAMILY_CODES:
        return ""
    if isinstance(named, str) and named in FAMILIES:
        return named
    if code == E.STANDBY_UNLICENSED:
        return "PBX-Standby"
    if code == E.SMB:
        return SMB_PORT
    found = _NAMED.search(message or "")
    if found:
        return found.group(1)
    return RESOURCE_FAMILY.get(resource or "", "")


def bounded(text: str | None, most: int = 32) -> str | None:
    if text is None or (len(text) <= most and text.isprintable()):
        return text
    return describe(text, most)


@dataclass(slots=True)
class _Window:
    counts: dict[Kind, int] = field(default_factory=dict)
    overflow: int = 0


@dataclass(slots=True)
class _Demand:
    code: str
    rule: str | None
    family: str
    first: float  # wall clock, for the row
    last: float
    seen: float  # loop time of the last ask, for when it ends
    asks: int = 1


@dataclass(slots=True)
class _Dropped:
    """The asks of holders beyond the bound, for one node and resource in one retry window."""

    code: str
    rule: str | None
    family: str
    first: float
    last: float
    asks: int = 0
    bits: bytearray = field(default_factory=lambda: bytearray(DROPPED_BITS // 8))

    def add(self, holder: str | None, wall: float) -> None:
        self.asks += 1
        self.last = wall
        digest = blake2b((holder or "").encode("utf-8", "surrogatepass"), digest_size=4).digest()  # the same count in every run
        i = int.from_bytes(digest, "little") % DROPPED_BITS
        self.bits[i >> 3] |= 1 << (i & 7)

    def holders(self) -> tuple[int, bool]:
        """Distinct holders, estimated by linear counting (Whang, Vander-Zanden and Taylor,
        1990): n ≈ -m·ln(zero bits / m), never more than the asks. With no zero bit left the
        bitmap only says "at least m·ln m": (that, True)."""
        zeros = DROPPED_BITS - int.from_bytes(self.bits, "little").bit_count()
        if zeros == 0:
            return min(self.asks, round(DROPPED_BITS * math.log(DROPPED_BITS))), True
        return min(self.asks, round(-DROPPED_BITS * math.log(zeros / DROPPED_BITS))), False


class DenialJournal:
    def __init__(self, record: Callable[..., None], *, window_s: float = 1.0, max_kinds: int = 32, retry_s: float = RETRY_S,
                 max_node_demands: int = MAX_NODE_DEMANDS, max_demands: int = MAX_DEMANDS, max_dropped: int = MAX_DROPPED,
                 wall: Callable[[], float] = time.time) -> None:
        self.record = record
        self.window_s = window_s
        self.max_kinds = max_kinds
        self.retry_s = retry_s
        self.max_node_demands = max_node_demands
        self.max_demands = max_demands
        self.max_dropped = max_dropped
        self.wall = wall  # the clock of a demand's first and last ask, as the journal's rows have it
        self._windows: dict[str, _Window] = {}
        self._opened = 0.0
        # Open demands, the one asked longest ago first (an ask moves its demand to the end), so
        # that those over are found at the front; and how many each node has open.
        self._demands: OrderedDict[DemandKey, _Demand] = OrderedDict()
        self._node_demands: dict[str, int] = {}
        self._dropped: dict[tuple[str, str], _Dropped] = {}  # (node, resource) -> asks beyond the bound, this retry window
        self._dropped_opened = 0.0
        self.totals: dict[tuple[str, str | None], int] = {}  # (code, rule) -> denials since start, every one
        self.by_family: dict[tuple[str, str, str | None], int] = {}  # (family or "", code, rule) -> the same, by family
        self.listeners: list[Callable[[str, Denial, str | None], None]] = []  # the console's live feed

    def deny(self, node: str, denial: Denial, resource: str | None, holder: str | None, now: float) -> None:
        if now - self._opened >= self.window_s:
            self.flush(now)
        total_key = (denial.code, denial.rule)
        self.totals[total_key] = self.totals.get(total_key, 0) + 1
        family = family_of(denial.code, resource, denial.message, denial.details.get("family"))
        family_key = (family, denial.code, denial.rule)
        self.by_family[family_key] = self.by_family.get(family_key, 0) + 1
        for listener in self.listeners:
            listener(node, denial, resource)
        known = resource in KNOWN_RESOURCES
        resource = resource if known else bounded(resource)
        holder = bounded(holder, 64)
        if resource in DEMAND_RESOURCES and denial.code in FAMILY_CODES:
            assert resource is not None
            self._demand(node, resource, holder, denial, family, now)
        kind: Kind = (denial.code, denial.rule, (resource or "-") if known else "?")  # unknown names: one kind, not one each
        window = self._windows.get(node)
        if window is None:
            window = self._windows[node] = _Window()
        seen = window.counts.get(kind)
        if seen is not None:
            window.counts[kind] = seen + 1
            return
        if len(window.counts) >= self.max_kinds:
            window.overflow += 1
            return
        window.counts[kind] = 1
        self.record(DENY, node, resource, holder, None, denial.code, denial.rule, bounded(denial.message, MESSAGE_MOST))

    def _demand(self, node: str, resource: str, holder: str | None, denial: Denial, family: str, now: float) -> None:
        key = (node, resource, holder)
        demand = self._demands.get(key)
        if demand is not None:
            if now - demand.seen <= self.retry_s:  # a retry
                demand.last = self.wall()
                demand.seen = now
                demand.asks += 1
                self._demands.move_to_end(key)
                return
            self._end(key, demand)  # asked again after a pause: that demand is over, this is another
        open_here = self._node_demands.get(node, 0)
        if open_here >= self.max_node_demands or len(self._demands) >= self.max_demands:
            self._drop(node, resource, holder, denial, family)
            return
        wall = self.wall()
        self._demands[key] = _Demand(denial.code, denial.rule, family, wall, wall, now)
        self._node_demands[node] = open_here + 1

    def _end(self, key: DemandKey, demand: _Demand) -> None:
        del self._demands[key]
        node, resource, holder = key
        left = self._node_demands[node] - 1
        if left:
            self._node_demands[node] = left
        else:
            del self._node_demands[node]
        self.record(DEMAND, node, resource, holder, None,
                    demand_detail(Demand(demand.code, demand.family or None, demand.first, demand.last, demand.asks)), demand.rule)

    def _drop(self, node: str, resource: str, holder: str | None, denial: Denial, family: str) -> None:
        wall = self.wall()
        where = (node, resource) if (node, resource) in self._dropped or len(self._dropped) < self.max_dropped else ("*", "*")
        dropped = self._dropped.get(where)
        if dropped is None:
            dropped = self._dropped[where] = _Dropped(denial.code, denial.rule, family, wall, wall)
        dropped.add(holder if where[0] != "*" else f"{node}\0{holder}", wall)

    def _write_dropped(self) -> None:
        for (node, resource), dropped in self._dropped.items():
            holders, at_least = dropped.holders()
            detail = demand_detail(Demand(dropped.code, dropped.family or None, dropped.first, dropped.last, dropped.asks, holders, at_least))
            self.record(DEMAND_DROPPED, node, resource, None, None, detail, dropped.rule)
        self._dropped.clear()

    @property
    def open_demands(self) -> int:
        """Demands open now, every node's."""
        return len(self._demands)

    def tick(self, now: float) -> None:
        """Close the window if its time is up (the reaper calls this)."""
        if now - self._opened >= self.window_s:
            self.flush(now)

    def flush(self, now: float) -> None:
        """Close the window: one row per kind that repeated, with how many more times; and end
        the demands whose holders have not asked for `retry_s`, one `demand` row each (those
        still asking stay open), with the dropped holders' counts once their window is over."""
        for node, window in self._windows.items():
            for (code, rule, resource), count in window.counts.items():
                if count > 1:
                    self.record(DENY_REPEATED, node, resource, None, None, f"{code} x{count - 1}", rule)
            if window.overflow:
                self.record(DENY_REPEATED, node, "*", None, None, f"other denials x{window.overflow}", None)
        self._windows.clear()
        self._opened = now
        demands = self._demands
        while demands:
            key, demand = next(iter(demands.items()))
            if now - demand.seen <= self.retry_s:
                break
            self._end(key, demand)
        if now - self._dropped_opened >= self.retry_s:
            self._write_dropped()
            self._dropped_opened = now

    def close(self, now: float) -> None:
        """The master stops: everything counted goes to the journal, the demands still open as
        they stand (their last ask so far)."""
        self.flush(now)
        while self._demands:
            key, demand = next(iter(self._demands.items()))
            self._end(key, demand)
        self._write_dropped()
