"""The journal: grants, check-ins, denials (with code and rule), expiries, takeovers, reloads.

Written in batches by one background thread into its own SQLite file, so that the event loop
never waits on disk: `record` only appends a tuple. A batch is flushed every `flush_ms`. The
journal is history for reports; it is not what makes licenses durable (see store.py), so a
`kill -9` may lose its last fraction of a second, never a license.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .recovery import STATE_EVENTS

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY, ts REAL NOT NULL, event TEXT NOT NULL, node TEXT,
    resource TEXT, holder TEXT, lease TEXT, detail TEXT, rule TEXT
);
CREATE INDEX IF NOT EXISTS journal_ts ON journal (ts);
CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL, started REAL NOT NULL);
"""
INSERT = "INSERT INTO journal (ts, event, node, resource, holder, lease, detail, rule) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

Row = tuple[float, str, str | None, str | None, str | None, str | None, str | None, str | None]


class Journal:
    def __init__(self, path: Path, *, flush_ms: int = 200) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.flush_s = flush_ms / 1000
        self._pending: list[Row] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._db: sqlite3.Connection | None = None
        self._executor.submit(self._open).result()
        self._task: asyncio.Task[None] | None = None
        self.written = 0

    def _open(self) -> None:
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def begin_run(self) -> tuple[bool, list[tuple[Any, ...]]]:
        """Mark the start of a run. Returns (whether an earlier run exists, the earlier run's
        state-changing rows, oldest first) for recovery.held_at_end."""
        return self._executor.submit(self._begin_run).result()

    def _begin_run(self) -> tuple[bool, list[tuple[Any, ...]]]:
        assert self._db is not None
        last = self._db.execute("SELECT MAX(first_seq) FROM runs").fetchone()[0]
        rows: list[tuple[Any, ...]] = []
        if last is not None:
            marks = ",".join("?" * len(STATE_EVENTS))
            rows = self._db.execute(
                f"SELECT event, node, resource, holder, lease, detail FROM journal WHERE seq > ? AND event IN ({marks}) ORDER BY seq",
                (last, *STATE_EVENTS)).fetchall()
        first = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM journal").fetchone()[0]
        with self._db:
            self._db.execute("INSERT INTO runs (first_seq, started) VALUES (?, ?)", (first, time.time()))
        return last is not None, rows

    def record(self, event: str, node: str | None = None, resource: str | None = None, holder: str | None = None,
               lease: str | None = None, detail: str | None = None, rule: str | None = None) -> None:
        self._pending.append((time.time(), event, node, resource, holder, lease, detail, rule))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._flusher(), name="journal-flusher")

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush(loop)

    async def flush(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        await (loop or asyncio.get_running_loop()).run_in_executor(self._executor, self._write, batch)

    def _write(self, batch: list[Row]) -> None:
        assert self._db is not None
        with self._db:
            self._db.executemany(INSERT, batch)
        self.written += len(batch)

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.flush()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_db)
        self._executor.shutdown(wait=True)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def read_journal(path: Path, *, event: str | None = None) -> list[dict[str, Any]]:
    """The journal's rows as dicts, oldest first (for reports and tests)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        sql = "SELECT * FROM journal" + (" WHERE event = ?" if event else "") + " ORDER BY seq"
        return [dict(r) for r in db.execute(sql, (event,) if event else ())]
    finally:
        db.close()
