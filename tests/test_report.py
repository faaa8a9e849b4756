"""The usage report, from journal rows: peaks per hour and day, running out, who was refused,
top holders; and from a real master's journal through the CLI and the console."""

from __future__ import annotations

import json
from pathlib import Path

from licmaster.cli import main
from licmaster.daemon.report import render_html, render_text, took_families, usage_report

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
    assert "<svg" in out.read_text()


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
