"""The catalog of license families (docs/rules.md, "Catalog") and the parser of technical license names.

Pure: no I/O. A *family* is the technical type name without its version; a parsed name is a
`LicenseType` (family, version, tier). Names are accepted exactly as the seed prints them
(`PBX-Port13`, `PBX-Port 13%500`, `Port13$20`, `App(phone)13`, `Relay-Channels`) or by
reference number (`02-00039-003`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

#: The newest software version this model knows (the seed is "Modèle de Licence V13r2").
CURRENT_VERSION = 13


class LicenseClass(str, Enum):
    HARDWARE = "hardware"  # Relay-*, bound to a device, no version (R-HW-1)
    SOFTWARE = "software"  # versioned, movable (R-HW-2)
    FREE = "free"  # apps that need no license of their own (seed 6.5-6.9)


class Consumption(str, Enum):
    BOUND = "bound"  # drawn by the one device it is bound to
    FLOATING = "floating"  # checked out while in use, checked in after
    USER = "user"  # taken when configured on a user (R-USER-1)
    COUNT = "count"  # never drawn; its count enables a function (Standby, R-STBY-2)
    NONE = "none"  # free apps: no license, only prerequisites


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    klass: LicenseClass
    consumption: Consumption
    section: str
    refs: tuple[tuple[str, str], ...]  # (tier or "", reference number)
    tiers: tuple[str, ...] = ("",)
    bindable: bool = False  # may (and must) carry `bind` = a MAC
    title: str = ""

    @property
    def is_hardware(self) -> bool:
        return self.klass is LicenseClass.HARDWARE

    @property
    def versioned(self) -> bool:
        return self.klass is LicenseClass.SOFTWARE


_PORT_TIERS = ("", "%500", "%1000", "%2000", "%5000")
_SMB_TIERS = ("$20", "$30", "$50", "$$")

#: Port tiers are price bands "from 501, 1,001, 2,001, 5,001 ports" (R-PORT-4).
TIER_THRESHOLDS: dict[str, int] = {"%500": 501, "%1000": 1001, "%2000": 2001, "%5000": 5001}
#: The fixed size of each SMB-Port license (R-SMB-2); `$$` is the upgrade, not a size.
SMB_SIZES: dict[str, int] = {"$20": 20, "$30": 30, "$50": 50}

SMB_PORT = "Port"
SMB_UPGRADE_TIER = "$$"


def _f(
    name: str,
    klass: LicenseClass,
    consumption: Consumption,
    section: str,
    refs: dict[str, str],
    *,
    bindable: bool = False,
    title: str = "",
) -> Family:
    return Family(
        name=name,
        klass=klass,
        consumption=consumption,
        section=section,
        refs=tuple(refs.items()),
        tiers=tuple(refs) or ("",),
        bindable=bindable,
        title=title,
    )


H, S, FR = LicenseClass.HARDWARE, LicenseClass.SOFTWARE, LicenseClass.FREE
B, FL, U, C, N = (
    Consumption.BOUND,
    Consumption.FLOATING,
    Consumption.USER,
    Consumption.COUNT,
    Consumption.NONE,
)

_FAMILY_LIST: tuple[Family, ...] = (
    _f("Relay-BRIs", H, B, "2.2", {"": "01-00500-002"}, bindable=True, title="BRI (T0)"),
    _f("Relay-PRIs", H, B, "2.3", {"": "01-00500-003"}, bindable=True, title="PRI (T2)"),
    _f("Relay-Channels", H, B, "2.4", {"": "01-00500-004"}, bindable=True, title="Channel"),
    _f(
        "PBX-Port",
        S,
        FL,
        "3.1",
        dict(zip(_PORT_TIERS, ("02-00039-002", "02-00039-003", "02-00039-004", "02-00039-005", "02-00039-006"), strict=True)),
        title="Port",
    ),
    _f(
        "PBX-Standby",
        S,
        C,
        "3.2",
        dict(zip(_PORT_TIERS, ("02-00040-002", "02-00040-003", "02-00040-004", "02-00040-005", "02-00040-006"), strict=True)),
        title="Standby",
    ),
    _f("PBX-IPVA", S, FL, "3.3", {"": "02-00030-001"}, bindable=True, title="IPVA"),
    _f(
        SMB_PORT,
        S,
        FL,
        "3.4",
        dict(zip(_SMB_TIERS, ("02-00039-007", "02-00039-008", "02-00039-009", "02-00039-010"), strict=True)),
        title="SMB-Port",
    ),
    _f("PBX-Channels", S, FL, "3.5", {"": "02-00020-007"}, title="PBX-Channels"),
    _f("PBX-UC", S, U, "4", {"": "02-00044-001"}, title="UC"),
    _f("PBX-Video", S, U, "5.1", {"": "02-00032-001"}, title="Video"),
    _f("PBX-AppSharing", S, U, "5.2", {"": "02-00045-001"}, title="Application Sharing"),
    _f("PBX-VoicemailUser", S, U, "5.3", {"": "02-00041-004"}, title="Voicemail User"),
    _f("PBX-Mobility", S, U, "5.4", {"": "02-00027-005"}, title="Mobility"),
    _f("PBX-Reporting", S, U, "5.5", {"": "02-00042-002"}, title="Reporting"),
    _f("App(innovaphone-recorder)", S, U, "5.6", {"": "02-00050-008"}, title="Recording"),
    _f("Fax", S, U, "5.7", {"": "02-00030-001"}, title="Fax"),
    _f("App(phone)", S, U, "6.1", {"": "02-00050-005"}, title="Phone App"),
    _f("App(softphone)", S, U, "6.2", {"": "02-00050-004"}, title="Softphone App"),
    _f("App(chat)", S, U, "6.3", {"": "02-00050-006"}, title="Premium Chat App"),
    _f("App(innovaphone-pbx-conference)", S, U, "6.4", {"": "02-00050-001"}, title="Conference App"),
    _f("App(innovaphone-switchboard)", S, U, "6.8", {"": "02-00050-007"}, title="Switchboard App"),
    _f("PBX-Operator", S, FL, "7.1", {"": "02-00027-006"}, title="Operator"),
    _f("PBX-QueueMonitor", S, FL, "7.2", {"": "02-00027-007"}, title="Queue Monitor"),
    # Free apps (seed 6.5-6.9, 5.5): no license of their own, only prerequisites (R-APP-1).
    _f("App(rcc)", FR, N, "6.5", {}, title="RCC App"),
    _f("App(voicemail)", FR, N, "6.6", {}, title="Voicemail App"),
    _f("App(fax)", FR, N, "6.7", {}, title="Fax App"),
    _f("App(recordings)", FR, N, "6.9", {}, title="Recordings App"),
    _f("App(reports)", FR, N, "5.5", {}, title="Reports App"),
)

FAMILIES: dict[str, Family] = {f.name: f for f in _FAMILY_LIST}

#: Reference number -> every (family, tier) it names. 02-00030-001 names two (a slip in the seed).
REFERENCES: dict[str, tuple[tuple[str, str], ...]] = {}
for _fam in _FAMILY_LIST:
    for _tier, _ref in _fam.refs:
        REFERENCES[_ref] = REFERENCES.get(_ref, ()) + ((_fam.name, _tier),)


@dataclass(frozen=True, slots=True)
class LicenseType:
    """A parsed technical name: `PBX-Port 13%500` is ("PBX-Port", 13, "%500")."""

    family: str
    version: int | None
    tier: str = ""

    @property
    def technical_name(self) -> str:
        v = "" if self.version is None else str(self.version)
        if self.family == SMB_PORT:
            return f"Port{v}{self.tier}"
        if self.tier:
            return f"{self.family} {v}{self.tier}"
        return f"{self.family}{v}"

    def __str__(self) -> str:
        return self.technical_name


class CatalogError(ValueError):
    """A name or reference this catalog cannot read; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class ParsedName:
    license_type: LicenseType
    warning: str | None = None  # set when the name needed a choice (the ambiguous reference)


_REF_RE = re.compile(r"^\d{2}-\d{5}-\d{3}$")
_HW_RE = re.compile(r"^Relay-(BRIs|PRIs|Channels)$")
_PBX_RE = re.compile(r"^PBX-([A-Za-z]+) ?(\d+)?(%\d+)?$")
_SMB_RE = re.compile(r"^Port ?(\d+)?(\$\$|\$\d+)$")
_APP_RE = re.compile(r"^App\(([a-z0-9-]+)\) ?(\d+)?$")
_FAX_RE = re.compile(r"^Fax ?(\d+)?$")

_EXPECTED = (
    "expected a technical name as the seed prints it (e.g. 'PBX-Port13', 'PBX-Port 13%500', "
    "'Port13$20', 'App(phone)13', 'Relay-Channels', 'Fax13') or a reference number such as '02-00039-002'"
)


def parse_license_type(text: str, *, bound: bool | None = None, default_version: int = CURRENT_VERSION) -> ParsedName:
    """Read a technical license name or reference number.

    A reference number names a V13 license (the seed lists the V13 references); its version is
    `default_version`. The seed gives 02-00030-001 to both PBX-IPVA and Fax: `bound` resolves it
    (a bound license is the IPVA one), and the choice always comes back as a warning.
    """
    name = " ".join(text.split())
    if not name:
        raise CatalogError(f"empty license name: {_EXPECTED}")
    if _REF_RE.match(name):
        return _parse_reference(name, bound=bound, default_version=default_version)
    if m := _HW_RE.match(name):
        return ParsedName(LicenseType(name, None))
    if m := _PBX_RE.match(name):
        family = f"PBX-{m.group(1)}"
        fam = FAMILIES.get(family)
        if fam is None:
            raise CatalogError(f"unknown license family {family!r} in {text!r}: {_known_families_hint(family)}")
        tier = m.group(3) or ""
        if tier not in fam.tiers:
            allowed = ", ".join(t for t in fam.tiers if t) or "none"
            raise CatalogError(f"{family} has no tier {tier!r} in {text!r} (tiers: {allowed})")
        return ParsedName(LicenseType(family, _version(m.group(2)), tier))
    if m := _SMB_RE.match(name):
        tier = m.group(2)
        if tier not in _SMB_TIERS:
            raise CatalogError(f"SMB-Port size {tier!r} in {text!r} does not exist (sizes: $20, $30, $50; upgrade: $$)")
        return ParsedName(LicenseType(SMB_PORT, _version(m.group(1)), tier))
    if m := _APP_RE.match(name):
        family = f"App({m.group(1)})"
        fam = FAMILIES.get(family)
        if fam is None:
            raise CatalogError(f"unknown app license {family!r} in {text!r}: {_known_families_hint(family)}")
        return ParsedName(LicenseType(family, _version(m.group(2)) if fam.versioned else None))
    if m := _FAX_RE.match(name):
        return ParsedName(LicenseType("Fax", _version(m.group(1))))
    raise CatalogError(f"cannot read license name {text!r}: {_EXPECTED}")


def _version(digits: str | None) -> int | None:
    return None if digits is None else int(digits)


def _known_families_hint(family: str) -> str:
    prefix = family.split("(")[0].split("-")[0]
    near = sorted(n for n in FAMILIES if n.startswith(prefix))
    return "known: " + ", ".join(near) if near else _EXPECTED


def _parse_reference(ref: str, *, bound: bool | None, default_version: int) -> ParsedName:
    names = REFERENCES.get(ref)
    if names is None:
        raise CatalogError(f"unknown reference number {ref!r} (the seed's references look like 02-00039-002)")
    warning = None
    if len(names) > 1:
        # The seed's slip: one reference for PBX-IPVA and Fax. Choose by `bind`, say so.
        family, tier = ("PBX-IPVA", "") if bound else ("Fax", "")
        warning = (
            f"reference {ref} names both PBX-IPVA and Fax in the seed; read as {family} "
            f"because the entry {'has' if bound else 'has no'} `bind` (write the technical name to be explicit)"
        )
    else:
        family, tier = names[0]
    fam = FAMILIES[family]
    version = default_version if fam.versioned else None
    return ParsedName(LicenseType(family, version, tier), warning)
