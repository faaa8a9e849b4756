"""The installation verdict of `licmaster check`."""

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from licmaster.licenses.files import parse_text
from licmaster.licenses.verdict import RESOURCE_OF, render_text, verdict
from licmaster.model.errors import Denial
from licmaster.model.pool import Pool
from licmaster.model.types import Node

from .conftest import TODAY


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
    result = v('[[license]]\ntype = "Port13$20"\ncount = 21')
    assert not result.ok
    assert result.to_dict()["errors"][0]["rule"] == "R-SMB-2"
    assert "1 error(s)" in render_text(result)


def test_nothing_usable_is_a_warning_and_not_ok_R_VER_2() -> None:
    """Enforces R-VER-2: 100 V11 + 100 V13 Ports on V13: 0 usable, said in the warnings."""
    result = v('[[license]]\ntype = "PBX-Port11"\ncount = 100\n[[license]]\ntype = "PBX-Port13"\ncount = 100')
    assert result.ok and not result.clean  # exit status 0, but not "OK"
    assert [(w.rule, w.message) for w in result.warnings] == [
        ("R-VER-2", "PBX-Port: 0 of 200 usable on V13: capped at V11 by 100 × PBX-Port11")]
    assert render_text(result).endswith("0 error(s), 1 warning(s)")
    assert render_text(v('[[license]]\ntype = "PBX-Port13"\ncount = 100')).endswith("OK")


def test_too_few_standby_licenses_is_a_warning_R_STBY_2() -> None:
    """Enforces R-STBY-2."""
    short = v('[[license]]\ntype = "PBX-Port13"\ncount = 10\n[[license]]\ntype = "PBX-Standby13"\ncount = 5')
    assert [w.rule for w in short.warnings] == ["R-STBY-2"] and "5 usable Standby for 10 Port" in short.warnings[0].message


def test_an_ipva_of_two_license_versions_is_promised_what_it_gets_R_IPVA_2() -> None:
    """Enforces R-IPVA-2: `check --firmware 12 --platform ipva --mac M` and the pool agree on 4."""
    text = ('[[license]]\ntype = "PBX-Port12"\ncount = 10\n[[license]]\ntype = "PBX-IPVA12"\ncount = 2\nbind = "00:90:33:00:00:0a"\n'
            '[[license]]\ntype = "PBX-IPVA13"\ncount = 2\nbind = "00:90:33:00:00:0a"\n')
    result = verdict(parse_text(text), 12, platform="ipva", mac="00:90:33:00:00:0a")
    assert result.resources["port"] == 4
    assert {f.family: f.usable for f in result.families} == {"PBX-Port": 4, "PBX-IPVA": 4}
    on_a_gateway = verdict(parse_text(text), 12)
    assert {f.family: f.usable for f in on_a_gateway.families} == {"PBX-Port": 10, "PBX-IPVA": 4}


def test_twenty_smb_ports_of_the_20_variant_check_clean_R_SMB_2() -> None:
    """Enforces R-SMB-2."""
    result = v('[[license]]\ntype = "Port13$20"\ncount = 20')
    assert result.ok and result.resources["port"] == 20
    assert [w.rule for w in result.warnings] == ["R-SMB-3"]  # what an SMB installation is, said once


# ---------------------------------------------------------------- check and the master never disagree

MACS = ["00:90:33:00:00:0a", "00:90:33:00:00:0b"]
ENTRY = st.one_of(
    st.tuples(st.sampled_from(["PBX-Port11", "PBX-Port12", "PBX-Port13", "PBX-Channels12", "PBX-Channels13",
                               "PBX-Operator12", "PBX-Operator13", "PBX-QueueMonitor12", "PBX-QueueMonitor13",
                               "PBX-Standby13", "Port13$20"]), st.integers(1, 4), st.none()),
    st.tuples(st.sampled_from(["PBX-IPVA12", "PBX-IPVA13", "Relay-Channels"]), st.integers(1, 4), st.sampled_from(MACS)),
)


def license_text(entries: list[tuple[str, int, str | None]]) -> str:
    return "".join(f'[[license]]\ntype = "{t}"\ncount = {n}\n' + (f'bind = "{mac}"\n' if mac else "") for t, n, mac in entries)


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(ENTRY, max_size=6), firmware=st.integers(8, 14), platform=st.sampled_from(["gateway", "ipva"]),
       mac=st.sampled_from([None, *MACS]), model=st.sampled_from([None, "IP411", "IP811"]))
def test_what_check_promises_a_pbx_is_what_the_pool_grants_it(entries: list, firmware: int, platform: str,
                                                               mac: str | None, model: str | None) -> None:
    loaded = parse_text(license_text(entries))
    promised = verdict(loaded, firmware, TODAY, platform=platform, mac=mac, model=model)
    for resource in promised.resources:
        pool = Pool(loaded.licenses, today=TODAY)
        pool.set_node(Node("pbx", firmware=firmware, platform=platform, mac=mac, model=model))
        grants = 0
        while grants <= 100 and not isinstance(pool.checkout("pbx", resource, f"h{grants}"), Denial):
            grants += 1
        assert grants == promised.resources[resource], (resource, promised.resources)
        family_rows = {f.family: f.usable for f in promised.families}
        drawn = {"port": "Port" if pool.smb_installation else "PBX-Port"}.get(resource)
        for family in ("PBX-Port", "Port", "PBX-Operator", "PBX-QueueMonitor"):
            if resource == RESOURCE_OF.get(family) and family in family_rows and drawn in (None, family):
                assert family_rows[family] == grants, (family, family_rows)  # the row of the family drawn from


SSA_SOON = ('[[license]]\ntype = "PBX-Port12"\ncount = 100\nssa_until = 2026-12-20\n'
            '[[license]]\ntype = "App(phone)13"\ncount = 10\nrented = true\n')


def test_an_ssa_that_ends_within_the_warning_days_and_lowers_a_version_is_a_warning_saying_what_goes() -> None:
    v = verdict(parse_text(SSA_SOON), 13, dt.date(2026, 12, 3))
    [ending] = [w for w in v.warnings if w.rule == "R-SSA-1"]
    assert "ends on 2026-12-20 (17 days)" in ending.message and "PBX-Port 100 -> 0" in ending.message
    assert not v.clean
    assert [t.describe() for t in v.terms] == ["100 × PBX-Port V12: SSA ends 2026-12-20 (17 days)",
                                              "10 × App(phone) V13: rented (iSC)"]
    assert v.to_dict()["terms"][0] == {"family": "PBX-Port", "version": 12, "count": 100, "ssa_until": "2026-12-20",
                                       "days_left": 17, "rented": False, "lowers_version": True}


def test_an_ssa_further_off_than_the_warning_days_is_shown_not_warned_of() -> None:
    v = verdict(parse_text(SSA_SOON), 13, dt.date(2026, 12, 3), warn_days=10)
    assert not [w for w in v.warnings if w.rule == "R-SSA-1"] and len(v.terms) == 2
    assert "Terms:" in render_text(v) and "rented (iSC)" in render_text(v)


def test_an_ssa_of_the_current_version_lowers_nothing_and_is_no_warning() -> None:
    text = '[[license]]\ntype = "PBX-Port13"\ncount = 5\nssa_until = 2026-12-10\n'
    v = verdict(parse_text(text), 13, dt.date(2026, 12, 3))
    assert v.clean and v.terms[0].days_left == 7 and not v.terms[0].lowers_version
