"""Wire throughput and latency of a real `licmaster serve` process, loaded from separate processes.

    python bench/wire.py                      # 10,000 ops/s offered, then saturation
    python bench/wire.py --connections 32 --depths 64 --seconds 5 --workers 1
    python bench/wire.py --rate 10000 --only-rate
    python bench/wire.py --only-saturation --runs 5
    python bench/wire.py --only-saturation --standby    # a standby master attached (synchronous replication)

Each connection is a PBX session doing mixed checkout/checkin of Ports: every checkout reply is
followed by the checkin of its lease, every checkin by a new checkout. Saturation keeps `depth`
requests in flight per connection (closed loop); the rate mode paces checkouts so that
checkouts + checkins offered = --rate per second (open loop), and measures each request's
latency from its send to its reply. Prints one JSON object.

Saturation is measured at each pipeline depth of --depths (runs interleaved, so that a noisy
minute of the machine hits every depth alike); `saturation` is the depth whose median is
highest, and `saturation_by_depth` has them all: throughput rises with depth as the cost of
each read and write (system calls, wake-ups) is shared by more requests, and so does latency.

Targets (issue 3, on the 2-core machine): >= 100,000 ops/s at saturation; p99 <= 5 ms at
10,000 ops/s offered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _master import bench_master  # noqa: E402

from licmaster.testing import MasterProcess  # noqa: E402
from licmaster.wire.codec import HEADER, FrameDecoder, encode  # noqa: E402

_pack = msgpack.Packer().pack
_unpackb = msgpack.unpackb
_unpack_len = HEADER.unpack_from
_header = HEADER.pack
_CHECKOUT_HEAD = b"\x84" + _pack("op") + _pack("checkout") + _pack("resource") + _pack("port") + _pack("holder")
_CHECKIN_HEAD = b"\x83" + _pack("op") + _pack("checkin") + _pack("lease")
_ID_KEY = _pack("id")
# Holder names, packed once and used in turn: a name comes back only after 65,536 checkouts on its
# connection, long after its lease was checked in (a connection has at most `depth` requests in
# flight), so the master grants a new lease each time, as for names never used before.
_HOLDERS = [_pack(f"h{i}") for i in range(1 << 16)]
_HOLDER_MASK = (1 << 16) - 1


def start_master(workdir: Path, ports: int, **config: Any) -> MasterProcess:
    return bench_master(workdir, f'[[license]]\ntype = "PBX-Port13"\ncount = {ports}\n',
                        heartbeat_ms=5000, lease_ttl_ms=60000, max_connections=100000, **config)


def attach_standby(workdir: Path, master: MasterProcess) -> MasterProcess:
    """A standby master following `master`, once attached: every grant's reply then waits for its
    acknowledgement (daemon/ha/feed.py). It runs on this machine's cores too, as it would on its own."""
    standby = start_master(workdir, 1_000_000, standby_of=master.master)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        usage = asyncio.run(_usage(master.address))
        if usage.get("replication", {}).get("in_sync"):
            return standby
        time.sleep(0.1)
    raise RuntimeError("the standby master did not attach")


async def _usage(address: tuple[str, int]) -> dict:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(encode({"op": "hello", "id": 0, "node": "bench-watch", "role": "observer"}) + encode({"op": "usage", "id": 1}))
    decoder = FrameDecoder(1 << 22)
    while True:
        data = await reader.read(1 << 16)
        if not data:
            return {}
        for message in decoder.feed(data):
            if message.get("id") == 1:
                writer.close()
                return message


class LoadConnection(asyncio.Protocol):
    """One PBX session of the load: keeps requests flowing, times each one."""

    def __init__(self, name: str, stats: dict, depth: int, paced: bool) -> None:
        self.name, self.stats, self.depth, self.paced = name, stats, depth, paced
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.sent_at: dict[int, float] = {}
        self.ids = 0
        self.holder = 0
        self.ready = asyncio.get_running_loop().create_future()
        self.running = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(encode({"op": "hello", "id": 0, "node": self.name, "role": "pbx", "firmware": 13,
                                     "platform": "gateway", "mac": "00:90:33:00:00:01", "licensing": "central"}))

    # Requests are assembled from pre-packed parts: the generator must stay cheaper than the
    # server it loads (both share this machine's two cores).
    def _checkout(self, now: float) -> bytes:
        self.ids += 1
        self.holder += 1
        self.sent_at[self.ids] = now
        payload = b"".join((_CHECKOUT_HEAD, _HOLDERS[self.holder & _HOLDER_MASK], _ID_KEY, _pack(self.ids)))
        return _header(len(payload)) + payload

    def _checkin(self, now: float, lease: str) -> bytes:
        self.ids += 1
        self.sent_at[self.ids] = now
        payload = b"".join((_CHECKIN_HEAD, _pack(lease), _ID_KEY, _pack(self.ids)))
        return _header(len(payload)) + payload

    def connection_lost(self, exc: Exception | None) -> None:
        self.running = False
        self.transport = None

    def checkouts(self, n: int) -> None:
        if self.transport is None:
            return
        now = time.perf_counter()
        self.transport.write(b"".join([self._checkout(now) for _ in range(n)]))

    def replies(self, data: bytes) -> list[dict]:
        """The master's replies; the generator trusts its framing (no validation: keep it cheap).
        The whole frames of a read are decoded in one call, as one MessagePack array of their
        payloads (a call per reply cost more than the decoding itself)."""
        buf = self.buf + data if self.buf else data
        payloads, pos, end = [], 0, len(buf)
        while end - pos >= 4:
            stop = pos + 4 + _unpack_len(buf, pos)[0]
            if stop > end:
                break
            payloads.append(buf[pos + 4:stop])
            pos = stop
        self.buf = buf[pos:]
        if not payloads:
            return []
        return _unpackb(b"\xdd" + len(payloads).to_bytes(4, "big") + b"".join(payloads))  # array 32

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        out: list[bytes] = []
        timed, pop = self.stats["lat"].append, self.sent_at.pop
        ops = errors = 0
        for reply in self.replies(data):
            rid = reply.get("id")
            if rid is None:  # an event (e.g. shutdown): the run is over for this connection
                self.running = False
                continue
            if rid == 0:
                self.ready.set_result(reply)
                continue
            sent = pop(rid, None)
            if sent is None:
                continue
            timed(now - sent)
            ops += 1
            if not reply["ok"]:
                errors += 1
                continue
            if not self.running:
                continue
            lease = reply.get("lease")
            if lease is not None:
                out.append(self._checkin(now, lease))
            elif not self.paced:
                out.append(self._checkout(now))
        self.stats["ops"] += ops
        if errors:
            self.stats["errors"] += errors
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def run_worker(address: tuple[str, int], worker: int, connections: int, depth: int, seconds: float,
                     rate: float | None) -> dict:
    loop = asyncio.get_running_loop()
    stats = {"ops": 0, "errors": 0, "lat": []}
    conns: list[LoadConnection] = []
    for c in range(connections):
        _, proto = await loop.create_connection(
            lambda c=c: LoadConnection(f"load{worker}-{c}", stats, depth, rate is not None), *address)
        conns.append(proto)
    await asyncio.gather(*(c.ready for c in conns))
    warmup = min(1.0, seconds / 4)
    start = time.perf_counter()
    if rate is None:
        for c in conns:
            c.checkouts(depth)
    measured_from = start + warmup
    ops_at_mark = None
    tick = 0.001
    while True:
        now = time.perf_counter()
        if ops_at_mark is None and now >= measured_from:
            ops_at_mark, lat_mark, cpu_mark = stats["ops"], len(stats["lat"]), time.process_time()
        if now >= start + warmup + seconds:
            break
        if rate is not None:
            # checkouts at rate/2, each answered by a checkin: rate ops/s offered in all
            due = int((now - start) * rate / 2) - sum(c.holder for c in conns)
            i = 0
            while due > 0:
                conns[i % len(conns)].checkouts(1)
                i += 1
                due -= 1
        await asyncio.sleep(tick)
    end = time.perf_counter()
    cpu = time.process_time() - cpu_mark if ops_at_mark is not None else 0.0
    ops = stats["ops"] - (ops_at_mark or 0)
    lat = stats["lat"][lat_mark:] if ops_at_mark is not None else stats["lat"]
    for c in conns:
        c.running = False
        if c.transport:
            c.transport.close()
    return {"ops": ops, "seconds": end - measured_from, "errors": stats["errors"], "lat": lat, "cpu": cpu}


def worker_main(args: tuple) -> dict:
    return asyncio.run(run_worker(*args))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) jiffies of the whole machine: how much a hypervisor took from this VM."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def measure(address: tuple[str, int], workers: int, connections: int, depth: int, seconds: float, rate: float | None,
            master_pid: int | None = None, standby_pid: int | None = None) -> dict:
    per_worker_rate = rate / workers if rate else None
    with mp.get_context("spawn").Pool(workers) as pool:
        pending = pool.map_async(worker_main, [(address, w, connections, depth, seconds, per_worker_rate) for w in range(workers)])
        # the master's CPU over the measured window (after the workers' warm-up)
        time.sleep(min(1.0, seconds / 4) + 0.5)
        cpu0, t0, machine0, standby0 = cpu_seconds(master_pid), time.perf_counter(), cpu_times(), cpu_seconds(standby_pid)
        time.sleep(max(0.1, seconds - 1.0))
        cpu1, t1, machine1, standby1 = cpu_seconds(master_pid), time.perf_counter(), cpu_times(), cpu_seconds(standby_pid)
        results = pending.get()
    ops = sum(r["ops"] for r in results)
    secs = statistics.mean(r["seconds"] for r in results)
    lat = [x for r in results for x in r["lat"]]
    out = {"ops_per_s": round(ops / secs), "errors": sum(r["errors"] for r in results),
           "p50_ms": round(percentile(lat, 0.50) * 1000, 3), "p99_ms": round(percentile(lat, 0.99) * 1000, 3),
           "samples": len(lat),
           # the load generator's share of the cores (it shares them with the master and a standby)
           "load_cpu_busy": round(sum(r["cpu"] for r in results) / secs, 3)}
    if machine0 and machine1 and machine1[1] > machine0[1]:
        # CPU stolen by the hypervisor during the run: a noisy neighbour shows here
        out["machine_steal_share"] = round((machine1[0] - machine0[0]) / (machine1[1] - machine0[1]), 3)
    if cpu0 is not None and cpu1 is not None:
        busy = (cpu1 - cpu0) / (t1 - t0)
        out["master_cpu_busy"] = round(busy, 3)  # 1.0 = one core fully used
        if busy > 0:
            out["ops_per_master_cpu_second"] = round(out["ops_per_s"] / busy)
    if standby0 is not None and standby1 is not None:
        # the standby's share of the two cores: what it takes from the master and the load
        out["standby_cpu_busy"] = round((standby1 - standby0) / (t1 - t0), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=16, help="connections per worker process")
    parser.add_argument("--depths", default="64,256", help="requests in flight per connection at saturation, comma-separated")
    parser.add_argument("--workers", type=int, default=1, help="load generator processes")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=10_000, help="ops/s offered in the latency run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement; the median is reported")
    parser.add_argument("--only-rate", action="store_true", help="measure latency at --rate only")
    parser.add_argument("--only-saturation", action="store_true", help="measure saturation only")
    parser.add_argument("--master", help="host:port of a running master (default: start one)")
    parser.add_argument("--standby", action="store_true", help="attach a standby master to the master started")
    args = parser.parse_args()

    proc = standby = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.master:
            host, _, port = args.master.rpartition(":")
            address = (host, int(port))
        else:
            proc = start_master(Path(tmp) / "master", ports=1_000_000)
            address = proc.address
            if args.standby:
                standby = attach_standby(Path(tmp) / "standby", proc)
        pid = proc.proc.pid if proc is not None and proc.proc is not None else None
        standby_pid = standby.proc.pid if standby is not None and standby.proc is not None else None
        try:
            depths = [int(d) for d in args.depths.split(",")]
            out: dict = {"bench": "wire", "standby": args.standby, "connections": args.connections * args.workers, "depths": depths,
                         "workers": args.workers, "seconds": args.seconds, "cpus": os.cpu_count()}
            # the latency run first, on a master that has not yet been through saturation
            if not args.only_saturation:
                rate_runs = [measure(address, args.workers, max(1, args.connections // 4), 1, args.seconds, args.rate, pid, standby_pid)
                             for _ in range(args.runs)]
                median = sorted(rate_runs, key=lambda r: r["p99_ms"])[len(rate_runs) // 2]
                out["at_rate"] = {"offered_ops_per_s": args.rate, **median, "runs_p99_ms": [r["p99_ms"] for r in rate_runs]}
            if not args.only_rate:
                runs: dict[int, list[dict]] = {d: [] for d in depths}
                for _ in range(args.runs):
                    for depth in depths:
                        runs[depth].append(measure(address, args.workers, args.connections, depth, args.seconds, None, pid, standby_pid))
                by_depth = {}
                for depth, measured in runs.items():
                    median = sorted(measured, key=lambda r: r["ops_per_s"])[len(measured) // 2]
                    by_depth[depth] = {"depth": depth, **median, "runs_ops_per_s": [r["ops_per_s"] for r in measured]}
                out["saturation"] = max(by_depth.values(), key=lambda r: r["ops_per_s"])
                out["saturation_by_depth"] = list(by_depth.values())
            out["target"] = {"saturation_ops_per_s": 100_000, "p99_ms_at_10k": 5.0}
            print(json.dumps(out, indent=2))
        finally:
            if proc is not None:
                proc.stop(30)
            if standby is not None:
                standby.stop(30)


if __name__ == "__main__":
    main()
