"""The master beside redis-server + Lua doing the same checkout/checkin: server CPU per operation.

    python bench/vs_redis.py                    # 3 interleaved pairs, 200,000 ops each
    python bench/vs_redis.py --pairs 5 --ops 400000

Both servers get the same load from this process, one after the other, interleaved: `--conns`
connections, each sending 64 pipelined checkouts (distinct holders), reading the 64 replies,
then the 64 check-ins. Redis does it with two Lua scripts (EVALSHA) that keep a counter against
the installed count and a hash of holders, idempotent like the master's checkout — the least a
license server must do. The master does what it always does (rules, the journal, replies with
what was taken). The figure is the *server's* CPU (utime + stime from /proc) per operation, so
the load generator's own cost does not count; `master_over_redis` below 1.0 means the master
spends less CPU per operation than redis does. Needs Debian's `redis-server` on the PATH.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _master import bench_master  # noqa: E402

from licmaster.testing import free_port  # noqa: E402
from licmaster.wire.codec import FrameDecoder, encode  # noqa: E402

DEPTH = 64
CHECKOUT_LUA = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then return tonumber(id) end
local n = redis.call('INCR', KEYS[2])
if n > tonumber(ARGV[2]) then redis.call('DECR', KEYS[2]); return redis.error_reply('exhausted') end
local lid = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], lid)
return lid
"""
CHECKIN_LUA = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then redis.call('DECR', KEYS[2]); return 1 end
return 0
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resp(*args: str | int) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def read_lines(reader: asyncio.StreamReader, count: int) -> None:
    """`count` one-line replies (integers or errors: the scripts return nothing else)."""
    for _ in range(count):
        await reader.readline()


async def redis_load(port: int, conns: int, ops: int, installed: int) -> None:
    async def one(c: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(resp("SCRIPT", "LOAD", CHECKOUT_LUA) + resp("SCRIPT", "LOAD", CHECKIN_LUA))
        out = (await reader.readline(), await reader.readline(), await reader.readline(), await reader.readline())
        sha_out, sha_in = out[1].strip().decode(), out[3].strip().decode()
        for round_ in range(ops // conns // (2 * DEPTH)):
            holders = [f"c{c}-r{round_}-{i}" for i in range(DEPTH)]
            writer.write(b"".join(resp("EVALSHA", sha_out, 3, "holders", "in_use", "ids", h, installed) for h in holders))
            await read_lines(reader, DEPTH)
            writer.write(b"".join(resp("EVALSHA", sha_in, 2, "holders", "in_use", h) for h in holders))
            await read_lines(reader, DEPTH)
        writer.close()
    await asyncio.gather(*(one(c) for c in range(conns)))


async def master_load(address: tuple[str, int], conns: int, ops: int) -> None:
    async def one(c: int) -> None:
        reader, writer = await asyncio.open_connection(*address)
        decoder = FrameDecoder(1 << 20)

        async def replies(n: int) -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = []
            while len(got) < n:
                got += decoder.feed(await reader.read(1 << 16))
            return got

        writer.write(encode({"op": "hello", "id": 0, "node": f"pbx{c}", "role": "pbx", "firmware": 13, "platform": "gateway",
                             "mac": "00:90:33:00:00:01", "licensing": "central"}))
        await replies(1)
        rid = 1
        for round_ in range(ops // conns // (2 * DEPTH)):
            writer.write(b"".join(encode({"op": "checkout", "id": rid + i, "resource": "port", "holder": f"r{round_}-{i}"})
                                  for i in range(DEPTH)))
            leases = [r["lease"] for r in await replies(DEPTH)]
            rid += DEPTH
            writer.write(b"".join(encode({"op": "checkin", "id": rid + i, "lease": lease}) for i, lease in enumerate(leases)))
            await replies(DEPTH)
            rid += DEPTH
        writer.close()
    await asyncio.gather(*(one(c) for c in range(conns)))


def measure(pid: int, load: Any) -> tuple[float, float]:
    """(server CPU seconds, wall seconds) of one load."""
    cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
    asyncio.run(load)
    return cpu_seconds(pid) - cpu0, time.perf_counter() - wall0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--ops", type=int, default=200_000, help="operations per server per pair (checkouts + checkins)")
    parser.add_argument("--conns", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("bench/vs_redis.py needs redis-server (Debian: apt-get install redis-server)")
    installed = args.ops  # never exhausted: both do the grant path
    pairs = []
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                  "--dir", tmp], stdout=subprocess.DEVNULL)
        master = bench_master(Path(tmp) / "master", f'[[license]]\ntype = "PBX-Port13"\ncount = {installed}\n')
        try:
            time.sleep(0.5)
            assert master.proc is not None
            for _ in range(args.pairs):
                r_cpu, r_wall = measure(redis.pid, redis_load(port, args.conns, args.ops, installed))
                m_cpu, m_wall = measure(master.proc.pid, master_load(master.address, args.conns, args.ops))
                pairs.append({"redis_cpu_us_per_op": round(r_cpu / args.ops * 1e6, 3), "master_cpu_us_per_op": round(m_cpu / args.ops * 1e6, 3),
                              "master_over_redis": round(m_cpu / r_cpu, 3) if r_cpu else None,
                              "redis_ops_per_s": round(args.ops / r_wall), "master_ops_per_s": round(args.ops / m_wall)})
        finally:
            redis.kill()
            master.kill9()
    print(json.dumps({"bench": "vs_redis", "ops_per_pair": args.ops, "connections": args.conns, "depth": DEPTH,
                      "median_master_over_redis": statistics.median(p["master_over_redis"] for p in pairs),
                      "note": "the master's server CPU per operation as a multiple of redis + Lua's (below 1.0: the master spends less)",
                      "pairs": pairs}, indent=2))


if __name__ == "__main__":
    main()
