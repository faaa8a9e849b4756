"""The master's lifecycle: start and stop, storage, the listener and TLS, the license set, role
changes (promote, step down), peers, and the reaper. Requests are the dispatcher's (dispatch.py);
the role is one state machine (role.py); sessions end one way (sessions.py).

`Master` is also the controller the in-process harness uses: `await master.start()` /
`await master.stop()`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import logging
import math
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from licmaster.daemon import cover, logs, reload_requests
from licmaster.daemon.config import Config
from licmaster.daemon.dispatch import Dispatcher
from licmaster.daemon.ha.etcd import Etcd, EtcdClient
from licmaster.daemon.ha.failover import Failover
from licmaster.daemon.ha.feed import ReplicaFeed
from licmaster.daemon.ha.leadership import Leadership
from licmaster.daemon.ha.recovery import Holdings, holdings_at_end
from licmaster.daemon.ha.replication import Follower, PeerWatch, acting_master
from licmaster.daemon.protocol import Connection
from licmaster.daemon.role import Role, RoleMachine
from licmaster.daemon.sessions import End, held_until
from licmaster.daemon.site_usage import SiteUsage
from licmaster.daemon.status import ABSENT_SHOWN, AbsentPbx, MasterStatus, PoolStatus, coordination_without_etcd
from licmaster.daemon.storage.datadir import DataDirBusy, DataDirLock
from licmaster.daemon.storage.journal import STOPPED_SERVING, Journal
from licmaster.daemon.storage.store import Store
from licmaster.licenses.files import LoadResult, load_files
from licmaster.licenses.files import installed_by_family as files_by_family
from licmaster.licenses.identity import installation_id
from licmaster.licenses.policy import describe as describe_policy
from licmaster.licenses.policy import load_policy
from licmaster.licenses.signing import SigningError, Verifier
from licmaster.licenses.terms import Term, terms
from licmaster.licenses.verdict import verdict
from licmaster.model.errors import Denial
from licmaster.model.inventory import Bucket, ReloadReport
from licmaster.model.pool import Pool
from licmaster.model.sites import Policy, PolicyError
from licmaster.model.types import Node, Problem
from licmaster.wire import events


class StartError(RuntimeError):
    """The master cannot start (license files with errors, a port in use, ...)."""


class Master:
    def __init__(self, config: Config, *, name: str = "licmaster",
                 etcd_client: Callable[[Sequence[str]], EtcdClient] = Etcd, io_executor: Executor | None = None,
                 lease_tag: Callable[[], int] | None = None) -> None:
        self.config = config
        self.name = name
        self.etcd_client = etcd_client  # a seam: the real etcd client, or a model of etcd (licmaster/testing/etcd_model.py)
        self.io_executor = io_executor  # a seam: the journal's writer (a thread; inline on a simulation's virtual time)
        self.lease_tag = lease_tag  # a seam: the random tag of each pool's lease ids (a simulation draws it from its seed)
        self.role = RoleMachine(on_change=self._role_changed)
        self.feed = ReplicaFeed(on_change=self._standbys_changed)
        self.store: Store | None = None
        self.journal: Journal | None = None
        self.address: tuple[str, int] | None = None
        self.follower: Follower | None = None
        self._lock: DataDirLock | None = None
        self.last_reload: dict[str, Any] | None = None  # the last reload's outcome, until the next one
        self._grace_until = 0.0  # the grace window's end when the leadership was last suspended
        self._recording: asyncio.Task[None] | None = None  # writing the in-sync record to etcd
        self._record_again = False
        self.leadership: Leadership | None = None
        self.peer_watch: PeerWatch | None = None
        self.today: Callable[[], dt.date] = dt.date.today  # the calendar SSA terms are read against
        self._dispatch: Dispatcher | None = None
        self._server: asyncio.AbstractServer | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._peer_ssl: ssl.SSLContext | None = None  # how this master speaks to the others (see _peer_tls)
        self._licenses_valued_on = dt.date.min  # the day the installed licenses were last evaluated
        self._last_good: LoadResult | None = None  # the license set in force: kept when a newer one is broken
        self.policy: Policy | None = None  # the site policy in force (config `policy`), with the license set
        self.site_usage = SiteUsage()
        self._verifier: Verifier | None = None  # with vendor_keys: every license file signed for this installation

    @property
    def started(self) -> bool:
        """Storage open and a pool built: `status()` and `dispatch` may be read."""
        return self._dispatch is not None

    @property
    def dispatch(self) -> Dispatcher:
        if self._dispatch is None:
            raise RuntimeError("the master is not started")
        return self._dispatch

    @property
    def pool(self) -> Pool:
        return self.dispatch.pool

    @property
    def epoch(self) -> int:
        return self.dispatch.epoch

    # ================================================================ lifecycle

    async def start(self, *, listen: bool = True) -> None:
        """Open storage, build the pool, take a role, and (unless `listen` is False, as in the
        in-process harness) listen for PBXs. (The console is started beside it: serve.py.)"""
        cfg = self.config
        try:  # first of all: a second master on this data directory must not even write its journal
            self._lock = DataDirLock.acquire(Path(cfg.data_dir))
        except DataDirBusy as exc:
            raise StartError(str(exc)) from None
        except OSError as exc:
            raise StartError(f"cannot use the data directory {cfg.data_dir}: {exc.strerror or exc}") from None
        try:
            await self._start(listen)
        except BaseException:
            await self._close_storage()
            self._release_lock()
            raise

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def _start(self, listen: bool) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        if cfg.vendor_keys:
            try:
                self._verifier = Verifier.from_files(cfg.vendor_keys, installation_id(cfg.hardware_id))
            except SigningError as exc:
                raise StartError(f"vendor_keys: {exc}") from None
        else:
            logs.event("licenses_unverified", logging.WARNING,
                       hint="no vendor_keys configured: license files are loaded unsigned, as anyone may edit them")
        loaded = self._load_licenses()
        if not loaded.ok:
            raise StartError("license files have errors:\n" + "\n".join(f"  {p}" for p in loaded.errors))
        try:
            self.policy = self._load_policy(loaded)
        except PolicyError as exc:
            raise StartError("the site policy has errors:\n" + "\n".join(f"  {p}" for p in exc.problems)) from None
        self._last_good = loaded
        try:
            self._peer_ssl = self._peer_tls()
        except (OSError, ssl.SSLError) as exc:
            raise StartError(f"cannot load tls_ca/tls_cert to verify the other masters: {exc}") from None
        following = cfg.standby_of if not cfg.etcd_endpoints else ""
        if (cfg.standby_of or cfg.peers) and not cfg.etcd_endpoints:
            logs.event("two_node_mode", logging.WARNING, hint="a standby master without etcd: while the two masters are cut "
                       "apart both serve one pool (docs/operations.md); etcd_endpoints make it one pool under any partition")
        if cfg.peers and not following and not cfg.etcd_endpoints:
            timeout_s = min(2.0, max(0.2, cfg.effective_takeover_after_ms / 1000))
            acting = await acting_master(cfg.peers, self.name, auth=self._peer_auth(), tls=self._peer_ssl, timeout_s=timeout_s)
            if acting is not None:
                following, peer_epoch = acting
                logs.event("peer_is_master", logging.WARNING, peer=following, epoch=peer_epoch,
                           action="following it as its standby master")
        data = Path(cfg.data_dir)
        self.store = Store(data / "state.sqlite3", fsync=cfg.fsync)
        self.journal = Journal(data / "journal.sqlite3", flush_ms=cfg.journal_flush_ms,
                               keep_s=cfg.journal_keep_days * 86_400 if cfg.journal_keep_days else None,
                               snapshot=self._live_leases, executor=self.io_executor)
        dispatch = self._dispatch = Dispatcher(cfg, self.name, self.role, loop, self.feed, self.record, self.status)
        dispatch.journal_rows, dispatch.store = self.journal.rows, self.store
        if self.lease_tag is not None:
            dispatch.lease_tag = self.lease_tag
        dispatch.denials.listeners.append(self.site_usage.on_denial)
        self.site_usage.set_policy(self.policy)
        dispatch.install(self._build_pool(loaded, "licenses"), self.store.next_epoch())
        had_run, changes = self.journal.begin_run()
        # What the PBXs may hold as this process knows it, for an election won with no master to
        # follow: the last run's end (its journal), until this master gives way (_keep_holdings).
        self._held_last = holdings_at_end(changes)
        self._held_last_complete = self.journal.last_run_clean
        self.failover = Failover(self.role, dispatch.grace, self.record, grace_s=cfg.effective_grace_ms / 1000)
        self.journal.before_flush.append(self.feed.before_flush)
        # Synchronous replication (daemon/ha/feed.py): one push per loop turn; a standby that has not
        # acknowledged within half the takeover delay is dropped, the master then serving alone.
        self.feed.door, self.feed.clock, self.feed.schedule = self.journal.door, loop.time, loop.call_soon
        self.feed.ack_timeout_s = cfg.effective_takeover_after_ms / 2000
        self.journal.start()
        self.record(events.START, detail=f"epoch={self.epoch}")
        if listen:
            await self._listen()
        self._reaper = loop.create_task(self._reap(), name="session-reaper")
        if cfg.etcd_endpoints:
            self.role.change(Role.STANDBY, "waiting for the election in etcd")
            address = self._advertised()
            self.leadership = Leadership(self.etcd_client(cfg.etcd_endpoints), f"{cfg.etcd_prefix.rstrip('/')}/leader", self.name, address,
                                         ttl_s=cfg.etcd_ttl_s, on_won=self._won, on_follow=self._follow_leader,
                                         on_suspend=self._suspend, on_resume=self._resume, on_lost=self._lost,
                                         on_confirmed=self._confirmed,
                                         in_sync=lambda: self.follower is not None and self.follower.whole)
            self.feed.recorded = True
            dispatch.on_unconfirmed = self._unconfirmed
            self.leadership.start()
        elif following:
            self.role.change(Role.STANDBY, "configured as a standby master" if cfg.standby_of else "a peer is the master",
                             following=following)
            self._follow(following)
        elif had_run:  # after a clean stop while serving, the journal has every grant it answered
            self.adopt(self._held_last)
            dispatch.grace.open("restarted: PBXs re-take what they held first", self._held_last.held(),
                                complete=self._held_last_complete, until=loop.time() + cfg.effective_grace_ms / 1000)
        else:
            self.role.change(Role.ACTING, "started")
        if cfg.peers:  # with etcd too: a leader cut from etcd learns from its peers that another one won
            self.peer_watch = PeerWatch(cfg.peers, self.name, auth=self._peer_auth(), tls=self._peer_ssl,
                                        interval_s=cfg.effective_takeover_after_ms / 1000, epoch=lambda: self.epoch,
                                        acting=lambda: self.role.serving, on_newer=self.step_down,
                                        on_behind=None if cfg.etcd_endpoints else self.catch_up_epoch,
                                        address=self._advertised(), standbys=self.feed.in_sync_names)
            self.peer_watch.start()
        warnings = self._verdict_warnings("licenses", loaded)  # `licmaster check`'s, as a reload logs them
        listening = f"{self.address[0]}:{self.address[1]}" if self.address else "-"
        logs.event("started", master=self.name, role=self.role.state.value, standby_of=following or "-", listen=listening,
                   epoch=self.epoch, data_dir=str(data.resolve()), licenses=len(self.pool.installed),
                   grace_ms=dispatch.grace_left_ms(), users=len(self.pool.users),
                   held_before=sum(len(v) for v in dispatch.grace.held.values()), warnings=len(warnings))

    async def _listen(self) -> None:
        cfg = self.config
        host, port = cfg.listen_address
        try:
            tls = self.tls()
        except (OSError, ssl.SSLError) as exc:
            await self._close_storage()
            raise StartError(f"cannot load tls_cert/tls_key: {exc}") from None
        try:
            self._server = await asyncio.get_running_loop().create_server(
                self.new_connection, host, port, ssl=tls, backlog=1024, reuse_address=True)
        except OSError as exc:
            await self._close_storage()
            raise StartError(f"cannot listen on {cfg.listen}: {exc.strerror or exc}") from None
        sock = self._server.sockets[0].getsockname()
        self.address = (sock[0], sock[1])

    @property
    def license_set(self) -> LoadResult | None:
        """The license files in force (the last set loaded without error)."""
        return self._last_good

    def console_urls(self) -> list[str]:
        """The consoles of this installation's masters this one knows: its own first, then its
        peers' as they last told it (the dashboard goes to them when this master is gone)."""
        own = [self.dispatch.console_url] if self._dispatch is not None and self.dispatch.console_url else []
        peers = [str(p["http"]) for p in self.peer_states() if p.get("http")]
        return [*own, *(url for url in peers if url not in own)]

    def peer_states(self) -> list[dict[str, Any]]:
        """What this master last saw of each peer (the console's HA view)."""
        return self.peer_watch.states() if self.peer_watch else []

    def new_connection(self) -> Connection:
        """A connection's protocol object, for the listener or for the in-process harness."""
        return Connection(self.dispatch, max_frame=self.config.max_frame, hello_timeout_s=self.config.hello_timeout_ms / 1000)

    def _build_pool(self, loaded: LoadResult, what: str) -> Pool:
        """The one way a pool is built (start, promote): the hardware ever installed (R-HW-1), the
        license set, the durable user assignments."""
        assert self.store is not None
        pool = Pool(self.store.hardware())
        self._licenses_valued_on = self.today()
        report = pool.install(loaded.licenses, today=self._licenses_valued_on)
        self._report(what, report, loaded.problems, pool)
        self.store.remember_hardware(pool.installed)
        for user, family, version, node in self.store.assignments():
            pool.restore_assignment(user, family, version, node)
        pool.set_policy(self.policy)
        return pool

    def _load_policy(self, loaded: LoadResult) -> Policy | None:
        """The site policy file of the config, checked against this license set; PolicyError."""
        if self.config.policy is None:
            return None
        return load_policy(self.config.policy, files_by_family(loaded.licenses))

    def _load_for_failover(self) -> LoadResult:
        """The license files as they are now, or the last good set if they have errors: a
        failover must not turn one broken entry into a silent partial pool."""
        loaded = self._load_licenses()
        if loaded.ok:
            self._last_good = loaded
            return loaded
        for problem in loaded.errors:
            logs.event("licenses_refused", logging.ERROR, problem=str(problem), action="keeping the last good license set")
        self.record(events.LICENSES_REFUSED, detail="; ".join(str(p) for p in loaded.errors)[:2000])
        assert self._last_good is not None
        return self._last_good

    def _load_licenses(self) -> LoadResult:
        return load_files(self.config.licenses, verifier=self._verifier)

    def record(self, event: str, node: str | None = None, resource: str | None = None, holder: str | None = None,
               lease: str | None = None, detail: str | None = None, rule: str | None = None, note: str | None = None) -> None:
        """Journal an event (nothing before the journal is open)."""
        if self.journal is not None:
            self.journal.record(event, node, resource, holder, lease, detail, rule, note)

    def _role_changed(self, old: Role, new: Role, why: str) -> None:
        level = logging.WARNING if new in (Role.STEPPING_DOWN, Role.STANDBY) and old is not Role.STARTING else logging.INFO
        logs.event("role", level, old=old.value, new=new.value, why=why, following=self.role.following or "-")
        self.record(events.ROLE, detail=f"{old.value} -> {new.value}: {why}")

    def _standbys_changed(self, standbys: int, why: str) -> None:
        """Without an in-sync standby the master keeps serving, alone (degraded: a failover now
        would find no standby), and says so. With etcd, the in-sync record follows (_record_in_sync)."""
        if standbys == 0:
            logs.event("replication_degraded", logging.WARNING, why=why, standbys=0,
                       action="serving on alone; a failover now would find no in-sync standby master")
            self.record(events.REPLICA_LOST, detail=why)
        else:
            logs.event("replicating_to", standbys=standbys, why=why)
        self._schedule_record()

    def _schedule_record(self) -> None:
        """Bring the in-sync record in etcd to what the feed has (a standby attached or left, the
        leadership resumed after a suspension that stopped a write)."""
        if self.leadership is not None and self.leadership.leading:
            self._record_again = True
            if self._recording is None or self._recording.done():
                self._recording = asyncio.get_running_loop().create_task(self._record_in_sync(), name="in-sync-record")

    async def _record_in_sync(self) -> None:
        """Write the in-sync standbys to etcd until the record says what the feed has; a standby
        that left holds replies back until the record no longer names it (daemon/ha/feed.py)."""
        assert self.leadership is not None
        while self._record_again:
            self._record_again = False
            names = self.feed.in_sync_names()
            if await self.leadership.record_in_sync(names):
                self.feed.left(names)
            elif not self.leadership.leading or self.leadership.suspended:
                self.feed.left([])  # no longer leading: its PBXs' connections are closed, nothing waits
                return
            else:
                self._record_again = True
                await asyncio.sleep(0.1)  # etcd slow or unreachable: the deadline suspends this master if it lasts

    def _live_leases(self) -> list[tuple[str, str, str, str, str]] | None:
        """Every live lease, for a journal checkpoint; none while a grace window runs (the pool
        does not yet hold what the PBXs will re-take) or on a standby (it holds no leases)."""
        if self.role.state is not Role.ACTING:
            return None
        book = self.pool.book
        return [(lease.node, lease.resource, lease.holder, lease.id, book.view(lease).label) for lease in self.pool.leases.values()]

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

    def tls(self) -> ssl.SSLContext | None:
        """The server side of TLS, for the PBX listener and the console; None without tls_cert."""
        if not self.config.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return ctx

    async def stop(self, reason: str = "stopping") -> None:
        """The `shutdown` event to every session, then a clean close of everything."""
        serving = self.role.serving  # the stop row says so: only a run that served knows every grant (Journal.last_run_clean)
        if self._reaper:
            self._reaper.cancel()
        if self.follower:
            await self.follower.stop()
        if self.peer_watch:
            await self.peer_watch.stop()
        if self.leadership:
            await self.leadership.stop()
        if self._server:
            self._server.close()
        if self.role.state is not Role.STOPPED:
            self.role.change(Role.STOPPED, reason)
        if self._dispatch is not None:
            self._dispatch.denials.close(asyncio.get_running_loop().time())  # the demands still open too
        if self._dispatch is not None:
            event = {"event": "shutdown", "reason": reason}
            self._dispatch.sessions.end_all(End.SHUTDOWN, event=event)
            for conn in list(self._dispatch.connections):
                conn.close(event)
        if self._server:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # let the transports flush and close
        self.record(events.STOP, detail=reason, note=STOPPED_SERVING if serving else None)
        await self._close_storage()
        self._release_lock()
        logs.event("stopped", master=self.name, reason=reason)

    async def _close_storage(self) -> None:
        if self.journal:
            await self.journal.close()
            self.journal = None
            if self._dispatch is not None:
                self._dispatch.journal_rows = None
        if self.store:
            self.store.close()
            self.store = None

    # ================================================================ the license set

    def terms(self) -> list[Term]:
        """The license set's SSA ends and rentals, with the days left (console, metrics, dashboard)."""
        loaded = self.license_set
        return terms(loaded.licenses, self.today()) if loaded is not None else []

    def sites_usage(self) -> list[dict[str, Any]]:
        """Per site and family under the site policy: held, reserve, max, over, refused."""
        return self.site_usage.rows(self.pool.enforcer)

    def reload(self, who: str = "SIGHUP", *, force: bool = False) -> ReloadReport | None:
        """Re-read the license files (SIGHUP, `licmaster reload`, the console). A set with errors
        (a bad signature among them) is refused whole; the old one stays. So is a set that would
        take standby cover away from a standby PBX connected now (R-STBY-2/3), unless `force`.
        `licmaster check`'s verdict on the new set is logged (`reload_warning`). The outcome is
        kept in `last_reload` (usage, /api/v1/ha, /metrics, the dashboard) until the next reload.
        On SIGHUP, each request `licmaster reload --data-dir` left (reload_requests.py) gets a
        reload of its own, with its `force`, and that reload's outcome."""
        if who == "SIGHUP":
            data_dir = Path(self.config.data_dir)
            asked = reload_requests.take(data_dir)
            if asked:
                report = None
                for request_id, forced in asked:
                    report = self._reload_once(who, forced)
                    try:
                        reload_requests.answer(data_dir, request_id, self.last_reload or {})
                    except OSError as exc:
                        logs.event("reload_unanswered", logging.WARNING, request=request_id, why=str(exc))
                return report
        return self._reload_once(who, force)

    def _reload_once(self, who: str, force: bool) -> ReloadReport | None:
        tokens = self._reload_tokens(who)  # whatever becomes of the licenses: a token is no license
        loaded = self._load_licenses()
        problems = [str(p) for p in loaded.errors]
        policy = self.policy
        if loaded.ok:
            try:
                policy = self._load_policy(loaded)
            except PolicyError as exc:
                problems = exc.problems
        lost = self._cover_lost(loaded) if not problems else []
        forceable = bool(lost) and not force
        if forceable:
            problems = [f"standby PBX {node.name} (for {node.standby_for}) could no longer take over: {denial.message} "
                        f"({denial.rule}); the set in force covers it"
                        for node, denial in lost]
        if problems:
            for problem in problems:
                logs.event("reload_refused", logging.ERROR, problem=problem, who=who)
            self.record(events.RELOAD_REFUSED, detail="; ".join(problems)[:2000], rule=lost[0][1].rule if forceable else None)
            self.last_reload = {"ok": False, "at": time.time(), "by": who, "changed": {}, "problems": problems[:50],
                                "warnings": [], "forced": False, "forceable": forceable, "tokens": tokens}
            return None
        before = self.pool.installed_by_family()
        self._last_good = loaded
        self._licenses_valued_on = self.today()
        report = self.pool.install(loaded.licenses, today=self._licenses_valued_on)
        if self.store:
            self.store.remember_hardware(self.pool.installed)
        after = self.pool.installed_by_family()
        changed: dict[str, list[Any]] = {family: [before.get(family, 0), after.get(family, 0)] for family in sorted({*before, *after})
                                         if before.get(family, 0) != after.get(family, 0)}
        if policy != self.policy:
            changed["site policy"] = [describe_policy(self.policy), describe_policy(policy)]
        self.policy = policy
        self.site_usage.set_policy(policy)
        for broken in self.pool.set_policy(policy):
            logs.event("policy_over", logging.WARNING, why=broken, hint="nothing is revoked; new checkouts wait")
        self._report("reload", report, loaded.problems, self.pool)
        warnings = self._verdict_warnings("reload", loaded)
        forced = "; ".join(f"FORCED: standby PBX {node.name} (for {node.standby_for}) lost its cover: {denial.message} "
                           f"({denial.rule})" for node, denial in lost)
        for node, denial in lost:
            logs.event("standby_cover_lost", logging.WARNING, standby=node.name, standby_for=node.standby_for or "-",
                       rule=denial.rule or "-", message=denial.message, who=who,
                       hint="a takeover by this standby PBX is refused (standby_unlicensed) until cover is back")
        said = ", ".join(f"{f} {a}->{b}" for f, (a, b) in changed.items()) or "nothing changed"
        self.record(events.RELOAD, detail=f"{said}; problems={len(report.problems)}; warnings={len(warnings)}"
                    f"{'; ' + forced if forced else ''} (by {who})"[:2000], rule=lost[0][1].rule if lost else None)
        self.last_reload = {"ok": True, "at": time.time(), "by": who, "changed": changed,
                            "problems": [str(p) for p in report.problems][:50],
                            "warnings": [p.to_dict() for p in warnings][:50], "forced": bool(lost), "tokens": tokens}
        return report

    # Where `licmaster serve` read its config (None: no file, e.g. the in-process harness): each
    # reload re-reads the console's tokens from it.
    config_file: Path | None = None

    def _reload_tokens(self, who: str) -> dict[str, Any] | None:
        """Re-read `admin_tokens`, `metrics_token` and `metrics_public` from the config file: a
        token is added or revoked without a restart. A config with any problem changes no token
        (the ones in force stay) and the outcome says why: {"ok", "changed", "problems"}.
        Only these keys are taken at a reload: the others need a restart."""
        import dataclasses  # here, beside the one method that needs them

        from licmaster.daemon.config import ConfigError, load_config

        if self.config_file is None:
            return None
        path = str(self.config_file)
        try:
            fresh = load_config(self.config_file)
        except ConfigError as exc:
            problems = [line if line.startswith(path) else f"{path}: {line}" for line in str(exc).splitlines()]
            logs.event("tokens_refused", logging.ERROR, problem="; ".join(problems), who=who, hint="the tokens in force stay")
            self.record(events.OPERATOR, detail=f"console tokens NOT reloaded, the ones in force stay: {'; '.join(problems)} "
                        f"(by {who})"[:2000])
            return {"ok": False, "changed": [], "problems": problems[:20]}
        old = self.config
        before, after = {t.token: t for t in old.admin_tokens}, {t.token: t for t in fresh.admin_tokens}
        changed = [f"{t.who} ({t.role}) added" for key, t in after.items() if key not in before]
        changed += [f"{t.who} ({t.role}) removed" for key, t in before.items() if key not in after]
        changed += [f"{t.who} ({t.role}) is now {after[key].who} ({after[key].role})" for key, t in before.items()
                    if key in after and after[key] != t]
        if fresh.metrics_token != old.metrics_token:
            changed.append("metrics_token " + ("removed" if not fresh.metrics_token else "set" if not old.metrics_token else "changed"))
        if fresh.metrics_public != old.metrics_public:
            changed.append(f"metrics_public {'true' if fresh.metrics_public else 'false'}")
        if changed:
            self.config = dataclasses.replace(old, admin_tokens=fresh.admin_tokens, metrics_token=fresh.metrics_token,
                                              metrics_public=fresh.metrics_public)
            logs.event("tokens_reloaded", changed="; ".join(changed), who=who, admin_tokens=len(fresh.admin_tokens))
            self.record(events.OPERATOR, detail=f"console tokens reloaded: {'; '.join(changed)} (by {who})"[:2000])
        return {"ok": True, "changed": changed, "problems": []}

    def _cover_lost(self, loaded: LoadResult) -> list[tuple[Node, Denial]]:
        """The standby PBXs there now whose cover this license set would take away (cover.py)."""
        nodes = [session.info for session in self.dispatch.sessions.by_node.values()]
        if not cover.standby_nodes(nodes):
            return []
        today = self.today()
        proposed = Pool(self.pool.installed, today=today)  # what is installed now, hardware kept as install() keeps it
        proposed.install(loaded.licenses, today=today)
        return cover.lost_cover(self.pool, proposed, nodes)

    def _verdict_warnings(self, what: str, loaded: LoadResult) -> list[Problem]:
        """`licmaster check`'s verdict on this license set, for the newest firmware among the PBXs
        connected (V13 with none): its warnings, each logged as `{what}_warning` (those of the
        files themselves are logged as `{what}_problem` already), and returned."""
        nodes = [session.info for session in self.dispatch.sessions.by_node.values()]
        found = verdict(loaded, cover.newest_firmware(nodes), self.today()).warnings
        for problem in found:
            if problem not in loaded.problems:
                logs.event(f"{what}_warning", logging.WARNING, rule=problem.rule or "-", where=problem.where or "-",
                           message=problem.message)
        return found

    def status(self) -> MasterStatus:
        """What this master is and holds now, as plain data: what `usage`, the console's API, its
        dashboard and /metrics render (daemon/status.py)."""
        dispatch = self.dispatch
        pool = self.pool
        sessions = list(dispatch.sessions.by_node.values())
        firmware = max((s.info.firmware for s in sessions if s.info.role != "observer"), default=None)
        by_role: dict[str, int] = {}
        for s in sessions:
            by_role[s.info.role] = by_role.get(s.info.role, 0) + 1
        pending = self.journal.pending() if self.journal is not None else []
        timer = dispatch.timer
        cfg = self.config
        return MasterStatus(
            master=self.name, role=self.role.state.value, epoch=self.epoch, following=self.role.following or None,
            grace_ms=dispatch.grace_left_ms(), listen=f"{self.address[0]}:{self.address[1]}" if self.address else None,
            advertise=self._advertised(), http=dispatch.console_url,
            pools=tuple(PoolStatus(b.family, b.version, b.bound, b.installed, b.in_use, b.peak, self._usable(b, firmware), b.to_dict())
                        for b in sorted(pool.buckets(), key=lambda b: (b.family, b.version or 0, b.bound or ""))),
            sessions_by_role=by_role, sessions_connected=sum(s.conn is not None for s in sessions), leases=pool.book.count,
            connections=len(dispatch.connections), grants=pool.book.issued(), denials=dict(dispatch.denials.totals),
            denials_by_family=dict(dispatch.denials.by_family),
            requests={"counts": list(timer.counts), "count": timer.count, "sum": timer.sum, "requests": timer.requests},
            journal_pending_rows=len(pending), journal_lag_s=max(0.0, time.time() - pending[0][0]) if pending else 0.0,
            standbys=self.feed.in_sync, degraded=self.feed.degraded, replica=self.following(),
            coordination=self.leadership.status() if self.leadership else coordination_without_etcd(
                self.role.following or None, len(self.feed), bool(cfg.standby_of or cfg.peers)),
            last_reload=self.last_reload, terms=tuple(t.to_dict() for t in self.terms()), sites=tuple(self.sites_usage()),
            standby_cover=self.standby_cover().to_dict(), peers=tuple(self.peer_states()), consoles=tuple(self.console_urls()),
            hold_s=cfg.hold_s, **self._absent_status())

    def _absent_status(self) -> dict[str, Any]:
        """The absent PBXs for status(): counts over all, the longest absent listed."""
        absent = self.dispatch.sessions.absent_sessions()
        book = self.pool.book
        now, wall = asyncio.get_running_loop().time(), time.time()
        shown = []
        for session in heapq.nsmallest(ABSENT_SHOWN, absent, key=lambda s: (s.absent_since or 0.0, s.node)):
            held: dict[str, int] = {}
            for lease in book.of_node(session.node):
                held[lease.resource] = held.get(lease.resource, 0) + 1
            shown.append(AbsentPbx(session.node, wall - (now - (session.absent_since or now)), sum(held.values()), held,
                                   held_until(session, self.config.hold_s, now, wall)))
        return {"absent_pbxs": len(absent), "absent_leases": sum(book.held_count(s.node) for s in absent),
                "absent": tuple(shown)}

    def _usable(self, bucket: Bucket, firmware: int | None) -> int:
        """What of a bucket serves `firmware` (R-VER-2: any older license of the family caps it);
        with no PBX connected (None), all of it."""
        if firmware is None or bucket.version is None:
            return bucket.installed
        return 0 if self.pool.planner.version_denial(bucket.family, firmware, "") else bucket.installed

    def standby_cover(self) -> cover.Cover:
        """Would a standby PBX's takeover be licensed now (console, /metrics, dashboard)."""
        return cover.standby_cover(self.pool, [session.info for session in self.dispatch.sessions.by_node.values()])

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
        self._report("ssa_ended", report, [], self.pool)
        self.record(events.SSA_ENDED, detail="; ".join(f"{lic.count} × {lic.type} (SSA until {lic.ssa_until})" for lic in ended)[:2000],
                    rule="R-SSA-1")
        return report

    def _report(self, what: str, report: ReloadReport, file_problems: list[Problem], pool: Pool) -> None:
        for problem in [*file_problems, *report.problems]:
            level = logging.WARNING if problem.severity == "warning" else logging.ERROR
            logs.event(f"{what}_problem", level, rule=problem.rule or "-", where=problem.where or "-", message=problem.message)
        logs.event(what, licenses=sum(lic.count for lic in pool.installed), overcommitted=len(report.overcommitted))

    # ================================================================ role changes

    def _follow(self, master: str) -> None:
        assert self.store is not None
        self.follower = Follower(master, self.name, self.store, self.config.effective_takeover_after_ms, self.promote,
                                 auth=self._peer_auth(), tls=self._peer_ssl, autonomous=not self.config.etcd_endpoints,
                                 max_frame=self.config.max_frame, advertise=self._advertised())
        self.follower.start()

    def _advertised(self) -> str:
        """The address the other masters reach this one at (the leader key's, the in-sync record's)."""
        cfg = self.config
        return cfg.advertise or (f"{self.address[0]}:{self.address[1]}" if self.address else cfg.listen)

    def following(self) -> dict[str, Any]:
        """The standby's replication state (usage, /api/v1/ha, /metrics); empty when acting."""
        return self.follower.state() if self.follower is not None and self.role.following else {}

    # ---------------------------------------------------------------- leadership in etcd

    def _won(self, epoch: int) -> None:
        """The election is won: master from now on, at the epoch etcd's revision gives. What the
        PBXs held comes from the master this one followed, or from its own journal."""
        held = self._held_last
        assert self.leadership is not None and self.journal is not None
        # Known whole: won as an in-sync standby (the leader dropped no standby from the record
        # before answering without it), or the leader before, back after a clean stop.
        complete = self.leadership.complete if self.follower is not None else self._held_last_complete
        if self.follower is not None:
            if self.follower.installed:  # else it never attached: its journal is what it knows (promote)
                held = self.follower.holdings
            asyncio.get_running_loop().create_task(self.follower.stop())
            self.follower = None
        self.failover.take_over("won the election in etcd", epoch, held, install=self._serve_at, adopt=self.adopt,
                                announce=self._announce_epoch, detail=f"epoch={epoch} (etcd revision)", complete=complete)

    def adopt(self, holdings: Holdings) -> None:
        """What the PBXs may still believe they hold, counted before anything is served (after a
        restart, a takeover, an election won): each lease adopted as it was (LeaseBook.adopt),
        journaled as a grant (so this master's own standby and journal know it), and its node's
        session absent from now: the PBX keeps it for its hold, or re-syncs, or says it holds
        nothing (docs/operations.md, "Two clocks")."""
        dispatch = self.dispatch
        now = asyncio.get_running_loop().time()
        wall = time.time()
        book = dispatch.book
        adopted, refused = book.adopt(holdings.rows())
        if self.journal is not None:  # straight into the journal's door: a city's 100,000 rows (record() per row cost 0.1 s)
            door = self.journal.rows
            view = book.view
            door.extend([(wall, events.GRANT, lease.node, lease.resource, lease.holder, lease.id, view(lease).label, None,
                          "adopted") for lease in adopted])
        for node, resource, holder, denial in refused:
            logs.event("lease_not_adopted", logging.ERROR, node=node, resource=resource, holder=holder, why=denial.message)
            self.record(events.RELEASE, node, resource, holder, None, f"not adopted: {denial.code}", denial.rule)
        for node in sorted({lease.node for lease in adopted}):
            dispatch.sessions.adopt(node, now, self.config.hold_s, wall)
        if adopted or refused:
            logs.event("adopted", leases=len(adopted), refused=len(refused), nodes=len({lease.node for lease in adopted}))

    def _serve_at(self, epoch: int) -> None:
        """A new pool at this epoch, from the license files as they are now (or the last good
        set), made durable first: the one way a master starts serving after its start."""
        assert self.store is not None
        self.store.set_meta("epoch", str(epoch))
        self.dispatch.install(self._build_pool(self._load_for_failover(), "licenses"), epoch)

    def _announce_epoch(self, epoch: int) -> None:
        for conn in list(self.dispatch.connections):
            conn.send_event({"event": "epoch", "epoch": epoch, "master": self.name})

    def _end_sessions(self, event: dict[str, Any]) -> None:
        """Giving way: every session ends (its leases released), and every connection but the
        standby masters' is told `event` and closed."""
        dispatch = self.dispatch
        dispatch.sessions.end_all(End.STEP_DOWN, event=event, detail="stepped down")
        for conn in list(dispatch.connections):
            if conn not in self.feed:
                conn.close(event)

    def _follow_leader(self, leader: str) -> None:
        if self.role.state is not Role.STANDBY or self.role.following == leader:
            return
        self.role.change(Role.STANDBY, f"{leader} holds the leadership in etcd", following=leader)
        if self.follower is not None:
            asyncio.get_running_loop().create_task(self.follower.stop())
        self._follow(leader)

    def _suspend(self, why: str) -> None:
        """The leadership can no longer be confirmed: this master confirms no lease from now on
        (a PBX's lease is valid only while a confirmed leader confirmed it within the lease TTL),
        so it sends its PBXs away at once, to whichever master leads next, and serves none until
        it can confirm again. Observers stay."""
        dispatch = self.dispatch
        self._grace_until = self.role.grace_until  # a grace window under way goes on when the leadership is renewed
        self.role.change(Role.SUSPENDED, why)
        dispatch.suspend(why)
        # The PBXs keep what they hold, for their hold (the reaper counts it: absent, then
        # expired), and this master keeps counting it: a resumed leader gives none of it away,
        # and one that loses the lead gives way (its successor counts it too: Failover.take_over).
        event = {"event": "shutdown", "reason": f"this master cannot confirm its leadership ({why[:160]}): use another"}
        for session in [s for s in dispatch.sessions.by_node.values() if s.info.role != "observer"]:
            conn, session.conn = session.conn, None
            if conn is not None:
                conn.session = None
                conn.close(event)

    def _confirmed(self, until: float) -> None:
        """The leadership renewed (or won): confirmed until this loop time."""
        if self.role.serving and self.role.state is not Role.SUSPENDED:
            self.dispatch.confirm_until = until

    def _unconfirmed(self) -> None:
        """A read came in past the deadline (the renewal did not come: this process was paused)."""
        if self.leadership is not None:
            self.leadership.expired("the leadership's deadline passed without a renewal")

    def _resume(self) -> None:
        """Renewed after a suspension (etcd back with the lease refreshed). The PBXs sent away
        are absent, within their hold, and still counted: nothing of theirs is anyone else's.
        (`slave-sim chaos`, seed 2, found a leader resumed with nothing counted.)"""
        if self.role.state is not Role.SUSPENDED:
            return  # stepped down meanwhile (a peer won): nothing to resume
        self.dispatch.resume()
        self._schedule_record()  # a write the suspension stopped (a standby attached meanwhile) is made now
        # Its book is as it was: every lease a PBX may believe is still counted (the sessions sent
        # away are absent, within their hold), so new checkouts are served from what is free at once
        # (unless a grace window after a takeover was under way: it goes on to its end).
        if self._grace_until > asyncio.get_running_loop().time():
            self.role.change(Role.GRACE, "leadership renewed, within the grace window", grace_until=self._grace_until)
        else:
            self.role.change(Role.ACTING, "leadership renewed")

    def _lost(self, leader: str | None) -> None:
        """The key is gone (or another's): stop serving at once; follow whoever leads next."""
        if not self.role.serving:
            return
        dispatch = self.dispatch
        dispatch.resume()
        dispatch.confirm_until = math.inf
        event = {"event": "shutdown", "reason": "this master no longer holds the leadership", **({"master": leader} if leader else {})}
        self._keep_holdings()
        self.failover.give_way("the leadership in etcd lapsed", end_sessions=lambda: self._end_sessions(event),
                               then="waiting for the election in etcd")

    def _keep_holdings(self) -> None:
        """Before giving way (its sessions' ends release every lease and journal a `bye`): what
        this master counts now is what the PBXs may still believe they hold. Winning the election
        again with no master followed meanwhile, it adopts that (_won), never its journal's state
        at start, which may be hours stale (`slave-sim sim --seed 61 --etcd`: a leader that lost
        its key to a 30 s quorum loss won it back, adopted the 60 leases its journal held at its
        start, and refused 5 phones their re-sync). Never known whole: a grace window follows."""
        book = self.dispatch.book
        view = book.view
        self._held_last = Holdings().apply_all(
            events.Change(events.GRANT, lease.node, lease.resource, lease.holder, lease.id, view(lease).label)
            for lease in book.all().values())
        self._held_last_complete = False

    def step_down(self, peer: str, peer_epoch: int) -> None:
        """A peer is the master at a higher epoch (or at the same, and wins the tie: PeerWatch):
        this one was deposed without knowing (cut off or paused while its standby took over). Its PBXs are told `shutdown` with the master to use, its
        sessions end, and it follows the peer as its standby master from now on."""
        self.dispatch.resume()  # a suspended master's refusing ops back to the normal ones
        event = {"event": "shutdown", "reason": f"{peer} is the master (epoch {peer_epoch})", "master": peer}
        self._keep_holdings()
        newer = f"> {self.epoch}" if peer_epoch > self.epoch else "the same as this one's, and the tie goes to it"
        self.failover.give_way(f"{peer} is the master at epoch {peer_epoch} {newer}",
                               end_sessions=lambda: self._end_sessions(event), then="stepped down", following=peer)
        self._follow(peer)

    def catch_up_epoch(self, peer: str, peer_epoch: int) -> None:
        """Its standby master is at a higher epoch than this acting one (two-node): that peer
        served up to that epoch before this master took over from it without learning it (this
        one was started or paused while the peer served, and the peer then died). The PBXs that
        peer served refuse a master at a lower epoch than they saw (deposed, to them), so they
        would be served by nobody. This master takes the peer's epoch (its pool and leases as
        they are: only the epoch in its replies changes), keeps it across a restart, and tells
        every connection (`epoch`). Its standby, taking over later, goes one higher."""
        old = self.epoch
        self.dispatch.raise_epoch(peer_epoch)
        if self.store is not None:
            self.store.set_meta("epoch", str(peer_epoch))
        why = f"epoch {old} -> {peer_epoch}: its standby master {peer} is at epoch {peer_epoch}"
        self.record(events.ROLE, detail=f"{self.role.state.value} -> {self.role.state.value}: {why}")
        logs.event("epoch_raised", logging.WARNING, master=self.name, epoch=peer_epoch, was=old, standby=peer)
        self._announce_epoch(peer_epoch)

    def promote(self, holdings: Holdings, master_epoch: int) -> None:
        """The master is gone: this standby takes over, with a higher epoch, the replicated user
        assignments and every lease adopted. Its stream whole when the master went silent
        (synchronous replication: every grant answered was acknowledged by it, or it was told
        `replica_dropped`), it knows every lease a PBX may believe and serves at once; else a
        grace window lets the PBXs re-sync first. (Cut apart rather than dead, the two serve
        alike: the two-node trade-off, docs/operations.md.)"""
        epoch = max(self.epoch, master_epoch) + 1
        complete = self.follower is not None and self.follower.whole
        if self.follower is None or not self.follower.installed:
            # It never attached since it started (the master died meanwhile): the stream told it
            # nothing, and what it knows is its own journal, the last run's end. (`slave-sim sim
            # --seed 300`: a standby restarted while its master was being killed took over with
            # nothing counted, and gave away a cut-off PBX's four Ports: 61 believed of 60.)
            holdings = self._held_last
        self.failover.take_over("the master is gone: taking over", epoch, holdings, install=self._serve_at, adopt=self.adopt,
                                announce=self._announce_epoch, detail=f"epoch={epoch}", complete=complete)
        logs.event("promoted", logging.WARNING, master=self.name, epoch=epoch, users=len(self.pool.users),
                   held=len(holdings.lease_node), grace_ms=self.config.effective_grace_ms)

    # ================================================================ expiry

    async def _reap(self) -> None:
        """Sessions silent for lease_ttl_ms are absent; past their hold, their floating leases go back."""
        ttl = self.config.lease_ttl_ms / 1000
        tick = min(self.config.heartbeat_ms, self.config.lease_ttl_ms / 8) / 1000
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            self.reap(loop.time(), ttl)
            self.dispatch.grace.end_if_over(loop.time())
            self.revalue_at_date_change()

    def reap(self, now: float, ttl: float) -> None:
        """The two clocks (docs/operations.md, "Two clocks"): a session silent for a lease TTL is
        absent, and keeps its leases until `hold_s` after its last word; past that (or silent for
        a TTL while holding nothing) it expires and its leases go back. Also: abort connections
        that leave their replies unread for a lease TTL (a graceful close would wait for them for
        ever), and close the denial journal's window."""
        dispatch = self.dispatch
        sessions = dispatch.sessions
        hold = self.config.hold_s
        wall = time.time()
        book = dispatch.book
        for conn in [c for c in dispatch.connections if c.stalled_for(now) > ttl]:
            node = conn.session.node if conn.session else None
            why = f"replies unread for {int(conn.stalled_for(now) * 1000)} ms"
            logs.event("connection_aborted", logging.WARNING, peer=conn.peer, node=node or "-", why=why)
            self.record(events.ABORT, node, detail=why)
            conn.abort()
        for session in [s for s in sessions.by_node.values() if now - s.last_seen > ttl]:
            if session.conn is not None and session.conn.stalled_since is not None:
                continue  # not heard because its replies go unread and its reading stopped: aborted above, and why
            silent = now - session.last_seen
            if silent <= hold and book.held_count(session.node):
                if session.absent_since is None:
                    sessions.absent(session, now, hold, wall)
                continue
            why = "expired: nothing heard within hold_s" if session.absent_since is not None else \
                "expired: nothing heard within lease_ttl_ms"
            sessions.end(session, End.EXPIRE, event={"event": "fenced", "reason": why}, silent_ms=int(silent * 1000))
        dispatch.denials.tick(now)
        leadership = self.leadership
        if leadership is not None and leadership.leading and not leadership.suspended \
                and leadership.recorded != self.feed.in_sync_names() and (self._recording is None or self._recording.done()):
            self._schedule_record()  # a write that failed or was missed: the record heals within a tick
        for late in self.feed.drop_late(now):
            logs.event("replica_dropped", logging.WARNING, peer=getattr(late, "peer", "-"),
                       why=f"no acknowledgement within {int(self.feed.ack_timeout_s * 1000)} ms")

