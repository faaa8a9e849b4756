"""The installation's verdict a planner wants before buying (`licmaster check`). Pure.

What a PBX can use is asked of the model itself: the same pool, the same plans a checkout draws
by (`Planner.capacity`), so that `check` and the running master cannot disagree
(tests/test_verdict.py holds a hypothesis property to that effect). A family that is installed
but not (wholly) usable is a warning naming the rule: a pre-purchase check says "OK" only when
nothing is wrong.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from licmaster.licenses.files import LoadResult
from licmaster.licenses.terms import WARN_DAYS, Term, terms
from licmaster.model import rules
from licmaster.model.catalog import FAMILIES, SMB_PORT
from licmaster.model.errors import Denial
from licmaster.model.installation import effective_licenses
from licmaster.model.pool import Pool
from licmaster.model.types import InstalledLicense, Node, Problem, warning

RESOURCES = ("port", "conference", "operator", "queue-monitor")
RESOURCE_OF = {"PBX-Port": "port", SMB_PORT: "port", "PBX-Operator": "operator", "PBX-QueueMonitor": "queue-monitor"}


@dataclass(slots=True)
class FamilyVerdict:
    family: str
    installed: int
    usable: int
    versions: dict[str, int]
    bound: dict[str, int]
    why_not: str = ""
    rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "installed": self.installed, "usable": self.usable,
                "versions": self.versions, "bound": self.bound, "why_not": self.why_not or None, "rule": self.rule}


@dataclass(slots=True)
class Verdict:
    pbx: Node
    families: list[FamilyVerdict]
    resources: dict[str, int]  # what this PBX can draw, one unit each, from an idle pool
    standby_available: bool
    standby_reason: str
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    terms: list[Term] = field(default_factory=list)  # SSA ends and rentals, soonest first

    @property
    def firmware(self) -> int:
        return self.pbx.firmware

    @property
    def ok(self) -> bool:
        """No error (the exit status); warnings may remain."""
        return not self.errors

    @property
    def clean(self) -> bool:
        """Nothing wrong at all: the only verdict printed as OK."""
        return not self.errors and not self.warnings

    def to_dict(self) -> dict[str, Any]:
        def problem(p: Problem) -> dict[str, Any]:
            return {"rule": p.rule, "message": p.message, "where": p.where}
        return {
            "firmware": self.firmware,
            "pbx": {"platform": self.pbx.platform, "mac": self.pbx.mac, "model": self.pbx.model},
            "families": [f.to_dict() for f in self.families],
            "resources": self.resources,
            "standby": {"available": self.standby_available, "reason": self.standby_reason},
            "errors": [problem(p) for p in self.errors],
            "warnings": [problem(p) for p in self.warnings],
            "terms": [t.to_dict() for t in self.terms],
            "ok": self.clean,
        }


def verdict(loaded: LoadResult, firmware: int, today: dt.date | None = None, *, platform: str = "gateway",
            mac: str | None = None, model: str | None = None, warn_days: int = WARN_DAYS) -> Verdict:
    """The verdict for a PBX of this firmware (and platform, MAC, model). Entries with errors are
    left out; the rest still gets its verdict, so a planner sees every problem at once. An SSA
    that ends within `warn_days` and lowers a version is a warning saying what becomes unusable."""
    node = Node("check", firmware=firmware, platform=platform, mac=mac, model=model)
    pool = Pool(loaded.licenses, today=today)
    pool.set_node(node)
    by_family: dict[str, list[InstalledLicense]] = defaultdict(list)
    for lic in effective_licenses(loaded.licenses, today):
        by_family[lic.family].append(lic)
    resources = {resource: _capacity(pool, node, resource) for resource in RESOURCES}
    families = [_family_verdict(name, lics, node, pool, resources) for name, lics in sorted(by_family.items())]
    standby = pool.standby_status(firmware)
    has_standby = "PBX-Standby" in by_family
    warnings = list(loaded.warnings)
    for f in families:
        if f.usable < f.installed and f.rule:
            warnings.append(warning(f"{f.family}: {f.usable} of {f.installed} usable on V{firmware}: {f.why_not}", f.rule))
    if pool.smb_installation:
        warnings.append(warning("SMB-Port installation: only the PBX that holds the SMB-Port uses it; "
                                "no slaves, no standby", "R-SMB-3"))
    elif has_standby and standby is not None:
        warnings.append(warning(f"the standby function is not available: {standby.message}", standby.rule))
    day = today or dt.date.today()
    dated = terms(loaded.licenses, day)
    warnings += _ending_soon(loaded, dated, families, firmware, day, warn_days, platform=platform, mac=mac, model=model)
    return Verdict(node, families, resources, standby_available=standby is None and has_standby,
                   standby_reason=_standby_reason(standby, has_standby), errors=loaded.errors, warnings=warnings, terms=dated)


def _ending_soon(loaded: LoadResult, dated: list[Term], families: list[FamilyVerdict], firmware: int, today: dt.date,
                 warn_days: int, **pbx: Any) -> list[Problem]:
    """A warning per SSA end within `warn_days` that lowers a version: what is usable the day after."""
    found = []
    ends = {t.ssa_until for t in dated if t.ssa_until is not None and t.lowers_version and 0 <= (t.days_left or 0) <= warn_days}
    for end in sorted(e for e in ends if e is not None):
        after = verdict(loaded, firmware, end + dt.timedelta(days=1), warn_days=-1, **pbx)
        usable_after = {f.family: f.usable for f in after.families}
        lost = [f"{f.family} {f.usable} -> {usable_after.get(f.family, 0)}" for f in families if usable_after.get(f.family, 0) < f.usable]
        ending = [t for t in dated if t.ssa_until == end and t.lowers_version]
        found.append(warning(f"the SSA of {', '.join(f'{t.count} × {t.family} V{t.version}' for t in ending)} ends on "
                             f"{end.isoformat()} ({(end - today).days} days): then they serve their own version; usable on "
                             f"V{firmware} " + (", ".join(lost) if lost else "unchanged"), "R-SSA-1"))
    return found


def _capacity(pool: Pool, node: Node, resource: str) -> int:
    cap = pool.planner.capacity(node, resource)
    return 0 if isinstance(cap, Denial) else cap


def _standby_reason(denial: Denial | None, has_standby: bool) -> str:
    if denial is not None:
        return f"{denial.message} ({denial.rule})"
    if not has_standby:
        return "no PBX-Standby license installed (R-STBY-2)"
    return "Standby licenses cover every Port license (R-STBY-2)"


def _family_verdict(name: str, lics: list[InstalledLicense], node: Node, pool: Pool, resources: dict[str, int]) -> FamilyVerdict:
    versions: dict[int, int] = defaultdict(int)
    bound: dict[str, int] = defaultdict(int)
    for lic in lics:
        if lic.version is not None:
            versions[lic.version] += lic.count
        if lic.bind:
            bound[lic.bind] += lic.count
    installed = sum(lic.count for lic in lics)
    fv = FamilyVerdict(name, installed, installed, {str(v): n for v, n in sorted(versions.items())}, dict(bound))
    firmware = node.firmware
    resource = RESOURCE_OF.get(name)
    if resource == "port" and name != (SMB_PORT if pool.smb_installation else "PBX-Port"):
        fv.usable, fv.why_not, fv.rule = 0, "Ports come from the other kind of Port license here", "R-SMB-1"
        return fv
    if resource is not None:  # floating: what this PBX can draw, by the pool's own plan
        fv.usable = min(installed, resources[resource])
        denial = pool.planner.plan(node, resource)
        if isinstance(denial, Denial):
            fv.why_not, fv.rule = _why(name, versions, denial), denial.rule
        elif fv.usable < installed and node.platform == "ipva" and resource == "port":
            fv.why_not, fv.rule = f"each Port on this IPVA also takes a PBX-IPVA bound to {node.mac}", "R-IPVA-1"
        if name == SMB_PORT and not fv.why_not:
            fv.why_not, fv.rule = "serves only the PBX that holds it", "R-SMB-3"
        return fv
    if name == "PBX-IPVA":
        return _ipva_verdict(fv, node, pool)
    if not FAMILIES[name].versioned:
        return fv
    cap = rules.capping_versions(versions, firmware)
    if cap:
        fv.usable, fv.why_not, fv.rule = 0, rules.capped_text(name, cap), "R-VER-2"
    elif name == "PBX-VoicemailUser" and any(not rules.voicemail_runs(v, firmware) for v in versions):
        fv.usable = sum(n for v, n in versions.items() if rules.voicemail_runs(v, firmware))
        fv.why_not, fv.rule = rules.voicemail_text(firmware), "R-VER-3"
    return fv


def _ipva_verdict(fv: FamilyVerdict, node: Node, pool: Pool) -> FamilyVerdict:
    """IPVA licenses serve the IPVA they are bound to: for an IPVA PBX, those bound to its MAC;
    otherwise every IPVA's own, each at this firmware (R-IPVA-2, R-VER-2)."""
    macs = [node.mac] if node.platform == "ipva" and node.mac else sorted(fv.bound)
    usable = 0
    for mac in macs:
        ipva = Node(f"ipva-{mac}", firmware=node.firmware, platform="ipva", mac=mac)
        denial = pool.planner.version_denial("PBX-IPVA", node.firmware, ipva.name)
        if denial is not None:
            fv.why_not, fv.rule = _why("PBX-IPVA", {int(v): n for v, n in fv.versions.items()}, denial), denial.rule
            continue
        usable += sum(b.installed for b in pool.inventory.bound_buckets.get(("PBX-IPVA", mac), ()))
    fv.usable = usable
    if usable < fv.installed and not fv.why_not:
        fv.why_not, fv.rule = f"bound to other devices than {node.mac}" if node.mac else "", "R-IPVA-2" if node.mac else None
    return fv


def _why(name: str, versions: dict[int, int], denial: Denial) -> str:
    """A refusal as a row's note: the cap itself for a version rule, else the model's sentence."""
    if denial.rule in ("R-VER-2", "R-OP-3"):
        cap = rules.capping_versions(versions, int(denial.details.get("capped_at", 0)) + 1)
        if cap:
            return rules.capped_text(name, cap)
    return denial.message


def render_text(v: Verdict) -> str:
    pbx = f"V{v.firmware}, {v.pbx.platform}" + (f" {v.pbx.mac}" if v.pbx.mac else "") + (f", {v.pbx.model}" if v.pbx.model else "")
    lines = [f"Installation verdict for a PBX running {pbx}", ""]
    width = max([len(f.family) for f in v.families] + [6])
    lines.append(f"  {'family':<{width}}  installed  usable  note")
    for f in v.families:
        versions = ", ".join(f"V{k}: {n}" for k, n in f.versions.items())
        bound = ", ".join(f"{m}: {n}" for m, n in f.bound.items())
        note = "; ".join(x for x in (versions, f"bound {bound}" if bound else "",
                                     f"{f.why_not} ({f.rule})" if f.why_not else "") if x)
        lines.append(f"  {f.family:<{width}}  {f.installed:>9}  {f.usable:>6}  {note}")
    if not v.families:
        lines.append("  (no license loaded)")
    lines += ["", "This PBX can draw: " + ", ".join(f"{r} {n}" for r, n in v.resources.items())]
    lines += [f"Standby function: {'available' if v.standby_available else 'NOT available'}: {v.standby_reason}"]
    if v.terms:
        lines += ["", "Terms:"] + [f"  - {t.describe()}" for t in v.terms]
    for title, items in (("Errors", v.errors), ("Warnings", v.warnings)):
        if items:
            lines += ["", f"{title}:"] + [f"  - {p.where + ': ' if p.where else ''}{p.message} [{p.rule or '-'}]" for p in items]
    lines += ["", "OK" if v.clean else f"{len(v.errors)} error(s), {len(v.warnings)} warning(s)"]
    return "\n".join(lines)
