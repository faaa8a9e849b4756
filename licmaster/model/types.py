"""Values the whole model shares: what a PBX said, what is installed, a problem found. Pure."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from .catalog import LicenseType

RESOURCES = ("port", "conference", "isdn", "operator", "queue-monitor")
ROLES = ("pbx", "standby", "observer")
PLATFORMS = ("gateway", "ipva")
LICENSING = ("central", "decentral")


@dataclass(frozen=True, slots=True)
class Node:
    """What a PBX said in `hello`."""

    name: str
    role: str = "pbx"
    firmware: int = 13
    platform: str = "gateway"
    mac: str | None = None
    licensing: str = "central"
    model: str | None = None
    standby_for: str | None = None


@dataclass(frozen=True, slots=True)
class InstalledLicense:
    """`count` licenses of one technical type, as installed."""

    type: LicenseType
    count: int
    bind: str | None = None
    ssa_until: dt.date | None = None
    rented: bool = False
    source: str = ""  # "file.toml:12 (entry 3)", for messages

    @property
    def family(self) -> str:
        return self.type.family

    @property
    def version(self) -> int | None:
        return self.type.version

    @property
    def tier(self) -> str:
        return self.type.tier

    def __str__(self) -> str:
        bound = f" bound to {self.bind}" if self.bind else ""
        return f"{self.count} × {self.type.technical_name}{bound}"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong (or worth a warning) in an installation, with where and which rule."""

    severity: str  # "error" or "warning"
    message: str
    rule: str | None = None
    where: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "rule": self.rule, "where": self.where, "message": self.message}

    def __str__(self) -> str:
        where = f"{self.where}: " if self.where else ""
        rule = f" [{self.rule}]" if self.rule else ""
        return f"{self.severity}: {where}{self.message}{rule}"


def error(message: str, rule: str | None = None, where: str = "") -> Problem:
    return Problem("error", message, rule, where)


def warning(message: str, rule: str | None = None, where: str = "") -> Problem:
    return Problem("warning", message, rule, where)


@dataclass(frozen=True, slots=True)
class SyncEntry:
    """One lease a PBX says it holds, in `sync`."""

    resource: str
    holder: str
    count: int = 1
    interface: str | None = None
    client_version: int | None = None  # R-OP-3
