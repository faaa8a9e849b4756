"""User licenses: configured on a user, durable, all or nothing (R-USER-1), prerequisites checked
on the same user (R-USER-2, R-APP-1), PBX-UC holding its modules (R-UC-1). Pure: the daemon
makes each change durable before it answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import errors as E
from . import rules
from .catalog import FAMILIES, Consumption
from .errors import Denial
from .inventory import Bucket, Inventory
from .planning import Planner
from .types import Node, Problem, warning


@dataclass(slots=True)
class Assignment:
    family: str
    bucket: Bucket | None  # None: covered by the user's PBX-UC, or a free app
    node: str


@dataclass(slots=True)
class AssignResult:
    took: list[dict[str, Any]]
    warnings: list[Problem]
    changed: list[tuple[str, int | None]] = field(default_factory=list)  # (family, version) recorded or removed


class UserLicenses:
    """Every user's configured licenses."""

    def __init__(self, inventory: Inventory, planner: Planner) -> None:
        self.inventory = inventory
        self.planner = planner
        self.users: dict[str, dict[str, Assignment]] = {}

    def assign(self, node: Node, user: str, families: Sequence[str]) -> AssignResult | Denial:
        """Configure user licenses: all or nothing, prerequisites checked against what the user
        holds afterwards."""
        denial = self._check_families(node, families)
        if denial:
            return denial
        held = self.users.get(user, {})
        after = set(held) | set(families)
        missing = rules.missing_prerequisites(after)
        if missing:
            return _prerequisite_denial(user, missing)
        # R-UC-1: a module the user's PBX-UC holds takes no license and is not recorded apart.
        covered = rules.UC_MODULES if "PBX-UC" in after else frozenset()
        draws: list[tuple[str, Bucket | None]] = []
        for family in dict.fromkeys(families):
            if family in held or family in covered:
                continue
            if FAMILIES[family].consumption is Consumption.NONE:
                draws.append((family, None))
                continue
            bucket = self._bucket(family, node)
            if isinstance(bucket, Denial):
                return bucket
            draws.append((family, bucket))
        took = []
        changed: list[tuple[str, int | None]] = []
        record = self.users.setdefault(user, {})
        for family, drawn in draws:
            if drawn is not None:
                drawn.in_use += 1
                drawn.peak = max(drawn.peak, drawn.in_use)
                took.append({"family": family, "version": drawn.version, "count": 1})
            record[family] = Assignment(family, drawn, node.name)
            changed.append((family, drawn.version if drawn else None))
        warnings = []
        if rules.CONFERENCE_APP in families and not any(
                b.installed for b in self.inventory.buckets.values() if b.family in rules.CHANNEL_FAMILIES):
            warnings.append(warning("the Conference App is useful only with conference channels licensed; none are installed", "R-APP-2"))
        return AssignResult(took, warnings, changed)

    def unassign(self, node: Node, user: str, families: Sequence[str]) -> AssignResult | Denial:
        denial = self._check_families(node, families)
        if denial:
            return denial
        held = self.users.get(user, {})
        missing = rules.missing_prerequisites(set(held) - set(families))
        if missing:
            return _prerequisite_denial(user, missing, removing=True)
        returned = []
        changed: list[tuple[str, int | None]] = []
        for family in dict.fromkeys(families):
            assignment = held.pop(family, None)
            if assignment is None:
                continue
            changed.append((family, assignment.bucket.version if assignment.bucket else None))
            if assignment.bucket is not None:
                assignment.bucket.in_use -= 1
                returned.append({"family": family, "version": assignment.bucket.version, "count": 1})
        if not held:
            self.users.pop(user, None)
        return AssignResult(returned, [], changed)

    def restore(self, user: str, family: str, version: int | None, node: str) -> bool:
        """Re-apply a durable assignment after a restart, exactly as it was (even past capacity: a
        reload that shrank the pool is reported by `install`, never revoked here). True when a
        bucket had to be made for it (the inventory's indexes must be rebuilt)."""
        bucket = None
        made = False
        if version is not None:
            made = (family, version, None) not in self.inventory.buckets
            bucket = self.inventory.bucket((family, version, None))
            bucket.in_use += 1
            bucket.peak = max(bucket.peak, bucket.in_use)  # in use again since the start: its peak says so
        self.users.setdefault(user, {})[family] = Assignment(family, bucket, node)
        return made

    def recording_allowed(self) -> Denial | None:
        """R-REC-1: recording queues, conference rooms or the gateway needs a user with the recorder license."""
        if any(rules.RECORDER in held for held in self.users.values()):
            return None
        return Denial(E.PREREQUISITE, "recording waiting queues, conference rooms or the gateway needs at least one user "
                      f"with the {rules.RECORDER} license", "R-REC-1", {"missing": [rules.RECORDER]})

    def _check_families(self, node: Node, families: Sequence[str]) -> Denial | None:
        if node.licensing == "decentral":
            return rules.decentral(node.name)
        if node.role == "observer":
            return E.bad_request("role", "an observer is read-only")
        for family in families:
            fam = FAMILIES.get(family)
            if fam is None:
                return Denial(E.UNKNOWN_LICENSE, f"unknown license family {family[:64]!r}", None, {"family": family[:64]})
            if fam.consumption not in (Consumption.USER, Consumption.NONE):
                return E.bad_request("families", f"{family} is not a user license ({fam.consumption.value}); R-USER-1 lists the user licenses")
        return None

    def _bucket(self, family: str, node: Node) -> Bucket | Denial:
        inv = self.inventory
        denial = self.planner.version_denial(family, node.firmware, node.name)
        if denial:
            return denial
        buckets = inv.family_buckets.get(family, [])
        if family == "PBX-VoicemailUser":
            # R-VER-3 (reading, docs/model.md): on V9 or older only the V13 ones are blocked;
            # older VoicemailUser licenses there still serve.
            runs = [b for b in buckets if b.version is None or rules.voicemail_runs(b.version, node.firmware)]
            if not any(b.installed for b in runs) and any(b.installed for b in buckets):
                blocked = min(b.version or 0 for b in buckets if b not in runs)
                return Denial(E.VERSION, f"PBX-VoicemailUser{blocked}: {rules.voicemail_text(node.firmware)}", "R-VER-3")
            buckets = runs
        for bucket in buckets:
            if bucket.free > 0:
                return bucket
        return Denial(E.EXHAUSTED, f"no free {family}: all {inv.installed_in(family)} installed are configured on users", "R-USER-1",
                      {"family": family, "free": 0, "needed": 1})


def _prerequisite_denial(user: str, missing: list[tuple[str, tuple[str, ...], str]], removing: bool = False) -> Denial:
    family, lacking, rule = missing[0]
    verb = "would lose" if removing else "needs"
    return Denial(E.PREREQUISITE, f"{family} on user {user} {verb} {' and '.join(lacking)} (or PBX-UC) on the same user",
                  rule, {"missing": list(lacking), "family": family})
