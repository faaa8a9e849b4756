"""The auditor: all through the run, the master's `usage` against what the simulated network
believes it holds. Never more in use than installed; after quiet periods, the two views agree
exactly. Any disagreement is a failed run, with the evidence."""

from __future__ import annotations

import asyncio
from typing import Any

from licmaster.client import LicenseError, MasterClient, parse_address
from licmaster.model.catalog import SMB_PORT

from ..access import PLAIN, MasterAccess
from ..masters import SERVING, books_in_use, held_in_either, ports_counted_twice
from .metrics import Recorder


def totals(usage: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """(in use, installed) per family, summed over versions and bindings."""
    in_use: dict[str, int] = {}
    installed: dict[str, int] = {}
    for pool in usage.get("pools", []):
        in_use[pool["family"]] = in_use.get(pool["family"], 0) + pool["in_use"]
        installed[pool["family"]] = installed.get(pool["family"], 0) + pool["installed"]
    return in_use, installed


PORT_FAMILIES = ("PBX-Port", SMB_PORT)  # a port lease takes one of these, one each (R-PORT-1)


async def read_book(watcher: MasterClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One master's counts (`usage`) and, if it serves, its leases listed before and after them
    (masters.held_in_either): the leases behind the counts, even while PBXs check in and out."""
    before = await watcher.all_nodes(held=True)
    usage = await watcher.usage()
    if usage.get("role") not in SERVING:
        return usage, []
    return usage, held_in_either(before, await watcher.all_nodes(held=True))


class Auditor:
    def __init__(self, masters: list[str], recorder: Recorder, interval: float = 0.2,
                 every_master: list[str] | None = None, access: MasterAccess = PLAIN) -> None:
        secure = access.client_options()  # TLS and the token, as every client of the run
        self.client = MasterClient(masters, "slave-sim-auditor", role="observer", connect_timeout=5.0, **secure)
        self.recorder = recorder
        self.interval = interval
        self.installed: dict[str, int] = {}
        self.pools: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        # With several masters, each is also watched on its own: in use is summed over every one
        # that serves (a partition may leave two serving), and each one's role changes go in the timeline.
        self.watchers = {m: MasterClient([m], f"slave-sim-watch-{i}", role="observer", connect_timeout=0.5, **secure)
                         for i, m in enumerate(every_master or [])}
        self.roles: dict[str, str] = {}

    async def start(self) -> None:
        await self.client.connect()
        for watcher in self.watchers.values():
            try:
                await watcher.connect()
            except (OSError, LicenseError, ConnectionError):
                pass  # it reconnects by itself
        await self.sample()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="auditor")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        # Each says bye (at once, a watcher of a master that is gone gives up after its connect
        # timeout): the master's journal gets `bye` for the simulator's sessions, not `expire`.
        await asyncio.gather(self.client.close(), *(watcher.close() for watcher in self.watchers.values()))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.watchers:
                await self.sample_every_master()
            try:
                await self.sample()
            except (TimeoutError, LicenseError, ConnectionError):
                continue  # the master may be restarting; the client reconnects

    async def sample_every_master(self) -> None:
        """Each master's role, and what the serving ones count together beyond installed
        (masters.books_in_use: a suspended master's book only while none grants): a Port lease
        two of them count for the same PBX and holder (one adopted it from the other, absent
        there) is one license for one phone, counted once."""
        async def one(address: str, watcher: MasterClient) -> tuple[str, dict[str, Any] | None, list[dict[str, Any]]]:
            pinned = parse_address(address)
            if watcher.masters != [pinned]:  # a master stepping down sends its clients elsewhere: not this one
                watcher.master_list.pin(pinned)
                watcher.abort_connection()
            try:
                usage, nodes = await asyncio.wait_for(read_book(watcher), self.interval)
            except (TimeoutError, LicenseError, ConnectionError, OSError):
                return address, None, []
            return address, usage, nodes

        results = await asyncio.gather(*(one(a, w) for a, w in self.watchers.items()))
        roles = {address: "unreachable" if usage is None else str(usage.get("role")) for address, usage, _ in results}
        for address, role in roles.items():
            if self.roles.get(address) != role:
                if address in self.roles:
                    self.recorder.fault(f"master {address}: {self.roles[address]} -> {role}")
                self.roles[address] = role
        counted = books_in_use(roles)
        summed: dict[str, int] = {}
        installed: dict[str, int] = {}
        for address, usage, _ in results:
            if usage is not None and address in counted:
                in_use, inst = totals(usage)
                for family, n in in_use.items():
                    summed[family] = summed.get(family, 0) + n
                for family, n in inst.items():
                    installed[family] = max(installed.get(family, 0), n)
        twice = ports_counted_twice([nodes for address, _, nodes in results if address in counted])
        over_summed = max((summed.get(f, 0) - n for f, n in installed.items()), default=0)
        for family in PORT_FAMILIES:
            if family in summed:
                summed[family] -= twice
        over = max((summed.get(f, 0) - n for f, n in installed.items()), default=0)
        self.recorder.across_masters.append({"t": round(self.recorder.now(), 3), "over": max(0, over),
                                             "over_summed": max(0, over_summed), "counted_twice": twice, "roles": roles,
                                             "serving": sorted(a for a, r in roles.items() if r in SERVING)})

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
        t = round(self.recorder.now(), 3)
        self.recorder.samples.append({"t": t, "in_use": in_use, "installed": installed})
        self.recorder.saw_absent(t, usage.get("absent") or {})
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
