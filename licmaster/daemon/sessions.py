"""Sessions, and the one way a session ends.

A session is a node's, not a connection's: it outlives a dropped connection until the node says
`bye`, says hello afresh (holding nothing), stays silent past its hold, is taken over by its
standby, is fenced by an operator, or the master steps down or shuts down. Silent for a lease
TTL, a session holding leases is *absent* (`Sessions.absent`): it keeps them, counted and given
to nobody else, until `hold_s` after its last word (docs/operations.md, "Two clocks"). Each of those ends it through `Sessions.end`, which releases
(or not), journals, forgets and closes in one place; what differs between them is data (ENDINGS).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from licmaster.daemon import logs
from licmaster.model.leases import Lease
from licmaster.model.pool import Pool
from licmaster.model.types import Node
from licmaster.wire import events


class Endpoint(Protocol):
    """What a session needs of its connection (daemon/protocol.py's Connection)."""

    session: Session | None
    closing: bool
    stalled_since: float | None  # its replies piled up unread since then: its reading stopped

    @property
    def open(self) -> bool: ...
    def close(self, event: dict[str, Any] | None = None) -> None: ...
    def send_event(self, event: dict[str, Any]) -> None: ...
    def send_frames(self, frames: bytes) -> None: ...
    def send_replies(self, replies: list[Any]) -> None: ...


class Session:
    """A node's session: it outlives its connection until it ends (see End)."""

    __slots__ = ("absent_since", "conn", "id", "info", "last_seen", "node", "since", "sync_parts")

    def __init__(self, node: str, session_id: str, conn: Endpoint | None, now: float, info: Node) -> None:
        self.node = node
        self.id = session_id
        self.conn: Endpoint | None = conn
        self.last_seen = now
        self.info = info
        self.since = now
        self.sync_parts: list[Any] = []  # entries of a sync in parts (`more`), until its last part
        self.absent_since: float | None = None  # loop time it went absent (silent for a lease TTL), while it is


class End(enum.Enum):
    BYE = "bye"  # the node said goodbye: its reply goes out, then the connection closes
    EXPIRE = "expire"  # nothing heard within its hold (or, holding nothing, within a lease TTL)
    TAKEOVER = "takeover"  # its standby took its leases over
    FENCE = "fence"  # an operator released it
    STEP_DOWN = "step_down"  # this master gives way to a newer one
    SHUTDOWN = "shutdown"  # this master stops


@dataclass(frozen=True, slots=True)
class Ending:
    release: bool  # its floating leases go back to the pool
    journal: str | None  # the event recorded (TAKEOVER is recorded by the op, with both nodes)
    level: int = logging.INFO


ENDINGS: dict[End, Ending] = {
    End.BYE: Ending(release=True, journal=events.BYE),
    End.EXPIRE: Ending(release=True, journal=events.EXPIRE, level=logging.WARNING),
    End.TAKEOVER: Ending(release=False, journal=None),  # the leases moved to the standby
    End.FENCE: Ending(release=True, journal=events.BYE, level=logging.WARNING),
    End.STEP_DOWN: Ending(release=True, journal=events.BYE, level=logging.WARNING),
    # Leases stay recorded as held: the next run's grace window lets the PBXs re-take them.
    End.SHUTDOWN: Ending(release=False, journal=None),
}

Record = Callable[..., None]  # Master.record(event, node, resource, holder, lease, detail, rule)


class Sessions:
    def __init__(self, pool: Pool, record: Record, on_end: Callable[[str], None] | None = None) -> None:
        self.pool = pool  # replaced with the master's pool at start and at promote
        self.record = record
        self.on_end = on_end  # e.g. forget what a node held before a restart
        self.by_node: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self.by_node)

    def get(self, node: str) -> Session | None:
        return self.by_node.get(node)

    def end(self, session: Session, why: End, *, event: dict[str, Any] | None = None, detail: str | None = None,
            **log_fields: Any) -> list[Lease]:
        """End a session: release its leases (or not), journal, forget it, close its connection
        (after `event`, if given; for BYE after the reply to the bye). Returns what was released."""
        ending = ENDINGS[why]
        node = session.node
        released = self.pool.release_node(node) if ending.release else []
        if ending.journal is not None:
            self.record(ending.journal, node, detail=detail if detail is not None else str(len(released)))
        if self.by_node.get(node) is session:
            del self.by_node[node]
            self.pool.forget_node(node)
        if self.on_end is not None:
            self.on_end(node)
        conn, session.conn = session.conn, None
        if conn is not None:
            conn.session = None
            if why is End.BYE:
                conn.closing = True  # the protocol closes it once the bye's reply is written
            else:
                conn.close(event)
        logs.event(f"session_{why.value}", ending.level, node=node, released=len(released), **log_fields)
        return released

    def absent(self, session: Session, now: float, hold_s: float, wall: float) -> None:
        """Silent for a lease TTL while holding leases: absent. It keeps them until `hold_s`
        after its last word; its connection, if one is left (a path gone quiet), is closed, so
        that the PBX's next word comes on a new one, with a hello and a re-sync."""
        session.absent_since = now
        node = session.node
        leases = self.pool.node_leases(node)
        back_at = held_until(session, hold_s, now, wall)
        self.record(events.ABSENT, node, detail=f"{len(leases)} leases held until {_iso(back_at)}")
        conn, session.conn = session.conn, None
        if conn is not None:
            conn.session = None
            conn.close({"event": "fenced", "reason": f"absent: nothing heard within lease_ttl_ms; its leases are held until {_iso(back_at)}"})
        logs.event("session_absent", logging.WARNING, node=node, leases=len(leases), held_until=_iso(back_at))

    def adopt(self, node: str, now: float, hold_s: float, wall: float) -> Session:
        """A node whose leases this master adopted (a takeover, a restart): absent from now, as
        if its last word were now (its PBX heard its last confirmation earlier, so its belief
        ends before this hold does)."""
        session = self.by_node.get(node)
        if session is None:
            session = self.by_node[node] = Session(node, "", None, now, Node(node))
            session.absent_since = now
            self.record(events.ABSENT, node, detail=f"{len(self.pool.node_leases(node))} leases adopted, held until "
                        f"{_iso(wall + hold_s)}")
        return session

    def back(self, session: Session, now: float) -> None:
        """An absent session's PBX spoke again (a hello), within its hold: nothing was lost."""
        if session.absent_since is None:
            return
        away_ms = int((now - session.absent_since) * 1000)
        session.absent_since = None
        self.record(events.BACK, session.node, detail=str(away_ms))
        logs.event("session_back", node=session.node, away_ms=away_ms)

    def absent_sessions(self) -> list[Session]:
        return [s for s in self.by_node.values() if s.absent_since is not None]

    def end_all(self, why: End, *, event: dict[str, Any] | None = None, detail: str | None = None) -> None:
        for session in list(self.by_node.values()):
            self.end(session, why, event=event, detail=detail)


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def held_until(session: Session, hold_s: float, now: float, wall: float) -> float:
    """When an absent session's leases go back (wall clock): `hold_s` after its last word."""
    return wall + (session.last_seen + hold_s - now)
