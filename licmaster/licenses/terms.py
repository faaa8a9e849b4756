"""Dates in a license set: SSA terms (R-SSA-1) and rentals (R-RENT-1), per entry, with the days
left. Pure. What an SSA's end will make unusable is the verdict's business (verdict.py asks the
planner for the day after the end)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from licmaster.model.catalog import CURRENT_VERSION
from licmaster.model.types import InstalledLicense

WARN_DAYS = 30  # `check` warns of an SSA end this close that will lower a version


@dataclass(frozen=True, slots=True)
class Term:
    family: str
    version: int | None  # as installed (what it falls back to when its SSA ends)
    count: int
    ssa_until: dt.date | None
    days_left: int | None  # to the SSA's end (0: ends today; negative: ended)
    rented: bool
    source: str

    @property
    def lowers_version(self) -> bool:
        """When the SSA ends, these licenses serve their own version again, an older one."""
        return self.ssa_until is not None and self.version is not None and self.version < CURRENT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "version": self.version, "count": self.count,
                "ssa_until": self.ssa_until.isoformat() if self.ssa_until else None, "days_left": self.days_left,
                "rented": self.rented, "lowers_version": self.lowers_version}

    def describe(self) -> str:
        what = f"{self.count} × {self.family}" + (f" V{self.version}" if self.version else "")
        parts = []
        if self.ssa_until is not None:
            when = ("ended" if (self.days_left or 0) < 0 else "ends") + f" {self.ssa_until.isoformat()}"
            parts.append(f"SSA {when} ({self.days_left} days)" if (self.days_left or 0) >= 0 else f"SSA {when}")
        if self.rented:
            parts.append("rented (iSC)")
        return f"{what}: {', '.join(parts)}"


def terms(licenses: list[InstalledLicense], today: dt.date) -> list[Term]:
    """Every entry with an SSA term or rented, soonest end first."""
    out = [Term(lic.family, lic.version, lic.count, lic.ssa_until, (lic.ssa_until - today).days if lic.ssa_until else None,
                lic.rented, lic.source)
           for lic in licenses if lic.ssa_until is not None or lic.rented]
    return sorted(out, key=lambda t: (t.ssa_until or dt.date.max, t.family))
