"""A small etcd v3 client over etcd's JSON gateway (`/v3/...`), on aiohttp.

Why the gateway and not a gRPC client: the master needs five calls (grant, keep alive, revoke a
lease; a create-if-absent transaction; a read), all request/response; the gateway is part of
every etcd 3.4 member, speaks JSON over HTTP, and aiohttp is already the console's library. A
gRPC client (aetcd) would bring grpcio and protobuf for those five calls.

Keys and values travel base64-encoded, numbers as strings, as the gateway wants them. Every call
tries the endpoints in turn and raises `EtcdUnavailable` when none answers in time.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp


class EtcdUnavailable(ConnectionError):
    """No endpoint answered (down, cut off, or its cluster without quorum)."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass(frozen=True, slots=True)
class KeyValue:
    value: str
    create_revision: int
    mod_revision: int
    lease: int


class EtcdClient(Protocol):
    """What leadership asks of etcd: the seam a model of etcd stands in at (licmaster/testing/
    etcd_model.py; a deterministic simulation). Every call raises EtcdUnavailable when no member
    answers."""

    async def grant(self, ttl_s: int) -> tuple[int, int]: ...

    async def keep_alive(self, lease: int) -> int: ...

    async def revoke(self, lease: int) -> None: ...

    async def create(self, key: str, value: str, lease: int, *,
                     also: tuple[str, str, int] | None = None) -> tuple[bool, int, KeyValue | None]: ...

    async def put_if_held(self, key: str, value: str, holder_key: str, holder_revision: int) -> bool: ...

    async def get(self, key: str) -> KeyValue | None: ...

    async def close(self) -> None: ...


class Etcd:
    """The real client, over the JSON gateway of the members at `endpoints`."""

    def __init__(self, endpoints: Sequence[str], *, timeout_s: float = 1.0) -> None:
        self.endpoints = [e if "://" in e else f"http://{e}" for e in endpoints]
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._preferred = 0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        last: Exception | None = None
        for i in range(len(self.endpoints)):
            index = (self._preferred + i) % len(self.endpoints)
            try:
                async with self._session.post(self.endpoints[index] + path, data=json.dumps(body)) as response:
                    text = await response.text()
                    if response.status != 200:
                        raise EtcdUnavailable(f"{self.endpoints[index]}{path}: HTTP {response.status}: {text[:200]}")
                    self._preferred = index
                    doc: dict[str, Any] = json.loads(text)
                    if "error" in doc:  # the gateway reports gRPC errors (e.g. no leader) this way
                        raise EtcdUnavailable(f"{self.endpoints[index]}{path}: {doc.get('message') or doc['error']}")
                    return doc
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                last = exc
        raise EtcdUnavailable(f"no etcd endpoint answered ({', '.join(self.endpoints)}): {last}")

    async def grant(self, ttl_s: int) -> tuple[int, int]:
        """A new lease: (its id, the TTL etcd gave it)."""
        doc = await self._post("/v3/lease/grant", {"TTL": ttl_s})
        return int(doc["ID"]), int(doc["TTL"])

    async def keep_alive(self, lease: int) -> int:
        """The TTL left after renewing; 0 when the lease is gone (expired or revoked)."""
        doc = await self._post("/v3/lease/keepalive", {"ID": str(lease)})
        return int(doc.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        await self._post("/v3/lease/revoke", {"ID": str(lease)})

    async def create(self, key: str, value: str, lease: int, *,
                     also: tuple[str, str, int] | None = None) -> tuple[bool, int, KeyValue | None]:
        """Put `key` only if it does not exist: (created, the revision, the holder's key if not).
        `also` = (key, value, mod_revision): in the same transaction, put that key too, and only
        if it was last written at that revision (0: absent) — the in-sync record (leadership.py)."""
        k = _b64(key)
        compare: list[dict[str, Any]] = [{"key": k, "target": "CREATE", "create_revision": "0"}]
        success: list[dict[str, Any]] = [{"request_put": {"key": k, "value": _b64(value), "lease": str(lease)}}]
        if also is not None:
            other, other_value, revision = also
            compare.append({"key": _b64(other), "target": "MOD", "mod_revision": str(revision)})
            success.append({"request_put": {"key": _b64(other), "value": _b64(other_value)}})
        doc = await self._post("/v3/kv/txn", {"compare": compare, "success": success,
                                              "failure": [{"request_range": {"key": k}}]})
        revision = int(doc["header"]["revision"])
        if doc.get("succeeded"):
            return True, revision, None
        kvs = doc.get("responses", [{}])[0].get("response_range", {}).get("kvs", [])
        return False, revision, _kv(kvs[0]) if kvs else None

    async def put_if_held(self, key: str, value: str, holder_key: str, holder_revision: int) -> bool:
        """Put `key` only while `holder_key` is the one created at `holder_revision` (this
        master's leadership, its epoch): a deposed leader writes nothing."""
        doc = await self._post("/v3/kv/txn", {
            "compare": [{"key": _b64(holder_key), "target": "CREATE", "create_revision": str(holder_revision)}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}], "failure": []})
        return bool(doc.get("succeeded"))

    async def get(self, key: str) -> KeyValue | None:
        doc = await self._post("/v3/kv/range", {"key": _b64(key)})
        kvs = doc.get("kvs", [])
        return _kv(kvs[0]) if kvs else None


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(base64.b64decode(raw.get("value", "")).decode(), int(raw.get("create_revision", 0)),
                    int(raw.get("mod_revision", 0)), int(raw.get("lease", 0)))
