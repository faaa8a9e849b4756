"""The catalog and the parser of technical names (docs/rules.md, "Catalog")."""

import re

import pytest

from licmaster.model.catalog import FAMILIES, REFERENCES, CatalogError, LicenseClass, LicenseType, parse_license_type


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("PBX-Port13", LicenseType("PBX-Port", 13)),
        ("PBX-Port 13%500", LicenseType("PBX-Port", 13, "%500")),
        ("PBX-Port13%5000", LicenseType("PBX-Port", 13, "%5000")),
        ("PBX-Standby 13%2000", LicenseType("PBX-Standby", 13, "%2000")),
        ("Port13$20", LicenseType("Port", 13, "$20")),
        ("Port13$$", LicenseType("Port", 13, "$$")),
        ("App(phone)13", LicenseType("App(phone)", 13)),
        ("App(innovaphone-pbx-conference)13", LicenseType("App(innovaphone-pbx-conference)", 13)),
        ("App(innovaphone-recorder)", LicenseType("App(innovaphone-recorder)", None)),
        ("Relay-Channels", LicenseType("Relay-Channels", None)),
        ("Relay-BRIs", LicenseType("Relay-BRIs", None)),
        ("Fax13", LicenseType("Fax", 13)),
        ("PBX-IPVA13", LicenseType("PBX-IPVA", 13)),
        ("  PBX-Port   13%1000 ", LicenseType("PBX-Port", 13, "%1000")),
    ],
)
def test_parses_technical_names_as_the_seed_prints_them(name: str, expected: LicenseType) -> None:
    assert parse_license_type(name).license_type == expected


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("02-00039-003", LicenseType("PBX-Port", 13, "%500")),
        ("02-00040-006", LicenseType("PBX-Standby", 13, "%5000")),
        ("01-00500-004", LicenseType("Relay-Channels", None)),
        ("02-00039-010", LicenseType("Port", 13, "$$")),
        ("02-00050-008", LicenseType("App(innovaphone-recorder)", 13)),
    ],
)
def test_parses_reference_numbers_as_v13_licenses(ref: str, expected: LicenseType) -> None:
    parsed = parse_license_type(ref)
    assert parsed.license_type == expected
    assert parsed.warning is None


def test_the_seeds_duplicate_reference_resolves_by_bind_with_a_warning() -> None:
    fax = parse_license_type("02-00030-001", bound=False)
    ipva = parse_license_type("02-00030-001", bound=True)
    assert fax.license_type.family == "Fax" and "both PBX-IPVA and Fax" in (fax.warning or "")
    assert ipva.license_type.family == "PBX-IPVA" and ipva.warning


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("PBX-Port13%700", "no tier '%700'"),
        ("PBX-Fish13", "unknown license family 'PBX-Fish'"),
        ("Port13$40", "SMB-Port size '$40' in 'Port13$40' does not exist"),
        ("App(unknown)13", "unknown app license"),
        ("99-99999-999", "unknown reference number"),
        ("hello", "expected a technical name"),
        ("", "empty license name"),
        ("PBX-Operator13%500", "has no tier"),
    ],
)
def test_unknown_or_malformed_names_say_what_was_expected(name: str, says: str) -> None:
    with pytest.raises(CatalogError, match=re.escape(says)):
        parse_license_type(name)


def test_catalog_lists_every_family_with_class_consumption_and_references() -> None:
    assert len([f for f in FAMILIES.values() if f.klass is not LicenseClass.FREE]) == 23
    assert FAMILIES["Relay-PRIs"].is_hardware and FAMILIES["Relay-PRIs"].bindable
    assert FAMILIES["PBX-Port"].consumption.value == "floating"
    assert FAMILIES["PBX-Standby"].consumption.value == "count"
    assert FAMILIES["PBX-UC"].consumption.value == "user"
    assert dict(FAMILIES["PBX-Port"].refs)["%2000"] == "02-00039-005"
    assert len(REFERENCES["02-00030-001"]) == 2  # the seed's slip, kept on purpose


def test_technical_name_round_trips() -> None:
    for name in ("PBX-Port13", "PBX-Port 13%500", "Port13$20", "App(phone)13", "Relay-Channels", "Fax13"):
        assert parse_license_type(parse_license_type(name).license_type.technical_name).license_type == parse_license_type(name).license_type
