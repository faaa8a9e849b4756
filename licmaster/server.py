"""The master: sessions and leases over the wire, durability, expiry, reload, shutdown.

Thin by design: every license decision is the pool's (pool.py); this module validates requests
(messages.py), keeps sessions alive or expires them, writes what must last (store.py) and what
happened (journal.py), and answers. `Master` is also the controller tests and the simulator use:
`await master.start()` / `await master.stop()`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import secrets
import ssl
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

from . import errors as E
from . import logs, messages
from .codec import ReplyEncoder
from .config import Config
from .errors import Denial
from .journal import Journal
from .licensefile import load_files
from .pool import Pool, ReloadReport, SyncEntry
from .recovery import BYE, CHECKIN, EXPIRE, GRANT, RELEASE, STATE_EVENTS, TAKEOVER, Holdings, held_at_end
from .replication import Follower, PeerWatch, acting_master
from .session import Connection, Session
from .store import Store

Reply = dict[str, Any] | bytes  # a map, or a whole frame the ReplyEncoder already packed
checkout_fields, checkin_fields = messages.checkout, messages.checkin
REPLICATED = frozenset(STATE_EVENTS) | {"assign", "unassign"}  # module-level: no attribute lookup per request


class StartError(RuntimeError):
    """The master cannot start (license files with errors, a port in use, ...)."""


def error_reply(rid: int | None, denial: Denial) -> Reply:
    reply: Reply = {"id": rid, "ok": False}
    reply.update(denial.to_wire())
    return reply


class Master:
    def __init__(self, config: Config, *, name: str = "licmaster") -> None:
        self.config = config
        self.name = name
        self.pool = Pool()
        self.sessions: dict[str, Session] = {}
        self.connections: set[Connection] = set()
        self.epoch = 0
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.store: Store | None = None
        self.journal: Journal | None = None
        self._server: asyncio.AbstractServer | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._grace_until = 0.0
        self._held_before: dict[str, set[tuple[str, str]]] = {}
        self._ops: dict[str, Callable[[Session, int, dict[str, Any]], Reply]] = {
            "heartbeat": self.op_heartbeat, "bye": self.op_bye, "checkout": self.op_checkout,
            "checkin": self.op_checkin, "sync": self.op_sync, "takeover": self.op_takeover,
            "assign": self.op_assign, "unassign": self.op_unassign, "usage": self.op_usage,
            "recording": self.op_recording,
        }
        self.address: tuple[str, int] | None = None
        self.replies = ReplyEncoder(0)
        self.wall = time.time()  # wall clock of the batch being handled (set per read by Connection)
        self.standby_of = config.standby_of  # set: this daemon is a standby master (not serving PBXs)
        self.replicas: set[Connection] = set()  # standby masters following this one
        self.follower: Follower | None = None
        self.peer_watch: PeerWatch | None = None
        self._ops["replicate"] = self.op_replicate
        self._peer_ssl: ssl.SSLContext | None = None  # how this master speaks to the others (see _peer_tls)
        self.today: Callable[[], dt.date] = dt.date.today  # the calendar SSA terms are read against
        self._licenses_valued_on = dt.date.min  # the day the installed licenses were last evaluated

    # ================================================================ lifecycle

    async def start(self) -> None:
        cfg = self.config
        self.loop = asyncio.get_running_loop()
        loaded = load_files(cfg.licenses)
        if not loaded.ok:
            raise StartError("license files have errors:\n" + "\n".join(f"  {p}" for p in loaded.errors))
        try:
            self._peer_ssl = self._peer_tls()
        except (OSError, ssl.SSLError) as exc:
            raise StartError(f"cannot load tls_ca/tls_cert to verify the other masters: {exc}") from None
        if cfg.peers and not self.standby_of:
            timeout_s = min(2.0, max(0.2, cfg.effective_takeover_after_ms / 1000))
            acting = await acting_master(cfg.peers, self.name, auth=self._peer_auth(), tls=self._peer_ssl, timeout_s=timeout_s)
            if acting is not None:
                self.standby_of, peer_epoch = acting
                logs.event("peer_is_master", logging.WARNING, peer=self.standby_of, epoch=peer_epoch,
                           action="following it as its standby master")
        data = Path(cfg.data_dir)
        self.store = Store(data / "state.sqlite3", fsync=cfg.fsync)
        self.journal = Journal(data / "journal.sqlite3", flush_ms=cfg.journal_flush_ms,
                               keep_s=cfg.journal_keep_days * 86_400 if cfg.journal_keep_days else None,
                               snapshot=self._live_leases)
        self.epoch = self.store.next_epoch()
        self.replies = ReplyEncoder(self.epoch)
        self.pool = Pool(self.store.hardware())
        self._licenses_valued_on = self.today()
        report = self.pool.install([*loaded.licenses], today=self._licenses_valued_on)
        self._report("licenses", report, loaded.problems)
        self.store.remember_hardware(self.pool.installed)
        for user, family, version, node in self.store.assignments():
            self.pool.restore_assignment(user, family, version, node)
        had_run, rows = self.journal.begin_run()
        self._held_before = held_at_end(rows)
        if had_run and cfg.effective_grace_ms > 0 and not self.standby_of:
            self._grace_until = self.loop.time() + cfg.effective_grace_ms / 1000
        self.journal.on_batch = self._replicate_batch
        self.journal.start()
        self.journal.record("start", detail=f"epoch={self.epoch}")
        host, port = cfg.listen_address
        try:
            tls = self._tls()
        except (OSError, ssl.SSLError) as exc:
            await self._close_storage()
            raise StartError(f"cannot load tls_cert/tls_key: {exc}") from None
        try:
            self._server = await self.loop.create_server(
                lambda: Connection(self), host, port, ssl=tls, backlog=1024, reuse_address=True)
        except OSError as exc:
            await self._close_storage()
            raise StartError(f"cannot listen on {cfg.listen}: {exc.strerror or exc}") from None
        sock = self._server.sockets[0].getsockname()
        self.address = (sock[0], sock[1])
        self._reaper = self.loop.create_task(self._reap(), name="session-reaper")
        if self.standby_of:
            self._follow(self.standby_of)
        if cfg.peers:
            self.peer_watch = PeerWatch(cfg.peers, self.name, auth=self._peer_auth(), tls=self._peer_ssl,
                                        interval_s=cfg.effective_takeover_after_ms / 1000, epoch=lambda: self.epoch,
                                        acting=lambda: not self.standby_of, on_newer=self.step_down)
            self.peer_watch.start()
        logs.event("started", master=self.name, standby_of=self.standby_of or "-", listen=f"{sock[0]}:{sock[1]}", epoch=self.epoch,
                   data_dir=str(data.resolve()), licenses=len(self.pool.installed),
                   grace_ms=int(max(0.0, self._grace_until - self.loop.time()) * 1000),
                   users=len(self.pool.users), held_before=sum(len(v) for v in self._held_before.values()))

    def _live_leases(self) -> list[tuple[str, str, str, str]] | None:
        """Every live lease, for a journal checkpoint; none while a grace window runs (the pool
        does not yet hold what the PBXs will re-take) or on a standby (it holds no leases)."""
        if self.standby_of or self.grace_left_ms():
            return None
        return [(lease.node, lease.resource, lease.holder, lease.id) for lease in self.pool.leases.values()]

    def _peer_auth(self) -> dict[str, Any] | None:
        """Masters of one installation share its auth_token: the one this master asks of PBXs."""
        return {"token": self.config.auth_token} if self.config.auth_token else None

    def _peer_tls(self) -> ssl.SSLContext | None:
        """The masters of an installation speak TLS to each other when this one serves TLS; the
        others' certificates are verified against tls_ca (default: tls_cert, one certificate for
        all), and must name the address used in standby_of / peers."""
        if not self.config.tls_cert:
            return None
        return ssl.create_default_context(cafile=self.config.tls_ca or self.config.tls_cert)

    def _tls(self) -> ssl.SSLContext | None:
        if not self.config.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return ctx

    async def stop(self, reason: str = "stopping") -> None:
        """The `shutdown` event to every session, then a clean close of everything."""
        if self._reaper:
            self._reaper.cancel()
        if self.follower:
            await self.follower.stop()
        if self.peer_watch:
            await self.peer_watch.stop()
        if self._server:
            self._server.close()
        event = {"event": "shutdown", "reason": reason}
        for conn in list(self.connections):
            conn.close(event)
        if self._server:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # let the transports flush and close
        if self.journal:
            self.journal.record("stop", detail=reason)
        await self._close_storage()
        logs.event("stopped", master=self.name, reason=reason)

    async def _close_storage(self) -> None:
        if self.journal:
            await self.journal.close()
            self.journal = None
        if self.store:
            self.store.close()
            self.store = None

    def reload(self) -> ReloadReport | None:
        """Re-read the license files (SIGHUP). A set with errors is refused whole; the old one stays."""
        loaded = load_files(self.config.licenses)
        if not loaded.ok:
            for problem in loaded.errors:
                logs.event("reload_refused", logging.ERROR, problem=str(problem))
            self._journal("reload_refused", detail="; ".join(str(p) for p in loaded.errors)[:2000])
            return None
        self._licenses_valued_on = self.today()
        report = self.pool.install(loaded.licenses, today=self._licenses_valued_on)
        if self.store:
            self.store.remember_hardware(self.pool.installed)
        self._report("reload", report, loaded.problems)
        self._journal("reload", detail=f"licenses={len(self.pool.installed)} problems={len(report.problems)}")
        return report

    def revalue_at_date_change(self) -> ReloadReport | None:
        """R-SSA-1: an SSA runs for a term. When one ends while the master runs, the licenses under
        it are worth their own version again (a V12 Port no longer serves V13 PBXs): re-evaluate
        the installed set, as a reload would, on the first check of a new day. Leases beyond the
        new capacity stay (never revoked silently) and are reported, as after a reload."""
        today = self.today()
        since, self._licenses_valued_on = self._licenses_valued_on, today
        if today <= since:
            return None
        ended = [lic for lic in self.pool.installed if lic.ssa_until is not None and since <= lic.ssa_until < today]
        if not ended:
            return None
        report = self.pool.install(self.pool.installed, today=today)
        self._report("ssa_ended", report, [])
        self._journal("ssa_ended", detail="; ".join(f"{lic.count} × {lic.type} (SSA until {lic.ssa_until})" for lic in ended)[:2000],
                      rule="R-SSA-1")
        return report

    def _report(self, what: str, report: ReloadReport, file_problems: list[Any]) -> None:
        for problem in [*file_problems, *report.problems]:
            level = logging.WARNING if problem.severity == "warning" else logging.ERROR
            logs.event(f"{what}_problem", level, rule=problem.rule or "-", where=problem.where or "-", message=problem.message)
        logs.event(what, licenses=sum(lic.count for lic in self.pool.installed), overcommitted=len(report.overcommitted))

    # ================================================================ connections

    def connection_made(self, conn: Connection) -> None:
        if len(self.connections) >= self.config.max_connections:
            conn.shed = True
        self.connections.add(conn)

    def connection_lost(self, conn: Connection) -> None:
        self.connections.discard(conn)
        session = conn.session
        if session is not None and session.conn is conn:
            session.conn = None  # the session waits for a reconnect until its lease TTL runs out

    def note_bad_frame(self, conn: Connection, why: str) -> None:
        logs.event("bad_frame", logging.WARNING, peer=conn.peer, node=conn.session.node if conn.session else "-", why=why)

    def note_hello_timeout(self, conn: Connection) -> None:
        logs.event("hello_timeout", logging.WARNING, peer=conn.peer)

    # ================================================================ requests

    def handle_batch(self, conn: Connection, batch: list[dict[str, Any]], now: float) -> list[Reply]:
        """Answer every request a read brought, in order. The common case (an established
        session, a well-formed envelope, a known op) is dispatched inline: at 100,000 requests a
        second, one Python call per request is a measurable share of the CPU."""
        if self.standby_of:
            return [self._standby_reply(conn, msg, now) for msg in batch]
        replies: list[Reply] = []
        append = replies.append
        ops = self._ops
        max_id = messages.MAX_ID
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
            reply = self._handle_slow(conn, msg, now)
            if reply is not None:
                append(reply)
            if conn.closing:
                break
        return replies

    def _standby_reply(self, conn: Connection, msg: dict[str, Any], now: float) -> Reply:
        """A standby master serves no PBX: `not_master`, with the master's address. Observers
        may watch it (hello, heartbeat, usage) and hear the `epoch` event when it takes over."""
        rid, op = messages.envelope(msg)
        if op.__class__ is not str:
            return error_reply(rid, op)  # type: ignore[arg-type]
        observer = conn.session is not None and conn.session.info.role == "observer"
        if (op == "hello" and msg.get("role") == "observer") or (observer and op in ("heartbeat", "usage")):
            return self._handle_slow(conn, msg, now)  # type: ignore[return-value]
        return error_reply(rid, Denial(E.NOT_MASTER, f"this is the standby master of {self.standby_of}; use that one",
                                       details={"master": self.standby_of}))

    def _handle_slow(self, conn: Connection, msg: dict[str, Any], now: float) -> Reply | None:
        rid, op = messages.envelope(msg)
        if op.__class__ is not str:
            return error_reply(rid, op)  # type: ignore[arg-type]
        if conn.shed:
            conn.closing = True
            return error_reply(rid, Denial(E.BUSY, f"this master serves at most {self.config.max_connections} connections",
                                           details={"retry_ms": self.config.heartbeat_ms}))
        session = conn.session
        try:
            if op == "hello":
                return self.op_hello(conn, rid, msg, now)  # type: ignore[arg-type]
            if session is None:
                return error_reply(rid, Denial(E.NOT_HELLO, "say hello first: it must be the first request on a connection"))
            session.last_seen = now
            return self._ops[op](session, rid, msg)  # type: ignore[index, arg-type]
        except Exception:
            return self._internal(rid, op, session)  # type: ignore[arg-type]

    def _internal(self, rid: int, op: str, session: Session | None) -> Reply:
        """A fault of ours: logged with the request id; it never ends the daemon nor touches another session."""
        logs.log.exception("internal_error id=%s op=%s node=%s", rid, op, session.node if session else "-")
        return error_reply(rid, Denial(E.INTERNAL, f"internal error, logged with request id {rid}"))

    def _ok(self, rid: int) -> Reply:
        return {"id": rid, "ok": True, "epoch": self.epoch}

    def _deny(self, session: Session, rid: int, denial: Denial, resource: str | None = None, holder: str | None = None) -> Reply:
        self._journal("deny", session.node, resource, holder, None, denial.code, denial.rule)
        return error_reply(rid, denial)

    def _journal(self, event: str, node: str | None = None, resource: str | None = None, holder: str | None = None,
                 lease: str | None = None, detail: str | None = None, rule: str | None = None) -> None:
        if self.journal is not None:
            self.journal.record(event, node, resource, holder, lease, detail, rule)

    # ---------------------------------------------------------------- session ops

    def op_hello(self, conn: Connection, rid: int, msg: dict[str, Any], now: float) -> Reply:
        parsed = messages.hello(msg)
        if isinstance(parsed, Denial):
            return error_reply(rid, parsed)
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
        if session is None:
            session = Session(info.name, "", conn, now, info)
            self.sessions[info.name] = session
        session.id = secrets.token_hex(8)
        session.conn = conn
        session.info = info
        session.last_seen = now
        conn.session = session
        conn.hello_done()
        for lease in self.pool.set_node(info):
            self._journal(RELEASE, info.name, lease.resource, lease.holder, lease.id, "node changed")
        logs.event("hello", node=info.name, role=info.role, firmware=info.firmware, platform=info.platform,
                   licensing=info.licensing, peer=conn.peer)
        reply = self._ok(rid)
        reply.update(session=session.id, heartbeat_ms=self.config.heartbeat_ms, lease_ttl_ms=self.config.lease_ttl_ms,
                     master=self.name)
        grace = self.grace_left_ms()
        if grace:
            reply["grace_ms"] = grace
        return reply

    def op_heartbeat(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        return self.replies.ok(rid)

    def op_bye(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        released = self.pool.release_node(session.node)
        self._journal(BYE, session.node, detail=str(len(released)))
        self._end_session(session)
        if session.conn is not None:
            session.conn.closing = True
        logs.event("bye", node=session.node, released=len(released))
        return self._ok(rid)

    def _end_session(self, session: Session) -> None:
        if self.sessions.get(session.node) is session:
            del self.sessions[session.node]
            self.pool.forget_node(session.node)
        self._held_before.pop(session.node, None)

    # ---------------------------------------------------------------- floating licenses

    def grace_left_ms(self) -> int:
        if not self._grace_until:
            return 0
        left = self._grace_until - self.loop.time()
        if left <= 0:
            self._grace_until = 0.0
            self._held_before.clear()
            logs.event("grace_over")
            return 0
        return int(left * 1000) + 1

    def _grace_denial(self, node: str, resource: str, holder: str) -> Denial | None:
        """During grace a node may only re-take what it held before the restart."""
        if not self._grace_until or not self.grace_left_ms():
            return None
        if (resource, holder) in self._held_before.get(node, ()):
            return None
        return Denial(E.GRACE, "a new master is waiting for PBXs to re-sync what they held; try again",
                      details={"retry_ms": self.grace_left_ms()})

    def op_checkout(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        parsed = checkout_fields(msg)
        if parsed.__class__ is Denial:
            return error_reply(rid, parsed)  # type: ignore[arg-type]
        resource, holder, count, interface = parsed  # type: ignore[misc]
        node = session.node
        if self._grace_until:
            denial = self._grace_denial(node, resource, holder)
            if denial is not None:
                return error_reply(rid, denial)
        outcome = self.pool.checkout(node, resource, holder, count, interface)
        if outcome.__class__ is Denial:
            return self._deny(session, rid, outcome, resource, holder)  # type: ignore[arg-type]
        lease, new = outcome  # type: ignore[misc]
        view = lease.view or self.pool.took_view(lease)
        if new and self.journal is not None:
            self.journal.rows.append((self.wall, GRANT, node, resource, holder, lease.id, view.label))
        prefix = view.packed
        if prefix is None:
            prefix = view.packed = self.replies.grant_prefix(view.wire)
        return self.replies.grant(rid, lease.id, prefix)

    def op_checkin(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        lease_id = checkin_fields(msg)
        if lease_id.__class__ is Denial:
            return error_reply(rid, lease_id)  # type: ignore[arg-type]
        lease = self.pool.checkin(session.node, lease_id)  # type: ignore[arg-type]
        if lease is not None and self.journal is not None:
            self.journal.rows.append((self.wall, CHECKIN, session.node, lease.resource, lease.holder, lease.id))
        return self.replies.ok(rid)

    def op_sync(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        entries = messages.sync(msg)
        if isinstance(entries, Denial):
            return error_reply(rid, entries)
        # During grace, entries the node did not hold before the restart wait (`grace`).
        denied_early: list[tuple[int, SyncEntry, Denial]] = []
        allowed: list[tuple[int, SyncEntry]] = []
        for i, entry in enumerate(entries):
            denial = self._grace_denial(session.node, entry.resource, entry.holder) if self._grace_until else None
            if denial is None:
                allowed.append((i, entry))
            else:
                denied_early.append((i, entry, denial))
        result = self.pool.sync(session.node, [entry for _, entry in allowed])
        self._held_before.pop(session.node, None)  # what it did not re-take is free from now on
        for lease in result.released:
            self._journal(RELEASE, session.node, lease.resource, lease.holder, lease.id)
        granted = []
        for lease in result.granted:
            view = self.pool.took_view(lease)
            self._journal(GRANT, session.node, lease.resource, lease.holder, lease.id, view.label)
            granted.append({"resource": lease.resource, "holder": lease.holder, "lease": lease.id, "took": view.wire})
        denied = [{"index": allowed[i][0], "resource": e.resource, "holder": e.holder, **d.to_wire()} for i, e, d in result.denied]
        denied += [{"index": i, "resource": e.resource, "holder": e.holder, **d.to_wire()} for i, e, d in denied_early]
        for item in denied:
            self._journal("deny", session.node, item["resource"], item["holder"], None, item["error"], item.get("rule"))
        denied.sort(key=lambda d: d["index"])
        reply = self._ok(rid)
        reply.update(leases=granted, denied=denied, released=len(result.released))
        return reply

    def op_takeover(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        failed = messages.takeover(msg)
        if isinstance(failed, Denial):
            return error_reply(rid, failed)
        moved = self.pool.takeover(session.node, failed)
        if isinstance(moved, Denial):
            return self._deny(session, rid, moved, "takeover", failed)
        self._journal(TAKEOVER, session.node, detail=failed)
        if failed in self._held_before:
            self._held_before.setdefault(session.node, set()).update(self._held_before.pop(failed))
        old = self.sessions.pop(failed, None)
        self.pool.forget_node(failed)
        if old is not None and old.conn is not None:
            old.conn.session = None
            old.conn.close({"event": "fenced", "reason": f"taken over by {session.node}"})
        logs.event("takeover", standby=session.node, failed=failed, moved=len(moved))
        reply = self._ok(rid)
        reply.update(moved=len(moved), leases=[
            {"resource": lease.resource, "holder": lease.holder, "lease": lease.id, "took": self.pool.took_view(lease).wire}
            for lease in moved])
        return reply

    # ---------------------------------------------------------------- user licenses

    def op_assign(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        return self._configure(session, rid, msg, assign=True)

    def op_unassign(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        return self._configure(session, rid, msg, assign=False)

    def _configure(self, session: Session, rid: int, msg: dict[str, Any], *, assign: bool) -> Reply:
        parsed = messages.assignment(msg)
        if isinstance(parsed, Denial):
            return error_reply(rid, parsed)
        user, families = parsed
        op = self.pool.assign if assign else self.pool.unassign
        result = op(session.node, user, families)
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
        for family, version in result.changed:
            self._journal("assign" if assign else "unassign", session.node, family, user, None, str(version))
        reply = self._ok(rid)
        reply.update(took=result.took, warnings=[{"rule": w.rule, "message": w.message} for w in result.warnings])
        return reply

    # ---------------------------------------------------------------- reading

    def op_recording(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        """May this PBX record waiting queues, conference rooms or its gateway? (R-REC-1; an
        extension: a question, nothing is taken.)"""
        denial = self.pool.recording_allowed()
        if denial is not None:
            return error_reply(rid, denial)
        return self._ok(rid)

    def op_usage(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        reply = self._ok(rid)
        reply.update(pools=self.pool.usage(), nodes=self.node_list(), master=self.name, grace_ms=self.grace_left_ms(),
                     standby_of=self.standby_of or None, replicas=len(self.replicas))
        return reply

    def node_list(self) -> list[dict[str, Any]]:
        now = self.loop.time()
        return [{"node": s.node, "role": s.info.role, "firmware": s.info.firmware, "platform": s.info.platform,
                 "licensing": s.info.licensing, "connected": s.conn is not None,
                 "leases": len(self.pool.node_leases(s.node)), "idle_ms": int((now - s.last_seen) * 1000)}
                for s in sorted(self.sessions.values(), key=lambda s: s.node)]

    # ================================================================ replication (master side)

    def op_replicate(self, session: Session, rid: int, msg: dict[str, Any]) -> Reply:
        """A standby master asks to follow: a snapshot now, then each journal batch's changes."""
        if session.info.role != "observer" or session.conn is None:
            return error_reply(rid, E.bad_request("role", "only an observer (a standby master) may replicate"))
        self.replicas.add(session.conn)
        leases = [[lease.node, lease.resource, lease.holder, lease.id] for lease in self.pool.leases.values()]
        assignments = [[user, family, a.bucket.version if a.bucket else None, a.node]
                       for user, held in self.pool.users.items() for family, a in held.items()]
        logs.event("replica_attached", node=session.node, leases=len(leases), assignments=len(assignments))
        reply = self._ok(rid)
        reply.update(leases=leases, assignments=assignments)
        return reply

    def _replicate_batch(self, batch: list[tuple[Any, ...]]) -> None:
        """Called with each journal batch before it is written: its state changes to every replica."""
        if not self.replicas:
            return
        rows = [list(row[1:7]) + [None] * (7 - len(row)) for row in batch if row[1] in REPLICATED]
        if not rows:
            return
        event = {"event": "replica", "rows": rows}
        for conn in list(self.replicas):
            if conn.closing or conn.transport is None:
                self.replicas.discard(conn)
            else:
                conn.send_event(event)

    def _follow(self, master: str) -> None:
        assert self.store is not None
        self.follower = Follower(master, self.name, self.store, self.config.effective_takeover_after_ms, self.promote,
                                 auth=self._peer_auth(), tls=self._peer_ssl)
        self.follower.start()

    def step_down(self, peer: str, peer_epoch: int) -> None:
        """A peer is the master at a higher epoch: this one was deposed without knowing (cut off
        while its standby took over). Its PBXs are told `shutdown` with the master to use, its
        sessions end, and it follows the peer as its standby master from now on."""
        logs.event("stepping_down", logging.WARNING, peer=peer, epoch=peer_epoch, own_epoch=self.epoch,
                   sessions=len(self.sessions))
        self._journal("step_down", detail=f"{peer} is the master at epoch {peer_epoch} > {self.epoch}")
        self.standby_of = peer
        event = {"event": "shutdown", "reason": f"{peer} is the master (epoch {peer_epoch})", "master": peer}
        for conn in list(self.connections):
            if conn not in self.replicas:
                conn.close(event)
        for session in list(self.sessions.values()):
            self.pool.release_node(session.node)
            self._journal(BYE, session.node, detail="stepped down")
            self._end_session(session)
        self._grace_until = 0.0
        self._held_before.clear()
        self._follow(peer)

    def promote(self, holdings: Holdings, master_epoch: int) -> None:
        """The master is gone: this standby takes over, with a higher epoch, the replicated user
        assignments, and a grace window in which PBXs re-take what they held."""
        assert self.store is not None
        self.standby_of = ""
        self.epoch = max(self.epoch, master_epoch) + 1
        self.store.set_meta("epoch", str(self.epoch))
        self.replies = ReplyEncoder(self.epoch)
        self.pool = Pool(self.store.hardware())
        self._licenses_valued_on = self.today()
        self.pool.install(load_files(self.config.licenses).licenses, today=self._licenses_valued_on)
        for user, family, version, node in self.store.assignments():
            self.pool.restore_assignment(user, family, version, node)
        self._held_before = holdings.held()
        grace = self.config.effective_grace_ms
        self._grace_until = self.loop.time() + grace / 1000 if grace else 0.0
        self._journal("promote", detail=f"epoch={self.epoch}")
        for conn in list(self.connections):
            conn.send_event({"event": "epoch", "epoch": self.epoch, "master": self.name})
        logs.event("promoted", logging.WARNING, master=self.name, epoch=self.epoch, users=len(self.pool.users),
                   held=sum(len(v) for v in self._held_before.values()), grace_ms=grace)

    # ================================================================ expiry

    async def _reap(self) -> None:
        """Sessions silent for lease_ttl_ms have failed: their floating leases go back."""
        ttl = self.config.lease_ttl_ms / 1000
        tick = min(self.config.heartbeat_ms, self.config.lease_ttl_ms / 8) / 1000
        while True:
            await asyncio.sleep(tick)
            now = self.loop.time()
            for session in [s for s in self.sessions.values() if now - s.last_seen > ttl]:
                self.expire(session, now - session.last_seen)
            if self._grace_until:
                self.grace_left_ms()
            self.revalue_at_date_change()

    def expire(self, session: Session, silent_s: float) -> None:
        released = self.pool.release_node(session.node)
        self._journal(EXPIRE, session.node, detail=str(len(released)))
        self._end_session(session)
        if session.conn is not None:
            session.conn.session = None
            session.conn.close({"event": "fenced", "reason": "expired: nothing heard within lease_ttl_ms"})
        logs.event("expire", logging.WARNING, node=session.node, released=len(released), silent_ms=int(silent_s * 1000))

