"""A city on one master: 1,000 PBXs and 100,000 devices, with the load in separate processes.

    python bench/city.py                       # 3 runs of 1,000 PBXs x 100 devices, 2 load processes
    python bench/city.py --runs 1 --pbxs 200   # smaller

Each run starts a master (defaults: heartbeat 1 s, lease TTL 3 s) licensed for every device,
and `--procs` load processes (this file with `--worker`), each holding its share of the PBXs as
real MasterClient sessions. Then, timed on the wall clock shared by every process:
- the rush: every PBX checks out a Port for each of its devices, unpaced, one request in flight
  per PBX (each checkout's latency as its PBX saw it, and the master's own time per read from
  its /metrics histogram);
- the master's RSS with every lease held, then with a standby master attached (`standby_of`
  started after the rush), and how long the standby took to get the whole snapshot;
- failover: `kill -9` of the master, until the last PBX has re-synced on the standby (its
  `reconnected` event), and how many leases the new master holds (target: all of them);
- the evening: every device unregisters (check-in), until none is in use.
Prints one JSON object: the medians over the runs and every run. Targets (issue 15): rush
<= 5 s, master p99 <= 50 ms during it, RSS <= 300 MB, failover <= 3 s, 0 lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _master import bench_master  # noqa: E402

from licmaster.client import MasterClient, parse_address  # noqa: E402
from licmaster.daemon.timing import BATCH_BOUNDS  # noqa: E402

# ---------------------------------------------------------------- the load processes


async def worker(master: str, first: int, pbxs: int, devices: int) -> None:
    """PBXs first..first+pbxs-1, driven by commands on stdin; each answer is a JSON line."""
    clients = [MasterClient([master], f"pbx-{n:04}", mac=f"00:90:33:01:{n // 256:02x}:{n % 256:02x}", connect_timeout=10)
               for n in range(first, first + pbxs)]
    await asyncio.gather(*(c.connect() for c in clients))
    say({"ready": len(clients)})
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "rush":
            latencies: list[float] = []
            await asyncio.gather(*(register_all(c, devices, latencies) for c in clients))
            say({"done_at": time.time(), "latencies": latencies})
        elif line.startswith("add "):
            for client in clients:
                client.masters.append(parse_address(line[4:]))
            say({"added": line[4:]})
        elif line == "resynced":
            async def resynced(client: MasterClient) -> float:
                while True:
                    event = await asyncio.wait_for(client.events.get(), 60)
                    if event.get("event") == "reconnected":
                        return time.time()

            times = await asyncio.gather(*(resynced(c) for c in clients))
            say({"last_at": max(times), "held": sum(len(c.leases) for c in clients)})
        elif line == "evening":
            await asyncio.gather(*(c.checkin("port", f"phone-{d}") for c in clients for d in range(devices)))
            say({"done_at": time.time()})
        else:
            for client in clients:
                await client.close(bye=False)
            return


async def register_all(client: MasterClient, devices: int, latencies: list[float]) -> None:
    """A PBX registers its devices as fast as the master answers, one request in flight at a
    time (a thousand PBXs: a thousand in flight). All 100 at once per PBX would measure the load
    generator's own queue, not the master: a latency of the whole rush for every request."""
    for device in range(devices):
        started = time.perf_counter()
        await client.checkout("port", f"phone-{device}")
        latencies.append(time.perf_counter() - started)


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class Load:
    """The load processes, spoken to together."""

    def __init__(self, master: str, pbxs: int, devices: int, procs: int) -> None:
        share = -(-pbxs // procs)
        self.procs = [subprocess.Popen([sys.executable, __file__, "--worker", master, str(first), str(min(share, pbxs - first)),
                                        str(devices)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                      for first in range(0, pbxs, share)]
        self.ask_each(None)  # ready

    def ask_each(self, command: str | None) -> list[dict[str, Any]]:
        for proc in self.procs:
            if command is not None:
                assert proc.stdin is not None
                proc.stdin.write(command + "\n")
                proc.stdin.flush()
        answers = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"a load process ended (exit {proc.wait()})")
            answers.append(json.loads(line))
        return answers

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                assert proc.stdin is not None
                proc.stdin.write("quit\n")
                proc.stdin.flush()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


# ---------------------------------------------------------------- the run


def batch_histogram(http: str) -> list[float]:
    """The master's cumulative request-batch histogram (bucket counts, in BATCH_BOUNDS order, +Inf last)."""
    text = urllib.request.urlopen(f"http://{http}/metrics", timeout=10).read().decode()
    counts = []
    for line in text.splitlines():
        if line.startswith("licmaster_request_batch_seconds_bucket"):
            counts.append(float(line.rsplit(" ", 1)[1]))
    return counts


def p99_bound(before: list[float], after: list[float]) -> float | None:
    """The upper bound of the histogram bucket holding the 99th percentile of batches between two reads."""
    diff = [a - b for a, b in zip(after, before, strict=True)]
    if not diff or diff[-1] <= 0:
        return None
    for bound, cumulative in zip((*BATCH_BOUNDS, float("inf")), diff, strict=True):
        if cumulative >= 0.99 * diff[-1]:
            return bound
    return None


async def observe(address: str) -> dict[str, Any]:
    watcher = MasterClient([address], "bench-watch", role="observer", connect_timeout=5)
    await watcher.connect()
    try:
        return await watcher.usage()
    finally:
        await watcher.close(bye=False)


def in_use(usage: dict[str, Any]) -> int:
    return sum(p["in_use"] for p in usage["pools"] if p["family"] == "PBX-Port")


async def one_run(workdir: Path, pbxs: int, devices: int, procs: int) -> dict[str, Any]:
    total = pbxs * devices
    licenses = f'[[license]]\ntype = "PBX-Port13"\ncount = {total}\n'
    master = bench_master(workdir / "master", licenses)
    standby = None
    load = Load(master.target, pbxs, devices, procs)
    try:
        rss_idle = master.rss_mb()
        assert master.http is not None
        before = batch_histogram(master.http)
        started = time.time()
        rush = load.ask_each("rush")
        rush_s = max(r["done_at"] for r in rush) - started
        after = batch_histogram(master.http)
        latencies = sorted(x for r in rush for x in r["latencies"])
        held = in_use(await observe(master.target))
        rss_leases = master.rss_mb()

        standby = bench_master(workdir / "standby", licenses, standby_of=master.target)
        deadline = time.monotonic() + 60
        while True:
            replication = (await observe(standby.target))["replication"]
            if replication.get("status") == "attached" and replication.get("leases") == total:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby did not attach: {replication}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        rss_with_standby = master.rss_mb()

        load.ask_each(f"add {standby.target}")
        killed = time.time()
        master.kill9()
        resync = load.ask_each("resynced")
        failover_s = max(r["last_at"] for r in resync) - killed
        after_failover = in_use(await observe(standby.target))

        evening_started = time.time()
        evening = load.ask_each("evening")
        evening_s = max(r["done_at"] for r in evening) - evening_started
        left = in_use(await observe(standby.target))
        return {
            "devices": total, "held_after_rush": held,
            "rush_s": round(rush_s, 3), "registrations_per_s": round(total / rush_s),
            "checkout_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "checkout_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
            "master_batch_p99_at_most_ms": (lambda b: None if b is None else b * 1000)(p99_bound(before, after)),
            "master_rss_mb": {"idle_sessions": round(rss_idle, 1), "leases": round(rss_leases, 1),
                              "leases_and_standby": round(rss_with_standby, 1)},
            "standby_rss_mb": round(standby.rss_mb(), 1),
            "standby_snapshot_ms": replication.get("snapshot_ms"),
            "failover_s": round(failover_s, 3), "held_after_failover": after_failover, "lost": total - after_failover,
            "evening_s": round(evening_s, 3), "left_in_use": left,
        }
    finally:
        load.stop()
        master.kill9()
        if standby is not None:
            standby.kill9()


def median(runs: list[dict[str, Any]], key: str) -> Any:
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pbxs", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=100, help="per PBX")
    parser.add_argument("--procs", type=int, default=2, help="load processes")
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-city-") as tmp:
            runs.append(await one_run(Path(tmp), args.pbxs, args.devices, args.procs))
    keys = ("rush_s", "registrations_per_s", "checkout_p50_ms", "checkout_p99_ms", "master_batch_p99_at_most_ms",
            "standby_snapshot_ms", "failover_s", "evening_s")
    print(json.dumps({
        "bench": "city", "pbxs": args.pbxs, "devices": args.pbxs * args.devices, "load_processes": args.procs,
        "median": {k: median(runs, k) for k in keys} | {
            "master_rss_leases_mb": statistics.median(r["master_rss_mb"]["leases"] for r in runs),
            "master_rss_leases_and_standby_mb": statistics.median(r["master_rss_mb"]["leases_and_standby"] for r in runs)},
        "lost": sum(r["lost"] for r in runs), "left_in_use": sum(r["left_in_use"] for r in runs),
        "targets": {"rush_s": 5, "master_p99_ms": 50, "rss_mb": 300, "failover_s": 3, "lost": 0},
        "runs": runs,
    }, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        asyncio.run(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
    else:
        asyncio.run(main())
