"""Memory: the master's RSS with 100,000 live leases over 1,000 sessions.

    python bench/memory.py [--sessions 1000] [--leases 100]

Sessions are real TCP connections from another process, each checking out `leases` Ports
(pipelined). Prints JSON with RSS before and after. Target (issue 3): <= 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _master import bench_master  # noqa: E402

from licmaster.wire.codec import FrameDecoder, encode  # noqa: E402


async def session(address: tuple[str, int], n: int, leases: int, loaded: asyncio.Queue, hold: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(*address)
    hello = {"op": "hello", "id": 0, "node": f"pbx{n}", "role": "pbx", "firmware": 13, "platform": "gateway",
             "mac": "00:90:33:00:00:01", "licensing": "central"}
    writer.write(encode(hello) + b"".join(
        encode({"op": "checkout", "id": i + 1, "resource": "port", "holder": f"user{n}-{i}"}) for i in range(leases)))
    decoder, got, ok = FrameDecoder(1 << 20), 0, 0
    while got < leases + 1:
        data = await reader.read(65536)
        if not data:
            break
        for reply in decoder.feed(data):
            got += 1
            ok += reply.get("ok") is True and "lease" in reply
    loaded.put_nowait(ok)
    await hold.wait()  # keep the session (and its leases) until the master's RSS is read
    writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--leases", type=int, default=100)
    args = parser.parse_args()
    total = args.sessions * args.leases
    with tempfile.TemporaryDirectory() as tmp:
        master = bench_master(Path(tmp), f'[[license]]\ntype = "PBX-Port13"\ncount = {total}\n',
                             heartbeat_ms=30000, lease_ttl_ms=600000)
        try:
            rss_empty = master.rss_mb()
            loaded: asyncio.Queue[int] = asyncio.Queue()
            hold = asyncio.Event()
            start = time.perf_counter()
            tasks = [asyncio.create_task(session(master.address, n, args.leases, loaded, hold)) for n in range(args.sessions)]
            granted = sum([await loaded.get() for _ in range(args.sessions)])
            elapsed = time.perf_counter() - start
            await asyncio.sleep(1.0)  # let the journal flush its batches
            rss_full = master.rss_mb()
            hold.set()
            await asyncio.gather(*tasks)
        finally:
            master.stop()
    print(json.dumps({"bench": "memory", "sessions": args.sessions, "leases_per_session": args.leases,
                      "live_leases": granted, "rss_mb_empty": round(rss_empty, 1), "rss_mb_full": round(rss_full, 1),
                      "bytes_per_lease": round((rss_full - rss_empty) * 1024 * 1024 / max(1, granted)),
                      "setup_s": round(elapsed, 2), "target_mb": 300}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
