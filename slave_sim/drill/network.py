"""The simulated PBXs of one process, and how a timeline step acts on them.

The runner drives one Network in-process, or one per worker process (`--workers N`, PBX i in
worker i mod N): the same class either way, so a drill means the same thing at any scale.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from .actions import ACTIONS
from .metrics import Recorder
from .pbx import SimPBX
from .scenario import Scenario, Step, matches

IN_FLIGHT = 256  # concurrent operations when a step has no rate
Unit = Callable[[], Awaitable[None]]


class Network:
    def __init__(self, scenario: Scenario, masters: list[str], recorder: Recorder, *, worker: int = 0, workers: int = 1) -> None:
        self.scenario = scenario
        self.recorder = recorder
        self.workers = workers
        self.pbxs: dict[str, SimPBX] = {}
        self.standbys: dict[str, SimPBX] = {}
        self.killed_at: dict[str, float] = {}
        for i, spec in enumerate(scenario.pbxs):
            if i % workers != worker:
                continue
            self.pbxs[spec.name] = SimPBX(spec, masters, recorder, access=scenario.access)
            if spec.standby:
                standby_spec = replace(spec, mac=standby_mac(spec.mac), licensing="central")
                self.standbys[spec.standby] = SimPBX(standby_spec, masters, recorder, role="standby",
                                                     standby_for=spec.name, name=spec.standby, access=scenario.access)

    @property
    def everyone(self) -> list[SimPBX]:
        return [*self.pbxs.values(), *self.standbys.values()]

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self.everyone))

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.everyone if p.alive))

    def assignments(self) -> list[tuple[str, list[str]]]:
        return [pair for pbx in self.everyone for pair in pbx.assignments()]

    def belief(self) -> dict[str, int]:
        """What these PBXs believe they hold on the master, per family (leases and user licenses)."""
        out: dict[str, int] = {}
        for pbx in self.everyone:
            for part in (pbx.belief(), pbx.assigned_belief()):
                for family, n in part.items():
                    out[family] = out.get(family, 0) + n
        return out

    async def settled(self, epoch: int = 0, timeout: float = 30.0) -> bool:
        """True once every live PBX is connected to a master of at least `epoch` (after a master
        restart) and has re-synced."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            clients = [p.client for p in self.everyone if p.alive and p.client]
            if all(c.settled and c.epoch >= epoch for c in clients):
                return True
            await asyncio.sleep(0.05)
        return False

    def targets(self, step: Step) -> list[SimPBX]:
        if not step.pbx:
            return list(self.pbxs.values())
        return [p for name, p in self.pbxs.items() if any(matches(t, name) for t in step.pbx)]

    async def play(self, step: Step) -> int:
        """A PBX step (scope "pbx" in actions.py), by its `do_<action>` method: the units of work
        it returns (registrations, log-ins, ...) run paced at the step's rate. Returns how many."""
        units: list[Unit] = await getattr(self, ACTIONS[step.action].method)(step)
        await run_units(units, step.rate / self.workers)
        return len(units)

    def _alive(self, step: Step) -> list[SimPBX]:
        return [p for p in self.targets(step) if p.alive]

    # ---------------------------------------------------------------- the PBX actions, one method each

    async def do_register(self, step: Step) -> list[Unit]:
        return [_bind(p.register, d) for p in self._alive(step) for d in p.to_register(step.fraction)]

    async def do_unregister(self, step: Step) -> list[Unit]:
        return [_bind(p.unregister, d) for p in self._alive(step) for d in p.to_unregister(step.fraction)]

    async def do_configure_users(self, step: Step) -> list[Unit]:
        return [_bind(p.configure_user, u) for p in self._alive(step) for u in _part(p.users, step.fraction)]

    async def do_conference(self, step: Step) -> list[Unit]:
        return [_bind(p.start_conference, r, step.participants) for p in self._alive(step) for r in _part(p.rooms(), step.fraction)]

    async def do_end_conference(self, step: Step) -> list[Unit]:
        return [_bind(p.end_conference, r) for p in self._alive(step) for r in p.rooms()]

    async def do_operator_login(self, step: Step) -> list[Unit]:
        return [_bind(p.operator_login, d) for p in self._alive(step) for d in _part(p.desks(), step.fraction)]

    async def do_operator_logout(self, step: Step) -> list[Unit]:
        return [_bind(p.operator_logout, d) for p in self._alive(step) for d in p.desks()]

    async def do_queue_monitor(self, step: Step) -> list[Unit]:
        return [_bind(p.monitor_queue, q) for p in self._alive(step) for q in p.queues()]

    async def do_isdn_up(self, step: Step) -> list[Unit]:
        return [_bind(p.isdn_up, i) for p in self._alive(step) for i in p.interfaces()]

    async def do_isdn_down(self, step: Step) -> list[Unit]:
        return [_bind(p.isdn_down, i) for p in self._alive(step) for i in p.interfaces()]

    async def do_upgrade(self, step: Step) -> list[Unit]:
        return [_bind(p.upgrade, step.firmware) for p in self._alive(step)]

    async def do_kill(self, step: Step) -> list[Unit]:
        for p in self._alive(step):
            p.kill()
            self.killed_at[p.name] = time.perf_counter()
            self.recorder.fault(f"{p.name} killed")
        return []

    async def do_cut(self, step: Step) -> list[Unit]:
        for p in self._alive(step):
            p.cut()
            self.killed_at[p.name] = time.perf_counter()
            self.recorder.fault(f"{p.name} cut off")
        return []

    async def do_restore(self, step: Step) -> list[Unit]:
        for p in self.targets(step):
            if p.state in ("dead", "cut"):
                await p.restore()
                self.recorder.fault(f"{p.name} back")
        return []

    async def do_takeover(self, step: Step) -> list[Unit]:
        await self.takeover(step.standby, step.describe())
        return []

    async def takeover(self, standby_name: str, step: str = "takeover") -> None:
        for name, standby in self.standbys.items():
            if not matches(standby_name, name):
                continue
            start = time.perf_counter()
            refused = await standby.takeover()
            took = (time.perf_counter() - start) * 1000
            failed = self.pbxs[standby.standby_for or ""]
            if refused is None:
                self.recorder.takeover_ms.append(took)
                since = self.killed_at.get(failed.name)
                gap = f", {(time.perf_counter() - since) * 1000:.0f} ms after the failure" if since else ""
                self.recorder.fault(f"takeover by {standby.name} answered in {took:.1f} ms{gap}")
                failed.state = "fenced"
            else:
                rule = f" ({refused.rule})" if refused.rule else ""
                self.recorder.failover_refused(
                    step, "takeover", standby.name, failed.name, refused.code, refused.rule, refused.message,
                    f"takeover by {standby.name} of {failed.name} refused: {refused.code}{rule}: {refused.message}")


async def run_units(units: list[Unit], rate: float) -> None:
    """Every unit of a step: paced at `rate` per second, or as fast as the master answers."""
    if not units:
        return
    if rate <= 0:
        semaphore = asyncio.Semaphore(IN_FLIGHT)

        async def limited(unit: Unit) -> None:
            async with semaphore:
                await unit()

        await asyncio.gather(*(limited(u) for u in units))
        return
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks: list[asyncio.Future[None]] = []
    for i, unit in enumerate(units):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(unit()))
    await asyncio.gather(*tasks)


def _bind(fn: Callable[..., Awaitable[None]], *args: Any) -> Unit:
    return lambda: fn(*args)


def _part(items: list[Any], fraction: float) -> list[Any]:
    return items if fraction >= 1 else items[: round(len(items) * fraction)]


def standby_mac(mac: str) -> str:
    """A standby PBX is another device: its MAC differs from the PBX it stands by for."""
    octets = mac.split(":")
    octets[3] = f"{(int(octets[3], 16) ^ 0x80):02x}"
    return ":".join(octets)
