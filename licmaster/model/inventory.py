"""What is installed, counted where leases draw from it: buckets of one family, version and
binding, indexed for planning. Pure.

`install` replaces the installed licenses (start, reload, SSA term ended) without touching what
is in use: R-HW-1 keeps hardware licenses that a new set lacks, and what is in use beyond the new
capacity stays in use (never revoked silently) and is reported.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import rules
from .catalog import FAMILIES, SMB_PORT, Consumption, LicenseType
from .installation import effective_licenses
from .types import InstalledLicense, Problem, error

BucketKey = tuple[str, int | None, str | None]  # (family, version, bound MAC)


class Bucket:
    """Licenses of one family, version and binding: the unit of counting."""

    __slots__ = ("bound", "family", "in_use", "installed", "peak", "tiers", "version")

    def __init__(self, family: str, version: int | None, bound: str | None) -> None:
        self.family = family
        self.version = version
        self.bound = bound
        self.installed = 0
        self.in_use = 0
        self.peak = 0  # the most in use at once since this bucket was made (the console shows it)
        self.tiers: dict[str, int] = {}

    @property
    def key(self) -> BucketKey:
        return (self.family, self.version, self.bound)

    @property
    def free(self) -> int:
        return self.installed - self.in_use

    def label(self) -> str:
        name = rules.family_name(self.family, self.version)
        return f"{name} bound to {self.bound}" if self.bound else name

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "version": self.version, "bound": self.bound,
                "installed": self.installed, "in_use": self.in_use}

    def usage(self) -> dict[str, Any]:
        """As `usage` shows it: with the peak."""
        return {**self.to_dict(), "peak": self.peak}


@dataclass(slots=True)
class ReloadReport:
    """What an installation changed, and what no longer fits (never revoked silently)."""

    problems: list[Problem]
    overcommitted: list[dict[str, Any]]


class Inventory:
    """The installed licenses as buckets, with the indexes planning reads."""

    def __init__(self, today: dt.date | None = None) -> None:
        self.today = today  # the calendar for SSA terms; None: the real date
        self.buckets: dict[BucketKey, Bucket] = {}
        self.family_buckets: dict[str, list[Bucket]] = defaultdict(list)  # unbound, by version
        # (family, mac) -> that device's buckets, oldest version first: an IPVA may hold IPVA
        # licenses of several versions (R-IPVA-2), and each of them serves it
        self.bound_buckets: dict[tuple[str, str], list[Bucket]] = defaultdict(list)
        self.bound_macs: dict[str, set[str]] = defaultdict(set)
        self.versions: dict[str, dict[int, int]] = defaultdict(dict)  # family -> version -> installed
        self.installed: list[InstalledLicense] = []
        self.smb = False  # Ports come from an unconverted SMB-Port license

    def install(self, licenses: Iterable[InstalledLicense], *, today: dt.date | None = None) -> ReloadReport:
        """Replace the installed licenses; `today` decides which SSA terms still run (R-SSA-1)."""
        new = list(licenses)
        problems: list[Problem] = []
        new_counts = _count_by_key(effective_licenses(new, today or self.today))
        for key, bucket in self.buckets.items():
            if FAMILIES[key[0]].is_hardware and new_counts.get(key, (0, {}))[0] < bucket.installed:
                kept = bucket.installed - new_counts.get(key, (0, {}))[0]
                problems.append(error(
                    f"{kept} × {bucket.label()} cannot be removed: hardware licenses stay bound to their device; kept", "R-HW-1"))
                new.append(InstalledLicense(LicenseType(bucket.family, bucket.version), kept, bucket.bound, source="kept (R-HW-1)"))
                new_counts[key] = (bucket.installed, new_counts.get(key, (0, {}))[1])
        for bucket in self.buckets.values():
            bucket.installed = 0
            bucket.tiers = {}
        for key, (count, tiers) in new_counts.items():
            bucket = self.bucket(key)
            bucket.installed = count
            bucket.tiers = tiers
        self.installed = new
        self.reindex()
        over = [dict(b.to_dict(), over=b.in_use - b.installed) for b in self.buckets.values() if b.in_use > b.installed]
        for o in over:
            problems.append(error(
                f"{o['in_use']} × {o['family']}{o['version'] or ''} in use but only {o['installed']} installed now: "
                "no lease is revoked, new requests wait until use falls below the installed count"))
        return ReloadReport(problems, over)

    def bucket(self, key: BucketKey) -> Bucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(*key)
        return bucket

    def reindex(self) -> None:
        """Rebuild the indexes after the buckets changed. Plans drawn from the old indexes are
        stale afterwards: the pool drops them."""
        self.family_buckets.clear()
        self.bound_buckets.clear()
        self.bound_macs.clear()
        self.versions.clear()
        # Buckets with nothing installed and nothing in use are dropped; in-use ones stay visible.
        for key in [k for k, b in self.buckets.items() if b.installed == 0 and b.in_use == 0]:
            del self.buckets[key]
        for bucket in sorted(self.buckets.values(), key=lambda b: (b.family, b.version or 0, b.bound or "")):
            if bucket.bound is None:
                self.family_buckets[bucket.family].append(bucket)
            else:
                self.bound_buckets[(bucket.family, bucket.bound)].append(bucket)
                self.bound_macs[bucket.family].add(bucket.bound)
            if bucket.version is not None and bucket.installed:
                versions = self.versions[bucket.family]
                versions[bucket.version] = versions.get(bucket.version, 0) + bucket.installed
        self.smb = bool(self.family_buckets.get(SMB_PORT))

    def installed_in(self, family: str) -> int:
        """Unbound licenses of a family installed, every version."""
        return sum(b.installed for b in self.family_buckets.get(family, ()))

    def usage(self) -> list[dict[str, Any]]:
        return [b.to_dict() for b in sorted(self.buckets.values(), key=lambda b: (b.family, b.version or 0, b.bound or ""))]


def _count_by_key(licenses: list[InstalledLicense]) -> dict[BucketKey, tuple[int, dict[str, int]]]:
    out: dict[BucketKey, tuple[int, dict[str, int]]] = {}
    for lic in licenses:
        if FAMILIES[lic.family].consumption is Consumption.NONE:
            continue
        key = (lic.family, lic.version, lic.bind)
        count, tiers = out.get(key, (0, {}))
        tiers = dict(tiers)
        tiers[lic.tier] = tiers.get(lic.tier, 0) + lic.count
        out[key] = (count + lic.count, tiers)
    return out
