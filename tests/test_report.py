"""The usage report, from journal rows: peaks per hour and day, running out, who was refused,
top holders; and from a real master's journal through the CLI and the console."""

from __future__ import annotations

import json
from pathlib import Path

from licmaster.cli import main
from licmaster.console.report import render_csv, render_html, render_text, took_families, usage_report

HOUR = 3600.0
T0 = 1_764_000_000.0 // HOUR * HOUR  # the start of an hour


def row(ts: float, event: str, node: str | None = None, lease: str | None = None, detail: str | None = None,
        rule: str | None = None, resource: str | None = None, holder: str | None = None) -> dict:
    return {"ts": ts, "event": event, "node": node, "resource": resource, "holder": holder, "lease": lease,
            "detail": detail, "rule": rule}


def test_took_labels_are_read_by_family_bound_or_not() -> None:
    assert took_families("PBX-Port13:1 PBX-IPVA13 bound to 00:90:33:00:00:0a:1") == {"PBX-Port": 1, "PBX-IPVA": 1}
    assert took_families("PBX-Channels13:5") == {"PBX-Channels": 5}
    assert took_families("Port13:1") == {"Port": 1}


def test_peaks_per_hour_and_day_running_out_refusals_and_top_holders() -> None:
    rows = [
        row(T0 - 10, "start"),
        row(T0 - 5, "grant", "pbx1", "1", "PBX-Port13:1"),  # held before the period: counted in it
        row(T0 + 10, "grant", "pbx1", "2", "PBX-Port13:1"),
        row(T0 + 20, "grant", "pbx2", "3", "PBX-Port13:1"),
        row(T0 + 30, "deny", "pbx2", None, "exhausted", "R-PORT-1", "port", "x"),
        row(T0 + 40, "deny_repeated", "pbx2", None, "exhausted x4", "R-PORT-1", "port"),
        row(T0 + 50, "checkin", "pbx1", "2"),
        row(T0 + HOUR + 10, "expire", "pbx1"),  # both of pbx1's back
        row(T0 + HOUR + 20, "grant", "pbx3", "4", "PBX-Channels13:5"),
        row(T0 + HOUR + 30, "start"),  # a restart: nothing held any more until re-synced
        row(T0 + HOUR + 40, "grant", "pbx2", "5", "PBX-Port13:1"),
    ]
    report = usage_report(rows, since=T0, until=T0 + 2 * HOUR)
    assert [h["peak"] for h in report["hours"]] == [{"PBX-Port": 3}, {"PBX-Channels": 5, "PBX-Port": 2}]
    assert len(report["days"]) == 1 and report["days"][0]["peak"] == {"PBX-Channels": 5, "PBX-Port": 3}
    assert report["ran_out"] == [{"hour": report["hours"][0]["hour"], "rule": "R-PORT-1", "refused": 5}]
    assert report["refused"] == [{"code": "exhausted", "rule": "R-PORT-1", "node": "pbx2", "count": 5}]
    assert report["top_holders"][0] == {"node": "pbx3", "peak_leases": 5, "grants": 1}
    assert "5 refused (R-PORT-1)" in render_text(report)
    page = render_html(report)
    assert page.startswith("<!doctype html>") and "<svg" in page and "<script" not in page and "http" not in page.split("<body>")[1]


def test_report_from_a_real_masters_journal(tmp_path: Path, capsys) -> None:
    import asyncio

    from .daemon import in_process

    async def run() -> None:
        d = await in_process(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 2\n')
        pbx = d.connect_now()
        assert pbx.call("hello", node="pbx1", role="pbx", firmware=13, platform="gateway", mac="00:90:33:00:00:01",
                        licensing="central")["ok"]
        for holder in ("a", "b", "c"):
            pbx.call("checkout", resource="port", holder=holder)
        await d.stop()

    asyncio.run(run())
    assert main(["report", "--data-dir", str(tmp_path / "m" / "data"), "--since", "1h", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["days"][0]["peak"] == {"PBX-Port": 2}
    assert report["refused"] == [{"code": "exhausted", "rule": "R-PORT-1", "node": "pbx1", "count": 1}]
    out = tmp_path / "report.html"
    assert main(["report", "--data-dir", str(tmp_path / "m" / "data"), "--html", "--out", str(out)]) == 0
    assert "<svg" in out.read_text() and "<th>headroom</th>" not in out.read_text()
    licenses = str(tmp_path / "m" / "licenses.toml")
    assert main(["report", "--data-dir", str(tmp_path / "m" / "data"), "--html", "--out", str(out), "--licenses", licenses]) == 0
    page = out.read_text()  # --licenses: each day's peak of the installed, with the headroom left, in a table and on the chart
    assert "<th>headroom</th>" in page and "<td>PBX-Port</td><td>2</td><td>2</td><td>0</td>" in page
    assert "<title>PBX-Port: 2 installed</title>" in page
    capsys.readouterr()
    assert main(["report", "--data-dir", str(tmp_path / "m" / "data"), "--since", "1h", "--csv", "--licenses", licenses]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "day,family,node,peak,installed,headroom"
    assert lines[1:] == [f"{report['days'][0]['day']},PBX-Port,*,2,2,0", f"{report['days'][0]['day']},PBX-Port,pbx1,2,,"]


def test_user_licenses_count_while_assigned_and_across_a_restart_and_peaks_come_with_headroom() -> None:
    rows = [
        row(T0 + 10, "start"),
        row(T0 + 20, "assign", "pbx1", None, "13", resource="App(phone)", holder="ann"),
        row(T0 + 30, "assign", "pbx1", None, "13", resource="App(phone)", holder="bob"),
        row(T0 + 40, "grant", "pbx1", "1", "PBX-Port13:1"),
        row(T0 + HOUR + 10, "start"),  # a restart: the Port is gone until re-synced, the user licenses stay
        row(T0 + HOUR + 20, "unassign", "pbx1", None, "13", resource="App(phone)", holder="bob"),
    ]
    report = usage_report(rows, T0, T0 + 2 * HOUR, installed={"App(phone)": 5, "PBX-Port": 3})
    [day] = report["days"]
    assert day["peak"] == {"App(phone)": 2, "PBX-Port": 1} and day["headroom"] == {"App(phone)": 3, "PBX-Port": 2}
    second_hour = report["hours"][-1]
    assert second_hour["peak"] == {"App(phone)": 2, "PBX-Port": 1}  # as the hour began: before the restart and bob's went back
    text = render_text(report)
    assert "App(phone) 2 of 5 (3 left)" in text and "floating and user licenses" in text


def test_a_period_with_nothing_in_use_prints_no_empty_day_and_holders_say_their_unit() -> None:
    quiet = usage_report([row(T0 + 10, "start"), row(T0 + 20, "stop")], T0, T0 + 60)
    assert quiet["days"] == [] and quiet["hours"] == [] and "(nothing in use in the period)" in render_text(quiet)
    busy = usage_report([row(T0, "start"), row(T0 + 1, "grant", "hq", "1", "PBX-Port13:1")], T0, T0 + 60)
    assert "hq: 1 floating licenses at once at its peak, 1 grants in the period" in render_text(busy)


def test_per_site_peaks_and_refusals_and_a_taken_over_lease_stays_its_sites(tmp_path: Path, capsys) -> None:
    sites = {"hq": "hq", "hq-spare": "hq", "branch": "branch"}
    rows = [
        row(T0, "start"),
        row(T0 + 1, "grant", "hq", "1", "PBX-Port13:1"),
        row(T0 + 2, "grant", "hq", "2", "PBX-Port13:1"),
        row(T0 + 3, "grant", "branch", "3", "PBX-Port13:1"),
        row(T0 + 4, "deny", "branch", None, "policy", "policy", "port", "x"),
        row(T0 + 5, "takeover", "hq-spare", None, "hq"),
        row(T0 + 6, "grant", "hq-spare", "4", "PBX-Port13:1"),  # 3 at hq now: 2 taken over, 1 new
        row(T0 + 7, "deny_repeated", "branch", None, "exhausted x3", "R-PORT-1", "port"),
    ]
    report = usage_report(rows, T0, T0 + 60, site_of=sites.get)
    assert report["sites"] == [
        {"site": "branch", "peak": {"PBX-Port": 1}, "refused": 4, "refused_by_code": {"exhausted": 3, "policy": 1}},
        {"site": "hq", "peak": {"PBX-Port": 3}, "refused": 0, "refused_by_code": {}}]
    assert "branch: peak PBX-Port 1; refused 4 (exhausted 3, policy 1)" in render_text(report)
    assert "<h2>Per site</h2>" in render_html(report)
    assert usage_report(rows, T0, T0 + 60)["sites"] is None  # without a policy: no per-site part
    policy = tmp_path / "sites.toml"
    policy.write_text('[site.a]\nnodes = ["a"]\nreserve = { "PBX-UC" = 1 }\n')
    journal_dir = tmp_path / "data"
    journal_dir.mkdir()
    (journal_dir / "journal.sqlite3").write_bytes(b"")
    assert main(["report", "--data-dir", str(journal_dir), "--policy", str(policy)]) == 2
    assert "PBX-UC is a user license" in capsys.readouterr().err


DAY = 86400.0
D0 = 1_764_000_000.0 // DAY * DAY  # 2025-11-24T00:00Z


def grants(ts: float, node: str, tag: str, holders: range, took: str = "PBX-Port13:1") -> list[dict]:
    """One grant a second; lease ids as the master makes them, "<epoch>.<tag>.<n>": opaque strings."""
    return [row(ts + i, "grant", node, f"1764.{tag}.{n}", took, resource="port", holder=f"u{n}") for i, n in enumerate(holders)]


TAKEOVER_JOURNAL = [
    row(D0 - HOUR, "start"),
    *grants(D0 - 3000, "hq", "a", range(70)),  # held before the period: counted in it
    row(D0 - 100, "grant", "hq-spare", "1764.s.0", "PBX-Port13:1", resource="port", holder="u0"),  # the standby holds u0's already
    *grants(D0 + 60, "hq", "a", range(70, 77)),  # hq: 77 at once
    *grants(D0 + 120, "branch", "b", range(10)),
    row(D0 + 200, "grant", "branch", "1764.b.c", "PBX-Channels13:5", resource="conference", holder="room"),
    row(D0 + 10 * HOUR, "takeover", "hq-spare", None, "hq"),  # hq died: 76 move to hq-spare, u0's goes back (it held one)
    *[row(D0 + 10 * HOUR + 60 + n, "checkin", "hq-spare", f"1764.a.{n}") for n in range(50, 70)],  # hq-spare: 57
    # the next day: nothing happens until hq is back, hq-spare hands its 57 back, hq takes 77 again
    row(D0 + DAY + 8 * HOUR, "bye", "hq-spare", None, "57 leases"),
    *grants(D0 + DAY + 8 * HOUR + 10, "hq", "c", range(77)),
    row(D0 + DAY + 9 * HOUR - 60, "stop"),
]


def test_a_takeover_moves_the_leases_and_their_count_and_each_nodes_peak_is_what_it_held() -> None:
    report = usage_report(TAKEOVER_JOURNAL, D0, D0 + 2 * DAY)
    assert report["top_holders"] == [{"node": "hq", "peak_leases": 77, "grants": 84}, {"node": "hq-spare", "peak_leases": 77, "grants": 0},
                                     {"node": "branch", "peak_leases": 15, "grants": 11}]
    assert report["node_days"] == [
        {"day": "2025-11-24", "node": "branch", "peak": {"PBX-Channels": 5, "PBX-Port": 10}},
        {"day": "2025-11-24", "node": "hq", "peak": {"PBX-Port": 77}},
        {"day": "2025-11-24", "node": "hq-spare", "peak": {"PBX-Port": 77}},  # 76 taken over and its own
        {"day": "2025-11-25", "node": "branch", "peak": {"PBX-Channels": 5, "PBX-Port": 10}},  # held as the day began
        {"day": "2025-11-25", "node": "hq", "peak": {"PBX-Port": 77}},
        {"day": "2025-11-25", "node": "hq-spare", "peak": {"PBX-Port": 57}}]
    assert [(d["day"], d["peak"]) for d in report["days"]] == [
        ("2025-11-24", {"PBX-Channels": 5, "PBX-Port": 88}),  # 77 + 1 + 10 before the takeover
        ("2025-11-25", {"PBX-Channels": 5, "PBX-Port": 87})]  # 77 + 10: u0's two became one
    assert len(report["hours"]) == 33  # each hour something was held in, events or not: to the stop
    assert "hq: 77 floating licenses at once at its peak, 84 grants in the period" in render_text(report)


def test_the_csv_has_a_row_per_day_family_and_node_with_the_pools_peak_against_installed() -> None:
    report = usage_report(TAKEOVER_JOURNAL, D0, D0 + 2 * DAY, installed={"PBX-Port": 90, "PBX-Channels": 8, "PBX-Standby": 90})
    assert render_csv(report).splitlines() == [
        "day,family,node,peak,installed,headroom",
        "2025-11-24,PBX-Channels,*,5,8,3",
        "2025-11-24,PBX-Channels,branch,5,,",
        "2025-11-24,PBX-Port,*,88,90,2",
        "2025-11-24,PBX-Port,branch,10,,",
        "2025-11-24,PBX-Port,hq,77,,",
        "2025-11-24,PBX-Port,hq-spare,77,,",
        "2025-11-24,PBX-Standby,*,0,90,90",  # installed and never drawn: a spreadsheet shows it too
        "2025-11-25,PBX-Channels,*,5,8,3",
        "2025-11-25,PBX-Channels,branch,5,,",
        "2025-11-25,PBX-Port,*,87,90,3",
        "2025-11-25,PBX-Port,branch,10,,",
        "2025-11-25,PBX-Port,hq,77,,",
        "2025-11-25,PBX-Port,hq-spare,57,,",
        "2025-11-25,PBX-Standby,*,0,90,90"]
    without = render_csv(usage_report(TAKEOVER_JOURNAL, D0, D0 + 2 * DAY)).splitlines()
    assert without[1] == "2025-11-24,PBX-Channels,*,5,," and len(without) == 13
    named = usage_report([row(T0, "start"), row(T0 + 1, "grant", "=1+2,x", "1", "PBX-Port13:1")], T0, T0 + 60)
    assert render_csv(named).splitlines()[2] == "2025-11-24,PBX-Port,\"'=1+2,x\",1,," # quoted, and not a formula


def test_a_short_period_prints_its_minutes_and_counts_what_was_held_through_it() -> None:
    rows = [row(T0 - 2 * HOUR, "start"), row(T0 - 2 * HOUR + 1, "grant", "hq", "1764.a.1", "PBX-Port13:1")]
    report = usage_report(rows, T0 + 7 * 60, T0 + 37 * 60)  # `--since 30m` at 16:37: nothing happened in it
    text = render_text(report)
    assert text.startswith("Usage report, 2025-11-24T16:07Z to 16:37Z\n")
    assert report["days"][0]["peak"] == {"PBX-Port": 1} and report["top_holders"] == [{"node": "hq", "peak_leases": 1, "grants": 0}]
    assert "<p>2025-11-24T16:07Z to 16:37Z</p>" in render_html(report)
    longer = usage_report(rows, T0 - DAY + 7 * 60, T0 + 37 * 60)
    assert render_text(longer).startswith("Usage report, 2025-11-23T16:07Z to 2025-11-24T16:37Z\n")

