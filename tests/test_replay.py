"""`slave-sim replay` (slave_sim/replay/): the record read into a timeline, cut into steps, the bad
input refused before anything starts (pure, on hand-made rows); and a real master's record played
against a fresh master on the same licenses, whose answers must be the record's (processes)."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from licmaster.model.types import Node
from licmaster.wire import events
from licmaster.wire.events import Demand
from slave_sim.cli import main
from slave_sim.drill.scenario import ScenarioError, load_scenario
from slave_sim.replay import timeline as tl
from slave_sim.replay.timeline import Event, ReplayError

from .daemon import in_process

T0 = 1_750_000_000.0


def row(ts: float, event: str, node: str | None = None, **fields: Any) -> tuple[Any, ...]:
    """A journal row as `iter_rows` gives it: every field, in order."""
    return tuple({"ts": ts, "event": event, "node": node, **fields}.get(name) for name in events.FIELDS)


def hello(ts: float, node: str, **said: Any) -> tuple[Any, ...]:
    return row(ts, "hello", node, detail=events.hello_detail(Node(node, **said)))


def grant(ts: float, node: str, holder: str, lease: str, **more: Any) -> tuple[Any, ...]:
    return row(ts, "grant", node, resource="port", holder=holder, lease=lease, detail="PBX-Port13:1", **more)


def checkin(ts: float, node: str, lease: str) -> tuple[Any, ...]:
    return row(ts, "checkin", node, resource="port", lease=lease)


def refused(node: str, holder: str, first: float, last: float, resource: str = "port", family: str = "PBX-Port") -> tuple[Any, ...]:
    """A `demand` row: written after the holder's last ask (here 10 s after, as the master does)."""
    detail = events.demand_detail(Demand("exhausted", family, first, last, 3))
    return row(last + 10, "demand", node, resource=resource, holder=holder, detail=detail, rule="R-PORT-1")


def kinds(found: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.kind, e.node, e.holder) for e in found]


# ---------------------------------------------------------------------------- the record read


def test_grants_and_their_ends_become_asks_and_leaves_in_the_records_order() -> None:
    rows = [hello(T0, "hq", mac="00:90:33:00:00:01", firmware=12), hello(T0, "desk", role="observer"),
            grant(T0 + 1, "hq", "alice", "1"), grant(T0 + 2, "hq", "bob", "2"),
            grant(T0 + 3, "hq", "bob", "2b"),  # a re-sync of what hq holds: the same demand going on
            grant(T0 + 3, "hq", "carl", "9", note="adopted"),  # adopted at a master's takeover: no new demand
            checkin(T0 + 4, "hq", "1"), checkin(T0 + 5, "hq", "2b"),
            grant(T0 + 6, "hq", "alice", "3"), row(T0 + 7, "bye", "hq", detail="1"),
            grant(T0 + 30, "hq", "zoe", "4")]  # after the period: not read
    timeline = tl.extract(rows, T0, T0 + 20)
    assert kinds(timeline.events) == [("ask", "hq", "alice"), ("ask", "hq", "bob"), ("leave", "hq", "alice"),
                                      ("leave", "hq", "bob"), ("ask", "hq", "alice"), ("leave", "hq", "alice")]
    assert [e.at - T0 for e in timeline.events] == [1, 2, 4, 5, 6, 7]
    assert all(e.recorded for e in timeline.asks) and timeline.carried == []
    assert list(timeline.pbxs) == ["hq"] and timeline.pbxs["hq"].firmware == 12  # the observer is no PBX of the replay


def test_a_recorded_refusal_asks_once_at_its_first_ask_and_goes_at_its_last() -> None:
    # Demand, not requests: dave asked three times from T0 + 2 to T0 + 5; his row was written at
    # T0 + 15, after erin's grant, but his ask goes at his first ask, in time.
    rows = [hello(T0, "hq"), grant(T0 + 1, "hq", "alice", "1"), refused("hq", "dave", T0 + 2, T0 + 5),
            grant(T0 + 20, "hq", "erin", "2")]
    rows.sort(key=lambda r: r[events.TS])
    timeline = tl.extract(rows, T0, T0 + 60)
    assert kinds(timeline.events) == [("ask", "hq", "alice"), ("ask", "hq", "dave"), ("leave", "hq", "dave"), ("ask", "hq", "erin")]
    dave = timeline.events[1]
    assert (dave.at, dave.recorded, dave.code) == (T0 + 2, False, "exhausted")
    assert timeline.events[2].at == T0 + 5


def test_a_takeover_is_played_as_one_and_the_standby_gives_back_what_it_took_over() -> None:
    rows = [hello(T0, "hq"), hello(T0, "hq-standby", role="standby", standby_for="hq"),
            grant(T0 + 1, "hq", "alice", "1"), grant(T0 + 2, "hq", "bob", "2"),
            row(T0 + 5, "takeover", "hq-standby", detail="hq"),
            checkin(T0 + 6, "hq-standby", "2"),  # the moved lease, by its id, from the standby
            grant(T0 + 7, "hq-standby", "carol", "3"), hello(T0 + 8, "hq"), grant(T0 + 9, "hq", "dave", "4")]
    timeline = tl.extract(rows, T0, T0 + 60)
    assert kinds(timeline.events) == [("ask", "hq", "alice"), ("ask", "hq", "bob"), ("takeover", "hq-standby", "hq"),
                                      ("leave", "hq-standby", "bob"), ("ask", "hq-standby", "carol"), ("return", "hq", ""),
                                      ("ask", "hq", "dave")]
    assert timeline.standby_of("hq") == "hq-standby"


def test_assignments_replay_as_assignments_one_request_per_user_and_instant() -> None:
    rows = [hello(T0, "hq"),
            row(T0 + 1, "assign", "hq", resource="PBX-UC", holder="ann", detail="13"),  # before the period: in force at its start
            row(T0 + 11, "assign", "hq", resource="PBX-UC", holder="bea", detail="13"),
            row(T0 + 11, "assign", "hq", resource="App(phone)", holder="bea", detail="13"),
            refused("hq", "cid", T0 + 12, T0 + 12, resource="assign", family="PBX-UC"),
            row(T0 + 20, "unassign", "hq", resource="PBX-UC", holder="ann", detail="13")]
    rows.sort(key=lambda r: r[events.TS])
    timeline = tl.extract(rows, T0 + 10, T0 + 60)
    assert [(e.kind, e.holder, e.families) for e in timeline.carried] == [("assign", "ann", ("PBX-UC",))]
    assert [(e.kind, e.holder, e.families, e.recorded) for e in timeline.events] == [
        ("assign", "bea", ("PBX-UC", "App(phone)"), True), ("assign", "cid", ("PBX-UC",), False),
        ("unassign", "ann", ("PBX-UC",), True)]


def test_what_was_in_force_when_the_period_began_is_set_up_first_the_granted_before_the_refused() -> None:
    rows = [hello(T0, "hq"), grant(T0 + 1, "hq", "gone", "1"), checkin(T0 + 2, "hq", "1"),
            refused("hq", "waiting", T0 + 3, T0 + 40), grant(T0 + 4, "hq", "held", "2"),
            checkin(T0 + 50, "hq", "2")]
    rows.sort(key=lambda r: r[events.TS])
    timeline = tl.extract(rows, T0 + 10, T0 + 60)
    assert [(e.holder, e.recorded) for e in timeline.carried] == [("held", True), ("waiting", False)]  # "gone" ended before
    assert kinds(timeline.events) == [("leave", "hq", "waiting"), ("leave", "hq", "held")]


def test_steps_compress_the_record_by_the_speed_and_a_takeover_or_a_loss_is_a_step_of_its_own() -> None:
    rows = [hello(T0, "hq"), hello(T0, "hq-standby", role="standby", standby_for="hq"), hello(T0, "branch"),
            *[grant(T0 + 60 * i, "hq", f"p{i}", str(i)) for i in range(1, 100)],
            row(T0 + 3000, "takeover", "hq-standby", detail="hq")]
    timeline = tl.extract(rows, T0, T0 + 6000)
    timeline = tl.add_losses(timeline, [("branch", str(T0 + 4000))], T0 + 7000, lambda: None)
    steps = tl.segments(timeline, speed=60)
    windows = [s for s in steps if s.action == "register"]
    assert 2 <= len(windows) <= tl.MOST_STEPS
    assert [s.action for s in steps if s.action != "register"] == ["takeover", "kill"]  # branch has no standby PBX
    due = {e.holder: d for s in steps for d, e in s.events if e.kind == "ask"}
    assert due["p1"] == 1.0 and due["p99"] == 99.0  # a minute of the record in a second
    assert [e.holder for s in windows for _, e in s.events] == [f"p{i}" for i in range(1, 100)]


def test_a_site_lost_at_a_time_is_its_pbxs_not_their_standbys_after_the_records_events_of_that_instant() -> None:
    rows = [hello(T0, "b1"), hello(T0, "b2"), hello(T0, "b1-standby", role="standby", standby_for="b1"), hello(T0, "hq"),
            grant(T0 + 5, "b1", "x", "1"), grant(T0 + 5, "hq", "y", "2")]
    sites = {"b1": "branch", "b2": "branch", "hq": "hq"}
    timeline = tl.extract(rows, T0, T0 + 60, sites.get)
    assert timeline.sites["b1-standby"] == "branch"  # a standby PBX is in its failed PBX's site
    lost = tl.add_losses(timeline, [("@branch", "peak")], T0 + 100, lambda: T0 + 5, ["branch", "hq"])
    assert kinds(lost.events) == [("ask", "b1", "x"), ("ask", "hq", "y"), ("lose", "@branch", "")]
    assert lost.events[-1].nodes == ("b1", "b2") and lost.events[-1].at == T0 + 5
    assert tl.segments(lost, 1)[-1].action == "takeover"  # b1 has a standby PBX: it takes over


# ---------------------------------------------------------------------------- bad input, refused naming it


@given(st.one_of(st.floats(max_value=0), st.just(math.nan), st.just(math.inf), st.booleans(), st.none(),
                 st.text().filter(lambda t: not _positive_number(t))))
def test_a_speed_that_is_not_a_number_above_0_is_refused_naming_it(speed: Any) -> None:
    with pytest.raises(ReplayError, match=r"--speed .*a number above 0"):
        tl.parse_speed(speed)


@given(st.floats(min_value=1e-6, max_value=1e9))
def test_a_speed_above_0_is_taken_as_it_is(speed: float) -> None:
    assert tl.parse_speed(speed) == speed and tl.parse_speed(repr(speed)) == speed


def _positive_number(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and float(text) > 0
    except ValueError:
        return False


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_any_time_given_is_a_finite_epoch_or_refused_naming_the_option(text: str) -> None:
    try:
        when = tl.parse_time(text, T0, "--since")
    except ReplayError as exc:
        assert str(exc).startswith(f"--since {text!r}: expected 7d")
    else:
        assert math.isfinite(when)


@given(st.integers(min_value=0, max_value=10_000), st.sampled_from([("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]))
def test_an_age_is_counted_back_from_now(n: int, unit: tuple[str, int]) -> None:
    assert tl.parse_time(f"{n}{unit[0]}", T0, "--since") == T0 - n * unit[1]
    assert tl.parse_time("2025-06-15T15:06:40Z", T0, "--until") == T0


LOSING = tl.extract([hello(T0, "hq"), hello(T0, "branch"), grant(T0 + 1, "hq", "a", "1")], T0, T0 + 100,
                    {"hq": "main", "branch": "main"}.get)


@given(st.text(min_size=1, max_size=20).filter(lambda name: name not in ("hq", "branch") and not name.startswith("@")))
def test_losing_a_pbx_the_record_does_not_have_is_refused_naming_it(name: str) -> None:
    with pytest.raises(ReplayError, match="no PBX of that name in the record") as refusal:
        tl.add_losses(LOSING, [(name, "peak")], T0, lambda: T0 + 1, ["main"])
    assert repr(name) in str(refusal.value)


@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda t: not T0 <= t <= T0 + 100))
def test_a_loss_outside_the_period_is_refused_naming_the_period(at: float) -> None:
    with pytest.raises(ReplayError, match="is outside the period"):
        tl.add_losses(LOSING, [("hq", repr(at))], T0, lambda: None)


@pytest.mark.parametrize(("target", "sites", "says"), [
    ("@nowhere", ["main"], "the site policy has no site 'nowhere' (sites: main)"),
    ("@main", [], "the replay has no site policy"),
    ("@empty", ["main", "empty"], "no PBX of site 'empty' is in the record"),
])
def test_losing_a_site_the_policy_or_the_record_does_not_have_is_refused(target: str, sites: list[str], says: str) -> None:
    with pytest.raises(ReplayError, match=re.escape(says)):
        tl.add_losses(LOSING, [(target, "peak")], T0, lambda: T0 + 1, sites)


def test_a_period_with_nothing_asked_says_so_with_where_the_journal_runs() -> None:
    timeline = tl.extract([hello(T0, "hq"), grant(T0 + 1, "hq", "a", "1")], T0 + 10, T0 + 20)
    assert [e.holder for e in timeline.carried] == ["a"]
    said = tl.empty_period(timeline)
    assert said is not None and "nothing was asked for or given back" in said and "the journal runs from 2025-06-15" in said
    with pytest.raises(ReplayError, match="the period is empty"):
        tl.period(T0 + 5, T0 + 5)


# ---------------------------------------------------------------------------- against the record


def test_the_comparison_names_who_the_replay_answered_otherwise() -> None:
    ask = Event(T0 + 1, tl.ASK, "hq", "alice", "port", recorded=True)
    outcomes = [(ask, tl.GRANTED), (Event(T0 + 2, tl.ASK, "hq", "bob", "port", recorded=False), tl.GRANTED),
                (Event(T0 + 3, tl.ASK, "hq", "carl", "port", recorded=True), tl.REFUSED),
                (Event(T0 + 4, tl.ASK, "br", "dan", "operator", recorded=False), tl.REFUSED),
                (Event(T0 - 1, tl.ASK, "hq", "early", "port", recorded=False), tl.GRANTED)]  # in force at the start: not compared
    found = tl.compare(outcomes, T0)
    assert found.asks == 4 and not found.same
    text = tl.describe(found, exact=True, why_not="")
    assert "2 refused in the record, 2 in the replay" in text and "refused in both 1" in text
    assert "refused in the replay only 1: hq/carl" in text and "served in the replay only 1: hq/bob" in text
    same = tl.compare([outcomes[0], outcomes[3]], T0)
    assert same.same and tl.describe(same, exact=True, why_not="").endswith("the same holders")


# ---------------------------------------------------------------------------- a scenario file's replay


def test_a_scenario_file_says_replay_in_place_of_its_pbxs_and_steps(tmp_path: Path) -> None:
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "journal.sqlite3").write_bytes(b"")
    path = tmp_path / "s.toml"
    path.write_text('name = "tuesday"\nreplay = { data_dir = "rec", since = 2025-06-15T15:00:00Z, speed = 600, '
                    'lose = [["@b", "peak"]] }\n')
    scenario = load_scenario(path, replay=True)
    assert scenario.replay is not None and scenario.replay.data_dir == (tmp_path / "rec").resolve()
    assert (scenario.replay.since, scenario.replay.speed, scenario.replay.lose) == ("2025-06-15T15:00:00+00:00", 600.0,
                                                                                    (("@b", "peak"),))
    with pytest.raises(ScenarioError, match="run it with `slave-sim replay"):
        load_scenario(path)  # what `slave-sim run` loads
    for text, says in (('replay = { data_dir = "rec", since = "1h", speed = 0 }', "speed must be a number above 0"),
                       ('replay = { data_dir = "nowhere", since = "1h" }', "no journal in"),
                       ('replay = { data_dir = "rec" }', "since is required"),
                       ('replay = { data_dir = "rec", since = "1h" }\n[[pbx]]\nname = "a"', "leave out [[pbx]] and [[step]]")):
        path.write_text(text + "\n")
        with pytest.raises(ScenarioError, match=re.escape(says)):
            load_scenario(path, replay=True)


# ---------------------------------------------------------------------------- a real master's record, replayed

LICENSES = ('[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "PBX-Standby13"\ncount = 3\n'
            '[[license]]\ntype = "PBX-UC13"\ncount = 1\n')


async def _record(workdir: Path) -> tuple[float, float]:
    """A real master (in this process) under a short drill: Ports refused and retried, a user
    license refused, a check-in that lets a refused phone in, a standby PBX taking over and giving
    back a lease it took over, a user license unassigned by another PBX than the one that assigned it."""
    says = {"role": "pbx", "firmware": 13, "platform": "gateway", "licensing": "central"}
    started = time.time()
    d = await in_process(workdir, LICENSES)
    try:
        hq, branch, standby = d.connect_now(), d.connect_now(), d.connect_now()
        assert hq.call("hello", node="hq", mac="00:90:33:00:00:01", **says)["ok"]
        assert branch.call("hello", node="branch", mac="00:90:33:00:00:02", **says)["ok"]
        assert standby.call("hello", node="hq-standby", mac="00:90:33:00:00:03", **{**says, "role": "standby"},
                            standby_for="hq")["ok"]
        alice = hq.call("checkout", resource="port", holder="alice")
        bob = hq.call("checkout", resource="port", holder="bob")
        assert alice["ok"] and bob["ok"]
        said = [branch.call("checkout", resource="port", holder=h) for h in ("carol", "dave", "dave", "erin")]
        assert [r["ok"] for r in said] == [True, False, False, False]
        assert hq.call("checkin", lease=alice["lease"])["ok"]
        assert branch.call("checkout", resource="port", holder="dave")["ok"]
        assert hq.call("assign", user="ann", families=["PBX-UC"])["ok"]
        assert hq.call("assign", user="ben", families=["PBX-UC"])["error"] == "exhausted"
        assert standby.call("takeover", failed="hq")["ok"]
        assert standby.call("checkin", lease=bob["lease"])["ok"]  # the moved lease, by the standby
        assert branch.call("checkout", resource="port", holder="fay")["ok"]
        assert branch.call("checkout", resource="port", holder="gus")["error"] == "exhausted"
        assert branch.call("unassign", user="ann", families=["PBX-UC"])["ok"]  # a user's licenses, given back by another PBX
    finally:
        await d.stop()
    return started - 1, time.time() + 1


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, float]:
    workdir = tmp_path_factory.mktemp("recorded")
    since, until = asyncio.run(_record(workdir))
    return workdir / "data", since, until


@pytest.mark.process
def test_a_real_masters_record_replayed_on_its_own_licenses_gets_every_answer_it_got(
        recorded: tuple[Path, float, float], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, since, until = recorded
    status = main(["replay", "--data-dir", str(data_dir), "--since", repr(since), "--until", repr(until), "--speed", "1000",
                   "--report-dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr()
    assert status == 0, out.out + out.err
    (report,) = tmp_path.glob("replay-*.json")
    doc = json.loads(report.read_text())
    checks = {c["name"]: c for c in doc["checks"]}
    assert doc["passed"] and checks["as recorded"]["passed"], checks
    # dave (refused twice: one demand), erin and gus refused a Port, ben the user license: again, and no one else
    assert "4 refused in the record, 4 in the replay; the same holders" in checks["as recorded"]["detail"]
    assert doc["denials"]["by_code"] == {"exhausted": 4} and doc["takeover_ms"] and checks["failover steps"]["passed"]
    assert checks["master and network agree"]["passed"] and "[ok] as recorded" in out.out


@pytest.mark.process
def test_bad_input_is_refused_before_anything_starts_naming_what_is_wrong(
        recorded: tuple[Path, float, float], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, since, until = recorded
    period = ["--data-dir", str(data_dir), "--since", repr(since), "--until", repr(until), "--report-dir", str(tmp_path)]
    for args, says in ((["--lose", "nope", "--at", "peak"], "--lose 'nope': no PBX of that name in the record (PBXs: branch, hq, hq-standby"),
                       (["--lose", "@branch", "--at", "peak"], "--lose @branch: the replay has no site policy"),
                       (["--lose", "hq", "--at", repr(until + 60)], "is outside the period"),
                       (["--lose", "hq"], "1 --lose and 0 --at: each --lose needs its --at"),
                       (["--speed", "0"], "--speed '0': how many times faster than recorded, a number above 0"),
                       (["--since", repr(until + 10), "--until", repr(until + 20)], "nothing was asked for or given back")):
        assert main(["replay", *period, *args]) == 2
        assert says in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["replay", "--data-dir", str(tmp_path / "empty"), "--since", "1h"]) == 2
    assert "no journal in" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))  # nothing ran
