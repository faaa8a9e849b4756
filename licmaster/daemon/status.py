"""What a master is and holds at one instant, as frozen plain data: `Master.status()` builds it once,
and every view renders it — `usage` on the wire (dispatch.py), the console's API, its live
dashboard and /metrics (licmaster/console/). None of them reads the master's insides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """One bucket: a family, version and bound MAC, with its counts; `usable` is what of it serves
    the newest firmware connected now (R-VER-2: an older license of the family caps it)."""

    family: str
    version: int | None
    bound: str | None
    installed: int
    in_use: int
    peak: int
    usable: int
    wire: dict[str, Any]  # as `usage` has always shown the bucket (its tiers included)


@dataclass(frozen=True, slots=True)
class AbsentPbx:
    """A PBX silent for a lease TTL that still holds floating leases (docs/operations.md, "Two
    clocks"): since when (wall clock), what it holds by resource, and when that goes back
    (`hold_s` after its last word) unless it speaks first."""

    node: str
    since: float
    leases: int
    held: dict[str, int]  # resource -> leases
    back_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "since": self.since, "leases": self.leases, "held": self.held, "back_at": self.back_at}


ABSENT_SHOWN = 100  # absent PBXs listed (the longest absent first); the counts cover all of them


@dataclass(frozen=True, slots=True)
class MasterStatus:
    master: str
    role: str
    epoch: int
    following: str | None  # the master a standby follows
    grace_ms: int
    listen: str | None
    advertise: str  # the address the other masters reach it at (their tie-break reads it: PeerWatch)
    http: str | None  # this master's console
    pools: tuple[PoolStatus, ...]
    sessions_by_role: dict[str, int]
    sessions_connected: int
    leases: int
    connections: int
    grants: int  # floating licenses granted by this master's pool
    denials: dict[tuple[str, str | None], int]  # by (code, rule)
    denials_by_family: dict[tuple[str, str, str | None], int]  # by (family, code, rule)
    requests: dict[str, Any]  # the batch timer: counts per bound, count, sum, requests
    journal_pending_rows: int
    journal_lag_s: float
    standbys: int
    degraded: bool
    replica: dict[str, Any]  # a standby master's replication state ({} when acting)
    coordination: dict[str, Any]
    last_reload: dict[str, Any] | None
    terms: tuple[dict[str, Any], ...]
    sites: tuple[dict[str, Any], ...]
    standby_cover: dict[str, Any]
    peers: tuple[dict[str, Any], ...]
    consoles: tuple[str, ...]
    hold_s: float = 0.0
    absent_pbxs: int = 0  # every absent PBX
    absent_leases: int = 0  # the leases they hold
    absent: tuple[AbsentPbx, ...] = ()  # the first ABSENT_SHOWN of them, longest absent first

    @property
    def sessions(self) -> int:
        return sum(self.sessions_by_role.values())

    def usage_wire(self) -> dict[str, Any]:
        """The fields of the `usage` reply (docs/protocol.md), as PBXs and tools have read them."""
        return {"pools": [p.wire for p in self.pools],
                "summary": {"nodes": self.sessions, "connected": self.sessions_connected, "by_role": self.sessions_by_role,
                            "leases": self.leases},
                "master": self.master, "advertise": self.advertise, "grace_ms": self.grace_ms, "standby_of": self.following, "role": self.role,
                "replicas": self.standbys, "replication": {"standbys": self.standbys, "in_sync": self.standbys, "degraded": self.degraded, **self.replica},
                "http": self.http, "coordination": self.coordination, "last_reload": self.last_reload, "sites": list(self.sites),
                "absent": self.absent_wire()}

    def absent_wire(self) -> dict[str, Any]:
        """The absent PBXs: how many, what they hold, and the first ABSENT_SHOWN of them."""
        return {"pbxs": self.absent_pbxs, "leases": self.absent_leases, "hold_s": self.hold_s,
                "shown": [a.to_dict() for a in self.absent]}


def coordination_without_etcd(following: str | None, standbys: int, configured: bool) -> dict[str, Any]:
    """Without etcd: who takes over from whom, as this master knows it now (no standby: nobody)."""
    if following:
        return {"mode": "two-node", "note": f"this master follows {following} and takes over "
                "when it cannot reach it (docs/operations.md)"}
    if standbys:
        return {"mode": "two-node", "note": f"{standbys} standby master(s) follow this one: the standby takes "
                "over when it cannot reach this master (docs/operations.md)"}
    if configured:
        return {"mode": "two-node", "note": "no standby master follows this one now: nothing takes over if it "
                "stops (docs/operations.md)"}
    return {"mode": "single", "note": "no standby master (standby_of, peers): nothing takes over if this master "
            "stops (docs/operations.md)"}
