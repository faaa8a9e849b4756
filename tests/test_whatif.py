"""What if (licmaster/console/whatif.py): the recorded demand replayed against candidate licenses
and failures, in the master's own pool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from licmaster.console.whatif import Loss, replay
from licmaster.daemon.storage.journal import read_journal
from licmaster.model.pool import Pool
from licmaster.model.types import Node
from licmaster.wire import events
from licmaster.wire.events import Demand

from .conftest import licenses
from .daemon import in_process

T0 = 1_750_000_000.0


def says_hello(peer: Any, node: str, mac: str, **more: Any) -> None:
    """A PBX's hello on a real master (in-process), as the tests here record it."""
    assert peer.call("hello", node=node, role=more.pop("role", "pbx"), firmware=13, platform="gateway", mac=mac,
                     licensing="central", **more)["ok"]


def hello(ts: float, node: str, **said: Any) -> dict[str, Any]:
    return {"ts": ts, "event": "hello", "node": node, "detail": events.hello_detail(Node(node, **said))}


def grant(ts: float, node: str, holder: str, lease: str) -> dict[str, Any]:
    return {"ts": ts, "event": "grant", "node": node, "resource": "port", "holder": holder, "lease": lease, "detail": "PBX-Port13:1"}


def checkin(ts: float, node: str, lease: str) -> dict[str, Any]:
    return {"ts": ts, "event": "checkin", "node": node, "resource": "port", "lease": lease}


def refused(ts: float, node: str, holder: str, until: float) -> dict[str, Any]:
    detail = events.demand_detail(Demand("exhausted", "PBX-Port", ts, until, 3))
    return {"ts": until + 10, "event": "demand", "node": node, "resource": "port", "holder": holder, "detail": detail}


def test_with_fewer_ports_it_says_who_would_have_been_refused_and_what_would_serve_everyone() -> None:
    rows = [hello(T0, "hq", mac="00:90:33:00:00:01"),
            grant(T0 + 1, "hq", "alice", "1"), grant(T0 + 2, "hq", "bob", "2"), grant(T0 + 3, "hq", "carol", "3"),
            checkin(T0 + 10, "hq", "1"), grant(T0 + 11, "hq", "erin", "4"),
            refused(T0 + 4, "hq", "dave", T0 + 8)]  # written after dave's last ask: the 3 Ports were not enough
    as_recorded = replay(rows, Pool(licenses(("PBX-Port13", 3))), keep_outcomes=True)
    assert as_recorded.outcomes is not None
    assert [(a.holder, a.recorded_granted, code) for a, code in as_recorded.outcomes] == \
        [("alice", True, None), ("bob", True, None), ("carol", True, None), ("dave", False, "exhausted"), ("erin", True, None)]
    port = as_recorded.families["PBX-Port"].to_dict()
    assert (port["peak_in_use"], port["refused"], port["peak_demand"], port["would_serve_everyone"]) == (3, 1, 4, 4)
    fewer = replay(rows, Pool(licenses(("PBX-Port13", 2)))).families["PBX-Port"].to_dict()
    assert fewer["refused"] == 2 and [w["holder"] for w in fewer["who"]] == ["carol", "dave"]
    assert fewer["headroom_at_peak"] == 0 and fewer["first_refused"] == T0 + 3
    more = replay(rows, Pool(licenses(("PBX-Port13", 4)))).families["PBX-Port"].to_dict()
    assert more["refused"] == 0 and more["peak_in_use"] == 4 and more["headroom_at_peak"] == 0


def test_losing_a_pbx_its_standby_takes_over_only_when_the_standby_licenses_allow_it_R_STBY_2() -> None:
    rows = [hello(T0, "hq", mac="00:90:33:00:00:01"), hello(T0, "hq-standby", role="standby", standby_for="hq",
                                                            mac="00:90:33:00:00:02"),
            grant(T0 + 1, "hq", "alice", "1"), grant(T0 + 2, "hq", "bob", "2"), grant(T0 + 9, "hq", "carol", "3")]
    covered = replay(rows, Pool(licenses(("PBX-Port13", 3), ("PBX-Standby13", 3))), losses=[Loss("hq", T0 + 5)])
    assert covered.lost == [{"target": "hq", "at": T0 + 5, "taken_over": [{"failed": "hq", "standby": "hq-standby", "moved": 2}],
                             "down": []}]
    assert covered.families["PBX-Port"].in_use == 3 and covered.unserved == 0  # carol asks through the standby
    short = replay(rows, Pool(licenses(("PBX-Port13", 3))), losses=[Loss("hq", T0 + 5)])
    (down,) = short.lost[0]["down"]
    assert down["failed"] == "hq" and down["leases"] == 2 and "Standby" in down["why"]
    assert short.families["PBX-Port"].in_use == 0 and short.unserved == 1  # hq is down: carol's phone with it


async def test_replayed_with_the_installed_licenses_a_real_record_gives_every_grant_and_refusal_again(tmp_path: Path) -> None:
    # Exact on the record: a real master, refusals, retries, a check-in, a PBX gone and its
    # standby taking over; its journal replayed one by one against the same licenses.
    text = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "PBX-Standby13"\ncount = 3\n'
    d = await in_process(tmp_path / "m", text)
    try:
        hq, branch, standby = d.connect_now(), d.connect_now(), d.connect_now()
        says_hello(hq, "hq", "00:90:33:00:00:01")
        says_hello(branch, "branch", "00:90:33:00:00:02")
        says_hello(standby, "hq-standby", "00:90:33:00:00:03", role="standby", standby_for="hq")
        said = [hq.call("checkout", resource="port", holder=h) for h in ("alice", "bob")]
        said += [branch.call("checkout", resource="port", holder=h) for h in ("carol", "dave", "dave", "erin")]
        assert [r["ok"] for r in said] == [True, True, True, False, False, False]
        assert hq.call("checkin", lease=said[0]["lease"])["ok"]
        assert branch.call("checkout", resource="port", holder="dave")["ok"]
        assert standby.call("takeover", failed="hq")["ok"]
        assert branch.call("checkout", resource="port", holder="frank")["error"] == "exhausted"
    finally:
        await d.stop()
    rows = read_journal(d.workdir / "data" / "journal.sqlite3")
    result = replay(rows, Pool(licenses(("PBX-Port13", 3), ("PBX-Standby13", 3))), keep_outcomes=True)
    assert result.outcomes is not None
    disagreements = [(a.node, a.holder, a.recorded_granted, code) for a, code in result.outcomes if a.recorded_granted != (code is None)]
    assert disagreements == []  # every grant a grant again, every refusal a refusal
    assert sorted(a.holder for a, _ in result.outcomes if not a.recorded_granted) == ["dave", "erin", "frank"]  # dave's retries: one
    assert json.dumps(result.to_dict())  # plain data, for --json and the API


async def test_licmaster_whatif_answers_with_fewer_ports_and_a_pbx_lost_at_the_peak(tmp_path: Path) -> None:
    import subprocess
    import sys

    d = await in_process(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 4\n')
    try:
        hq = d.connect_now()
        says_hello(hq, "hq", "00:90:33:00:00:01")
        for holder in ("a", "b", "c", "d"):
            assert hq.call("checkout", resource="port", holder=holder)["ok"]
    finally:
        await d.stop()
    fewer = tmp_path / "fewer.toml"
    fewer.write_text('[[license]]\ntype = "PBX-Port13"\ncount = 3\n')

    def whatif(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "licmaster.cli", "whatif", "--data-dir", str(d.workdir / "data"),
                               "--since", "1h", *args], capture_output=True, text=True, timeout=60)

    answer = whatif("--licenses", str(fewer), "--json")
    assert answer.returncode == 0, answer.stderr
    port = next(f for f in json.loads(answer.stdout)["families"] if f["family"] == "PBX-Port")
    assert (port["installed"], port["refused"], port["would_serve_everyone"]) == (3, 1, 4)
    assert [w["holder"] for w in port["who"]] == ["d"]
    text = whatif("--licenses", str(fewer), "--lose", "hq", "--at", "peak")
    assert text.returncode == 0 and "PBX-Port: 3 installed" in text.stdout and "lost hq" in text.stdout
    assert "hq down with 3 leases" in text.stdout  # no standby PBX said hello for it
    bad = whatif("--licenses", str(fewer), "--lose", "hq")
    assert bad.returncode == 2 and "each --lose needs its --at" in bad.stderr
    for fmt, expected in (([], "What if (the period's demand replayed against the candidate licenses):"),
                          (["--html"], "<h2>What if (the period's demand against the candidate licenses)</h2>")):
        report = subprocess.run([sys.executable, "-m", "licmaster.cli", "report", "--data-dir", str(d.workdir / "data"),
                                 "--since", "1h", "--whatif", str(fewer), *fmt], capture_output=True, text=True, timeout=60)
        assert report.returncode == 0 and expected in report.stdout, report.stderr
    assert "PBX-Port: 3 installed, peak 3 in use" in report.stdout or "<td>PBX-Port</td><td>3</td><td>3</td>" in report.stdout


def test_traffic_theory_stands_beside_the_replay_for_the_busiest_hour() -> None:
    from licmaster.model import traffic

    # Two hours; in the second, 30 phones each hold a Port for 6 minutes, one every 2 minutes: 1.5
    # Erlangs offered on average, 3 at a time at most; 2 Ports installed.
    rows = [hello(T0, "hq", mac="00:90:33:00:00:01")]
    for i in range(30):
        start = T0 + 3600 + i * 120
        rows += [grant(start, "hq", f"p{i}", str(i + 1)), checkin(start + 360, "hq", str(i + 1))]
    rows.sort(key=lambda r: r["ts"])
    result = replay(rows, Pool(licenses(("PBX-Port13", 2))), since=T0, until=T0 + 7200)
    result.add_traffic(T0, T0 + 7200)
    t = result.families["PBX-Port"].to_dict()["traffic"]
    # the busiest hour on the clock: [T0 + 3200, T0 + 6800), 3 phones at a time from T0 + 3600
    assert t["busy_hour"][0] == (T0 + 3600) // 3600 * 3600 and 2.5 < t["erlangs"] <= 3.0
    assert abs(t["erlang_b"] - traffic.erlang_b(2, t["erlangs"])) < 1e-3 and t["sources"] == 30
    assert abs(t["engset"] - traffic.engset(2, 30, t["erlangs"])) < 1e-3 and t["engset"] < t["erlang_b"]
    # The replay refuses the third phone of every overlap (1 in 3); Erlang-B expects more (48%):
    # these arrivals are evenly spaced, smoother than Poisson's; within 2x, no note is needed.
    assert t["replay_refused"] == 0.3333 and t["erlang_b"] > 0.45 and t["note"] is None and t["servers_for_1pct"] >= 6


def test_where_the_replay_and_the_formula_differ_much_it_says_the_likely_why() -> None:
    from licmaster.console.whatif import _disagreement

    assert "bursts" in (_disagreement(0.40, 0.05) or "")  # a PBX registering its phones at once
    assert "less" in (_disagreement(0.01, 0.30) or "")
    assert _disagreement(0.30, 0.35) is None and _disagreement(0.0, 0.01) is None


async def test_replayed_under_the_same_site_policy_a_record_with_a_site_at_its_maximum_gives_every_refusal_again(
        tmp_path: Path) -> None:
    from licmaster.licenses.policy import load_policy

    text = '[[license]]\ntype = "PBX-Port13"\ncount = 6\n'
    policy_file = tmp_path / "sites.toml"
    policy_file.write_text('[site.hq]\nnodes = ["hq"]\nreserve = { "PBX-Port" = 2 }\n'
                           '[site.branch]\nnodes = ["branch"]\nmax = { "PBX-Port" = 3 }\n')
    d = await in_process(tmp_path / "m", text, policy=str(policy_file))
    try:
        hq, branch = d.connect_now(), d.connect_now()
        says_hello(hq, "hq", "00:90:33:00:00:01")
        says_hello(branch, "branch", "00:90:33:00:00:02")
        said = [branch.call("checkout", resource="port", holder=f"b{i}") for i in range(5)]  # its max is 3
        said += [hq.call("checkout", resource="port", holder=f"h{i}") for i in range(4)]  # 3 left; 2 reserved for hq
        assert [r["ok"] for r in said] == [True, True, True, False, False, True, True, True, False]
        assert branch.call("checkin", lease=said[0]["lease"])["ok"]
        assert branch.call("checkout", resource="port", holder="b9")["ok"]
    finally:
        await d.stop()
    licenses_now = licenses(("PBX-Port13", 6))
    policy = load_policy(policy_file)
    pool = Pool(licenses_now)
    pool.set_policy(policy)
    result = replay(read_journal(d.workdir / "data" / "journal.sqlite3"), pool, keep_outcomes=True)
    assert result.outcomes is not None and len(result.outcomes) == 10  # 7 grants, 3 refused holders
    assert [(a.holder, a.recorded_granted) for a, code in result.outcomes if a.recorded_granted != (code is None)] == []


def test_asks_are_replayed_in_time_order_also_when_a_row_goes_back_in_time() -> None:
    # Most events queue in the order read, the rest in a heap (console/whatif.py, Replayer.due): a
    # grant written after a later one (the wall clock stepped back) still takes its place in time.
    rows = [hello(T0, "hq", mac="00:90:33:00:00:01"), grant(T0 + 10, "hq", "alice", "1"), grant(T0 + 5, "hq", "bob", "2"),
            checkin(T0 + 20, "hq", "2"), grant(T0 + 21, "hq", "carol", "3")]
    result = replay(rows, Pool(licenses(("PBX-Port13", 1))), keep_outcomes=True)
    assert result.outcomes is not None
    assert [(a.holder, code) for a, code in result.outcomes] == [("bob", None), ("alice", "exhausted"), ("carol", None)]


def test_feeding_the_rows_one_at_a_time_gives_the_same_replay() -> None:
    from licmaster.console.whatif import Replayer

    rows = [hello(T0, "hq", mac="00:90:33:00:00:01"), grant(T0 + 1, "hq", "alice", "1"), grant(T0 + 2, "hq", "bob", "2"),
            refused(T0 + 3, "hq", "dave", T0 + 7), checkin(T0 + 4000, "hq", "1"), grant(T0 + 4001, "hq", "erin", "3"),
            grant(T0 + 9000, "hq", "frank", "4")]
    whole = replay(rows, Pool(licenses(("PBX-Port13", 2))), since=T0, until=T0 + 10_000)
    replayer = Replayer(Pool(licenses(("PBX-Port13", 2))), since=T0, until=T0 + 10_000)
    for row in rows:
        replayer.feed(tuple(row.get(name) for name in events.FIELDS))
    one_by_one = replayer.finish()
    assert one_by_one.to_dict() == whole.to_dict() and whole.families["PBX-Port"].refused == 2  # dave, frank
    assert one_by_one.families["PBX-Port"].held_by_hour == whole.families["PBX-Port"].held_by_hour


def test_the_holding_is_added_to_each_clock_hour_it_spans() -> None:
    hour = (T0 // 3600 + 1) * 3600  # a clock hour's start
    rows = [hello(T0, "hq", mac="00:90:33:00:00:01"),
            grant(hour + 1800, "hq", "alice", "1"), grant(hour + 2400, "hq", "bob", "2"), checkin(hour + 3000, "hq", "2"),
            checkin(hour + 2 * 3600 + 900, "hq", "1")]
    result = replay(rows, Pool(licenses(("PBX-Port13", 2))), since=hour, until=hour + 4 * 3600)
    h = int(hour // 3600)
    # hour 0: alice from :30, bob too from :40 to :50; hour 1: alice; hour 2: alice to :15
    assert result.families["PBX-Port"].held_by_hour == {h: 600 + 2 * 600 + 600, h + 1: 3600, h + 2: 900}


def test_the_collector_runs_seldom_while_a_replay_runs_and_as_before_after_it() -> None:
    import gc

    import pytest

    from licmaster.console.whatif import SELDOM

    seen: list[tuple[int, ...]] = []

    def rows(fail: bool = False) -> Any:
        seen.append(gc.get_threshold())
        yield hello(T0, "hq", mac="00:90:33:00:00:01")
        if fail:
            raise OSError("the journal went away")
        yield grant(T0 + 1, "hq", "alice", "1")

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        assert replay(rows(), Pool(licenses(("PBX-Port13", 1)))).families["PBX-Port"].peak_in_use == 1
        assert seen == [SELDOM] and gc.get_threshold() == (700, 10, 10)
        with pytest.raises(OSError):
            replay(rows(fail=True), Pool(licenses(("PBX-Port13", 1))))
        assert gc.get_threshold() == (700, 10, 10)
        gc.set_threshold(100_000, 5, 5)  # seldom already (the master's process): left as it is
        seen.clear()
        replay(rows(), Pool(licenses(("PBX-Port13", 1))))
        assert seen == [(100_000, 5, 5)] and gc.get_threshold() == (100_000, 5, 5)
    finally:
        gc.set_threshold(*before)


def test_a_recorded_takeover_is_decided_again_by_R_STBY_2_and_the_standby_checks_in_by_the_old_id() -> None:
    """The standby checks a moved lease in by the id it had on the failed PBX: that ends the ask
    (found by `slave-sim replay`: the record granted carol, the replay refused her). Under licenses
    without Standby, the recorded takeover is refused: hq's phones are down, their Ports free."""
    rows = [hello(T0, "hq", mac="00:90:33:00:00:01"),
            hello(T0, "hq-standby", role="standby", standby_for="hq", mac="00:90:33:00:00:02"),
            grant(T0 + 1, "hq", "alice", "1"), grant(T0 + 2, "hq", "bob", "2"),
            {"ts": T0 + 5, "event": "takeover", "node": "hq-standby", "detail": "hq"},
            checkin(T0 + 6, "hq-standby", "2"), grant(T0 + 7, "hq-standby", "carol", "3")]
    covered = replay(rows, Pool(licenses(("PBX-Port13", 2), ("PBX-Standby13", 2))), keep_outcomes=True)
    assert covered.outcomes is not None
    assert [(a.holder, a.node, code) for a, code in covered.outcomes] == [("alice", "hq-standby", None), ("bob", "hq-standby", None),
                                                                         ("carol", "hq-standby", None)]
    assert covered.takeovers == [{"failed": "hq", "standby": "hq-standby", "at": T0 + 5, "moved": 2, "refused": None}]
    assert covered.families["PBX-Port"].refused == 0 and covered.families["PBX-Port"].in_use == 2
    without = replay(rows, Pool(licenses(("PBX-Port13", 2))))
    (refused,) = without.takeovers
    assert refused["moved"] == 0 and "Standby" in refused["refused"]
    assert without.families["PBX-Port"].in_use == 1  # carol's: alice's and bob's went back with hq
