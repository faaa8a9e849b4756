"""One schema for what happened: journal rows and the master-to-standby replica stream.

A journal row is a plain tuple, `FIELDS` in order (trailing fields may be left off); the hot path
appends such tuples directly, since a named tuple per grant would cost measurably. Everything
that reads a row reads it through the names here, never through a slice.

The replica stream (`replicate`, then `snapshot` and `replica` events) carries the state as
rows: a snapshot of every lease and user assignment in parts, then every journal row as it is
(the standby applies those that change state). No frame of it grows with the installation: each
is at most the standby's `max_frame` (it says it in `replicate`), however many leases there are. With
`STREAM_VERSION`: a standby that speaks another version is refused with a `version` error rather
than misreading the stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from licmaster.model.types import Node
from licmaster.wire.codec import PART_MARGIN, frame_with, packed_runs

# 2: the snapshot comes in `snapshot` events of bounded size, not in the reply; 3: each snapshot
# lease row carries what it took (its grant's label), so a master taking over adopts it as it was
STREAM_VERSION = 3

# Journal event kinds. The first six change who holds which floating license.
GRANT, CHECKIN, RELEASE, EXPIRE, BYE, TAKEOVER = "grant", "checkin", "release", "expire", "bye", "takeover"
ASSIGN, UNASSIGN = "assign", "unassign"  # user licenses: resource = family, holder = user, detail = version
DENY, DENY_REPEATED = "deny", "deny_repeated"  # deny_repeated: detail = "<code> x<count>" (daemon/denials.py)
# An unmet demand: one holder of a node refused, asking again within the retry window, from its
# first ask to its last (detail: `demand_detail`); demand_dropped: the holders of a node and
# resource beyond the bound on those tracked, counted in one row a window (daemon/denials.py).
DEMAND, DEMAND_DROPPED = "demand", "demand_dropped"
# A session began: what the PBX said of itself (detail: `hello_detail`), so that the record of an
# installation holds what a replay needs to draw licenses as the master did (firmware, platform,
# MAC, licensing mode, model, whom a standby PBX stands in for).
HELLO = "hello"
# A PBX silent for a lease TTL is absent (detail: its leases and when they go back, wall clock);
# `back` when it speaks again within its hold (detail: how long it was away, in ms).
ABSENT, BACK = "absent", "back"
REPLICA_LOST = "replica_lost"  # the last standby master following this one is gone: degraded
ABORT = "abort"  # a connection dropped for its behaviour (replies left unread): detail says why
OPERATOR = "operator"  # an operator took something back by hand: detail says what, and who
START, STOP, PROMOTE, STEP_DOWN, ROLE = "start", "stop", "promote", "step_down", "role"
RELOAD, RELOAD_REFUSED, SSA_ENDED, LICENSES_REFUSED = "reload", "reload_refused", "ssa_ended", "licenses_refused"

STATE_EVENTS = frozenset({GRANT, CHECKIN, RELEASE, EXPIRE, BYE, TAKEOVER})
KINDS = frozenset({GRANT, CHECKIN, RELEASE, EXPIRE, BYE, TAKEOVER, ASSIGN, UNASSIGN, DENY, DENY_REPEATED, DEMAND, DEMAND_DROPPED,
                   HELLO, ABSENT, BACK, REPLICA_LOST, ABORT, OPERATOR,
                   START, STOP, PROMOTE, STEP_DOWN, ROLE, RELOAD, RELOAD_REFUSED, SSA_ENDED, LICENSES_REFUSED})  # every event a journal holds
REPLICATED = STATE_EVENTS | {ASSIGN, UNASSIGN}

# `note`: words for a person, e.g. a denial's message (which MAC an IPVA license is bound to);
# rows journaled before it existed have eight fields and read it as None.
FIELDS = ("ts", "event", "node", "resource", "holder", "lease", "detail", "rule", "note")
TS, EVENT, NODE, RESOURCE, HOLDER, LEASE, DETAIL, RULE, NOTE = range(len(FIELDS))
Row = tuple[Any, ...]
_PAD: tuple[None, ...] = (None,) * len(FIELDS)


class Change(NamedTuple):
    """A state-changing event, as recovery and the replica stream read it."""

    event: str
    node: str | None
    resource: str | None
    holder: str | None
    lease: str | None
    detail: str | None


REPLICA_FIELDS = Change._fields


class Demand(NamedTuple):
    """What a `demand` or `demand_dropped` row's detail says. Times are epoch seconds (wall
    clock), to the millisecond; the row's own `ts` is when it was written, after the last ask."""

    code: str  # the refusal's code, at the first ask
    family: str | None  # the catalog family it was about, None when the refusal named none
    first: float  # the first ask
    last: float  # the last ask (a demand_dropped row: the first and last of its window)
    asks: int  # refused requests, retries included
    holders: int | None = None  # demand_dropped: how many distinct holders (estimated, see daemon/denials.py); else None
    at_least: bool = False  # demand_dropped: more holders than the estimate can tell; `holders` is a lower bound


def demand_detail(demand: Demand) -> str:
    """A Demand as a row's detail: `exhausted family=PBX-Port first=1700000000.123456
    last=1700000003.456789 asks=50`, and `holders=<n>` (`<n>+`: at least) on a demand_dropped row.
    To the microsecond: a replay (console/whatif.py) places each refused ask among the journal's
    rows by its time, and a millisecond holds many of them."""
    holders = "" if demand.holders is None else f" holders={demand.holders}{'+' if demand.at_least else ''}"
    return (f"{demand.code} family={demand.family or '-'}{holders} first={demand.first:.6f} last={demand.last:.6f}"
            f" asks={demand.asks}")


def read_demand(detail: Any) -> Demand | None:
    """A `demand` or `demand_dropped` row's detail, read back (None if it is not one)."""
    if not isinstance(detail, str):
        return None
    code, *pairs = detail.split(" ")
    fields: dict[str, str] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        fields[key] = value
    try:
        holders = fields.get("holders")
        return Demand(code, None if fields.get("family", "-") == "-" else fields["family"], float(fields["first"]),
                      float(fields["last"]), int(fields["asks"]), None if holders is None else int(holders.rstrip("+")),
                      holders is not None and holders.endswith("+"))
    except (KeyError, ValueError):
        return None


# Events whose detail is a bare count, and what it counts: kept bare (code parses it), printed
# with its unit. A bye or expire counts the leases the session gave back.
COUNTED = {BYE: ("lease", "leases"), EXPIRE: ("lease", "leases")}


def detail_text(event: str, detail: Any) -> str | None:
    """A row's detail as a person reads it: `28 leases` for a bye's `28`, `V13` for a user
    license's version, `exhausted, 3 more refusals` for `exhausted x3`, `exhausted (PBX-Port),
    12 asks over 3.4 s from 2025-11-24T09:00:01.120Z` for a demand; else as stored."""
    if detail is None:
        return None
    text = str(detail)
    counted = COUNTED.get(event)
    if counted is not None and text.isascii() and text.isdigit():
        return f"{int(text)} {counted[0] if int(text) == 1 else counted[1]}"
    if event in (ASSIGN, UNASSIGN) and text.isascii() and text.isdigit():
        return f"V{text}"
    if event == DENY_REPEATED:
        code, _, times = text.rpartition(" x")
        if code and times.isascii() and times.isdigit():
            return f"{code}, {times} more refusal{'' if times == '1' else 's'}"
    if event in (DEMAND, DEMAND_DROPPED):
        demand = read_demand(text)
        if demand is not None:
            about = f"{demand.code}{' (' + demand.family + ')' if demand.family else ''}"
            asks = f"{demand.asks} ask{'' if demand.asks == 1 else 's'}"
            asked = (f"{asks} at {_utc(demand.first)}" if demand.last == demand.first
                     else f"{asks} over {demand.last - demand.first:.1f} s from {_utc(demand.first)}")
            if event == DEMAND:
                return f"{about}, {asked}"
            holders = f"{'at least ' if demand.at_least else ''}{demand.holders} more holder{'' if demand.holders == 1 else 's'}"
            return f"{about}, {holders} not named, {asked}"
    return text


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def full(row: Row) -> Row:
    """The row with every field, missing trailing ones as None."""
    return row + _PAD[len(row):]


def as_dict(row: Row) -> dict[str, Any]:
    return dict(zip(FIELDS, full(row), strict=True))


def change_of(row: Row) -> Change:
    r = full(row)
    return Change(r[EVENT], r[NODE], r[RESOURCE], r[HOLDER], r[LEASE], r[DETAIL])


class StreamError(ValueError):
    """A replica stream this standby cannot read."""


def replica_rows(event: dict[str, Any]) -> list[Any]:
    """A `replica` event's rows as they came, not yet checked (`replica_change` checks one;
    the standby's Holdings.apply_rows checks each as it applies it); StreamError if the event's version is not
    this one's or it carries no list of rows.

    Its `rows` are journal rows as they are (FIELDS, trailing fields may be left off), every row
    of the master's push: packed without a copy or a choice per row, since every grant is pushed
    to the standby before it is answered (daemon/ha/feed.py). (marshal, which the journal writes,
    packs them at half the cost; but it allocates what a few bytes claim before reading them, so
    a standby would trust its master with its memory.)"""
    version = event.get("v")
    if version != STREAM_VERSION:
        raise StreamError(f"replica stream version {str(version)[:16]}, this master reads {STREAM_VERSION}")
    rows = event.get("rows")
    if not isinstance(rows, list):
        raise StreamError("replica event without rows")
    return rows


def replica_change(row: Any) -> Change | None:
    """One row of a push, checked: its Change if it changes what a standby keeps, None if it
    does not (a denial, a hello); StreamError if it is not a journal row. Exact classes, as
    decoding gives them: a list or tuple row of 6 to 9 fields, str or None after its timestamp
    (subclasses are refused)."""
    if not (row.__class__ is list or row.__class__ is tuple) or not 6 <= len(row) <= len(FIELDS) \
            or not _TEXT.issuperset(map(type, row[EVENT:])):
        raise StreamError(f"replica row is not a journal row: {str(row)[:80]}")
    if row[EVENT] not in REPLICATED:
        return None
    return tuple.__new__(Change, row[EVENT:DETAIL + 1] if len(row) > DETAIL else (*row[EVENT:], None))


_TEXT = frozenset({str, type(None)})  # what a row's fields after its timestamp may be
_REPLICA_HEAD: dict[str, Any] = {"event": "replica", "v": STREAM_VERSION}


def replica_push(runs: list[bytes], seq: int) -> list[bytes]:
    """A push of synchronous replication as `replica` events, one per run of rows already packed
    (MessagePack arrays, each small enough for the standby's frames), the last carrying `seq`;
    one with no rows if there are none."""
    runs = runs or [b"\x90"]  # an empty array
    last = len(runs) - 1
    return [frame_with(_REPLICA_HEAD if i < last else {**_REPLICA_HEAD, "seq": seq}, "rows", packed) for i, packed in enumerate(runs)]


LeaseRow = Sequence[Any]  # [node, resource, holder, lease, label]
AssignmentRow = Sequence[Any]  # [user, family, version or None, node]


def snapshot_frames(leases: Sequence[LeaseRow], assignments: Sequence[AssignmentRow], max_frame: int) -> list[bytes]:
    """Every lease and assignment as `snapshot` events: `part` 0 to `parts` - 1, in order, each
    holding `leases` or `assignments` rows, each frame at most `max_frame` bytes. There is always
    a part 0, so that an empty master's standby also knows when it has the whole."""
    limit = max_frame - PART_MARGIN
    runs = [("leases", packed) for _, packed in packed_runs(leases, limit)]
    runs += [("assignments", packed) for _, packed in packed_runs(assignments, limit)]
    if not runs:
        runs = [("leases", b"\x90")]  # an empty array
    parts = len(runs)
    return [frame_with({"event": "snapshot", "v": STREAM_VERSION, "part": i, "parts": parts}, key, packed)
            for i, (key, packed) in enumerate(runs)]


class Snapshot:
    """The standby's side: a snapshot's parts as they come, in order; `done` once it has the whole.
    A part out of order, of another version or shape raises StreamError (the standby asks again)."""

    def __init__(self) -> None:
        self.leases: list[LeaseRow] = []
        self.assignments: list[AssignmentRow] = []
        self.parts: int | None = None
        self.received = 0

    @property
    def done(self) -> bool:
        return self.parts is not None and self.received == self.parts

    def add(self, event: dict[str, Any]) -> None:
        if event.get("v") != STREAM_VERSION:
            raise StreamError(f"snapshot version {str(event.get('v'))[:16]}, this master reads {STREAM_VERSION}")
        part, parts = event.get("part"), event.get("parts")
        if part != self.received or not isinstance(parts, int) or (self.parts is not None and parts != self.parts):
            raise StreamError(f"snapshot part {str(part)[:16]} of {str(parts)[:16]} where part {self.received} was due")
        self.parts = parts
        for key, width, into in (("leases", 5, self.leases), ("assignments", 4, self.assignments)):
            rows = event.get(key, [])
            if not isinstance(rows, list) or any(not isinstance(r, list) or len(r) != width for r in rows):
                raise StreamError(f"snapshot part {part}: {key} is not a list of {width}-field rows")
            into.extend(rows)
        self.received += 1


_NODE_FIELDS = ("role", "firmware", "platform", "mac", "licensing", "model", "standby_for")


def hello_detail(node: Node) -> str:
    """A `hello` row's detail: what the node said of itself, as compact JSON (fields left at
    nothing are left out)."""
    said = {name: getattr(node, name) for name in _NODE_FIELDS if getattr(node, name) is not None}
    return json.dumps(said, separators=(",", ":"), sort_keys=True)


def read_hello(name: str, detail: Any) -> Node | None:
    """The node a `hello` row records, read back (None if the detail is not one)."""
    try:
        said = json.loads(detail) if isinstance(detail, str) else None
    except ValueError:
        return None
    if not isinstance(said, dict) or not set(said) <= set(_NODE_FIELDS):
        return None
    try:
        return Node(name, **said)
    except TypeError:
        return None
