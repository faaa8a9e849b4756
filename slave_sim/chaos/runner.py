"""`slave-sim chaos`: a randomized fault drill against masters that hold their leadership in etcd.

The installation: a 3-member etcd cluster, two masters, and sites of PBXs. Every link a fault may
cut goes through a proxy the drill runs (slave_sim/proxy.py): each site to each master, each
master to each etcd member. PBXs keep to their own addresses (the site's proxies): a master
named in `not_master` or `shutdown` is not a way around a cut.

A workload (each PBX checks Ports out and in for its users, a request every 20-80 ms) runs
beside a nemesis that, every 1-3 s, picks a fault among: kill -9 of a master (restarted at its
heal), SIGSTOP (SIGCONT), a master cut from etcd (both ways, or one way), a site cut from one
master (both ways or one way) or from both, the two masters cut from each other (each reaches
the other by its `advertise` address, through a proxy), one or two etcd members killed
(restarted), a site cut from both masters well past the lease TTL (2-4 TTLs: its PBXs absent,
within their hold) — at most two faults at a time, each healed after 1-5 s (the long cut after
its 2-4 TTLs). Each kind is a dataclass with its inject/heal pair (faults.py).
Every choice comes from `--seed` (plan.py): the same seed gives the same faults in the same order
(their timing against the workload still varies with the machine). At the end everything is
healed and the drill waits for the PBXs to be served again. The history goes to check.py.

Each `lapsed` and `lost` a PBX is told is recorded (slave_sim/availability.py, as the drills do):
within the masters' hold (72 h by default) there must be none.

After every failover (the serving master or its epoch changed) and at the end, an audit pauses
the workload, lets the requests in flight land, and compares what each PBX settled on that master
believes, lease by lease with its ids, with what the master counts for it (issue 27: a check-in
sent across a failover used to free another phone's lease). The workload runs on through the
failovers themselves: checkouts and check-ins are in flight while masters die.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from licmaster.client import LicenseError, MasterClient
from licmaster.testing.etcd import EtcdCluster
from licmaster.testing.process import MasterProcess, free_port

from ..availability import Availability
from ..drill.auditor import read_book
from ..masters import books_in_use, ports_counted_twice
from ..proxy import Link
from .check import SERVED_WITHIN_S, belief_violations, by_rule, check
from .faults import ETCD_MEMBERS, MASTERS
from .plan import ChaosConfig, Step, plan


@dataclass
class History:
    started: float = field(default_factory=time.perf_counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    grants: list[dict[str, Any]] = field(default_factory=list)
    checkins: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)
    audits: list[dict[str, Any]] = field(default_factory=list)
    # each `lapsed` a PBX was told and each lease it was told it lost (`lost`): the checker holds
    # them to "no PBX loses a lease within its hold" (issue 22)
    availability: Availability = field(default_factory=Availability)

    def now(self) -> float:
        return round(time.perf_counter() - self.started, 3)

    def note(self, what: str, **detail: Any) -> None:
        self.timeline.append({"t": self.now(), "what": what, **detail})


class Chaos:
    def __init__(self, config: ChaosConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.history = History()
        self.etcd: EtcdCluster | None = None
        self.masters: list[MasterProcess] = []
        self.etcd_links: list[list[Link]] = []  # [master][member]
        self.site_links: list[list[Link]] = []  # [site][master]
        self.peer_links: list[Link] = []  # [master]: the way the other master reaches it (its `advertise`)
        self.pbxs: list[MasterClient] = []
        self.watchers: list[MasterClient] = []
        self.faults_injected = 0
        self._stop = asyncio.Event()
        self._running = asyncio.Event()  # cleared while an audit looks: the workload waits
        self._running.set()
        self._in_flight = 0  # workload requests sent and not yet answered
        self._serving: tuple[int, int] | None = None  # (master index, epoch) of the master serving at the last audit
        self._audit_due = asyncio.Event()

    # ---------------------------------------------------------------- the installation

    async def _start(self) -> None:
        cfg = self.config
        self.etcd = EtcdCluster(self.workdir / "etcd", members=ETCD_MEMBERS).start()
        licenses = self.workdir / "licenses.toml"
        licenses.write_text(f'[[license]]\ntype = "PBX-Port13"\ncount = {cfg.installed}\n')
        for m in range(MASTERS):
            links = [await Link(f"m{m}-etcd{j}", ("127.0.0.1", port)).start() for j, port in enumerate(self.etcd.client_ports)]
            self.etcd_links.append(links)
            port = free_port()  # known before it starts: the link the other master uses leads there
            peer_link = await Link(f"peers-m{m}", ("127.0.0.1", port)).start()
            self.peer_links.append(peer_link)
            master = MasterProcess(self.workdir / f"master{m}", {
                "licenses": [str(licenses)], "etcd_endpoints": [link.endpoint for link in links], "log_level": "warning",
                "lease_ttl_ms": cfg.lease_ttl_ms, "heartbeat_ms": cfg.heartbeat_ms, "journal_flush_ms": 50, "http": "",
                "listen": f"127.0.0.1:{port}", "advertise": peer_link.endpoint},
                name=f"master{m}")
            await asyncio.get_running_loop().run_in_executor(None, master.start)
            self.masters.append(master)
        for s in range(cfg.sites):
            self.site_links.append([await Link(f"site{s}-m{m}", master.address).start() for m, master in enumerate(self.masters)])
        self.watchers = [MasterClient([m.target], f"chaos-watch-{i}", role="observer", connect_timeout=0.3, max_retry_s=0.3,
                                      reconnect=False)
                         for i, m in enumerate(self.masters)]
        for s in range(cfg.sites):
            for p in range(cfg.pbxs_per_site):
                n = s * cfg.pbxs_per_site + p
                client = MasterClient([link.endpoint for link in self.site_links[s]], f"site{s}-pbx{p}", follow_named=False,
                                      mac=f"00:90:33:30:00:{n:02x}", connect_timeout=0.5, max_retry_s=1.0,
                                      on_event=self._on_event(f"site{s}-pbx{p}"))
                self.pbxs.append(client)

    def _on_event(self, pbx: str) -> Callable[[dict[str, Any]], None]:
        def seen(event: dict[str, Any]) -> None:
            client = next(c for c in self.pbxs if c.node == pbx)
            silent = asyncio.get_running_loop().time() - client.confirmed_at
            self.history.availability.seen(self.history.now(), pbx, event, silent_s=silent, hold_s=client.hold_s)
        return seen

    async def _stop_all(self) -> None:
        for client in self.pbxs + self.watchers:
            with contextlib.suppress(Exception):
                await client.close(bye=False)
        for links in self.etcd_links + self.site_links + [self.peer_links]:
            for link in links:
                await link.stop()
        for master in self.masters:
            with contextlib.suppress(Exception):
                master.signal(signal.SIGCONT)
            master.kill9()
        if self.etcd is not None:
            self.etcd.stop()

    # ---------------------------------------------------------------- the workload

    async def _pbx(self, client: MasterClient, index: int) -> None:
        rng = random.Random(self.config.seed * 1000 + index)
        while not self._stop.is_set():
            await self._running.wait()
            if not client.connected.is_set():
                if not client.reconnecting:  # never connected yet, or closed for good
                    with contextlib.suppress(LicenseError, ConnectionError, OSError, TimeoutError):
                        await client.connect()
                        await client.sync()
                await asyncio.sleep(0.1)
                continue
            holder = f"user{rng.randrange(self.config.users)}"
            self._in_flight += 1
            try:
                if ("port", holder) in client.leases:
                    self.history.checkins.append({"t": self.history.now(), "pbx": client.node, "holder": holder})
                    await client.checkin("port", holder)
                else:
                    await client.checkout("port", holder)
                    self.history.grants.append({"t": self.history.now(), "pbx": client.node, "holder": holder})
            except LicenseError as exc:
                self.history.refusals[exc.code] = self.history.refusals.get(exc.code, 0) + 1
            except (ConnectionError, OSError, TimeoutError):
                pass  # the client reconnects and re-syncs by itself
            finally:
                self._in_flight -= 1
            await asyncio.sleep(rng.uniform(0.02, 0.08))

    async def _sample(self) -> None:
        installed = self.config.installed
        while not self._stop.is_set():
            roles: dict[str, str] = {}
            books: dict[str, tuple[int, list[dict[str, Any]]]] = {}  # master -> (Ports in use, its sessions' leases)
            epochs: dict[str, int] = {}
            for master, watcher in zip(self.masters, self.watchers, strict=True):
                try:
                    if not watcher.connected.is_set():
                        await watcher.connect()
                    usage, nodes = await asyncio.wait_for(read_book(watcher), 0.5)
                except (LicenseError, ConnectionError, OSError, TimeoutError):
                    roles[master.name] = "unreachable"
                    continue
                roles[master.name] = str(usage.get("role"))
                epochs[master.name] = int(usage.get("epoch") or 0)
                books[master.name] = (sum(p["in_use"] for p in usage["pools"] if p["family"] == "PBX-Port"), nodes)
                if usage.get("role") in ("acting", "grace"):
                    serving = (self.masters.index(master), int(usage.get("epoch", 0)))
                    if serving != self._serving:
                        self._serving = serving
                        self._audit_due.set()
            counted = books_in_use(roles, epochs)
            acting = sum(books[m][0] for m in counted) - ports_counted_twice([books[m][1] for m in counted])
            believed = sum(len(client.believed()) for client in self.pbxs)
            self.history.samples.append({"t": self.history.now(), "believed": believed, "acting": acting,
                                         "installed": installed, "roles": roles})
            await asyncio.sleep(0.1)

    # ---------------------------------------------------------------- beliefs, lease by lease

    async def _auditor(self) -> None:
        """An audit after every change of the serving master (the first one included)."""
        while not self._stop.is_set():
            await self._audit_due.wait()
            self._audit_due.clear()
            await asyncio.sleep(self.config.lease_ttl_ms / 1000)  # the PBXs find it and re-sync
            if not self._stop.is_set():
                await self.audit("after a failover")

    async def audit(self, why: str) -> None:
        """Pause the workload, let what is in flight land, and compare each PBX's beliefs with the
        serving master's count for it. Only PBXs settled on that master, confirmed before and after
        the master is read and believing the same both times, are compared: a PBX cut off meanwhile
        lapses (it believes less), which is not what this checks."""
        if self._serving is None:
            return
        index, epoch = self._serving
        watcher = self.watchers[index]
        self._running.clear()
        loop = asyncio.get_running_loop()
        try:
            deadline = loop.time() + 2.0
            while self._in_flight and loop.time() < deadline:
                await asyncio.sleep(0.01)
            endpoints = {link.endpoint for links in self.site_links for link in links[index:index + 1]}

            def beliefs() -> dict[str, list[list[str]]]:
                return {c.node: sorted([h.resource, h.holder, h.lease] for h in c.believed().values())
                        for c in self.pbxs if c.settled and c.confirmed() and f"{c.address[0]}:{c.address[1]}" in endpoints}

            before = beliefs()
            try:
                nodes = await asyncio.wait_for(watcher.all_nodes(held=True), 1.0)
            except (LicenseError, ConnectionError, OSError, TimeoutError):
                return
            after = beliefs()
            counted = {n["node"]: n["held"] for n in nodes if n["connected"]}
            believed = {pbx: held for pbx, held in before.items() if after.get(pbx) == held and pbx in counted}
            t = self.history.now()
            found = belief_violations(believed, counted, t)
            self.history.audits.append({"t": t, "why": why, "master": index, "epoch": epoch, "believed": believed,
                                        "counted": {pbx: counted[pbx] for pbx in believed}})
            self.history.note("audit", why=why, master=self.masters[index].name, epoch=epoch, pbxs=len(believed),
                              leases=sum(map(len, believed.values())), violations=len(found))
        finally:
            self._running.set()

    # ---------------------------------------------------------------- the nemesis

    async def _nemesis(self, steps: list[Step]) -> None:
        """Carry the plan out on the wall clock, in its order."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        for step in steps:
            await asyncio.sleep(max(0.0, began + step.at - loop.time()))
            if step.heal:
                await step.fault.heal(self)
            else:
                await step.fault.inject(self)
                self.faults_injected += 1
            self.history.note("heal" if step.heal else "fault", fault=step.fault.describe())

    # ---------------------------------------------------------------- the run

    async def run(self) -> dict[str, Any]:
        try:
            await self._start()
            loop = asyncio.get_running_loop()
            workers = [loop.create_task(self._pbx(c, i)) for i, c in enumerate(self.pbxs)]
            sampler = loop.create_task(self._sample())
            auditor = loop.create_task(self._auditor())
            self.history.note("start", seed=self.config.seed)
            await self._nemesis(plan(self.config))
            last_heal = self.history.now()
            self.history.note("all healed")
            served: dict[str, float | None] = {c.node: None for c in self.pbxs}
            deadline = loop.time() + SERVED_WITHIN_S + 3.0
            while loop.time() < deadline and any(v is None for v in served.values()):
                for client in self.pbxs:
                    at = self.history.now()
                    if served[client.node] is None and client.connected.is_set() and client.confirmed() \
                            and client.confirmed_at - loop.time() + at > last_heal:
                        served[client.node] = at
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            await self.audit("at the end, every fault healed")
            self._stop.set()
            self._audit_due.set()
            await asyncio.gather(*workers, sampler, auditor, return_exceptions=True)
            await asyncio.sleep(0.3)  # replies in flight land
            availability = self.history.availability
            history = {"samples": self.history.samples, "grants": self.history.grants, "checkins": self.history.checkins,
                       "losses": availability.losses, "lapses": availability.lapses,
                       "held": {c.node: sorted(h for _, h in c.leases) for c in self.pbxs},
                       "last_heal": last_heal, "served": served, "audits": self.history.audits}
            violations = check(history)
            summary = availability.summary()
            return {"seed": self.config.seed, "seconds": self.config.seconds, "passed": not violations,
                    "config": {k: v for k, v in vars(self.config).items() if k != "faults"} | {"faults": list(self.config.faults)},
                    "faults_injected": self.faults_injected, "timeline": self.history.timeline, "violations": violations,
                    "violations_by_rule": by_rule(violations),
                    "grants": len(self.history.grants), "checkins": len(self.history.checkins),
                    "losses": len(availability.losses), "refusals": self.history.refusals,
                    "peak_believed": max((s["believed"] for s in self.history.samples), default=0),
                    "peak_acting": max((s["acting"] for s in self.history.samples), default=0),
                    "samples": self.history.samples, "last_heal": last_heal, "served": served,
                    "audits": len(self.history.audits), "lapses": summary["lapses"], "leases_lapsed": summary["leases_lapsed"],
                    "availability": summary, "hold_s": max((c.hold_s for c in self.pbxs), default=None),
                    "leases_audited": sum(sum(map(len, a["believed"].values())) for a in self.history.audits)}
        finally:
            self._stop.set()
            await self._stop_all()


async def run_chaos(config: ChaosConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="slave-sim-chaos-") as tmp:
        return await Chaos(config, Path(tmp)).run()
