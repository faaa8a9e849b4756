"""A model of etcd's leases and keys, in memory, on the event loop's clock: what leadership asks of
etcd (daemon/ha/etcd.py, EtcdClient), without a member process. For tests of leadership, and the
ground a deterministic simulation stands on (the real etcd stays in the tests and in `slave-sim
chaos`).

What it models: one revision counter that every write raises; leases with a TTL, renewed by
keep_alive and gone (with the keys they hold) once their TTL has run out on the loop's clock;
create-if-absent; a quorum that can be lost (`up = False`: every call raises EtcdUnavailable, and
no lease is renewed meanwhile, as with a real cluster without quorum); a client cut from the
cluster one way or both (`cut`): a request that cannot get there does nothing, one whose answer
cannot come back does its work; either way the client hears EtcdUnavailable once its timeout
(the real client's 1 s) has run.
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
        self.cut: set[tuple[str, str]] = set()  # (from, to), a client's host and CLUSTER: that way is cut
        self.timeout_s = 1.0

    def client(self, endpoints: Sequence[str] = (), *, host: str = "") -> ModelClient:
        """A client of this cluster (what Master's `etcd_client` seam calls with its endpoints),
        from `host` (what `cut` names)."""
        return ModelClient(self, host)

    def _now(self) -> float:
        """Check the quorum, and let the leases whose time is over go, with their keys."""
        if not self.up:
            raise EtcdUnavailable("the model's quorum is lost")
        now = self.clock()
        for lease in [lease for lease, (_, until) in self.leases.items() if until <= now]:
            del self.leases[lease]
            self.keys = {key: kv for key, kv in self.keys.items() if kv.lease != lease}
        return now


CLUSTER = "etcd"  # the cluster's side of a cut


class ModelClient:
    """One master's client of the model (EtcdClient)."""

    def __init__(self, model: EtcdModel, host: str = "") -> None:
        self.model, self.host = model, host

    async def _there(self) -> float:
        """The request reaches the cluster (or times out): the cluster's clock."""
        if (self.host, CLUSTER) in self.model.cut:
            await asyncio.sleep(self.model.timeout_s)
            raise EtcdUnavailable("the model's cluster is cut from this client")
        return self.model._now()

    async def _back(self) -> None:
        """The answer comes back (or times out, the work done)."""
        if (CLUSTER, self.host) in self.model.cut:
            await asyncio.sleep(self.model.timeout_s)
            raise EtcdUnavailable("the model's answer is cut from this client")

    async def grant(self, ttl_s: int) -> tuple[int, int]:
        now = await self._there()
        lease = next(self.model._lease_ids)
        self.model.leases[lease] = (ttl_s, now + ttl_s)
        self.model.revision += 1
        await self._back()
        return lease, ttl_s

    async def keep_alive(self, lease: int) -> int:
        now = await self._there()
        held = self.model.leases.get(lease)
        if held is not None:
            self.model.leases[lease] = (held[0], now + held[0])
        await self._back()
        return held[0] if held is not None else 0

    async def revoke(self, lease: int) -> None:
        await self._there()
        if self.model.leases.pop(lease, None) is not None:
            self.model.keys = {key: kv for key, kv in self.model.keys.items() if kv.lease != lease}
            self.model.revision += 1
        await self._back()

    async def create(self, key: str, value: str, lease: int, *,
                     also: tuple[str, str, int] | None = None) -> tuple[bool, int, KeyValue | None]:
        await self._there()
        held = self.model.keys.get(key)
        other = self.model.keys.get(also[0]) if also is not None else None
        if held is not None or (also is not None and (other.mod_revision if other else 0) != also[2]):
            await self._back()
            return False, self.model.revision, held
        if lease not in self.model.leases:
            await self._back()
            raise EtcdUnavailable(f"lease {lease:x} not found")  # as the gateway's error for a lease gone
        self.model.revision += 1
        self.model.keys[key] = KeyValue(value, self.model.revision, self.model.revision, lease)
        if also is not None:
            self.model.keys[also[0]] = KeyValue(also[1], other.create_revision if other else self.model.revision,
                                                self.model.revision, 0)
        revision = self.model.revision
        await self._back()
        return True, revision, None

    async def put_if_held(self, key: str, value: str, holder_key: str, holder_revision: int) -> bool:
        await self._there()
        holder = self.model.keys.get(holder_key)
        if holder is None or holder.create_revision != holder_revision:
            await self._back()
            return False
        self.model.revision += 1
        old = self.model.keys.get(key)
        self.model.keys[key] = KeyValue(value, old.create_revision if old else self.model.revision, self.model.revision, 0)
        await self._back()
        return True

    async def get(self, key: str) -> KeyValue | None:
        await self._there()
        kv = self.model.keys.get(key)
        await self._back()
        return kv

    async def close(self) -> None:
        return None
