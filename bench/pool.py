"""Checkout+checkin pairs per second in-process, with 1k, 100k and 1M live leases.

    python bench/pool.py [--pairs 200000] [--runs 5]

Prints one JSON object. Target (issue 2): >= 200,000 pairs/s, and the 1M figure within 20%
of the 1k figure (O(1) in the number of installed licenses and live leases).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from licmaster.model.catalog import LicenseType  # noqa: E402
from licmaster.model.pool import Pool  # noqa: E402
from licmaster.model.types import InstalledLicense, Node  # noqa: E402

NODES = 1000


def build(live: int) -> Pool:
    pool = Pool([InstalledLicense(LicenseType("PBX-Port", 13), live + 10_000)])
    for n in range(NODES):
        pool.set_node(Node(f"pbx{n}"))
    for i in range(live):
        pool.checkout(f"pbx{i % NODES}", "port", f"user{i}")
    return pool


def pairs_per_second(pool: Pool, pairs: int) -> float:
    checkout, checkin = pool.checkout, pool.checkin
    holders = [f"bench{i}" for i in range(pairs)]
    gc.disable()
    try:
        start = time.perf_counter()
        node = "pbx7"
        for holder in holders:
            lease, _new = checkout(node, "port", holder)
            checkin(node, lease.id)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return pairs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    args = parser.parse_args()
    results = {}
    for live in (int(s) for s in args.sizes.split(",")):
        pool = build(live)
        rates = [pairs_per_second(pool, args.pairs) for _ in range(args.runs)]
        assert pool.lease_count == live
        results[str(live)] = {"median_pairs_per_s": round(statistics.median(rates)), "runs": [round(r) for r in rates]}
        del pool
        gc.collect()
    sizes = list(results)
    ratio = results[sizes[-1]]["median_pairs_per_s"] / results[sizes[0]]["median_pairs_per_s"]
    print(json.dumps({"bench": "pool", "pairs_per_run": args.pairs, "live_leases": results,
                      f"ratio_{sizes[-1]}_to_{sizes[0]}": round(ratio, 3),
                      "target": {"min_pairs_per_s": 200_000, "max_ratio_drop": 0.2}}, indent=2))


if __name__ == "__main__":
    main()
