"""The standby master's side of replication: follow the master, take over when it is gone.

The standby connects to the master as an observer and asks `replicate`: the answer is a snapshot
(every floating lease with what it took, every user assignment, the master's epoch), then the
master pushes every state change as `{"event": "replica", "rows": [...], "seq": n}`, and the
standby acknowledges each push once applied (`ack`). The master answers a request that changed
state only once every attached standby has acknowledged it (daemon/ha/feed.py): replication is
synchronous, so a standby that takes over knows every grant the old master answered. The standby
mirrors user assignments into its own SQLite store as they come (they are durable there too) and
keeps the floating leases as `Holdings`. When the master has been unreachable for
`takeover_after_ms`, the standby takes over (`Master.promote`): a higher epoch, the mirrored
assignments, every lease adopted as it was (its PBX absent until it re-syncs), and a grace window
in which only what the PBXs held may be re-taken.

A standby dropped for acknowledging too slowly is told so (`replica_dropped`) and is out of sync
until its next snapshot: the master serves alone and says so. A standby whose stream was whole
when its master went silent (`whole`) knows every grant answered, and serves at once after its
takeover; one that was not waits a grace window (docs/operations.md, "Two clocks").

The stream's shape is wire/events.py's, with its version: a standby asks `replicate` with the
version it reads, and a master of another version refuses with `version`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from licmaster.client import LicenseError, MasterClient
from licmaster.daemon import logs
from licmaster.daemon.ha.recovery import Holdings
from licmaster.wire import events
from licmaster.wire.codec import DEFAULT_MAX_FRAME
from licmaster.wire.events import GRANT, STREAM_VERSION, StreamError

if TYPE_CHECKING:
    from licmaster.daemon.storage.store import Store


def observer_of(master: str, node: str, *, auth: dict[str, Any] | None, tls: ssl.SSLContext | None,
                connect_timeout: float, on_event: Callable[[dict[str, Any]], None] | None = None) -> MasterClient:
    """A session on another master of the installation that only reads (its own reconnects are
    the caller's business): the installation's token, TLS when this master speaks it."""
    return MasterClient([master], node[:64], role="observer", auth=auth, ssl=tls, on_event=on_event, reconnect=False,
                        connect_timeout=connect_timeout)


SERVING_ROLES = ("acting", "grace", "suspended")


def acting_epoch(usage: dict[str, Any]) -> int | None:
    """A master's epoch from its `usage`, if it serves (not a standby, following a master or, with
    etcd, waiting for the election: its epoch is only a local count then)."""
    if usage.get("standby_of") or usage.get("role", "acting") not in SERVING_ROLES:
        return None
    return int(usage["epoch"])


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
    epoch)` is called so that this one steps down, and the two heal into master and standby; at
    the same epoch, one of the two gives way (`_yields_to`).

    A peer that is a standby *of this master* (`_follows_me`) at a higher epoch
    served at epochs up to its own before this master took over without hearing of them (this
    one was down or paused while the peer served, then the peer died): its PBXs refuse any
    master at an epoch lower than one they saw. `on_behind(peer, epoch)` is called so that this
    master moves its epoch up to the peer's (two-node only: with etcd the epoch is etcd's)."""

    def __init__(self, peers: Sequence[str], name: str, *, auth: dict[str, Any] | None, tls: ssl.SSLContext | None,
                 interval_s: float, epoch: Callable[[], int], acting: Callable[[], bool],
                 on_newer: Callable[[str, int], None], on_behind: Callable[[str, int], None] | None = None,
                 address: str = "", standbys: Callable[[], list[str]] = list) -> None:
        self.peers = list(peers)
        self.name, self.auth, self.tls = name, auth, tls
        self.interval_s = interval_s
        self.epoch, self.acting, self.on_newer = epoch, acting, on_newer
        self.on_behind, self.address = on_behind, address
        self.ties = on_behind is not None  # two-node only (with etcd, epochs are never shared)
        self.standbys = standbys  # the advertised addresses of the standby masters it feeds
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
                usage = await self._usage(peer)
                if usage is None or not self.acting():
                    continue
                epoch = acting_epoch(usage)
                if epoch is not None:
                    if epoch > self.epoch() or (epoch == self.epoch() and self._yields_to(peer, usage)):
                        self.on_newer(peer, epoch)
                elif self.on_behind is not None and self._follows_me(usage):
                    standby_epoch = int(usage.get("epoch") or 0)
                    if standby_epoch > self.epoch():
                        self.on_behind(peer, standby_epoch)

    def _follows_me(self, usage: dict[str, Any]) -> bool:
        """The peer is a standby of this master: attached to it (its advertised address among
        the standbys this master feeds), or naming this master's address as the one it follows
        (the spellings may differ: a host name, 0.0.0.0)."""
        return str(usage.get("advertise") or "") in self.standbys() or bool(self.address and usage.get("standby_of") == self.address)

    def _yields_to(self, peer: str, usage: dict[str, Any]) -> bool:
        """Two masters acting at the same epoch: each became master while it could not see the
        other, both counting one up from the same epoch (a takeover, and a restart while the new
        master was paused). Neither is newer, so neither would ever step down (`slave-sim sim
        --seed 102`: both acting at epoch 22, 61 Ports counted for 60 installed, for good). The
        one whose (name, advertised address) sorts after the other's gives way. Each side
        compares the same two pairs, each as its master reports it (`usage` carries `advertise`),
        so exactly one does, unless the two pairs are the same (then neither: said in the log).
        Only without etcd: there the epoch is etcd's revision, never shared."""
        if not self.ties:
            return False
        peer_pair = (str(usage.get("master") or ""), str(usage.get("advertise") or peer))
        if peer_pair == (self.name, self.address):
            logs.event("peer_tie_unbroken", logging.ERROR, peer=peer, master=self.name, address=self.address,
                       hint="two masters acting at the same epoch with the same name and address: set `name` or `advertise` apart")
            return False
        return (self.name, self.address) > peer_pair

    async def _usage(self, peer: str) -> dict[str, Any] | None:
        """The peer's `usage`, or None if it cannot be read now."""
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
        return usage


class Follower:
    """The standby's side: attach (`replicate`), take the snapshot's parts and the stream, and
    take over only when the master is *silent*.

    Silence is the one reason to promote: no byte from the master for `takeover_after_ms` (no
    connection, or one that carries nothing). A master that answers but refuses (wrong token,
    another stream version), sends what this standby cannot read (a frame over its limit), or
    breaks the stream is alive: that is logged as what it is, shown in `state()` (usage, /metrics),
    and tried again with a backoff, the standby staying a standby. With etcd (`autonomous`
    False) it never promotes by itself: only winning the election makes a master.
    """

    RETRY_FIRST_S, RETRY_MOST_S = 0.25, 10.0

    def __init__(self, master: str, name: str, store: Store, takeover_after_ms: int,
                 on_takeover: Callable[[Holdings, int], None], *, auth: dict[str, Any] | None = None,
                 tls: ssl.SSLContext | None = None, autonomous: bool = True, max_frame: int = DEFAULT_MAX_FRAME,
                 stream: int = STREAM_VERSION, advertise: str = "") -> None:
        self.master = master
        self.autonomous = autonomous
        self.auth = auth
        self.tls = tls
        self.store = store
        self.takeover_after = takeover_after_ms / 1000
        self.on_takeover = on_takeover
        self.max_frame = max_frame
        self.stream = stream  # the version asked; another than this build's only in tests of a mismatch
        self.holdings = Holdings()
        self.master_epoch = 0
        self.synced = False
        # The holdings are a whole prefix of the master's stream: a snapshot installed, and every
        # push since applied (and acknowledged), up to the end of that connection. What a leader
        # elected as an in-sync standby (leadership.py) relies on.
        self.whole = False
        self.installed = False  # a snapshot installed since it started: `holdings` are the master's, not nothing
        self.name = name
        self.advertise = advertise or name  # how the master names this standby in etcd's in-sync record
        self.client = self._new_client()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._ack_seq: int | None = None  # the last push applied and not acknowledged yet
        self._incoming: events.Snapshot | None = None
        self._retry_at = 0.0  # no attach before (backoff after a refusal)
        self._probe_at = 0.0  # no reconnect before
        self._retry_s = self.RETRY_FIRST_S
        self.status = "connecting"  # connecting, attached, refused, unreachable
        self.why = ""
        self.since = time.time()
        self.failures = 0  # attach attempts refused or broken, since start
        self.snapshot_ms: float | None = None  # how long the last snapshot took, request to last part

    def _new_client(self) -> MasterClient:
        return MasterClient([self.master], f"{self.name}-replica"[:64], role="observer", auth=self.auth, ssl=self.tls,
                            on_event=self._on_event, events_kept=0, reconnect=False, max_frame=self.max_frame,
                            connect_timeout=max(0.2, min(2.0, self.takeover_after / 2)))

    def state(self) -> dict[str, Any]:
        """For usage, /api/v1/ha and /metrics: following whom, attached or why not, since when."""
        return {"following": self.master, "status": self.status, "why": self.why or None, "since": self.since,
                "failures": self.failures, "leases": len(self.holdings.lease_node), "snapshot_ms": self.snapshot_ms}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="replication")

    async def stop(self) -> None:
        self._stopped = True  # as well as the cancel: Python 3.11's wait_for swallows one that comes as what it waited for is done
        if self._task:
            self._task.cancel()
        await self.client.close(bye=False)

    def _set(self, status: str, why: str = "", level: int = logging.WARNING) -> None:
        """A change of state, logged once (not at every retry)."""
        if (status, why) == (self.status, self.why):
            return
        self.status, self.why, self.since = status, why, time.time()
        if status == "attached":
            return  # `replicating` says it, with the figures
        logs.event("replication_" + status, level, master=self.master, why=why)

    def _failed(self, status: str, why: str, level: int = logging.WARNING) -> None:
        """An attach that did not work: said, and tried again after a growing pause."""
        self.failures += 1
        self._set(status, why, level)
        loop = asyncio.get_running_loop()
        self._retry_at = loop.time() + self._retry_s * random.uniform(0.8, 1.2)
        # Reconnecting is also how silence is told from refusal: never paused past a third of
        # the takeover delay, or a refused standby would take its own pause for a dead master.
        self._probe_at = loop.time() + min(self._retry_s, self.takeover_after / 3)
        self._retry_s = min(self._retry_s * 2, self.RETRY_MOST_S)

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        heard = loop.time()  # the last sign of life from the master
        while not self._stopped:  # (a cancel swallowed by wait_for: docs of stop)
            if not self.client.connected.is_set() and loop.time() >= self._probe_at:
                self.synced = False  # a new connection starts from a new snapshot
                heard = max(heard, self.client.last_heard)
                await self.client.close(bye=False)
                self.client = self._new_client()
                try:
                    await self.client.connect()
                except LicenseError as exc:  # it answered: alive, and refusing this standby
                    self._failed("refused", f"{exc.code}: {exc.message}", logging.ERROR)
                except (TimeoutError, OSError, ConnectionError) as exc:
                    if self.client.last_heard > heard:  # bytes came, but could not be read
                        self._failed("refused", self.client.unreadable or f"the connection broke: {exc}", logging.ERROR)
                    else:
                        self._set("unreachable", str(exc) or exc.__class__.__name__)
                if self._stopped:  # stopped while it connected: it follows no more
                    await self.client.close(bye=False)
                    return
            if self.client.connected.is_set() and not self.synced and loop.time() >= self._retry_at:
                await self._attach()
            heard = max(heard, self.client.last_heard)
            if self.client.connected.is_set():
                heard = max(heard, loop.time())
            elif self.autonomous and loop.time() - heard > self.takeover_after:
                logs.event("master_unreachable", logging.WARNING, master=self.master,
                           silent_ms=int((loop.time() - heard) * 1000))
                await self.client.close(bye=False)
                if not self._stopped:  # a master that stopped meanwhile takes nothing over
                    self.on_takeover(self.holdings, self.master_epoch)
                return
            await asyncio.sleep(min(0.1, self.takeover_after / 10))

    async def _attach(self) -> None:
        """Ask `replicate`: the snapshot's parts come as events before the reply (`_on_event`)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._incoming = events.Snapshot()
        self.whole = False  # until the new snapshot is installed: what this master has is behind
        try:
            reply = await self.client.call("replicate", stream=self.stream, max_frame=self.max_frame, master=self.advertise)
        except LicenseError as exc:
            self._incoming = None
            self._failed("refused", f"{exc.code}: {exc.message}", logging.ERROR)
            return
        except (TimeoutError, ConnectionError) as exc:
            self._incoming = None
            why = self.client.unreadable or str(exc) or exc.__class__.__name__
            self._failed("refused" if self.client.unreadable else "unreachable", why)
            return
        if not self.synced:  # the reply came, the last part did not (or did not add up)
            self._incoming = None
            self._failed("refused", f"snapshot incomplete: the master said {reply.get('snapshot_parts')} parts")
            self.client.abort_connection()
            return
        if len(self.holdings.lease_node) < reply.get("leases", 0):
            self.synced = False
            self._failed("refused", f"snapshot short: {len(self.holdings.lease_node)} of {reply.get('leases')} leases")
            self.client.abort_connection()
            return
        self.master_epoch = max(self.master_epoch, int(reply["epoch"]))
        self.snapshot_ms = round((loop.time() - started) * 1000, 1)
        self._retry_s = self.RETRY_FIRST_S
        self._set("attached")
        logs.event("replicating", master=self.master, epoch=reply["epoch"], leases=reply.get("leases"),
                   assignments=reply.get("assignments"), parts=reply.get("snapshot_parts"), ms=self.snapshot_ms)

    def _install(self, snapshot: events.Snapshot) -> None:
        holdings = Holdings()
        for node, resource, holder, lease, label in snapshot.leases:
            holdings.apply(GRANT, node, resource, holder, lease, label)
        self.holdings = holdings
        self.store.replace_assignments([(user, family, version, node) for user, family, version, node in snapshot.assignments])
        self.synced = self.whole = True
        self.installed = True

    def _on_event(self, event: dict[str, Any]) -> None:
        if self._stopped:
            return  # what is still on its way when it was stopped: the store is no longer its
        name = event.get("event")
        if name == "snapshot":
            incoming = self._incoming
            if incoming is None:
                return  # not asked for (a stream left from an attach given up): ignored
            try:
                incoming.add(event)
            except StreamError as exc:
                self._incoming = None
                logs.event("replica_unreadable", logging.ERROR, master=self.master, why=str(exc))
                return  # the reply finds the snapshot incomplete: asked again after a pause
            if incoming.done:
                self._incoming = None
                self._install(incoming)
        elif name == "replica":
            if not self.synced:
                return  # before the snapshot is whole, the stream means nothing
            assignments: list[events.Change] = []
            try:
                self.holdings.apply_rows(events.replica_rows(event), assignments)
            except StreamError as exc:
                logs.event("replica_unreadable", logging.ERROR, master=self.master, why=str(exc))
                self.synced = self.whole = False
                self.client.abort_connection()  # a new attach, a new snapshot
                return
            finally:
                if assignments:  # the store at the same prefix of the stream as the holdings
                    # (event, user, family, version, node): resource = family, holder = user, detail = version
                    self.store.apply_assignment_changes([
                        (row.event, row.holder or "", row.resource or "",
                         int(row.detail) if row.detail and row.detail.isdigit() else None, row.node or "")
                        for row in assignments])
            seq = event.get("seq")
            if seq.__class__ is int:  # applied: the master may answer what waited for these rows
                if self._ack_seq is None:  # one ack per read, for its last push, once every push of it is applied
                    asyncio.get_running_loop().call_soon(self._ack, self.client)
                self._ack_seq = seq
        elif name == "epoch":
            self.master_epoch = max(self.master_epoch, int(event.get("epoch", 0)))
        elif name == "replica_dropped":  # the master answers without this standby from now on
            self.synced = self.whole = False


    def _ack(self, client: MasterClient) -> None:
        """Acknowledge the last push applied, on the connection that brought it. Under load one
        read carries many pushes (one per turn of the master's loop): one ack for them all, which
        spares the master a request and the standby a reply per push."""
        seq, self._ack_seq = self._ack_seq, None
        if seq is not None and client is self.client and not self._stopped:
            client.send("ack", seq=seq).add_done_callback(_ignore_reply)


def _ignore_reply(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an ack on a connection that went away: the next attach starts afresh
