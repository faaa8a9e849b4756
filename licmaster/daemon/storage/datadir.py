"""One master per data directory: an exclusive lock held for the process's life.

Two masters on one data directory would each take an epoch, replay one journal, and both grant
the whole pool. The lock is `flock` on `licmaster.pid` in the data directory (the kernel drops it
when the process dies, kill -9 included: nothing stale to clean up), and the file says the pid
of the master holding it, which a second one names when it refuses to start, and which an
operator can signal (`kill -HUP $(cat DATA/licmaster.pid)`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

PID_FILE = "licmaster.pid"


class DataDirBusy(RuntimeError):
    """Another process holds the data directory."""

    def __init__(self, directory: Path, pid: str) -> None:
        self.pid = pid
        super().__init__(f"the data directory {directory} is in use by another master (pid {pid or 'unknown'}): "
                         "two masters on one data directory would both grant the whole pool; give each its own")


class DataDirLock:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, directory: Path) -> DataDirLock:
        """Held until `release` or the process's end; DataDirBusy naming the holder's pid if taken."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / PID_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DataDirBusy(directory.resolve(), holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no pid of a master that is gone
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def holder_pid(directory: Path) -> int | None:
    """The pid of the master running on this data directory, or None when none is (the lock is free)."""
    path = directory / PID_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
