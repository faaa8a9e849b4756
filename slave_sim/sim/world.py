"""The world of a simulation: two masters (two-node, or in a model of etcd) and the PBXs' real
MasterClients on one virtual clock (licmaster/testing/simloop.py), the faults drawn from the seed,
and the history the chaos drill's checker reads (slave_sim/chaos/check.py).

Faults (each kind weighted by the seed, one every `fault_every_s` on average, none in the last
15 minutes so that everything is healed before the end):
- kill-master: kill -9 of the serving master (its unwritten journal rows lost), restarted after
  5 s to 5 min; it follows whoever took over;
- pause-master, pause-pbx: the host stopped (SIGSTOP) for 0.3 s to 2 min, shorter and longer than
  every timeout: its callbacks wait, what is sent to it queues, its clock runs on;
- cut-pbx (both ways), cut-pbx-one-way (either way): a PBX from both masters, 1.5 s to 10 min;
- cut-masters, cut-masters-one-way: the two masters from each other, 1.5 s to 10 min (two-node:
  only with --faults, config.SPLIT_BRAIN);
- crash-pbx: a PBX's process dies (its connections reset) and starts afresh 1 s to 2 min later;
- clock-jump: one master's wall clock (time.time) stepped by ±1 min, ±1 h or ±100 days, stepped
  back 1 to 10 min later. The masters keep leases on the loop's monotonic clock, so the design
  survives it; what reads the wall clock (journal rows, retention, what is shown) is exercised;
- with etcd: quorum-lost (1 s to 10 min), cut-etcd and cut-etcd-one-way (a master from the
  cluster, 1.5 s to 10 min).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from licmaster.client import LicenseError, MasterClient, NotConnected
from licmaster.testing.etcd_model import CLUSTER, EtcdModel
from licmaster.testing.simloop import HOST, Stalled, VirtualLoop
from licmaster.testing.simmaster import PORT, SimMaster

from ..availability import Availability
from ..chaos.check import SERVED_WITHIN_S, belief_violations, by_rule, check
from ..masters import books_in_use, ports_counted_twice
from .config import CLOCK_JUMPS_S, CUTS_S, PAUSES_S, QUORUM_LOSSES_S, SimConfig, SimResult

MASTER_HOSTS = ("10.1.0.1", "10.1.0.2")
QUIET_END_S = 900.0  # no fault starts in the last 15 minutes: the longest (a 10 min cut) heals before the end
AUDIT_EVERY_S = 60.0
AUDIT_AFTER_FAILOVER_S = 5.0  # the PBXs find the new master and re-sync (lease TTL 3 s)


class World:
    """The masters and the PBXs, on the loop's clock, and what the checker reads."""

    def __init__(self, config: SimConfig, workdir: Path, result: SimResult) -> None:
        self.config, self.result = config, result
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualLoop)
        self.loop: VirtualLoop = loop
        derived = config.derived()
        loop.network.latency_s = derived["latency_s"]
        self.kinds, self.weights = list(derived["weights"]), list(derived["weights"].values())
        licenses = f'[[license]]\ntype = "PBX-Port13"\ncount = {config.ports}\n'
        a, b = MASTER_HOSTS
        self.etcd = EtcdModel() if config.etcd else None
        if self.etcd is not None:
            both: dict[str, Any] = {"etcd_endpoints": ("etcd.model:2379",), "log_level": "error"}
            self.masters = [SimMaster(workdir / "a", a, licenses, seed=config.seed * 2,
                                      etcd_client=functools.partial(self.etcd.client, host=a), **both),
                            SimMaster(workdir / "b", b, licenses, seed=config.seed * 2 + 1,
                                      etcd_client=functools.partial(self.etcd.client, host=b), **both)]
        else:
            self.masters = [SimMaster(workdir / "a", a, licenses, seed=config.seed * 2, peers=(f"{b}:{PORT}",), log_level="error"),
                            SimMaster(workdir / "b", b, licenses, seed=config.seed * 2 + 1, standby_of=f"{a}:{PORT}",
                                      peers=(f"{a}:{PORT}",), log_level="error")]
        self.clients: dict[str, MasterClient] = {}
        self.down: set[str] = set()  # PBXs crashed, not restarted yet: they use nothing
        self.in_flight: dict[str, int] = {}  # per PBX, the workload's requests not answered yet
        self.end = config.hours * 3600
        # what the checker reads (slave_sim/chaos/check.py's history)
        self.availability = Availability()
        self.grants: list[dict[str, Any]] = []
        self.checkins: list[dict[str, Any]] = []
        self.over: list[dict[str, Any]] = []  # the samples over installed (the rule needs only those)
        self.audits: list[dict[str, Any]] = []  # those that found something (check() looks again)
        self.open_faults = 0
        self.errors: list[Exception] = []  # raised by the simulator's own healing: re-raised at the end
        self.last_heal = 0.0
        self.serving: tuple[str, int] | None = None
        self.next_audit = AUDIT_EVERY_S

    def now(self) -> float:
        return round(self.loop.now, 6)

    def note(self, *what: Any) -> None:
        self.result.history.append((self.now(), *what))

    # ---------------------------------------------------------------- the PBXs

    def _client(self, n: int) -> MasterClient:
        name = f"pbx{n:02d}"

        def seen(event: dict[str, Any]) -> None:
            kind = event.get("event")
            self.availability.seen(self.now(), name, event, silent_s=self.loop.now - client.confirmed_at, hold_s=client.hold_s)
            if kind in ("lapsed", "lost", "reconnected", "epoch", "shutdown", "unresponsive"):
                self.note(name, kind, event.get("holder") or event.get("master") or "")

        client = MasterClient([m.address for m in self.masters], name, mac=f"00:90:33:00:01:{n:02x}", connect_timeout=2.0,
                              max_retry_s=30, on_event=seen, events_kept=0)
        self.clients[name] = client
        self.in_flight[name] = 0
        return client

    async def pbx(self, n: int) -> None:
        """A PBX's day: its phones register and leave at random (from the seed), until the end."""
        HOST.set(f"10.0.0.{n}")
        rng = random.Random(self.config.seed * 1000 + n)
        client = self._client(n)
        await self._connect(client)
        while self.loop.now < self.end:
            await asyncio.sleep(rng.uniform(20, 600))
            client = self.clients[client.node]  # a crash and restart made a new one
            name = client.node
            holder = f"phone{rng.randrange(self.config.phones)}"
            self.in_flight[name] += 1
            try:
                if ("port", holder) in client.leases:
                    self.checkins.append({"t": self.now(), "pbx": name, "holder": holder})
                    await client.checkin("port", holder)
                    self.note(name, "checkin", holder)
                else:
                    lease = await client.checkout("port", holder)
                    self.grants.append({"t": self.now(), "pbx": name, "holder": holder})
                    self.note(name, "checkout", holder, lease.lease)
            except LicenseError as exc:
                self.note(name, "refused", holder, exc.code)
            except (NotConnected, TimeoutError, ConnectionError) as exc:
                self.note(name, "unanswered", holder, type(exc).__name__)
            finally:
                self.in_flight[name] -= 1

    async def _connect(self, client: MasterClient) -> None:
        # Until it connects, or its PBX crashes meanwhile (then this client is gone with it: an
        # aborted client tried again here came back beside the restarted one, and the two fenced
        # each other: seed 106, pbx06 never served again).
        while self.clients.get(client.node) is client and client.node not in self.down:
            try:
                await client.connect()
                return
            except (NotConnected, LicenseError, OSError, TimeoutError):
                await asyncio.sleep(1.0)

    # ---------------------------------------------------------------- faults

    async def faults(self) -> None:
        """Faults from the seed until the quiet end; then wait until every one is healed."""
        rng = random.Random(self.config.seed * 7 + 1)
        while True:
            gap = rng.expovariate(1 / self.config.fault_every_s)
            if self.loop.now + gap >= self.end - QUIET_END_S:
                break
            await asyncio.sleep(gap)
            self._inject(rng.choices(self.kinds, self.weights)[0], rng)
        while self.open_faults and self.loop.now < self.end + 3600:
            await asyncio.sleep(1.0)
        if self.open_faults:  # a heal that never ends (a master that never starts again): no endless simulation
            self.result.stalled = f"{self.open_faults} fault(s) not healed an hour after the end"
        self.note("all healed", self.last_heal)

    def _inject(self, kind: str, rng: random.Random) -> None:
        loop = self.loop
        a, b = MASTER_HOSTS
        if kind in ("pause-pbx", "cut-pbx", "cut-pbx-one-way", "crash-pbx") and not self.clients:
            return
        if kind == "kill-master":
            acting = next((m for m in self.masters if m.alive and m.host not in loop.paused and m.master is not None
                           and m.master.role.serving), None)
            if acting is not None:
                self._fault(kind, acting.host)
                acting.kill()
                self._later(rng.uniform(5, 300), f"{kind} {acting.host}", acting.start)
        elif kind == "pause-master":
            master = rng.choice(self.masters)
            if master.alive and master.host not in loop.paused:
                seconds = rng.choice(PAUSES_S)
                self._fault(kind, f"{master.host} {seconds:g} s")
                loop.pause(master.host)
                self._later(seconds, f"{kind} {master.host}", loop.resume, master.host)
        elif kind == "pause-pbx":
            name = rng.choice(sorted(self.clients))
            host, seconds = self._pbx_host(name), rng.choice(PAUSES_S)
            if host not in loop.paused:
                self._fault(kind, f"{name} {seconds:g} s")
                loop.pause(host)
                self._later(seconds, f"{kind} {name}", loop.resume, host)
        elif kind in ("cut-pbx", "cut-pbx-one-way"):
            name = rng.choice(sorted(self.clients))
            host, seconds, inward = self._pbx_host(name), rng.choice(CUTS_S), rng.random() < 0.5
            ways = [(host, m) for m in MASTER_HOSTS] if kind == "cut-pbx-one-way" and not inward else \
                [(m, host) for m in MASTER_HOSTS] if kind == "cut-pbx-one-way" else \
                [(host, m) for m in MASTER_HOSTS] + [(m, host) for m in MASTER_HOSTS]
            self._cut(kind, f"{name} {seconds:g} s" + ("" if kind == "cut-pbx" else " to it" if inward else " from it"),
                      ways, seconds)
        elif kind in ("cut-masters", "cut-masters-one-way"):
            seconds, first = rng.choice(CUTS_S), rng.choice(MASTER_HOSTS)
            ways = [(a, b), (b, a)] if kind == "cut-masters" else [(first, b if first == a else a)]
            self._cut(kind, f"{' '.join(ways[0]) if len(ways) == 1 else 'both ways'} {seconds:g} s", ways, seconds)
        elif kind == "crash-pbx":
            name = rng.choice(sorted(self.clients))
            if name not in self.down and self._pbx_host(name) not in loop.paused:
                self._fault(kind, name)
                self._crash(name)
                self._later(rng.uniform(1, 120), f"{kind} {name}", self._restart_pbx, name)
        elif kind == "clock-jump":
            host, jump = rng.choice(MASTER_HOSTS), rng.choice(CLOCK_JUMPS_S)
            self._fault(kind, f"{host} {jump:+g} s")
            loop.wall_offset[host] = loop.wall_offset.pop(host, 0.0) + jump
            self._later(rng.uniform(60, 600), f"{kind} {host}", self._step_back, host, jump)
        elif kind == "quorum-lost" and self.etcd is not None:
            seconds = rng.choice(QUORUM_LOSSES_S)
            self._fault(kind, f"{seconds:g} s")
            self.etcd.up = False
            self._later(seconds, kind, self._quorum_back)
        elif kind in ("cut-etcd", "cut-etcd-one-way") and self.etcd is not None:
            host, seconds, inward = rng.choice(MASTER_HOSTS), rng.choice(CUTS_S), rng.random() < 0.5
            ways = [(host, CLUSTER), (CLUSTER, host)] if kind == "cut-etcd" else [(CLUSTER, host)] if inward else [(host, CLUSTER)]
            self._fault(kind, f"{host} {' '.join(ways[0]) if len(ways) == 1 else 'both ways'} {seconds:g} s")
            self.etcd.cut.update(ways)
            self._later(seconds, f"{kind} {host}", self.etcd.cut.difference_update, ways)

    @staticmethod
    def _pbx_host(name: str) -> str:
        return f"10.0.0.{int(name[3:])}"

    def _fault(self, kind: str, what: str) -> None:
        self.result.faults.append((self.now(), kind, what))
        self.note("fault", kind, what)

    def _cut(self, kind: str, what: str, ways: list[tuple[str, str]], seconds: float) -> None:
        self._fault(kind, what)
        network = self.loop.network
        network.cut.update(ways)
        self._later(seconds, kind, self._heal_cut, ways)

    def _heal_cut(self, ways: list[tuple[str, str]]) -> None:
        network = self.loop.network
        network.cut.difference_update(ways)
        for transport in network.transports:
            transport.flush()

    def _later(self, seconds: float, what: str, heal: Any, *args: Any) -> None:
        """Heal `what` in `seconds` (a plain call, or a coroutine function awaited in a task)."""
        self.open_faults += 1

        async def after() -> None:
            await asyncio.sleep(seconds)
            try:
                done = heal(*args)
                if asyncio.iscoroutine(done):
                    await done
            except Exception as exc:  # the simulator's own bug: said at the end, not a fault left open for ever
                self.errors.append(exc)
            self.open_faults -= 1
            self.last_heal = self.loop.now
            self.note("healed", what)

        self.loop.create_task(after())

    def _crash(self, name: str) -> None:
        client = self.clients[name]
        for _, holder in sorted(client.leases):  # its phones end with it: given back, as far as the checker goes
            self.checkins.append({"t": self.now(), "pbx": name, "holder": holder})
        self.down.add(name)
        client.abort()

    def _step_back(self, host: str, jump: float) -> None:
        offset = self.loop.wall_offset.pop(host, 0.0) - jump
        if abs(offset) > 1e-6:  # another jump still holds (none left: the wall clock's fast path)
            self.loop.wall_offset[host] = offset

    def _quorum_back(self) -> None:
        assert self.etcd is not None
        self.etcd.up = True

    async def _restart_pbx(self, name: str) -> None:
        n = int(name[3:])
        HOST.set(self._pbx_host(name))
        client = self._client(n)  # a new client: it holds nothing, and says so (fresh)
        self.down.discard(name)
        await self._connect(client)

    # ---------------------------------------------------------------- what the checker reads

    async def sample(self) -> None:
        """Every simulated second: what the PBXs believe and the serving masters count, against
        installed; an audit lease by lease every minute and after every failover."""
        installed = self.config.ports
        while True:
            await asyncio.sleep(1.0)
            believed = sum(len(c.believed()) for name, c in self.clients.items() if name not in self.down)
            self.result.peak_believed = max(self.result.peak_believed, believed)
            roles = {m.host: m.master.role.state.value for m in self.masters
                     if m.master is not None and m.master.started and m.host not in self.loop.paused}  # as chaos: one that answers
            epochs = {m.host: m.master.epoch for m in self.masters if m.master is not None and m.host in roles}
            counted = sorted(books_in_use(roles, epochs if self.etcd is not None else None))
            acting = sum(self._book(host).count for host in counted)
            if len(counted) > 1:
                acting -= ports_counted_twice([self._nodes(host) for host in counted])
            if believed > installed or acting > installed:
                self.over.append({"t": self.now(), "believed": believed, "acting": acting, "installed": installed, "roles": roles})
                self.note("over", believed, acting)
            granting = [host for host in counted if roles[host] in ("acting", "grace")]
            serving = (granting[0], self._master(granting[0]).epoch) if len(granting) == 1 else None
            if serving is not None and serving != self.serving:
                self.serving = serving
                self.note("serving", *serving)
                self.next_audit = min(self.next_audit, self.loop.now + AUDIT_AFTER_FAILOVER_S)
            if self.loop.now >= self.next_audit:
                self.next_audit = self.loop.now + AUDIT_EVERY_S
                for host in granting:
                    self.audit(host)

    def _master(self, host: str) -> Any:
        master = next(m for m in self.masters if m.host == host).master
        assert master is not None
        return master

    def _book(self, host: str) -> Any:
        return self._master(host).pool.book

    def _nodes(self, host: str) -> list[dict[str, Any]]:
        return [{"node": node, "held": [[lease.resource, lease.holder, lease.id] for lease in held.by_id.values()]}
                for node, held in self._book(host).held.items()]

    def audit(self, host: str) -> None:
        """What each PBX settled on this master believes, lease by lease, beside what the master
        counts for it (chaos's belief_violations). Only PBXs with nothing of the workload in
        flight, confirmed, and connected to it on both sides are compared."""
        master = self._master(host)
        sessions = master.dispatch.sessions.by_node
        book = master.pool.book
        believed: dict[str, list[list[str]]] = {}
        counted: dict[str, list[list[str]]] = {}
        for name, client in sorted(self.clients.items()):
            session = sessions.get(name)
            if name in self.down or self.in_flight[name] or not (client.settled and client.confirmed()) \
                    or client.address != (host, PORT) or session is None or session.conn is None:
                continue
            believed[name] = sorted([h.resource, h.holder, h.lease] for h in client.believed().values())
            held = book.held.get(name)
            counted[name] = [[lease.resource, lease.holder, lease.id] for lease in held.by_id.values()] if held else []
        self.result.audits += 1
        self.result.leases_audited += sum(map(len, believed.values()))
        found = belief_violations(believed, counted, self.now())
        if found:
            self.audits.append({"t": self.now(), "master": host, "believed": believed, "counted": counted})
            self.note("audit", host, len(found))

    async def watch_served(self) -> dict[str, float | None]:
        """When each PBX was first confirmed after the last heal (chaos's `served`)."""
        served: dict[str, float | None] = dict.fromkeys(self.clients)
        until = self.last_heal + SERVED_WITHIN_S + 60.0
        while self.loop.now < until and any(at is None for at in served.values()):
            for name, client in self.clients.items():
                if served[name] is None and client.connected.is_set() and client.confirmed() \
                        and client.confirmed_at > self.last_heal:
                    served[name] = self.now()
            await asyncio.sleep(0.1)
        return served

    def history(self, served: dict[str, float | None]) -> dict[str, Any]:
        """The chaos drill's history (slave_sim/chaos/check.py) of this simulation."""
        return {"samples": self.over, "grants": self.grants, "checkins": self.checkins, "losses": self.availability.losses,
                "lapses": self.availability.lapses, "held": {name: sorted(h for _, h in c.leases) for name, c in self.clients.items()},
                "last_heal": self.last_heal, "served": served, "audits": self.audits}


async def simulate(world: World) -> None:
    config, result, loop = world.config, world.result, world.loop
    for master in world.masters:
        await master.start()
    sampler = loop.create_task(world.sample())
    workload = [loop.create_task(world.pbx(n)) for n in range(1, config.pbxs + 1)]
    await world.faults()
    if world.errors:
        raise world.errors[0]
    served = await world.watch_served()
    await asyncio.gather(*workload)
    for host in sorted({m.host for m in world.masters if m.master is not None and m.master.role.serving}):
        world.audit(host)
    sampler.cancel()
    result.violations = sorted(check(world.history(served)), key=lambda v: (v["t"] is None, v["t"] or 0.0))
    result.by_rule = by_rule(result.violations)
    result.simulated_s = loop.now


def run_sim(config: SimConfig) -> SimResult:
    """One simulation in a virtual loop of its own (the caller's loop, if any, is left alone). A
    simulation where every task waits and no timer is due is a liveness violation (`stalled`),
    never a hang."""
    logging.getLogger("licmaster").setLevel(logging.CRITICAL)  # the simulation says what matters; the masters, quiet
    random.seed(config.seed)  # the clients' retry jitter
    result = SimResult(config)
    started = time.process_time()
    loop = VirtualLoop()
    worlds: list[World] = []

    async def run(workdir: Path) -> None:
        worlds.append(World(config, workdir, result))
        await simulate(worlds[0])

    try:
        with tempfile.TemporaryDirectory(prefix="slave-sim-sim-") as tmp, loop.virtual_wall_clock():
            try:
                loop.run_until_complete(run(Path(tmp)))
            except Stalled as exc:
                result.stalled = str(exc)
                result.simulated_s = loop.now
                result.history.append((round(loop.now, 6), "stalled", str(exc)))
                result.by_rule = by_rule(result.violations)  # every rule named, none checked past the stall
            loop.run_until_complete(_stop(loop, worlds))
    finally:
        loop.close()
    result.cpu_s = time.process_time() - started
    return result


async def _stop(loop: VirtualLoop, worlds: list[World]) -> None:
    """End what the world left running, as at a power cut: every host resumed, the PBXs'
    clients aborted, the masters killed, every other task cancelled."""
    for host in list(loop.paused):
        loop.resume(host)
    for world in worlds:
        for client in world.clients.values():
            client.abort()
        for master in world.masters:
            master.kill()
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
