"""The rules of the license model (docs/rules.md) as pure functions and tables. The pool and the
installation check call these; every function names the rule it decides, and a rule that refuses
something is worded here, once, so that `licmaster check` and the master say the same thing."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from . import errors as E
from .errors import Denial

# R-HW-4: these gateways include every hardware license.
MODELS_WITH_HARDWARE_LICENSES = frozenset({"IP311", "IP411", "IP511"})
# R-HW-3: only the IP811 needs Relay-BRIs for its T0 interfaces.
MODELS_NEEDING_BRI_LICENSES = frozenset({"IP811"})
# R-HW-3: B-channels per interface.
CHANNELS_PER_INTERFACE = {"bri": 2, "pri": 30}
INTERFACE_FAMILY = {"bri": "Relay-BRIs", "pri": "Relay-PRIs"}

# R-CHAN-2 (Reading): up to 3 participants is the phones' own 3-way conference.
PHONE_CONFERENCE_MAX = 3

# R-VER-3: a V13 VoicemailUser cannot run on PBX software V9 or older.
VOICEMAIL_V13 = 13
VOICEMAIL_OLDEST_FIRMWARE_FOR_V13 = 10
# R-VER-4: Queue Monitor needs PBX software V9 or newer.
QUEUE_MONITOR_MIN_FIRMWARE = 9

# R-OP-2: an Operator updated to V13 under SSA brings 3 Switchboard App licenses.
SWITCHBOARD_PER_OPERATOR_V13 = 3
SWITCHBOARD_FROM_VERSION = 13

# R-UC-1: what one PBX-UC holds for its user (not Premium Chat).
UC_MODULES = frozenset(
    {"App(phone)", "App(softphone)", "PBX-AppSharing", "PBX-Video", "PBX-VoicemailUser", "PBX-Mobility", "Fax"}
)

# Prerequisites on the same user: family -> (families all needed, rule).
PREREQUISITES: Mapping[str, tuple[tuple[str, ...], str]] = {
    "App(softphone)": (("App(phone)",), "R-USER-2"),
    "PBX-Video": (("App(phone)",), "R-USER-2"),
    "PBX-AppSharing": (("App(phone)",), "R-USER-2"),
    "App(rcc)": (("PBX-Mobility", "App(phone)"), "R-APP-1"),
    "App(voicemail)": (("PBX-VoicemailUser",), "R-APP-1"),
    "App(fax)": (("Fax",), "R-APP-1"),
    "App(recordings)": (("App(innovaphone-recorder)",), "R-APP-1"),
    "App(reports)": (("PBX-Reporting",), "R-APP-1"),
}

RECORDER = "App(innovaphone-recorder)"
# The model prints this one software license without a version; written so, it is read as V13
# (the model's own version), as a reference number is.
PRINTED_WITHOUT_VERSION = frozenset({RECORDER})
CONFERENCE_APP = "App(innovaphone-pbx-conference)"
CHANNEL_FAMILIES = ("Relay-Channels", "PBX-Channels")

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def normalize_mac(text: str) -> str | None:
    """`xx:xx:xx:xx:xx:xx` in lower case, or None when `text` is not a MAC (R-HW-1, R-IPVA-2)."""
    mac = text.strip().lower().replace("-", ":")
    return mac if _MAC_RE.match(mac) else None


def version_runs(license_version: int, firmware: int) -> bool:
    """R-VER-1: a license of version v runs software of version f only if v >= f."""
    return license_version >= firmware


def capping_versions(versions: Mapping[int, int], firmware: int) -> list[tuple[int, int]]:
    """R-VER-2: the (version, count) of a family's installed licenses that are below `firmware`.

    Reading: if any installed license of a family is below the firmware, the lowest version
    decides for the whole installation and the family serves nothing to that PBX.
    """
    return sorted((v, n) for v, n in versions.items() if n > 0 and not version_runs(v, firmware))


def voicemail_runs(license_version: int, firmware: int) -> bool:
    """R-VER-3 on top of R-VER-1: V13 VoicemailUser cannot be downgraded to V9 or older."""
    if license_version >= VOICEMAIL_V13 and firmware < VOICEMAIL_OLDEST_FIRMWARE_FOR_V13:
        return False
    return version_runs(license_version, firmware)


def queue_monitor_supported(firmware: int) -> bool:
    """R-VER-4."""
    return firmware >= QUEUE_MONITOR_MIN_FIRMWARE


def conference_channels(participants: int) -> int:
    """R-CHAN-2 (Reading): channels a conference of `participants` takes: none up to 3, else one each."""
    return 0 if participants <= PHONE_CONFERENCE_MAX else participants


def isdn_licenses(model: str | None, interface: str, channels: int) -> list[tuple[str, int]]:
    """R-HW-3, R-HW-4: the device-bound (family, count) an ISDN interface with `channels` B-channels needs."""
    if model in MODELS_WITH_HARDWARE_LICENSES:
        return []  # R-HW-4
    needs: list[tuple[str, int]] = []
    if interface == "pri" or model in MODELS_NEEDING_BRI_LICENSES:
        needs.append((INTERFACE_FAMILY[interface], 1))
    if channels:
        needs.append(("Relay-Channels", channels))
    return needs


def effective_user_families(families: Iterable[str]) -> frozenset[str]:
    """R-UC-1: what a user holds, with PBX-UC expanded into its modules."""
    held = set(families)
    if "PBX-UC" in held:
        held |= UC_MODULES
    return frozenset(held)


def missing_prerequisites(families: Iterable[str]) -> list[tuple[str, tuple[str, ...], str]]:
    """R-USER-2, R-APP-1: (family, what it lacks, rule) for each unmet prerequisite on one user."""
    held = effective_user_families(families)
    out = []
    for family in sorted(held):
        need = PREREQUISITES.get(family)
        if need is None:
            continue
        lacking = tuple(n for n in need[0] if n not in held)
        if lacking:
            out.append((family, lacking, need[1]))
    return out


def standby_shortfall(standby_usable: int, ports_installed: int) -> int:
    """R-STBY-2: how many Standby licenses are missing (0 when the standby function is available)."""
    return max(0, ports_installed - standby_usable)


def tier_below_threshold(tier: str, total_ports: int, thresholds: Mapping[str, int]) -> bool:
    """R-PORT-4 (Reading): a tier license installed below its price band's threshold earns a warning."""
    threshold = thresholds.get(tier)
    return threshold is not None and total_ports < threshold


# ---------------------------------------------------------------- refusals, worded once


def family_name(family: str, version: int | None) -> str:
    """A family at a version as people write it: `PBX-Port11`, and `Port13` for SMB-Port."""
    v = "" if version is None else str(version)
    return f"Port{v}" if family == "Port" else f"{family}{v}"


def capped_text(family: str, cap: list[tuple[int, int]]) -> str:
    """R-VER-2: why a family serves nothing to a firmware: `capped at V11 by 100 × PBX-Port11`."""
    what = ", ".join(f"{n} × {family_name(family, v)}" for v, n in cap)
    return f"capped at V{cap[0][0]} by {what}"


def version_capped(family: str, cap: list[tuple[int, int]], node: str, version: int, rule: str = "R-VER-2") -> Denial:
    """R-VER-1/R-VER-2 for one PBX (or, R-OP-3, for the workstation software asking)."""
    return Denial(E.VERSION, f"{family} is {capped_text(family, cap)}: {node} runs V{version}; "
                  "the lowest version decides for the whole installation (remove or upgrade them)", rule,
                  {"family": family, "capped_at": cap[0][0]})


def voicemail_text(firmware: int) -> str:
    """R-VER-3."""
    return (f"V{VOICEMAIL_V13} Voicemail User licenses do not run on PBX software V{firmware}: "
            f"they do not downgrade to V{VOICEMAIL_OLDEST_FIRMWARE_FOR_V13 - 1} or older")


def queue_monitor_text() -> str:
    """R-VER-4."""
    return f"Queue Monitor needs PBX software V{QUEUE_MONITOR_MIN_FIRMWARE} or newer"


def decentral(node: str) -> Denial:
    """R-MODE-2: a PBX with licenses installed locally uses none of the master's, for anything."""
    return Denial(E.DECENTRAL, f"{node} has licenses installed locally (decentral): it cannot use any license of the "
                  "master, and does not fall back on it when it runs short", "R-MODE-2")
