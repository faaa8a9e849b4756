"""Start a real `licmaster serve` for a benchmark, in a temporary directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class BenchMaster:
    def __init__(self, workdir: Path, licenses: str, **config: object) -> None:
        self.workdir = workdir
        (workdir / "licenses.toml").write_text(licenses)
        settings = {"listen": '"127.0.0.1:0"', "data_dir": '"data"', "licenses": '["licenses.toml"]', "log_level": '"warning"'}
        settings.update({k: str(v) for k, v in config.items()})
        (workdir / "licmaster.toml").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        log = open(workdir / "master.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "licmaster.cli", "serve", "--config", "licmaster.toml"],
                                     cwd=workdir, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)})
        for _ in range(1000):
            m = re.search(r"serving on ([\d.]+):(\d+)", (workdir / "master.log").read_text())
            if m:
                self.address = (m.group(1), int(m.group(2)))
                return
            time.sleep(0.02)
        raise RuntimeError("master did not start: " + (workdir / "master.log").read_text())

    @property
    def target(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
