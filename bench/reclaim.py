"""Reclaim time: from a PBX process killed (kill -9) to its floating licenses free again.

    python bench/reclaim.py [--runs 5] [--ports 50]

Default settings of the master (heartbeat 1,000 ms, lease TTL 3,000 ms). The PBX is a real
process using licmaster.client; an observer polls `usage` every 10 ms. Prints JSON.
Target (issue 3): <= 4 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _master import ROOT, bench_master  # noqa: E402

from licmaster.client import MasterClient  # noqa: E402
from licmaster.testing import MasterProcess  # noqa: E402

PBX = """
import asyncio, sys
from licmaster.client import MasterClient
async def main():
    client = MasterClient([sys.argv[1]], sys.argv[2])
    await client.connect()
    for i in range(int(sys.argv[3])):
        await client.checkout("port", f"user{i}")
    print("ready", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def port_in_use(observer: MasterClient) -> int:
    usage = await observer.usage()
    return sum(p["in_use"] for p in usage["pools"] if p["family"] == "PBX-Port")


async def one_run(master: MasterProcess, run: int, ports: int) -> float:
    pbx = subprocess.Popen([sys.executable, "-c", PBX, master.target, f"pbx{run}", str(ports)],
                           stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert pbx.stdout is not None
    assert pbx.stdout.readline().strip() == b"ready"
    observer = MasterClient([master.target], f"observer{run}", role="observer")
    await observer.connect()
    assert await port_in_use(observer) == ports
    pbx.send_signal(signal.SIGKILL)
    killed = time.perf_counter()
    pbx.wait()
    while await port_in_use(observer) > 0:
        await asyncio.sleep(0.01)
    reclaimed = time.perf_counter() - killed
    await observer.close()
    return reclaimed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ports", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        master = bench_master(Path(tmp), f'[[license]]\ntype = "PBX-Port13"\ncount = {args.ports}\n')
        try:
            times = [await one_run(master, run, args.ports) for run in range(args.runs)]
        finally:
            master.stop()
    print(json.dumps({"bench": "reclaim", "heartbeat_ms": 1000, "lease_ttl_ms": 3000, "ports_held": args.ports,
                      "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                      "runs_s": [round(t, 3) for t in times], "target_s": 4.0}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
