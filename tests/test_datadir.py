"""One master per data directory: a second one refuses to start, naming the pid that holds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from licmaster.daemon.storage.datadir import DataDirBusy, DataDirLock, holder_pid
from licmaster.daemon.storage.journal import read_journal
from licmaster.testing.process import ROOT

from .daemon import Daemon

LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n'


def test_the_lock_is_exclusive_names_its_holder_and_is_free_again_once_released(tmp_path: Path) -> None:
    held = DataDirLock.acquire(tmp_path)
    assert holder_pid(tmp_path) == os.getpid()
    with pytest.raises(DataDirBusy) as busy:
        DataDirLock.acquire(tmp_path)  # another open file description: refused as another process would be
    assert busy.value.pid == str(os.getpid()) and f"pid {os.getpid()}" in str(busy.value)
    held.release()
    assert holder_pid(tmp_path) is None
    DataDirLock.acquire(tmp_path).release()


def test_a_second_master_on_a_running_masters_data_directory_refuses_and_writes_nothing(tmp_path: Path) -> None:
    first = Daemon(tmp_path / "a", LICENSES).start()
    try:
        assert first.proc is not None
        data = tmp_path / "a" / "data"
        second = subprocess.run([sys.executable, "-m", "licmaster.cli", "serve", "--licenses", str(tmp_path / "a" / "licenses.toml"),
                                 "--data-dir", str(data), "--listen", "127.0.0.1:0", "--http", ""],
                                capture_output=True, text=True, timeout=30, cwd=tmp_path,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert second.returncode == 1
        assert f"in use by another master (pid {first.proc.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.alive
        first.stop()
        starts = read_journal(data / "journal.sqlite3", event="start")
        assert len(starts) == 1  # the refused one wrote nothing into the running master's journal
    finally:
        first.kill9()


def test_a_master_killed_with_9_leaves_no_stale_lock(tmp_path: Path) -> None:
    master = Daemon(tmp_path / "a", LICENSES).start()
    master.kill9()
    master.restart_same_port()  # the kernel dropped the lock with the process
    assert master.alive
    master.stop()
