"""The master's lifecycle in-process: one way to build the pool (start and promote), the replica
stream's version, role changes journaled."""

from __future__ import annotations

import asyncio
from pathlib import Path

from licmaster.daemon.journal import read_journal
from licmaster.daemon.role import Role
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


async def test_role_changes_are_journaled_and_grace_ends_in_acting(tmp_path: Path) -> None:
    # Grace long enough that a loaded machine still asks within it, then waited out, not slept.
    d = await in_process(tmp_path / "m", GOOD, grace_ms=1500)
    await d.stop()
    d = await in_process(tmp_path / "m", GOOD, grace_ms=1500)  # a restart on the same data: grace
    try:
        assert d.master is not None and d.master.role.state is Role.GRACE
        pbx = await d.connect()
        await pbx.hello("pbx1")
        assert (await pbx.request("checkout", resource="port", holder="new"))["error"] == "grace"
        for _ in range(200):
            await asyncio.sleep(0.05)
            if not d.master.dispatch.grace_left_ms():  # asking it is what ends grace (Dispatcher.grace_left_ms)
                break
        assert (await pbx.request("checkout", resource="port", holder="new"))["ok"]
        assert d.master.role.state is Role.ACTING
    finally:
        await d.stop()
    roles = [r["detail"] for r in read_journal(tmp_path / "m" / "data" / "journal.sqlite3", event="role")]
    assert roles == ["starting -> acting: started", "acting -> stopped: stopping",
                     "starting -> grace: restarted: PBXs re-take what they held first",
                     "grace -> acting: grace over: every PBX had its lease TTL to re-sync", "acting -> stopped: stopping"]
