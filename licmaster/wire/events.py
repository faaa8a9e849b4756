"""One schema for what happened: journal rows and the master-to-standby replica stream.

A journal row is a plain tuple, `FIELDS` in order (trailing fields may be left off); the hot path
appends such tuples directly, since a named tuple per grant would cost measurably. Everything
that reads a row reads it through the names here, never through a slice.

The replica stream (`replicate`, then `replica` events) carries the state-changing rows as
`REPLICA_FIELDS` lists, with `STREAM_VERSION`: a standby that speaks another version is refused
with a `version` error rather than misreading the stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

STREAM_VERSION = 1

# Journal event kinds. The first six change who holds which floating license.
GRANT, CHECKIN, RELEASE, EXPIRE, BYE, TAKEOVER = "grant", "checkin", "release", "expire", "bye", "takeover"
ASSIGN, UNASSIGN = "assign", "unassign"  # user licenses: resource = family, holder = user, detail = version
DENY, DENY_REPEATED = "deny", "deny_repeated"  # deny_repeated: detail = "<code> x<count>" (daemon/denials.py)
REPLICA_LOST = "replica_lost"  # the last standby master following this one is gone: degraded
ABORT = "abort"  # a connection dropped for its behaviour (replies left unread): detail says why
START, STOP, PROMOTE, STEP_DOWN, ROLE = "start", "stop", "promote", "step_down", "role"
RELOAD, RELOAD_REFUSED, SSA_ENDED, LICENSES_REFUSED = "reload", "reload_refused", "ssa_ended", "licenses_refused"

STATE_EVENTS = frozenset({GRANT, CHECKIN, RELEASE, EXPIRE, BYE, TAKEOVER})
REPLICATED = STATE_EVENTS | {ASSIGN, UNASSIGN}

FIELDS = ("ts", "event", "node", "resource", "holder", "lease", "detail", "rule")
TS, EVENT, NODE, RESOURCE, HOLDER, LEASE, DETAIL, RULE = range(len(FIELDS))
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


def full(row: Row) -> Row:
    """The row with every field, missing trailing ones as None."""
    return row + _PAD[len(row):]


def as_dict(row: Row) -> dict[str, Any]:
    return dict(zip(FIELDS, full(row), strict=True))


def change_of(row: Row) -> Change:
    r = full(row)
    return Change(r[EVENT], r[NODE], r[RESOURCE], r[HOLDER], r[LEASE], r[DETAIL])


def replica_rows(batch: Iterable[Row]) -> list[list[Any]]:
    """The state changes of a journal batch, as the replica event carries them."""
    return [list(change_of(row)) for row in batch if row[EVENT] in REPLICATED]


class StreamError(ValueError):
    """A replica stream this standby cannot read."""


def read_replica(event: dict[str, Any]) -> list[Change]:
    """The changes of a `replica` event; StreamError if its version or shape is not this one's."""
    version = event.get("v")
    if version != STREAM_VERSION:
        raise StreamError(f"replica stream version {str(version)[:16]}, this master reads {STREAM_VERSION}")
    rows = event.get("rows")
    if not isinstance(rows, list):
        raise StreamError("replica event without rows")
    out = []
    for row in rows:
        if not isinstance(row, list) or len(row) != len(REPLICA_FIELDS):
            raise StreamError(f"replica row is not {len(REPLICA_FIELDS)} fields: {str(row)[:80]}")
        out.append(Change(*row))
    return out


def replica_event(batch: Sequence[Row]) -> dict[str, Any] | None:
    rows = replica_rows(batch)
    return {"event": "replica", "v": STREAM_VERSION, "rows": rows} if rows else None
