"""The dashboard's live feed: server-sent events from the master, no polling.

One `Live` hub per console. Every `tick_s` it builds the state once (pools, nodes, HA) and
sends it to every subscriber, only when it changed; every `sample_s` it appends one point to
the last hour's usage history; a denial is pushed as it happens (coalesced per tick, at most
`MAX_DENIALS` an event). A subscriber gets the state and the history at once on connecting.
Browsers reconnect by themselves (EventSource), and the page tries the other masters' consoles
when this one is gone (docs/admin-api.md, "Dashboard").
"""

from __future__ import annotations

import asyncio
import heapq
import json
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from licmaster.daemon.console.metrics import newest_firmware, usable
from licmaster.model.errors import Denial

if TYPE_CHECKING:
    from licmaster.daemon.master import Master

HISTORY_S = 3600
MAX_DENIALS = 50


class Live:
    def __init__(self, master: Master, *, tick_s: float = 0.25, sample_s: float = 5.0) -> None:
        self.master = master
        self.tick_s, self.sample_s = tick_s, sample_s
        self.subscribers: set[asyncio.Queue[str]] = set()
        self.history: deque[dict[str, Any]] = deque(maxlen=int(HISTORY_S / sample_s) + 1)
        self._denials: list[dict[str, Any]] = []
        self._last_state = ""
        self._last_sample = 0.0
        self._task: asyncio.Task[None] | None = None
        master.dispatch.denials.listeners.append(self._on_denial)

    def start(self) -> None:
        self._last_sample = time.time()
        self.history.append({"at": self._last_sample, "in_use": self._in_use_by_family()})  # the chart's first point
        self._task = asyncio.get_running_loop().create_task(self._run(), name="console-live")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for queue in list(self.subscribers):
            queue.put_nowait("")  # ends the stream

    def subscribe(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=256)
        queue.put_nowait(event("state", self.state()))
        queue.put_nowait(event("history", list(self.history)))
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        self.subscribers.discard(queue)

    def _on_denial(self, node: str, denial: Denial, resource: str | None) -> None:
        if len(self._denials) < MAX_DENIALS:
            self._denials.append({"at": time.time(), "node": node, "code": denial.code, "rule": denial.rule,
                                  "resource": resource if resource and len(resource) <= 32 else "?",
                                  "message": denial.message[:200]})

    async def _run(self) -> None:
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
        if self._denials:
            denials, self._denials = self._denials, []
            self._send(event("denials", denials))

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
                "terms": [t.to_dict() for t in master.terms()],
                "standbys": len(master.feed), "degraded": master.feed.degraded, "peers": master.peer_states(),
                "consoles": master.console_urls()}


NODES_SHOWN = 50  # rows of the dashboard's node table


def event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"
