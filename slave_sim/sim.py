"""`slave-sim sim`: days of faults in a minute (issue 26, a first part). The real masters (a master
and its standby, two-node) and the real MasterClients of the PBXs run on one virtual clock
(licmaster/testing/simloop.py), in one process; faults are drawn from the seed; the same seed on
the same commit gives the same history, byte for byte (`history_sha256`).

Two-node by default; with `etcd` the two masters hold the leadership in a model of etcd on the
same clock (licmaster/testing/etcd_model.py), and only an in-sync standby or the leader before may
lead.

Faults drawn (every `fault_every_s` on average): kill -9 of the acting master and its restart
(its journal's unwritten rows lost; it follows whoever took over), a PBX cut from both masters
for a while (both ways or one way, shorter and longer than the lease TTL), a PBX crashed and
restarted (its client starts afresh), and with etcd its quorum lost for a while (1 s to 10 min).
Not yet: pauses (one loop runs every party: a pause needs a per-party clock), clock jumps.

Checked, safety apart from liveness:
- safety, every simulated second: the Ports the PBXs may use (`believed`), summed, and those in
  use on each serving master, never over the installed count;
- availability: no PBX told `lapsed` (every fault is far shorter than the 72 h hold);
- liveness: at the end every PBX is connected and confirmed; a loop where every task waits and
  no timer is due is reported (Stalled), never a hang.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from licmaster.client import LicenseError, MasterClient, NotConnected
from licmaster.testing.etcd_model import EtcdModel
from licmaster.testing.simloop import HOST, Stalled, VirtualLoop
from licmaster.testing.simmaster import SimMaster

MASTER_HOSTS = ("10.1.0.1", "10.1.0.2")
FAULTS = ("kill-master", "cut-pbx", "cut-pbx-one-way", "crash-pbx")
ETCD_FAULTS = (*FAULTS, "quorum-lost")


@dataclass(frozen=True)
class SimConfig:
    seed: int
    hours: float = 24.0
    pbxs: int = 10
    phones: int = 14  # per PBX: about 70 held at a time for 60 Ports, so the pool runs out
    ports: int = 60  # installed: fewer than the phones, so that some are refused
    fault_every_s: float = 600.0
    etcd: bool = False  # leadership in a model of etcd (else two-node: standby_of and peers)

    def problems(self) -> list[str]:
        out = []
        if not 0 <= self.seed < 2**32:
            out.append(f"--seed {self.seed}: from 0 to {2**32 - 1}")
        if not 0 < self.hours <= 24 * 365:
            out.append(f"--hours {self.hours:g}: more than 0, at most a year")
        if not 1 <= self.pbxs <= 50:
            out.append(f"--pbxs {self.pbxs}: from 1 to 50")
        if not 1 <= self.phones <= 100:
            out.append(f"--phones {self.phones}: from 1 to 100")
        if not 1 <= self.ports <= 10_000:
            out.append(f"--ports {self.ports}: from 1 to 10,000")
        if not self.fault_every_s >= 10:
            out.append(f"--fault-every {self.fault_every_s:g}: at least 10 s")
        return out


@dataclass
class SimResult:
    config: SimConfig
    history: list[tuple[Any, ...]] = field(default_factory=list)
    faults: list[tuple[float, str, str]] = field(default_factory=list)
    safety: list[str] = field(default_factory=list)
    availability: list[str] = field(default_factory=list)
    liveness: list[str] = field(default_factory=list)
    simulated_s: float = 0.0
    cpu_s: float = 0.0
    peak_believed: int = 0

    @property
    def passed(self) -> bool:
        return not (self.safety or self.availability or self.liveness)

    @property
    def history_sha256(self) -> str:
        return hashlib.sha256(repr(self.history).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {"seed": c.seed, "hours": c.hours, "pbxs": c.pbxs, "phones": c.phones, "ports": c.ports, "etcd": c.etcd,
                "fault_every_s": c.fault_every_s, "passed": self.passed, "simulated_s": round(self.simulated_s, 3),
                "cpu_s": round(self.cpu_s, 2), "faults": len(self.faults), "faults_by_kind": _count(f[1] for f in self.faults),
                "peak_believed": self.peak_believed, "safety": self.safety[:20], "availability": self.availability[:20],
                "liveness": self.liveness[:20], "history_events": len(self.history), "history_sha256": self.history_sha256,
                "replay": f"slave-sim sim --seed {c.seed} --hours {c.hours:g} --pbxs {c.pbxs} --phones {c.phones} "
                          f"--ports {c.ports} --fault-every {c.fault_every_s:g}" + (" --etcd" if c.etcd else "")}


class World:
    """The masters and the PBXs, on the loop's clock."""

    def __init__(self, config: SimConfig, workdir: Path, result: SimResult) -> None:
        self.config, self.result = config, result
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualLoop)
        self.loop: VirtualLoop = loop
        licenses = f'[[license]]\ntype = "PBX-Port13"\ncount = {config.ports}\n'
        a, b = MASTER_HOSTS
        self.etcd = EtcdModel() if config.etcd else None
        if self.etcd is not None:
            both: dict[str, Any] = {"etcd_endpoints": ("etcd.model:2379",), "etcd_client": self.etcd.client, "log_level": "error"}
            self.masters = [SimMaster(workdir / "a", a, licenses, seed=config.seed * 2, **both),
                            SimMaster(workdir / "b", b, licenses, seed=config.seed * 2 + 1, **both)]
        else:
            self.masters = [SimMaster(workdir / "a", a, licenses, seed=config.seed * 2, peers=(f"{b}:4460",), log_level="error"),
                            SimMaster(workdir / "b", b, licenses, seed=config.seed * 2 + 1, standby_of=f"{a}:4460",
                                      peers=(f"{a}:4460",), log_level="error")]
        self.clients: dict[str, MasterClient] = {}
        self.end = config.hours * 3600

    def now(self) -> float:
        return round(self.loop.time(), 6)

    def note(self, *what: Any) -> None:
        self.result.history.append((self.now(), *what))

    # ---------------------------------------------------------------- the PBXs

    def _client(self, n: int) -> MasterClient:
        name = f"pbx{n:02d}"
        client = MasterClient([m.address for m in self.masters], name, mac=f"00:90:33:00:01:{n:02x}", connect_timeout=2.0,
                              max_retry_s=30, on_event=lambda event: self._event(name, event))
        self.clients[name] = client
        return client

    def _event(self, name: str, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "lapsed":
            self.result.availability.append(f"{self.now():.3f}: {name} told its {event.get('leases')} leases lapsed")
        if kind in ("lapsed", "lost", "reconnected", "epoch", "shutdown"):
            self.note(name, kind)

    async def pbx(self, n: int) -> None:
        """A PBX's day: its phones register and leave at random (from the seed), until the end."""
        HOST.set(f"10.0.0.{n}")
        rng = random.Random(self.config.seed * 1000 + n)
        client = self._client(n)
        await self._connect(client)
        while self.loop.time() < self.end:
            await asyncio.sleep(rng.uniform(20, 600))
            client = self.clients[client.node]  # a crash and restart made a new one
            holder = f"phone{rng.randrange(self.config.phones)}"
            try:
                if ("port", holder) in client.leases:
                    await client.checkin("port", holder)
                    self.note(client.node, "checkin", holder)
                else:
                    lease = await client.checkout("port", holder)
                    self.note(client.node, "checkout", holder, lease.lease)
            except LicenseError as exc:
                self.note(client.node, "refused", holder, exc.code)
            except (NotConnected, TimeoutError, ConnectionError) as exc:
                self.note(client.node, "unanswered", holder, type(exc).__name__)

    async def _connect(self, client: MasterClient) -> None:
        while True:
            try:
                await client.connect()
                return
            except (NotConnected, LicenseError, OSError, TimeoutError):
                await asyncio.sleep(1.0)

    # ---------------------------------------------------------------- faults

    async def faults(self) -> None:
        rng = random.Random(self.config.seed * 7 + 1)
        while True:
            await asyncio.sleep(rng.expovariate(1 / self.config.fault_every_s))
            if self.loop.time() >= self.end - 600:  # the last ten minutes heal: liveness is checked at the end
                return
            kind = rng.choice(ETCD_FAULTS if self.etcd is not None else FAULTS)
            if kind == "quorum-lost" and self.etcd is not None:
                seconds = rng.choice((1.0, 5.0, 30.0, 600.0))
                self._fault(kind, f"{seconds:g} s")
                self.etcd.up = False
                self.loop.create_task(self._quorum_back(seconds))
            elif kind == "kill-master":
                acting = next((m for m in self.masters if m.alive and m.master is not None and m.master.role.serving), None)
                if acting is None:
                    continue
                self._fault(kind, acting.host)
                acting.kill()
                self.loop.create_task(self._restart(acting, rng.uniform(5, 300)))
            elif kind in ("cut-pbx", "cut-pbx-one-way"):
                name = rng.choice(sorted(self.clients))
                host, seconds = f"10.0.0.{int(name[3:])}", rng.choice((1.5, 5.0, 30.0, 600.0))
                self._fault(kind, f"{name} {seconds:g} s")
                for master in MASTER_HOSTS:
                    self.loop.network.set_cut(host, master, both=kind == "cut-pbx")
                self.loop.create_task(self._heal(host, seconds))
            else:
                name = rng.choice(sorted(self.clients))
                self._fault(kind, name)
                self.clients[name].abort()
                self.loop.create_task(self._restart_pbx(name, rng.uniform(1, 120)))

    def _fault(self, kind: str, what: str) -> None:
        self.result.faults.append((self.now(), kind, what))
        self.note("fault", kind, what)

    async def _restart(self, master: SimMaster, after: float) -> None:
        await asyncio.sleep(after)
        await master.start()
        self.note("restarted", master.host)

    async def _quorum_back(self, after: float) -> None:
        await asyncio.sleep(after)
        assert self.etcd is not None
        self.etcd.up = True
        self.note("quorum", "back")

    async def _heal(self, host: str, after: float) -> None:
        await asyncio.sleep(after)
        for master in MASTER_HOSTS:
            self.loop.network.heal(host, master)
        self.note("healed", host)

    async def _restart_pbx(self, name: str, after: float) -> None:
        await asyncio.sleep(after)
        n = int(name[3:])
        HOST.set(f"10.0.0.{n}")
        client = self._client(n)  # a new client: it holds nothing, and says so (fresh)
        await self._connect(client)
        self.note(name, "restarted")

    # ---------------------------------------------------------------- the checker

    async def check(self) -> None:
        installed = self.config.ports
        while self.loop.time() < self.end:
            await asyncio.sleep(1.0)
            believed = sum(len(c.believed()) for c in self.clients.values())
            self.result.peak_believed = max(self.result.peak_believed, believed)
            if believed > installed:
                self.result.safety.append(f"{self.now():.3f}: the PBXs may use {believed} Ports, {installed} installed")
            for m in self.masters:
                if m.master is not None and m.master.started and m.master.role.serving:
                    used = m.master.status().leases
                    if used > installed:
                        self.result.safety.append(f"{self.now():.3f}: {m.host} counts {used} leases, {installed} installed")


async def simulate(config: SimConfig, workdir: Path) -> SimResult:
    result = SimResult(config)
    started = time.process_time()
    world = World(config, workdir, result)
    for master in world.masters:
        await master.start()
    try:
        await asyncio.gather(*(world.pbx(n) for n in range(1, config.pbxs + 1)), world.faults(), world.check())
        await asyncio.sleep(60)  # a minute without faults
        for name, client in sorted(world.clients.items()):
            if not (client.connected.is_set() and client.confirmed()):
                result.liveness.append(f"{world.now():.3f}: {name} not served a minute after the last fault healed")
    except Stalled as exc:
        result.liveness.append(f"stalled: {exc}")
    result.simulated_s = world.loop.time()
    for client in world.clients.values():
        client.abort()
    for master in world.masters:
        master.kill()
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:  # what the world left running ends with it
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    result.cpu_s = time.process_time() - started
    return result


def run_sim(config: SimConfig) -> SimResult:
    """One simulation in a virtual loop of its own (the caller's loop, if any, is left alone)."""
    logging.getLogger("licmaster").setLevel(logging.CRITICAL)  # the simulation says what matters; the masters, quiet
    random.seed(config.seed)  # the clients' retry jitter
    loop = VirtualLoop()
    try:
        with tempfile.TemporaryDirectory(prefix="slave-sim-sim-") as tmp:
            return loop.run_until_complete(simulate(config, Path(tmp)))
    finally:
        loop.close()


def _count(kinds: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind in kinds:
        out[kind] = out.get(kind, 0) + 1
    return out
