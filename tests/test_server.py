"""The daemon as a PBX sees it: every op and error code of docs/protocol.md, sessions
(reconnect, expiry, bye), events, bad input.

Most tests run a real Master in this process, fed through the in-process harness (no socket,
no process); signals need a real `licmaster serve` process and have one.
"""

from __future__ import annotations

import asyncio
import signal
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest

from licmaster.daemon.storage.journal import read_journal
from licmaster.testing import InProcessMaster

from .daemon import Daemon, in_process

LICENSES = """
[[license]]
type = "PBX-Port13"
count = 3
[[license]]
type = "PBX-Standby13"
count = 3
[[license]]
type = "PBX-Channels13"
count = 4
[[license]]
type = "PBX-IPVA13"
count = 2
bind = "00:90:33:00:00:0a"
[[license]]
type = "App(phone)13"
count = 2
[[license]]
type = "App(softphone)13"
count = 2
[[license]]
type = "PBX-QueueMonitor13"
count = 1
[[license]]
type = "App(innovaphone-recorder)13"
count = 1
"""


@pytest.fixture
async def daemon(tmp_path: Path):
    d = await in_process(tmp_path / "master", LICENSES)
    yield d
    await d.stop()


@pytest.fixture
def process(tmp_path: Path):
    d = Daemon(tmp_path / "process", LICENSES).start()
    yield d
    d.stop()


async def test_hello_heartbeat_usage_bye(daemon: InProcessMaster) -> None:
    pbx = await daemon.connect()
    hello = await pbx.hello("pbx1")
    assert hello["ok"] and hello["heartbeat_ms"] == 200 and hello["lease_ttl_ms"] == 2000
    assert hello["master"] == "test-master" and hello["epoch"] == 1 and isinstance(hello["session"], str)
    assert (await pbx.request("heartbeat"))["ok"]
    usage = await pbx.request("usage")
    ports = next(p for p in usage["pools"] if p["family"] == "PBX-Port")
    assert ports == {"family": "PBX-Port", "version": 13, "bound": None, "installed": 3, "in_use": 0}
    assert usage["summary"] == {"nodes": 1, "connected": 1, "by_role": {"pbx": 1}, "leases": 0}
    assert [n["node"] for n in (await pbx.request("nodes"))["nodes"]] == ["pbx1"]
    assert (await pbx.request("bye"))["ok"]
    assert await pbx.closed()


async def test_not_hello_unknown_op_bad_request(daemon: InProcessMaster) -> None:
    pbx = await daemon.connect()
    assert (await pbx.request("checkout", resource="port", holder="a"))["error"] == "not_hello"
    await pbx.hello("pbx1")
    unknown = await pbx.request("teleport")
    assert unknown["error"] == "unknown_op" and "teleport" in unknown["message"]
    bad = await pbx.request("checkout", resource="port")
    assert bad["error"] == "bad_request" and bad["field"] == "holder"
    bad_count = await pbx.request("checkout", resource="conference", holder="r", count="many")
    assert bad_count["field"] == "count"
    assert (await pbx.request("checkout", resource="radio", holder="x"))["error"] == "unknown_resource"
    assert (await pbx.request("assign", user="u", families=["PBX-Nope"]))["error"] == "unknown_license"


async def test_bad_hello_names_the_field(daemon: InProcessMaster) -> None:
    pbx = await daemon.connect()
    reply = await pbx.hello("bad name!")
    assert reply["error"] == "bad_request" and reply["field"] == "node"
    reply = await pbx.hello("pbx1", mac="zz")
    assert reply["field"] == "mac"
    reply = await pbx.hello("pbx1", role="standby")
    assert reply["field"] == "standby_for"


async def test_checkout_checkin_exhausted_idempotent_pipelined(daemon: InProcessMaster) -> None:
    pbx = await daemon.connect()
    await pbx.hello("pbx1")
    for i in range(5):  # pipelined: all sent before any reply is read
        pbx.send({"op": "checkout", "id": 100 + i, "resource": "port", "holder": f"u{i % 4}"})
    replies = [await pbx.recv() for _ in range(5)]
    assert [r["id"] for r in replies] == [100, 101, 102, 103, 104]  # in request order
    assert [r["ok"] for r in replies] == [True, True, True, False, True]
    assert replies[3]["error"] == "exhausted" and replies[3]["rule"] == "R-PORT-1" and replies[3]["free"] == 0
    assert replies[4]["lease"] == replies[0]["lease"]  # same (node, resource, holder): same lease
    assert replies[0]["took"] == [{"family": "PBX-Port", "version": 13, "count": 1}]
    assert (await pbx.request("checkin", lease=replies[0]["lease"]))["ok"]
    again = await pbx.request("checkin", lease=replies[0]["lease"])  # again: refused, nothing else happens
    assert again["error"] == "unknown_lease" and again["lease"] == replies[0]["lease"] and "nothing was checked in" in again["message"]
    assert (await pbx.request("checkin", lease="nope"))["error"] == "unknown_lease"
    assert (await pbx.request("checkout", resource="port", holder="u3"))["ok"]


async def test_rule_errors_on_the_wire(daemon: InProcessMaster) -> None:
    v11 = await daemon.connect()
    await v11.hello("old", firmware=8)
    qm = await v11.request("checkout", resource="queue-monitor", holder="q")
    assert (qm["error"], qm["rule"]) == ("version", "R-VER-4")
    dec = await daemon.connect()
    await dec.hello("branch", licensing="decentral")
    d = await dec.request("checkout", resource="port", holder="a")
    assert (d["error"], d["rule"]) == ("decentral", "R-MODE-2")
    vm = await daemon.connect()
    await vm.hello("vm", platform="ipva", mac="00:90:33:00:00:0b")
    b = await vm.request("checkout", resource="port", holder="a")
    assert (b["error"], b["rule"]) == ("bound_elsewhere", "R-IPVA-2")
    pre = await vm.request("assign", user="ann", families=["App(softphone)"])
    assert (pre["error"], pre["rule"], pre["missing"]) == ("prerequisite", "R-USER-2", ["App(phone)"])
    ok = await vm.request("assign", user="ann", families=["App(phone)", "App(softphone)"])
    assert ok["ok"] and len(ok["took"]) == 2
    assert (await vm.request("unassign", user="ann", families=["App(softphone)"]))["ok"]


async def test_a_journaled_denial_keeps_its_words_so_the_ipva_row_names_the_mac_it_needed(
        daemon: InProcessMaster, capsys: pytest.CaptureFixture[str]) -> None:
    vm = await daemon.connect()
    await vm.hello("vm", platform="ipva", mac="00:90:33:00:00:0b")
    await vm.request("checkout", resource="port", holder="a")
    assert daemon.master is not None and daemon.master.journal is not None
    daemon.master.dispatch.denials.flush(0)
    await daemon.master.journal.flush()
    [row] = read_journal(daemon.workdir / "data" / "journal.sqlite3", event="deny")
    assert (row["node"], row["detail"], row["rule"]) == ("vm", "bound_elsewhere", "R-IPVA-2")
    assert "00:90:33:00:00:0b" in row["note"] and "bound to another device (00:90:33:" in row["note"]
    from licmaster.cli import main
    assert main(["journal", "--data-dir", str(daemon.workdir / "data"), "--event", "deny"]) == 0
    assert "rule=R-IPVA-2 — every PBX-IPVA license is bound to another device (00:90:33:00:00:0a)" in capsys.readouterr().out


async def test_takeover_moves_leases_and_fences_the_failed_node(daemon: InProcessMaster) -> None:
    slave = await daemon.connect()
    await slave.hello("slave")
    lease = (await slave.request("checkout", resource="port", holder="alice"))["lease"]
    stby = await daemon.connect()
    await stby.hello("slave-stby", role="standby", standby_for="slave")
    wrong = await stby.request("takeover", failed="other")
    assert wrong["error"] == "bad_request"
    moved = await stby.request("takeover", failed="slave")
    assert moved["ok"] and moved["moved"] == 1 and moved["leases"][0]["lease"] == lease
    fenced = await slave.recv()
    assert fenced["event"] == "fenced" and "slave-stby" in fenced["reason"]
    usage = await stby.request("usage")
    assert next(p for p in usage["pools"] if p["family"] == "PBX-Port")["in_use"] == 1


async def test_standby_unlicensed_on_the_wire(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 5\n[[license]]\ntype = "PBX-Standby13"\ncount = 4\n')
    try:
        stby = await d.connect()
        await stby.hello("s", role="standby", standby_for="x")
        reply = await stby.request("takeover", failed="x")
        assert (reply["error"], reply["rule"]) == ("standby_unlicensed", "R-STBY-2")
    finally:
        await d.stop()


async def test_smb_error_on_the_wire(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", '[[license]]\ntype = "Port13$20"\ncount = 1\n')
    try:
        a, b = await d.connect(), await d.connect()
        await a.hello("office")
        await b.hello("slave")
        assert (await a.request("checkout", resource="port", holder="x"))["ok"]
        reply = await b.request("checkout", resource="port", holder="y")
        assert (reply["error"], reply["rule"]) == ("smb", "R-SMB-3")
    finally:
        await d.stop()


async def test_reconnect_takes_over_the_session_without_double_counting(daemon: InProcessMaster) -> None:
    first = await daemon.connect()
    await first.hello("pbx1")
    lease = (await first.request("checkout", resource="port", holder="alice"))["lease"]
    second = await daemon.connect()
    await second.hello("pbx1")
    fenced = await first.recv()
    assert fenced["event"] == "fenced"
    assert await first.closed()
    again = await second.request("checkout", resource="port", holder="alice")
    assert again["lease"] == lease
    usage = await second.request("usage")
    assert next(p for p in usage["pools"] if p["family"] == "PBX-Port")["in_use"] == 1


async def test_sync_makes_the_sessions_leases_exactly_the_set(daemon: InProcessMaster) -> None:
    pbx = await daemon.connect()
    await pbx.hello("pbx1")
    await pbx.request("checkout", resource="port", holder="gone")
    reply = await pbx.request("sync", leases=[{"resource": "port", "holder": "a"}, {"resource": "port", "holder": "b"},
                                              {"resource": "conference", "holder": "room", "count": 9}])
    assert reply["ok"] and reply["released"] == 1
    assert [x["holder"] for x in reply["leases"]] == ["a", "b"]
    assert [(x["index"], x["error"]) for x in reply["denied"]] == [(2, "exhausted")]
    bad = await pbx.request("sync", leases=[{"resource": "port"}])
    assert bad["error"] == "bad_request" and bad["field"] == "leases[0].holder"


async def test_a_silent_pbx_is_absent_after_the_ttl_keeps_its_leases_for_its_hold_then_they_come_back(tmp_path: Path) -> None:
    daemon = await in_process(tmp_path / "m", LICENSES, heartbeat_ms=100, lease_ttl_ms=600, hold_s=2.5)
    try:
        await silent_pbx_absent_then_expired(daemon)
    finally:
        await daemon.stop()


def port_in_use(usage: dict[str, Any]) -> int:
    return int(next(p for p in usage["pools"] if p["family"] == "PBX-Port")["in_use"])


async def silent_pbx_absent_then_expired(daemon: InProcessMaster) -> None:
    silent = await daemon.connect()
    await silent.hello("silent")
    for holder in ("a", "b", "c"):
        assert (await silent.request("checkout", resource="port", holder=holder))["ok"]
    watcher = await daemon.connect()
    await watcher.hello("watcher", role="observer")
    fenced = asyncio.create_task(silent.recv(timeout=5))  # the TTL (600 ms): absent, and its connection closed
    while not fenced.done():  # the watcher speaks meanwhile (an observer holding nothing expires at the TTL)
        await watcher.request("heartbeat")
        await asyncio.sleep(0.05)
    event = fenced.result()
    assert event["event"] == "fenced" and event["reason"].startswith("absent")
    usage = await watcher.request("usage")
    assert port_in_use(usage) == 3  # absent is not gone: the hold keeps them its own
    assert usage["absent"]["pbxs"] == 1 and usage["absent"]["leases"] == 3
    assert [(a["node"], a["held"]) for a in usage["absent"]["shown"]] == [("silent", {"port": 3})]
    assert "silent" in [n["node"] for n in (await watcher.request("nodes"))["nodes"]]
    for _ in range(80):  # the hold (2.5 s from its last word); keep the watcher alive meanwhile
        await asyncio.sleep(0.05)
        if port_in_use(await watcher.request("usage")) == 0:
            break
    else:
        pytest.fail("the silent PBX's leases were never reclaimed after its hold")
    assert "silent" not in [n["node"] for n in (await watcher.request("nodes"))["nodes"]]
    await asyncio.sleep(0.1)
    journal = daemon.workdir / "data" / "journal.sqlite3"
    assert [e["node"] for e in read_journal(journal, event="absent")] == ["silent"]
    assert [(e["node"], e["detail"]) for e in read_journal(journal, event="expire")] == [("silent", "3")]


async def test_an_absent_pbx_that_comes_back_within_its_hold_keeps_every_lease(tmp_path: Path) -> None:
    daemon = await in_process(tmp_path / "m", LICENSES, heartbeat_ms=100, lease_ttl_ms=600)  # the default hold, 72 h
    try:
        pbx = await daemon.connect()
        hello = await pbx.hello("branch")
        assert hello["hold_s"] == 259_200
        leases = [(await pbx.request("checkout", resource="port", holder=h))["lease"] for h in ("a", "b")]
        assert (await pbx.recv(timeout=5))["reason"].startswith("absent")
        back = await daemon.connect()  # the link is back: a new connection, a hello, the re-sync
        await back.hello("branch")
        synced = await back.request("sync", leases=[{"resource": "port", "holder": "a"}, {"resource": "port", "holder": "b"}])
        assert synced["ok"] and sorted(g["lease"] for g in synced["leases"]) == sorted(leases) and synced["released"] == 0
        usage = await back.request("usage")
        assert port_in_use(usage) == 2 and usage["absent"]["pbxs"] == 0
        await asyncio.sleep(0.1)
        assert [e["node"] for e in read_journal(daemon.workdir / "data" / "journal.sqlite3", event="back")] == ["branch"]
    finally:
        await daemon.stop()


async def test_a_pbx_started_afresh_says_so_and_what_its_node_held_is_free_at_once(tmp_path: Path) -> None:
    daemon = await in_process(tmp_path / "m", LICENSES, heartbeat_ms=100, lease_ttl_ms=600)
    try:
        before = await daemon.connect()
        await before.hello("branch")
        for holder in ("a", "b"):
            assert (await before.request("checkout", resource="port", holder=holder))["ok"]
        restarted = await daemon.connect()  # the PBX rebooted: it holds nothing, and says so
        assert (await restarted.hello("branch", fresh=True))["ok"]
        assert port_in_use(await restarted.request("usage")) == 0
        await asyncio.sleep(0.1)
        released = read_journal(daemon.workdir / "data" / "journal.sqlite3", event="release")
        assert [(e["holder"], e["detail"]) for e in released] == [("a", "started afresh"), ("b", "started afresh")]
        refused = await restarted.hello("branch", fresh="yes")
        assert refused["error"] == "bad_request" and "fresh" in refused["message"]
    finally:
        await daemon.stop()


async def test_broken_frames_close_only_their_connection(daemon: InProcessMaster) -> None:
    good = await daemon.connect()
    await good.hello("good")
    for garbage in (struct.pack(">I", 0), struct.pack(">I", 10_000_000), struct.pack(">I", 3) + b"\xc1\xc1\xc1",
                    struct.pack(">I", 2) + msgpack.packb([1]), struct.pack(">I", 3) + msgpack.packb({}) + b"xx",
                    struct.pack(">I", 4) + msgpack.packb({1: 2}) + b"\x00"):
        bad = await daemon.connect()
        bad.send_bytes(garbage)
        reply = await bad.recv()
        assert reply["error"] == "bad_frame" and reply["id"] is None
        assert await bad.closed()
    assert (await good.request("checkout", resource="port", holder="a"))["ok"]


async def test_a_connection_that_never_says_hello_is_closed(daemon: InProcessMaster) -> None:
    idle = await daemon.connect()
    assert await idle.closed(timeout=5)  # hello_timeout_ms = 1000 here


async def test_auth_token(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", LICENSES, auth_token="s3cret")
    try:
        anon = await d.connect()
        assert (await anon.hello("pbx1"))["error"] == "auth_failed"
        assert await anon.closed()
        wrong = await d.connect()
        assert (await wrong.hello("pbx1", auth={"token": "guess"}))["error"] == "auth_failed"
        good = await d.connect()
        assert (await good.hello("pbx1", auth={"token": "s3cret"}))["ok"]
    finally:
        await d.stop()


async def test_max_connections_sheds_with_busy(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", LICENSES, max_connections=2)
    try:
        a, b = await d.connect(), await d.connect()
        await a.hello("a")
        await b.hello("b")
        c = await d.connect()
        reply = await c.hello("c")
        assert reply["error"] == "busy" and reply["retry_ms"] > 0
        assert await c.closed()
        assert (await a.request("heartbeat"))["ok"]
    finally:
        await d.stop()


async def test_sigterm_sends_shutdown_and_exits_cleanly(process: Daemon) -> None:
    daemon = process
    pbx = await daemon.connect()
    await pbx.hello("pbx1")
    daemon.signal(signal.SIGTERM)
    event = await pbx.recv()
    assert event["event"] == "shutdown"
    assert await pbx.closed()
    assert daemon.proc is not None and daemon.proc.wait(10) == 0


async def test_sighup_reloads_licenses_without_revoking(process: Daemon) -> None:
    daemon = process
    pbx = await daemon.connect()
    await pbx.hello("pbx1")
    for holder in ("a", "b", "c"):
        await pbx.request("checkout", resource="port", holder=holder)
    daemon.license_file.write_text('[[license]]\ntype = "PBX-Port13"\ncount = 2\n[[license]]\ntype = "PBX-IPVA13"\ncount = 2\nbind = "00:90:33:00:00:0a"\n')
    daemon.signal(signal.SIGHUP)
    for _ in range(100):
        usage = await pbx.request("usage")
        port = next(p for p in usage["pools"] if p["family"] == "PBX-Port")
        if port["installed"] == 2:
            break
        await asyncio.sleep(0.02)
    assert (port["installed"], port["in_use"]) == (2, 3)  # nothing revoked, the overflow reported
    assert "reload_problem" in daemon.log
    assert (await pbx.request("checkout", resource="port", holder="d"))["error"] == "exhausted"
    daemon.license_file.write_text('[[license]]\ntype = "PBX-Port13"\ncount = 0\n')  # broken: refused whole
    daemon.signal(signal.SIGHUP)
    await asyncio.sleep(0.3)
    assert "reload_refused" in daemon.log
    usage = await pbx.request("usage")
    assert next(p for p in usage["pools"] if p["family"] == "PBX-Port")["installed"] == 2


async def test_sessions_that_come_and_go_leave_nothing_behind(daemon: InProcessMaster) -> None:
    for i in range(30):
        pbx = await daemon.connect()
        await pbx.hello(f"transient{i}")
        await pbx.request("checkout", resource="port", holder="x")
        assert (await pbx.request("bye"))["ok"]
    watcher = await daemon.connect()
    await watcher.hello("watcher", role="observer")
    usage = await watcher.request("usage")
    assert [n["node"] for n in (await watcher.request("nodes"))["nodes"]] == ["watcher"]
    assert next(p for p in usage["pools"] if p["family"] == "PBX-Port")["in_use"] == 0


async def test_an_ssa_that_ends_while_the_master_runs_is_read_again_r_ssa_1(tmp_path: Path) -> None:
    # In-process, for a calendar the test can turn: the real Master, socket and client.
    import datetime as dt

    from licmaster.client import LicenseError, MasterClient
    from licmaster.daemon.config import Config
    from licmaster.daemon.master import Master

    term_ends = dt.date(2027, 6, 30)
    (tmp_path / "licenses.toml").write_text(f'[[license]]\ntype = "PBX-Port12"\ncount = 2\nssa_until = {term_ends}\n')
    master = Master(Config(listen="127.0.0.1:0", data_dir=tmp_path / "data", licenses=(tmp_path / "licenses.toml",),
                           heartbeat_ms=100, lease_ttl_ms=2000, grace_ms=0))
    calendar = [term_ends]
    master.today = lambda: calendar[0]
    await master.start()
    pbx = MasterClient([master.address], "pbx13", firmware=13)
    try:
        await pbx.connect()
        assert (await pbx.checkout("port", "alice")).lease  # under SSA: a V12 Port serves V13

        calendar[0] = term_ends + dt.timedelta(days=1)  # midnight: the term is over
        await asyncio.sleep(0.3)  # a few reaper ticks
        with pytest.raises(LicenseError) as refused:
            await pbx.checkout("port", "bob")
        assert (refused.value.code, refused.value.rule) == ("version", "R-VER-2")
        assert "alice" in {lease.holder for lease in pbx.leases.values()}  # kept: never revoked silently
        ports = {p["version"]: (p["installed"], p["in_use"]) for p in (await pbx.usage())["pools"] if p["family"] == "PBX-Port"}
        assert ports == {12: (2, 0), 13: (0, 1)}  # alice's V13 Port is over what is installed: reported
        assert master.revalue_at_date_change() is None  # once a day, not at every tick
    finally:
        await pbx.close()
        await master.stop()
    ended = read_journal(tmp_path / "data" / "journal.sqlite3", event="ssa_ended")
    assert len(ended) == 1 and ended[0]["rule"] == "R-SSA-1" and "PBX-Port12" in ended[0]["detail"]


async def test_recording_is_allowed_once_a_user_has_the_recorder_license_r_rec_1(daemon: InProcessMaster) -> None:
    pbx = await daemon.connect()
    await pbx.hello("pbx1")
    refused = await pbx.request("recording")
    assert (refused["error"], refused["rule"], refused["missing"]) == ("prerequisite", "R-REC-1", ["App(innovaphone-recorder)"])
    assert (await pbx.request("assign", user="rec", families=["App(innovaphone-recorder)"]))["ok"]
    assert (await pbx.request("recording"))["ok"]
    assert (await pbx.request("unassign", user="rec", families=["App(innovaphone-recorder)"]))["ok"]
    assert (await pbx.request("recording"))["error"] == "prerequisite"


async def test_an_operator_checkout_may_name_its_software_version_r_op_3(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", '[[license]]\ntype = "PBX-Operator12"\ncount = 1\n')
    try:
        pbx = await d.connect()
        await pbx.hello("pbx13", firmware=13)
        assert (await pbx.request("checkout", resource="operator", holder="desk"))["rule"] == "R-VER-2"
        reply = await pbx.request("checkout", resource="operator", holder="desk", client_version=12)
        assert reply["ok"] and reply["took"] == [{"family": "PBX-Operator", "version": 12, "count": 1}]
        for bad in ({"resource": "port", "client_version": 12}, {"resource": "operator", "client_version": "12"},
                    {"resource": "operator", "client_version": 0}):
            refused = await pbx.request("checkout", holder="x", **bad)
            assert refused["error"] == "bad_request" and refused["field"] == "client_version", refused
        synced = await pbx.request("sync", leases=[{"resource": "operator", "holder": "desk", "client_version": 12}])
        assert synced["ok"] and synced["denied"] == [] and len(synced["leases"]) == 1
    finally:
        await d.stop()
