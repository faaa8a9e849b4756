"""A drill against an operator's own master (`slave-sim run --master`): say up front what would
make it fail for reasons of its own, and leave the master as it found it.

- Before: the scenario's license files against what the master has installed, family by family
  (a mismatch refuses the run, unless `--force`); the scenario's `[master]` settings, which only
  a master slave-sim starts takes, are named.
- After: every user license the run assigned is unassigned (a run's PBXs say `bye`, which
  gives their floating licenses back, but user licenses are durable: R-USER-1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from licmaster.client import LicenseError, MasterClient
from licmaster.licenses.files import installed_by_family, load_files

from ..access import PLAIN, MasterAccess
from .auditor import totals


class Mismatch(ValueError):
    """The master's installed licenses are not the scenario's."""


def differences(scenario: dict[str, int], master: dict[str, int]) -> list[str]:
    """One line per family whose installed count differs. Pure."""
    return [f"{family}: the scenario has {scenario.get(family, 0)}, the master {master.get(family, 0)}"
            for family in sorted({*scenario, *master}) if scenario.get(family, 0) != master.get(family, 0)]


def ignored_settings(master_section: dict[str, Any]) -> list[str]:
    """The scenario's [master] keys an external master does not take (all but the license files)."""
    return sorted(k for k in master_section if k != "licenses")


async def check_licenses(address: str, license_files: Sequence[Path], access: MasterAccess = PLAIN) -> None:
    """Mismatch naming every family that differs, before the run starts anything."""
    watcher = MasterClient([address], "slave-sim-preflight", role="observer", connect_timeout=5.0, reconnect=False,
                           **access.client_options())
    await watcher.connect()
    try:
        usage = await watcher.usage()
    finally:
        await watcher.close()  # bye: an operator's journal gets `bye`, not an `expire` a lease TTL later
    found = differences(installed_by_family(load_files([str(p) for p in license_files]).licenses), totals(usage)[1])
    if found:
        raise Mismatch("the master at " + address + " does not have the scenario's licenses, so its expectations would fail "
                       "for that alone:\n  " + "\n  ".join(found) + "\n  (load the scenario's license files on it, or run "
                       "anyway with --force)")


async def undo_assignments(address: str, assigned: Iterable[tuple[str, Sequence[str]]],
                           access: MasterAccess = PLAIN) -> int:
    """Unassign what the run assigned (user, families), as a PBX of its own; how many users."""
    pairs = list(assigned)
    if not pairs:
        return 0
    client = MasterClient([address], "slave-sim-cleanup", connect_timeout=5.0, reconnect=False, **access.client_options())
    await client.connect()
    undone = 0
    try:
        for user, families in pairs:
            with contextlib.suppress(LicenseError):
                await client.unassign(user, list(families))
                undone += 1
    finally:
        await client.close()
    return undone
