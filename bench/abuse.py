"""Abuse of a real `licmaster serve` while a well-behaved PBX (the canary) checks out and in.

    python bench/abuse.py                  # every attack, ~95 s
    python bench/abuse.py --only never-reads,refusal-flood,holder-flood

One attack at a time, each for a few seconds, from this process; the canary runs in a process of
its own and times each checkout+checkin round trip. Most attacks share one master (1,000 Ports,
lease TTL 3 s); `absent-flood` has one of its own ("two clocks": lease TTL 300 ms, heartbeat
100 ms, the default hold of 72 h, 200 Ports), with a canary of its own that checks an Operator
out and in, since the flood leaves every Port held by PBXs that are gone; it also prints the
master's RSS by PBXs come so far, its sessions and absent PBXs at their peak and at the end, and
its journal's absent/back/expire rows. For each attack the bench prints the canary's p99
during it, the master's peak RSS growth over its level before, the journal's growth (bytes,
with its write-ahead log; the canary's own rows are in it too: compare with `quiet`), its denial rows and its unmet-demand rows (`demand`, `demand_dropped`), and the descriptors the master still holds once the attack's
sessions have expired (compared with before it). Targets (issue 10): canary p99 <= 20 ms throughout, <= 50 MB RSS
growth for any one attack, journal growth <= 1 MB per 10,000 refused requests, no descriptor left;
for `absent-flood`, absent PBXs <= the installed Ports and no session left that holds nothing.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _master import bench_master  # noqa: E402

from licmaster.client import MasterClient  # noqa: E402
from licmaster.daemon.denials import RETRY_S  # noqa: E402
from licmaster.daemon.storage.journal import read_journal  # noqa: E402
from licmaster.testing import MasterProcess  # noqa: E402
from licmaster.wire import events  # noqa: E402
from licmaster.wire.codec import FrameDecoder, encode  # noqa: E402

MAX_CONNECTIONS = 600
CONFIG = {"heartbeat_ms": 1000, "lease_ttl_ms": 3000, "hello_timeout_ms": 1000, "max_connections": MAX_CONNECTIONS}
HELLO = {"role": "pbx", "firmware": 13, "platform": "gateway", "mac": "00:90:33:00:00:01", "licensing": "central"}
ABSENT_PORTS = 200  # the two-clocks master's Ports: what absent PBXs can hold at most


@dataclass(frozen=True)
class Setup:
    """A master for some attacks: its license file, its configuration, and what the canary checks out."""

    licenses: str
    config: dict[str, Any]
    canary: str = "port"

    @property
    def ttl_s(self) -> float:
        return float(self.config["lease_ttl_ms"]) / 1000


SETUPS = {
    "default": Setup('[[license]]\ntype = "PBX-Port13"\ncount = 1000\n', CONFIG),
    # two clocks: a short TTL, the default hold (72 h); the Ports are for the flood, the Operator the canary's
    "two-clocks": Setup(f'[[license]]\ntype = "PBX-Port13"\ncount = {ABSENT_PORTS}\n'
                        '[[license]]\ntype = "PBX-Operator13"\ncount = 1\n',
                        {**CONFIG, "heartbeat_ms": 100, "lease_ttl_ms": 300}, canary="operator"),
}


# ---------------------------------------------------------------- the canary, in its own process

def canary_main(address: str, resource: str, stop: Any, out: Any) -> None:
    async def run() -> list[tuple[float, float]]:
        client = MasterClient([address], "canary", mac="00:90:33:00:00:99")
        await client.connect()
        samples: list[tuple[float, float]] = []
        while not stop.is_set():
            t0 = time.perf_counter()
            await client.checkout(resource, "canary-user")
            await client.checkin(resource, "canary-user")
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


def cpu_s(pid: int) -> float:
    """CPU seconds the process has used (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def journal_bytes(master: MasterProcess) -> int:
    """The journal database with its write-ahead log (where new rows are until a checkpoint)."""
    return sum(p.stat().st_size for p in (master.workdir / "data").glob("journal.sqlite3*"))


def journal_rows(master: MasterProcess, since: float) -> list[dict[str, Any]]:
    return read_journal(master.workdir / "data" / "journal.sqlite3", since=since)


async def sample_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb(pid))
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- the attacks

async def open_raw(address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*address)


async def idle(master: MasterProcess, seconds: float) -> dict[str, Any]:
    """Connections that say nothing (closed after hello_timeout_ms)."""
    conns = [await open_raw(master.address) for _ in range(400)]
    await asyncio.sleep(seconds)
    for _, w in conns:
        w.close()
    return {"connections": len(conns)}


async def slowloris(master: MasterProcess, seconds: float) -> dict[str, Any]:
    """A frame's bytes one at a time, slower than hello_timeout_ms allows."""
    conns = [await open_raw(master.address) for _ in range(200)]
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


async def oversize(master: MasterProcess, seconds: float) -> dict[str, Any]:
    """Frame headers announcing 10 MB, then bytes."""
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _, w = await open_raw(master.address)
        w.write(struct.pack(">I", 10_000_000) + b"x" * 4096)
        w.close()
        n += 1
        await asyncio.sleep(0.005)
    return {"connections": n}


async def garbage(master: MasterProcess, seconds: float) -> dict[str, Any]:
    """Random bytes, and well-framed maps of the wrong types."""
    rng = random.Random(7)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _, w = await open_raw(master.address)
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


async def refusal_flood(master: MasterProcess, seconds: float, refusals: int = 10_000) -> dict[str, Any]:
    """One session asking 10,000 times for distinct unknown resources with 60 KB names."""
    reader, w = await open_raw(master.address)
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


async def holder_flood(master: MasterProcess, seconds: float, holders: int = 100_000) -> dict[str, Any]:
    """One session refused for 100,000 distinct holders (a license it has none of): each is an
    unmet demand, and the master keeps at most 1,024 of a node's open (daemon/denials.py).
    Waits out the retry window, so that the demands' rows are journaled within the attack."""
    reader, w = await open_raw(master.address)
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


async def churn(master: MasterProcess, seconds: float) -> dict[str, Any]:
    """Connections opened, said hello on, and reset (RST), as fast as they go."""
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _, w = await open_raw(master.address)
        w.write(encode({"op": "hello", "id": 1, "node": f"churn{n % 50}", **HELLO}))
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()
        n += 1
        await asyncio.sleep(0.002)
    return {"connections": n}


async def never_reads(master: MasterProcess, seconds: float) -> dict[str, Any]:
    """100,000 pipelined `usage` requests, and not one reply read."""
    _, w = await open_raw(master.address)
    w.write(encode({"op": "hello", "id": 0, "node": "hog", "role": "observer"}))
    payload = b"".join(encode({"op": "usage", "id": i}) for i in range(1, 100_001))
    w.write(payload)  # the kernel takes what it can; the rest waits in this process
    await asyncio.sleep(seconds)
    w.transport.abort()
    return {"requests": 100_000}


async def past_max_connections(master: MasterProcess, seconds: float) -> dict[str, Any]:
    """More connections saying hello than max_connections: the surplus is told `busy`."""
    conns = []
    busy = 0
    for i in range(MAX_CONNECTIONS + 100):
        r, w = await open_raw(master.address)
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


async def quiet(master: MasterProcess, seconds: float) -> dict[str, Any]:
    """No attack: the canary alone, the baseline the others compare with (its journal rows too)."""
    await asyncio.sleep(seconds)
    return {}


# ---------------------------------------------------------------- absent PBXs and returning ones (two clocks)

FLOOD_WAVE = 50  # new PBXs at once; up to half as many come back beside them


async def visit(master: MasterProcess, node: str, requests: list[dict[str, Any]], lingering: set[asyncio.Task[None]], *,
                fresh: bool = False, cut_off: bool = False) -> list[dict[str, Any]]:
    """One visit of a PBX on a new connection: hello (`fresh`: it holds nothing), `requests`, and
    their replies read. Then it goes silent: its connection closed, or (`cut_off`) left open and
    unread, as a PBX the network cut off, for the master to close (the task is put in `lingering`)."""
    reader, w = await open_raw(master.address)
    hello = {"op": "hello", "id": 0, "node": node, **HELLO, **({"fresh": True} if fresh else {})}
    w.write(b"".join(encode(m) for m in [hello, *({**r, "id": i} for i, r in enumerate(requests, 1))]))
    decoder, replies = FrameDecoder(), dict[int, dict[str, Any]]()
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(5):
            while len(replies) <= len(requests):
                data = await reader.read(1 << 16)
                if not data:
                    break
                replies.update((m["id"], m) for m in decoder.feed(data) if "id" in m)  # events (`fenced`) have none
    if cut_off:
        lingering.add(asyncio.create_task(until_closed(reader, w)))
    else:
        w.close()
    return [replies.get(i, {}) for i in range(len(requests) + 1)]


async def until_closed(reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(1 << 16):
            pass
    w.close()


def usage_counts(usage: dict[str, Any]) -> dict[str, int]:
    """The master's sessions, those connected, and the absent PBXs and their leases, as `usage` shows them."""
    return {"sessions": usage["summary"]["nodes"], "connected": usage["summary"]["connected"],
            "absent_pbxs": usage["absent"]["pbxs"], "absent_leases": usage["absent"]["leases"]}


async def watch_usage(client: MasterClient, peaks: Counter[str], stop: asyncio.Event) -> None:
    """The highest of each of usage_counts while it runs."""
    while not stop.is_set():
        for key, value in usage_counts(await client.usage()).items():
            peaks[key] = max(peaks[key], value)
        await asyncio.sleep(0.05)


async def settled(client: MasterClient, most_s: float) -> dict[str, Any]:
    """`usage` once every session left is either connected or absent (the others have expired), or after `most_s`."""
    end = time.monotonic() + most_s
    while True:
        usage = await client.usage()
        counts = usage_counts(usage)
        if counts["sessions"] - counts["connected"] == counts["absent_pbxs"] or time.monotonic() > end:
            return usage
        await asyncio.sleep(0.05)


async def absent_flood(master: MasterProcess, seconds: float) -> dict[str, Any]:
    """Thousands of PBXs (new node names, in waves of FLOOD_WAVE) each check a Port out and go
    silent, a quarter of them cut off (connection left open), the rest closed: each is absent
    a lease TTL later while it holds its Port (the hold is 72 h), and expires then if it was
    refused (the pool full). Beside them, PBXs silent for 2 TTLs come back (a new connection,
    hello, sync of their Port) and go silent again; one in four of those says `bye` instead, and
    one in four comes back restarted (`fresh`, holding nothing): their Ports go to the next new
    PBXs. Absent PBXs hold a Port each, so there are at most ABSENT_PORTS; every other session
    ends a TTL after its last word, so the master's sessions stay bounded however many PBXs
    came (`bounds_hold`: absent PBXs never over ABSENT_PORTS, at the end exactly those the flood
    left holding a Port, and no session that holds nothing). Its RSS is read after each quarter
    of the run, with the PBXs come so far: what it grows by per PBX over the last half is what a
    flood that goes on would cost."""
    assert master.proc is not None
    pid = master.proc.pid
    ttl = SETUPS["two-clocks"].ttl_s
    observer = MasterClient([master.target], "flood-observer", role="observer")
    await observer.connect()
    peaks: Counter[str] = Counter()
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_usage(observer, peaks, stop))
    rng = random.Random(11)
    lingering: set[asyncio.Task[None]] = set()
    holding: dict[str, float] = {}  # node -> when it last spoke, for each PBX that holds its Port now
    counts = Counter(dict.fromkeys(("nodes", "granted", "returns", "returned_bye", "returned_fresh", "returned_synced"), 0))
    checkout = {"op": "checkout", "resource": "port", "holder": "user"}
    sync = {"op": "sync", "leases": [{"resource": "port", "holder": "user"}]}

    async def arrive(node: str) -> None:
        replies = await visit(master, node, [checkout], lingering, fresh=True, cut_off=rng.random() < 0.25)
        if replies[1].get("ok"):
            holding[node] = time.monotonic()
        counts["granted" if replies[1].get("ok") else f"refused_{replies[1].get('error')}"] += 1

    async def come_back(node: str, how: int) -> None:
        del holding[node]
        if how == 0:  # back, then gone for good: bye gives its Port back
            replies = await visit(master, node, [sync, {"op": "bye"}], lingering)
            counts["returned_bye"] += 1
        elif how == 1:  # restarted, holding nothing: its Port goes back at its hello
            replies = await visit(master, node, [], lingering, fresh=True)
            counts["returned_fresh"] += 1
        else:  # back, re-synced, and silent again: absent again a TTL later
            replies = await visit(master, node, [sync], lingering, cut_off=how == 2)
            if [lease["resource"] for lease in replies[1].get("leases", ())] == ["port"]:
                holding[node] = time.monotonic()
            counts["returned_synced"] += 1
        counts["returns"] += 1
        if not replies[0].get("ok"):
            counts["returns_refused"] += 1

    started, start, cpu_before = time.time(), time.monotonic(), cpu_s(pid)
    by_nodes = [(0, rss_mb(pid))]  # the master's RSS after each quarter of the run, by PBXs come so far
    while time.monotonic() - start < seconds:
        due = [node for node, spoke in holding.items() if time.monotonic() - spoke > 2 * ttl]
        back = rng.sample(due, min(len(due), FLOOD_WAVE // 2))
        new = [f"absent-{counts['nodes'] + i:06d}" for i in range(FLOOD_WAVE)]
        counts["nodes"] += len(new)
        await asyncio.gather(*map(arrive, new), *(come_back(node, rng.randrange(4)) for node in back))
        if time.monotonic() - start >= seconds * len(by_nodes) / 4:
            by_nodes.append((counts["nodes"], rss_mb(pid)))
    flood_s, master_cpu_s = time.monotonic() - start, cpu_s(pid) - cpu_before
    _, open_still = await asyncio.wait(lingering, timeout=30 * ttl) if lingering else (set(), set())
    for task in open_still:  # the master should have closed each cut-off connection (absent or expired)
        task.cancel()
    counts["cut_off_left_open"] = len(open_still)
    usage = await settled(observer, 30 * ttl)
    stop.set()
    await watcher
    await asyncio.sleep(0.5)  # the journal's last rows written (journal_flush_ms)
    after = rss_mb(pid)
    left = [n for n in await observer.all_nodes() if n["node"] not in ("canary", "flood-observer")]
    await observer.close()
    end = {**usage_counts(usage), "ports_in_use": next(p["in_use"] for p in usage["pools"] if p["family"] == "PBX-Port"),
           "holding_expected": len(holding), "holding_nothing": sum(not n["leases"] for n in left), "hold_s": usage["absent"]["hold_s"]}
    (half_nodes, half_mb), (last_nodes, last_mb) = by_nodes[len(by_nodes) // 2], by_nodes[-1]
    rows = Counter(r["event"] for r in journal_rows(master, started) if r["node"].startswith("absent-"))
    return {"nodes": counts.pop("nodes"), **dict(sorted(counts.items())), "installed_ports": ABSENT_PORTS,
            "flood_s": round(flood_s, 2), "master_cpu_s": round(master_cpu_s, 2),
            "rss_mb": {"before": round(by_nodes[0][1], 1), "after": round(after, 1),
                       "by_nodes": [[n, round(mb, 1)] for n, mb in by_nodes],
                       "late_growth_bytes_per_pbx": round((last_mb - half_mb) * 2**20 / (last_nodes - half_nodes))
                       if last_nodes > half_nodes else None},
            "peak": dict(sorted(peaks.items())), "end": end,
            "bounds_hold": peaks["absent_pbxs"] <= ABSENT_PORTS and end["absent_pbxs"] == len(holding) == end["ports_in_use"]
            and not end["holding_nothing"],
            "journal_rows": {event: rows[event] for event in (events.ABSENT, events.BACK, events.EXPIRE, events.BYE, events.RELEASE,
                                                              events.GRANT, events.DENY)}}

ATTACKS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "quiet": quiet, "idle": idle, "slowloris": slowloris, "oversize-frames": oversize, "garbage": garbage,
    "refusal-flood": refusal_flood, "holder-flood": holder_flood, "churn-rst": churn, "never-reads": never_reads, "past-max-connections": past_max_connections,
    "absent-flood": absent_flood,
}
ON_SETUP = {"absent-flood": "two-clocks"}  # the others: "default"


# ---------------------------------------------------------------- the run

def p99(values: list[float]) -> float | None:
    if len(values) < 2:
        return round(values[0], 2) if values else None
    return round(statistics.quantiles(values, n=100)[98], 2)


async def attack(name: str, master: MasterProcess, setup: Setup, seconds: float) -> dict[str, Any]:
    assert master.proc is not None
    pid = master.proc.pid
    fds_before, rss_before = descriptors(pid), rss_mb(pid)
    journal_before = journal_bytes(master)
    peak = [rss_before]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, peak, stop))
    started = time.time()
    detail = await ATTACKS[name](master, seconds)
    ended = time.time()
    stop.set()
    await sampler
    await asyncio.sleep(setup.ttl_s * 1.5)  # sessions expire, stalled connections are aborted
    journal_after = journal_bytes(master)
    rows = journal_rows(master, started)
    return {"attack": name, **detail, "window": (started, ended),
            "rss_growth_mb": round(peak[0] - rss_before, 1), "journal_growth_kb": round((journal_after - journal_before) / 1024, 1),
            "journal_denial_rows": sum(r["event"] in ("deny", "deny_repeated") for r in rows),
            "journal_demand_rows": sum(r["event"] in ("demand", "demand_dropped") for r in rows),
            "descriptors_left": descriptors(pid) - fds_before}


async def on_master(setup: Setup, names: list[str], seconds: float, workdir: Path) -> tuple[list[dict[str, Any]], list[tuple[float, float]]]:
    """`names` one after the other on a master of `setup`, beside its canary: their results, and the canary's samples."""
    master = bench_master(workdir, setup.licenses, **setup.config)
    stop, (receive, send) = mp.Event(), mp.Pipe(duplex=False)
    canary = mp.Process(target=canary_main, args=(master.target, setup.canary, stop, send), daemon=True)
    canary.start()
    await asyncio.sleep(1.0)
    results = []
    try:
        for name in names:
            results.append(await attack(name, master, setup, seconds))
    finally:
        stop.set()
        samples = receive.recv() if receive.poll(30) else []
        canary.join(10)
        master.stop()
    for result in results:
        start, end = result.pop("window")
        result["canary_p99_ms"] = p99([rtt for t, rtt in samples if start <= t <= end])
    return results, samples


async def run(names: list[str], seconds: float) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for key, setup in SETUPS.items():  # each master in turn, with the attacks that run on it
            mine = [name for name in names if ON_SETUP.get(name, "default") == key]
            if mine:
                done, canary = await on_master(setup, mine, seconds, Path(tmp) / key)
                results.update(zip(mine, done, strict=True))
                samples += canary
    refused = results.get("refusal-flood")
    return {
        "bench": "abuse", "seconds_per_attack": seconds, "canary_round_trips": len(samples),
        "canary_p99_ms_overall": p99([rtt for _, rtt in samples]),
        "attacks": [results[name] for name in names],
        "journal_kb_per_10k_refused": refused["journal_growth_kb"] if refused else None,
        "targets": {"canary_p99_ms": 20, "rss_growth_mb": 50, "journal_mb_per_10k_refused": 1, "descriptors_left": 0,
                    "absent_pbxs": f"<= installed Ports ({ABSENT_PORTS})"},
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
