"""License files: every problem at once, each with its line, entry and rule."""

import datetime as dt
from pathlib import Path

from licmaster.licenses.files import load_files, parse_text
from licmaster.model.installation import effective_licenses


def rules_of(result) -> list[str | None]:
    return [p.rule for p in result.errors]


def test_a_valid_file_loads_every_entry() -> None:
    result = parse_text('[[license]]\ntype = "PBX-Port13"\ncount = 100\n'
                        '[[license]]\ntype = "Relay-Channels"\ncount = 30\nbind = "00:90:33:12:34:56"\n')
    assert result.ok
    assert [(lic.family, lic.count, lic.bind) for lic in result.licenses] == [
        ("PBX-Port", 100, None), ("Relay-Channels", 30, "00:90:33:12:34:56")]


def test_every_problem_is_reported_at_once_with_its_line_and_entry() -> None:
    text = """
[[license]]
type = "Relay-Channels"
count = 30

[[license]]
type = "PBX-Port13"
count = 0

[[license]]
type = "PBX-Port13"
count = 5
bind = "00:90:33:12:34:56"

[[license]]
type = "PBX-IPVA13"
count = 5
bind = "not-a-mac"
"""
    result = parse_text(text, name="site.toml")
    wheres = [p.where for p in result.errors]
    assert wheres == ["site.toml:2 (entry 1)", "site.toml:6 (entry 2)", "site.toml:10 (entry 3)", "site.toml:15 (entry 4)"]
    # R-HW-1: a Relay license without bind; R-HW-2: bind on a movable software license;
    # R-IPVA-2: the IPVA's bind is not a MAC.
    assert rules_of(result) == ["R-HW-1", None, "R-HW-2", "R-IPVA-2"]
    assert "at least 1, not 0" in result.errors[1].message
    assert result.licenses == []


def test_negative_count_unknown_key_and_bad_toml_are_named() -> None:
    assert "at least 1, not -3" in parse_text('[[license]]\ntype = "PBX-Port13"\ncount = -3').errors[0].message
    assert "unknown key 'cuont'" in parse_text('[[license]]\ntype = "PBX-Port13"\ncuont = 3\ncount = 1').errors[0].message
    assert "not valid TOML" in parse_text("[[license]\n").errors[0].message
    assert "`count` is required" in parse_text('[[license]]\ntype = "PBX-Port13"').errors[0].message


def test_a_software_license_printed_without_version_needs_one_R_HW_2() -> None:
    """Enforces R-HW-2."""
    bad = parse_text('[[license]]\ntype = "App(softphone)"\ncount = 1')
    assert rules_of(bad) == ["R-HW-2"] and "needs a version" in bad.errors[0].message
    good = parse_text('[[license]]\ntype = "App(softphone)"\nversion = 12\ncount = 1')
    assert good.ok and good.licenses[0].version == 12


def test_smb_mixed_with_standard_port_is_refused_R_SMB_1() -> None:
    """Enforces R-SMB-1."""
    result = parse_text('[[license]]\ntype = "Port13$20"\ncount = 1\n[[license]]\ntype = "PBX-Port13"\ncount = 10')
    assert rules_of(result) == ["R-SMB-1"]


def test_smb_licenses_add_up_to_their_variants_ceiling_and_no_further_R_SMB_2() -> None:
    """Enforces R-SMB-2: $20 licenses add up, one Port each, to 20 at most; variants do not mix."""
    twenty = parse_text('[[license]]\ntype = "Port13$20"\ncount = 12\n[[license]]\ntype = "Port13$20"\ncount = 8')
    assert twenty.ok, twenty.errors
    assert sum(lic.count for lic in effective_licenses(twenty.licenses) if lic.family == "Port") == 20
    over = parse_text('[[license]]\ntype = "Port13$20"\ncount = 21')
    assert rules_of(over) == ["R-SMB-2"] and "stops at 20" in over.errors[0].message
    mixed = parse_text('[[license]]\ntype = "Port13$20"\ncount = 1\n[[license]]\ntype = "Port13$30"\ncount = 1')
    assert rules_of(mixed) == ["R-SMB-2"] and "do not combine" in mixed.errors[0].message


def test_smb_upgrade_converts_to_standard_ports_R_SMB_2() -> None:
    """Enforces R-SMB-2."""
    result = parse_text('[[license]]\ntype = "Port13$30"\ncount = 30\n[[license]]\ntype = "Port13$$"\ncount = 1\n'
                        '[[license]]\ntype = "PBX-Port13"\ncount = 10')
    assert result.ok
    ports = [lic for lic in effective_licenses(result.licenses) if lic.family == "PBX-Port"]
    assert sum(lic.count for lic in ports) == 40  # the 30 SMB licenses, one Port each, and 10 standard
    lonely = parse_text('[[license]]\ntype = "Port13$$"\ncount = 1')
    assert rules_of(lonely) == ["R-SMB-2"] and "none is installed" in lonely.errors[0].message


def test_hardware_cannot_be_rented_R_RENT_1_nor_under_ssa_R_HW_1() -> None:
    """Enforces R-RENT-1, R-HW-1."""
    rented = parse_text('[[license]]\ntype = "Relay-PRIs"\ncount = 1\nbind = "00:90:33:12:34:56"\nrented = true')
    assert rules_of(rented) == ["R-RENT-1"]
    ssa = parse_text('[[license]]\ntype = "Relay-PRIs"\ncount = 1\nbind = "00:90:33:12:34:56"\nssa_until = 2027-01-01')
    assert rules_of(ssa) == ["R-HW-1"]
    assert parse_text('[[license]]\ntype = "PBX-Port13"\ncount = 1\nrented = true').ok


def test_ssa_upgrades_a_license_to_the_current_version_while_it_runs_R_SSA_1() -> None:
    """Enforces R-SSA-1."""
    result = parse_text('[[license]]\ntype = "PBX-Port11"\ncount = 10\nssa_until = 2027-06-30')
    before_end = effective_licenses(result.licenses, dt.date(2027, 6, 30))
    after_end = effective_licenses(result.licenses, dt.date(2027, 7, 1))
    assert before_end[0].version == 13
    assert after_end[0].version == 11


def test_an_operator_updated_to_v13_under_ssa_brings_three_switchboard_licenses_R_OP_2() -> None:
    """Enforces R-OP-2 (reading in docs/model.md)."""
    result = parse_text('[[license]]\ntype = "PBX-Operator12"\ncount = 2\nssa_until = 2027-01-01')
    for today in (dt.date(2026, 1, 1), dt.date(2028, 1, 1)):  # under the SSA, and once it ended: they stay
        eff = effective_licenses(result.licenses, today)
        assert [(lic.family, lic.version, lic.count) for lic in eff if lic.family != "PBX-Operator"] == [
            ("App(innovaphone-switchboard)", 13, 6)]
    bought_v13 = parse_text('[[license]]\ntype = "PBX-Operator13"\ncount = 2\nssa_until = 2030-01-01')
    assert len(effective_licenses(bought_v13.licenses, dt.date(2026, 1, 1))) == 1  # not updated: none
    without_ssa = parse_text('[[license]]\ntype = "PBX-Operator12"\ncount = 2')
    assert len(effective_licenses(without_ssa.licenses)) == 1


def test_tier_below_its_threshold_earns_a_warning_R_PORT_4() -> None:
    """Enforces R-PORT-4."""
    small = parse_text('[[license]]\ntype = "PBX-Port 13%500"\ncount = 100')
    assert small.ok and [w.rule for w in small.warnings] == ["R-PORT-4"]
    big = parse_text('[[license]]\ntype = "PBX-Port 13%500"\ncount = 600')
    assert big.warnings == []


def test_conference_app_without_channels_earns_a_warning_R_APP_2() -> None:
    """Enforces R-APP-2."""
    result = parse_text('[[license]]\ntype = "App(innovaphone-pbx-conference)13"\ncount = 1')
    assert [w.rule for w in result.warnings] == ["R-APP-2"]


def test_free_apps_need_no_license_entry() -> None:
    assert "needs no license" in parse_text('[[license]]\ntype = "App(rcc)"\ncount = 1').errors[0].message


def test_load_files_checks_the_installation_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('[[license]]\ntype = "Port13$20"\ncount = 1\n')
    (tmp_path / "b.toml").write_text('[[license]]\ntype = "PBX-Port13"\ncount = 1\n')
    result = load_files([tmp_path / "a.toml", tmp_path / "b.toml"])
    assert rules_of(result) == ["R-SMB-1"]
    missing = load_files([tmp_path / "nope.toml"])
    assert "cannot read license file" in missing.errors[0].message


def test_the_recorder_written_as_the_model_prints_it_is_version_13() -> None:
    """The model prints App(innovaphone-recorder) without a version: read as V13."""
    result = parse_text('[[license]]\ntype = "App(innovaphone-recorder)"\ncount = 2')
    assert result.ok, result.errors
    assert [(lic.family, lic.version) for lic in result.licenses] == [("App(innovaphone-recorder)", 13)]
    other = parse_text('[[license]]\ntype = "App(phone)"\ncount = 2')  # any other still needs its version
    assert rules_of(other) == ["R-HW-2"]
