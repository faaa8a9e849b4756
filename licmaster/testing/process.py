"""`licmaster serve` as a child process, known ready by its ready file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from licmaster.testing.peers import SocketPeer

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 free now (for a process that must be given its port in advance)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text("".join(f"{key} = {toml_value(value)}\n" for key, value in config.items()))
    return path


class MasterProcess:
    """A master process with its own working directory; `config` holds licmaster.toml's keys."""

    def __init__(self, workdir: Path, config: dict[str, Any], *, name: str = "test-master", start_timeout: float = 30.0) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = {"listen": "127.0.0.1:0", "http": "127.0.0.1:0", "data_dir": "data", **config}
        self.config_file = workdir / "licmaster.toml"
        self.name = name
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self.ready: dict[str, Any] = {}
        self.http: str | None = None
        self.runs = 0
        self.reconfigure()

    def reconfigure(self, **changes: Any) -> MasterProcess:
        """Change config keys for the next start."""
        self.config.update(changes)
        write_config(self.config_file, self.config)
        return self

    @property
    def log_path(self) -> Path:
        return self.workdir / f"stderr-{self.runs}.log"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def target(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    master = target  # the address as a client lists it

    def start(self, listen: str | None = None) -> MasterProcess:
        """Start and wait until the master says it serves (its ready file)."""
        self.runs += 1
        if listen:
            self.reconfigure(listen=listen)
        ready_file = self.workdir / f"ready-{self.runs}.json"
        ready_file.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "licmaster.cli", "serve", "--config", str(self.config_file), "--name", self.name,
                 "--ready-file", str(ready_file)],
                cwd=self.workdir, stderr=log, stdout=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if ready_file.exists():
                self.ready = json.loads(ready_file.read_text())
                host, _, port = self.ready["listen"].rpartition(":")
                self.address = (host, int(port))
                self.http = self.ready.get("http")  # "host:port" of the console, or None
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"licmaster exited {self.proc.returncode}:\n{self.log}")
            time.sleep(0.01)
        self.kill9()
        raise RuntimeError(f"licmaster did not start within {self.start_timeout} s:\n{self.log}")

    def restart_same_port(self) -> MasterProcess:
        return self.start(listen=f"127.0.0.1:{self.address[1]}")

    def restart(self) -> MasterProcess:
        """kill -9, then start again on the same port."""
        self.kill9()
        return self.restart_same_port()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, and the exit status (kill -9 after `timeout`: -9)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return -9

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    async def connect(self) -> SocketPeer:
        return await SocketPeer.open(self.address)
