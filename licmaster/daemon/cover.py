"""Standby cover: would a standby PBX's takeover be licensed now (R-STBY-2, R-STBY-3)?

The pool answers it for one firmware (`Pool.standby_status`, what `takeover` itself asks); this
module asks it for the standby PBXs that are there (sessions with `standby_for`), each at its own
firmware, or, with none there, for the newest firmware among the PBXs connected (V13 with none):
what the console, `/metrics`, the dashboard and a reload say (docs/operations.md, "Signals").

`reason` takes one of `REASONS`, so that a metric labelled with it stays a handful of series.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from licmaster.model import rules
from licmaster.model.catalog import CURRENT_VERSION
from licmaster.model.errors import Denial
from licmaster.model.pool import Pool
from licmaster.model.types import Node

COVERED, NO_STANDBY = "covered", "no_standby"
TOO_FEW, VERSION, SMB = "standby_short", "standby_version", "smb_port"
REASONS = (COVERED, NO_STANDBY, TOO_FEW, VERSION, SMB)  # the first two hold (1), the others do not (0)


@dataclass(frozen=True, slots=True)
class Cover:
    held: bool  # a takeover would be licensed, or there is nothing to cover
    reason: str  # one of REASONS
    message: str  # in words, with the numbers
    rule: str | None
    firmware: int  # the firmware it was judged for
    standbys: tuple[str, ...] = field(default=())  # "hq-standby (for hq)": the standby PBXs there

    def to_dict(self) -> dict[str, Any]:
        return {"held": self.held, "reason": self.reason, "message": self.message, "rule": self.rule,
                "firmware": self.firmware, "standbys": list(self.standbys)}


def standby_nodes(nodes: Iterable[Node]) -> list[Node]:
    """The standby PBXs among these nodes (those that said whom they stand by for)."""
    return [n for n in nodes if n.standby_for]


def newest_firmware(nodes: Iterable[Node]) -> int:
    """The newest PBX software among these nodes (observers have none); V13 with none."""
    return max((n.firmware for n in nodes if n.role != "observer"), default=CURRENT_VERSION)


def standby_cover(pool: Pool, nodes: Iterable[Node]) -> Cover:
    """The cover the pool gives the standby PBXs among `nodes` (a session's `info` each)."""
    nodes = list(nodes)
    standbys = standby_nodes(nodes)
    names = tuple(f"{n.name} (for {n.standby_for})" for n in standbys)
    firmwares = sorted({n.firmware for n in standbys}) or [newest_firmware(nodes)]
    if not standbys and pool.inventory.installed_in("PBX-Standby") == 0:
        return Cover(True, NO_STANDBY, "no PBX-Standby license installed and no standby PBX connected: nothing to cover",
                     None, firmwares[-1], names)
    for firmware in firmwares:
        denial = pool.standby_status(firmware)
        if denial is not None:
            return Cover(False, _reason(pool, denial, firmware), denial.message, denial.rule, firmware, names)
    return Cover(True, COVERED, "Standby licenses cover every Port license", "R-STBY-2", firmwares[-1], names)


def lost_cover(before: Pool, after: Pool, nodes: Iterable[Node]) -> list[tuple[Node, Denial]]:
    """The standby PBXs among `nodes` whose takeover `before` licenses and `after` would refuse,
    each with the refusal (a reload that would take their cover away)."""
    lost = []
    for node in standby_nodes(nodes):
        denial = after.standby_status(node.firmware)
        if denial is not None and before.standby_status(node.firmware) is None:
            lost.append((node, denial))
    return lost


def _reason(pool: Pool, denial: Denial, firmware: int) -> str:
    if denial.rule == "R-STBY-3":
        return SMB
    capped = rules.capping_versions(pool.inventory.versions.get("PBX-Standby", {}), firmware)
    return VERSION if capped else TOO_FEW
