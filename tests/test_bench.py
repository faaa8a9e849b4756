"""The benchmarks stay runnable: each is run at a tiny size (the figures themselves are not
judged here; machines running tests are shared and noisy)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_hotpath_harness_answers_every_request_it_sends() -> None:
    # --inner is the run callgrind measures; it raises if a checkin found no lease to return
    out = run_bench("bench/hotpath.py", "--inner", "256", "--requests", "256")
    assert out.returncode == 0, out.stderr


def test_the_pool_bench_prints_its_figures_as_json() -> None:
    out = run_bench("bench/pool.py", "--pairs", "500", "--runs", "1", "--sizes", "100,1000")
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert set(figures["live_leases"]) == {"100", "1000"} and figures["ratio_1000_to_100"] > 0


def test_the_abuse_bench_measures_an_attack_beside_the_canary() -> None:
    out = run_bench("bench/abuse.py", "--only", "quiet,never-reads", "--seconds", "0.5")
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert [a["attack"] for a in figures["attacks"]] == ["quiet", "never-reads"]
    assert figures["canary_round_trips"] > 0 and figures["attacks"][1]["descriptors_left"] == 0


def test_the_abuse_bench_floods_absent_pbxs_and_none_outlasts_what_the_ports_allow() -> None:
    # 1.5 s: long enough for absent PBXs to come back (silent for 2 lease TTLs of 300 ms first)
    out = run_bench("bench/abuse.py", "--only", "absent-flood", "--seconds", "1.5")
    assert out.returncode == 0, out.stderr
    [flood] = json.loads(out.stdout)["attacks"]
    assert flood["attack"] == "absent-flood" and flood["nodes"] > 0
    assert flood["granted"] + sum(n for key, n in flood.items() if key.startswith("refused_")) == flood["nodes"]
    end, rows = flood["end"], flood["journal_rows"]
    # absent PBXs hold a Port each: never more than installed, and exactly those the flood left holding one
    assert flood["peak"]["absent_pbxs"] <= flood["installed_ports"] and end["absent_pbxs"] <= flood["installed_ports"]
    assert end["absent_pbxs"] == end["absent_leases"] == end["ports_in_use"] == end["holding_expected"]
    # a PBX that holds nothing (refused, restarted, gone with bye) leaves no session behind
    assert end["holding_nothing"] == 0 and end["sessions"] == end["absent_pbxs"] + end["connected"]
    assert end["hold_s"] == 72 * 3600 and flood["bounds_hold"]
    assert flood["cut_off_left_open"] == 0 and flood["descriptors_left"] == 0
    assert rows["absent"] >= end["absent_pbxs"] and rows["back"] <= flood.get("returns", 0)


def test_the_failover_bench_times_a_kill_and_counts_what_was_lost() -> None:
    out = run_bench("bench/failover.py", "--runs", "1", "--pbxs", "2", "--ports", "2")
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["lost_total"] == 0 and len(figures["runs_s"]) == 1 and figures["runs_s"][0] > 0


def test_the_city_bench_rushes_fails_over_and_empties_with_nothing_lost() -> None:
    out = run_bench("bench/city.py", "--runs", "1", "--pbxs", "20", "--devices", "5")
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    [run] = figures["runs"]
    assert (run["held_after_rush"], run["held_after_failover"], run["lost"], run["left_in_use"]) == (100, 100, 0, 0)
    assert run["standby_snapshot_ms"] is not None and run["failover_s"] > 0


def test_the_reclaim_bench_times_every_end_and_the_hold_is_not_given_back_early() -> None:
    out = run_bench("bench/reclaim.py", "--runs", "1", "--ports", "2")
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert list(figures["ends"]) == ["bye", "takeover", "operator_release", "newer_hello", "restart_fresh"]
    assert all(len(end["runs_ms"]) == 1 and end["runs_ms"][0] is not None for end in figures["ends"].values())
    default, short = figures["hold"]["default"], figures["hold"]["short"]
    # the default hold (72 h): a crashed PBX is absent, and after 2 x TTL still holds its Ports
    assert default["still_held_after_2x_ttl"] and default["other_pbx_checkout"] == "exhausted"
    # a short hold: neither absent before the TTL nor given back before the hold, and given back then
    assert short["absent_after_ms"] is not None and not short["absent_early"]
    assert short["back_after_ms"] is not None and not short["back_early"] and short["other_pbx_got_them_then"]


def test_the_whatif_bench_replays_a_synthetic_journal_below_its_peak_and_refuses_some() -> None:
    out = run_bench("bench/whatif.py", "--phones", "200", "--days", "3")
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    record = figures["record"]
    assert figures["rows"] == record["rows"] > 0 and record["by_event"]["hello"] == figures["pbxs"]
    assert record["by_event"]["grant"] > 0 and record["by_event"]["demand"] > 0  # a busy day ran the record's master out
    [port] = figures["families"]
    # the candidate is below the record's peak: it is all in use at some point, and someone is refused
    assert port["family"] == "PBX-Port" and port["installed"] == figures["candidate_ports"] < record["recorded_peak_in_use"]
    assert port["peak_in_use"] == figures["candidate_ports"] and port["refused"] > 0
    assert port["would_serve_everyone"] > figures["candidate_ports"] and port["traffic"] is not None
    assert figures["replay_s"] > 0 and figures["replay_peak_rss_mb"] > 0
    # against the record's own count, the replay refuses exactly the record's refused phones
    again = run_bench("bench/whatif.py", "--phones", "200", "--days", "3", "--licenses", str(record["recorded_installed"]))
    [as_recorded] = json.loads(again.stdout)["families"]
    assert as_recorded["refused"] == record["by_event"]["demand"] and as_recorded["peak_demand"] == record["recorded_peak_demand"]


def test_the_simulation_bench_runs_seeds_and_reports_hours_faults_and_violations() -> None:
    out = run_bench("bench/sim.py", "--minutes", "0", "--hours", "0.5", "--fault-every", "60")  # faults stop 15 min before the end
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert figures["runs"] == 1 and figures["simulated_hours"] >= 0.5 and figures["faults"] > 0
    assert figures["violations"] == 0 and figures["failed"] == []
