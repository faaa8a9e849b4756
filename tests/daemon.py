"""Start the real `licmaster serve` as a process on 127.0.0.1, and talk raw protocol to it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from licmaster.codec import FrameDecoder, encode

ROOT = Path(__file__).resolve().parent.parent
# Short enough for quick tests, long enough that a test process starved by a busy machine does
# not see its session expire between two requests. Tests of expiry set a shorter TTL themselves.
FAST = {"heartbeat_ms": 200, "lease_ttl_ms": 2000, "grace_ms": 600, "hello_timeout_ms": 1000, "journal_flush_ms": 20}


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Daemon:
    def __init__(self, workdir: Path, licenses: str, **config: Any) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.license_file = workdir / "licenses.toml"
        self.license_file.write_text(licenses)
        self.config = {**FAST, "listen": "127.0.0.1:0", "data_dir": "data", "licenses": ["licenses.toml"], **config}
        self.config_file = workdir / "licmaster.toml"
        self.reconfigure()
        self.proc: subprocess.Popen[bytes] | None = None
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self.runs = 0

    def reconfigure(self, **changes: Any) -> Daemon:
        """Change config keys for the next start."""
        self.config.update(changes)
        self.config_file.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in self.config.items()))
        return self

    @property
    def log_path(self) -> Path:
        return self.workdir / f"stderr-{self.runs}.log"

    def start(self, listen: str | None = None) -> Daemon:
        self.runs += 1
        if listen:
            self.reconfigure(listen=listen)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "licmaster.cli", "serve", "--config", str(self.config_file), "--name", "test-master"],
                                     cwd=self.workdir, stderr=log, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            m = re.search(r"serving on ([\d.]+):(\d+)", text)
            if m:
                self.address = (m.group(1), int(m.group(2)))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"licmaster exited {self.proc.returncode}:\n{text}")
            time.sleep(0.02)
        raise RuntimeError("licmaster did not start:\n" + self.log_path.read_text())

    def restart_same_port(self) -> Daemon:
        return self.start(listen=f"127.0.0.1:{self.address[1]}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9

    @property
    def master(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"


async def next_event(client: Any, name: str, timeout: float = 15.0) -> dict[str, Any]:
    """The next event of that name a MasterClient delivers (others are skipped)."""
    while True:
        event = await asyncio.wait_for(client.events.get(), timeout)
        if event.get("event") == name:
            return event


class Raw:
    """A raw protocol connection: send maps, read maps (replies and events)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = FrameDecoder(1 << 24)
        self.inbox: list[dict[str, Any]] = []
        self.ids = 0

    @classmethod
    async def open(cls, address: tuple[str, int]) -> Raw:
        return cls(*await asyncio.open_connection(*address))

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(encode(message))

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        while not self.inbox:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionError("closed by the master")
            self.inbox += self.decoder.feed(data)
        return self.inbox.pop(0)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self.ids += 1
        self.send({"op": op, "id": self.ids, **fields})
        while True:
            reply = await self.recv()
            if reply.get("id") == self.ids or "event" not in reply:
                return reply

    async def hello(self, node: str, **fields: Any) -> dict[str, Any]:
        hello = {"node": node, "role": "pbx", "firmware": 13, "platform": "gateway", "mac": "00:90:33:00:00:01",
                 "licensing": "central", **fields}
        return await self.request("hello", **{k: v for k, v in hello.items() if v is not None})

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the master closed this connection (events before the close are kept)."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
                self.inbox += self.decoder.feed(data)
        except ConnectionError:
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self.writer.close()
