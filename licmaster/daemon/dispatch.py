"""Requests in, replies out: admission (connection limit, hello, auth), the grace window, and the
ops. Thin by design: every license decision is the pool's; this module validates (wire.requests),
journals, makes user-license changes durable before it answers, and shapes the replies.

It is the connection's `Handler`: a `Connection` hands it each read's requests and writes what it
returns. The common case (an established session, a well-formed envelope, a known op) is
dispatched inline in `handle`: at 100,000 requests a second, one Python call per request is a
measurable share of the CPU.
"""

from __future__ import annotations

import bisect
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from licmaster.daemon import logs
from licmaster.daemon.config import Config
from licmaster.daemon.denials import DenialJournal
from licmaster.daemon.ha.failover import Grace, WaitingResync
from licmaster.daemon.role import RoleMachine
from licmaster.daemon.sessions import End, Session, Sessions
from licmaster.daemon.status import MasterStatus
from licmaster.daemon.storage.store import Store
from licmaster.daemon.timing import BatchTimer
from licmaster.model import errors as E
from licmaster.model.errors import Denial
from licmaster.model.leases import LEASE_TAGS, lease_id_base
from licmaster.model.pool import Pool
from licmaster.model.types import Node, SyncEntry
from licmaster.wire import events, requests
from licmaster.wire.codec import DEFAULT_MAX_FRAME, Reply
from licmaster.wire.events import (
    ASSIGN,
    CHECKIN,
    GRANT,
    RELEASE,
    STREAM_VERSION,
    TAKEOVER,
    UNASSIGN,
    Row,
)
from licmaster.wire.replies import ReplyEncoder, error_reply
from licmaster.wire.requests import Refused

if TYPE_CHECKING:
    import asyncio

    from licmaster.daemon.ha.feed import ReplicaFeed
    from licmaster.daemon.protocol import Connection

Op = Callable[[Session, int, dict[str, Any]], Reply]
# What a handler returns for a re-sync that waits (Grace.waits): no reply now; it goes out when
# the re-sync is decided (Dispatcher._decide_waiting). Told apart by identity.
WAITS: Reply = {"waits": True}
checkout_fields, checkin_fields = requests.checkout, requests.checkin


class Dispatcher:
    def __init__(self, config: Config, name: str, role: RoleMachine, loop: asyncio.AbstractEventLoop,
                 feed: ReplicaFeed, record: Callable[..., None], status: Callable[[], MasterStatus]) -> None:
        self.config = config
        self.name = name
        self.role = role
        self.loop = loop
        self.feed = feed
        self.record = record
        self.status = status  # the master's status, which `usage` renders (daemon/status.py)
        self.pool = Pool()
        self.book = self.pool.book  # the hot path calls the lease book itself, not through the facade
        self.epoch = 0
        self.replies = ReplyEncoder(0)
        self.journal_rows: list[Row] | None = None  # the journal's door (Journal.rows), bound once; None once it is closed
        self.store: Store | None = None
        self.grace = Grace(role, loop.time, loop.call_soon)  # the grace window and what it waits for (daemon/ha/failover.py)
        self.grace.decide = self._decide_waiting
        self.waited = False  # a re-sync of the read being answered waits: its place in the replies is left out
        self.sessions = Sessions(self.pool, record, on_end=self.grace.forget)
        self.denials = DenialJournal(record)
        self.timer = BatchTimer()
        # In the order they opened (a dict, not a set): what is sent to each in turn (an `epoch`
        # event, a shutdown) goes out in the same order in every run of a simulation.
        self.connections: dict[Connection, None] = {}
        self.wall = time.time()  # wall clock of the batch being handled, for journal rows
        self.console_url: str | None = None  # this master's console, told in usage (the dashboard finds the others)
        self.suspended_why = ""
        # etcd mode: the loop time past which this master's leadership is unconfirmed, and what
        # to do then (suspend). Checked once per read, before any request of it is answered: a
        # process paused past it (SIGSTOP, a VM freeze) must not answer its buffered requests.
        self.confirm_until = math.inf
        self.on_unconfirmed: Callable[[], None] = lambda: None
        self.lease_tag: Callable[[], int] = lambda: secrets.randbelow(LEASE_TAGS)  # a seam: a simulation draws it from its seed
        self.granted = False  # the read being answered granted something (its replies wait for the standbys)
        self._ops: dict[str, Op] = {
            "heartbeat": self.op_heartbeat, "bye": self.op_bye, "checkout": self.op_checkout,
            "checkin": self.op_checkin, "sync": self.op_sync, "takeover": self.op_takeover,
            "assign": self.op_assign, "unassign": self.op_unassign, "usage": self.op_usage, "nodes": self.op_nodes,
            "recording": self.op_recording, "replicate": self.op_replicate, "ack": self.op_ack,
        }

    def suspend(self, why: str) -> None:
        """Leadership unconfirmed (etcd mode): this master confirms nothing. Every op of a PBX,
        heartbeats included, answers `no_quorum`: a reply that is ok is what keeps a PBX's
        leases valid (docs/operations.md, "Two clocks"), and only a confirmed leader may give
        one. Observers still read. Swapping the handlers costs the hot path nothing."""
        self.suspended_why = why
        self.confirm_until = math.inf  # suspended already: nothing more to check per batch
        refuse = self.op_refuse_suspended
        self._ops.update(checkout=refuse, checkin=refuse, sync=refuse, assign=refuse, unassign=refuse, takeover=refuse,
                         heartbeat=self.op_heartbeat_suspended, recording=refuse)

    def resume(self) -> None:
        self.suspended_why = ""
        self._ops.update(checkout=self.op_checkout, checkin=self.op_checkin, sync=self.op_sync, assign=self.op_assign,
                         unassign=self.op_unassign, takeover=self.op_takeover, heartbeat=self.op_heartbeat,
                         recording=self.op_recording)

    def _no_quorum(self, rid: int) -> Reply:
        return error_reply(rid, Denial(E.NO_QUORUM, f"this master cannot confirm its leadership ({self.suspended_why[:160]}): "
                                       "it serves nobody until it can; try the other masters", details={"retry_ms": 500}))

    def op_refuse_suspended(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        return self._no_quorum(rid)

    def op_heartbeat_suspended(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        return self.replies.ok(rid) if session.info.role == "observer" else self._no_quorum(rid)

    def install(self, pool: Pool, epoch: int) -> None:
        """Serve from this pool at this epoch (start, promote). Its lease ids count from the epoch
        and a random tag (model/leases.py, lease_id_base): no other pool, on this master or
        another, before or after, names a lease the same way (an epoch alone can repeat: two
        masters cut apart without etcd, or a data directory started afresh), so a request
        carrying an old id can never free a lease that reused its number."""
        pool.book.name_leases(lease_id_base(epoch, self.lease_tag()))
        self.pool = self.sessions.pool = pool
        self.book = pool.book
        self.epoch = epoch
        self.replies = ReplyEncoder(epoch)

    def raise_epoch(self, epoch: int) -> None:
        """Serve the same pool at a higher epoch (Master.catch_up_epoch): only the replies' epoch
        changes; the lease ids keep the base they were named from."""
        if epoch > self.epoch:
            self.epoch = epoch
            self.replies = ReplyEncoder(epoch)

    # ================================================================ the connection's Handler

    def opened(self, conn: Connection) -> None:
        if len(self.connections) >= self.config.max_connections:
            conn.shed = True
        self.connections[conn] = None

    def lost(self, conn: Connection) -> None:
        self.connections.pop(conn, None)
        self.feed.detach(conn)
        self.grace.connection_lost(conn)
        session = conn.session
        if session is not None and session.conn is conn:
            session.conn = None  # the session waits for a reconnect until its lease TTL runs out

    def bad_frame(self, conn: Connection, why: str) -> None:
        logs.event("bad_frame", logging.WARNING, peer=conn.peer, node=conn.session.node if conn.session else "-", why=why)

    def hello_timeout(self, conn: Connection) -> None:
        logs.event("hello_timeout", logging.WARNING, peer=conn.peer)

    def handle(self, conn: Connection, batch: list[dict[str, Any]]) -> list[Reply]:
        """Answer every request a read brought, in order (timed as one batch for the metrics).
        With a standby master attached, a read that granted anything (a checkout, a re-sync, a
        takeover, a user license) has its replies held until the standby acknowledged the rows
        (daemon/ha/feed.py); so has a later read on the same connection while one is held, to
        keep request order. What only frees (a check-in) is not held: a standby that missed it
        counts a lease too many, never one too few, and it goes with the next push."""
        started = perf_counter()
        self.granted = False
        replies = self._answer(conn, batch)
        if self.waited:
            self.waited = False
            replies = [reply for reply in replies if reply is not WAITS]
        feed = self.feed
        if feed.syncing and (self.granted or conn in feed.held):
            replies = feed.hold(conn, replies)
        self.timer.observe(perf_counter() - started, len(batch))
        return replies

    def _answer(self, conn: Connection, batch: list[dict[str, Any]]) -> list[Reply]:
        now = self.loop.time()
        self.wall = time.time()
        if now >= self.confirm_until:  # a leader paused past its deadline answers nothing as leader (etcd mode)
            self.on_unconfirmed()
        if not self.role.serving:
            return [self._not_serving_reply(conn, msg, now) for msg in batch]
        replies: list[Reply] = []
        append = replies.append
        ops = self._ops
        max_id = requests.MAX_ID
        for msg in batch:
            session = conn.session
            op = msg.get("op")
            rid = msg.get("id")
            if session is not None and op.__class__ is str and rid.__class__ is int and 0 <= rid <= max_id \
                    and "v" not in msg and not conn.shed:
                handler = ops.get(op)
                if handler is not None:
                    session.last_seen = now
                    try:
                        append(handler(session, rid, msg))
                    except Exception:
                        append(self._internal(rid, op, session))
                    if conn.closing:
                        break
                    continue
            try:
                append(self._handle_slow(conn, msg, now))
            except Exception:  # a fault even before the op (the envelope): answered, never raised out
                append(self._internal(rid if rid.__class__ is int else None, str(op)[:32], session))
            if conn.closing:
                break
        return replies

    def _not_serving_reply(self, conn: Connection, msg: dict[str, Any], now: float) -> Reply:
        """A standby master serves no PBX: `not_master`, with the master's address. Observers
        may watch it (hello, heartbeat, usage) and hear the `epoch` event when it takes over."""
        rid, op = requests.envelope(msg)
        if type(op) is Denial:
            return error_reply(rid, op)
        observer = conn.session is not None and conn.session.info.role == "observer"
        if (op == "hello" and msg.get("role") == "observer") or (observer and op in ("heartbeat", "usage", "nodes")):
            return self._handle_slow(conn, msg, now)
        master = self.role.following
        return error_reply(rid, Denial(E.NOT_MASTER, f"this is the standby master of {master or 'another master'}; use that one",
                                       details={"master": master or None}))

    def _handle_slow(self, conn: Connection, msg: dict[str, Any], now: float) -> Reply:
        rid, op = requests.envelope(msg)
        if type(op) is Denial:
            return error_reply(rid, op)
        assert rid is not None
        if conn.shed:
            conn.closing = True
            return error_reply(rid, Denial(E.BUSY, f"this master serves at most {self.config.max_connections} connections",
                                           details={"retry_ms": self.config.heartbeat_ms}))
        session = conn.session
        try:
            if op == "hello":
                return self.op_hello(conn, rid, msg, now)
            if session is None:
                return error_reply(rid, Denial(E.NOT_HELLO, "say hello first: it must be the first request on a connection"))
            session.last_seen = now
            return self._ops[op](session, rid, msg)
        except Exception:
            return self._internal(rid, op, session)

    def _internal(self, rid: int | None, op: str, session: Session | None) -> Reply:
        """A fault of ours: logged with the request id; it never ends the daemon nor touches another session."""
        logs.log.exception("internal_error id=%s op=%s node=%s", rid, requests.describe(op), session.node if session else "-")
        return error_reply(rid, Denial(E.INTERNAL, f"internal error, logged with request id {rid}"))

    def _ok(self, rid: int) -> dict[str, Any]:
        return {"id": rid, "ok": True, "epoch": self.epoch}

    def _deny(self, session: Session, rid: int, denial: Denial, resource: str | None = None, holder: str | None = None) -> Reply:
        self.denials.deny(session.node, denial, resource, holder, self.loop.time())
        return error_reply(rid, denial)

    # ================================================================ session ops

    def op_hello(self, conn: Connection, rid: int, msg: dict[str, Any], now: float) -> Reply:
        parsed = requests.hello(msg)
        if isinstance(parsed, Denial):
            return error_reply(rid, parsed)
        if self.suspended_why and parsed.node.role != "observer":
            return self._no_quorum(rid)  # no session here while no lease can be confirmed
        if self.config.auth_token:
            token = (parsed.auth or {}).get("token")
            if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.config.auth_token.encode()):
                conn.closing = True
                logs.event("auth_failed", logging.WARNING, peer=conn.peer, node=parsed.node.name)
                return error_reply(rid, Denial(E.AUTH_FAILED, "credentials missing or wrong: hello needs auth = {token}"))
        info = parsed.node
        if conn.session is not None and conn.session.node != info.name:
            return error_reply(rid, E.bad_request("node", f"this connection is already {conn.session.node!r}"))
        session = self.sessions.get(info.name)
        if session is not None and session.conn is not None and session.conn is not conn:
            # A reconnect, or a new connection while the old one hangs: the new one takes the
            # session and every lease in it; the old connection is told and closed.
            session.conn.session = None
            session.conn.close({"event": "fenced", "reason": "replaced by a new connection of the same node"})
        said = session is None or session.info != info  # a new session, or one whose PBX says other things now
        if session is not None and session.absent_since is not None:
            self.sessions.back(session, now)
        if session is None:
            session = Session(info.name, "", conn, now, info)
            self.sessions.by_node[info.name] = session
        session.id = secrets.token_hex(8)
        session.conn = conn
        session.info = info
        session.last_seen = now
        conn.session = session
        conn.reply_limit = parsed.max_frame or DEFAULT_MAX_FRAME
        conn.hello_done()
        if said:  # what a replay needs of the node; not again for every reconnect of one session
            self.record(events.HELLO, info.name, detail=events.hello_detail(info))
        for lease in self.pool.set_node(info):
            self.record(RELEASE, info.name, lease.resource, lease.holder, lease.id, "node changed")
        if parsed.fresh:  # the PBX holds nothing (started afresh): what its node held goes back now, not after its hold
            for lease in self.pool.release_node(info.name):
                self.record(RELEASE, info.name, lease.resource, lease.holder, lease.id, "started afresh")
            self.grace.forget(info.name)  # nothing held before is its to re-take any more
        logs.event("hello", node=info.name, role=info.role, firmware=info.firmware, platform=info.platform,
                   licensing=info.licensing, peer=conn.peer)
        reply = self._ok(rid)
        reply.update(session=session.id, heartbeat_ms=self.config.heartbeat_ms, lease_ttl_ms=self.config.lease_ttl_ms,
                     hold_s=self.config.hold_s, master=self.name, max_frame=self.config.max_frame)
        grace = self.grace_left_ms()
        if grace:
            reply["grace_ms"] = grace
        return reply

    def op_heartbeat(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        return self.replies.ok(rid)

    def op_bye(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        self.sessions.end(session, End.BYE)
        return self._ok(rid)

    # ================================================================ grace

    def grace_left_ms(self) -> int:
        """What is left of the grace window, in ms: a pure read (daemon/ha/failover.py, Grace)."""
        return self.grace.left_ms()

    # ================================================================ floating licenses

    def op_checkout(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        try:
            resource, holder, count, interface, client_version = checkout_fields(msg)
        except Refused as refused:
            return error_reply(rid, refused.denial)
        node = session.node
        if self.role.grace_until:
            denial = self.grace.denial(node, resource, holder)
            if denial is not None:
                return error_reply(rid, denial)
        outcome = self.book.checkout(node, resource, holder, count, interface, client_version)
        if type(outcome) is Denial:
            return self._deny(session, rid, outcome, resource, holder)
        lease, new = outcome
        view = lease.view or self.book.view(lease)
        rows = self.journal_rows
        if new and rows is not None:
            rows.append((self.wall, GRANT, node, resource, holder, lease.id, view.label))
            self.granted = True
        return self.replies.grant(rid, lease.id, view)

    def op_checkin(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        try:
            lease_id = checkin_fields(msg)
        except Refused as refused:
            return error_reply(rid, refused.denial)
        lease = self.book.checkin(session.node, lease_id)
        if lease is None:
            return error_reply(rid, Denial(E.UNKNOWN_LEASE, f"{session.node} holds no lease {lease_id[:64]!r} on this master: "
                                           "nothing was checked in (an id from another master or an earlier run, or "
                                           "one already given back; after a re-sync use the ids it answered)",
                                           details={"lease": lease_id}))
        rows = self.journal_rows
        if rows is not None:
            rows.append((self.wall, CHECKIN, session.node, lease.resource, lease.holder, lease.id))
        return self.replies.ok(rid)

    def _sync_entries(self, session: Session, msg: dict[str, Any]) -> list[SyncEntry] | Denial:
        """A sync's entries with those of its earlier parts. A sync too large for one frame comes
        in parts: each but the last says `more`, and is only kept; the last is the whole sync, taken
        at once as one (so a part never releases what a later part names)."""
        part = msg.get("part", 0)
        if part == 0:  # a sync starts afresh (one broken off by a lost connection is forgotten)
            session.sync_parts = []
        elif part.__class__ is not int or part < 0 or not session.sync_parts:
            session.sync_parts = []
            return E.bad_request("part", f"{requests.describe(part)}: a later part of a sync whose part 0 did not come first")
        entries = requests.sync(msg)
        if isinstance(entries, Denial):
            session.sync_parts = []
            return entries
        if len(session.sync_parts) + len(entries) > requests.MAX_SYNC:
            session.sync_parts = []
            return E.bad_request("leases", f"a sync in parts has at most {requests.MAX_SYNC} entries in all")
        if msg.get("more") is True:
            session.sync_parts += entries
            return entries
        return session.sync_parts + entries if session.sync_parts else entries  # kept until the sync is taken

    def _sync_pending(self, session: Session, rid: int) -> Reply:
        reply = self._ok(rid)
        reply["pending"] = len(session.sync_parts)
        return reply

    def op_sync(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        entries = self._sync_entries(session, msg)
        if isinstance(entries, Denial):
            return error_reply(rid, entries)
        if msg.get("more") is True:
            return self._sync_pending(session, rid)
        if self.grace.waits(session.node) and self._brings_unknown(session.node, entries):
            session.sync_parts = []
            self.grace.wait(WaitingResync(session.node, session, session.conn, rid, entries))
            self.waited = True
            return WAITS
        return self._sync(session, rid, entries)

    def _brings_unknown(self, node: str, entries: list[SyncEntry]) -> bool:
        """A re-sync lists a lease this master does not count for the node (granted by a master
        it never heard of, or in the last moments before a kill -9)."""
        held = self.book.held.get(node)
        by_resource = held.by_resource if held is not None else {}
        return any(entry.holder not in by_resource.get(entry.resource, ()) for entry in entries)

    def _decide_waiting(self, waiting: list[WaitingResync]) -> None:
        """Take the re-syncs that waited (Grace.waits) and answer each on its connection (held
        for the standbys like any grant). First every one gives back what its node no longer
        lists (stale entries of a waiting node free capacity for the others: found by review,
        an earlier one was refused what a later one freed), then each is taken, in the order they
        came. One whose session or connection ended meanwhile is dropped: its PBX re-syncs on its
        next connection. A fault answers that one `internal` and spares the others."""
        current = [resync for resync in waiting
                   if self.role.serving and resync.conn is not None and resync.conn.open
                   and resync.conn.session is resync.session and self.sessions.get(resync.node) is resync.session]
        released: dict[str, int] = {}
        for resync in current:
            for lease in self.book.release_unlisted(resync.node, resync.entries):
                self.record(RELEASE, resync.node, lease.resource, lease.holder, lease.id)
                released[resync.node] = released.get(resync.node, 0) + 1
        for resync in current:
            try:
                reply = self._sync(resync.session, resync.rid, resync.entries)
                if isinstance(reply, dict) and reply.get("ok"):
                    reply["released"] += released.get(resync.node, 0)  # given back in the first pass
            except Exception:
                reply = self._internal(resync.rid, "sync", resync.session)
            replies = [reply]
            if self.feed.syncing:
                replies = self.feed.hold(resync.conn, replies)
            resync.conn.send_replies(replies)

    def _sync(self, session: Session, rid: int, entries: list[SyncEntry]) -> Reply:
        session.sync_parts = []
        # A re-sync is taken whole, during grace too, up to the installed count: what PBXs re-sync
        # was granted by the one master before (at most installed, all together), so every
        # re-sync fits, even one the journal or the standby never saw (a grant of the master's
        # last moments before kill -9). During grace only *new* checkouts wait, so that the
        # re-syncs still to come find their capacity. (docs/operations.md, "Failover".) Stale
        # entries this master adopted fill the pool until their PBXs re-sync: a re-sync bringing
        # what it does not count waits for those first (Grace.waits, op_sync).
        # What it held before is re-taken past the site policy's limits too (granted under them by
        # the master before); anything over a limit is shown in usage and logged, never revoked.
        held_before = self.grace.take(session.node)  # what it did not re-take is free from now on
        result = self.pool.sync(session.node, entries, held_before)
        enforcer = self.pool.enforcer
        if held_before and enforcer is not None:
            site = enforcer.policy.site_of_node(self.pool.nodes.get(session.node) or Node(session.node))
            # this PBX's site only: a failover's thousand re-syncs must not each walk every site
            for broken in enforcer.broken([site.name] if site is not None else []):
                logs.event("policy_over", logging.WARNING, node=session.node, why=broken)
        for lease in result.released:
            self.record(RELEASE, session.node, lease.resource, lease.holder, lease.id)
        granted = []
        self.granted = True
        for lease in result.granted:
            view = self.pool.took_view(lease)
            self.record(GRANT, session.node, lease.resource, lease.holder, lease.id, view.label)
            granted.append({"resource": lease.resource, "holder": lease.holder, "lease": lease.id, "took": view.wire})
        denied = [{"index": i, "resource": e.resource, "holder": e.holder, **d.to_wire()} for i, e, d in result.denied]
        now = self.loop.time()
        for _, entry, denial in result.denied:
            self.denials.deny(session.node, denial, entry.resource, entry.holder, now)
        reply = self._ok(rid)
        reply.update(leases=granted, denied=denied, released=len(result.released))
        return reply

    def op_takeover(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        failed = requests.takeover(msg)
        if isinstance(failed, Denial):
            return error_reply(rid, failed)
        moved = self.pool.takeover(session.node, failed)
        if isinstance(moved, Denial):
            return self._deny(session, rid, moved, "takeover", failed)
        self.record(TAKEOVER, session.node, detail=failed)
        self.granted = True
        self.grace.move(failed, session.node)
        old = self.sessions.get(failed)
        if old is not None:
            self.sessions.end(old, End.TAKEOVER, event={"event": "fenced", "reason": f"taken over by {session.node}"},
                              standby=session.node)
        else:
            self.pool.forget_node(failed)
        logs.event("takeover", standby=session.node, failed=failed, moved=len(moved))
        reply = self._ok(rid)
        reply.update(moved=len(moved), leases=[
            {"resource": lease.resource, "holder": lease.holder, "lease": lease.id, "took": self.pool.took_view(lease).wire}
            for lease in moved])
        return reply

    # ================================================================ user licenses

    def op_assign(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        return self._configure(session, rid, msg, assign=True)

    def op_unassign(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        return self._configure(session, rid, msg, assign=False)

    def _configure(self, session: Session, rid: int, msg: dict[str, Any], *, assign: bool) -> Reply:
        parsed = requests.assignment(msg)
        if isinstance(parsed, Denial):
            return error_reply(rid, parsed)
        user, families = parsed
        change = self.pool.assign if assign else self.pool.unassign
        result = change(session.node, user, families)
        if isinstance(result, Denial):
            return self._deny(session, rid, result, "assign" if assign else "unassign", user)
        assert self.store is not None
        try:  # durable before the PBX hears "ok"
            if assign:
                self.store.save_assignments([(user, f, v, session.node) for f, v in result.changed])
            else:
                self.store.delete_assignments(user, [f for f, _ in result.changed])
        except Exception:
            undo = self.pool.unassign if assign else self.pool.assign
            undo(session.node, user, [f for f, _ in result.changed])
            raise
        self.granted = self.granted or assign
        for family, version in result.changed:
            self.record(ASSIGN if assign else UNASSIGN, session.node, family, user, None, str(version))
        reply = self._ok(rid)
        reply.update(took=result.took, warnings=[{"rule": w.rule, "message": w.message} for w in result.warnings])
        return reply

    # ================================================================ reading

    def op_recording(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        """May this PBX record waiting queues, conference rooms or its gateway? (R-REC-1; an
        extension: a question, nothing is taken.)"""
        denial = self.pool.recording_allowed()
        if denial is not None:
            return error_reply(rid, denial)
        return self._ok(rid)

    def op_usage(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        """The master's status (daemon/status.py) as `usage` shows it: the pools and a summary of
        the sessions, bounded whatever the installation's size (the nodes themselves are read with
        `nodes`, a page at a time)."""
        reply = self._ok(rid)
        reply.update(self.status().usage_wire())
        return reply

    def op_nodes(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        """A page of the sessions in node-name order: after `cursor`, at most `limit` (≤ MAX_PAGE),
        and `next`, the cursor of the page after (null on the last)."""
        asked = requests.page(msg)
        if isinstance(asked, Denial):
            return error_reply(rid, asked)
        cursor, limit = asked
        names = sorted(self.sessions.by_node)
        start = bisect.bisect_right(names, cursor) if cursor is not None else 0
        chosen = names[start:start + limit]
        reply = self._ok(rid)
        nodes = self.node_list(chosen)
        if msg.get("held") is True:  # lease by lease, with this master's ids: what a checker compares with the PBXs' beliefs
            for entry in nodes:
                entry["held"] = [[lease.resource, lease.holder, lease.id] for lease in self.pool.node_leases(entry["node"])]
        reply.update(nodes=nodes, total=len(names), next=chosen[-1] if start + limit < len(names) and chosen else None)
        return reply

    def node_list(self, names: list[str]) -> list[dict[str, Any]]:
        now = self.loop.time()
        by_node = self.sessions.by_node
        return [{"node": s.node, "role": s.info.role, "firmware": s.info.firmware, "platform": s.info.platform,
                 "licensing": s.info.licensing, "connected": s.conn is not None,
                 "leases": len(self.pool.node_leases(s.node)), "idle_ms": int((now - s.last_seen) * 1000)}
                for s in (by_node[name] for name in names)]

    # ================================================================ replication (master side)

    def op_replicate(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        """A standby master asks to follow: the snapshot now, as `snapshot` events written before
        this reply (each at most the standby's `max_frame`), then each journal batch's changes.
        Taken in one turn, so no change falls between the snapshot and the stream."""
        if session.info.role != "observer" or session.conn is None:
            return error_reply(rid, E.bad_request("role", "only an observer (a standby master) may replicate"))
        stream = msg.get("stream")
        if stream != STREAM_VERSION:
            return error_reply(rid, Denial(E.VERSION, f"replica stream version {requests.describe(stream)} asked; this master speaks "
                                           f"{STREAM_VERSION}: run masters of one version", details={"stream": STREAM_VERSION}))
        max_frame = requests.frame_size(msg)
        if isinstance(max_frame, Denial):
            return error_reply(rid, max_frame)
        max_frame = max_frame or DEFAULT_MAX_FRAME
        if session.conn in self.feed:  # attached already: a new snapshot, the stream from it
            self.feed.detach(session.conn, "a standby master attached again")
        started = perf_counter()
        leases = [[lease.node, lease.resource, lease.holder, lease.id, self.book.view(lease).label] for lease in self.pool.leases.values()]
        assignments = [[user, family, a.bucket.version if a.bucket else None, a.node]
                       for user, held in self.pool.users.items() for family, a in held.items()]
        frames = events.snapshot_frames(leases, assignments, max_frame)
        session.conn.send_frames(b"".join(frames))
        name = msg.get("master")
        self.feed.attach(session.conn, max_frame, name[:64] if isinstance(name, str) and name else session.node)
        logs.event("replica_attached", node=session.node, leases=len(leases), assignments=len(assignments), parts=len(frames),
                   bytes=sum(map(len, frames)), ms=round((perf_counter() - started) * 1000, 1))
        reply = self._ok(rid)
        reply.update(stream=STREAM_VERSION, snapshot_parts=len(frames), leases=len(leases), assignments=len(assignments))
        return reply

    def op_ack(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        """A standby master applied every push up to `seq`: replies waiting for it may go out."""
        seq = msg.get("seq")
        if session.info.role != "observer" or session.conn is None or session.conn not in self.feed:
            return error_reply(rid, E.bad_request("op", "only an attached standby master acknowledges the replica stream"))
        if seq.__class__ is not int or seq < 0:
            return error_reply(rid, E.bad_request("seq", f"{requests.describe(seq)}: the number of a push, a whole number"))
        self.feed.ack(session.conn, seq)
        return self.replies.ok(rid)
