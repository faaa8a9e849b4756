"""Real etcd members on 127.0.0.1 for tests and drills (Debian's `etcd-server`, 3.4): one, or
three for quorum, each in a temporary data directory, on free ports; kill and restart one."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from licmaster.testing.process import free_port


class EtcdCluster:
    def __init__(self, workdir: Path, members: int = 1) -> None:
        if shutil.which("etcd") is None:
            raise RuntimeError("etcd is not installed (Debian: apt-get install etcd-server; scripts/setup-test-host)")
        self.workdir = workdir
        self.names = [f"m{i}" for i in range(members)]
        self.client_ports = [free_port() for _ in self.names]
        self.peer_ports = [free_port() for _ in self.names]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * members
        self.cluster = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer_ports, strict=True))

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    def start(self) -> EtcdCluster:
        for i in range(len(self.names)):
            self.start_member(i, new=True)
        self.wait_healthy()
        return self

    def start_member(self, i: int, *, new: bool = False) -> None:
        data = self.workdir / self.names[i]
        data.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"{self.names[i]}.log", "ab")
        self.procs[i] = subprocess.Popen([
            "etcd", "--name", self.names[i], "--data-dir", str(data),
            "--listen-client-urls", f"http://127.0.0.1:{self.client_ports[i]}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.client_ports[i]}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-cluster", self.cluster, "--initial-cluster-state", "new" if new else "existing",
            "--heartbeat-interval", "100", "--election-timeout", "500", "--logger", "zap", "--log-level", "error"],
            stdout=log, stderr=log)

    def wait_healthy(self, timeout: float = 20.0, members: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for i in members if members is not None else range(len(self.names)):
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.client_ports[i]}/health", timeout=1) as r:
                        if json.loads(r.read()).get("health") == "true":
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd member {self.names[i]} is not healthy:\n"
                                       + (self.workdir / f"{self.names[i]}.log").read_text(errors="replace")[-2000:])
                time.sleep(0.1)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self.procs[i] = None

    def restart(self, i: int) -> None:
        self.kill(i)
        self.start_member(i)

    def stop(self) -> None:
        for i in range(len(self.names)):
            self.kill(i)
