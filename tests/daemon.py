"""Masters for tests: a real `licmaster serve` process (Daemon), or a real Master in this process
(InProcess, no socket); both give `connect()` -> a raw protocol peer with the same methods."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from licmaster.testing import InProcessMaster, MasterProcess, SocketPeer

Raw = SocketPeer
# Short enough for quick tests, long enough that a test process starved by a busy machine does
# not see its session expire between two requests. Tests of expiry set a shorter TTL themselves.
FAST = {"heartbeat_ms": 200, "lease_ttl_ms": 2000, "grace_ms": 600, "hello_timeout_ms": 1000, "journal_flush_ms": 20}


class Daemon(MasterProcess):
    def __init__(self, workdir: Path, licenses: str, **config: Any) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.license_file = workdir / "licenses.toml"
        self.license_file.write_text(licenses)
        super().__init__(workdir, {**FAST, "licenses": ["licenses.toml"], **config})


async def in_process(workdir: Path, licenses: str, **config: Any) -> InProcessMaster:
    return await InProcessMaster(workdir, licenses, **{**FAST, **config}).start()


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl), for the TLS tests."""
    import subprocess

    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


async def next_event(client: Any, name: str, timeout: float = 15.0) -> dict[str, Any]:
    """The next event of that name a MasterClient delivers (others are skipped)."""
    while True:
        event = await asyncio.wait_for(client.events.get(), timeout)
        if event.get("event") == name:
            return event


def in_virtual_time(main: Any) -> Any:
    """`main(loop)` run on a virtual clock of its own (licmaster/testing/simloop.py)."""
    from licmaster.testing.simloop import VirtualLoop

    loop = VirtualLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()
