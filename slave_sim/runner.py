"""Run a scenario: start (or join) a master, bring the simulated network up, play the timeline,
audit all along, bring everything down, and judge the expectations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from licmaster.catalog import FAMILIES, Consumption

from .auditor import Auditor
from .master_process import MasterProcess
from .metrics import Recorder
from .pbx import SimPBX
from .scenario import Scenario, Step, matches

Progress = Callable[[int, int, str, Recorder], None]
IN_FLIGHT = 256  # concurrent operations when a step has no rate


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class RunResult:
    scenario: Scenario
    recorder: Recorder
    checks: list[Check]
    seconds: float
    master: str
    installed: dict[str, int] = field(default_factory=dict)
    final_in_use: dict[str, int] = field(default_factory=dict)
    journal: str | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


class Runner:
    def __init__(self, scenario: Scenario, master: str | None = None, progress: Progress | None = None) -> None:
        self.scenario = scenario
        self.recorder = Recorder()
        self.progress = progress
        self.external_master = master
        self.master_process: MasterProcess | None = None
        self.pbxs: dict[str, SimPBX] = {}
        self.standbys: dict[str, SimPBX] = {}
        self.killed_at: dict[str, float] = {}
        self.auditor: Auditor | None = None
        if master and any(s.action in ("restart-master", "reload-licenses") for s in scenario.steps):
            raise ValueError("this scenario restarts the master or replaces its licenses: run it without --master, "
                             "so that slave-sim owns the master")

    # ================================================================ the run

    async def run(self) -> RunResult:
        start = time.perf_counter()
        address = self._start_master()
        masters = [address]
        try:
            for spec in self.scenario.pbxs:
                self.pbxs[spec.name] = SimPBX(spec, masters, self.recorder)
                if spec.standby:
                    standby_spec = replace(spec, mac=_standby_mac(spec.mac), licensing="central")
                    self.standbys[spec.standby] = SimPBX(standby_spec, masters, self.recorder, role="standby",
                                                         standby_for=spec.name, name=spec.standby)
            everyone = [*self.pbxs.values(), *self.standbys.values()]
            await asyncio.gather(*(p.start() for p in everyone))
            self.auditor = Auditor(masters, self.recorder, self.belief)
            await self.auditor.start()
            self.recorder.fault(f"{len(self.pbxs)} PBXs and {len(self.standbys)} standbys up, "
                                f"{self.scenario.device_count} devices configured")
            total = len(self.scenario.steps)
            for i, step in enumerate(self.scenario.steps):
                self.recorder.step(step.describe())
                if self.progress:
                    self.progress(i, total, step.describe(), self.recorder)
                await self.play(step)
            if self.progress:
                self.progress(total, total, "everyone leaves", self.recorder)
            await asyncio.gather(*(p.stop() for p in everyone if p.alive))
            await asyncio.sleep(0.05)
            final, installed = await self._final_usage()
            checks = self.judge(final, installed)
            await self.auditor.stop()
        finally:
            journal = str(self.master_process.journal) if self.master_process else None
            if self.master_process:
                self.master_process.stop()
        return RunResult(self.scenario, self.recorder, checks, time.perf_counter() - start, address,
                         installed, final, journal)

    def _start_master(self) -> str:
        if self.external_master:
            return self.external_master
        self.master_process = MasterProcess(self.scenario.licenses, self.scenario.master)
        return self.master_process.start()

    async def _final_usage(self) -> tuple[dict[str, int], dict[str, int]]:
        assert self.auditor is not None
        in_use = await self.auditor.sample()
        return in_use, dict(self.auditor.installed)

    def belief(self) -> dict[str, int]:
        """What the whole simulated network believes it holds on the master, per family."""
        out: dict[str, int] = {}
        for pbx in [*self.pbxs.values(), *self.standbys.values()]:
            for part in (pbx.belief(), pbx.assigned_belief()):
                for family, n in part.items():
                    out[family] = out.get(family, 0) + n
        return out

    # ================================================================ steps

    def targets(self, step: Step) -> list[SimPBX]:
        if not step.pbx:
            return list(self.pbxs.values())
        return [p for name, p in self.pbxs.items() if any(matches(t, name) for t in step.pbx)]

    async def play(self, step: Step) -> None:
        action = step.action
        pbxs = [p for p in self.targets(step) if p.alive or action == "restore"]
        units: list[Callable[[], Awaitable[None]]] = []
        if action == "register":
            units = [_bind(p.register, d) for p in pbxs for d in p.to_register(step.fraction)]
        elif action == "unregister":
            units = [_bind(p.unregister, d) for p in pbxs for d in p.to_unregister(step.fraction)]
        elif action == "configure-users":
            units = [_bind(p.configure_user, u) for p in pbxs for u in p.users[: _part(len(p.users), step.fraction)]]
        elif action == "conference":
            units = [_bind(p.start_conference, r, step.participants) for p in pbxs for r in p.rooms()[: _part(len(p.rooms()), step.fraction)]]
        elif action == "end-conference":
            units = [_bind(p.end_conference, r) for p in pbxs for r in p.rooms()]
        elif action == "operator-login":
            units = [_bind(p.operator_login, d) for p in pbxs for d in p.desks()[: _part(len(p.desks()), step.fraction)]]
        elif action == "operator-logout":
            units = [_bind(p.operator_logout, d) for p in pbxs for d in p.desks()]
        elif action == "queue-monitor":
            units = [_bind(p.monitor_queue, q) for p in pbxs for q in p.queues()]
        elif action == "isdn-up":
            units = [_bind(p.isdn_up, i) for p in pbxs for i in p.interfaces()]
        elif action == "isdn-down":
            units = [_bind(p.isdn_down, i) for p in pbxs for i in p.interfaces()]
        elif action == "upgrade":
            units = [_bind(p.upgrade, step.firmware) for p in pbxs]
        elif action == "pause":
            await asyncio.sleep(step.seconds)
        elif action == "kill":
            for p in pbxs:
                p.kill()
                self.killed_at[p.name] = time.perf_counter()
                self.recorder.fault(f"{p.name} killed")
        elif action == "cut":
            for p in pbxs:
                p.cut()
                self.killed_at[p.name] = time.perf_counter()
                self.recorder.fault(f"{p.name} cut off")
        elif action == "restore":
            for p in self.targets(step):
                if p.state in ("dead", "cut"):
                    await p.restore()
                    self.recorder.fault(f"{p.name} back")
        elif action == "takeover":
            await self.takeover(step.standby)
        elif action == "restart-master":
            await self.restart_master()
        elif action == "reload-licenses":
            await self.reload_licenses(step)
        await self.run_units(units, step.rate)
        if step.audit:
            await self.audit(step.describe())

    async def run_units(self, units: list[Callable[[], Awaitable[None]]], rate: float) -> None:
        if not units:
            return
        if rate <= 0:
            semaphore = asyncio.Semaphore(IN_FLIGHT)

            async def limited(unit: Callable[[], Awaitable[None]]) -> None:
                async with semaphore:
                    await unit()

            await asyncio.gather(*(limited(u) for u in units))
            return
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks = []
        for i, unit in enumerate(units):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(unit()))
        await asyncio.gather(*tasks)

    async def takeover(self, standby_name: str) -> None:
        standbys = [s for name, s in self.standbys.items() if matches(standby_name, name)]
        for standby in standbys:
            start = time.perf_counter()
            ok = await standby.takeover()
            took = (time.perf_counter() - start) * 1000
            failed = self.pbxs[standby.standby_for or ""]
            if ok:
                self.recorder.takeover_ms.append(took)
                since = self.killed_at.get(failed.name)
                gap = f", {(time.perf_counter() - since) * 1000:.0f} ms after the failure" if since else ""
                self.recorder.fault(f"takeover by {standby.name} answered in {took:.1f} ms{gap}")
                failed.state = "fenced"
            else:
                self.recorder.fault(f"takeover by {standby.name} refused")

    async def restart_master(self) -> None:
        assert self.master_process is not None
        self.recorder.fault("master killed (kill -9)")
        await asyncio.get_running_loop().run_in_executor(None, self.master_process.restart)
        self.recorder.fault("master started again")
        # every live PBX reconnects and re-syncs by itself; wait until they have
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline:
            clients = [p.client for p in [*self.pbxs.values(), *self.standbys.values()] if p.alive and p.client]
            if all(c.connected.is_set() and not (c._reconnect_task and not c._reconnect_task.done()) for c in clients):
                break
            await asyncio.sleep(0.05)
        self.recorder.fault("every PBX re-synced")

    async def reload_licenses(self, step: Step) -> None:
        assert self.master_process is not None and self.auditor is not None
        before = list(self.auditor.pools)
        self.master_process.reload(step.licenses)
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline:  # until the master shows the new installation
            await asyncio.sleep(0.05)
            await self.auditor.sample()
            if self.auditor.pools != before:
                break
        self.recorder.fault("licenses reloaded: " + ", ".join(f"{f} {n}" for f, n in sorted(self.auditor.installed.items())))

    async def audit(self, label: str) -> None:
        assert self.auditor is not None
        await asyncio.sleep(0.05)  # replies in flight land first
        await self.auditor.check_agreement(label)

    # ================================================================ verdict

    def judge(self, final: dict[str, int], installed: dict[str, int]) -> list[Check]:
        e, r = self.scenario.expect, self.recorder
        checks: list[Check] = []
        over = [v for v in r.violations if v["what"] == "over-allocation"]
        if e.no_over_allocation:
            checks.append(Check("no over-allocation", not over,
                                f"{len(r.samples)} samples of the master's usage, never more in use than installed"
                                if not over else f"{len(over)} samples over: first {over[0]}"))
        if e.audit_agrees:
            bad = [a for a in r.audits if not a["agrees"]]
            checks.append(Check("master and network agree", not bad,
                                f"{len(r.audits)} audits at quiet points agreed exactly" if not bad
                                else f"disagreed at {bad[0]['at']}: master {bad[0]['master']} vs network {bad[0]['network']}"))
        if e.nothing_left:
            floating = {f: n for f, n in final.items() if n and FAMILIES[f].consumption in (Consumption.FLOATING, Consumption.BOUND)}
            checks.append(Check("nothing left checked out", not floating,
                                "every floating license back after everyone left" if not floating else f"still in use: {floating}"))
        by_code = r.denials_by_code()
        for code, (lo, hi) in e.denials.items():
            n = by_code.get(code, 0)
            checks.append(Check(f"denials {code}", lo <= n <= hi, f"{n} (expected {lo}..{hi})"))
        by_rule = r.denials_by_rule()
        for rule, (lo, hi) in e.denial_rules.items():
            n = by_rule.get(rule, 0)
            checks.append(Check(f"denials naming {rule}", lo <= n <= hi, f"{n} (expected {lo}..{hi})"))
        peak = r.peak_in_use()
        for family, want in e.peak_in_use.items():
            target = installed.get(family, 0) if want == "installed" else int(want)
            checks.append(Check(f"peak {family} in use", peak.get(family, 0) == target,
                                f"{peak.get(family, 0)} (expected {target}{' = installed' if want == 'installed' else ''})"))
        if e.takeovers is not None:
            lo, hi = e.takeovers
            checks.append(Check("takeovers", lo <= len(r.takeover_ms) <= hi, f"{len(r.takeover_ms)} (expected {lo}..{hi})"))
        if e.takeover_ms_max is not None:
            worst = max(r.takeover_ms, default=0.0)
            checks.append(Check(f"takeover within {e.takeover_ms_max:g} ms", bool(r.takeover_ms) and worst <= e.takeover_ms_max,
                                f"slowest {worst:.1f} ms" if r.takeover_ms else "no takeover happened"))
        return checks


def _bind(fn: Callable[..., Awaitable[None]], *args: Any) -> Callable[[], Awaitable[None]]:
    return lambda: fn(*args)


def _part(n: int, fraction: float) -> int:
    return n if fraction >= 1 else round(n * fraction)


def _standby_mac(mac: str) -> str:
    octets = mac.split(":")
    octets[3] = f"{(int(octets[3], 16) ^ 0x80):02x}"
    return ":".join(octets)
