"""The connection's bounds, in-process through the harness: a client that never reads its
replies cannot grow the master's memory, hold the loop, or keep its descriptor; a read of many
requests is answered in order, in chunks, across loop turns."""

from __future__ import annotations

import asyncio
from pathlib import Path

from licmaster.daemon import protocol
from licmaster.daemon.storage.journal import read_journal
from licmaster.wire.codec import encode

from .daemon import in_process

LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 50\n'


def usage_requests(n: int, first_id: int = 1) -> bytes:
    return b"".join(encode({"op": "usage", "id": i}) for i in range(first_id, first_id + n))


async def test_a_client_that_never_reads_is_held_to_the_high_water_mark_then_aborted(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", LICENSES, heartbeat_ms=100, lease_ttl_ms=600)
    try:
        assert d.master is not None
        hog = d.connect_now()
        hog.send({"op": "hello", "id": 0, "node": "observer", "role": "observer"})
        hog.send_bytes(usage_requests(100_000))  # ~1.7 MB of requests, and it reads nothing
        await asyncio.sleep(0.05)
        unsent = len(hog.transport.buffer)
        # handling stops once the unsent replies pass the high-water mark: one chunk's worth beyond it at most
        assert protocol.HIGH_WATER < unsent < protocol.HIGH_WATER + protocol.CHUNK * 4096, unsent
        assert not hog.transport.reading and hog.conn.stalled_since is not None
        assert len(hog.transport.inbound) > 1_000_000  # the rest was never even read (the kernel's buffer, here)
        canary = d.connect_now()  # meanwhile everyone else is served
        assert canary.call("hello", node="canary", role="pbx", firmware=13, platform="gateway",
                           mac="00:90:33:00:00:01", licensing="central")["ok"]
        assert canary.call("checkout", resource="port", holder="a")["ok"]
        for _ in range(60):  # lease TTL 600 ms: the stalled connection is aborted, and forgotten
            await asyncio.sleep(0.05)
            canary.call("heartbeat")
            if hog.transport.aborted:
                break
        assert hog.transport.aborted
        await asyncio.sleep(0)
        assert hog.conn not in d.master.dispatch.connections  # no longer counted against max_connections
        assert d.master.journal is not None
        await d.master.journal.flush()  # what was recorded is written: no race with the flush timer
        aborts = read_journal(tmp_path / "m" / "data" / "journal.sqlite3", event="abort")
        assert aborts and aborts[0]["detail"].startswith("replies unread for")
    finally:
        await d.stop()


async def test_a_stalled_client_whose_session_also_went_silent_is_journaled_as_aborted_for_unread_replies(tmp_path: Path) -> None:
    """Its handling stopped when its replies piled up, so its session stopped being heard too: the
    abort comes first and says why (once, CI on a loaded machine saw the expiry close it silently)."""
    d = await in_process(tmp_path / "m", LICENSES, heartbeat_ms=100, lease_ttl_ms=600)
    try:
        assert d.master is not None
        hog = d.connect_now()
        hog.send({"op": "hello", "id": 0, "node": "observer", "role": "observer"})
        hog.send_bytes(usage_requests(100_000))
        await asyncio.sleep(0.05)
        assert hog.conn.stalled_since is not None and hog.conn.session is not None
        hog.conn.session.last_seen -= 5.0  # heard last long before it stalled
        for _ in range(60):
            await asyncio.sleep(0.05)
            if hog.transport.aborted:
                break
        assert hog.transport.aborted
        await d.master.journal.flush()  # type: ignore[union-attr]
        aborts = read_journal(tmp_path / "m" / "data" / "journal.sqlite3", event="abort")
        assert [a["node"] for a in aborts] == ["observer"] and aborts[0]["detail"].startswith("replies unread for")
    finally:
        await d.stop()


async def test_a_large_read_is_answered_whole_and_in_order_across_loop_turns(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", LICENSES)
    try:
        peer = d.connect_now()
        peer.send({"op": "hello", "id": 0, "node": "observer", "role": "observer"})
        peer.send_bytes(usage_requests(3000))  # one read: ~3,000 requests of ~0.1 ms each
        first = [m["id"] for m in peer.take()]
        assert 1 < len(first) < 3001  # not all in one turn: the loop went round in between
        for _ in range(1000):
            await asyncio.sleep(0)
            first += [m["id"] for m in peer.take()]
            if first[-1] == 3000:
                break
        assert first == list(range(3001))
    finally:
        await d.stop()


async def test_a_reader_that_comes_back_is_answered_the_rest(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", LICENSES, lease_ttl_ms=30_000, heartbeat_ms=1000)
    try:
        peer = d.connect_now()
        peer.send({"op": "hello", "id": 0, "node": "observer", "role": "observer"})
        peer.send_bytes(usage_requests(20_000))
        await asyncio.sleep(0.02)
        ids: list[int] = []
        for _ in range(2000):
            ids += [m["id"] for m in peer.take()]  # reading drains the buffer: writing, then reading, resume
            if ids and ids[-1] == 20_000:
                break
            await asyncio.sleep(0)
        assert ids == list(range(20_001))
    finally:
        await d.stop()
