"""Abuse of a real `licmaster serve` while a well-behaved PBX (the canary) checks out and in.

    python bench/abuse.py                  # every attack, ~90 s
    python bench/abuse.py --only never-reads,refusal-flood,holder-flood

One attack at a time, each for a few seconds, from this process; the canary runs in a process of
its own and times each checkout+checkin round trip. For each attack the bench prints the
canary's p99 during it, the master's peak RSS growth over its level before, the journal's
growth (bytes, with its write-ahead log; the canary's own rows are in it too: compare with
`quiet`), its denial rows and its unmet-demand rows (`demand`, `demand_dropped`), and the descriptors the master still holds once the attack's
sessions have expired (compared with before it). Targets (issue 10): canary p99 <= 20 ms throughout, <= 50 MB RSS
growth for any one attack, journal growth <= 1 MB per 10,000 refused requests, no descriptor left.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _master import bench_master  # noqa: E402

from licmaster.client import MasterClient  # noqa: E402
from licmaster.daemon.denials import RETRY_S  # noqa: E402
from licmaster.daemon.storage.journal import read_journal  # noqa: E402
from licmaster.testing import MasterProcess  # noqa: E402
from licmaster.wire.codec import encode  # noqa: E402

MAX_CONNECTIONS = 600
CONFIG = {"heartbeat_ms": 1000, "lease_ttl_ms": 3000, "hello_timeout_ms": 1000, "max_connections": MAX_CONNECTIONS}
HELLO = {"role": "pbx", "firmware": 13, "platform": "gateway", "mac": "00:90:33:00:00:01", "licensing": "central"}


# ---------------------------------------------------------------- the canary, in its own process

def canary_main(address: str, stop: Any, out: Any) -> None:
    async def run() -> list[tuple[float, float]]:
        client = MasterClient([address], "canary", mac="00:90:33:00:00:99")
        await client.connect()
        samples: list[tuple[float, float]] = []
        while not stop.is_set():
            t0 = time.perf_counter()
            await client.checkout("port", "canary-user")
            await client.checkin("port", "canary-user")
            samples.append((time.time(), (time.perf_counter() - t0) * 1000))
            await asyncio.sleep(0.005)
        await client.close()
        return samples
    out.send(asyncio.run(run()))


# ---------------------------------------------------------------- measuring the master

def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def journal_bytes(master: MasterProcess) -> int:
    """The journal database with its write-ahead log (where new rows are until a checkpoint)."""
    return sum(p.stat().st_size for p in (master.workdir / "data").glob("journal.sqlite3*"))


async def sample_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb(pid))
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- the attacks

async def open_raw(address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*address)


async def idle(address: tuple[str, int], seconds: float) -> dict[str, Any]:
    """Connections that say nothing (closed after hello_timeout_ms)."""
    conns = [await open_raw(address) for _ in range(400)]
    await asyncio.sleep(seconds)
    for _, w in conns:
        w.close()
    return {"connections": len(conns)}


async def slowloris(address: tuple[str, int], seconds: float) -> dict[str, Any]:
    """A frame's bytes one at a time, slower than hello_timeout_ms allows."""
    conns = [await open_raw(address) for _ in range(200)]
    frame = encode({"op": "hello", "id": 1, "node": "slow", **HELLO})
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        for _, w in conns:
            if not w.is_closing() and i < len(frame):
                w.write(frame[i:i + 1])
        i += 1
        await asyncio.sleep(0.1)
    for _, w in conns:
        w.close()
    return {"connections": len(conns)}


async def oversize(address: tuple[str, int], seconds: float) -> dict[str, Any]:
    """Frame headers announcing 10 MB, then bytes."""
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _, w = await open_raw(address)
        w.write(struct.pack(">I", 10_000_000) + b"x" * 4096)
        w.close()
        n += 1
        await asyncio.sleep(0.005)
    return {"connections": n}


async def garbage(address: tuple[str, int], seconds: float) -> dict[str, Any]:
    """Random bytes, and well-framed maps of the wrong types."""
    rng = random.Random(7)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _, w = await open_raw(address)
        if n % 2:
            w.write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))))
        else:
            w.write(encode({"op": "hello", "id": 1, "node": f"typed{n}", **HELLO}) + b"".join(
                encode({"op": rng.choice(["checkout", "checkin", "sync", "assign", "usage"]), "id": i,
                        "resource": rng.choice([1, [], {}, None, "port"]), "holder": rng.choice([b"x", 3, None]),
                        "leases": rng.choice([1, "x", [1, 2]]), "families": rng.choice([{}, [1], "x"])})
                for i in range(2, 200)))
        w.close()
        n += 1
        await asyncio.sleep(0.005)
    return {"connections": n}


async def refusal_flood(address: tuple[str, int], seconds: float, refusals: int = 10_000) -> dict[str, Any]:
    """One session asking 10,000 times for distinct unknown resources with 60 KB names."""
    reader, w = await open_raw(address)
    w.write(encode({"op": "hello", "id": 0, "node": "flooder", **HELLO}))
    big = "x" * 60_000
    sent = 0
    for i in range(1, refusals + 1):
        w.write(encode({"op": "checkout", "id": i, "resource": f"{i}-{big}", "holder": "h"}))
        sent += 1
        if i % 20 == 0:
            await _send_and_read(reader, w)  # so that this attack is the names, not back-pressure
    await w.drain()
    await asyncio.sleep(0.5)
    w.close()
    return {"refused_requests": sent}


async def _send_and_read(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Send what is written, and read every reply waiting: a flood that reads its replies keeps
    the master writing, so the attack is what is asked, not back-pressure."""
    await w.drain()
    while True:
        try:
            await asyncio.wait_for(reader.read(1 << 20), 0.001)
        except TimeoutError:
            break


async def holder_flood(address: tuple[str, int], seconds: float, holders: int = 100_000) -> dict[str, Any]:
    """One session refused for 100,000 distinct holders (a license it has none of): each is an
    unmet demand, and the master keeps at most 1,024 of a node's open (daemon/denials.py).
    Waits out the retry window, so that the demands' rows are journaled within the attack."""
    reader, w = await open_raw(address)
    w.write(encode({"op": "hello", "id": 0, "node": "holder-flooder", **HELLO}))
    for i in range(1, holders + 1):
        w.write(encode({"op": "checkout", "id": i, "resource": "conference", "holder": f"phone-{i:06d}"}))
        if i % 200 == 0:
            await _send_and_read(reader, w)
    await w.drain()
    await asyncio.sleep(0.5)
    w.close()
    await asyncio.sleep(RETRY_S + 1.0)
    return {"refused_requests": holders}


async def churn(address: tuple[str, int], seconds: float) -> dict[str, Any]:
    """Connections opened, said hello on, and reset (RST), as fast as they go."""
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _, w = await open_raw(address)
        w.write(encode({"op": "hello", "id": 1, "node": f"churn{n % 50}", **HELLO}))
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()
        n += 1
        await asyncio.sleep(0.002)
    return {"connections": n}


async def never_reads(address: tuple[str, int], seconds: float) -> dict[str, Any]:
    """100,000 pipelined `usage` requests, and not one reply read."""
    _, w = await open_raw(address)
    w.write(encode({"op": "hello", "id": 0, "node": "hog", "role": "observer"}))
    payload = b"".join(encode({"op": "usage", "id": i}) for i in range(1, 100_001))
    w.write(payload)  # the kernel takes what it can; the rest waits in this process
    await asyncio.sleep(seconds)
    w.transport.abort()
    return {"requests": 100_000}


async def past_max_connections(address: tuple[str, int], seconds: float) -> dict[str, Any]:
    """More connections saying hello than max_connections: the surplus is told `busy`."""
    conns = []
    busy = 0
    for i in range(MAX_CONNECTIONS + 100):
        r, w = await open_raw(address)
        w.write(encode({"op": "hello", "id": 1, "node": f"many{i}", "role": "observer"}))
        conns.append((r, w))
    for r, _ in conns:
        try:
            data = await asyncio.wait_for(r.read(4096), 2)
            busy += b"busy" in data
        except (TimeoutError, ConnectionError):
            pass
    await asyncio.sleep(seconds)
    for _, w in conns:
        w.close()
    return {"connections": len(conns), "answered_busy": busy}


async def quiet(address: tuple[str, int], seconds: float) -> dict[str, Any]:
    """No attack: the canary alone, the baseline the others compare with (its journal rows too)."""
    await asyncio.sleep(seconds)
    return {}


ATTACKS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "quiet": quiet, "idle": idle, "slowloris": slowloris, "oversize-frames": oversize, "garbage": garbage,
    "refusal-flood": refusal_flood, "holder-flood": holder_flood, "churn-rst": churn, "never-reads": never_reads, "past-max-connections": past_max_connections,
}


# ---------------------------------------------------------------- the run

def p99(values: list[float]) -> float | None:
    if len(values) < 2:
        return round(values[0], 2) if values else None
    return round(statistics.quantiles(values, n=100)[98], 2)


async def attack(name: str, master: MasterProcess, seconds: float) -> dict[str, Any]:
    assert master.proc is not None
    pid = master.proc.pid
    fds_before, rss_before = descriptors(pid), rss_mb(pid)
    journal_before = journal_bytes(master)
    peak = [rss_before]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, peak, stop))
    started = time.time()
    detail = await ATTACKS[name](master.address, seconds)
    ended = time.time()
    stop.set()
    await sampler
    await asyncio.sleep(CONFIG["lease_ttl_ms"] / 1000 * 1.5)  # sessions expire, stalled connections are aborted
    journal_after = journal_bytes(master)
    rows = read_journal(master.workdir / "data" / "journal.sqlite3", since=started)
    return {"attack": name, **detail, "window": (started, ended),
            "rss_growth_mb": round(peak[0] - rss_before, 1), "journal_growth_kb": round((journal_after - journal_before) / 1024, 1),
            "journal_denial_rows": sum(r["event"] in ("deny", "deny_repeated") for r in rows),
            "journal_demand_rows": sum(r["event"] in ("demand", "demand_dropped") for r in rows),
            "descriptors_left": descriptors(pid) - fds_before}


async def run(names: list[str], seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        master = bench_master(Path(tmp), '[[license]]\ntype = "PBX-Port13"\ncount = 1000\n', **CONFIG)
        stop, (receive, send) = mp.Event(), mp.Pipe(duplex=False)
        canary = mp.Process(target=canary_main, args=(master.target, stop, send), daemon=True)
        canary.start()
        await asyncio.sleep(1.0)
        results = []
        try:
            for name in names:
                results.append(await attack(name, master, seconds))
        finally:
            stop.set()
            samples = receive.recv() if receive.poll(30) else []
            canary.join(10)
            master.stop()
    for result in results:
        start, end = result.pop("window")
        result["canary_p99_ms"] = p99([rtt for t, rtt in samples if start <= t <= end])
    refused = next((r for r in results if r["attack"] == "refusal-flood"), None)
    return {
        "bench": "abuse", "seconds_per_attack": seconds, "canary_round_trips": len(samples),
        "canary_p99_ms_overall": p99([rtt for _, rtt in samples]),
        "attacks": results,
        "journal_kb_per_10k_refused": refused["journal_growth_kb"] if refused else None,
        "targets": {"canary_p99_ms": 20, "rss_growth_mb": 50, "journal_mb_per_10k_refused": 1, "descriptors_left": 0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each attack lasts")
    parser.add_argument("--only", help="comma-separated attacks: " + ", ".join(ATTACKS))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        parser.error(f"unknown attack(s): {', '.join(unknown)}")
    print(json.dumps(asyncio.run(run(names, args.seconds)), indent=2))


if __name__ == "__main__":
    main()
