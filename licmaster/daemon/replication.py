"""The standby master's side of replication: follow the master, take over when it is gone.

The standby connects to the master as an observer and asks `replicate`: the answer is a snapshot
(every floating lease, every user assignment, the master's epoch), then the master sends the
state-changing events of each journal batch as `{"event": "replica", "rows": [...]}`. The
standby mirrors user assignments into its own SQLite store as they come (they are durable there
too) and keeps the floating leases as `Holdings`. When the master has been unreachable for
`takeover_after_ms`, the standby takes over (`Master.promote`): a higher epoch, the mirrored
assignments, and a grace window in which only what the PBXs held may be re-taken.

Replication is asynchronous (up to one journal flush behind): a grant made in the master's last
moments may be unknown to the standby. It is never counted twice: the PBX's re-sync asks for it
during grace, is told `grace`, and gets it after grace if there is room (docs/operations.md).

The stream's shape is wire/events.py's, with its version: a standby asks `replicate` with the
version it reads, and a master of another version refuses with `version`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from licmaster.client import LicenseError, MasterClient
from licmaster.daemon import logs
from licmaster.daemon.recovery import Holdings
from licmaster.wire import events
from licmaster.wire.events import (
    ASSIGN,
    GRANT,
    STREAM_VERSION,
    UNASSIGN,
    Row,
    StreamError,
)

if TYPE_CHECKING:
    from licmaster.daemon.sessions import Endpoint
    from licmaster.daemon.store import Store


class ReplicaFeed:
    """The master's side: the standby masters following this one, and each journal batch's state
    changes sent to them before the batch is written."""

    def __init__(self, on_change: Callable[[int, str], None] | None = None) -> None:
        self._replicas: set[Endpoint] = set()
        self.had_standby = False  # once a standby followed, its absence is a degraded state
        self.on_change = on_change  # (standbys now, why): the master logs and journals it

    def __len__(self) -> int:
        return len(self._replicas)

    @property
    def degraded(self) -> bool:
        """A standby followed this master and none does now: a failover would find nobody."""
        return self.had_standby and not self._replicas

    def attach(self, conn: Endpoint) -> None:
        self._replicas.add(conn)
        self.had_standby = True
        if self.on_change is not None:
            self.on_change(len(self._replicas), "a standby master attached")

    def detach(self, conn: Endpoint) -> None:
        if conn in self._replicas:
            self._replicas.discard(conn)
            if self.on_change is not None:
                self.on_change(len(self._replicas), "a standby master's connection was lost")

    def __contains__(self, conn: object) -> bool:
        return conn in self._replicas

    def on_batch(self, batch: list[Row]) -> None:
        if not self._replicas:
            return
        event = events.replica_event(batch)
        if event is None:
            return
        for conn in list(self._replicas):
            if not conn.open:
                self._replicas.discard(conn)
            else:
                conn.send_event(event)


def observer_of(master: str, node: str, *, auth: dict[str, Any] | None, tls: ssl.SSLContext | None,
                connect_timeout: float, on_event: Callable[[dict[str, Any]], None] | None = None) -> MasterClient:
    """A session on another master of the installation that only reads (its own reconnects are
    the caller's business): the installation's token, TLS when this master speaks it."""
    return MasterClient([master], node[:64], role="observer", auth=auth, ssl=tls, on_event=on_event, reconnect=False,
                        connect_timeout=connect_timeout)


def acting_epoch(usage: dict[str, Any]) -> int | None:
    """A master's epoch from its `usage`, if it is acting (not a standby that has not taken over)."""
    return None if usage.get("standby_of") else int(usage["epoch"])


async def acting_master(peers: Sequence[str], name: str, *, auth: dict[str, Any] | None,
                        tls: ssl.SSLContext | None, timeout_s: float) -> tuple[str, int] | None:
    """The first of `peers` that answers as an acting master, not a standby: (address, epoch).

    A master asks this at start. If its standby took over while it was down, serving again on
    its own data would make two masters, the returning one at an epoch no higher than the new
    one's, which PBXs could not tell apart; it must follow the new master instead. A peer that
    does not answer within `timeout_s`, or refuses, is not a master to follow.
    """
    for peer in peers:
        probe = observer_of(peer, f"{name}-probe", auth=auth, tls=tls, connect_timeout=timeout_s)
        try:
            await probe.connect()
            usage = await asyncio.wait_for(probe.usage(), timeout_s)
        except (TimeoutError, OSError, LicenseError, ConnectionError) as exc:
            logs.event("peer_unreachable", peer=peer, why=str(exc) or exc.__class__.__name__)
            continue
        finally:
            await probe.close()
        epoch = acting_epoch(usage)
        if epoch is not None:
            return peer, epoch
    return None


class PeerWatch:
    """An acting master keeps an observer session on each of its peers and reads their `usage`
    every `interval_s`. A peer that is an acting master at a higher epoch won a failover this
    master did not see (the two were cut apart, or this one was paused): `on_newer(peer,
    epoch)` is called so that this one steps down, and the two heal into master and standby."""

    def __init__(self, peers: Sequence[str], name: str, *, auth: dict[str, Any] | None, tls: ssl.SSLContext | None,
                 interval_s: float, epoch: Callable[[], int], acting: Callable[[], bool],
                 on_newer: Callable[[str, int], None]) -> None:
        self.peers = list(peers)
        self.name, self.auth, self.tls = name, auth, tls
        self.interval_s = interval_s
        self.epoch, self.acting, self.on_newer = epoch, acting, on_newer
        self._clients: dict[str, MasterClient] = {}
        self._task: asyncio.Task[None] | None = None
        self._seen: dict[str, dict[str, Any]] = {}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="peer-watch")

    def states(self) -> list[dict[str, Any]]:
        """Each peer as last seen: reachable, its role and epoch, when (wall clock)."""
        return [self._seen.get(peer, {"peer": peer, "reachable": None}) for peer in self.peers]

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        for client in self._clients.values():
            await client.close(bye=False)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if not self.acting():
                continue
            for peer in self.peers:
                newer = await self._newer_epoch(peer)
                if newer is not None and self.acting():
                    self.on_newer(peer, newer)

    async def _newer_epoch(self, peer: str) -> int | None:
        """The peer's epoch if it is an acting master at a higher one than this master's."""
        client = self._clients.get(peer)
        try:
            if client is None or not client.connected.is_set():
                if client is not None:
                    await client.close(bye=False)
                # One session kept open (heartbeats), a new one only when it was lost: the
                # peer's log shows a hello per reconnect, not per look.
                client = self._clients[peer] = observer_of(peer, f"{self.name}-peer", auth=self.auth, tls=self.tls,
                                                           connect_timeout=min(2.0, self.interval_s))
                await client.connect()
            usage = await asyncio.wait_for(client.usage(), self.interval_s)
        except (TimeoutError, OSError, LicenseError, ConnectionError) as exc:
            self._seen[peer] = {"peer": peer, "reachable": False, "why": str(exc) or exc.__class__.__name__, "at": time.time()}
            return None  # unreachable or refusing: nothing to learn now
        self._seen[peer] = {"peer": peer, "reachable": True, "role": usage.get("role"), "epoch": usage.get("epoch"),
                            "standby_of": usage.get("standby_of"), "http": usage.get("http"), "at": time.time()}
        epoch = acting_epoch(usage)
        return epoch if epoch is not None and epoch > self.epoch() else None


class Follower:
    def __init__(self, master: str, name: str, store: Store, takeover_after_ms: int,
                 on_takeover: Callable[[Holdings, int], None], *, auth: dict[str, Any] | None = None,
                 tls: ssl.SSLContext | None = None, autonomous: bool = True) -> None:
        self.master = master
        self.autonomous = autonomous  # False with etcd: only winning the election makes a master
        self.auth = auth
        self.tls = tls
        self.store = store
        self.takeover_after = takeover_after_ms / 1000
        self.on_takeover = on_takeover
        self.holdings = Holdings()
        self.master_epoch = 0
        self.synced = False
        self.name = name
        self.client = self._new_client()
        self._task: asyncio.Task[None] | None = None
        self._last_error = ""
        self.refused = ""  # the master refused this standby's stream version: nothing to replicate

    def _new_client(self) -> MasterClient:
        return observer_of(self.master, f"{self.name}-replica", auth=self.auth, tls=self.tls, on_event=self._on_event,
                           connect_timeout=max(0.2, min(2.0, self.takeover_after / 2)))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="replication")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.client.close(bye=False)

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        last_contact = loop.time()
        while True:
            if not self.client.connected.is_set():
                self.synced = False  # a new connection starts from a new snapshot
                await self.client.close(bye=False)
                self.client = self._new_client()
                try:
                    await self.client.connect()
                    self._last_error = ""
                except (TimeoutError, OSError, LicenseError, ConnectionError) as exc:
                    why = str(exc) or exc.__class__.__name__
                    if why != self._last_error:  # once per kind of failure, not at every retry
                        self._last_error = why
                        logs.event("cannot_follow", logging.WARNING, master=self.master, why=why)
            if self.client.connected.is_set() and not self.synced and not self.refused:
                await self._snapshot()
            if self.client.connected.is_set():
                last_contact = loop.time()
            elif self.autonomous and loop.time() - last_contact > self.takeover_after:
                logs.event("master_unreachable", logging.WARNING, master=self.master,
                           silent_ms=int((loop.time() - last_contact) * 1000))
                await self.client.close(bye=False)
                self.on_takeover(self.holdings, self.master_epoch)
                return
            await asyncio.sleep(min(0.1, self.takeover_after / 10))

    async def _snapshot(self) -> None:
        try:
            reply = await self.client.call("replicate", stream=STREAM_VERSION)
        except LicenseError as exc:
            if exc.code == "version":
                self.refused = exc.message
                logs.event("replica_version_refused", logging.ERROR, master=self.master, why=exc.message)
            else:
                logs.event("replicate_failed", logging.WARNING, master=self.master, why=str(exc))
            return
        except (TimeoutError, ConnectionError) as exc:
            logs.event("replicate_failed", logging.WARNING, master=self.master, why=str(exc))
            return
        holdings = Holdings()
        for node, resource, holder, lease in reply["leases"]:
            holdings.apply(GRANT, node, resource, holder, lease, None)
        self.holdings = holdings
        self.store.replace_assignments([(user, family, version, node) for user, family, version, node in reply["assignments"]])
        self.master_epoch = max(self.master_epoch, reply["epoch"])
        self.synced = True
        logs.event("replicating", master=self.master, epoch=reply["epoch"], leases=len(reply["leases"]),
                   assignments=len(reply["assignments"]))

    def _on_event(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "replica":
            try:
                rows = events.read_replica(event)
            except StreamError as exc:
                logs.event("replica_unreadable", logging.ERROR, master=self.master, why=str(exc))
                self.synced = False  # a new snapshot on the next turn
                return
            changes: list[tuple[str, str, str, int | None, str]] = []  # (event, user, family, version, node)
            for row in rows:
                if row.event in (ASSIGN, UNASSIGN):  # resource = family, holder = user, detail = version
                    version = int(row.detail) if row.detail and row.detail.isdigit() else None
                    changes.append((row.event, row.holder or "", row.resource or "", version, row.node or ""))
                else:
                    self.holdings.apply(*row)
            if changes:
                self.store.apply_assignment_changes(changes)
        elif name == "epoch":
            self.master_epoch = max(self.master_epoch, int(event.get("epoch", 0)))
