"""Readings over a whole installation's licenses, before any lease: what the pool serves
(SMB sizes and upgrades, SSA terms, the Operator's Switchboard bonus) and the checks that span
several entries (R-SMB, R-PORT-4, R-APP-2, R-STBY-3). Pure."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import replace

from . import rules
from .catalog import (
    CURRENT_VERSION,
    SMB_PORT,
    SMB_SIZES,
    SMB_UPGRADE_TIER,
    TIER_THRESHOLDS,
    LicenseType,
)
from .types import InstalledLicense, Problem, error, warning


def installation_problems(licenses: list[InstalledLicense]) -> list[Problem]:
    """Checks over the whole installation: SMB (R-SMB-1/2), tiers (R-PORT-4), channels (R-APP-2)."""
    problems: list[Problem] = []
    smb = [lic for lic in licenses if lic.family == SMB_PORT and lic.tier != SMB_UPGRADE_TIER]
    upgrades = [lic for lic in licenses if lic.family == SMB_PORT and lic.tier == SMB_UPGRADE_TIER]
    standard = [lic for lic in licenses if lic.family == "PBX-Port"]

    smb_by_version: dict[int | None, list[InstalledLicense]] = defaultdict(list)
    for lic in smb:
        smb_by_version[lic.version].append(lic)
    for version, lics in sorted(smb_by_version.items(), key=lambda kv: kv[0] or 0):
        variants = sorted({lic.tier for lic in lics}, key=lambda t: SMB_SIZES[t])
        if len(variants) > 1:
            problems.append(error(
                f"SMB-Port variants do not combine ({', '.join(str(lic) for lic in lics)}): an installation grows within "
                f"the one variant it chose; to go past it, convert to standard Ports with Port{version}$$", "R-SMB-2", lics[-1].source))
            continue
        ceiling = SMB_SIZES[variants[0]]
        total = sum(lic.count for lic in lics)
        if total > ceiling:
            problems.append(error(
                f"{total} × Port{version}{variants[0]}: each SMB-Port license is one Port, and the {variants[0]} variant "
                f"stops at {ceiling}; to grow past it, convert to standard Port licenses with Port{version}$$",
                "R-SMB-2", lics[-1].source))
    if len(smb_by_version) > 1:
        problems.append(error("SMB-Port licenses of different versions cannot be combined", "R-SMB-2", smb[-1].source))
    for up in upgrades:
        if not any(lic.version == up.version for lic in smb):
            problems.append(error(f"{up.type} converts an SMB-Port of version {up.version} to standard Ports, but none is installed", "R-SMB-2", up.source))
    converted = any(up.version == lic.version for up in upgrades for lic in smb)
    if smb and standard and not converted:
        problems.append(error(
            f"SMB-Port ({smb[0].type}) cannot be combined with standard Port licenses ({standard[0].type}); "
            "convert it with the upgrade Port13$$ first", "R-SMB-1", standard[0].source))
    if smb and not converted and any(lic.family == "PBX-Standby" for lic in licenses):
        problems.append(warning("Standby licenses are installed beside SMB-Port: the standby function is not available with SMB-Port", "R-STBY-3"))

    problems += tier_warnings(licenses)
    has_channels = any(lic.family in rules.CHANNEL_FAMILIES for lic in licenses)
    if not has_channels and any(lic.family == rules.CONFERENCE_APP for lic in licenses):
        problems.append(warning("Conference App licenses are installed but no conference channels (PBX-Channels or Relay-Channels): the app will have no channels to use", "R-APP-2"))
    return problems


def tier_warnings(licenses: list[InstalledLicense]) -> list[Problem]:
    """R-PORT-4 (Reading): a price-band tier installed below its threshold is valid but earns a warning."""
    total = sum(lic.count for lic in port_equivalents(licenses) if lic.family == "PBX-Port")
    out = []
    for lic in licenses:
        if lic.family in ("PBX-Port", "PBX-Standby") and rules.tier_below_threshold(lic.tier, total, TIER_THRESHOLDS):
            out.append(warning(
                f"{lic.type} is the price band from {TIER_THRESHOLDS[lic.tier]:,} ports, but the installation has {total:,} Port licenses",
                "R-PORT-4", lic.source))
    return out


def port_equivalents(licenses: list[InstalledLicense]) -> list[InstalledLicense]:
    """R-SMB-2: each SMB-Port license is one Port (its variant is a ceiling, checked by
    installation_problems); converted by the `$$` upgrade of its version, each counts as one
    standard PBX-Port."""
    upgraded_versions = {lic.version for lic in licenses if lic.family == SMB_PORT and lic.tier == SMB_UPGRADE_TIER}
    out = []
    for lic in licenses:
        if lic.family != SMB_PORT:
            out.append(lic)
        elif lic.tier == SMB_UPGRADE_TIER:
            continue
        elif lic.version in upgraded_versions:
            out.append(replace(lic, type=LicenseType("PBX-Port", lic.version)))
        else:
            out.append(lic)
    return out


def effective_licenses(licenses: list[InstalledLicense], today: dt.date | None = None) -> list[InstalledLicense]:
    """What the pool serves: SMB upgrades applied (R-SMB-2), SSA upgrades (R-SSA-1), R-OP-2 bonuses.

    R-SSA-1 (Reading): while its SSA runs, a license counts as the newest released version.
    R-OP-2 (Reading, docs/model.md): a PBX-Operator of a version below 13 with an SSA was updated
    to V13 under it, and brings 3 App(innovaphone-switchboard)13 per license; they are the
    customer's from then on, so they stay when the SSA ends. A newly bought V13 Operator was not
    updated and brings none.
    """
    today = today or dt.date.today()
    out: list[InstalledLicense] = []
    for lic in port_equivalents(licenses):
        under_ssa = lic.ssa_until is not None and lic.ssa_until >= today
        updated_operator = (lic.family == "PBX-Operator" and lic.ssa_until is not None
                            and lic.version is not None and lic.version < rules.SWITCHBOARD_FROM_VERSION)
        if under_ssa and lic.version is not None and lic.version < CURRENT_VERSION:
            lic = replace(lic, type=replace(lic.type, version=CURRENT_VERSION))
        out.append(lic)
        if updated_operator:
            out.append(InstalledLicense(
                LicenseType("App(innovaphone-switchboard)", rules.SWITCHBOARD_FROM_VERSION),
                rules.SWITCHBOARD_PER_OPERATOR_V13 * lic.count,
                source=f"R-OP-2: brought by {lic.count} × PBX-Operator updated to V13 under SSA ({lic.source})",
            ))
    return out
