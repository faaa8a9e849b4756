"""Days of faults in a minute (issue 26): `slave-sim sim` seeds, one after another, for a wall-clock
budget; simulated hours and faults per wall minute, violations and the seeds that found them.

    python bench/sim.py                     # one minute
    python bench/sim.py --minutes 30        # a long sweep
    python bench/sim.py --minutes 0.2 --hours 1
    python bench/sim.py --fault-every 600   # sparse: a fault every 10 simulated minutes (default 60)

Each seed is a whole simulation (slave_sim/sim.py): two masters and their PBXs' real clients on
one virtual clock, faults from the seed. Target (issue 26): >= 24 simulated hours and >= 1,000
faults per wall-clock minute with the default timings. Prints one JSON object: the totals, the
median over the seeds of each one's rates (its own CPU time), the violations by rule and the
seeds that found them, each with its replay command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slave_sim.sim import SimConfig, run_sim  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0, help="wall-clock budget (default %(default)s)")
    parser.add_argument("--hours", type=float, default=6.0, help="simulated hours per seed (default %(default)s)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--fault-every", type=float, default=60.0, metavar="SECONDS", help="mean simulated time between faults (default %(default)s)")
    parser.add_argument("--etcd", action="store_true", help="the leadership in the model of etcd")
    parser.add_argument("--faults", default="", help="only these kinds, comma-separated")
    args = parser.parse_args()
    started = time.perf_counter()
    seeds: list[int] = []
    failed: list[dict[str, Any]] = []
    hours_rates: list[float] = []
    fault_rates: list[float] = []
    simulated_s, faults = 0.0, 0
    rules: dict[str, int] = {}
    seed = args.first_seed
    kinds = tuple(kind for kind in args.faults.split(",") if kind)
    while time.perf_counter() - started < args.minutes * 60 or not seeds:
        result = run_sim(SimConfig(seed=seed, hours=args.hours, fault_every_s=args.fault_every, etcd=args.etcd, faults=kinds))
        seeds.append(seed)
        simulated_s += result.simulated_s
        faults += len(result.faults)
        hours_rates.append(result.simulated_s / 3600 / (result.cpu_s / 60))
        fault_rates.append(len(result.faults) / (result.cpu_s / 60))
        for rule, n in result.by_rule.items():
            rules[rule] = rules.get(rule, 0) + n
        if not result.passed:
            failed.append(result.to_dict())
        seed += 1
    wall_min = (time.perf_counter() - started) / 60
    print(json.dumps({"bench": "sim", "etcd": args.etcd, "seeds": [seeds[0], seeds[-1]], "runs": len(seeds), "wall_minutes": round(wall_min, 2),
                      "simulated_hours": round(simulated_s / 3600, 1), "faults": faults,
                      "simulated_hours_per_wall_minute": round(simulated_s / 3600 / wall_min, 1),
                      "faults_per_wall_minute": round(faults / wall_min, 1),
                      "median_per_seed": {"simulated_hours_per_cpu_minute": round(statistics.median(hours_rates), 1),
                                          "faults_per_cpu_minute": round(statistics.median(fault_rates), 1)},
                      "violations": sum(rules.values()), "violations_by_rule": rules,
                      "failed": [{"seed": f["seed"], "replay": f["replay"], "safety": f["safety"][:3],
                                  "availability": f["availability"][:3], "liveness": f["liveness"][:3]} for f in failed],
                      "target": {"simulated_hours_per_wall_minute": 24, "faults_per_wall_minute": 1000}}, indent=2))


if __name__ == "__main__":
    main()
