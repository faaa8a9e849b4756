"""The journal: grants, check-ins, denials (with code and rule), expiries, takeovers, reloads.

`record` only appends a tuple; every `flush_ms` the batch is packed (marshal, in C) and
written as one row by a background thread into its own SQLite file. One row per batch instead
of one per event is what keeps the journal off the hot path: at 100,000 operations a second a
row per event cost a third of the master's CPU. `read_journal` gives the events back one by one.

The journal is history for reports and for recovery after a restart; it is not what makes
licenses durable (store.py), so a `kill -9` may lose its last `flush_ms`, never a license.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import marshal

import msgpack

from .recovery import STATE_EVENTS
import contextlib

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY, first_ts REAL NOT NULL, last_ts REAL NOT NULL, count INTEGER NOT NULL, events BLOB NOT NULL,
    format TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY, after_seq INTEGER NOT NULL, started REAL NOT NULL);
"""
# Batches are written with marshal (version 4: tuples of str, float and None), three times
# cheaper than MessagePack here; the format is stored with each batch so a reader can tell
# (and "msgpack" batches stay readable).
MARSHAL_VERSION = 4
FORMAT = f"marshal-{MARSHAL_VERSION}"
COLUMNS = ("ts", "event", "node", "resource", "holder", "lease", "detail", "rule")

# (ts, event, node, resource, holder, lease, detail, rule); trailing fields may be left off
Row = tuple[Any, ...]
_PAD: tuple[None, ...] = (None,) * len(COLUMNS)


class Journal:
    def __init__(self, path: Path, *, flush_ms: int = 200) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.flush_s = flush_ms / 1000
        self.rows: list[Row] = []  # pending; the server may append Row tuples directly (hot path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._db: sqlite3.Connection | None = None
        self._executor.submit(self._open).result()
        self._task: asyncio.Task[None] | None = None
        self.on_batch: Callable[[list[Row]], None] | None = None  # sees each batch before it is written

    def _open(self) -> None:
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def begin_run(self) -> tuple[bool, list[tuple[Any, ...]]]:
        """Mark the start of a run. Returns (whether an earlier run exists, the earlier run's
        state-changing events as (event, node, resource, holder, lease, detail), oldest first)."""
        return self._executor.submit(self._begin_run).result()

    def _begin_run(self) -> tuple[bool, list[tuple[Any, ...]]]:
        assert self._db is not None
        last = self._db.execute("SELECT MAX(after_seq) FROM runs").fetchone()[0]
        rows: list[tuple[Any, ...]] = []
        if last is not None:
            for row in _events(self._db, after_seq=last):
                if row[1] in STATE_EVENTS:
                    rows.append(row[1:7])
        newest = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM batches").fetchone()[0]
        with self._db:
            self._db.execute("INSERT INTO runs (after_seq, started) VALUES (?, ?)", (newest, time.time()))
        return last is not None, rows

    def record(self, event: str, node: str | None = None, resource: str | None = None, holder: str | None = None,
               lease: str | None = None, detail: str | None = None, rule: str | None = None) -> None:
        self.rows.append((time.time(), event, node, resource, holder, lease, detail, rule))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flusher(), name="journal-flusher")

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush(loop)

    async def flush(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not self.rows:
            return
        batch, self.rows = self.rows, []
        if self.on_batch is not None:
            self.on_batch(batch)
        await (loop or asyncio.get_running_loop()).run_in_executor(self._executor, self._write, batch)

    def _write(self, batch: list[Row]) -> None:
        assert self._db is not None
        blob = marshal.dumps(batch, MARSHAL_VERSION)
        with self._db:
            self._db.execute("INSERT INTO batches (first_ts, last_ts, count, events, format) VALUES (?, ?, ?, ?, ?)",
                             (batch[0][0], batch[-1][0], len(batch), blob, FORMAT))

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
            yield row + _PAD[len(row):]


def _decode(blob: bytes, fmt: str) -> list[tuple[Any, ...]]:
    if fmt == FORMAT:
        return marshal.loads(blob)
    if fmt == "msgpack":
        return msgpack.unpackb(blob, raw=False, use_list=False)
    raise ValueError(f"journal batch in unknown format {fmt!r}")


def read_journal(path: Path, *, event: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
    """The journal's events as dicts (ts, event, node, resource, holder, lease, detail, rule), oldest first."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = []
        for row in _events(db, since=since):
            if (event is None or row[1] == event) and (since is None or row[0] >= since):
                out.append(dict(zip(COLUMNS, row)))
        return out
    finally:
        db.close()
