"""The randomized fault drill, longer than CI runs it: several seeds, each minutes of faults.

    python bench/chaos.py                          # seeds 1-3, 2 minutes each
    python bench/chaos.py --seeds 10 --minutes 5

Each seed is `slave-sim chaos --seed N` (slave_sim/chaos/): two masters on a 3-member etcd,
sites of PBXs through proxies, and a nemesis killing, pausing and cutting masters, sites and
etcd members. Prints one JSON object: per seed, the faults injected, grants, losses told to
PBXs, peaks against installed, and the violations the checker found (target: none), with the
seed to reproduce any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slave_sim.chaos.plan import ChaosConfig  # noqa: E402
from slave_sim.chaos.runner import run_chaos  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N")
    parser.add_argument("--first", type=int, default=1, help="the first seed")
    parser.add_argument("--minutes", type=float, default=2.0)
    args = parser.parse_args()
    runs = []
    for seed in range(args.first, args.first + args.seeds):
        r = asyncio.run(run_chaos(ChaosConfig(seed=seed, seconds=args.minutes * 60)))
        runs.append({"seed": seed, "passed": r["passed"], "faults_injected": r["faults_injected"], "grants": r["grants"],
                     "losses_told": r["losses"], "refusals": r["refusals"], "peak_believed": r["peak_believed"],
                     "peak_acting": r["peak_acting"], "installed": r["config"]["installed"],
                     "slowest_served_after_heal_s": max((v - r["last_heal"] for v in r["served"].values() if v is not None),
                                                        default=None),
                     "violations": r["violations"]})
    print(json.dumps({"bench": "chaos", "minutes_per_seed": args.minutes,
                      "faults_injected": sum(r["faults_injected"] for r in runs),
                      "violations": sum(len(r["violations"]) for r in runs), "runs": runs}, indent=2, default=str))


if __name__ == "__main__":
    main()
