"""The dashboard's live feed: server-sent events from the master, no polling.

One `Live` hub per console. Every `tick_s` it builds the state once (pools, nodes, HA) and
sends it to every subscriber, only when it changed; every `sample_s` it appends one point to
the last hour's usage history; a denial is pushed as it happens (coalesced per tick, at most
`MAX_DENIALS` an event), and so is every event an operator looks for after an incident
(`NOTABLE`: takeovers, expiries, role changes, reloads, ...), as the journal writes it. A
subscriber gets at once the state, the history and `recent`: the last hour's denials and events,
so a page opened after an incident shows it. `recent` comes from memory, seeded at start from
the journal, so it spans restarts of this master (not a failover: the other master's journal is
its own).
Browsers reconnect by themselves (EventSource), and the page tries the other masters' consoles
when this one is gone (docs/admin-api.md, "Dashboard").
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import sqlite3
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from licmaster.daemon import logs
from licmaster.daemon.console.metrics import newest_firmware, usable
from licmaster.daemon.journal import read_journal
from licmaster.model.errors import Denial
from licmaster.wire import events
from licmaster.wire.events import Row

if TYPE_CHECKING:
    from licmaster.daemon.master import Master

HISTORY_S = 3600
MAX_DENIALS = 50
RECENT_KEPT = 500  # denials, and events, kept for a page that opens later
RECENT_SHOWN = 100  # of each, sent to a page as it opens (the newest)
NOTABLE = frozenset({events.TAKEOVER, events.EXPIRE, events.BYE, events.ROLE, events.PROMOTE, events.STEP_DOWN,
                     events.RELOAD, events.RELOAD_REFUSED, events.SSA_ENDED, events.LICENSES_REFUSED,
                     events.REPLICA_LOST, events.ABORT, events.OPERATOR, events.START, events.STOP})


def event_text(row: Row) -> str:
    """A journal row of a NOTABLE event, in words (the dashboard's event feed)."""
    r = events.full(row)
    node, detail = r[events.NODE], r[events.DETAIL] or ""
    name = r[events.EVENT]
    if name == events.TAKEOVER:
        return f"{node} took over from {detail}, and its leases" if detail else f"{node} took over"
    if name == events.EXPIRE:
        return f"{node} went silent: its session expired, {detail} lease(s) back in the pool"
    if name == events.BYE:
        return f"{node} left, {detail} lease(s) back in the pool"
    if name == events.ROLE:
        return f"role {detail}"
    if name == events.PROMOTE:
        return f"became the acting master ({detail})"
    if name == events.STEP_DOWN:
        return f"stepped down: {detail}"
    if name == events.RELOAD:
        return f"licenses reloaded: {detail}"
    if name == events.RELOAD_REFUSED:
        return f"reload REFUSED, the licenses in force stay: {detail}"
    if name == events.LICENSES_REFUSED:
        return f"license files refused: {detail}"
    if name == events.SSA_ENDED:
        return f"SSA ended: {detail}"
    if name == events.REPLICA_LOST:
        return f"no standby master follows any more: {detail}"
    if name == events.ABORT:
        return f"{node}: connection dropped: {detail}"
    if name == events.OPERATOR:
        return f"operator: {detail}"
    return f"master {name}{': ' + detail if detail else ''}"  # start, stop


class Live:
    def __init__(self, master: Master, *, tick_s: float = 0.25, sample_s: float = 5.0) -> None:
        self.master = master
        self.tick_s, self.sample_s = tick_s, sample_s
        self.subscribers: set[asyncio.Queue[str]] = set()
        self.history: deque[dict[str, Any]] = deque(maxlen=int(HISTORY_S / sample_s) + 1)
        self._denials: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self.recent_denials: deque[dict[str, Any]] = deque(maxlen=RECENT_KEPT)
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=RECENT_KEPT)
        self.denied_per_minute: dict[int, int] = {}  # every denial counts, also those not kept
        self._seen_from = 0.0
        self.seeded = asyncio.Event()  # the journal's last hour is in `recent`  # journal rows before this come from the seed, later ones from batches
        self._last_state = ""
        self._last_sample = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        # From here on, denials and events come as they happen; what came before, the seed reads
        # from the journal: nothing is counted twice or missed.
        self._seen_from = time.time()
        self.master.dispatch.denials.listeners.append(self._on_denial)
        if self.master.journal is not None:
            self.master.journal.on_batch.append(self._on_batch)
        self._last_sample = time.time()
        self.history.append({"at": self._last_sample, "in_use": self._in_use_by_family()})  # the chart's first point
        self._task = asyncio.get_running_loop().create_task(self._run(), name="console-live")

    async def _seed(self) -> None:
        """The last hour from the journal, before anything this hub saw itself: so a restarted
        master's page still shows what happened before the restart."""
        journal = self.master.journal
        if journal is None:
            return
        await journal.flush()  # rows before _seen_from are on disk now; later ones come through _on_batch
        since = self._seen_from - HISTORY_S
        rows = await asyncio.get_running_loop().run_in_executor(None, _seed_rows, journal.path, since, self._seen_from)
        denials, notable = [], []
        for row in rows:
            if row["event"] == events.DENY:
                denials.append({"at": row["ts"], "node": row["node"], "code": row["detail"], "rule": row["rule"],
                                "resource": row["resource"], "message": row["note"] or ""})
                self._count_denials(row["ts"], 1)
            elif row["event"] == events.DENY_REPEATED:
                code, _, times = (row["detail"] or "? x0").rpartition(" x")
                count = int(times) if times.isdigit() else 0
                denials.append({"at": row["ts"], "node": row["node"], "code": code, "rule": row["rule"],
                                "resource": row["resource"], "message": f"{count} more like it within a second"})
                self._count_denials(row["ts"], count)
            else:
                notable.append(_event_of(tuple(row[f] for f in events.FIELDS)))
        # What this hub saw while reading is newer: the seed goes before it.
        self.recent_denials.extendleft(reversed(denials[-RECENT_KEPT:]))
        self.recent_events.extendleft(reversed(notable[-RECENT_KEPT:]))

    def _on_batch(self, batch: list[Row]) -> None:
        for row in batch:
            if row[events.EVENT] in NOTABLE and row[events.TS] >= self._seen_from:
                item = _event_of(row)
                self.recent_events.append(item)
                self._events.append(item)

    def _count_denials(self, at: float, count: int) -> None:
        minute = int(at // 60)
        self.denied_per_minute[minute] = self.denied_per_minute.get(minute, 0) + count

    def recent(self, now: float | None = None) -> dict[str, Any]:
        """The last hour's denials and events, newest last, as a page that opens now gets them."""
        since = (now if now is not None else time.time()) - HISTORY_S
        for minute in [m for m in self.denied_per_minute if (m + 1) * 60 <= since]:
            del self.denied_per_minute[minute]
        return {"denials": [d for d in self.recent_denials if d["at"] >= since][-RECENT_SHOWN:],
                "denied": sum(self.denied_per_minute.values()),
                "events": [e for e in self.recent_events if e["at"] >= since][-RECENT_SHOWN:]}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for queue in list(self.subscribers):
            queue.put_nowait("")  # ends the stream

    def subscribe(self) -> asyncio.Queue[str]:
        self._send_pending()  # to the pages open already: a new one gets them in `recent`, once
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=256)
        queue.put_nowait(event("state", self.state()))
        queue.put_nowait(event("history", list(self.history)))
        queue.put_nowait(event("recent", self.recent()))
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self.subscribers.discard(queue)

    def _on_denial(self, node: str, denial: Denial, resource: str | None) -> None:
        now = time.time()
        self._count_denials(now, 1)
        if len(self._denials) < MAX_DENIALS:  # a flood: counted, not each kept
            item = {"at": now, "node": node, "code": denial.code, "rule": denial.rule,
                    "resource": resource if resource and len(resource) <= 32 else "?", "message": denial.message[:200]}
            self._denials.append(item)
            self.recent_denials.append(item)

    async def _run(self) -> None:
        try:
            await self._seed()
        except (OSError, sqlite3.Error, ValueError) as exc:  # the page then shows what this run saw, no more
            logs.event("console_seed_failed", logging.WARNING, why=str(exc)[:200])
        self.seeded.set()
        while True:
            await asyncio.sleep(self.tick_s)
            if not self.subscribers and time.time() - self._last_sample < self.sample_s:
                continue
            self._publish()

    def _publish(self) -> None:
        now = time.time()
        if now - self._last_sample >= self.sample_s:
            self._last_sample = now
            point = {"at": now, "in_use": self._in_use_by_family()}
            self.history.append(point)
            self._send(event("sample", point))
        state = self.state()
        text = json.dumps(state, sort_keys=True, default=str)
        if text != self._last_state:
            self._last_state = text
            self._send(event("state", state))
        self._send_pending()

    def _send_pending(self) -> None:
        if self._denials:
            denials, self._denials = self._denials, []
            self._send(event("denials", denials))
        if self._events:
            notable, self._events = self._events, []
            self._send(event("events", notable))

    def _send(self, message: str) -> None:
        for queue in list(self.subscribers):
            if queue.full():  # a browser that does not read: dropped, it reconnects and starts afresh
                self.subscribers.discard(queue)
                queue.get_nowait()  # room for the end marker, or its stream would wait for ever
                queue.put_nowait("")
                continue
            queue.put_nowait(message)

    def _in_use_by_family(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for bucket in self.master.pool.buckets():
            out[bucket.family] = out.get(bucket.family, 0) + bucket.in_use
        return out

    def state(self) -> dict[str, Any]:
        master = self.master
        dispatch = master.dispatch
        families: dict[str, dict[str, int]] = {}
        firmware = newest_firmware(master)
        for bucket in master.pool.buckets():
            row = families.setdefault(bucket.family, {"installed": 0, "in_use": 0, "peak": 0, "usable": 0})
            row["installed"] += bucket.installed
            row["in_use"] += bucket.in_use
            row["peak"] = max(row["peak"], bucket.peak)
            row["usable"] += usable(master, bucket, firmware)
        loop_now = asyncio.get_running_loop().time()
        sessions = dispatch.sessions.by_node.values()
        # A city has a thousand PBXs: the page shows the ones to look at (cut off first, then the
        # largest holders), and says how many it leaves out; the API pages them all.
        shown = heapq.nsmallest(NODES_SHOWN, sessions, key=lambda s: (s.conn is not None, -len(master.pool.node_leases(s.node)), s.node))
        nodes = [{"node": s.node, "role": s.info.role, "firmware": s.info.firmware if s.info.role != "observer" else None,
                  "connected": s.conn is not None, "leases": len(master.pool.node_leases(s.node)),
                  "idle_s": round(loop_now - s.last_seen, 1)}
                 for s in shown]
        return {"master": master.name, "role": master.role.state.value, "epoch": dispatch.epoch,
                "listen": f"{master.address[0]}:{master.address[1]}" if master.address else None,
                "following": master.role.following or None, "grace_ms": dispatch.grace_left_ms(),
                "pools": [{"family": f, **row} for f, row in sorted(families.items())], "nodes": nodes,
                "nodes_total": len(dispatch.sessions.by_node), "last_reload": master.last_reload,
                "terms": [t.to_dict() for t in master.terms()], "sites": master.sites_usage(),
                "standby_cover": master.standby_cover().to_dict(),  # the banner while it does not hold
                "standbys": len(master.feed), "degraded": master.feed.degraded, "peers": master.peer_states(),
                "consoles": master.console_urls()}


NODES_SHOWN = 50  # rows of the dashboard's node table


def _event_of(row: Row) -> dict[str, Any]:
    return {"at": row[events.TS], "event": row[events.EVENT], "node": row[events.NODE], "text": event_text(row)}


def _seed_rows(path: Any, since: float, until: float) -> list[dict[str, Any]]:
    rows = read_journal(path, since=since, kinds=NOTABLE | {events.DENY, events.DENY_REPEATED})
    return [r for r in rows if r["ts"] < until]


def event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"
