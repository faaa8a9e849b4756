"""A real `licmaster serve` process for a run: started on the scenario's license files in a
temporary data directory, killed (-9) and restarted on the same port for drills, stopped at the end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


class MasterProcess:
    def __init__(self, licenses: tuple[Path, ...], settings: dict[str, Any], workdir: Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="slave-sim-") if workdir is None else None
        self.workdir = Path(self._tmp.name) if self._tmp else workdir  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The master reads copies, so that a drill can replace them and reload (SIGHUP).
        self.licenses = tuple(self.workdir / f"licenses-{i}.toml" for i in range(max(1, len(licenses))))
        self._install(licenses)
        self.settings = {"heartbeat_ms": 1000, "lease_ttl_ms": 3000, **settings}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def journal(self) -> Path:
        return self.workdir / "data" / "journal.sqlite3"

    def _install(self, sources: tuple[Path, ...]) -> None:
        for i, copy in enumerate(self.licenses):
            copy.write_text(sources[i].read_text() if i < len(sources) else "")
        extra = sources[len(self.licenses):]
        if extra:  # more files than at start: append them to the last copy
            self.licenses[-1].write_text(self.licenses[-1].read_text() + "\n" + "\n".join(p.read_text() for p in extra))

    def reload(self, sources: tuple[Path, ...]) -> None:
        """Replace the license files and have the master reload them (SIGHUP)."""
        self._install(sources)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def _write_config(self) -> Path:
        lines = [f'listen = "127.0.0.1:{self.port}"', 'data_dir = "data"', "log_level = \"warning\"",
                 "licenses = [" + ", ".join(f'"{p.resolve()}"' for p in self.licenses) + "]"]
        lines += [f"{k} = {v}" for k, v in self.settings.items()]
        path = self.workdir / "licmaster.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> str:
        config = self._write_config()
        self.starts += 1
        log_path = self.workdir / f"master-{self.starts}.log"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "licmaster.cli", "serve", "--config", str(config),
                                          "--name", "sim-master"], cwd=self.workdir, stderr=log,
                                         stdout=subprocess.DEVNULL, env=dict(os.environ))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = re.search(r"serving on [\d.]+:(\d+)", log_path.read_text(errors="replace"))
            if m:
                self.port = int(m.group(1))
                return self.address
            if self.proc.poll() is not None:
                raise RuntimeError(f"the master did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.02)
        raise RuntimeError(f"the master did not start within 30 s:\n{log_path.read_text(errors='replace')}")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> str:
        self.kill9()
        return self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
