"""The glue of `slave-sim replay`: the record found and read, a Scenario built from its timeline,
and the drill runner playing it against a real master.

`prepare` does everything that can refuse before a process starts (the data directory and its
journal, the recorded master's config, the candidate licenses and policy, the period, the speed,
`--lose`), and returns the Scenario: the record's PBXs (their standby PBXs and sites), and
`ReplayStep`s carrying the timeline (timeline.py). `ReplayRunner` is the drill runner, which
starts the master (or joins `--master`), brings the PBXs up, audits all along and judges; it plays
a `ReplayStep` event by event on the PBXs' own clients, at the compressed time, and adds one check:
the replay's answers against the record's.

The replay's own master runs on the candidate licenses and policy, with the recorded master's
hold (how long an absent PBX keeps its licenses) divided by the speed, at least a lease TTL: a PBX
lost by `--lose` keeps its licenses for as long, in the record's time, as it would have.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from licmaster.client import LicenseError
from licmaster.console import whatif
from licmaster.daemon.config import Config, ConfigError, load_config
from licmaster.daemon.storage.journal import iter_rows
from licmaster.licenses.files import installed_by_family, load_files
from licmaster.licenses.policy import load_policy
from licmaster.model.rules import normalize_mac
from licmaster.model.sites import Policy, PolicyError
from licmaster.model.types import InstalledLicense
from licmaster.wire.events import Row

from ..access import PLAIN
from ..drill.objects import DeviceRegistry, ObjectKind
from ..drill.pbx import SimPBX
from ..drill.runner import Check, Progress, Runner
from ..drill.scenario import HOLD_MOST_S, LEASE_TTL_MS, Expectations, PbxSpec, Scenario, Step
from . import timeline as tl
from .timeline import Event, ReplayError, Timeline

DEFAULT_SPEED = 60.0  # an hour of the record in a minute
CONFIG_NAME = "licmaster.toml"
JOURNAL_NAME = "journal.sqlite3"
RECORDED_HOLD_S = 259_200.0  # a master's hold when its config is not found (the default: 72 h)
DEVICE = "dev0"  # a recorded holder is one object with one device: the Port is its


@dataclass(frozen=True)
class Request:
    """What `slave-sim replay` was asked: from the command line, or a scenario file's
    `replay = {...}` (its [master] licenses and policy the candidates, its [expect] the checks)."""

    data_dir: Path | None = None
    config: Path | None = None  # the recorded master's config (default: found beside the data directory)
    since: Any = None  # 7d, epoch seconds, an ISO 8601 time (or a TOML number or date-time)
    until: Any = None  # default: now
    speed: Any = DEFAULT_SPEED
    licenses: tuple[Path, ...] = ()  # candidates (default: the scenario's, else the recorded master's)
    policy: Path | None = None  # candidate site policy (default: the scenario's, else the recorded master's)
    lose: tuple[tuple[str, Any], ...] = ()  # (NODE or @SITE, TIME or "peak")
    master: str | None = None  # an existing master (host:port) instead of one of its own
    scenario: Scenario | None = None


@dataclass
class Plan:
    """A replay ready to run: its Scenario, and what the verdict compares it with."""

    scenario: Scenario
    timeline: Timeline
    speed: float
    journal: Path
    exact: bool  # the record's own licenses and policy, no loss, a master of its own: every answer should be the record's
    why_not: str  # when not exact, why the answers need not match


@dataclass(frozen=True)
class ReplayStep(Step):
    """A step of a replay: the record's events, each with the second of the replay it is due."""

    events: tuple[tuple[float, Event], ...] = ()


def prepare(request: Request, now: float | None = None) -> Plan:
    """Everything checked and built before any process starts; ReplayError names what is wrong."""
    now = time.time() if now is None else now
    speed = tl.parse_speed(request.speed)
    config, config_path, looked = _recorded_config(request)
    data_dir = request.data_dir if request.data_dir is not None else (Path(config.data_dir) if config is not None else None)
    if data_dir is None:
        raise ReplayError("--data-dir DIR: the recorded master's data directory (or --config FILE, its config)")
    journal = data_dir / JOURNAL_NAME
    if not journal.is_file():
        raise ReplayError(f"no journal in {data_dir}: {journal} is missing (a master's data directory holds its journal there)")
    if config is None:
        config, config_path, looked = _config_beside(data_dir)
    if request.since is None:
        raise ReplayError("--since: where the period begins (7d, 12h, epoch seconds or an ISO 8601 time)")
    since = tl.parse_time(request.since, now, "--since")
    until = tl.parse_time(request.until, now, "--until") if request.until is not None else now
    tl.period(since, until)
    licenses, license_files = _candidates(request, config, config_path, looked)
    policy, policy_file = _policy(request, config, licenses)

    def rows() -> Iterator[Row]:
        return iter_rows(journal)

    site_of = _site_of(policy) if policy is not None else None
    timeline = tl.extract(rows(), since, until, site_of)
    empty = tl.empty_period(timeline)
    if empty is not None:
        raise ReplayError(empty)
    if request.lose:
        timeline = tl.add_losses(timeline, request.lose, now, lambda: whatif.peak_time(rows(), since, until),
                                 [site.name for site in policy.sites] if policy is not None else ())
    scenario = request.scenario
    if scenario is not None:
        unknown = sorted(set(scenario.expect.sites) - set(timeline.sites.values()))
        if unknown:
            raise ReplayError(f"{scenario.path} [expect] sites: no PBX of the record is in site(s) {', '.join(unknown)}")
    why = _why_not_exact(request, config, config_path, licenses, policy)
    exact = not why
    built = _scenario(request, timeline, speed, journal, license_files, policy_file, config, exact)
    return Plan(built, timeline, speed, journal, exact, "; ".join(why))


# ---------------------------------------------------------------------------- the record's master


def _recorded_config(request: Request) -> tuple[Config | None, Path | None, list[str]]:
    if request.config is None:
        return None, None, []
    try:
        return load_config(request.config), request.config, []
    except ConfigError as exc:
        raise ReplayError(f"--config {request.config}: " + "; ".join(str(exc).splitlines())) from None


def _config_beside(data_dir: Path) -> tuple[Config | None, Path | None, list[str]]:
    """The recorded master's config: a licmaster.toml in the data directory or beside it whose
    data_dir is this one (as `licmaster serve --config` and slave-sim's own masters lay a master
    out), or $LICMASTER_CONFIG's when its data_dir is this one. What was looked at, for a message."""
    target = data_dir.resolve()
    looked: list[str] = []
    places = [data_dir / CONFIG_NAME, data_dir.parent / CONFIG_NAME]
    if os.environ.get("LICMASTER_CONFIG"):
        places.append(Path(os.environ["LICMASTER_CONFIG"]))
    for path in places:
        if not path.is_file():
            looked.append(f"{path} (none)")
            continue
        try:
            config = load_config(path)
        except ConfigError as exc:
            looked.append(f"{path} (unreadable: {str(exc).splitlines()[0]})")
            continue
        if Path(config.data_dir).resolve() == target:
            return config, path, looked
        looked.append(f"{path} (its data_dir is {config.data_dir})")
    return None, None, looked


def _candidates(request: Request, config: Config | None, config_path: Path | None,
                looked: list[str]) -> tuple[list[InstalledLicense], tuple[Path, ...]]:
    """The candidate license files: --licenses, else the scenario's, else the recorded master's."""
    files = request.licenses or (request.scenario.licenses if request.scenario is not None else ()) \
        or (config.licenses if config is not None else ())
    if not files:
        if request.master is not None:
            return [], ()  # the master there has its own: the run does not compare them
        if config is not None:
            raise ReplayError(f"the recorded master's config {config_path} names no license files: give --licenses FILE...")
        raise ReplayError("no license files for the replay's master: give --licenses FILE..., or --config with the recorded "
                          "master's config (none found beside the data directory: " + "; ".join(looked) + ")")
    loaded = load_files([str(p) for p in files])
    if not loaded.ok:
        raise ReplayError("the candidate license files have errors: " + "; ".join(str(e) for e in loaded.errors))
    return loaded.licenses, tuple(Path(p).resolve() for p in files)


def _policy(request: Request, config: Config | None, licenses: list[InstalledLicense]) -> tuple[Policy | None, Path | None]:
    """The replay's site policy: --policy, else the scenario's [master] policy, else the recorded master's."""
    named = request.scenario.master.get("policy") if request.scenario is not None else None
    path = request.policy or (Path(named) if named else None) or (config.policy if config is not None else None)
    if path is None:
        return None, None
    try:
        return load_policy(path, installed_by_family(licenses) if licenses else None), Path(path).resolve()
    except PolicyError as exc:
        raise ReplayError("the site policy has errors: " + "; ".join(exc.problems)) from None


def _site_of(policy: Policy) -> Callable[[str], str | None]:
    def site_of(name: str) -> str | None:
        site = policy.site_of(name)
        return site.name if site is not None else None
    return site_of


def _why_not_exact(request: Request, config: Config | None, config_path: Path | None, licenses: list[InstalledLicense],
                   policy: Policy | None) -> list[str]:
    """Why the replay's answers need not be the record's: nothing, when it plays the record on the
    recorded master's own licenses and policy, without a loss, on a master of its own."""
    why = []
    if request.master is not None:
        why.append(f"it plays against the master at {request.master}, not a fresh one on the recorded licenses")
    if request.lose:
        why.append("--lose changes what happened")
    if config is None:
        why.append("the recorded master's licenses are unknown (its config was not found: --config FILE)")
        return why
    recorded = load_files([str(p) for p in config.licenses])
    if _license_key(recorded.licenses) != _license_key(licenses):
        mine, theirs = installed_by_family(licenses), installed_by_family(recorded.licenses)
        differ = [f"{f} {mine.get(f, 0)} (recorded {theirs.get(f, 0)})" for f in sorted({*mine, *theirs})
                  if mine.get(f, 0) != theirs.get(f, 0)]
        why.append("the candidate licenses are not the recorded master's" + (f": {', '.join(differ)}" if differ else
                                                                             " (versions, bindings or terms differ)"))
    recorded_policy = None
    if config.policy is not None:
        with contextlib.suppress(PolicyError):
            recorded_policy = load_policy(config.policy)
    if _policy_key(recorded_policy) != _policy_key(policy):
        why.append(f"the site policy is not the recorded master's ({config_path})")
    return why


def _license_key(licenses: list[InstalledLicense]) -> Counter[tuple[str, int, str, str, bool]]:
    return Counter((repr(lic.type), lic.count, lic.bind or "", str(lic.ssa_until), lic.rented) for lic in licenses)


def _policy_key(policy: Policy | None) -> Policy | None:
    return dataclasses.replace(policy, source="") if policy is not None else None


# ---------------------------------------------------------------------------- the scenario


def _scenario(request: Request, timeline: Timeline, speed: float, journal: Path, license_files: tuple[Path, ...],
              policy_file: Path | None, config: Config | None, exact: bool) -> Scenario:
    base = request.scenario
    master = dict(base.master) if base is not None else {}
    master.pop("policy", None)
    if policy_file is not None:
        master["policy"] = str(policy_file)
    if "hold_s" not in master:
        ttl_s = master.get("lease_ttl_ms", LEASE_TTL_MS) / 1000
        recorded = config.hold_s if config is not None else RECORDED_HOLD_S
        master["hold_s"] = round(min(HOLD_MOST_S, max(ttl_s, recorded / speed)), 3)
    expect = base.expect if base is not None else Expectations()
    if exact and not expect.failover_refused:  # the record's refused takeovers are refused again, with their codes
        refused = Counter(e.code or "?" for e in timeline.events if e.kind == tl.TAKING_OVER and e.recorded is False)
        expect = dataclasses.replace(expect, failover_refused={code: (n, n) for code, n in refused.items()})
    steps = tuple(ReplayStep(action=s.action, label=s.label, audit=s.action == "register", events=s.events)
                  for s in tl.segments(timeline, speed))
    asks = timeline.asks
    description = (f"The demand recorded in {journal} from {tl.utc(timeline.since)} to {tl.utc(timeline.until)} "
                   f"({len(asks)} asks, {sum(1 for e in asks if not e.recorded)} of them refused in the record; "
                   f"{len(timeline.carried) or 'nothing'} in force when it began) replayed {speed:g} times faster"
                   + (f" against {', '.join(p.name for p in license_files)}" if license_files else "")
                   + "".join(f"; {e.node} lost at {tl.utc(e.at)}" for e in timeline.events if e.kind == tl.LOSE) + ".")
    name = base.name if base is not None else "replay-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(timeline.since))
    return Scenario(name=name, description=(base.description + " " if base is not None and base.description else "") + description,
                    path=journal, licenses=license_files, master=master, pbxs=_pbxs(timeline), steps=steps, expect=expect,
                    size=f"x{speed:g}", access=base.access if base is not None else PLAIN)


def _pbxs(timeline: Timeline) -> tuple[PbxSpec, ...]:
    """A PbxSpec per recorded PBX, its standby PBX and site with it. Its `users` are the record's
    distinct Port holders (what the report counts as its devices: the replay names each holder
    itself), its `template` the user licenses it assigned (what is unassigned again after a run
    against --master)."""
    holders: dict[str, set[str]] = {}
    families: dict[str, dict[str, None]] = {}
    for event in (*timeline.carried, *timeline.events):
        if event.kind == tl.ASK and event.resource == "port":
            holders.setdefault(event.node, set()).add(event.holder)
        elif event.kind == tl.ASSIGNMENT:
            families.setdefault(event.node, {}).update(dict.fromkeys(event.families))
    taken = {normalize_mac(n.mac) for n in timeline.pbxs.values() if n.mac}
    made = (f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(1, 65536))  # locally administered: no vendor's
    out = []
    for name, node in sorted(timeline.pbxs.items()):
        if node.role == "standby" and node.standby_for in timeline.pbxs:
            continue  # made by its failed PBX's spec (drill/network.py)
        mac = normalize_mac(node.mac) if node.mac else None
        while mac is None or (mac in taken and not (node.mac and normalize_mac(node.mac) == mac)):
            mac = next(made)
        taken.add(mac)
        out.append(PbxSpec(name=name, platform=node.platform, model=node.model, firmware=node.firmware, mac=mac,
                           standby=timeline.standby_of(name), users=len(holders.get(name, ())),
                           template=tuple(families.get(name, {})), site=timeline.sites.get(name)))
    return tuple(out)


# ---------------------------------------------------------------------------- the run


class ReplayRunner(Runner):
    """The drill runner, playing ReplaySteps itself: each event at its time on the PBXs' clients,
    one after the other; and judging the replay's answers against the record's."""

    def __init__(self, plan: Plan, master: str | None = None, progress: Progress | None = None, force: bool = False) -> None:
        super().__init__(plan.scenario, master, progress, force=force or not plan.scenario.licenses)
        self.plan = plan
        self.outcomes: list[tuple[Event, str]] = []  # each ask and assignment, and what the replay got
        self.lost: dict[str, str | None] = {}  # a PBX lost (--lose) -> the standby PBX that took over, or None
        self.behind_s = 0.0  # the most an event ran after its time (the master slower than the compressed record)
        self._clock: float | None = None  # the loop's time when the replay began

    async def play(self, index: int, step: Step) -> None:
        if not isinstance(step, ReplayStep):
            await super().play(index, step)
            return
        loop = asyncio.get_running_loop()
        if self._clock is None:
            self._clock = loop.time()
        started = time.perf_counter()
        asked = 0
        for due, event in step.events:
            late = loop.time() - (self._clock + due)
            if late < 0:
                await asyncio.sleep(-late)
            else:
                self.behind_s = max(self.behind_s, late)
            asked += await self._play(event, step.describe())
        self.recorder.step_done(step.describe(), step.action, asked, time.perf_counter() - started)
        if step.audit:
            await self.audit(step.describe())

    async def _play(self, event: Event, step: str) -> int:
        """One event; 1 if it asked the master for a license (an ask, an assignment), else 0."""
        if event.kind == tl.ASK:
            await self._ask(event)
            return 1
        if event.kind == tl.LEAVE:
            await self._leave(event)
        elif event.kind in (tl.ASSIGNMENT, tl.UNASSIGNMENT):
            await self._assignment(event)
            return int(event.kind == tl.ASSIGNMENT)
        elif event.kind == tl.TAKING_OVER:
            if event.holder not in self.lost:  # lost in the replay already: its standby acted then
                await self._take_over(event.node, event.holder, step)
        elif event.kind == tl.RETURN:
            await self._return(event.node)
        elif event.kind == tl.LOSE:
            await self._lose(event, step)
        return 0

    def _pbx(self, name: str | None) -> SimPBX | None:
        if name is None or self.local is None:
            return None
        return self.local.pbxs.get(name) or self.local.standbys.get(name)

    def _serving(self, node: str) -> SimPBX | None:
        """The PBX through which `node`'s phones ask now: itself, or after --lose the standby PBX
        that took it over, or none (lost without one: its phones are down)."""
        if node in self.lost:
            return self._pbx(self.lost[node])
        pbx = self._pbx(node)
        return pbx if pbx is not None and pbx.alive and pbx.client is not None else None

    async def _ask(self, event: Event) -> None:
        pbx = self._serving(event.node)
        if pbx is None or pbx.client is None:
            self.outcomes.append((event, tl.UNSERVED))
            return
        if event.resource == "port":  # through the device registry: the per-site sizing counts it
            await pbx.register((event.holder, ObjectKind.USER, DEVICE))
        else:  # the count the record's lease took (a conference's channels, not its participants)
            await pbx._checkout(event.resource, event.holder, event.count, event.interface)
        granted = (event.resource, event.holder) in pbx.client.leases
        self.outcomes.append((event, tl.GRANTED if granted else tl.REFUSED))

    async def _leave(self, event: Event) -> None:
        pbx = self._serving(event.node)
        if pbx is None or pbx.client is None:
            return  # lost with its PBX: the master keeps its licenses for the hold
        if event.resource == "port" and ((event.holder, DEVICE) in pbx.registered or event.holder in pbx.waiting):
            await pbx.unregister((event.holder, ObjectKind.USER, DEVICE))
        elif (event.resource, event.holder) in pbx.client.leases:  # moved to it by a takeover: its registry never saw it
            await pbx._checkin(event.resource, event.holder)
            if event.resource == "port":
                self.recorder.demand(pbx.spec.site, -1, 0)

    async def _assignment(self, event: Event) -> None:
        pbx = self._serving(event.node)
        if pbx is None or pbx.client is None:
            if event.kind == tl.ASSIGNMENT:
                self.outcomes.append((event, tl.UNSERVED))
            return
        families = list(event.families)
        started = time.perf_counter()
        try:
            if event.kind == tl.ASSIGNMENT:
                reply = await pbx.client.assign(event.holder, families)
            else:
                await pbx.client.unassign(event.holder, families)
        except LicenseError as exc:
            self.recorder.op(event.kind, pbx.name, time.perf_counter() - started, exc.code, exc.rule)
            if event.kind == tl.ASSIGNMENT:
                self.recorder.denial("assign", pbx.name, exc.code, exc.rule, site=pbx.spec.site)
                self.outcomes.append((event, tl.REFUSED))
            return
        except ConnectionError:
            self.recorder.op(event.kind, pbx.name, 0.0, "no_connection", None)
            return
        self.recorder.op(event.kind, pbx.name, time.perf_counter() - started)
        if event.kind == tl.ASSIGNMENT:  # what the audit believes the user holds
            pbx.assigned[event.holder] = pbx.assigned.get(event.holder, []) + list(reply.get("took", []))
            self.outcomes.append((event, tl.GRANTED))
            return
        # A user's licenses are the user's, whichever PBX unassigns them (in the record, an
        # operator's clean-up or another PBX may): gone from every PBX that believed it assigned them.
        assert self.local is not None
        for holder in self.local.everyone:
            if event.holder in holder.assigned:
                kept = [took for took in holder.assigned[event.holder] if took.get("family") not in families]
                if kept:
                    holder.assigned[event.holder] = kept
                else:
                    del holder.assigned[event.holder]

    async def _take_over(self, standby_name: str, failed_name: str, step: str) -> bool:
        """The standby PBX takes over its failed PBX, as a drill's takeover step does (a failover
        step: a refusal fails the run unless [expect] failover_refused allows it)."""
        standby, failed = self._pbx(standby_name), self._pbx(failed_name)
        if standby is None or failed is None or standby.standby_for != failed_name:
            self.recorder.fault(f"{standby_name} cannot take over {failed_name}: the replay has no such standby PBX for it")
            return False
        started = time.perf_counter()
        refused = await standby.takeover()
        took = (time.perf_counter() - started) * 1000
        if refused is None:
            self.recorder.takeover_ms.append(took)
            self.recorder.fault(f"takeover by {standby.name} answered in {took:.1f} ms")
            failed.state = "fenced"
            return True
        rule = f" ({refused.rule})" if refused.rule else ""
        self.recorder.failover_refused(step, "takeover", standby.name, failed.name, refused.code, refused.rule, refused.message,
                                       f"takeover by {standby.name} of {failed.name} refused: {refused.code}{rule}: {refused.message}")
        return False

    async def _return(self, node: str) -> None:
        """A PBX taken over says hello again in the record: it comes back, holding nothing (its
        leases are its standby's)."""
        pbx = self._pbx(node)
        if pbx is None or node in self.lost or pbx.state != "fenced":
            return
        if pbx.client is not None:
            pbx.client.leases.clear()
        pbx.registered.clear()
        pbx.waiting.clear()
        pbx.registry = DeviceRegistry()
        await pbx.restore()
        self.recorder.fault(f"{node} back (it said hello again in the record)")

    async def _lose(self, event: Event, step: str) -> None:
        """--lose: each PBX dies (its connection dropped, nothing more sent); its standby PBX takes
        over where the record has one (R-STBY-2 decides, on the master)."""
        assert self.local is not None
        for name in event.nodes:
            pbx = self._pbx(name)
            if pbx is None or name in self.lost:
                continue
            if pbx.alive:
                pbx.kill()
                self.local.killed_at[name] = time.perf_counter()
            self.recorder.fault(f"{name} lost (--lose {event.node})")
            standby = self._pbx(pbx.spec.standby) if name in self.local.pbxs else None
            if standby is not None and standby.alive and await self._take_over(standby.name, name, step):
                self.lost[name] = standby.name
            else:
                self.lost[name] = None
                self.recorder.fault(f"{name} down: " + ("its standby PBX did not take over" if standby is not None
                                                        else "no standby PBX for it") + "; its phones go unserved")

    def judge(self, final: dict[str, int], installed: dict[str, int]) -> list[Check]:
        checks = super().judge(final, installed)
        plan = self.plan
        comparison = tl.compare(self.outcomes, plan.timeline.since)
        detail = tl.describe(comparison, plan.exact, plan.why_not)
        detail += (f"; played in the record's order at {plan.speed:g} times its pace, at most {self.behind_s:.2f} s "
                   "behind its schedule")
        if plan.exact:
            checks.append(Check("as recorded", comparison.same, detail))
        else:
            checks.append(Check("against the record", True, detail, kind="sizing"))
        return checks

