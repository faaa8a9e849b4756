"""Does the console slow the PBXs? Wire saturation with the dashboard open and /metrics scraped
every second, against the same without them.

    python bench/console.py                   # 5 interleaved pairs of runs, depth 64
    python bench/console.py --runs 7 --seconds 5

One master (`licmaster serve`, console on); the load is bench/wire.py's (16 connections of
checkout/checkin at pipeline depth 64, from a separate process). Runs alternate: plain, then
with a watcher process holding the dashboard's live feed (/api/v1/live, reading every event) and
scraping /metrics once a second. Prints both medians and their ratio; target (issue 12): with the
console at most 5% below without it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _master import bench_master  # noqa: E402
from wire import measure  # noqa: E402


def watcher(http: str, stop: Any, counts: Any) -> None:
    """The dashboard's feed read, and /metrics scraped every second, until `stop`."""
    import threading

    def feed() -> None:
        with urllib.request.urlopen(f"http://{http}/api/v1/live", timeout=60) as stream:
            while not stop.is_set():
                if stream.readline():
                    counts[0] += 1

    threading.Thread(target=feed, daemon=True).start()
    while not stop.is_set():
        with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as response:
            response.read()
        counts[1] += 1
        stop.wait(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="pairs of runs (plain, with the console)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--depth", type=int, default=64)
    args = parser.parse_args()
    plain: list[int] = []
    watched: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        master = bench_master(Path(tmp), '[[license]]\ntype = "PBX-Port13"\ncount = 1000000\n',
                              heartbeat_ms=5000, lease_ttl_ms=60000, max_connections=100000)
        assert master.http is not None and master.proc is not None
        try:
            for _ in range(args.runs):
                plain.append(measure(master.address, 1, 16, args.depth, args.seconds, None, master.proc.pid)["ops_per_s"])
                stop, counts = mp.Event(), mp.Array("i", 2)
                process = mp.Process(target=watcher, args=(master.http, stop, counts), daemon=True)
                process.start()
                time.sleep(0.5)
                watched.append(measure(master.address, 1, 16, args.depth, args.seconds, None, master.proc.pid)["ops_per_s"])
                stop.set()
                process.join(5)
                if counts[1] == 0 or counts[0] == 0:
                    raise RuntimeError(f"the watcher saw nothing (feed lines {counts[0]}, scrapes {counts[1]})")
        finally:
            master.stop()
    ratio = statistics.median(watched) / statistics.median(plain)
    print(json.dumps({"bench": "console", "depth": args.depth, "seconds": args.seconds,
                      "plain_ops_per_s_median": round(statistics.median(plain)), "plain_runs": plain,
                      "with_console_ops_per_s_median": round(statistics.median(watched)), "with_console_runs": watched,
                      "ratio": round(ratio, 3), "target": {"ratio_at_least": 0.95}}, indent=2))


if __name__ == "__main__":
    main()
