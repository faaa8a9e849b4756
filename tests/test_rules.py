"""Pure rule functions."""

from licmaster.model import rules


def test_version_runs_same_or_older_software_R_VER_1() -> None:
    """Enforces R-VER-1."""
    assert rules.version_runs(13, 11) and rules.version_runs(13, 13)
    assert not rules.version_runs(12, 13)


def test_capping_versions_names_what_is_below_the_firmware_R_VER_2() -> None:
    """Enforces R-VER-2."""
    assert rules.capping_versions({11: 100, 13: 100}, 13) == [(11, 100)]
    assert rules.capping_versions({11: 100, 13: 100}, 11) == []


def test_conference_of_three_is_the_phones_own_R_CHAN_2() -> None:
    """Enforces R-CHAN-2."""
    assert [rules.conference_channels(n) for n in (2, 3, 4, 10)] == [0, 0, 4, 10]


def test_isdn_needs_by_model_R_HW_3_R_HW_4() -> None:
    """Enforces R-HW-3, R-HW-4."""
    assert rules.isdn_licenses("IP411", "bri", 2) == []
    assert rules.isdn_licenses("IP811", "bri", 2) == [("Relay-BRIs", 1), ("Relay-Channels", 2)]
    assert rules.isdn_licenses("IP6010", "pri", 30) == [("Relay-PRIs", 1), ("Relay-Channels", 30)]


def test_uc_expands_and_prerequisites_see_it_R_UC_1_R_USER_2() -> None:
    """Enforces R-UC-1, R-USER-2."""
    assert "App(phone)" in rules.effective_user_families(["PBX-UC"])
    assert "App(chat)" not in rules.effective_user_families(["PBX-UC"])
    assert rules.missing_prerequisites(["PBX-UC", "App(softphone)"]) == []
    assert rules.missing_prerequisites(["App(softphone)"]) == [("App(softphone)", ("App(phone)",), "R-USER-2")]


def test_standby_shortfall_R_STBY_2() -> None:
    """Enforces R-STBY-2."""
    assert rules.standby_shortfall(10, 10) == 0
    assert rules.standby_shortfall(9, 10) == 1


def test_mac_normalization() -> None:
    assert rules.normalize_mac("00-90-33-AB-CD-EF") == "00:90:33:ab:cd:ef"
    assert rules.normalize_mac("00:90:33") is None
