"""Hostile input, in-process: every request answered, strict names, nothing kept for a refusal."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from licmaster.daemon import logs
from licmaster.daemon.storage.journal import read_journal
from licmaster.wire.codec import HEADER, FrameDecoder, ReplyParts, encode

from .daemon import in_process

LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 5\n[[license]]\ntype = "PBX-Standby13"\ncount = 5\n'
PBX = {"role": "pbx", "firmware": 13, "platform": "gateway", "mac": "00:90:33:00:00:01", "licensing": "central"}


def nested_frame(fields: bytes, depth: int) -> bytes:
    """A request map whose last value is an array nested `depth` deep (built by hand: msgpack's
    own packer refuses that depth)."""
    payload = fields + b"\x91" * depth + b"\xc0"
    return HEADER.pack(len(payload)) + payload


@pytest.mark.parametrize("field", ["v", "id", "op", "node", "resource", "holder", "count", "lease", "families"])
async def test_a_value_nested_a_thousand_deep_is_answered_and_the_rest_of_the_read_too(tmp_path: Path, field: str) -> None:
    d = await in_process(tmp_path / "m", LICENSES)
    try:
        pbx = d.connect_now()
        assert pbx.call("hello", node="pbx1", **PBX)["ok"]
        head = {"op": "checkout", "id": 2, "resource": "port", "holder": "b"}
        head.pop(field, None)
        packed_head = encode(head)[HEADER.size:]
        fields = bytes([packed_head[0] + 1]) + packed_head[1:] + encode(field)[HEADER.size:]  # one more key: the deep one
        pbx.send_bytes(encode({"op": "checkout", "id": 1, "resource": "port", "holder": "a"})
                       + nested_frame(fields, 1000) + encode({"op": "checkout", "id": 3, "resource": "port", "holder": "c"}))
        replies = pbx.take()
        assert [r.get("id") for r in replies][0] == 1 and replies[0]["ok"]  # granted, and the PBX learns its lease
        assert replies[-1]["id"] == 3 and replies[-1]["ok"]
        middle = replies[1]
        if field in ("v", "id", "op", "resource", "holder", "count"):  # read by checkout: refused, bounded
            assert middle["ok"] is False and middle["error"] == "bad_request" and len(middle["message"]) < 300, middle
            assert middle["id"] == (None if field == "id" else 2)
        else:  # a field checkout does not read is ignored, however deep
            assert middle["id"] == 2 and middle["ok"], middle
    finally:
        await d.stop()


@pytest.mark.parametrize(("op", "fields"), [
    ("hello", {"node": "pbx-1\n", **PBX}),
    ("hello", {"node": "stby", **PBX, "role": "standby", "standby_for": "pbx-1\n"}),
    ("hello", {"node": "pbx-1\x00", **PBX}),
])
async def test_names_with_a_trailing_newline_or_control_characters_are_refused(tmp_path: Path, op: str, fields: dict) -> None:
    d = await in_process(tmp_path / "m", LICENSES)
    try:
        reply = d.connect_now().call(op, **fields)
        assert reply["error"] == "bad_request" and reply["field"] in ("node", "standby_for"), reply
    finally:
        await d.stop()


async def test_takeover_failed_and_holders_must_be_printable(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", LICENSES)
    try:
        stby = d.connect_now()
        assert stby.call("hello", node="stby", **{**PBX, "role": "standby"}, standby_for="pbx-1")["ok"]
        assert stby.call("takeover", failed="pbx-1\n")["field"] == "failed"
        assert stby.call("checkout", resource="port", holder="alice\nlevel=error")["field"] == "holder"
        assert stby.call("assign", user="bob\x1b[31m", families=["App(phone)"])["field"] == "user"
    finally:
        await d.stop()


def test_log_values_are_escaped_so_none_can_split_a_line_or_forge_a_key() -> None:
    record = logging.LogRecord("licmaster", logging.INFO, __file__, 1, "hello", None, None)
    record.fields = {"node": "pbx1\nts=forged level=error", "peer": "plain", "note": 'say "hi"'}  # type: ignore[attr-defined]
    line = logs.KeyValueFormatter().format(record)
    assert "\n" not in line and 'node="pbx1\\nts=forged level=error"' in line and "peer=plain" in line
    assert 'note="say \\"hi\\""' in line


async def test_a_flood_of_refusals_with_huge_names_keeps_nothing_and_a_bounded_journal(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", LICENSES)
    try:
        assert d.master is not None
        pbx = d.connect_now()
        assert pbx.call("hello", node="flooder", **PBX)["ok"]
        for i in range(1000):
            reply = pbx.call("checkout", resource=f"{i}-" + "x" * 60_000, holder="h")
            assert reply["error"] == "unknown_resource" and len(reply["message"]) < 300
        for i in range(1000):
            assert pbx.call("checkout", resource="port", holder=f"u{i}")["ok"] is (i < 5)  # 995 exhausted
        held = d.master.pool.book.held["flooder"]
        assert set(held.by_resource) == {"port"} and set(held.plans) == {"port"}  # nothing per unknown name
        d.master.dispatch.denials.flush(0.0)
        await asyncio.sleep(0.1)
        rows = read_journal(tmp_path / "m" / "data" / "journal.sqlite3")
        denials = [r for r in rows if r["event"] in ("deny", "deny_repeated")]
        assert len(denials) <= 2 * 33 * 2  # at most two windows' worth for one node (docs/protocol.md)
        assert max(len(r["resource"] or "") for r in denials) <= 40
        repeated = {r["detail"] for r in denials if r["event"] == "deny_repeated"}
        assert "exhausted x994" in repeated  # counted, not lost
        assert (tmp_path / "m" / "data" / "journal.sqlite3").stat().st_size < 1_000_000
    finally:
        await d.stop()


async def test_sync_lists_and_credentials_are_bounded(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", LICENSES, max_frame=1 << 20)
    try:
        pbx = d.connect_now()
        assert pbx.call("hello", node="pbx1", **PBX)["ok"]
        too_many = [{"resource": "port", "holder": f"h{i}"} for i in range(10_001)]
        reply = pbx.call("sync", leases=too_many)
        assert reply["field"] == "leases" and "at most 10000" in reply["message"]
        other = d.connect_now()
        assert other.call("hello", node="pbx2", **PBX, auth={"token": "t" * 257})["field"] == "auth.token"
        assert other.call("hello", node="pbx2", **PBX, auth={str(i): i for i in range(9)})["field"] == "auth"
    finally:
        await d.stop()


# ---------------------------------------------------------------- lists that grow with the installation

MANY = '[[license]]\ntype = "PBX-Port13"\ncount = 5000\n'


async def test_usage_is_bounded_and_the_nodes_come_in_pages_in_name_order(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", MANY)
    try:
        peers = []
        for i in range(450):
            peer = d.connect_now()
            assert peer.call("hello", node=f"pbx-{i:04}", **PBX)["ok"]
            peers.append(peer)
        usage = peers[0].call("usage")
        assert usage["summary"] == {"nodes": 450, "connected": 450, "by_role": {"pbx": 450}, "leases": 0}
        assert "nodes" not in usage and len(encode(usage)) < 4096  # the same size for 4 PBXs or 4,000
        seen, cursor, pages = [], None, 0
        while True:
            page = peers[0].call("nodes", limit=1_000_000, **({"cursor": cursor} if cursor else {}))
            assert len(page["nodes"]) <= 200 and page["total"] == 450  # a page of a million asked: 200 given
            seen += [n["node"] for n in page["nodes"]]
            pages += 1
            cursor = page["next"]
            if cursor is None:
                break
        assert seen == [f"pbx-{i:04}" for i in range(450)] and pages == 3
    finally:
        await d.stop()


@pytest.mark.parametrize(("fields", "field"), [
    ({"cursor": "pbx-1\n"}, "cursor"), ({"cursor": 7}, "cursor"), ({"cursor": "x" * 65}, "cursor"),
    ({"limit": 0}, "limit"), ({"limit": "all"}, "limit"), ({"limit": -5}, "limit"),
])
async def test_a_bad_cursor_or_limit_is_refused_naming_it(tmp_path: Path, fields: dict, field: str) -> None:
    d = await in_process(tmp_path / "m", MANY)
    try:
        pbx = d.connect_now()
        assert pbx.call("hello", node="pbx1", **PBX)["ok"]
        reply = pbx.call("nodes", **fields)
        assert (reply["ok"], reply["error"], reply["field"]) == (False, "bad_request", field), reply
        assert pbx.call("nodes")["nodes"][0]["node"] == "pbx1"  # and the session goes on
    finally:
        await d.stop()


async def test_a_sync_in_parts_is_taken_at_once_with_its_last_part(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", MANY)
    try:
        pbx = d.connect_now()
        assert pbx.call("hello", node="pbx1", **PBX)["ok"]
        old = pbx.call("checkout", resource="port", holder="old")["lease"]
        first = pbx.call("sync", leases=[{"resource": "port", "holder": f"u{i}"} for i in range(3)], more=True, part=0)
        assert first["ok"] and first["pending"] == 3
        assert d.master is not None and d.master.pool.book.find("pbx1", "port", "old") is not None  # nothing taken yet
        last = pbx.call("sync", leases=[{"resource": "port", "holder": "u3"}, {"resource": "port", "holder": "old"}], part=1)
        assert sorted(g["holder"] for g in last["leases"]) == ["old", "u0", "u1", "u2", "u3"] and last["released"] == 0
        assert next(g for g in last["leases"] if g["holder"] == "old")["lease"] == old  # kept, not re-taken
    finally:
        await d.stop()


async def test_a_later_sync_part_without_its_first_or_past_the_bound_is_refused(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", MANY)
    try:
        pbx = d.connect_now()
        assert pbx.call("hello", node="pbx1", **PBX)["ok"]
        stray = pbx.call("sync", leases=[{"resource": "port", "holder": "a"}], part=1)
        assert (stray["error"], stray["field"]) == ("bad_request", "part")
        entries = [{"resource": "port", "holder": f"u{i}"} for i in range(2_000)]
        for part in range(5):
            assert pbx.call("sync", leases=entries, more=True, part=part)["ok"]
        over = pbx.call("sync", leases=entries, part=5)  # 12,000 in all: past MAX_SYNC
        assert (over["error"], over["field"]) == ("bad_request", "leases")
        assert d.master is not None and d.master.pool.book.count == 0  # nothing kept of it
    finally:
        await d.stop()


async def test_a_reply_larger_than_the_peer_reads_comes_in_frames_it_can_read(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", MANY)
    try:
        pbx = d.connect_now()
        pbx.decoder = FrameDecoder(4096)  # this peer reads nothing larger, and says so
        assert pbx.call("hello", node="pbx1", max_frame=4096, **PBX)["ok"]
        pbx.send({"op": "sync", "id": 99, "leases": [{"resource": "port", "holder": f"user-{i}"} for i in range(300)]})
        pbx.settle()
        first, *parts = pbx.take()
        joining = ReplyParts(first)
        whole = [joining.add(p) for p in parts][-1]
        assert whole is not None and len(parts) >= 2
        assert sorted(g["holder"] for g in whole["leases"]) == sorted(f"user-{i}" for i in range(300))
    finally:
        await d.stop()


async def test_a_hello_is_journaled_once_a_session_and_again_when_the_pbx_says_other_things(tmp_path) -> None:
    from licmaster.daemon.storage.journal import read_journal

    from .daemon import in_process

    d = await in_process(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 3\n')
    try:
        for firmware in (13, 13, 13, 12):  # three reconnects of one session, then a downgrade
            pbx = await d.connect()
            assert (await pbx.hello("pbx1", firmware=firmware))["ok"]
        assert d.master is not None and d.master.journal is not None
        await d.master.journal.flush()
    finally:
        await d.stop()
    hellos = [r["detail"] for r in read_journal(tmp_path / "m" / "data" / "journal.sqlite3", event="hello")]
    assert [('"firmware":13' in h, '"firmware":12' in h) for h in hellos] == [(True, False), (False, True)]
