"""The dashboard's live feed: server-sent events from the master, no polling.

One `Live` hub per console. Every `tick_s` it builds the state once (pools, nodes, HA) and
sends it to every subscriber, only when it changed; every `sample_s` it appends one point to
the last hour's usage history; a denial is pushed as it happens (coalesced per tick, at most
`MAX_DENIALS` an event), and so is every event an operator looks for after an incident
(`NOTABLE`: takeovers, expiries, absences and returns, role changes, reloads, ...), as the
journal writes it. A subscriber gets at once the state, the history and `recent`: the last
hour's denials and events, so a page opened after an incident shows it. `recent` comes from
memory, seeded at start from the journal, so it spans restarts of this master (not a failover:
the other master's journal is its own).
For triage, the state also carries the last hour's refusals by node and family (`refused`, every
one counted, a flood too), the PBXs gone within the hour (`gone`: expired, left, taken over,
from the journal's rows, until they come back), and the PBXs absent now (`absent`: silent for a
lease TTL, their floating licenses held until their hold ends; docs/operations.md, "Two clocks").
The simulator's own sessions (`slave-sim-...`: its preflight, auditor, watchers) are marked as
such (`simulator`) in events and nodes.
Browsers reconnect by themselves (EventSource), and the page tries the other masters' consoles
when this one is gone (docs/admin-api.md, "Dashboard").
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import re
import sqlite3
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from licmaster.daemon import logs
from licmaster.daemon.denials import family_of
from licmaster.daemon.storage.journal import read_journal
from licmaster.model.errors import Denial
from licmaster.wire import events
from licmaster.wire.events import Row

if TYPE_CHECKING:
    from licmaster.daemon.master import Master

HISTORY_S = 3600
MAX_DENIALS = 50
RECENT_KEPT = 500  # denials, and events, kept for a page that opens later
RECENT_SHOWN = 100  # of each, sent to a page as it opens (the newest)
NOTABLE = frozenset({events.TAKEOVER, events.EXPIRE, events.BYE, events.ABSENT, events.BACK, events.ROLE, events.PROMOTE,
                     events.STEP_DOWN, events.RELOAD, events.RELOAD_REFUSED, events.SSA_ENDED, events.LICENSES_REFUSED,
                     events.REPLICA_LOST, events.ABORT, events.OPERATOR, events.START, events.STOP})
GONE = frozenset({events.EXPIRE, events.BYE, events.TAKEOVER})  # a PBX's session ended: it is missing until it is back
GONE_SHOWN = 50  # rows of gone PBXs in the node table (the newest)
# The hour's history is bounded by time and, against a flood of PBX names (bench/abuse.py
# absent-flood: 100,000 names in 30 s grew it ~0.8 KB a name), by count too: the oldest gone PBXs,
# and the refused (node, family) cells of a minute past this many, folded into one "*" node.
GONE_MOST = 10_000
REFUSED_CELLS_MOST = 5_000
REFUSED_NODES = 10  # nodes in the box of refusals by node and family (those refused most)
SIMULATOR = "slave-sim-"  # slave-sim's own sessions name themselves so (preflight, auditor, its watchers, cleanup)


def simulator_session(node: str | None) -> bool:
    """A session slave-sim opens for itself, not one of the PBXs it simulates."""
    return bool(node) and str(node).startswith(SIMULATOR)


# The events told in one sentence each: {node} and {detail} of the row.
_SAID = {
    events.ROLE: "role {detail}",
    events.PROMOTE: "became the acting master ({detail})",
    events.STEP_DOWN: "stepped down: {detail}",
    events.RELOAD: "licenses reloaded: {detail}",
    events.RELOAD_REFUSED: "reload REFUSED, the licenses in force stay: {detail}",
    events.LICENSES_REFUSED: "license files refused: {detail}",
    events.SSA_ENDED: "SSA ended: {detail}",
    events.REPLICA_LOST: "no standby master follows any more: {detail}",
    events.ABORT: "{node}: connection dropped: {detail}",
    events.OPERATOR: "operator: {detail}",
}


def duration(seconds: float) -> str:
    """A span as a person reads it: 4.2 s, 5 min 3 s, 71 h 59 min (cut, not rounded up)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def event_text(row: Row) -> str:
    """A journal row of a NOTABLE event, in words (the dashboard's event feed)."""
    r = events.full(row)
    node, detail = r[events.NODE], r[events.DETAIL] or ""
    name = r[events.EVENT]
    if name == events.TAKEOVER:
        return f"{node} took over from {detail}, and its leases" if detail else f"{node} took over"
    if name in (events.EXPIRE, events.BYE):
        ended = "went silent: its session expired" if name == events.EXPIRE else "left"
        if detail.isascii() and detail.isdigit():  # the count given back, with its unit: `28 leases`
            return f"{node} {ended}, {events.detail_text(name, detail)} back in the pool"
        return f"{node} {ended}{': ' + detail if detail else ''}"  # fenced or stepped down: why
    said = _SAID.get(name)
    if said is not None:
        return said.format(node=node, detail=detail)
    if name == events.ABSENT:  # detail: "3 leases held until <UTC>", or "... adopted, ..." after a takeover or restart
        held = re.sub(r"^1 leases\b", "1 lease", detail)
        if "adopted" in detail:
            return f"{node} absent, not back since this master began serving: {held}"
        return f"{node} went silent: absent, {held}" if held else f"{node} went silent: absent"
    if name == events.BACK:  # detail: how long it was away, in ms (a PBX restarted afresh then gives its leases back)
        away = f" after {duration(int(detail) / 1000)}" if detail.isascii() and detail.isdigit() else ""
        return f"{node} is back{away}, within its hold"
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
        self.refused_per_minute: dict[int, dict[tuple[str, str], int]] = {}  # the same, by (node, family)
        self.gone: dict[str, dict[str, Any]] = {}  # node -> how and when its session ended (the newest)
        self._roles: dict[str, str] = {}  # node -> role, of the sessions seen (a gone observer is no missing PBX)
        self._refused: tuple[int, dict[str, Any]] | None = None  # (minute, refused()) until a denial or the next minute
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
        kinds: dict[tuple[Any, ...], str] = {}  # (node, code, rule, resource) -> family, for its deny_repeated rows
        for row in rows:
            if row["event"] == events.DENY:
                family = family_of(row["detail"] or "", row["resource"], row["note"])
                kinds[(row["node"], row["detail"], row["rule"], row["resource"])] = family
                denials.append({"at": row["ts"], "node": row["node"], "code": row["detail"], "rule": row["rule"],
                                "resource": row["resource"], "family": family, "message": row["note"] or ""})
                self._count_denials(row["ts"], 1, row["node"] or "", family)
            elif row["event"] == events.DENY_REPEATED:
                code, _, times = (row["detail"] or "? x0").rpartition(" x")
                count = int(times) if times.isdigit() else 0
                family = kinds.get((row["node"], code, row["rule"], row["resource"])) or family_of(code, row["resource"], None)
                denials.append({"at": row["ts"], "node": row["node"], "code": code, "rule": row["rule"],
                                "resource": row["resource"], "family": family,
                                "message": f"{count} more like it within a second"})
                self._count_denials(row["ts"], count, row["node"] or "", family)
            else:
                full = tuple(row[f] for f in events.FIELDS)
                notable.append(_event_of(full))
                self._note_gone(full)
        # What this hub saw while reading is newer: the seed goes before it.
        self.recent_denials.extendleft(reversed(denials[-RECENT_KEPT:]))
        self.recent_events.extendleft(reversed(notable[-RECENT_KEPT:]))

    def _on_batch(self, batch: list[Row]) -> None:
        for row in batch:
            if row[events.EVENT] in NOTABLE and row[events.TS] >= self._seen_from:
                item = _event_of(row)
                self.recent_events.append(item)
                self._events.append(item)
                self._note_gone(row)

    def _note_gone(self, row: Row) -> None:
        """A session that ended (expire, bye, takeover: the failed PBX): missing from now on,
        until it is back; the newest ending of each node is kept."""
        r = events.full(row)
        name = r[events.EVENT]
        if name not in GONE:
            return
        node, detail = r[events.NODE], r[events.DETAIL]
        if name == events.TAKEOVER:  # journaled by the standby that took over; the failed PBX is `detail`
            node, detail = detail, node
        if not node or simulator_session(node):
            return
        seen = self.gone.pop(node, None)  # (re-inserted: the dict stays oldest first)
        if seen is None or seen["at"] <= r[events.TS]:
            role = self._roles.get(node) or (seen["role"] if seen is not None else None)
            seen = {"node": node, "at": r[events.TS], "event": name, "detail": detail, "role": role}
        self.gone[node] = seen
        while len(self.gone) > GONE_MOST:
            del self.gone[next(iter(self.gone))]

    def _count_denials(self, at: float, count: int, node: str, family: str) -> None:
        minute = int(at // 60)
        self.denied_per_minute[minute] = self.denied_per_minute.get(minute, 0) + count
        cells = self.refused_per_minute.setdefault(minute, {})
        key = (node, family) if (node, family) in cells or len(cells) < REFUSED_CELLS_MOST else ("*", family)
        cells[key] = cells.get(key, 0) + count
        self._refused = None

    def _forget_before(self, since: float) -> None:
        for minute in [m for m in self.denied_per_minute if (m + 1) * 60 <= since]:
            del self.denied_per_minute[minute]
        for minute in [m for m in self.refused_per_minute if (m + 1) * 60 <= since]:
            del self.refused_per_minute[minute]
        for node in [n for n, g in self.gone.items() if g["at"] < since]:
            del self.gone[node]

    def refused(self, now: float | None = None) -> dict[str, Any]:
        """The last hour's refusals by node and family (every one: the counts `denied` sums), for
        the REFUSED_NODES nodes refused most; `nodes`: how many nodes were refused in all."""
        now = now if now is not None else time.time()
        self._forget_before(now - HISTORY_S)
        if self._refused is not None and self._refused[0] == int(now // 60):
            return self._refused[1]  # four ticks a second: summed again only when it can have changed
        cells: dict[tuple[str, str], int] = {}
        for counts in self.refused_per_minute.values():
            for key, n in counts.items():
                cells[key] = cells.get(key, 0) + n
        by_node: dict[str, int] = {}
        for (node, _), n in cells.items():
            by_node[node] = by_node.get(node, 0) + n
        top = set(heapq.nsmallest(REFUSED_NODES, by_node, key=lambda node: (-by_node[node], node)))
        refused = {"cells": [[node, family, n] for (node, family), n in sorted(cells.items()) if node in top],
                   "nodes": len(by_node)}
        self._refused = (int(now // 60), refused)
        return refused

    def recent(self, now: float | None = None) -> dict[str, Any]:
        """The last hour's denials and events, newest last, as a page that opens now gets them."""
        since = (now if now is not None else time.time()) - HISTORY_S
        self._forget_before(since)
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
        family = family_of(denial.code, resource, denial.message, denial.details.get("family"))
        self._count_denials(now, 1, node, family)
        if len(self._denials) < MAX_DENIALS:  # a flood: counted, not each kept
            item = {"at": now, "node": node, "code": denial.code, "rule": denial.rule, "family": family,
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
        status = master.status()
        dispatch = master.dispatch
        families: dict[str, dict[str, int]] = {}
        for pool in status.pools:
            row = families.setdefault(pool.family, {"installed": 0, "in_use": 0, "peak": 0, "usable": 0})
            row["installed"] += pool.installed
            row["in_use"] += pool.in_use
            row["peak"] = max(row["peak"], pool.peak)
            row["usable"] += pool.usable
        loop_now, now = asyncio.get_running_loop().time(), time.time()
        sessions = dispatch.sessions.by_node.values()
        for s in sessions:
            self._roles[s.node] = s.info.role
        if len(self._roles) > 2 * len(dispatch.sessions.by_node) + 1000:  # names come and go: keep those still here
            self._roles = {s.node: s.info.role for s in sessions}
        # A city has a thousand PBXs: the page shows the ones to look at (cut off first, then the
        # largest holders), and says how many it leaves out; the API pages them all.
        shown = heapq.nsmallest(NODES_SHOWN, sessions, key=lambda s: (s.conn is not None, -len(master.pool.node_leases(s.node)), s.node))
        nodes = [{"node": s.node, "role": s.info.role, "firmware": s.info.firmware if s.info.role != "observer" else None,
                  "connected": s.conn is not None, "leases": len(master.pool.node_leases(s.node)),
                  "absent": s.absent_since is not None,  # silent past the TTL, its leases held (two clocks)
                  "idle_s": round(loop_now - s.last_seen, 1), "simulator": simulator_session(s.node),
                  # connected since, or (cut off) last heard of, as a wall-clock time
                  "since": round(now - (loop_now - (s.since if s.conn is not None else s.last_seen)))}
                 for s in shown]
        refused = self.refused(now)  # also forgets what is older than the hour
        gone = sorted((g for g in self.gone.values() if g["node"] not in dispatch.sessions.by_node and g["role"] != "observer"),
                      key=lambda g: -g["at"])
        return {"master": status.master, "role": status.role, "epoch": status.epoch, "listen": status.listen,
                "following": status.following, "grace_ms": status.grace_ms,
                "pools": [{"family": f, **row} for f, row in sorted(families.items())], "nodes": nodes,
                "nodes_total": len(dispatch.sessions.by_node), "gone": gone[:GONE_SHOWN], "gone_total": len(gone),
                "refused": refused, "last_reload": status.last_reload, "terms": list(status.terms), "sites": list(status.sites),
                "standby_cover": status.standby_cover,  # the banner while it does not hold
                "standbys": status.standbys, "degraded": status.degraded, "peers": list(status.peers),
                "consoles": list(status.consoles),
                "absent": _absent(status.absent_wire())}  # the Absent PBXs panel: counts, hold_s, the longest absent


NODES_SHOWN = 50  # rows of the dashboard's node table


def _absent(wire: dict[str, Any]) -> dict[str, Any]:
    """`absent` with its times in whole seconds: read from two clocks at each tick, they would
    differ in the microseconds, and the state would look changed four times a second."""
    return {**wire, "shown": [{**a, "since": round(a["since"]), "back_at": round(a["back_at"])} for a in wire["shown"]]}


def _event_of(row: Row) -> dict[str, Any]:
    return {"at": row[events.TS], "event": row[events.EVENT], "node": row[events.NODE], "text": event_text(row),
            "simulator": simulator_session(row[events.NODE])}


def _seed_rows(path: Any, since: float, until: float) -> list[dict[str, Any]]:
    rows = read_journal(path, since=since, kinds=NOTABLE | {events.DENY, events.DENY_REPEATED})
    return [r for r in rows if r["ts"] < until]


def event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"
