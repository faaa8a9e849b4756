"""`slave-sim sim`'s options and output (slave_sim/cli.py hands its sub-parser and arguments here;
`python -m slave_sim.sim` runs the same)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .config import ETCD_FAULTS, SimConfig, SimResult
from .world import run_sim


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, required=True, help="the seed of every choice: the same seed, the same history")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours (default %(default)s)")
    parser.add_argument("--pbxs", type=int, default=10)
    parser.add_argument("--phones", type=int, default=14, help="phones per PBX (default %(default)s)")
    parser.add_argument("--ports", type=int, default=60, help="Ports installed")
    parser.add_argument("--fault-every", type=float, default=60.0, metavar="SECONDS", help="mean simulated time between faults (default %(default)s)")
    parser.add_argument("--etcd", action="store_true", help="the leadership in a model of etcd (default: two-node)")
    parser.add_argument("--faults", default="", help=f"only these kinds, comma-separated (of {', '.join(ETCD_FAULTS)})")
    parser.add_argument("--trace", nargs="?", type=float, const=30.0, default=None, metavar="SECONDS",
                        help="on a failure, print the history's events within SECONDS (default 30) of the first violation")
    parser.add_argument("--json", action="store_true")


def config_from(args: argparse.Namespace) -> SimConfig:
    faults = tuple(kind.strip() for kind in (getattr(args, "faults", "") or "").split(",") if kind.strip())
    return SimConfig(seed=args.seed, hours=args.hours, pbxs=args.pbxs, phones=args.phones, ports=args.ports,
                     fault_every_s=args.fault_every, etcd=args.etcd, faults=faults)


def main(args: argparse.Namespace) -> int:
    config = config_from(args)
    problems = config.problems()
    trace_s = getattr(args, "trace", None)
    if trace_s is not None and not 0 < trace_s <= 86400:
        problems.append(f"--trace {trace_s:g}: more than 0, at most a day")
    if problems:
        print("slave-sim: " + "; ".join(problems), file=sys.stderr)
        return 2
    print(f"slave-sim: simulation, seed {config.seed}, {config.hours:g} simulated hours; from the seed: "
          + json.dumps(config.derived()), file=sys.stderr, flush=True)
    result = run_sim(config)
    doc = result.to_dict()
    if trace_s is not None and not result.passed:
        doc["trace"] = [list(event) for event in result.trace(trace_s)]
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(describe(result, doc, trace_s))
    return 0 if result.passed else 1


def describe(result: SimResult, doc: dict[str, Any], trace_s: float | None) -> str:
    lines = [f"Simulation, seed {doc['seed']}: {'PASSED' if doc['passed'] else 'FAILED'} ({doc['simulated_s'] / 3600:.2f} "
             f"simulated hours in {doc['cpu_s']:.1f} CPU s)",
             f"  faults: {doc['faults']} " + ", ".join(f"{k} {n}" for k, n in sorted(doc["faults_by_kind"].items())),
             f"  peak believed by the PBXs {doc['peak_believed']} of {doc['ports']} installed; {doc['audits']} audits, "
             f"{doc['leases_audited']} leases compared one by one"]
    for rule in ("safety", "availability", "liveness"):
        lines.append(f"  {rule}: {len(getattr(result, rule))} violation(s)" + "".join(f"\n    {v}" for v in doc[rule][:5]))
    lines.append("  by rule: " + ", ".join(f"{rule}: {n}" for rule, n in doc["violations_by_rule"].items()))
    lines.append(f"  history: {doc['history_events']} events, sha256 {doc['history_sha256']}")
    if not doc["passed"]:
        lines.append(f"  replay: {doc['replay']} --trace")
    if "trace" in doc:
        first = result.first_violation_t()
        lines.append(f"  trace: the history within {trace_s:g} s of the first violation (t={first:.3f} s)")
        lines += [f"    {event[0]:12.6f}  " + " ".join(map(str, event[1:])) for event in doc["trace"]]
    return "\n".join(lines)
