"""A model of etcd's leases and keys, in memory, on the event loop's clock: what leadership asks of
etcd (daemon/ha/etcd.py, EtcdClient), without a member process. For tests of leadership, and the
ground a deterministic simulation stands on (the real etcd stays in the tests and in `slave-sim
chaos`).

What it models: one revision counter that every write raises; leases with a TTL, renewed by
keep_alive and gone (with the keys they hold) once their TTL has run out on the loop's clock;
create-if-absent; a quorum that can be lost (`up = False`: every call raises EtcdUnavailable, and
no lease is renewed meanwhile, as with a real cluster without quorum).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence

from licmaster.daemon.ha.etcd import EtcdUnavailable, KeyValue


class EtcdModel:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock or (lambda: asyncio.get_running_loop().time())
        self.up = True
        self.revision = 1
        self._lease_ids = itertools.count(0x1000)
        self.leases: dict[int, tuple[int, float]] = {}  # id -> (ttl, expires at, loop time)
        self.keys: dict[str, KeyValue] = {}

    def client(self, endpoints: Sequence[str] = ()) -> ModelClient:
        """A client of this cluster (what Master's `etcd_client` seam calls with its endpoints)."""
        return ModelClient(self)

    def _now(self) -> float:
        """Check the quorum, and let the leases whose time is over go, with their keys."""
        if not self.up:
            raise EtcdUnavailable("the model's quorum is lost")
        now = self.clock()
        for lease in [lease for lease, (_, until) in self.leases.items() if until <= now]:
            del self.leases[lease]
            self.keys = {key: kv for key, kv in self.keys.items() if kv.lease != lease}
        return now


class ModelClient:
    """One master's client of the model (EtcdClient)."""

    def __init__(self, model: EtcdModel) -> None:
        self.model = model

    async def grant(self, ttl_s: int) -> tuple[int, int]:
        now = self.model._now()
        lease = next(self.model._lease_ids)
        self.model.leases[lease] = (ttl_s, now + ttl_s)
        self.model.revision += 1
        return lease, ttl_s

    async def keep_alive(self, lease: int) -> int:
        now = self.model._now()
        held = self.model.leases.get(lease)
        if held is None:
            return 0
        self.model.leases[lease] = (held[0], now + held[0])
        return held[0]

    async def revoke(self, lease: int) -> None:
        self.model._now()
        if self.model.leases.pop(lease, None) is not None:
            self.model.keys = {key: kv for key, kv in self.model.keys.items() if kv.lease != lease}
            self.model.revision += 1

    async def create(self, key: str, value: str, lease: int, *,
                     also: tuple[str, str, int] | None = None) -> tuple[bool, int, KeyValue | None]:
        self.model._now()
        held = self.model.keys.get(key)
        other = self.model.keys.get(also[0]) if also is not None else None
        if held is not None or (also is not None and (other.mod_revision if other else 0) != also[2]):
            return False, self.model.revision, held
        if lease not in self.model.leases:
            raise EtcdUnavailable(f"lease {lease:x} not found")  # as the gateway's error for a lease gone
        self.model.revision += 1
        self.model.keys[key] = KeyValue(value, self.model.revision, self.model.revision, lease)
        if also is not None:
            self.model.keys[also[0]] = KeyValue(also[1], other.create_revision if other else self.model.revision,
                                                self.model.revision, 0)
        return True, self.model.revision, None

    async def put_if_held(self, key: str, value: str, holder_key: str, holder_revision: int) -> bool:
        self.model._now()
        holder = self.model.keys.get(holder_key)
        if holder is None or holder.create_revision != holder_revision:
            return False
        self.model.revision += 1
        old = self.model.keys.get(key)
        self.model.keys[key] = KeyValue(value, old.create_revision if old else self.model.revision, self.model.revision, 0)
        return True

    async def get(self, key: str) -> KeyValue | None:
        self.model._now()
        return self.model.keys.get(key)

    async def close(self) -> None:
        return None
