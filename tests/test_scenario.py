"""Scenario files: every shipped one loads; mistakes are named before anything runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from slave_sim.drill.scenario import ScenarioError, load_scenario, matches

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "scenarios").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_scenario_loads_with_a_larger_setting(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.steps and scenario.pbxs and scenario.licenses
    assert scenario.description
    full = load_scenario(path, size="full")
    assert full.device_count > scenario.device_count
    assert full.licenses != scenario.licenses


def test_the_full_morning_rush_has_thousands_of_phones_on_ten_pbxs() -> None:
    ci = load_scenario(ROOT / "scenarios" / "morning-rush.toml")
    full = load_scenario(ROOT / "scenarios" / "morning-rush.toml", size="full")
    assert len(full.pbxs) == 10 and full.device_count >= 4000
    assert full.device_count > 5 * ci.device_count
    assert full.licenses[0].name == "morning-rush-full.toml"
    assert full.steps[0].rate == 10 * ci.steps[0].rate


def test_copies_get_numbered_names_and_their_own_macs() -> None:
    scenario = load_scenario(ROOT / "scenarios" / "morning-rush.toml")
    names = [p.name for p in scenario.pbxs]
    assert names[:3] == ["site1", "site2", "site3"]
    assert len({p.mac for p in scenario.pbxs}) == 10
    assert matches("site", "site10") and not matches("site", "sites")


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "l.toml").write_text('[[license]]\ntype = "PBX-Port13"\ncount = 1\n')
    path = tmp_path / "s.toml"
    path.write_text('[master]\nlicenses = ["l.toml"]\n' + text)
    return path


STANDBY = '[[pbx]]\nname = "a"\nstandby = "a-standby"\n[[step]]\naction = "takeover"\nstandby = "a-standby"\n'


@pytest.mark.parametrize(("text", "says"), [
    ('[[pbx]]\nname = "a"\nusers = 1\ncolour = "red"\n', "unknown key(s) colour"),
    ('[[pbx]]\nname = "a"\n[[step]]\naction = "dance"\n', "action must be one of"),
    ('[[pbx]]\nname = "a"\n[[step]]\naction = "register"\npbx = "b"\n', "no PBX named 'b'"),
    ('[[pbx]]\nname = "a"\nlicensing = "decentral"\n', "needs local_licenses (R-MODE-2)"),
    ('[[pbx]]\nname = "a"\n[[step]]\naction = "takeover"\nstandby = "x"\n', "takeover needs standby"),
    ('[[pbx]]\nname = "a"\nusers = -1\n', "users must be a whole number"),
    ('[[pbx]]\nname = "a"\ntemplate = ["PBX-Nope"]\n', "unknown license family 'PBX-Nope'"),
    ('[[pbx]]\nname = "a"\n[expect]\ndenials = { exhausted = [3, 1] }\n', "expected a count or [min, max]"),
    ('', "at least one [[pbx]]"),
    ('[[pbx]]\nname = "a"\n[[step]]\naction = "reload-licenses"\n', "reload-licenses needs licenses"),
    ('[[pbx]]\nname = "a"\nsite = "hq"\n[expect]\nsites = { branch = { short = 0 } }\n', "no PBX is in site(s) branch"),
    ('[[pbx]]\nname = "a"\nsite = "hq"\n[expect]\nsites = { hq = { spare = 0 } }\n', "unknown key(s) spare"),
    ('[[pbx]]\nname = "a"\nsite = 3\n', "site must be a name"),
    (STANDBY + '[expect]\nfailover_refused = { standby_unlicenced = 1 }\n',
     "[expect] failover_refused: unknown error code(s) standby_unlicenced (codes: "),
    (STANDBY + '[expect]\nfailover_refused = { standby_unlicensed = [2, 1] }\n',
     "failover_refused.standby_unlicensed: expected a count or [min, max]"),
    (STANDBY + '[expect]\nfailover_refused = ["standby_unlicensed"]\n', "failover_refused: expected { code = count or [min, max] }"),
    ('[[pbx]]\nname = "a"\n[expect]\nfailover_refused = { standby_unlicensed = 1 }\n',
     "failover_refused: the scenario has no failover step (takeover, fail-master) to refuse"),
    ('tls = "yes"\n[[pbx]]\nname = "a"\n', "[master]: tls must be true or false, not 'yes'"),
    ('cafile = "ca.pem"\n[[pbx]]\nname = "a"\n', "[master] cafile: no such file"),
    ('token = 42\n[[pbx]]\nname = "a"\n', "[master]: token must be the master's auth_token"),
    ('token = ""\n[[pbx]]\nname = "a"\n', "[master]: token must be the master's auth_token"),
    ('token = "x"\ntoken_file = "l.toml"\n[[pbx]]\nname = "a"\n', "[master]: token and token_file: give one of them"),
    ('token_file = "token"\n[[pbx]]\nname = "a"\n', "[master] token_file: no such file"),
    ('hold_s = 2\n[[pbx]]\nname = "a"\n', "[master]: hold_s must be a number of seconds from the lease TTL (3) to 30 days"),
    ('lease_ttl_ms = 1000\nhold_s = 2592001\n[[pbx]]\nname = "a"\n', "hold_s must be a number of seconds from the lease TTL (1)"),
    ('hold_s = "72h"\n[[pbx]]\nname = "a"\n', "hold_s must be a number of seconds"),
    ('[[pbx]]\nname = "a"\n[[step]]\naction = "etcd-down"\nseconds = 5\n', "etcd-down need the masters in etcd: set etcd = true"),
    ('etcd = true\n[[pbx]]\nname = "a"\n[[step]]\naction = "etcd-down"\n', "etcd-down needs seconds = how long"),
    ('[[pbx]]\nname = "a"\n[expect]\nout_of_service = [2, 1]\n', "out_of_service: expected a count or [min, max]"),
])
def test_mistakes_are_named(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(says)):
        load_scenario(write(tmp_path, text))


def test_a_missing_license_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[master]\nlicenses = ["nope.toml"]\n[[pbx]]\nname = "a"\n')
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario(path)


def test_an_unknown_size_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"no \[sizes.huge\]"):
        load_scenario(write(tmp_path, '[[pbx]]\nname = "a"\n'), size="huge")


def test_sites_reach_copies_and_standbys_and_the_policy_path_is_made_absolute(tmp_path: Path) -> None:
    (tmp_path / "sites.toml").write_text('[site.hq]\nnodes = ["hq*"]\n')
    path = write(tmp_path, '[[pbx]]\nname = "hq"\ncopies = 2\nsite = "hq"\nstandby = "spare"\n'
                           '[expect]\nsites = { hq = { short = 0, peak = [1, 4] } }\n')
    path.write_text(path.read_text().replace('[master]\n', '[master]\npolicy = "sites.toml"\n'))
    scenario = load_scenario(path)
    assert [p.site for p in scenario.pbxs] == ["hq", "hq"]
    assert scenario.master["policy"] == str((tmp_path / "sites.toml").resolve())
    assert scenario.expect.sites["hq"].short == (0, 0) and scenario.expect.sites["hq"].peak == (1, 4)


def test_a_drill_that_rehearses_a_refused_takeover_declares_it_and_sizes_keep_it() -> None:
    for size in ("ci", "full"):
        refused = load_scenario(ROOT / "scenarios" / "standby-drill-refused.toml", size=size)
        assert refused.expect.failover_refused == {"standby_unlicensed": (1, 1)}
    assert load_scenario(ROOT / "scenarios" / "standby-drill.toml").expect.failover_refused == {}


def test_failover_refused_takes_any_error_code_of_the_protocol_and_slave_sims_own(tmp_path: Path) -> None:
    text = STANDBY + '[expect]\nfailover_refused = { no_connection = [0, 1], not_settled = 0, decentral = 2 }\n'
    expect = load_scenario(write(tmp_path, text)).expect
    assert expect.failover_refused == {"no_connection": (0, 1), "not_settled": (0, 0), "decentral": (2, 2)}


def test_the_master_keys_say_how_every_client_connects_and_are_not_the_masters_settings(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("(a certificate)")
    (tmp_path / "token").write_text("  s3cret\n")
    path = write(tmp_path, '[[pbx]]\nname = "a"\n')
    path.write_text(path.read_text().replace('[master]\n', '[master]\ncafile = "ca.pem"\ntoken_file = "token"\nheartbeat_ms = 500\n'))
    scenario = load_scenario(path)
    assert scenario.access.tls and scenario.access.cafile == (tmp_path / "ca.pem").resolve()  # a CA file means TLS
    assert scenario.access.token == "s3cret" and "s3cret" not in repr(scenario)
    assert scenario.master == {"heartbeat_ms": 500}  # what a master slave-sim starts is given; the keys above are not
    (tmp_path / "token").write_text("\n")
    with pytest.raises(ScenarioError, match=re.escape("[master] token_file: ") + ".*is empty"):
        load_scenario(path)
    plain = load_scenario(write(tmp_path, '[[pbx]]\nname = "a"\n')).access
    assert not plain.tls and plain.token is None and plain.client_options() == {"ssl": None, "auth": None}


def test_every_action_is_one_row_with_its_method_and_every_method_has_its_row() -> None:
    """An action is a row of ACTIONS and a `do_<action>` method of whoever plays it: the Runner
    for the run's actions, the Network for the PBXs'. Neither without the other."""
    from slave_sim.drill.actions import ACTIONS
    from slave_sim.drill.network import Network
    from slave_sim.drill.runner import Runner

    players = {"run": Runner, "pbx": Network}
    for name, action in ACTIONS.items():
        assert action.name == name
        assert callable(getattr(players[action.scope], action.method, None)), f"{name}: no {players[action.scope].__name__}.{action.method}"
    for scope, player in players.items():
        methods = {m for m in dir(player) if m.startswith("do_")}
        rows = {a.method for a in ACTIONS.values() if a.scope == scope}
        assert methods == rows, f"{player.__name__}: do_ methods without a row {sorted(methods - rows)}, rows without one {sorted(rows - methods)}"


def test_the_table_says_what_an_action_needs_and_validation_reads_it(tmp_path: Path) -> None:
    from slave_sim.drill.actions import ACTIONS
    from slave_sim.drill.runner import Runner

    with pytest.raises(ScenarioError, match=re.escape("action must be one of " + ", ".join(ACTIONS))):
        load_scenario(write(tmp_path, '[[pbx]]\nname = "a"\n[[step]]\naction = "dance"\n'))
    with pytest.raises(ScenarioError, match="fail-master and return-master need a standby master: set standby = true"):
        load_scenario(write(tmp_path, '[[pbx]]\nname = "a"\n[[step]]\naction = "return-master"\n'))
    own = sorted(name for name, a in ACTIONS.items() if a.needs_own_master)
    assert own == ["etcd-down", "fail-master", "reload-licenses", "restart-master", "return-master"]
    restart = load_scenario(write(tmp_path, '[[pbx]]\nname = "a"\n[[step]]\naction = "restart-master"\n'))
    with pytest.raises(ValueError, match="run it without --master"):
        Runner(restart, master="127.0.0.1:1")
    steps = load_scenario(write(tmp_path, '[[pbx]]\nname = "a"\n[[step]]\naction = "kill"\npbx = "a"\n'
                                          '[[step]]\naction = "pause"\nseconds = 1.5\n')).steps
    assert [s.describe() for s in steps] == ["kill a", "pause 1.5s"]  # the row says it is targeted, and what it shows


def test_the_master_keeps_an_absent_pbxs_licenses_for_the_hold_the_scenario_gives_it(tmp_path: Path) -> None:
    path = write(tmp_path, '[[pbx]]\nname = "a"\n')
    path.write_text(path.read_text().replace('[master]\n', '[master]\nlease_ttl_ms = 1000\nhold_s = 1\n'))
    scenario = load_scenario(path)
    assert scenario.master == {"lease_ttl_ms": 1000, "hold_s": 1}  # what the master slave-sim starts is given
    assert scenario.expect.out_of_service == (0, 0)  # no device may lose service because of licensing, unless expected
    assert load_scenario(ROOT / "scenarios" / "standby-drill-refused.toml").master["hold_s"] == 1  # about reclaiming


def test_the_quorum_lost_drill_takes_every_etcd_member_down_past_the_ttl_and_expects_no_lapse() -> None:
    scenario = load_scenario(ROOT / "scenarios" / "quorum-lost.toml")
    [outage] = [s for s in scenario.steps if s.action == "etcd-down"]
    assert scenario.etcd and outage.seconds > scenario.master["lease_ttl_ms"] / 1000 and outage.describe() == "etcd-down 5s"
    for size in ("ci", "full"):  # the newcomers' hellos are refused no_quorum while the outage lasts, at either size
        expect = load_scenario(ROOT / "scenarios" / "quorum-lost.toml", size=size).expect
        assert expect.out_of_service == (0, 0) and expect.over_installed_across_masters == (0, 0)
        assert expect.denials["no_quorum"][0] >= 1
