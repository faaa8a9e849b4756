"""The journal: grants, check-ins, denials (with code and rule), expiries, takeovers, reloads.

`record` only appends a tuple (to the door, door.py); every `flush_ms` the batch is packed
(marshal, in C; or the MessagePack a push to the standby masters made of it) and written as one
row by a background thread into its own SQLite file. One row per batch instead
of one per event is what keeps the journal off the hot path: at 100,000 operations a second a
row per event cost a third of the master's CPU. `read_journal` gives the events back one by one.

The journal is history for reports and for recovery after a restart; it is not what makes
licenses durable (store.py), so a `kill -9` may lose its last `flush_ms`, never a license.

Retention (`keep_s`): at most every `prune_every_s`, batches older than `keep_s` are deleted.
Recovery still needs to know who holds what since the run began, however long ago that was, so
a checkpoint is written first: every live lease at that batch (from `snapshot`), from which a
restart replays instead of from the start of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack

from licmaster.daemon.storage.door import MARSHAL, MARSHAL_VERSION, MSGPACK, Door, batch_blob
from licmaster.wire import events
from licmaster.wire.events import GRANT, STATE_EVENTS, Change, Row

STOPPED_SERVING = "serving"  # a `stop` row's note: the run stopped while it served (it knew every grant)
RUNS_LOOKED_BACK = 20  # runs that changed no state (a standby's) skipped at most, to find what the PBXs held

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY, first_ts REAL NOT NULL, last_ts REAL NOT NULL, count INTEGER NOT NULL, events BLOB NOT NULL,
    format TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY, after_seq INTEGER NOT NULL, started REAL NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    run INTEGER PRIMARY KEY, seq INTEGER NOT NULL, ts REAL NOT NULL, leases BLOB NOT NULL, format TEXT NOT NULL
);
"""
# A run's latest checkpoint: `seq` is the last batch it sums up, `leases` holds (node, resource,
# holder, lease) of every lease live at that point.
# Batches are written with marshal, or as the MessagePack a push packed (door.py); the format
# is stored with each batch so that a reader can tell.
FORMAT = MARSHAL
LeaseRow = tuple[str, str, str, str, str]  # (node, resource, holder, lease, label)


class Journal:
    def __init__(self, path: Path, *, flush_ms: int = 200, keep_s: float | None = None, prune_every_s: float = 3600.0,
                 snapshot: Callable[[], list[LeaseRow] | None] | None = None, executor: Executor | None = None) -> None:
        """`snapshot` gives every live lease for a checkpoint, or None when there must be none
        now (e.g. while a restarted master waits for PBXs to re-sync); without it, or without
        `keep_s`, nothing is ever deleted."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.flush_s = flush_ms / 1000
        self.keep_s = keep_s
        self.prune_every_s = prune_every_s
        self.snapshot = snapshot
        self._last_prune = time.time()
        self._run: int | None = None  # this run's row in `runs` (begin_run)
        # The journal's one door for rows: recorded and not yet taken by a flush. The request path
        # binds `rows` once and appends to it directly (door.py says why).
        self.door = Door()
        self.rows: list[Row] = self.door.rows
        self._writing: list[list[Row]] = []  # batches a flush took, until the writer thread has written them
        # The writer thread; a seam: a simulation on virtual time writes inline (licmaster/testing/simloop.py).
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._db: sqlite3.Connection | None = None
        self._executor.submit(self._open).result()
        self._task: asyncio.Task[None] | None = None
        self.before_flush: list[Callable[[], None]] = []  # each runs before a flush takes the door's rows
        self.on_batch: list[Callable[[list[Row]], None]] = []  # each sees each batch before it is written

    def _open(self) -> None:
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def begin_run(self) -> tuple[bool, list[Change]]:
        """Mark the start of a run. Returns (whether an earlier run exists, the earlier run's
        state-changing events, oldest first). `last_run_clean` says whether that run ended with
        its `stop` row while serving: then every grant it answered is in those events (a kill -9
        loses the batch not yet written; a standby's run never saw its master's grants)."""
        return self._executor.submit(self._begin_run).result()

    def _begin_run(self) -> tuple[bool, list[Change]]:
        assert self._db is not None
        runs = self._db.execute(f"SELECT run, after_seq FROM runs ORDER BY run DESC LIMIT {RUNS_LOOKED_BACK}").fetchall()
        last_run = runs[0] if runs else None
        rows: list[Change] = []
        # The newest run that changed any state: a standby's run changes none (its master's rows
        # are not its journal's), and what the PBXs held is then what the run before it knew
        # (a standby restarted twice while its master was down took over with nothing).
        for run, after_seq in runs:
            rows = self._state_of_run(run, after_seq)
            if rows:
                break
        newest = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM batches").fetchone()[0]
        self.last_run_clean = False
        if last_run is not None and newest > last_run[1]:
            blob, fmt = self._db.execute("SELECT events, format FROM batches WHERE seq = ?", (newest,)).fetchone()
            last = _decode(blob, fmt)
            # Whole only if that run stopped cleanly *while serving*: a standby's run, or one that
            # stepped down before it stopped, saw none of the grants its PBXs may hold (a review
            # found a standby stopped cleanly, restarted alone, serving at once with nothing counted).
            stop = last[-1] if last else None
            self.last_run_clean = stop is not None and stop[events.EVENT] == events.STOP \
                and len(stop) > events.NOTE and stop[events.NOTE] == STOPPED_SERVING
        with self._db:
            self._run = self._db.execute("INSERT INTO runs (after_seq, started) VALUES (?, ?)", (newest, time.time())).lastrowid
        return last_run is not None, rows

    def _state_of_run(self, run: int, after_seq: int) -> list[Change]:
        """The state-changing events of a run (from its checkpoint, if it has one), oldest first."""
        assert self._db is not None
        rows: list[Change] = []
        replay_from = after_seq
        checkpoint = self._db.execute("SELECT seq, leases, format FROM checkpoints WHERE run = ?", (run,)).fetchone()
        if checkpoint is not None:  # who held what at that batch; the batches before may be gone
            replay_from = checkpoint[0]
            # (checkpoints written before labels were kept have four fields)
            rows += [Change(GRANT, row[0], row[1], row[2], row[3], row[4] if len(row) > 4 else None)
                     for row in _decode(*checkpoint[1:])]
        for row in _events(self._db, after_seq=replay_from):
            if row[events.EVENT] in STATE_EVENTS:
                rows.append(events.change_of(row))
        return rows

    def record(self, event: str, node: str | None = None, resource: str | None = None, holder: str | None = None,
               lease: str | None = None, detail: str | None = None, rule: str | None = None, note: str | None = None) -> None:
        if note is None:
            self.rows.append((time.time(), event, node, resource, holder, lease, detail, rule))
        else:
            self.rows.append((time.time(), event, node, resource, holder, lease, detail, rule, note))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flusher(), name="journal-flusher")

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush(loop, wait_for_writer=False)  # the timer itself waits for nobody

    def pending(self) -> list[Row]:
        """The rows recorded and not yet written, oldest first (a copy): those a flush has taken
        and the writer thread has not written yet too, or a reader of the database and of this
        would find neither (the console's "since when" of a lease granted right then)."""
        return [row for batch in self._writing for row in batch] + self.rows

    async def flush(self, loop: asyncio.AbstractEventLoop | None = None, *, wait_for_writer: bool = True) -> None:
        """When it returns, everything recorded before the call is written (with `wait_for_writer`,
        a batch the timer took just before is too: the one writer thread does it first)."""
        loop = loop or asyncio.get_running_loop()
        if self.rows:
            for hook in self.before_flush:
                hook()
            batch, packed, packed_count = self.door.take()
            for listener in self.on_batch:
                listener(batch)
            self._writing.append(batch)
            # Shielded: close() cancels the timer's flush; the batch it took must still be written
            # (unshielded, a write still queued behind another was dropped, and its rows with it).
            written = asyncio.shield(loop.run_in_executor(self._executor, self._write, batch, packed, packed_count))
            written.add_done_callback(lambda _: self._writing.remove(batch))
            await written
        elif wait_for_writer:
            await loop.run_in_executor(self._executor, _written)
        if self.keep_s is not None and self.snapshot is not None and self._run is not None \
                and time.time() >= self._last_prune + self.prune_every_s:
            self._last_prune = time.time()
            leases = self.snapshot()  # here, between two batches: what every batch so far adds up to
            if leases is not None:
                await loop.run_in_executor(self._executor, self._prune, leases, time.time() - self.keep_s)

    def _write(self, batch: list[Row], packed: list[bytes], packed_count: int) -> None:
        assert self._db is not None
        blob, fmt = batch_blob(batch, packed, packed_count)
        with self._db:
            self._db.execute("INSERT INTO batches (first_ts, last_ts, count, events, format) VALUES (?, ?, ?, ?, ?)",
                             (batch[0][0], batch[-1][0], len(batch), blob, fmt))

    def _prune(self, leases: list[LeaseRow], cutoff: float) -> None:
        """A checkpoint at the newest batch, then the batches before it that are older than `cutoff`."""
        assert self._db is not None
        with self._db:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM batches").fetchone()[0]
            self._db.execute("INSERT OR REPLACE INTO checkpoints (run, seq, ts, leases, format) VALUES (?, ?, ?, ?, ?)",
                             (self._run, seq, time.time(), marshal.dumps(leases, MARSHAL_VERSION), FORMAT))
            self._db.execute("DELETE FROM checkpoints WHERE run < ?", (self._run,))
            # The newest batch stays: SQLite would give its seq again to the next one if it went.
            self._db.execute("DELETE FROM batches WHERE seq < ? AND last_ts < ?", (seq, cutoff))

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_db)
        self._executor.shutdown(wait=True)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _events(db: sqlite3.Connection, *, after_seq: int = 0, since: float | None = None) -> Iterator[tuple[Any, ...]]:
    """(ts, event, node, resource, holder, lease, detail, rule) of every batch after `after_seq`."""
    sql = "SELECT events, format FROM batches WHERE seq > ?" + (" AND last_ts >= ?" if since is not None else "") + " ORDER BY seq"
    for blob, fmt in db.execute(sql, (after_seq,) if since is None else (after_seq, since)):
        for row in _decode(blob, fmt):
            yield events.full(row)


def _decode(blob: bytes, fmt: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]]
    if fmt == FORMAT:
        rows = marshal.loads(blob)
        return rows
    if fmt == MSGPACK:
        rows = msgpack.unpackb(blob, raw=False, use_list=False)
        return rows
    raise ValueError(f"journal batch in unknown format {fmt!r}")


def page(path: Path, *, event: str | None = None, node: str | None = None, since: float | None = None,
         limit: int = 100, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Events oldest first, `limit` at most, from `cursor` (as returned, "seq.index": the position
    after the last event of the previous page); the next cursor, or None at the end."""
    after_seq, skip = 0, 0
    if cursor:
        seq_text, _, index_text = cursor.partition(".")
        after_seq, skip = int(seq_text) - 1, int(index_text)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out: list[dict[str, Any]] = []
        sql = "SELECT seq, events, format FROM batches WHERE seq > ?" + (" AND last_ts >= ?" if since is not None else "") + " ORDER BY seq"
        for seq, blob, fmt in db.execute(sql, (after_seq,) if since is None else (after_seq, since)):
            rows = _decode(blob, fmt)
            start = skip if seq == after_seq + 1 else 0
            for index in range(start, len(rows)):
                row = events.full(rows[index])
                if (event is None or row[events.EVENT] == event) and (node is None or row[events.NODE] == node) \
                        and (since is None or row[events.TS] >= since):
                    out.append(events.as_dict(row))
                    if len(out) == limit:
                        return out, f"{seq}.{index + 1}"
        return out, None
    finally:
        db.close()


def iter_rows(path: Path) -> Iterator[tuple[Any, ...]]:
    """The journal's rows as tuples of every field (`events.full`), oldest first, one batch in
    memory at a time: what a replay of a year reads (a dict per row cost a sixth of it)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield from _events(db)
    finally:
        db.close()


def iter_journal(path: Path, *, since: float | None = None) -> Iterator[dict[str, Any]]:
    """The journal's events as dicts, oldest first, one batch in memory at a time (a year of a
    10,000-phone installation is ten million rows: `licmaster whatif` streams them)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for row in _events(db, since=since):
            if since is None or row[events.TS] >= since:
                yield events.as_dict(row)
    finally:
        db.close()


def read_journal(path: Path, *, event: str | None = None, since: float | None = None,
                 kinds: Collection[str] | None = None) -> list[dict[str, Any]]:
    """The journal's events as dicts (`events.FIELDS`), oldest first: one `event`, or any of
    `kinds` (filtered before a dict is made: an hour of a city's grants is a million rows)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = []
        for row in _events(db, since=since):
            if (event is None or row[events.EVENT] == event) and (kinds is None or row[events.EVENT] in kinds) \
                    and (since is None or row[events.TS] >= since):
                out.append(events.as_dict(row))
        return out
    finally:
        db.close()


def _written() -> None:
    """Nothing to do: run on the writer thread, it returns once the writes before it are done."""
