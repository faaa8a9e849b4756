"""Days of faults in a minute (issue 26): `slave-sim sim` seeds, one after another, for a wall-clock
budget; simulated hours and faults per wall minute, violations and the seeds that found them.

    python bench/sim.py                     # one minute
    python bench/sim.py --minutes 30        # a long sweep
    python bench/sim.py --minutes 0.2 --hours 1

Each seed is a whole simulation (slave_sim/sim.py): two masters and their PBXs' real clients on
one virtual clock, faults from the seed. Target (issue 26): >= 24 simulated hours and >= 1,000
faults per wall-clock minute with the default timings. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from slave_sim.sim import SimConfig, run_sim  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0, help="wall-clock budget (default %(default)s)")
    parser.add_argument("--hours", type=float, default=6.0, help="simulated hours per seed (default %(default)s)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--fault-every", type=float, default=600.0, metavar="SECONDS")
    parser.add_argument("--etcd", action="store_true", help="the leadership in the model of etcd")
    args = parser.parse_args()
    started = time.perf_counter()
    seeds, simulated_s, faults, failed = [], 0.0, 0, []
    seed = args.first_seed
    while time.perf_counter() - started < args.minutes * 60 or not seeds:
        result = run_sim(SimConfig(seed=seed, hours=args.hours, fault_every_s=args.fault_every, etcd=args.etcd))
        seeds.append(seed)
        simulated_s += result.simulated_s
        faults += len(result.faults)
        if not result.passed:
            failed.append(result.to_dict())
        seed += 1
    wall_min = (time.perf_counter() - started) / 60
    print(json.dumps({"bench": "sim", "etcd": args.etcd, "seeds": [seeds[0], seeds[-1]], "runs": len(seeds), "wall_minutes": round(wall_min, 2),
                      "simulated_hours": round(simulated_s / 3600, 1), "faults": faults,
                      "simulated_hours_per_wall_minute": round(simulated_s / 3600 / wall_min, 1),
                      "faults_per_wall_minute": round(faults / wall_min, 1), "violations": sum(
                          len(f["safety"]) + len(f["availability"]) + len(f["liveness"]) for f in failed),
                      "failed": [{"seed": f["seed"], "replay": f["replay"], "safety": f["safety"][:3],
                                  "availability": f["availability"][:3], "liveness": f["liveness"][:3]} for f in failed],
                      "target": {"simulated_hours_per_wall_minute": 24, "faults_per_wall_minute": 1000}}, indent=2))


if __name__ == "__main__":
    main()
