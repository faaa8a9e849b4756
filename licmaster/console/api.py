"""The console's JSON API (docs/admin-api.md) and /metrics, as an aiohttp application.

Every handler reads the master's state at the moment it is asked (or the journal, for history);
the two that change something go through the master's own paths (reload, the one way a session
ends). Errors are JSON, `{"error": code, "message": ...}`, with an HTTP status; nothing a client
sends can raise out of a handler.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from licmaster.console import report as usage_report
from licmaster.console import whatif
from licmaster.console.access import allowed_origin, decide, decide_metrics
from licmaster.console.live import Live
from licmaster.console.metrics import MasterCollector
from licmaster.daemon import logs, operator
from licmaster.daemon.master import StartError
from licmaster.daemon.sessions import End
from licmaster.daemon.storage.journal import iter_rows, page
from licmaster.licenses.files import load_files
from licmaster.licenses.verdict import verdict
from licmaster.model.catalog import CURRENT_VERSION, FAMILIES, Consumption
from licmaster.model.leases import lease_number
from licmaster.wire import events

if TYPE_CHECKING:
    from licmaster.daemon.master import Master
    from licmaster.model.types import InstalledLicense

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MASTER: web.AppKey[Master] = web.AppKey("master", object)  # type: ignore[arg-type]
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
LIVE: web.AppKey[Live] = web.AppKey("live", Live)
WHO: web.RequestKey[str] = web.RequestKey("who", str)  # who asked: a token's name, or "loopback"


class Refused(Exception):
    """A request the API answers with an error status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Access first (docs/admin-api.md, "Access"); then any fault answers 500, never more."""
    master = request.app[MASTER]
    if request.path != "/" and not request.path.startswith("/static/"):  # the page holds no data: the API it asks does
        authorization = request.headers.get("Authorization")
        if authorization is None and request.path == "/api/v1/live" and request.query.get("token"):
            authorization = f"Bearer {request.query['token']}"  # EventSource cannot send headers
        cfg = master.config  # read per request: a reload may have replaced the tokens
        decision = (decide_metrics(cfg.admin_tokens, cfg.metrics_token, cfg.metrics_public, authorization, request.remote)
                    if request.path == "/metrics" and request.method in ("GET", "HEAD") else
                    decide(cfg.admin_tokens, authorization, request.remote, mutation=_changes(request)))
        if not decision.allowed:
            return _cors(request, error(decision.status, "forbidden" if decision.status == 403 else "unauthorized", decision.reason))
        request[WHO] = decision.who
    try:
        return _cors(request, await handler(request))
    except Refused as refused:
        return _cors(request, error(refused.status, refused.code, refused.message))
    except web.HTTPException as exc:
        if request.path.startswith("/api/") and exc.status in (404, 405):  # the API answers in its own JSON
            code, what = ("not_found", "no such API path") if exc.status == 404 else (
                "method_not_allowed", f"{request.method} is not allowed here")
            return _cors(request, error(exc.status, code, f"{what}: {request.path[:120]} (docs/admin-api.md)"))
        raise
    except Exception:
        logs.log.exception("console_error path=%s", request.path)
        return error(500, "internal", "internal error, logged")


def _changes(request: web.Request) -> bool:
    """Would this request change something? Only one a route takes can: a method no route takes
    there (DELETE, PUT, POST on a read) is judged as a read, so whoever may read is told 405, not 403."""
    return request.method not in ("GET", "HEAD") and request.match_info.http_exception is None


def _cors(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    master = request.app[MASTER]
    known = [m for m in (master.config.standby_of, *master.config.peers, master.role.following) if m]
    if not response.prepared and allowed_origin(origin, known):
        response.headers["Access-Control-Allow-Origin"] = origin or ""
        response.headers["Vary"] = "Origin"
    return response


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise Refused(400, "bad_request", f"{name} must be a whole number from {lo} to {hi}")
    return int(text)


def _flag(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "").lower()
    if text not in ("", "0", "1", "false", "true"):
        raise Refused(400, "bad_request", f"{name} must be true or false")
    return text in ("1", "true")


def _seconds_ago(request: web.Request, name: str) -> float | None:
    """`since` as epoch seconds, or as an age: 90s, 15m, 2h, 7d."""
    text = request.query.get(name)
    if not text:
        return None
    try:
        return usage_report.parse_age(text, time.time())
    except ValueError:
        raise Refused(400, "bad_request", f"{name} must be epoch seconds or an age such as 15m, 2h, 7d") from None


# ---------------------------------------------------------------- reading


async def usage(request: web.Request) -> web.Response:
    status = request.app[MASTER].status()
    pools = [{**p.wire, "peak": p.peak, "usable": p.usable} for p in status.pools]
    return web.json_response({"master": status.master, "role": status.role, "epoch": status.epoch,
                              "pools": pools, "denials": {f"{c}" + (f" ({r})" if r else ""): n for (c, r), n in sorted(
                                  status.denials.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))},
                              "grants": status.grants, "last_reload": status.last_reload,
                              "terms": list(status.terms), "sites": list(status.sites), "standby_cover": status.standby_cover,
                              "absent": status.absent_wire()})  # PBXs silent past the TTL, still holding (two clocks)


def _node(master: Master, name: str) -> dict[str, Any]:
    session = master.dispatch.sessions.get(name)
    if session is None:
        raise Refused(404, "unknown_node", f"no session of node {name[:64]!r}")
    loop_now, wall_now = asyncio.get_running_loop().time(), time.time()
    info, conn = session.info, session.conn
    peer = getattr(conn, "peer", None)
    out: dict[str, Any] = {
        "node": session.node, "role": info.role, "firmware": info.firmware if info.role != "observer" else None,
        "platform": info.platform if info.role != "observer" else None, "model": info.model, "mac": info.mac,
        "licensing": info.licensing, "address": f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else None,
        "connected": conn is not None, "connected_since": wall_now - (loop_now - session.since),
        "last_seen": wall_now - (loop_now - session.last_seen), "leases": len(master.pool.node_leases(name)),
        # absent (silent for a lease TTL, still holding): since when, and when its leases go back
        "absent_since": None if session.absent_since is None else wall_now - (loop_now - session.absent_since),
        "back_at": None if session.absent_since is None else
        wall_now - (loop_now - session.last_seen) + master.config.hold_s,
    }
    return out


def _held_page(master: Master, name: str, after: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """A node's leases in the order granted (lease ids count up), after the lease `after`, and the
    cursor of the next page (None on the last)."""
    after_number = lease_number(after) if after is not None else 0
    if after_number is None:
        raise Refused(400, "bad_request", "cursor must be the next_cursor of an earlier page (a lease id)")
    leases = sorted(master.pool.node_leases(name), key=lambda lease: lease_number(lease.id) or 0)
    if after is not None:
        leases = [lease for lease in leases if (lease_number(lease.id) or 0) > after_number]
    chosen = leases[:limit]
    session = master.dispatch.sessions.get(name)
    assert session is not None
    connected_since = time.time() - (asyncio.get_running_loop().time() - session.since)
    since = _grant_times(master, name, connected_since - 1.0) if chosen else {}
    held = [{"resource": lease.resource, "holder": lease.holder, "lease": lease.id,
             "took": master.pool.took_view(lease).wire, "since": since.get(lease.id)} for lease in chosen]
    return held, chosen[-1].id if len(leases) > limit else None


def _grant_times(master: Master, node: str, since: float) -> dict[str, float]:
    """When each of a node's leases was granted, from the journal (written and pending rows).
    Only the journal since its session began is read: its leases were granted in that session."""
    times: dict[str, float] = {}
    path = Path(master.config.data_dir) / "journal.sqlite3"
    cursor: str | None = None
    while True:
        rows, cursor = page(path, event=events.GRANT, node=node, since=since, limit=10_000, cursor=cursor)
        times.update({r["lease"]: r["ts"] for r in rows})
        if cursor is None:
            break
    for row in master.journal.pending() if master.journal else []:
        if row[events.EVENT] == events.GRANT and row[events.NODE] == node:
            times[row[events.LEASE]] = row[events.TS]
    return times


async def nodes(request: web.Request) -> web.Response:
    """A page of the sessions in name order: `cursor` (the `next_cursor` before), `limit`."""
    master = request.app[MASTER]
    limit = _int(request, "limit", 500, 1, 1000)
    cursor = request.query.get("cursor") or None
    if cursor is not None and (len(cursor) > 64 or not cursor.isprintable()):
        raise Refused(400, "bad_request", "cursor must be the next_cursor of an earlier page (a node name)")
    names = sorted(master.dispatch.sessions.by_node)
    start = bisect.bisect_right(names, cursor) if cursor is not None else 0
    chosen = names[start:start + limit]
    return web.json_response({"nodes": [_node(master, n) for n in chosen], "total": len(names),
                              "next_cursor": chosen[-1] if chosen and start + limit < len(names) else None})


async def node(request: web.Request) -> web.Response:
    """One session, and a page of the floating leases it holds (`cursor`, `limit`)."""
    master = request.app[MASTER]
    name = request.match_info["node"]
    out = _node(master, name)
    out["held"], out["next_cursor"] = _held_page(master, name, request.query.get("cursor") or None,
                                                 _int(request, "limit", 1000, 1, 10_000))
    return web.json_response(out)


async def family(request: web.Request) -> web.Response:
    """Who holds one license family across every node (FlexNet's `lmstat -a`): a page of the
    floating leases that took units of it, in node name then grant order, or, for a user
    license (PBX-UC, App(...)), a page of the users it is assigned to, in name order."""
    master = request.app[MASTER]
    name = request.match_info["family"]
    spec = FAMILIES.get(name)
    if spec is None:
        raise Refused(404, "unknown_family", f"no license family {name[:64]!r} (e.g. PBX-Port, PBX-Operator, App(phone))")
    limit = _int(request, "limit", 1000, 1, 10_000)
    cursor = request.query.get("cursor") or None
    if cursor is not None and (len(cursor) > 200 or not cursor.isprintable()):
        raise Refused(400, "bad_request", "cursor must be the next_cursor of an earlier page")
    buckets = [b for b in master.pool.buckets() if b.family == name]
    out: dict[str, Any] = {"family": name, "consumption": spec.consumption.value,
                           "installed": sum(b.installed for b in buckets), "in_use": sum(b.in_use for b in buckets)}
    if spec.consumption is Consumption.USER:
        assert master.store is not None
        rows = master.store.db.execute("SELECT user, version, node, since FROM assignments WHERE family = ? AND user > ? "
                                       "ORDER BY user LIMIT ?", (name, cursor or "", limit + 1)).fetchall()
        out["held"], out["users"] = [], [{"user": u, "version": v, "node": n, "since": t} for u, v, n, t in rows[:limit]]
        out["next_cursor"] = rows[limit - 1][0] if len(rows) > limit else None
    else:
        out["held"], out["next_cursor"] = _family_leases(master, name, cursor, limit)
        out["users"] = []
    return web.json_response(out)


def _family_leases(master: Master, family: str, cursor: str | None, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """The leases holding units of `family`, after `cursor` ("node/lease"), at most `limit`, and
    the next page's cursor; only as many nodes are read as the page needs."""
    after_node, after_lease = "", 0
    if cursor is not None:
        after_node, _, after_id = cursor.rpartition("/")
        number = lease_number(after_id)
        if not after_node or number is None:
            raise Refused(400, "bad_request", "cursor must be the next_cursor of an earlier page (node/lease)")
        after_lease = number
    names = sorted(master.pool.nodes_holding())
    held: list[dict[str, Any]] = []
    for node_name in names[bisect.bisect_left(names, after_node):]:
        for lease in sorted(master.pool.node_leases(node_name), key=lambda held_lease: lease_number(held_lease.id) or 0):
            if node_name == after_node and (lease_number(lease.id) or 0) <= after_lease:
                continue
            took = [t for t in master.pool.took_view(lease).wire if t["family"] == family]
            if not took:
                continue
            if len(held) == limit:
                return held, f"{held[-1]['node']}/{held[-1]['lease']}"
            held.append({"node": node_name, "resource": lease.resource, "holder": lease.holder, "lease": lease.id,
                         "count": sum(t["count"] for t in took), "took": took})
    return held, None


async def journal(request: web.Request) -> web.Response:
    master = request.app[MASTER]
    limit = _int(request, "limit", 100, 1, 10_000)
    cursor = request.query.get("cursor") or None
    if cursor is not None:
        seq, _, index = cursor.partition(".")
        if not (seq.isdigit() and index.isdigit()):
            raise Refused(400, "bad_request", "cursor must be the next_cursor of an earlier page")
    path = Path(master.config.data_dir) / "journal.sqlite3"
    await master.journal.flush() if master.journal else None  # what happened up to now, not up to the last flush
    rows, next_cursor = await asyncio.get_running_loop().run_in_executor(None, lambda: page(
        path, event=request.query.get("event") or None, node=request.query.get("node") or None,
        since=_seconds_ago(request, "since"), limit=limit, cursor=cursor))
    for row in rows:  # `detail` as stored (code parses it); `detail_text` with its unit, `28 leases`
        row["detail_text"] = events.detail_text(row["event"], row["detail"])
    return web.json_response({"events": rows, "next_cursor": next_cursor})


async def denials(request: web.Request) -> web.Response:
    """Counts by code, rule and node over a window (`window` seconds, default an hour), from the
    journal: its `deny` rows and the counts its `deny_repeated` rows carry."""
    master = request.app[MASTER]
    window = _int(request, "window", 3600, 1, 366 * 86400)
    since = time.time() - window
    path = Path(master.config.data_dir) / "journal.sqlite3"
    if master.journal:
        master.dispatch.denials.flush(asyncio.get_running_loop().time())
        await master.journal.flush()
    counts: dict[tuple[str, str, str], int] = {}
    cursor: str | None = None
    while True:
        rows, cursor = page(path, since=since, limit=10_000, cursor=cursor)
        for r in rows:
            if r["event"] == events.DENY:
                key, n = (r["detail"] or "?", r["rule"] or "", r["node"] or ""), 1
            elif r["event"] == events.DENY_REPEATED:
                code, _, times = (r["detail"] or "? x0").rpartition(" x")
                key, n = (code, r["rule"] or "", r["node"] or ""), int(times) if times.isdigit() else 0
            else:
                continue
            counts[key] = counts.get(key, 0) + n
        if cursor is None:
            break
    return web.json_response({"window_s": window, "denials": [
        {"code": c, "rule": r or None, "node": n, "count": k} for (c, r, n), k in sorted(counts.items())]})


async def check(request: web.Request) -> web.Response:
    master = request.app[MASTER]
    firmware = _int(request, "firmware", CURRENT_VERSION, 1, 99)
    loaded = master.license_set
    if loaded is None:
        raise Refused(503, "not_ready", "no license set loaded yet")
    return web.json_response(verdict(loaded, firmware, master.today()).to_dict())


async def ha(request: web.Request) -> web.Response:
    status = request.app[MASTER].status()
    return web.json_response({
        "master": status.master, "role": status.role, "epoch": status.epoch, "following": status.following,
        "grace_ms": status.grace_ms, "last_reload": status.last_reload, "peers": list(status.peers),
        "replication": {"standbys": status.standbys, "in_sync": status.standbys, "degraded": status.degraded, "lag_s": status.journal_lag_s,
                        "pending_rows": status.journal_pending_rows, **status.replica},
        "coordination": status.coordination,
        # after a takeover or a restart, the PBXs not yet back are absent here, their leases adopted
        "absent": status.absent_wire(),
    })


STATIC = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


async def index(request: web.Request) -> web.StreamResponse:
    return await _static(STATIC / "index.html")


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = (STATIC / name).resolve()
    if path.parent != STATIC or path.suffix not in STATIC_TYPES or not path.is_file():
        raise Refused(404, "not_found", "no such file")
    return await _static(path)


async def _static(path: Path) -> web.Response:
    return web.Response(body=path.read_bytes(), content_type=STATIC_TYPES[path.suffix], charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


async def live(request: web.Request) -> web.StreamResponse:
    """The dashboard's feed: server-sent events (state, history, sample, denials)."""
    hub = request.app[LIVE]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    _cors(request, response)
    await response.prepare(request)
    with contextlib.suppress(TimeoutError):  # a page opened just after a start waits for the journal's last hour, briefly
        await asyncio.wait_for(hub.seeded.wait(), 2.0)
    queue = hub.subscribe()
    try:
        await response.write(b"retry: 1000\n\n")
        while True:
            message = await queue.get()
            if not message:
                break
            await response.write(message.encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(queue)
    return response


async def report(request: web.Request) -> web.Response:
    """The usage report (console/report.py): `since` (default 7d), `format=json|html`, `whatif`
    (repeatable: candidate license files beside the master's own: a What if section)."""
    master = request.app[MASTER]
    since = _seconds_ago(request, "since") or time.time() - 7 * 86400
    if master.journal:
        await master.journal.flush()
    path = Path(master.config.data_dir) / "journal.sqlite3"
    installed = master.pool.installed_by_family()
    doc = await asyncio.get_running_loop().run_in_executor(None, lambda: usage_report.from_journal(path, since, None, installed, master.site_usage.site_of if master.policy else None))
    names = request.query.getall("whatif", [])
    if names:  # the What if section: the period's demand against candidate license files
        candidates = _candidates(master, names, "whatif")
        doc["whatif"] = await asyncio.get_running_loop().run_in_executor(None, lambda: whatif.answer(
            lambda: iter_rows(path), candidates, master.policy, since=since, until=time.time()))
    if request.query.get("format") == "html":
        return web.Response(text=usage_report.render_html(doc, f"{master.name}: usage report"), content_type="text/html")
    return web.json_response(doc)


async def whatif_view(request: web.Request) -> web.Response:
    """What if (console/whatif.py; docs/operations.md, "What if"): the journal's demand replayed
    against candidate licenses. `since` (default 7d), `until` (epoch seconds, default now),
    `licenses` (repeatable: file names beside the master's own license files; default the set
    in force), `firmware`, `lose` and `at` (repeatable, in pairs: a node or @site, and epoch
    seconds or `peak`). The master's own site policy applies."""
    master = request.app[MASTER]
    since = _seconds_ago(request, "since") or time.time() - 7 * 86400
    until = _number(request, "until") or time.time()
    firmware = _number(request, "firmware")
    if firmware is not None and (firmware != int(firmware) or not 1 <= firmware <= 99):
        raise Refused(400, "bad_request", "firmware must be a major version from 1 to 99")
    lose, at = request.query.getall("lose", []), request.query.getall("at", [])
    if len(lose) != len(at):
        raise Refused(400, "bad_request", f"{len(lose)} lose and {len(at)} at: each lose needs its at")
    names = request.query.getall("licenses", [])
    candidates = _candidates(master, names, "licenses") if names else \
        (master.license_set.licenses if master.license_set is not None else [])
    if master.journal:
        await master.journal.flush()
    path = Path(master.config.data_dir) / "journal.sqlite3"
    try:
        doc = await asyncio.get_running_loop().run_in_executor(None, lambda: whatif.answer(
            lambda: iter_rows(path), candidates, master.policy, since=since, until=until,
            firmware=int(firmware) if firmware is not None else None, lose=list(zip(lose, at, strict=True))))
    except ValueError as exc:
        raise Refused(400, "bad_request", str(exc)) from None
    doc.update(licenses=names or "installed")
    return web.json_response(doc)


def _candidates(master: Master, names: list[str], param: str) -> list[InstalledLicense]:
    """Candidate license files, by name beside the master's own, never a path: the API reads no other file."""
    folder = Path(master.config.licenses[0]).parent if master.config.licenses else Path(".")
    for name in names:
        if not name or Path(name).name != name or name.startswith(".") or not (folder / name).is_file():
            raise Refused(400, "bad_request", f"{param}: {name[:64]!r} is not a license file beside the master's own")
    loaded = load_files([folder / name for name in names])
    if not loaded.ok:
        raise Refused(400, "bad_request", "the candidate license files have errors: " + "; ".join(map(str, loaded.errors))[:800])
    return loaded.licenses


def _number(request: web.Request, name: str) -> float | None:
    text = request.query.get(name)
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise Refused(400, "bad_request", f"{name} must be a number") from None


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# ---------------------------------------------------------------- changing


async def reload(request: web.Request) -> web.Response:
    """As SIGHUP; `force=true` takes a set that would take standby cover away from a standby PBX
    connected now (refused without it, 422 with `forceable`)."""
    master = request.app[MASTER]
    force = _flag(request, "force")
    logs.event("console_reload", who=request[WHO], force=force)
    report = master.reload(who=request[WHO], force=force)
    outcome = master.last_reload or {}
    if report is None:
        forceable = bool(outcome.get("forceable"))
        return web.json_response({"error": "reload_refused", "problems": outcome.get("problems", []), "forceable": forceable,
                                  "tokens": outcome.get("tokens"),
                                  "message": "the new set would take standby cover away: the set in force stays "
                                  "(POST reload?force=true takes it anyway)" if forceable else
                                  "the license files have errors: the set in force stays"}, status=422)
    return web.json_response({"licenses": sum(lic.count for lic in master.pool.installed),
                              "changed": outcome.get("changed", {}), "warnings": outcome.get("warnings", []),
                              "forced": bool(outcome.get("forced")), "tokens": outcome.get("tokens"),
                              "problems": [p.to_dict() for p in report.problems], "overcommitted": report.overcommitted})


async def release(request: web.Request) -> web.Response:
    """The whole session of a stuck PBX; or, with `lease` or `holder`, that lease alone."""
    master = request.app[MASTER]
    name = request.match_info["node"]
    session = master.dispatch.sessions.get(name)
    if session is None:
        raise Refused(404, "unknown_node", f"no session of node {name[:64]!r}")
    who = request[WHO]
    lease, holder = request.query.get("lease") or None, request.query.get("holder") or None
    if lease is not None or holder is not None:
        try:
            taken = operator.release_leases(master.dispatch, name, lease=lease, holder=holder, who=who)
        except operator.NotFound as exc:
            raise Refused(404, "unknown_lease", str(exc)) from None
        return web.json_response({"node": name, "released": len(taken), "by": who,
                                  "leases": [{"resource": t.resource, "holder": t.holder, "lease": t.id} for t in taken]})
    released = master.dispatch.sessions.end(
        session, End.FENCE, event={"event": "fenced", "reason": f"released by an operator ({who})"},
        detail=f"released by {who}", who=who)
    logs.event("console_release", logging.WARNING, node=name, who=who, released=len(released))
    return web.json_response({"node": name, "released": len(released), "by": who})


async def users(request: web.Request) -> web.Response:
    """User licenses, a page of users in name order (every license of a user on its page)."""
    master = request.app[MASTER]
    limit = _int(request, "limit", 500, 1, 5000)
    cursor = request.query.get("cursor") or None
    assert master.store is not None
    rows = master.store.assignments_since(cursor, limit)
    names = list(dict.fromkeys(r[0] for r in rows))
    return web.json_response({"users": [{"user": u, "family": f, "version": v, "node": n, "since": t} for u, f, v, n, t in rows],
                              "next_cursor": names[-1] if len(names) == limit else None})


async def unassign(request: web.Request) -> web.Response:
    master = request.app[MASTER]
    user, family = request.match_info["user"], request.query.get("family") or ""
    if not family:
        raise Refused(400, "bad_request", "family is required: POST /api/v1/users/{user}/unassign?family=App(phone)")
    try:
        version = operator.unassign(master.dispatch, user, family, request[WHO])
    except operator.NotFound as exc:
        raise Refused(404, "unknown_assignment", str(exc)) from None
    except operator.DeniedByModel as exc:
        raise Refused(409, exc.denial.code, exc.denial.message + (f" ({exc.denial.rule})" if exc.denial.rule else "")) from None
    return web.json_response({"user": user, "family": family, "version": version, "by": request[WHO]})


def application(master: Master, hub: Live) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[MASTER] = master
    app[LIVE] = hub
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MasterCollector(master))
    app[REGISTRY] = registry
    api = "/api/v1"
    app.add_routes([
        web.get(f"{api}/usage", usage), web.get(f"{api}/nodes", nodes), web.get(f"{api}/nodes/{{node}}", node),
        web.get(f"{api}/families/{{family}}", family), web.get(f"{api}/journal", journal), web.get(f"{api}/denials", denials), web.get(f"{api}/check", check),
        web.get(f"{api}/ha", ha), web.get(f"{api}/report", report), web.get(f"{api}/whatif", whatif_view), web.post(f"{api}/reload", reload), web.post(f"{api}/nodes/{{node}}/release", release),
        web.get(f"{api}/users", users), web.post(f"{api}/users/{{user}}/unassign", unassign),
        web.get("/metrics", metrics), web.get(f"{api}/live", live),
        web.get("/", index), web.get("/static/{name}", static),
    ])
    return app


class Console:
    """The console's HTTP(S) server, started and stopped with the master."""

    def __init__(self, master: Master) -> None:
        self.master = master
        self.runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None
        self.live: Live | None = None

    async def start(self) -> None:
        """On the config's `http`, HTTPS when the master serves TLS. Raises StartError."""
        host, port = self.master.config.http_address
        self.live = Live(self.master)
        self.runner = web.AppRunner(application(self.master, self.live), access_log=None, handle_signals=False,
                                    shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, ssl_context=self.master.tls(), reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            raise StartError(f"cannot listen on http {self.master.config.http}: {exc.strerror or exc}") from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        name = sockets[0].getsockname() if sockets else (host, port)
        self.address = (name[0], name[1])
        scheme = "https" if self.master.tls() else "http"
        self.master.dispatch.console_url = f"{scheme}://{name[0]}:{name[1]}"
        self.live.start()

    async def stop(self) -> None:
        if self.live is not None:
            await self.live.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
