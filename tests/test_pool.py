"""The pool enforces the rules of docs/rules.md; each test names the rule it shows."""

from typing import NamedTuple

from licmaster.licenses.files import parse_text
from licmaster.model.catalog import LicenseType
from licmaster.model.errors import Denial
from licmaster.model.inventory import ReloadReport
from licmaster.model.leases import Lease
from licmaster.model.pool import Pool
from licmaster.model.types import InstalledLicense, Node, SyncEntry

from .conftest import MAC_A, MAC_B, licenses, pool_of


class Granted(NamedTuple):
    lease: Lease
    new: bool  # False: an identical checkout returned the lease it already had


def granted(outcome) -> Granted:
    assert outcome.__class__ is tuple, outcome  # a checkout grants (lease, new)
    return Granted(*outcome)


def denied(outcome, code: str, rule: str | None = None) -> Denial:
    assert isinstance(outcome, Denial), outcome
    assert outcome.code == code, outcome
    if rule:
        assert outcome.rule == rule, outcome
    return outcome


def in_use(pool: Pool, family: str) -> int:
    return sum(b.in_use for b in pool.buckets() if b.family == family)


# ---------------------------------------------------------------- Port


def test_one_port_per_object_and_idempotent_retries_R_PORT_1(office: Pool) -> None:
    """Enforces R-PORT-1."""
    first = granted(office.checkout("pbx1", "port", "alice"))
    again = granted(office.checkout("pbx1", "port", "alice"))
    assert again.lease is first.lease and not again.new
    assert first.lease.took_wire() == [{"family": "PBX-Port", "version": 13, "count": 1}]
    assert in_use(office, "PBX-Port") == 1


def test_port_is_floating_taken_and_released_R_PORT_3(office: Pool) -> None:
    """Enforces R-PORT-3."""
    leases = [granted(office.checkout("pbx1", "port", f"u{i}")).lease for i in range(10)]
    denied(office.checkout("pbx1", "port", "u10"), "exhausted", "R-PORT-1")
    office.checkin("pbx1", leases[0].id)
    granted(office.checkout("pbx2", "port", "u10"))  # R-HW-2: software licenses serve any device


def test_exhausted_says_which_family_and_how_many_are_free(office: Pool) -> None:
    for i in range(10):
        office.checkout("pbx1", "port", f"u{i}")
    d = denied(office.checkout("pbx1", "port", "late"), "exhausted")
    assert d.details == {"family": "PBX-Port", "free": 0, "needed": 1}
    assert "0 free of 10 installed" in d.message


def test_checkin_of_unknown_or_foreign_lease_changes_nothing(office: Pool) -> None:
    lease = granted(office.checkout("pbx1", "port", "alice")).lease
    assert office.checkin("pbx2", lease.id) is None  # another node's lease: no harm done
    assert office.checkin("pbx1", "no-such-lease") is None
    assert office.checkin("pbx1", lease.id) is lease
    assert office.checkin("pbx1", lease.id) is None
    assert in_use(office, "PBX-Port") == 0


# ---------------------------------------------------------------- central / decentral


def test_central_pbxs_draw_from_the_master_R_MODE_1(office: Pool) -> None:
    """Enforces R-MODE-1."""
    granted(office.checkout("pbx1", "port", "a"))
    granted(office.checkout("pbx2", "port", "b"))
    assert in_use(office, "PBX-Port") == 2


def test_a_decentral_pbx_is_refused_whatever_it_asks_R_MODE_2(office: Pool) -> None:
    """Enforces R-MODE-2."""
    office.set_node(Node("branch", licensing="decentral"))
    for resource in ("port", "conference", "operator"):
        d = denied(office.checkout("branch", resource, "x"), "decentral", "R-MODE-2")
    assert "locally" in d.message
    denied(office.assign("branch", "bob", ["PBX-UC"]), "decentral", "R-MODE-2")


def test_a_decentral_pbx_does_not_fall_back_on_the_master_when_short_R_MODE_3(office: Pool) -> None:
    """Enforces R-MODE-3."""
    office.set_node(Node("branch", licensing="decentral"))
    assert sum(b.free for b in office.buckets() if b.family == "PBX-Port") == 10  # plenty on the master
    denied(office.checkout("branch", "port", "overflow"), "decentral", "R-MODE-2")


# ---------------------------------------------------------------- versions


def test_a_license_runs_its_version_and_older_only_R_VER_1() -> None:
    """Enforces R-VER-1."""
    pool = pool_of(("PBX-Port12", 5), nodes=(Node("v11", firmware=11), Node("v13", firmware=13)))
    granted(pool.checkout("v11", "port", "a"))
    d = denied(pool.checkout("v13", "port", "b"), "version", "R-VER-2")
    assert "5 × PBX-Port12" in d.message


def test_the_lowest_version_decides_for_the_installation_R_VER_2() -> None:
    """Enforces R-VER-2."""
    # The seed's example: 100 V11 + 100 V13 run a V11 installation with 200 ports ...
    pool = pool_of(("PBX-Port11", 100), ("PBX-Port13", 100), nodes=(Node("v11", firmware=11), Node("v13", firmware=13)))
    for i in range(200):
        granted(pool.checkout("v11", "port", f"u{i}"))
    denied(pool.checkout("v11", "port", "u200"), "exhausted")
    # ... after the upgrade to V13 nothing runs while the V11 licenses are installed ...
    d = denied(pool.checkout("v13", "port", "x"), "version", "R-VER-2")
    assert "capped at V11 by 100 × PBX-Port11" in d.message
    pool.release_node("v11")
    # ... and once they are removed, the 100 V13 licenses run.
    pool.install(licenses(("PBX-Port13", 100)))
    for i in range(100):
        granted(pool.checkout("v13", "port", f"u{i}"))
    denied(pool.checkout("v13", "port", "u100"), "exhausted")


def test_v13_voicemail_does_not_run_on_v9_or_older_R_VER_3() -> None:
    """Enforces R-VER-3."""
    pool = pool_of(("PBX-VoicemailUser13", 5), nodes=(Node("old", firmware=9), Node("v10", firmware=10)))
    denied(pool.assign("old", "ann", ["PBX-VoicemailUser"]), "version", "R-VER-3")
    assert pool.assign("v10", "ann", ["PBX-VoicemailUser"]).took == [{"family": "PBX-VoicemailUser", "version": 13, "count": 1}]


def test_queue_monitor_needs_v9_or_newer_R_VER_4_one_per_queue_R_QM_1() -> None:
    """Enforces R-VER-4, R-QM-1."""
    pool = pool_of(("PBX-QueueMonitor13", 1), nodes=(Node("v8", firmware=8), Node("v13")))
    denied(pool.checkout("v8", "queue-monitor", "sales"), "version", "R-VER-4")
    granted(pool.checkout("v13", "queue-monitor", "sales"))
    denied(pool.checkout("v13", "queue-monitor", "support"), "exhausted", "R-QM-1")


# ---------------------------------------------------------------- IPVA and hardware


def test_a_port_on_an_ipva_takes_an_ipva_license_too_both_or_neither_R_IPVA_1() -> None:
    """Enforces R-IPVA-1."""
    pool = pool_of(("PBX-Port13", 3), ("PBX-IPVA13", 1, MAC_A), nodes=(Node("vm", platform="ipva", mac=MAC_A),))
    lease = granted(pool.checkout("vm", "port", "alice")).lease
    assert sorted(t["family"] for t in lease.took_wire()) == ["PBX-IPVA", "PBX-Port"]
    denied(pool.checkout("vm", "port", "bob"), "exhausted", "R-IPVA-1")
    assert in_use(pool, "PBX-Port") == 1  # all or nothing: the Port was not taken alone
    pool.checkin("vm", lease.id)
    assert in_use(pool, "PBX-IPVA") == 0 and in_use(pool, "PBX-Port") == 0


def test_ipva_licenses_serve_only_the_ipva_they_are_bound_to_R_IPVA_2() -> None:
    """Enforces R-IPVA-2."""
    pool = pool_of(("PBX-Port13", 3), ("PBX-IPVA13", 3, MAC_A), nodes=(Node("other", platform="ipva", mac=MAC_B),))
    d = denied(pool.checkout("other", "port", "alice"), "bound_elsewhere", "R-IPVA-2")
    assert MAC_A in d.message


def test_hardware_licenses_are_bound_and_can_never_be_removed_R_HW_1() -> None:
    """Enforces R-HW-1."""
    pool = pool_of(("Relay-Channels", 30, MAC_A), ("PBX-Port13", 1))
    lic = InstalledLicense(LicenseType("Relay-Channels", None), 30, MAC_A)
    denied(pool.remove_license(lic), "bad_request", "R-HW-1")
    report = pool.install(licenses(("PBX-Port13", 1)))  # a reload that forgot them
    assert [p.rule for p in report.problems] == ["R-HW-1"]
    assert sum(b.installed for b in pool.buckets() if b.family == "Relay-Channels") == 30
    removed = pool.remove_license(InstalledLicense(LicenseType("PBX-Port", 13), 1))  # software: it can go
    assert isinstance(removed, ReloadReport) and removed.problems == []
    assert sum(b.installed for b in pool.buckets() if b.family == "PBX-Port") == 0


def test_software_licenses_move_between_devices_R_HW_2() -> None:
    """Enforces R-HW-2."""
    pool = pool_of(("PBX-Port13", 1), nodes=(Node("a", mac=MAC_A), Node("b", mac=MAC_B)))
    lease = granted(pool.checkout("a", "port", "x")).lease
    pool.checkin("a", lease.id)
    granted(pool.checkout("b", "port", "x"))


def test_isdn_takes_interface_and_channel_licenses_bound_to_the_gateway_R_HW_3() -> None:
    """Enforces R-HW-3."""
    pool = pool_of(("Relay-PRIs", 1, MAC_A), ("Relay-Channels", 30, MAC_A), ("Relay-BRIs", 2, MAC_B),
                   ("Relay-Channels", 4, MAC_B),
                   nodes=(Node("gw", mac=MAC_A, model="IP1130"), Node("ip811", mac=MAC_B, model="IP811"),
                          Node("ip305", mac=MAC_B, model="IP305")))
    pri = granted(pool.checkout("gw", "isdn", "t2-1", count=30, interface="pri")).lease
    assert sorted((t["family"], t["count"]) for t in pri.took_wire()) == [("Relay-Channels", 30), ("Relay-PRIs", 1)]
    denied(pool.checkout("gw", "isdn", "t2-1b", count=31, interface="pri"), "bad_request", "R-HW-3")
    bri = granted(pool.checkout("ip811", "isdn", "t0-1", count=2, interface="bri")).lease
    assert sorted((t["family"], t["count"]) for t in bri.took_wire()) == [("Relay-BRIs", 1), ("Relay-Channels", 2)]
    denied(pool.checkout("ip811", "isdn", "t0-1b", count=3, interface="bri"), "bad_request", "R-HW-3")
    # Only the IP811 needs BRI licenses; other gateways still need their B-channels.
    other = granted(pool.checkout("ip305", "isdn", "t0-2", count=2, interface="bri")).lease
    assert other.took_wire() == [{"family": "Relay-Channels", "version": None, "count": 2}]


def test_ip311_ip411_ip511_need_no_hardware_license_R_HW_4() -> None:
    """Enforces R-HW-4."""
    pool = pool_of(("PBX-Port13", 1), nodes=(Node("small", model="IP411", mac=MAC_A),))
    lease = granted(pool.checkout("small", "isdn", "t0", count=2, interface="bri")).lease
    assert lease.took == ()


# ---------------------------------------------------------------- standby


def test_standby_licenses_live_on_the_master_and_count_for_any_standby_R_STBY_1() -> None:
    """Enforces R-STBY-1."""
    pool = pool_of(("PBX-Port13", 4), ("PBX-Standby13", 4),
                   nodes=(Node("slave"), Node("slave-stby", role="standby", standby_for="slave")))
    granted(pool.checkout("slave", "port", "a"))
    moved = pool.takeover("slave-stby", "slave")
    assert isinstance(moved, list) and [lease.holder for lease in moved] == ["a"]
    assert in_use(pool, "PBX-Standby") == 0  # a count rule: never drawn


def test_takeover_moves_every_lease_at_once_nothing_counted_twice_R_STBY_2() -> None:
    """Enforces R-STBY-2."""
    pool = pool_of(("PBX-Port13", 4), ("PBX-Standby13", 4),
                   nodes=(Node("slave"), Node("stby", role="standby", standby_for="slave")))
    for holder in ("a", "b", "c"):
        granted(pool.checkout("slave", "port", holder))
    granted(pool.checkout("stby", "port", "a"))  # the standby already re-registered "a"
    moved = pool.takeover("stby", "slave")
    assert sorted(lease.holder for lease in moved) == ["b", "c"]
    assert in_use(pool, "PBX-Port") == 3
    assert pool.node_leases("slave") == []


def test_takeover_refused_when_standby_fewer_than_ports_R_STBY_2() -> None:
    """Enforces R-STBY-2."""
    pool = pool_of(("PBX-Port13", 10), ("PBX-Standby13", 9),
                   nodes=(Node("slave"), Node("stby", role="standby", standby_for="slave")))
    granted(pool.checkout("slave", "port", "a"))
    d = denied(pool.takeover("stby", "slave"), "standby_unlicensed", "R-STBY-2")
    assert "9 usable Standby" in d.message and "10 Port" in d.message
    assert [lease.holder for lease in pool.node_leases("slave")] == ["a"]  # nothing moved


def test_standby_licenses_below_the_firmware_do_not_count_R_STBY_2() -> None:
    """Enforces R-STBY-2."""
    pool = pool_of(("PBX-Port13", 5), ("PBX-Standby12", 5),
                   nodes=(Node("slave"), Node("stby", role="standby", standby_for="slave", firmware=13)))
    d = denied(pool.takeover("stby", "slave"), "standby_unlicensed", "R-STBY-2")
    assert "PBX-Standby12" in d.message


def test_takeover_only_by_the_named_standby() -> None:
    pool = pool_of(("PBX-Port13", 5), ("PBX-Standby13", 5),
                   nodes=(Node("slave"), Node("stby", role="standby", standby_for="other"), Node("pbx")))
    denied(pool.takeover("stby", "slave"), "bad_request")
    denied(pool.takeover("pbx", "slave"), "bad_request")


def test_standby_does_not_work_with_smb_port_R_STBY_3() -> None:
    """Enforces R-STBY-3."""
    pool = pool_of(("Port13$20", 1), nodes=(Node("office"), Node("stby", role="standby", standby_for="office")))
    denied(pool.takeover("stby", "office"), "standby_unlicensed", "R-STBY-3")


# ---------------------------------------------------------------- SMB


def test_each_smb_port_license_is_one_port_R_SMB_2() -> None:
    """Enforces R-SMB-2: one Port per SMB-Port license, the variant being only a ceiling."""
    pool = pool_of(("Port13$20", 12), nodes=(Node("office"),))
    for i in range(12):
        lease = granted(pool.checkout("office", "port", f"u{i}")).lease
    assert lease.took_wire() == [{"family": "Port", "version": 13, "count": 1}]
    denied(pool.checkout("office", "port", "u12"), "exhausted", "R-SMB-2")
    one = pool_of(("Port13$50", 1), nodes=(Node("office"),))
    granted(one.checkout("office", "port", "a"))
    denied(one.checkout("office", "port", "b"), "exhausted", "R-SMB-2")  # one license, one Port: not 50


def test_smb_port_serves_only_the_pbx_that_holds_it_R_SMB_3() -> None:
    """Enforces R-SMB-3."""
    pool = pool_of(("Port13$20", 1), nodes=(Node("office"), Node("slave")))
    lease = granted(pool.checkout("office", "port", "a")).lease
    denied(pool.checkout("slave", "port", "b"), "smb", "R-SMB-3")
    pool.checkin("office", lease.id)
    granted(pool.checkout("slave", "port", "b"))


def test_smb_converted_by_its_upgrade_acts_as_standard_ports_R_SMB_1() -> None:
    """Enforces R-SMB-1."""
    pool = pool_of(("Port13$20", 20), ("Port13$$", 1), ("PBX-Port13", 5), nodes=(Node("a"), Node("b")))
    assert not pool.smb_installation
    granted(pool.checkout("a", "port", "x"))
    granted(pool.checkout("b", "port", "y"))
    assert sum(b.installed for b in pool.buckets() if b.family == "PBX-Port") == 25  # 20 converted, one Port each


# ---------------------------------------------------------------- conference channels


def test_channels_float_one_per_conference_channel_R_CHAN_1(office: Pool) -> None:
    """Enforces R-CHAN-1."""
    lease = granted(office.checkout("pbx1", "conference", "room1", count=4)).lease
    denied(office.checkout("pbx2", "conference", "room2", count=1), "exhausted", "R-CHAN-1")
    office.checkin("pbx1", lease.id)
    granted(office.checkout("pbx2", "conference", "room2", count=4))


def test_conference_channels_of_a_bridge_device_come_first_R_CHAN_3() -> None:
    """Enforces R-CHAN-3."""
    pool = pool_of(("Relay-Channels", 2, MAC_A), ("PBX-Channels13", 4), nodes=(Node("bridge", mac=MAC_A), Node("other", mac=MAC_B)))
    lease = granted(pool.checkout("bridge", "conference", "room", count=5)).lease
    assert [(t["family"], t["count"]) for t in lease.took_wire()] == [("Relay-Channels", 2), ("PBX-Channels", 3)]
    # another device cannot use the bridge's own channels
    denied(pool.checkout("other", "conference", "room2", count=2), "exhausted")


# ---------------------------------------------------------------- operators


def test_operator_floats_more_desks_than_licenses_R_OP_1(office: Pool) -> None:
    """Enforces R-OP-1."""
    first = granted(office.checkout("pbx1", "operator", "desk1")).lease
    denied(office.checkout("pbx1", "operator", "desk2"), "exhausted", "R-OP-1")
    office.checkin("pbx1", first.id)
    granted(office.checkout("pbx1", "operator", "desk2"))


# ---------------------------------------------------------------- user licenses


def test_user_licenses_are_configured_not_floating_R_USER_1() -> None:
    """Enforces R-USER-1."""
    pool = pool_of(("App(phone)13", 2), nodes=(Node("pbx"),))
    assert pool.assign("pbx", "ann", ["App(phone)"]).took == [{"family": "App(phone)", "version": 13, "count": 1}]
    pool.release_node("pbx")  # a disconnect does not free user licenses
    assert in_use(pool, "App(phone)") == 1
    denied(pool.assign("pbx", "x", ["PBX-Port"]), "bad_request")
    denied(pool.assign("pbx", "x", ["PBX-Nope"]), "unknown_license")


def test_softphone_video_appsharing_need_the_phone_app_R_USER_2() -> None:
    """Enforces R-USER-2."""
    pool = pool_of(("App(phone)13", 1), ("App(softphone)13", 1), ("PBX-Video13", 1), nodes=(Node("pbx"),))
    for family in ("App(softphone)", "PBX-Video", "PBX-AppSharing"):
        d = denied(pool.assign("pbx", "ann", [family]), "prerequisite", "R-USER-2")
        assert d.details["missing"] == ["App(phone)"]
    assert not isinstance(pool.assign("pbx", "ann", ["App(phone)", "App(softphone)"]), Denial)
    d = denied(pool.unassign("pbx", "ann", ["App(phone)"]), "prerequisite", "R-USER-2")
    assert "would lose" in d.message


def test_uc_holds_its_modules_for_one_user_R_UC_1() -> None:
    """Enforces R-UC-1."""
    pool = pool_of(("PBX-UC13", 1), nodes=(Node("pbx"),))
    result = pool.assign("pbx", "ann", ["PBX-UC", "App(softphone)", "PBX-Video", "App(rcc)"])
    assert not isinstance(result, Denial)
    assert result.took == [{"family": "PBX-UC", "version": 13, "count": 1}]  # modules take nothing more
    denied(pool.assign("pbx", "bob", ["PBX-UC"]), "exhausted")  # one UC, one user: no splitting
    denied(pool.assign("pbx", "bob", ["App(softphone)"]), "prerequisite")  # ann's UC does not help bob
    denied(pool.assign("pbx", "carl", ["App(chat)"]), "exhausted")  # UC does not include Premium Chat


def test_free_apps_need_their_feature_licenses_R_APP_1() -> None:
    """Enforces R-APP-1."""
    pool = pool_of(("PBX-Mobility13", 1), ("App(phone)13", 1), ("PBX-VoicemailUser13", 1), nodes=(Node("pbx"),))
    d = denied(pool.assign("pbx", "ann", ["App(rcc)", "PBX-Mobility"]), "prerequisite", "R-APP-1")
    assert d.details["missing"] == ["App(phone)"]
    ok = pool.assign("pbx", "ann", ["App(rcc)", "PBX-Mobility", "App(phone)"])
    assert not isinstance(ok, Denial) and len(ok.took) == 2
    for app, feature in (("App(voicemail)", "PBX-VoicemailUser"), ("App(fax)", "Fax"),
                         ("App(recordings)", "App(innovaphone-recorder)"), ("App(reports)", "PBX-Reporting")):
        assert denied(pool.assign("pbx", "bob", [app]), "prerequisite", "R-APP-1").details["missing"] == [feature]


def test_conference_app_without_channels_is_granted_with_a_warning_R_APP_2() -> None:
    """Enforces R-APP-2."""
    pool = pool_of(("App(innovaphone-pbx-conference)13", 1), nodes=(Node("pbx"),))
    result = pool.assign("pbx", "ann", ["App(innovaphone-pbx-conference)"])
    assert not isinstance(result, Denial) and [w.rule for w in result.warnings] == ["R-APP-2"]


def test_recording_queues_needs_a_user_with_the_recorder_R_REC_1() -> None:
    """Enforces R-REC-1."""
    pool = pool_of(("App(innovaphone-recorder)13", 1), nodes=(Node("pbx"),))
    denied(pool.recording_allowed(), "prerequisite", "R-REC-1")
    pool.assign("pbx", "ann", ["App(innovaphone-recorder)"])
    assert pool.recording_allowed() is None


def test_switchboard_licenses_from_operators_updated_under_ssa_R_OP_2() -> None:
    """Enforces R-OP-2 (reading in docs/model.md): an Operator updated to V13 under its SSA brings
    3 Switchboard App licenses, which stay when the SSA ends; a newly bought V13 Operator, not
    updated, brings none."""
    import datetime as dt

    from licmaster.licenses.files import parse_text
    updated = parse_text('[[license]]\ntype = "PBX-Operator12"\ncount = 1\nssa_until = 2027-01-01').licenses
    for today in (dt.date(2026, 1, 1), dt.date(2028, 1, 1)):  # during the SSA, and after it ended
        pool = Pool(updated, today=today)
        for user in ("a", "b", "c"):
            assert not isinstance(pool.assign("x", user, ["App(innovaphone-switchboard)"]), Denial)
        denied(pool.assign("x", "d", ["App(innovaphone-switchboard)"]), "exhausted")
    bought = parse_text('[[license]]\ntype = "PBX-Operator13"\ncount = 1\nssa_until = 2030-01-01').licenses
    denied(Pool(bought, today=dt.date(2026, 1, 1)).assign("x", "a", ["App(innovaphone-switchboard)"]), "exhausted")


def test_ssa_lets_an_old_license_run_new_software_R_SSA_1() -> None:
    """Enforces R-SSA-1."""
    import datetime as dt

    from licmaster.licenses.files import parse_text
    loaded = parse_text('[[license]]\ntype = "PBX-Port11"\ncount = 1\nssa_until = 2027-01-01')
    running = Pool(loaded.licenses, today=dt.date(2026, 12, 1))
    expired = Pool(loaded.licenses, today=dt.date(2027, 2, 1))
    for pool in (running, expired):
        pool.set_node(Node("v13"))
    granted(running.checkout("v13", "port", "a"))
    denied(expired.checkout("v13", "port", "a"), "version", "R-VER-2")


def test_rented_software_licenses_serve_like_bought_ones_R_RENT_1() -> None:
    """Enforces R-RENT-1."""
    from licmaster.licenses.files import parse_text
    loaded = parse_text('[[license]]\ntype = "PBX-Channels13"\ncount = 2\nrented = true')
    pool = Pool(loaded.licenses)
    granted(pool.checkout("x", "conference", "room", count=2))


# ---------------------------------------------------------------- sync, release, reload


def test_sync_makes_the_nodes_leases_exactly_the_listed_set(office: Pool) -> None:
    keep = granted(office.checkout("pbx1", "port", "keep")).lease
    granted(office.checkout("pbx1", "port", "drop"))
    result = office.sync("pbx1", [SyncEntry("port", "keep"), SyncEntry("port", "new"),
                                  SyncEntry("conference", "room", count=9)])
    assert [lease.holder for lease in result.released] == ["drop"]
    assert [lease.holder for lease in result.granted] == ["keep", "new"]
    assert result.granted[0] is keep  # kept, not re-taken
    assert [(i, d.code) for i, _, d in result.denied] == [(2, "exhausted")]
    assert sorted(lease.holder for lease in office.node_leases("pbx1")) == ["keep", "new"]


def test_release_node_frees_every_floating_lease(office: Pool) -> None:
    for i in range(5):
        office.checkout("pbx1", "port", f"u{i}")
    office.checkout("pbx1", "conference", "room", count=3)
    assert len(office.release_node("pbx1")) == 6
    assert all(b.in_use == 0 for b in office.buckets())


def test_reload_never_revokes_a_lease_silently(office: Pool) -> None:
    for i in range(8):
        office.checkout("pbx1", "port", f"u{i}")
    report = office.install(licenses(("PBX-Port13", 5)))
    assert report.overcommitted == [{"family": "PBX-Port", "version": 13, "bound": None, "installed": 5, "in_use": 8, "over": 3}]
    assert len(office.node_leases("pbx1")) == 8
    denied(office.checkout("pbx1", "port", "late"), "exhausted")


def test_unknown_resource_and_bad_count_are_named(office: Pool) -> None:
    assert "expected one of" in denied(office.checkout("pbx1", "fax-machine", "x"), "unknown_resource").message
    assert denied(office.checkout("pbx1", "conference", "x", count=0), "bad_request").details == {"field": "count"}
    assert denied(office.checkout("pbx1", "isdn", "x", interface="t1"), "bad_request").details == {"field": "interface"}


def test_an_observer_cannot_check_out(office: Pool) -> None:
    office.set_node(Node("monitor", role="observer"))
    denied(office.checkout("monitor", "port", "x"), "bad_request")


def test_hello_with_new_attributes_recomputes_the_plan() -> None:
    pool = pool_of(("PBX-Port13", 1), ("PBX-IPVA13", 1, MAC_A), nodes=(Node("vm", platform="gateway"),))
    lease = granted(pool.checkout("vm", "port", "a")).lease
    assert len(lease.took) == 1
    pool.checkin("vm", lease.id)
    pool.set_node(Node("vm", platform="ipva", mac=MAC_A))
    assert len(granted(pool.checkout("vm", "port", "a")).lease.took) == 2


def test_a_node_that_comes_back_upgraded_resyncs_under_the_new_rules_R_VER_2() -> None:
    """Enforces R-VER-2."""
    pool = pool_of(("PBX-Port11", 2), ("PBX-Port13", 2), nodes=(Node("pbx", firmware=11),))
    for holder in ("a", "b", "c"):
        granted(pool.checkout("pbx", "port", holder))
    assert pool.set_node(Node("pbx", firmware=11)) == []  # the same hello again keeps everything
    released = pool.set_node(Node("pbx", firmware=13))
    assert sorted(lease.holder for lease in released) == ["a", "b", "c"]
    result = pool.sync("pbx", [SyncEntry("port", h) for h in ("a", "b", "c")])
    assert [(d.code, d.rule) for _, _, d in result.denied] == [("version", "R-VER-2")] * 3
    assert in_use(pool, "PBX-Port") == 0


def test_a_node_that_holds_nothing_is_forgotten_so_the_pool_does_not_grow(office: Pool) -> None:
    for i in range(100):
        office.set_node(Node(f"passing{i}"))
        lease = granted(office.checkout(f"passing{i}", "port", "x")).lease
        office.checkin(f"passing{i}", lease.id)
        assert office.forget_node(f"passing{i}")
    assert not any(name.startswith("passing") for name in office.nodes)
    granted(office.checkout("pbx1", "port", "kept"))
    assert not office.forget_node("pbx1")  # it still holds a lease: kept
    assert "pbx1" in office.nodes


# ---------------------------------------------------------------- readings of the model (docs/model.md)


def test_an_ipva_draws_its_ipva_licenses_of_every_version_R_IPVA_2() -> None:
    """Enforces R-IPVA-2: V12 and V13 IPVA licenses bound to one IPVA all serve it on V12."""
    pool = pool_of(("PBX-Port12", 10), ("PBX-IPVA12", 2, MAC_A), ("PBX-IPVA13", 2, MAC_A),
                   nodes=(Node("ipva", firmware=12, platform="ipva", mac=MAC_A),))
    took = [granted(pool.checkout("ipva", "port", f"u{i}")).lease.took_wire() for i in range(4)]
    assert sorted(t[1]["version"] for t in took) == [12, 12, 13, 13]
    denied(pool.checkout("ipva", "port", "u4"), "exhausted", "R-IPVA-1")
    v13 = pool_of(("PBX-Port13", 10), ("PBX-IPVA12", 2, MAC_A), ("PBX-IPVA13", 2, MAC_A),
                  nodes=(Node("ipva", firmware=13, platform="ipva", mac=MAC_A),))
    denied(v13.checkout("ipva", "port", "u"), "version", "R-VER-2")  # the V12 ones cap the family


def test_on_v9_only_v13_voicemail_licenses_are_blocked_R_VER_3() -> None:
    """Enforces R-VER-3 (reading in docs/model.md): older VoicemailUser licenses still serve."""
    pool = pool_of(("PBX-VoicemailUser12", 2), ("PBX-VoicemailUser13", 3), nodes=(Node("old", firmware=9),))
    for user in ("a", "b"):
        result = pool.assign("old", user, ["PBX-VoicemailUser"])
        assert not isinstance(result, Denial) and result.took == [{"family": "PBX-VoicemailUser", "version": 12, "count": 1}]
    denied(pool.assign("old", "c", ["PBX-VoicemailUser"]), "exhausted", "R-USER-1")
    only_v13 = pool_of(("PBX-VoicemailUser13", 3), nodes=(Node("old", firmware=9),))
    assert "do not downgrade" in denied(only_v13.assign("old", "a", ["PBX-VoicemailUser"]), "version", "R-VER-3").message


def test_an_operator_license_is_compared_with_the_workstation_software_R_OP_3() -> None:
    """Enforces R-OP-3 (reading in docs/model.md): the checkout may name the Operator software's
    version; without it, the PBX firmware stands in."""
    pool = pool_of(("PBX-Operator12", 2), ("PBX-QueueMonitor12", 1), nodes=(Node("pbx", firmware=13),))
    denied(pool.checkout("pbx", "operator", "desk1"), "version", "R-VER-2")  # firmware V13 > V12
    granted(pool.checkout("pbx", "operator", "desk1", client_version=12))  # an Operator V12 workstation
    assert "software" in denied(pool.checkout("pbx", "operator", "desk2", client_version=13), "version", "R-OP-3").message
    granted(pool.checkout("pbx", "queue-monitor", "q1", client_version=11))


def test_built_in_hardware_licenses_of_an_ip411_do_not_serve_conferences_R_HW_4() -> None:
    """Enforces R-HW-4 (reading in docs/model.md): the IP311/411/511's included licenses enable
    its own ISDN interfaces, not a pool of conference channels."""
    pool = pool_of(("PBX-Port13", 1), nodes=(Node("gw", model="IP411", mac=MAC_A),))
    assert granted(pool.checkout("gw", "isdn", "pri1", count=30, interface="pri")).lease.took == ()
    denied(pool.checkout("gw", "conference", "room", count=4), "exhausted", "R-CHAN-1")


def test_a_refused_checkout_of_an_unknown_resource_keeps_nothing() -> None:
    pool = pool_of(("PBX-Port13", 1), nodes=(Node("pbx"),))
    for i in range(100):
        denied(pool.checkout("pbx", "resource-" + "x" * 1000 + str(i), "h"), "unknown_resource")
    held = pool.book.held["pbx"]
    assert held.by_resource == {} and held.plans == {}


def test_user_licenses_restored_after_a_restart_count_in_the_peak_too() -> None:
    """A restart restores the durable assignments: the pool's peak is never below what is in use."""
    pool = Pool(parse_text('[[license]]\ntype = "App(phone)13"\ncount = 5\n').licenses)
    for user in ("ann", "bob"):
        pool.restore_assignment(user, "App(phone)", 13, "pbx1")
    [bucket] = [b for b in pool.buckets() if b.family == "App(phone)"]
    assert (bucket.in_use, bucket.peak) == (2, 2)


def test_a_lease_another_master_granted_is_adopted_as_it_was_with_its_id_and_buckets() -> None:
    pool = pool_of(("PBX-Port13", 2), ("PBX-IPVA13", 1, MAC_A), ("Relay-PRIs", 1, MAC_B), ("Relay-Channels", 30, MAC_B),
                   nodes=(Node("gw", mac=MAC_B, model="IP1130"),))
    old = pool_of(("PBX-Port13", 2), ("PBX-IPVA13", 1, MAC_A), ("Relay-PRIs", 1, MAC_B), ("Relay-Channels", 30, MAC_B),
                  nodes=(Node("gw", mac=MAC_B, model="IP1130"), Node("ipva", mac=MAC_A, platform="IPVA")))
    pri = granted(old.checkout("gw", "isdn", "t2", count=30, interface="pri")).lease
    ipva = granted(old.checkout("ipva", "port", "alice")).lease
    rows = [(lease.node, lease.resource, lease.holder, lease.id, old.took_view(lease).label) for lease in (pri, ipva)]
    assert ":" in old.took_view(ipva).label.split(" bound to ")[-1]  # a MAC in the label: the parse must not split it
    adopted, refused = pool.book.adopt(rows)
    assert refused == [] and [(lease.id, lease.node) for lease in adopted] == [(pri.id, "gw"), (ipva.id, "ipva")]
    assert {family: in_use(pool, family) for family in ("PBX-Port", "PBX-IPVA", "Relay-PRIs", "Relay-Channels")} == \
        {family: in_use(old, family) for family in ("PBX-Port", "PBX-IPVA", "Relay-PRIs", "Relay-Channels")}
    assert pool.book.adopt(rows) == ([], [])  # what a node holds already is not taken twice
    assert pool.checkin("ipva", ipva.id) is not None and in_use(pool, "PBX-IPVA") == 0  # its id frees exactly it


def test_a_lease_whose_buckets_are_gone_is_drawn_afresh_or_refused_when_nothing_is_free() -> None:
    pool = pool_of(("PBX-Port13", 1))
    adopted, refused = pool.book.adopt([("a", "port", "x", "90001", "PBX-Port12:1"),  # no such bucket here: drawn
                                        ("b", "port", "y", "90002", None)])  # no label: drawn, but nothing is free
    assert [lease.holder for lease in adopted] == ["x"] and in_use(pool, "PBX-Port") == 1
    assert [(node, holder, denial.code) for node, _, holder, denial in refused] == [("b", "y", "exhausted")]
