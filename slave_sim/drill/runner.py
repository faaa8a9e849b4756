"""Run a scenario: start (or join) a master, bring the simulated network up, play the timeline,
audit all along, bring everything down, and judge the expectations."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from licmaster.client import MasterClient
from licmaster.model.catalog import FAMILIES, Consumption
from licmaster.testing import free_port
from licmaster.testing.etcd import EtcdCluster

from ..access import check_access, make_certificate
from ..availability import describe as describe_availability
from ..proxy import Link
from . import own_master
from .actions import ACTIONS
from .auditor import Auditor
from .master_process import RunMaster
from .metrics import Recorder
from .network import Network
from .scenario import NOT_SETTLED, Scenario, Step, failover_steps
from .workers import RemoteNetwork

Progress = Callable[[int, int, str, Recorder], None]


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    kind: str = "correctness"  # or "sizing": what the installation needs, not whether the master was right


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
    undone: int | None = None  # against an external master: the user licenses the run assigned and unassigned at the end

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


class Runner:
    def __init__(self, scenario: Scenario, master: str | None = None, progress: Progress | None = None,
                 workers: int = 1, dashboard: Callable[[str], None] | None = None,
                 hold: Callable[[], Awaitable[None]] | None = None, force: bool = False) -> None:
        self.scenario = scenario
        self.dashboard = dashboard  # told the dashboard's URL as soon as the run's master serves
        self.hold = hold  # awaited after the last step, before the masters stop (to look at the dashboard)
        self.recorder = Recorder()
        self.progress = progress
        self.external_master = master
        self.force = force  # run against a master whose licenses are not the scenario's
        self.workers = max(1, workers)
        self.master_process: RunMaster | None = None
        self.links: dict[str, Link] = {}
        self.etcd: EtcdCluster | None = None
        self._etcd_dir: tempfile.TemporaryDirectory[str] | None = None
        self._etcd_outage: asyncio.Task[None] | None = None  # etcd-down: its members start again when it ends
        self._standby_listen = ""
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self._tls: tuple[Path, Path] | None = None  # the certificate and key of the masters it starts, with TLS
        self.standby_process: RunMaster | None = None
        self.local: Network | None = None
        self.remote: list[RemoteNetwork] = []
        self.auditor: Auditor | None = None
        if master and any(ACTIONS[s.action].needs_own_master for s in scenario.steps):
            raise ValueError("this scenario restarts the master, replaces its licenses or stops its etcd: run it without --master, "
                             "so that slave-sim owns the master")

    # ================================================================ the run

    async def run(self) -> RunResult:
        start = time.perf_counter()
        if self.external_master:  # a master that wants TLS or a token is named before anything runs
            await check_access(self.external_master, self.scenario.access)
        if self.external_master and not self.force:
            await own_master.check_licenses(self.external_master, self.scenario.licenses, self.scenario.access)
        self._secure_own_master()
        await self._start_links()
        address = self._start_master()
        masters = [address]
        if self.scenario.standby_master and self.master_process is not None:
            masters.append(await self._start_standby(address))
        checks: list[Check] = []
        final: dict[str, int] = {}
        installed: dict[str, int] = {}
        undone: int | None = None
        try:
            if self.workers == 1:
                self.local = Network(self.scenario, masters, self.recorder)
                await self.local.start()
            else:
                self.remote = [RemoteNetwork(self.scenario.path, self.scenario.size, masters, w, self.workers,
                                             self.recorder.start, access=self.scenario.access) for w in range(self.workers)]
                await asyncio.gather(*(r.start() for r in self.remote))
            self.auditor = Auditor(masters, self.recorder, every_master=masters if len(masters) > 1 else None,
                                   access=self.scenario.access)
            await self.auditor.start()
            if self.standby_process is not None:
                await self._standby_attached()
            standbys = sum(1 for p in self.scenario.pbxs if p.standby)
            self.recorder.fault(f"{len(self.scenario.pbxs)} PBXs and {standbys} standbys up in {self.workers} "
                                f"process(es), {self.scenario.device_count} devices configured")
            total = len(self.scenario.steps)
            for i, step in enumerate(self.scenario.steps):
                self.recorder.step(step.describe())
                if self.progress:
                    self.progress(i, total, step.describe(), self.recorder)
                await self.play(i, step)
            await self._etcd_back()
            if self.progress:
                self.progress(total, total, "everyone leaves", self.recorder)
            assigned = self.local.assignments() if self.local is not None else \
                [pair for remote in self.remote for pair in await remote.assignments()]
            await self._stop_networks()
            await asyncio.sleep(0.05)
            final = await self.auditor.sample()
            installed = dict(self.auditor.installed)
            checks = self.judge(final, installed)
            if self.external_master:  # leave the operator's master as the run found it
                undone = await own_master.undo_assignments(self.external_master, assigned, self.scenario.access)
                self.recorder.fault(f"the {undone} user(s) the run gave user licenses on {self.external_master} "
                                    "had them unassigned")
            await self.auditor.stop()
            if self.hold is not None:
                await self.hold()
        finally:
            if self._etcd_outage is not None:
                self._etcd_outage.cancel()
            for remote in self.remote:
                remote.kill()
            for link in self.links.values():
                await link.stop()
            journal = str(self.master_process.journal) if self.master_process else None
            for process in (self.master_process, self.standby_process):
                if process:
                    process.stop()
            if self.etcd is not None:
                self.etcd.stop()
            if self._etcd_dir is not None:
                self._etcd_dir.cleanup()
            if self._tls_dir is not None:
                self._tls_dir.cleanup()
        return RunResult(self.scenario, self.recorder, checks, time.perf_counter() - start, address,
                         installed, final, journal, undone)

    async def _start_links(self) -> None:
        """With [master] etcd = true: one etcd member, reached by the master through the
        `master-etcd` link (the standby reaches it directly)."""
        if not self.scenario.etcd or self.external_master:
            return
        self._standby_listen = f"127.0.0.1:{free_port()}"
        self._etcd_dir = tempfile.TemporaryDirectory(prefix="slave-sim-etcd-")
        self.etcd = EtcdCluster(Path(self._etcd_dir.name)).start()
        host, port = self.etcd.endpoints[0].rsplit(":", 1)
        self.links["master-etcd"] = await Link("master-etcd", (host, int(port))).start()

    def _secure_own_master(self) -> None:
        """[master] tls = true (or --tls) without --master: the masters slave-sim starts serve a
        certificate made for this run, which its clients trust alone (a cafile given is not used)."""
        access = self.scenario.access
        if self.external_master or not access.tls:
            return
        self._tls_dir = tempfile.TemporaryDirectory(prefix="slave-sim-tls-")
        self._tls = make_certificate(Path(self._tls_dir.name))
        self.scenario = replace(self.scenario, access=replace(access, cafile=self._tls[0]))

    def _master_settings(self, standby: bool) -> dict[str, Any]:
        settings = dict(self.scenario.master)
        if self._tls is not None:
            settings.update(tls_cert=str(self._tls[0]), tls_key=str(self._tls[1]))
        if self.scenario.access.token:
            settings["auth_token"] = self.scenario.access.token
        if self.etcd is not None:
            direct = self.etcd.endpoints
            settings["etcd_endpoints"] = direct if standby else [self.links["master-etcd"].endpoint]
            if self.scenario.standby_master:
                # Each knows the other as a peer: a leader cut from etcd learns there that another won.
                if standby:
                    settings["listen"] = self._standby_listen
                    settings["peers"] = [self.master_process.target] if self.master_process else []
                else:
                    settings["peers"] = [self._standby_listen]
        return settings

    async def _start_standby(self, master: str) -> str:
        """Without etcd the standby follows the master through the `standby-master` link."""
        settings = self._master_settings(standby=True)
        if self.etcd is None:
            host, port = master.rsplit(":", 1)
            self.links["standby-master"] = await Link("standby-master", (host, int(port))).start()
            settings["standby_of"] = self.links["standby-master"].endpoint
        self.standby_process = RunMaster(self.scenario.licenses, settings)
        return await asyncio.get_running_loop().run_in_executor(None, lambda: self.standby_process.start().target)  # type: ignore[union-attr]

    def _start_master(self) -> str:
        if self.external_master:
            return self.external_master
        self.master_process = RunMaster(self.scenario.licenses, self._master_settings(standby=False))
        address = self.master_process.start().target
        if self.dashboard is not None and self.master_process.http:
            self.dashboard(f"{'https' if self._tls else 'http'}://{self.master_process.http}/")
        return address

    async def _stop_networks(self) -> None:
        if self.local is not None:
            await self.local.stop()
        for recorder in await asyncio.gather(*(r.stop() for r in self.remote)):
            self.recorder.merge(recorder)

    async def belief(self) -> dict[str, int]:
        """What the whole simulated network believes it holds on the master, per family."""
        parts = [self.local.belief()] if self.local else await asyncio.gather(*(r.fetch_belief() for r in self.remote))
        out: dict[str, int] = {}
        for part in parts:
            for family, n in part.items():
                out[family] = out.get(family, 0) + n
        return out

    # ================================================================ steps

    async def play(self, index: int, step: Step) -> None:
        started = time.perf_counter()
        units = 0
        action = ACTIONS[step.action]
        if action.scope == "run":
            await getattr(self, action.method)(step)
        elif self.local is not None:
            units = await self.local.play(step)
        else:
            units = sum(await asyncio.gather(*(r.play_index(index) for r in self.remote)))
        self.recorder.step_done(step.describe(), step.action, units, time.perf_counter() - started)
        if step.audit:
            await self.audit(step.describe())

    async def _standby_attached(self, timeout: float = 15.0) -> None:
        """The standby master follows the master before the drill begins."""
        assert self.auditor is not None
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if (await self.auditor.client.usage()).get("replicas"):
                self.recorder.fault("standby master following the master")
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the standby master did not attach to the master within 15 s")

    async def _all_settled(self, epoch: int) -> bool:
        if self.local is not None:
            return await self.local.settled(epoch)
        return all(await asyncio.gather(*(r.settled(epoch) for r in self.remote)))

    async def audit(self, label: str) -> None:
        assert self.auditor is not None
        await asyncio.sleep(0.05)  # replies in flight land first
        await self.auditor.check_agreement(label, await self.belief())

    # ================================================================ the run's actions, one method each (actions.py)

    async def do_pause(self, step: Step) -> None:
        await asyncio.sleep(step.seconds)

    async def do_fail_master(self, step: Step) -> None:
        """A failover step: if the PBXs are not all re-synced on the standby master, or the
        auditor finds no acting master at the new epoch, within 30 s, it is recorded as refused
        (not_settled), which fails the run unless [expect] failover_refused allows it."""
        assert self.master_process is not None and self.auditor is not None
        epoch = self.auditor.client.epoch + 1
        self.master_process.kill9()
        self.recorder.fault("master killed (kill -9); its standby master takes over")
        if not await self._all_settled(epoch):
            why = "some PBXs did not move to the standby master within 30 s"
        elif not await self.auditor.reach(epoch):
            why = f"no master was acting at epoch {epoch} or later within 30 s"
        else:
            self.recorder.fault(f"every PBX re-synced on the standby master (epoch {epoch})")
            return
        self.recorder.failover_refused(step.describe(), "fail-master", "the standby master", "the master", NOT_SETTLED, None, why,
                                       f"fail-master: the standby master's takeover did not complete: {NOT_SETTLED}: {why}")

    async def do_return_master(self, step: Step) -> None:
        """The failed master starts again on its data with the acting master as a peer: it must
        follow it, not serve. The two then swap roles, so that a later fail-master kills the
        acting one and the returned one takes over in turn."""
        failed, acting = self.master_process, self.standby_process
        assert failed is not None and acting is not None and self.auditor is not None
        epoch = self.auditor.client.epoch
        failed.config["peers"] = [acting.target]
        failed.config.pop("standby_of", None)
        failed.reconfigure()
        await asyncio.get_running_loop().run_in_executor(None, failed.restart_same_port)
        watcher = MasterClient([failed.target], "slave-sim-return-watch", role="observer", reconnect=False,
                               **self.scenario.access.client_options())
        await watcher.connect()
        try:
            standby_of = (await watcher.usage()).get("standby_of")
        finally:
            await watcher.close()
        if standby_of != acting.target:
            raise RuntimeError(f"the returned master serves instead of following {acting.target} (standby_of={standby_of})")
        self.master_process, self.standby_process = acting, failed
        await self._standby_attached()
        self.recorder.fault(f"the failed master is back: it follows the acting master (epoch {epoch}) as its standby")

    async def do_restart_master(self, step: Step) -> None:
        assert self.master_process is not None and self.auditor is not None
        epoch = self.auditor.client.epoch + 1
        self.recorder.fault("master killed (kill -9)")
        await asyncio.get_running_loop().run_in_executor(None, self.master_process.restart)
        self.recorder.fault("master started again")
        # every live PBX reconnects and re-syncs by itself; wait until they all have
        settled = await self._all_settled(epoch)
        self.recorder.fault("every PBX re-synced" if settled else "some PBXs did not re-sync within 30 s")

    async def do_reload_licenses(self, step: Step) -> None:
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

    async def do_partition(self, step: Step) -> None:
        for name in step.cut:
            self._link(name).set_cut(True)
            self.recorder.fault(f"link {name} cut")
        for name in step.heal:
            self._link(name).set_cut(False)
            self.recorder.fault(f"link {name} healed")

    async def do_etcd_down(self, step: Step) -> None:
        """Every etcd member killed for `seconds`, then started again on its data; the steps
        after it play during the outage. Without quorum the leader cannot confirm its leadership:
        it grants nothing (a PBX's hello is refused `no_quorum`, its client tries again by itself)
        and sends its PBXs away; they keep what they hold for their hold. A PBX step that needs a
        master waits for the quorum to come back."""
        etcd = self._etcd()
        await self._etcd_back()  # an earlier outage first ends
        loop = asyncio.get_running_loop()
        for member in range(len(etcd.names)):
            await loop.run_in_executor(None, etcd.kill, member)
        self.recorder.fault(f"every etcd member killed ({len(etcd.names)}): no quorum for {step.seconds:g} s")
        self._etcd_outage = loop.create_task(self._etcd_restart_after(etcd, step.seconds), name="etcd-outage")

    async def _etcd_restart_after(self, etcd: EtcdCluster, seconds: float) -> None:
        await asyncio.sleep(seconds)
        loop = asyncio.get_running_loop()
        for member in range(len(etcd.names)):
            await loop.run_in_executor(None, etcd.start_member, member)
        await loop.run_in_executor(None, etcd.wait_healthy)
        self.recorder.fault("etcd members back: quorum")

    async def _etcd_back(self) -> None:
        """The etcd outage under way (etcd-down) has ended: its members are back."""
        outage, self._etcd_outage = self._etcd_outage, None
        if outage is not None:
            await outage

    def _etcd(self) -> EtcdCluster:
        if self.etcd is None:
            raise RuntimeError("this run has no etcd: etcd-down needs [master] etcd = true, without --master")
        return self.etcd

    def _link(self, name: str) -> Link:
        link = self.links.get(name)
        if link is None:
            raise RuntimeError(f"this run has no link {name!r} (links: {', '.join(self.links) or 'none'}): "
                               "standby-master needs [master] standby = true, master-etcd needs etcd = true")
        return link

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
        if e.over_installed_across_masters is not None:
            lo, hi = e.over_installed_across_masters
            worst = max((s["over"] for s in r.across_masters), default=0)
            twice = max((s["counted_twice"] for s in r.across_masters), default=0)
            checks.append(Check("in use beyond installed, summed over the masters", lo <= worst <= hi,
                                f"at most {worst} over, over {len(r.across_masters)} samples of every master "
                                f"(a Port two masters count for one phone counted once: up to {twice} at a sample) "
                                f"(expected {lo}..{hi})"))
        sizing = r.sites()
        by_site = {row["site"]: row for row in sizing["sites"]}
        for site, bounds in sorted(e.sites.items()):
            row = by_site.get(site, {"peak_ports": 0, "refused": 0, "short": 0})
            for label, key, limit in (("refused", "refused", bounds.refused), ("without a Port at once, at most", "short", bounds.short),
                                      ("peak Ports held", "peak_ports", bounds.peak)):
                if limit is not None:
                    lo, hi = limit
                    checks.append(Check(f"site {site}: {label}", lo <= row[key] <= hi, f"{row[key]} (expected {lo}..{hi})",
                                        kind="sizing"))
        if failover_steps(self.scenario.steps):
            checks.append(failover_check(r.failover_refusals, e.failover_refused, len(failover_steps(self.scenario.steps))))
        checks.append(availability_check(r.availability.summary(), e.out_of_service))
        if e.takeover_ms_max is not None:
            worst = max(r.takeover_ms, default=0.0)
            checks.append(Check(f"takeover within {e.takeover_ms_max:g} ms", bool(r.takeover_ms) and worst <= e.takeover_ms_max,
                                f"slowest {worst:.1f} ms" if r.takeover_ms else "no takeover happened"))
        return checks


SHOWN_REFUSALS = 5  # a city's failed takeovers are counted, not each listed


def availability_check(summary: dict[str, int], allowed: tuple[int, int]) -> Check:
    """The check "availability", in every run: the leases whose devices lost service because of
    licensing (their PBX told they lapsed, or lost at a re-sync) within `[expect] out_of_service`
    (0 unless the drill rehearses such a loss: no fault shorter than the hold may cost one)."""
    lo, hi = allowed
    n = summary["out_of_service"]
    return Check("availability", lo <= n <= hi,
                 f"{describe_availability(summary)}: {n} out of service because of licensing (expected {lo}..{hi})")


def failover_check(refusals: list[dict[str, Any]], allowed: dict[str, tuple[int, int]], steps: int) -> Check:
    """The check "failover steps": passes when no failover step was refused, or when the refusals are
    exactly what `[expect] failover_refused` allows (by code, a count or [min, max] each; a code
    it does not name: none). Names each refusal: the step, the standby, the failed peer, the code,
    the rule and the master's sentence."""
    by_code = Counter(r["code"] for r in refusals)
    off = [f"{code} {by_code.get(code, 0)} (expected {lo}..{hi})"
           for code, (lo, hi) in sorted({c: allowed.get(c, (0, 0)) for c in {*by_code, *allowed}}.items())
           if not lo <= by_code.get(code, 0) <= hi]
    said = "; ".join(r["text"] for r in refusals[:SHOWN_REFUSALS])
    if len(refusals) > SHOWN_REFUSALS:
        said += f"; and {len(refusals) - SHOWN_REFUSALS} more"
    if off:
        detail = f"{said or 'none refused'}; [expect] failover_refused: " + ", ".join(off)
    elif refusals:
        detail = f"{said}; as [expect] failover_refused allows"
    else:
        detail = f"{steps} failover step(s), none refused"
    return Check("failover steps", not off, detail)
