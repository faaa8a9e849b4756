"""The journal: events back in order, and a retention that never costs a restart its memory."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from licmaster.daemon.ha.recovery import holdings_at_end
from licmaster.daemon.storage.journal import Journal, read_journal


async def open_run(path: Path, **options) -> tuple[Journal, bool, dict]:
    journal = Journal(path, flush_ms=10_000, **options)
    had_run, rows = journal.begin_run()
    return journal, had_run, holdings_at_end(rows).held()


async def test_events_come_back_in_order_with_every_field(tmp_path: Path) -> None:
    journal, had_run, _ = await open_run(tmp_path / "j.sqlite3")
    journal.record("grant", "pbx1", "port", "alice", "1", "PBX-Port13")
    journal.record("deny", "pbx1", "port", "bob", None, "exhausted", "R-PORT-1")
    await journal.close()
    rows = read_journal(tmp_path / "j.sqlite3")
    assert not had_run
    assert [(r["event"], r["holder"], r["rule"]) for r in rows] == [("grant", "alice", None), ("deny", "bob", "R-PORT-1")]
    assert read_journal(tmp_path / "j.sqlite3", event="deny")[0]["detail"] == "exhausted"


async def test_old_history_goes_but_a_restart_still_knows_who_holds_what(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    live: list[tuple[str, str, str, str]] | None = None  # None: no checkpoint now (as during grace)
    journal, _, _ = await open_run(path, keep_s=0.0, prune_every_s=0.0, snapshot=lambda: live)
    journal.record("grant", "pbx1", "port", "alice", "1")
    journal.record("grant", "pbx1", "port", "bob", "2")
    await journal.flush()
    journal.record("checkin", "pbx1", "port", "bob", "2")
    live = [("pbx1", "port", "alice", "1")]  # what the pool holds after those three
    await asyncio.sleep(0.01)
    await journal.flush()  # a checkpoint, then everything older than keep_s = 0 but the newest batch
    assert [r["event"] for r in read_journal(path)] == ["checkin"]
    live = None
    journal.record("grant", "pbx2", "port", "carol", "3")  # after the checkpoint: replayed as an event
    await journal.close()

    again, had_run, held = await open_run(path)
    assert had_run and held == {"pbx1": {("port", "alice")}, "pbx2": {("port", "carol")}}
    await again.close()
    third, _, held_after_a_quiet_run = await open_run(path)
    # A run that changed nothing (a standby's) leaves what the run before it knew: its checkpoint
    # and the events after it (a serving run always journals what it adopts, so is never quiet).
    assert held_after_a_quiet_run == {"pbx1": {("port", "alice")}, "pbx2": {("port", "carol")}}
    await third.close()


async def test_nothing_is_deleted_without_a_keep_horizon(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal, _, _ = await open_run(path, prune_every_s=0.0, snapshot=lambda: [])
    journal.record("grant", "pbx1", "port", "alice", "1")
    await journal.flush()
    await journal.close()
    assert [r["holder"] for r in read_journal(path)] == ["alice"]


async def test_closing_while_the_timer_has_a_batch_on_its_way_to_the_writer_loses_nothing(tmp_path: Path) -> None:
    import threading

    journal = Journal(tmp_path / "j.sqlite3", flush_ms=5)
    journal.begin_run()
    journal.start()
    busy = threading.Event()
    journal._executor.submit(busy.wait, 5)  # the writer thread is busy: the timer's batch waits in its queue
    journal.record("grant", "pbx1", "port", "alice", "1", "PBX-Port13:1")
    for _ in range(100):  # until the timer has taken the row
        await asyncio.sleep(0.01)
        if not journal.rows:
            break
    assert not journal.rows and [r[1] for r in journal.pending()] == ["grant"]  # taken, on its way: still pending
    journal.record("stop", detail="stopping")
    closing = asyncio.create_task(journal.close())  # a clean stop, right then
    await asyncio.sleep(0.05)
    busy.set()
    await closing
    assert [r["event"] for r in read_journal(tmp_path / "j.sqlite3")] == ["grant", "stop"]


async def test_rows_a_flush_took_stay_pending_until_they_are_written(tmp_path: Path) -> None:
    # The console finds a grant's time in the database or in the pending rows: between the two
    # (taken by a flush, not yet written) it found neither, and said "since: null" under load.
    import threading

    journal = Journal(tmp_path / "j.sqlite3", flush_ms=60_000)
    journal.begin_run()
    busy = threading.Event()
    journal._executor.submit(busy.wait, 5)  # the writer thread is busy
    journal.record("grant", "pbx1", "port", "alice", "7", "PBX-Port13:1")
    flushing = asyncio.create_task(journal.flush())
    await asyncio.sleep(0.05)
    assert not journal.rows and [r[5] for r in journal.pending()] == ["7"]
    assert read_journal(tmp_path / "j.sqlite3", event="grant") == []  # not written yet
    busy.set()
    await flushing
    assert journal.pending() == [] and [r["lease"] for r in read_journal(tmp_path / "j.sqlite3", event="grant")] == ["7"]
    await journal.close()


async def test_a_batch_a_push_packed_reads_back_like_any_other_and_a_restart_recovers_from_it(tmp_path: Path) -> None:
    """With a standby attached the journal writes the MessagePack the push sent (storage/door.py)."""
    path = tmp_path / "j.sqlite3"
    journal, _, _ = await open_run(path)
    journal.record("grant", "pbx1", "port", "alice", "1", "PBX-Port13")
    journal.door.pack(4096)  # what the feed does for a push to the standby
    journal.record("grant", "pbx1", "port", "bob", "2", "PBX-Port13")  # recorded after the push: packed for the write
    await journal.flush()
    journal.record("checkin", "pbx1", "port", "alice", "1")  # a later batch, no standby: marshal
    await journal.close()

    formats = [fmt for (fmt,) in sqlite3.connect(path).execute("SELECT format FROM batches ORDER BY seq")]
    assert formats[:2] == ["msgpack", "marshal-4"]
    assert [(r["event"], r["holder"]) for r in read_journal(path)][:3] == [("grant", "alice"), ("grant", "bob"), ("checkin", "alice")]
    _, had_run, held = await open_run(path)
    assert had_run and held == {"pbx1": {("port", "bob")}}


async def test_only_a_run_that_stopped_while_serving_is_known_whole(tmp_path: Path) -> None:
    # A standby's run never saw its master's grants: restarted alone after a clean stop, it must
    # not serve at once as if its journal held every lease a PBX may believe (a review found it did).
    path = tmp_path / "j.sqlite3"
    journal, _, _ = await open_run(path)
    journal.record("stop", detail="stopping")  # a standby's clean stop: no "serving" note
    await journal.close()
    journal, had_run, _ = await open_run(path)
    assert had_run and not journal.last_run_clean
    journal.record("grant", "pbx1", "port", "alice", "1", "PBX-Port13")
    journal.record("stop", detail="stopping", note="serving")  # Master.stop of a master that served
    await journal.close()
    journal, _, held = await open_run(path)
    assert journal.last_run_clean and held == {"pbx1": {("port", "alice")}}
    await journal.close()


async def test_a_run_that_changed_nothing_leaves_what_the_run_before_it_knew(tmp_path: Path) -> None:
    # A standby's run journals none of its master's rows: restarted again, it must still know
    # what its last serving run knew (a review found a standby restarted twice with nothing).
    path = tmp_path / "j.sqlite3"
    journal, _, _ = await open_run(path)
    journal.record("grant", "pbx1", "port", "alice", "1", "PBX-Port13")
    await journal.close()  # killed: no stop row
    for _ in range(2):  # two standby runs: a start, a stop, nothing else
        journal, _, held = await open_run(path)
        assert held == {"pbx1": {("port", "alice")}}
        journal.record("stop", detail="stopping")
        await journal.close()
    journal, _, held = await open_run(path)
    assert held == {"pbx1": {("port", "alice")}} and not journal.last_run_clean
    await journal.close()
