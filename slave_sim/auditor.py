"""The auditor: all through the run, the master's `usage` against what the simulated network
believes it holds. Never more in use than installed; after quiet periods, the two views agree
exactly. Any disagreement is a failed run, with the evidence."""

from __future__ import annotations

import asyncio
from typing import Any

from licmaster.client import LicenseError, MasterClient

from .metrics import Recorder


def totals(usage: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """(in use, installed) per family, summed over versions and bindings."""
    in_use: dict[str, int] = {}
    installed: dict[str, int] = {}
    for pool in usage.get("pools", []):
        in_use[pool["family"]] = in_use.get(pool["family"], 0) + pool["in_use"]
        installed[pool["family"]] = installed.get(pool["family"], 0) + pool["installed"]
    return in_use, installed


class Auditor:
    def __init__(self, masters: list[str], recorder: Recorder, interval: float = 0.2) -> None:
        self.client = MasterClient(masters, "slave-sim-auditor", role="observer", connect_timeout=5.0)
        self.recorder = recorder
        self.interval = interval
        self.installed: dict[str, int] = {}
        self.pools: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.connect()
        await self.sample()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="auditor")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.client.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sample()
            except (TimeoutError, LicenseError, ConnectionError):
                continue  # the master may be restarting; the client reconnects

    async def reach(self, epoch: int, timeout: float = 30.0) -> bool:
        """Wait until the auditor reads an acting master at `epoch` or later (after a failover its
        client may first land on a master that is still a standby, or find none for a moment)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                usage = await self.client.usage()
                if not usage.get("standby_of") and usage["epoch"] >= epoch:
                    return True
            except (TimeoutError, LicenseError, ConnectionError):
                pass
            await asyncio.sleep(0.05)
        return False

    async def sample(self) -> dict[str, int]:
        usage = await self.client.usage()
        if usage.get("standby_of"):
            return {}  # a standby master that has not taken over yet serves nothing: not a sample
        in_use, installed = totals(usage)
        self.installed = installed
        self.pools = [{k: p[k] for k in ("family", "version", "bound", "installed")} for p in usage["pools"]]
        self.recorder.samples.append({"t": round(self.recorder.now(), 3), "in_use": in_use, "installed": installed})
        for pool in usage["pools"]:
            if pool["in_use"] > pool["installed"]:
                self.recorder.violations.append({"t": round(self.recorder.now(), 3), "what": "over-allocation", "pool": pool})
        return in_use

    async def check_agreement(self, label: str, belief: dict[str, int]) -> bool:
        """At a quiet point: the master's in-use counts equal the network's belief, family by family."""
        master_view = {f: n for f, n in (await self.sample()).items() if n}
        network_view = {f: n for f, n in belief.items() if n}
        agrees = master_view == network_view
        finding = {"t": round(self.recorder.now(), 3), "at": label, "agrees": agrees,
                   "master": master_view, "network": network_view}
        self.recorder.audits.append(finding)
        if not agrees:
            self.recorder.violations.append({"t": finding["t"], "what": "disagreement", "at": label,
                                             "master": master_view, "network": network_view})
        return agrees
