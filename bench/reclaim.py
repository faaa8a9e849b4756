"""Reclaim time (issue 22, item 2): from each end of a PBX the master knows of to its floating
licenses free again; and an absent PBX's hold, which ends on its own clock.

    python bench/reclaim.py                   # 5 runs of each end, a PBX holding all 10 Ports
    python bench/reclaim.py --runs 1 --ports 2

A real master (`licmaster serve`, the defaults: heartbeat 1 s, lease TTL 3 s, hold 72 h) with
exactly `--ports` Ports installed, and real clients on 127.0.0.1. For each end, a PBX holds
every Port (the pool is full), the end happens, and the time is taken from the client's action
until the master is seen from outside to have given the Ports back:

- `bye`: the PBX closes (MasterClient.close());
- `takeover`: its standby PBX takes it over (MasterClient.takeover); the leases are not freed
  but moved, so what is timed is until `nodes` shows the standby holding them all;
- `operator_release`: the PBX crashed (no bye) and an operator releases it on the console
  (POST /api/v1/nodes/NODE/release, a manage token);
- `newer_hello`: a second client of the same node, holding nothing, says hello (`fresh`): it
  fences the first, still connected;
- `restart_fresh`: the PBX crashed and its restarted client, holding nothing, says hello.

Except for the takeover, "given back" is another PBX's checkout of a Port succeeding (it tries
every 2 ms from before the action). Each end is timed `--runs` times: median and max in ms,
against the target (<= 1 s), as data.

The hold, two cases run side by side: on this master (hold 72 h), a PBX crashes (abort()) while
holding every Port: absent after a lease TTL, and after 2 x TTL still holding them (another
PBX's checkout is refused); then an operator releases it. On a second master with `hold_s` short
(4 s, lease TTL 1 s, heartbeat 250 ms), a PBX cut off (freeze()) right after its checkouts:
`usage` is read every 10 ms, the times it shows the PBX absent and its Ports back are taken from
just before the checkouts (its last word is no earlier, so a time below the TTL or the hold is
early whatever the noise). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _master import bench_master  # noqa: E402

from licmaster.client import LicenseError, MasterClient  # noqa: E402
from licmaster.testing import MasterProcess  # noqa: E402

TARGET_MS = 1000.0  # issue 22: a known end gives the licenses back within a second
POLL_S = 0.002  # the other PBX's checkout, tried again after this
USAGE_POLL_S = 0.01
GIVE_UP_S = 10.0  # an end that gives nothing back within this is reported as such (null), not waited for
MANAGE_TOKEN = "bench-reclaim-manage-token"
ENDS = ("bye", "takeover", "operator_release", "newer_hello", "restart_fresh")
SHORT = {"hold_s": 4, "lease_ttl_ms": 1000, "heartbeat_ms": 250}


def licenses(ports: int) -> str:
    """Exactly `ports` Ports (a PBX holding them all fills the pool), and Standby licenses for them."""
    return (f'[[license]]\ntype = "PBX-Port13"\ncount = {ports}\n'
            f'[[license]]\ntype = "PBX-Standby13"\ncount = {ports}\n')


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def ports_in_use(client: MasterClient) -> int:
    usage = await client.usage()
    return sum(p["in_use"] for p in usage["pools"] if p["family"] == "PBX-Port")


async def absent_nodes(client: MasterClient) -> dict[str, int]:
    """The absent PBXs `usage` shows, and how many leases each holds."""
    usage = await client.usage()
    return {a["node"]: a["leases"] for a in usage.get("absent", {}).get("shown", [])}


class Ends:
    """One master, the clients that watch it from outside, and one timed run per end."""

    def __init__(self, master: MasterProcess, ports: int, http: aiohttp.ClientSession) -> None:
        self.master = master
        self.ports = ports
        self.http = http
        self.waiter = MasterClient([master.target], "waiter")  # the other PBX, whose checkout shows a Port free
        self.observer = MasterClient([master.target], "observer", role="observer")
        self.runs = 0

    async def start(self) -> None:
        await self.waiter.connect()
        await self.observer.connect()

    async def stop(self) -> None:
        await self.waiter.close()
        await self.observer.close()

    def client(self, node: str, unit: int = 0, **kwargs: Any) -> MasterClient:
        """A client of `node`: the same node's clients say the same MAC (a changed one would free its leases)."""
        return MasterClient([self.master.target], node, mac=f"00:90:33:{unit:02x}:{self.runs // 256 % 256:02x}:{self.runs % 256:02x}",
                            **kwargs)

    async def holding(self, node: str) -> MasterClient:
        """A PBX holding every Port: the pool is full."""
        client = self.client(node)
        await client.connect()
        await asyncio.gather(*(client.checkout("port", f"user{i}") for i in range(self.ports)))
        return client

    async def release(self, node: str, expected: int | None = None) -> None:
        """An operator's release of the node's session, on the console (a manage token)."""
        async with self.http.post(f"http://{self.master.http}/api/v1/nodes/{node}/release",
                                  headers={"Authorization": f"Bearer {MANAGE_TOKEN}"}) as response:
            body = await response.json()
            if response.status != 200 or body.get("released") != (self.ports if expected is None else expected):
                raise RuntimeError(f"release of {node}: {response.status} {body}")

    async def empty_pool(self) -> None:
        """After an end that gave nothing back in time (reported as null), the next run starts
        from an empty pool all the same: what is still held is released by the operator."""
        for entry in (await self.observer.nodes())["nodes"]:
            if entry["leases"] and entry["node"] != "waiter":
                await self.release(entry["node"], entry["leases"])
        for held in list(self.waiter.leases):
            await self.waiter.checkin(*held)
        if await ports_in_use(self.observer):
            raise RuntimeError("the pool is not empty after a run")

    async def _free_port_seen(self) -> float:
        """Tries a checkout until one succeeds: when, on the perf_counter clock."""
        while True:
            try:
                await self.waiter.checkout("port", "waiting")
                return time.perf_counter()
            except LicenseError as exc:
                if exc.code != "exhausted":
                    raise
            await asyncio.sleep(POLL_S)

    async def _moved_seen(self, failed: str, standby: str) -> float:
        """Reads `nodes` until the standby holds every Port and the failed node none."""
        while True:
            held = {n["node"]: n["leases"] for n in (await self.observer.nodes())["nodes"]}
            if held.get(standby) == self.ports and not held.get(failed):
                return time.perf_counter()
            await asyncio.sleep(POLL_S)

    async def timed(self, watch: Awaitable[float], end: Callable[[], Awaitable[Any]]) -> float | None:
        """ms from the end's action to what `watch` sees; None if it saw nothing within GIVE_UP_S."""
        watcher = asyncio.ensure_future(watch)
        await asyncio.sleep(0.02)  # watching (and refused: the pool is full) before the end
        if watcher.done():
            raise RuntimeError(f"seen before the end: {watcher.result()}")
        started = time.perf_counter()
        await end()
        try:
            return ms(await asyncio.wait_for(watcher, GIVE_UP_S) - started)
        except TimeoutError:
            return None

    async def run(self, end: str) -> float | None:
        self.runs += 1
        node = f"pbx-{end}-{self.runs}"
        pbx = await self.holding(node)
        others: list[MasterClient] = []
        if end == "bye":
            took = await self.timed(self._free_port_seen(), pbx.close)
        elif end == "takeover":
            standby = self.client(f"{node}-stby", 1, role="standby", standby_for=node)
            await standby.connect()
            others.append(standby)
            took = await self.timed(self._moved_seen(node, standby.node), lambda: standby.takeover(node))
        elif end == "operator_release":
            pbx.abort()  # crashed: no bye, and it will not come back
            took = await self.timed(self._free_port_seen(), lambda: self.release(node))
        elif end in ("newer_hello", "restart_fresh"):
            if end == "restart_fresh":
                pbx.abort()  # crashed; its restarted client holds nothing
            newer = self.client(node)
            others.append(newer)
            took = await self.timed(self._free_port_seen(), newer.connect)
        else:
            raise ValueError(end)
        if end != "takeover" and took is not None and await ports_in_use(self.observer) != 1:  # the waiter's alone
            raise RuntimeError(f"{end}: a Port was free, but not all of {node}'s came back")
        for client in others:
            await client.close()  # bye: the standby gives back what it took over
        await pbx.close(bye=False)  # closed already (bye, fenced, crashed)
        await self.empty_pool()
        return took

    async def default_hold(self) -> dict[str, Any]:
        """A PBX holding every Port crashes: absent after a TTL, still holding them after 2 x TTL
        (the hold is 72 h); then an operator releases it."""
        ttl = self.waiter.lease_ttl_s
        node = "pbx-crashed"
        pbx = await self.holding(node)
        pbx.abort()
        crashed = time.perf_counter()
        absent_at: float | None = None
        while time.perf_counter() - crashed < 2 * ttl:
            if absent_at is None and node in await absent_nodes(self.observer):
                absent_at = time.perf_counter()
            await asyncio.sleep(0.05)
        checked = time.perf_counter()
        absent = await absent_nodes(self.observer)
        in_use = await ports_in_use(self.observer)
        try:
            await self.waiter.checkout("port", "waiting")
            refused: str | None = None
        except LicenseError as exc:
            refused = exc.code
        held = absent.get(node) == self.ports and in_use == self.ports and refused == "exhausted"
        released = await self.timed(self._free_port_seen(), lambda: self.release(node))
        await self.waiter.checkin("port", "waiting")
        return {"how": "abort() (a crash, no bye), holding every Port", "hold_s": self.waiter.hold_s, "lease_ttl_ms": ms(ttl),
                "absent_after_ms": None if absent_at is None else ms(absent_at - crashed),
                "checked_after_ms": ms(checked - crashed), "absent_then": node in absent, "leases_held_then": absent.get(node),
                "in_use_then": in_use, "other_pbx_checkout": refused or "granted",
                "still_held_after_2x_ttl": held, "operator_release_then_ms": released}


async def short_hold(master: MasterProcess, ports: int) -> dict[str, Any]:
    """A PBX cut off right after its checkouts, on a master whose hold is short: when `usage`
    shows it absent, and when its Ports back; neither may come before its clock."""
    observer = MasterClient([master.target], "observer", role="observer")
    pbx = MasterClient([master.target], "pbx-cut-off")
    await observer.connect()
    await pbx.connect()
    ttl, hold = pbx.lease_ttl_s, pbx.hold_s
    before_last_word = time.perf_counter()
    await asyncio.gather(*(pbx.checkout("port", f"user{i}") for i in range(ports)))
    pbx.freeze()
    absent_at = back_at = None
    while time.perf_counter() - before_last_word < hold + GIVE_UP_S:
        usage = await observer.usage()
        now = time.perf_counter()
        shown = {a["node"] for a in usage["absent"]["shown"]}
        if absent_at is None and "pbx-cut-off" in shown:
            absent_at = now
        if sum(p["in_use"] for p in usage["pools"] if p["family"] == "PBX-Port") == 0:
            back_at = now
            break
        await asyncio.sleep(USAGE_POLL_S)
    other = MasterClient([master.target], "other")
    await other.connect()
    try:
        await asyncio.gather(*(other.checkout("port", f"u{i}") for i in range(ports)))
        other_got_them = True
    except LicenseError:
        other_got_them = False
    await other.close()
    await observer.close()
    await pbx.close(bye=False)
    absent_ms = None if absent_at is None else ms(absent_at - before_last_word)
    back_ms = None if back_at is None else ms(back_at - before_last_word)
    return {"how": "freeze() (cut off: connection open, nothing sent) right after its checkouts", **SHORT,
            "absent_after_ms": absent_ms, "absent_early": absent_ms is not None and absent_ms < ttl * 1000,
            "back_after_ms": back_ms, "back_early": back_ms is not None and back_ms < hold * 1000,
            "back_late_ms": None if back_ms is None else round(back_ms - hold * 1000, 1),
            "other_pbx_got_them_then": other_got_them,
            "pass": back_ms is not None and absent_ms is not None and hold * 1000 <= back_ms <= hold * 1000 + TARGET_MS
            and ttl * 1000 <= absent_ms <= ttl * 1000 + TARGET_MS}


async def run(runs: int, ports: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        admin = [{"token": MANAGE_TOKEN, "role": "manage", "name": "bench"}]
        master = bench_master(Path(tmp) / "master", licenses(ports), admin_tokens=admin)
        short: MasterProcess | None = None
        try:
            short = bench_master(Path(tmp) / "short", licenses(ports), **SHORT)
            async with aiohttp.ClientSession() as http:
                ends = Ends(master, ports, http)
                await ends.start()
                times: dict[str, list[float | None]] = {end: [] for end in ENDS}
                for _ in range(runs):  # interleaved: a slow moment of the machine falls on every end alike
                    for end in ENDS:
                        times[end].append(await ends.run(end))
                # both holds side by side: each mostly waits for its clock
                default, short_case = await asyncio.gather(ends.default_hold(), short_hold(short, ports))
                await ends.stop()
        finally:
            master.stop()
            if short is not None:
                short.stop()
    figures: dict[str, Any] = {}
    for end, runs_ms in times.items():
        seen = [t for t in runs_ms if t is not None]
        figures[end] = {"median_ms": round(statistics.median(seen), 1) if seen else None, "max_ms": max(seen) if seen else None,
                        "runs_ms": runs_ms, "pass": len(seen) == len(runs_ms) and max(seen) <= TARGET_MS}
    figures["takeover"]["seen"] = "moved: the standby holds every Port (nodes), none freed"
    return {"bench": "reclaim", "config": "defaults (heartbeat 1 s, lease TTL 3 s, hold 72 h)", "ports_held": ports,
            "runs": runs, "seen": "another PBX's checkout of a Port succeeds, from the end's action", "poll_ms": POLL_S * 1000,
            "target_ms": TARGET_MS, "ends": figures, "all_ends_pass": all(f["pass"] for f in figures.values()),
            "hold": {"default": default, "short": short_case}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each end")
    parser.add_argument("--ports", type=int, default=10, help="Ports installed, all held by the PBX that ends")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.runs, args.ports)), indent=2))


if __name__ == "__main__":
    main()
