"""License files (TOML): reading, validating every entry, and the checks over a whole installation.

```toml
[[license]]
type = "PBX-Port13"          # a technical name, or a reference number
count = 100
[[license]]
type = "Relay-Channels"
count = 30
bind = "00:90:33:12:34:56"   # required for Relay-* and PBX-IPVA (R-HW-1, R-IPVA-2)
```
Optional keys: `version` (for a name printed without one, or a reference number; default 13),
`ssa_until = 2027-06-30` (a Software-Service-Agreement, R-SSA-1), `rented = true` (iSC, R-RENT-1).

Every problem is reported at once, each with its file, line and entry, and its rule ID.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..model import rules
from ..model.catalog import CURRENT_VERSION, FAMILIES, CatalogError, parse_license_type
from ..model.installation import installation_problems
from ..model.types import InstalledLicense, Problem, error, warning
from .signing import TABLE, Verifier

KNOWN_KEYS = frozenset({"type", "count", "bind", "version", "ssa_until", "rented"})


@dataclass(slots=True)
class LoadResult:
    licenses: list[InstalledLicense]
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


_HEADER_RE = re.compile(r"^[ \t]*\[\[[ \t]*license[ \t]*\]\]", re.MULTILINE)


def installed_by_family(licenses: Iterable[InstalledLicense]) -> dict[str, int]:
    """How many are installed of each family, as the files say."""
    totals: dict[str, int] = {}
    for lic in licenses:
        totals[lic.type.family] = totals.get(lic.type.family, 0) + lic.count
    return totals


def _entry_lines(text: str) -> list[int]:
    """Line number of each `[[license]]` header, so that problems can point at a line."""
    return [text.count("\n", 0, m.start()) + 1 for m in _HEADER_RE.finditer(text)]


def load_files(paths: Iterable[str | Path], *, verifier: Verifier | None = None) -> LoadResult:
    """Read every file; per-entry problems, then the installation-wide ones (R-SMB, R-PORT-4, ...).
    With a verifier, a file that is not signed by a vendor key for this installation is an error
    naming the file and why, and none of its licenses is loaded."""
    licenses: list[InstalledLicense] = []
    problems: list[Problem] = []
    for path in paths:
        result = load_file(path, installation_checks=False, verifier=verifier)
        licenses += result.licenses
        problems += result.problems
    problems += installation_problems(licenses)
    return LoadResult(licenses, problems)


def load_file(path: str | Path, *, installation_checks: bool = True, verifier: Verifier | None = None) -> LoadResult:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        return LoadResult([], [error(f"cannot read license file: {exc.strerror or exc}", where=str(p))])
    except UnicodeDecodeError:
        return LoadResult([], [error("license file is not UTF-8 text", where=str(p))])
    return parse_text(text, name=str(p), installation_checks=installation_checks, verifier=verifier)


def parse_text(text: str, *, name: str = "<licenses>", installation_checks: bool = True,
               verifier: Verifier | None = None) -> LoadResult:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return LoadResult([], [error(f"not valid TOML: {exc}", where=name)])
    problems: list[Problem] = []
    if verifier is not None:
        refused = verifier.problem(doc)
        if refused is not None:
            return LoadResult([], [error(f"license file refused: {refused}", where=name)])
    unknown_top = sorted(set(doc) - {"license", TABLE})
    if unknown_top:
        problems.append(error(f"unknown top-level key(s) {', '.join(unknown_top)}: expected [[license]] tables "
                              f"and one [{TABLE}]", where=name))
    entries = doc.get("license", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.append(error("`license` must be an array of tables, written [[license]]", where=name))
        return LoadResult([], problems)
    lines = _entry_lines(text)
    licenses: list[InstalledLicense] = []
    for i, entry in enumerate(entries):
        line = lines[i] if i < len(lines) else None
        where = f"{name}:{line} (entry {i + 1})" if line else f"{name} (entry {i + 1})"
        lic, entry_problems = parse_entry(entry, where)
        problems += entry_problems
        if lic is not None:
            licenses.append(lic)
    if installation_checks:
        problems += installation_problems(licenses)
    return LoadResult(licenses, problems)


def parse_entry(entry: dict[str, Any], where: str) -> tuple[InstalledLicense | None, list[Problem]]:
    """One [[license]] table; returns the license when it has no error, and every problem found."""
    problems: list[Problem] = []
    for key in sorted(set(entry) - KNOWN_KEYS):
        problems.append(error(f"unknown key {key!r} (known: {', '.join(sorted(KNOWN_KEYS))})", where=where))

    raw_type = entry.get("type")
    bind_raw = entry.get("bind")
    count = entry.get("count")
    if not isinstance(count, int) or isinstance(count, bool):
        problems.append(error("`count` is required and must be a whole number", where=where))
        count = None
    elif count <= 0:
        problems.append(error(f"`count` must be at least 1, not {count}", where=where))
        count = None

    if not isinstance(raw_type, str):
        problems.append(error("`type` is required: a technical license name or a reference number", where=where))
        return None, problems

    version_override = entry.get("version")
    if version_override is not None and (not isinstance(version_override, int) or isinstance(version_override, bool) or version_override < 1):
        problems.append(error("`version` must be a positive whole number, e.g. 13", where=where))
        version_override = None
    try:
        parsed = parse_license_type(
            raw_type, bound=bind_raw is not None, default_version=version_override or CURRENT_VERSION
        )
    except CatalogError as exc:
        problems.append(error(str(exc), where=where))
        return None, problems
    if parsed.warning:
        problems.append(warning(parsed.warning, where=where))
    ltype = parsed.license_type
    family = FAMILIES[ltype.family]
    if family.klass.value == "free":
        problems.append(error(f"{family.name} needs no license of its own (seed {family.section}); remove this entry", where=where))
        return None, problems

    if family.versioned:
        if ltype.version is None and version_override is None and ltype.family in rules.PRINTED_WITHOUT_VERSION:
            ltype = replace(ltype, version=CURRENT_VERSION)  # as the model prints it: read as V13
        if ltype.version is None:
            if version_override is None:
                problems.append(error(f"{ltype.family} is a software license and needs a version: write e.g. '{ltype.family}13' or add version = 13", "R-HW-2", where))
                return None, problems
            ltype = replace(ltype, version=version_override)
        elif version_override is not None and version_override != ltype.version:
            problems.append(error(f"`version = {version_override}` contradicts the name {raw_type!r}", where=where))
    elif version_override is not None:
        problems.append(error(f"{ltype.family} is a hardware license and has no version", "R-HW-1", where))

    bind = None
    if bind_raw is not None:
        if not family.bindable:
            problems.append(error(f"{ltype.family} is not bound to a device; remove `bind` (software licenses move freely)", "R-HW-2", where))
        elif not isinstance(bind_raw, str) or (bind := rules.normalize_mac(bind_raw)) is None:
            problems.append(error(f"`bind` must be a MAC address xx:xx:xx:xx:xx:xx, not {bind_raw!r}", _bind_rule(ltype.family), where))
    elif family.bindable:
        problems.append(error(f"{ltype.family} is bound to one device: add bind = \"xx:xx:xx:xx:xx:xx\"", _bind_rule(ltype.family), where))

    ssa = entry.get("ssa_until")
    if ssa is not None:
        if family.is_hardware:
            problems.append(error("hardware licenses cannot be under SSA", "R-HW-1", where))
            ssa = None
        elif not isinstance(ssa, dt.date) or isinstance(ssa, dt.datetime):
            problems.append(error("`ssa_until` must be a date, e.g. ssa_until = 2027-06-30", "R-SSA-1", where))
            ssa = None
    rented = entry.get("rented", False)
    if not isinstance(rented, bool):
        problems.append(error("`rented` must be true or false", "R-RENT-1", where))
        rented = False
    elif rented and family.is_hardware:
        problems.append(error("hardware licenses cannot be rented (iSC is for software licenses only)", "R-RENT-1", where))

    if any(p.severity == "error" for p in problems) or count is None:
        return None, problems
    return InstalledLicense(ltype, count, bind, ssa, rented, where), problems


def _bind_rule(family: str) -> str:
    return "R-IPVA-2" if family == "PBX-IPVA" else "R-HW-1"


