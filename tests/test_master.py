"""The master's lifecycle in-process: one way to build the pool (start and promote), the replica
stream's version, role changes journaled."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from licmaster.console.metrics import MasterCollector
from licmaster.daemon.role import Role
from licmaster.daemon.storage.journal import read_journal
from licmaster.wire.events import STREAM_VERSION

from .daemon import in_process

GOOD = '[[license]]\ntype = "PBX-Port13"\ncount = 7\n[[license]]\ntype = "PBX-Standby13"\ncount = 7\n'
# One entry broken (count 0): loading keeps the valid entries, so without the check the pool
# would silently lose every Port.
BROKEN = '[[license]]\ntype = "PBX-Port13"\ncount = 0\n[[license]]\ntype = "PBX-Standby13"\ncount = 7\n'


async def test_a_failover_onto_a_broken_license_set_keeps_the_last_good_one_and_says_so(tmp_path: Path) -> None:
    # A standby whose master never answers (nothing listens on port 9): it takes over after 300 ms.
    d = await in_process(tmp_path / "standby", GOOD, standby_of="127.0.0.1:9", takeover_after_ms=300, grace_ms=0)
    try:
        assert d.master is not None and d.master.role.state is Role.STANDBY
        d.license_file.write_text(BROKEN)  # someone edits the files while the standby waits
        for _ in range(100):
            if d.master.role.serving:
                break
            await asyncio.sleep(0.05)
        assert d.master.role.state is Role.ACTING
        ports = [b for b in d.master.pool.buckets() if b.family == "PBX-Port"]
        assert [(b.installed, b.version) for b in ports] == [(7, 13)]  # the whole good set, not a partial one
        await asyncio.sleep(0.1)  # a journal flush
        refused = read_journal(tmp_path / "standby" / "data" / "journal.sqlite3", event="licenses_refused")
        assert refused and "`count` must be at least 1" in refused[0]["detail"]
    finally:
        await d.stop()


async def test_a_standby_of_another_stream_version_is_refused_with_version(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", GOOD)
    try:
        observer = await d.connect()
        assert (await observer.hello("standby-master", role="observer"))["ok"]
        for asked in (None, STREAM_VERSION + 1, "1"):
            fields = {} if asked is None else {"stream": asked}
            reply = await observer.request("replicate", **fields)
            assert reply["error"] == "version" and reply["stream"] == STREAM_VERSION, reply
            assert "run masters of one version" in reply["message"]
        reply = await observer.request("replicate", stream=STREAM_VERSION)
        assert reply["ok"] and reply["stream"] == STREAM_VERSION and (reply["leases"], reply["snapshot_parts"]) == (0, 1)
    finally:
        await d.stop()


async def test_after_a_clean_stop_grace_ends_with_the_last_re_sync_and_is_journaled(tmp_path: Path) -> None:
    # A clean stop journals every grant it answered: once every lease held before is re-synced,
    # nothing is left to wait for, and new checkouts are served at once (not after grace_ms).
    d = await in_process(tmp_path / "m", GOOD, grace_ms=60_000)
    pbx = await d.connect()
    await pbx.hello("pbx1")
    assert (await pbx.request("checkout", resource="port", holder="alice"))["ok"]
    await d.stop()
    d = await in_process(tmp_path / "m", GOOD, grace_ms=60_000)  # a restart on the same data: grace
    try:
        assert d.master is not None and d.master.role.state is Role.GRACE
        pbx = await d.connect()
        await pbx.hello("pbx1")
        assert (await pbx.request("checkout", resource="port", holder="new"))["error"] == "grace"
        synced = await pbx.request("sync", leases=[{"resource": "port", "holder": "alice"}])
        assert synced["ok"] and [lease["holder"] for lease in synced["leases"]] == ["alice"]
        assert d.master.role.state is Role.ACTING  # the minute of grace was not waited out
        assert (await pbx.request("checkout", resource="port", holder="new"))["ok"]
    finally:
        await d.stop()
    roles = [r["detail"] for r in read_journal(tmp_path / "m" / "data" / "journal.sqlite3", event="role")]
    assert roles == ["starting -> acting: started", "acting -> stopped: stopping",
                     "starting -> grace: restarted: PBXs re-take what they held first",
                     "grace -> acting: every lease held before was re-synced, moved or given back", "acting -> stopped: stopping"]


async def test_reading_grace_never_ends_it_only_the_reaper_does(tmp_path: Path) -> None:
    # A /metrics scrape, /api/v1/ha and the dashboard read grace: none of them may change the role.
    d = await in_process(tmp_path / "m", GOOD, grace_ms=60_000)
    pbx = await d.connect()
    await pbx.hello("pbx1")
    assert (await pbx.request("checkout", resource="port", holder="alice"))["ok"]
    await d.stop()
    d = await in_process(tmp_path / "m", GOOD, grace_ms=60_000)
    try:
        assert d.master is not None and d.master.role.state is Role.GRACE
        dispatch = d.master.dispatch
        now = asyncio.get_running_loop().time()
        d.master.role.grace_until = now - 0.001  # its time is over; the reaper has not ticked yet
        assert dispatch.grace_left_ms() == 0
        scraped = {m.name: m for m in MasterCollector(d.master).collect()}
        assert scraped["licmaster_grace_seconds"].samples[0].value == 0
        assert d.master.role.state is Role.GRACE  # read, and scraped: unchanged
        dispatch.grace.end_if_over(now)
        assert d.master.role.state is Role.ACTING
    finally:
        await d.stop()


# ---------------------------------------------------------------- a reload and standby cover (issue 23)

COVERED = '[[license]]\ntype = "PBX-Port13"\ncount = 7\n[[license]]\ntype = "PBX-Standby13"\ncount = 7\n'
MORE_PORTS = '[[license]]\ntype = "PBX-Port13"\ncount = 9\n[[license]]\ntype = "PBX-Standby13"\ncount = 7\n'
STANDBY_PBX = {"role": "standby", "standby_for": "hq"}


async def test_a_reload_that_would_take_a_connected_standbys_cover_away_is_refused_unless_forced(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", COVERED, lease_ttl_ms=60_000)  # no session expires while it runs
    try:
        assert d.master is not None
        hq, standby = await d.connect(), await d.connect()
        assert (await hq.hello("hq"))["ok"] and (await standby.hello("hq-standby", **STANDBY_PBX))["ok"]
        assert (await hq.request("checkout", resource="port", holder="alice"))["ok"]
        assert d.master.standby_cover().reason == "covered"
        d.license_file.write_text(MORE_PORTS)
        assert d.master.reload("operator") is None
        refused = d.master.last_reload
        assert refused is not None and refused["ok"] is False and refused["forceable"] is True
        [problem] = refused["problems"]
        assert "hq-standby (for hq)" in problem and "7 usable Standby for 9 Port" in problem and "(R-STBY-2)" in problem
        assert [(b.family, b.installed) for b in d.master.pool.buckets() if b.family == "PBX-Port"] == [("PBX-Port", 7)]
        assert d.master.standby_cover().held  # the set in force still covers it

        assert d.master.reload("operator", force=True) is not None
        taken = d.master.last_reload
        assert taken is not None and taken["ok"] and taken["forced"] and taken["changed"] == {"PBX-Port": [7, 9]}
        assert any(w["rule"] == "R-STBY-2" and "7 usable Standby for 9 Port" in w["message"] for w in taken["warnings"])
        cover = d.master.standby_cover()
        assert (cover.held, cover.reason, cover.rule, cover.standbys) == (False, "standby_short", "R-STBY-2", ("hq-standby (for hq)",))
        # what the forced reload warned of: the takeover is refused
        assert (await standby.request("takeover", failed="hq"))["error"] == "standby_unlicensed"
        assert d.master.journal is not None
        await d.master.journal.flush()
    finally:
        await d.stop()
    rows = read_journal(tmp_path / "m" / "data" / "journal.sqlite3")
    said = [(r["event"], r["rule"]) for r in rows if r["event"] in ("reload", "reload_refused")]
    assert said == [("reload_refused", "R-STBY-2"), ("reload", "R-STBY-2")]
    assert "FORCED: standby PBX hq-standby (for hq) lost its cover" in next(r["detail"] for r in rows if r["event"] == "reload")


async def test_without_a_standby_pbx_connected_the_reload_is_taken_and_warns_as_check_does(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="licmaster")
    d = await in_process(tmp_path / "m", MORE_PORTS, lease_ttl_ms=60_000)  # the start warns already
    try:
        assert d.master is not None
        started = [r for r in caplog.records if r.getMessage() == "licenses_warning"]
        assert [r.fields["rule"] for r in started] == ["R-STBY-2"]  # type: ignore[attr-defined]
        assert d.master.standby_cover().reason == "standby_short"  # Standby installed: it is meant to cover
        d.license_file.write_text(COVERED)
        assert d.master.reload("operator") is not None and d.master.last_reload is not None
        assert d.master.last_reload["warnings"] == [] and d.master.standby_cover().reason == "covered"
        pbx = await d.connect()
        assert (await pbx.hello("hq"))["ok"]  # a PBX, no standby PBX
        caplog.clear()
        d.license_file.write_text(MORE_PORTS)
        assert d.master.reload("operator") is not None  # nobody's cover taken away: taken, and said
        taken = d.master.last_reload
        assert taken is not None and taken["ok"] and not taken["forced"]
        assert [w["rule"] for w in taken["warnings"]] == ["R-STBY-2"]
        logged = [r for r in caplog.records if r.getMessage() == "reload_warning"]
        assert len(logged) == 1 and "7 usable Standby for 9 Port" in logged[0].fields["message"]  # type: ignore[attr-defined]
        assert logged[0].levelno == logging.WARNING
    finally:
        await d.stop()


async def test_each_reload_request_gets_the_outcome_of_its_own_reload(tmp_path: Path) -> None:
    from licmaster.daemon import reload_requests

    d = await in_process(tmp_path / "m", COVERED, lease_ttl_ms=60_000)
    try:
        assert d.master is not None
        data = tmp_path / "m" / "data"
        hq, standby = await d.connect(), await d.connect()
        assert (await hq.hello("hq"))["ok"] and (await standby.hello("hq-standby", **STANDBY_PBX))["ok"]
        d.license_file.write_text(MORE_PORTS)
        plain = reload_requests.ask(data, force=False)
        forced = reload_requests.ask(data, force=True)
        d.master.reload("SIGHUP")  # one signal, both requests: a reload each, in the order asked
        first, second = reload_requests.collect(data, plain), reload_requests.collect(data, forced)
        assert first is not None and first["ok"] is False and first["forceable"] is True
        assert second is not None and second["ok"] is True and second["forced"] is True
        assert second["changed"] == {"PBX-Port": [7, 9]} and second["by"] == "SIGHUP"
        assert reload_requests.collect(data, plain) is None  # collected once, then gone
        assert not [p.name for p in data.iterdir() if p.name.startswith("reload-")]
        assert d.master.reload("SIGHUP") is not None  # a signal with no request: one reload, as ever
    finally:
        await d.stop()
