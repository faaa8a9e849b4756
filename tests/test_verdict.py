"""The installation verdict of `licmaster check`."""

from licmaster.licenses.files import parse_text
from licmaster.licenses.verdict import render_text, verdict


def v(text: str, firmware: int = 13):
    return verdict(parse_text(text), firmware)


def test_capped_family_says_by_which_licenses_R_VER_2() -> None:
    """Enforces R-VER-2."""
    result = v('[[license]]\ntype = "PBX-Port11"\ncount = 100\n[[license]]\ntype = "PBX-Port13"\ncount = 100')
    port = result.families[0]
    assert (port.installed, port.usable, port.rule) == (200, 0, "R-VER-2")
    assert port.why_not == "capped at V11 by 100 × PBX-Port11"
    v11 = v('[[license]]\ntype = "PBX-Port11"\ncount = 100\n[[license]]\ntype = "PBX-Port13"\ncount = 100', firmware=11)
    assert v11.families[0].usable == 200


def test_standby_availability_R_STBY_2_R_STBY_3() -> None:
    """Enforces R-STBY-2, R-STBY-3."""
    assert v('[[license]]\ntype = "PBX-Port13"\ncount = 10\n[[license]]\ntype = "PBX-Standby13"\ncount = 10').standby_available
    short = v('[[license]]\ntype = "PBX-Port13"\ncount = 10\n[[license]]\ntype = "PBX-Standby13"\ncount = 5')
    assert not short.standby_available and "R-STBY-2" in short.standby_reason
    smb = v('[[license]]\ntype = "Port13$20"\ncount = 1\n[[license]]\ntype = "PBX-Standby13"\ncount = 20')
    assert not smb.standby_available and "R-STBY-3" in smb.standby_reason
    assert {w.rule for w in smb.warnings} == {"R-STBY-3", "R-SMB-3"}


def test_voicemail_and_queue_monitor_on_old_firmware_R_VER_3_R_VER_4() -> None:
    """Enforces R-VER-3, R-VER-4."""
    result = v('[[license]]\ntype = "PBX-VoicemailUser13"\ncount = 3\n[[license]]\ntype = "PBX-QueueMonitor13"\ncount = 1', firmware=8)
    rules = {f.family: f.rule for f in result.families}
    assert rules == {"PBX-VoicemailUser": "R-VER-3", "PBX-QueueMonitor": "R-VER-4"}


def test_errors_make_the_verdict_fail_and_render() -> None:
    result = v('[[license]]\ntype = "Port13$20"\ncount = 2')
    assert not result.ok
    assert result.to_dict()["errors"][0]["rule"] == "R-SMB-2"
    assert "1 error(s)" in render_text(result)
