"""What must last, in SQLite (WAL) under the data directory: user assignments, hardware
licenses ever installed (R-HW-1: they can never disappear), and the master's epoch.

Every write commits before the caller answers the PBX: after `kill -9` nothing acknowledged is
lost (WAL with synchronous=NORMAL survives a process crash; `fsync = true` in the config makes
it synchronous=FULL, which survives power loss too, at the price of an fsync per change).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from licmaster.model.catalog import LicenseType
from licmaster.model.types import InstalledLicense

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (
    user TEXT NOT NULL, family TEXT NOT NULL, version INTEGER, node TEXT NOT NULL,
    since REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    PRIMARY KEY (user, family)
);
CREATE TABLE IF NOT EXISTS hardware (
    family TEXT NOT NULL, bind TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (family, bind)
);
"""


class Store:
    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ---------------------------------------------------------------- epoch

    def next_epoch(self) -> int:
        """Each start of a master is a new epoch: clients fence any master with a lower one."""
        with self.db:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            epoch = (int(row[0]) if row else 0) + 1
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (str(epoch),))
        return epoch

    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ---------------------------------------------------------------- assignments

    def assignments(self) -> list[tuple[str, str, int | None, str]]:
        return self.db.execute("SELECT user, family, version, node FROM assignments ORDER BY rowid").fetchall()

    def assignments_since(self, after: str | None, limit: int) -> list[tuple[str, str, int | None, str, float]]:
        """(user, family, version, node, since) of the users after `after` in name order: at most
        `limit` users' worth (every license of a user on one page)."""
        users = [u for (u,) in self.db.execute("SELECT DISTINCT user FROM assignments WHERE user > ? ORDER BY user LIMIT ?",
                                               (after or "", limit))]
        if not users:
            return []
        marks = ",".join("?" * len(users))
        return self.db.execute(f"SELECT user, family, version, node, since FROM assignments WHERE user IN ({marks}) "
                               "ORDER BY user, family", users).fetchall()

    def save_assignments(self, rows: list[tuple[str, str, int | None, str]]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO assignments (user, family, version, node) VALUES (?, ?, ?, ?)", rows)

    def replace_assignments(self, rows: list[tuple[str, str, int | None, str]]) -> None:
        """A standby master's copy: exactly the master's assignments, in one transaction."""
        with self.db:
            self.db.execute("DELETE FROM assignments")
            self.db.executemany("INSERT INTO assignments (user, family, version, node) VALUES (?, ?, ?, ?)", rows)

    def apply_assignment_changes(self, changes: list[tuple[str, str, str, int | None, str]]) -> None:
        """(event, user, family, version, node) from the master's replication stream, in order."""
        with self.db:
            for event, user, family, version, node in changes:
                if event == "assign":
                    self.db.execute("INSERT OR REPLACE INTO assignments (user, family, version, node) VALUES (?, ?, ?, ?)",
                                    (user, family, version, node))
                else:
                    self.db.execute("DELETE FROM assignments WHERE user = ? AND family = ?", (user, family))

    def delete_assignments(self, user: str, families: list[str]) -> None:
        with self.db:
            self.db.executemany("DELETE FROM assignments WHERE user = ? AND family = ?", [(user, f) for f in families])

    # ---------------------------------------------------------------- hardware (R-HW-1)

    def hardware(self) -> list[InstalledLicense]:
        rows = self.db.execute("SELECT family, bind, count FROM hardware ORDER BY family, bind").fetchall()
        return [InstalledLicense(LicenseType(f, None), n, b, source="data directory (R-HW-1)") for f, b, n in rows]

    def remember_hardware(self, licenses: list[InstalledLicense]) -> None:
        """Record the hardware licenses installed; a count only ever grows (R-HW-1)."""
        totals: dict[tuple[str, str], int] = {}
        for lic in licenses:
            if lic.version is None and lic.bind:
                key = (lic.family, lic.bind)
                totals[key] = totals.get(key, 0) + lic.count
        with self.db:
            self.db.executemany(
                "INSERT INTO hardware VALUES (?, ?, ?) ON CONFLICT (family, bind) DO UPDATE SET count = max(count, excluded.count)",
                [(f, b, n) for (f, b), n in totals.items()])
