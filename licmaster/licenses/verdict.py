"""The installation's verdict a planner wants before buying (`licmaster check`). Pure."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from licmaster.licenses.files import LoadResult
from licmaster.model import rules
from licmaster.model.catalog import FAMILIES, SMB_PORT
from licmaster.model.installation import effective_licenses
from licmaster.model.pool import Pool
from licmaster.model.types import Problem, warning


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
    firmware: int
    families: list[FamilyVerdict]
    standby_available: bool
    standby_reason: str
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        def problem(p: Problem) -> dict[str, Any]:
            return {"rule": p.rule, "message": p.message, "where": p.where}
        return {
            "firmware": self.firmware,
            "families": [f.to_dict() for f in self.families],
            "standby": {"available": self.standby_available, "reason": self.standby_reason},
            "errors": [problem(p) for p in self.errors],
            "warnings": [problem(p) for p in self.warnings],
        }


def verdict(loaded: LoadResult, firmware: int, today: dt.date | None = None) -> Verdict:
    # Entries with errors are left out; the rest still gets its verdict, so a planner sees all at once.
    licenses = effective_licenses(loaded.licenses, today)
    pool = Pool(loaded.licenses, today=today)
    by_family: dict[str, list[Any]] = defaultdict(list)
    for lic in licenses:
        by_family[lic.family].append(lic)
    families = [_family_verdict(name, lics, firmware) for name, lics in sorted(by_family.items())]
    standby = pool.standby_status(firmware)
    warnings = list(loaded.warnings)
    if pool.smb_installation:
        warnings.append(warning("SMB-Port installation: only the PBX that holds the SMB-Port uses it; "
                                "no slaves, no standby", "R-SMB-3"))
    return Verdict(
        firmware=firmware,
        families=families,
        standby_available=standby is None and "PBX-Standby" in by_family,
        standby_reason=_standby_reason(standby, "PBX-Standby" in by_family),
        errors=loaded.errors,
        warnings=warnings,
    )


def _standby_reason(denial: Any, has_standby: bool) -> str:
    if denial is not None:
        return f"{denial.message} ({denial.rule})"
    if not has_standby:
        return "no PBX-Standby license installed (R-STBY-2)"
    return "Standby licenses cover every Port license (R-STBY-2)"


def _family_verdict(name: str, lics: list[Any], firmware: int) -> FamilyVerdict:
    versions: dict[int, int] = defaultdict(int)
    bound: dict[str, int] = defaultdict(int)
    for lic in lics:
        if lic.version is not None:
            versions[lic.version] += lic.count
        if lic.bind:
            bound[lic.bind] += lic.count
    installed = sum(lic.count for lic in lics)
    fv = FamilyVerdict(name, installed, installed, {str(v): n for v, n in sorted(versions.items())}, dict(bound))
    family = FAMILIES[name]
    if not family.versioned:
        return fv
    cap = rules.capping_versions(versions, firmware)
    if cap:
        what = ", ".join(f"{n} × {_name(name, v)}" for v, n in cap)
        fv.usable, fv.why_not, fv.rule = 0, f"capped at V{cap[0][0]} by {what}", "R-VER-2"
    elif name == "PBX-VoicemailUser" and any(not rules.voicemail_runs(v, firmware) for v in versions):
        fv.usable, fv.why_not, fv.rule = 0, f"V13 Voicemail User does not run on V{firmware} (V9 or older)", "R-VER-3"
    elif name == "PBX-QueueMonitor" and not rules.queue_monitor_supported(firmware):
        fv.usable, fv.why_not, fv.rule = 0, f"Queue Monitor needs PBX software V{rules.QUEUE_MONITOR_MIN_FIRMWARE} or newer", "R-VER-4"
    elif name == SMB_PORT:
        fv.why_not, fv.rule = "fixed size, serves only the PBX that holds it", "R-SMB-2"
    return fv


def _name(family: str, version: int) -> str:
    return f"Port{version}" if family == SMB_PORT else f"{family}{version}"


def render_text(v: Verdict) -> str:
    lines = [f"Installation verdict for PBX software V{v.firmware}", ""]
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
    lines += ["", f"Standby function: {'available' if v.standby_available else 'NOT available'}: {v.standby_reason}"]
    for title, items in (("Errors", v.errors), ("Warnings", v.warnings)):
        if items:
            lines += ["", f"{title}:"] + [f"  - {p.where + ': ' if p.where else ''}{p.message} [{p.rule or '-'}]" for p in items]
    lines += ["", "OK" if v.ok else f"{len(v.errors)} error(s)"]
    return "\n".join(lines)
