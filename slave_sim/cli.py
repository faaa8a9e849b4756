"""`slave-sim run SCENARIO [--master host:port] [--size ci|full] [--report-dir DIR]` (slave_sim/drill/),
`slave-sim chaos [--seed N] [--seconds S | --minutes M]` (slave_sim/chaos/), and `slave-sim replay
--data-dir DIR --since ... [--speed 60] [--lose NODE|@SITE --at TIME|peak]` (slave_sim/replay/).

`--tls`, `--cafile CA` and `--token` (`--token-file`, $SLAVE_SIM_TOKEN) reach a secured master
(slave_sim/access.py): a master that speaks TLS to a plaintext hello, or refuses the token, is
named in one line with the option to give, exit status 2.

Without --master it starts its own master (a real `licmaster serve` process on the scenario's
license files, in a temporary data directory). Exit status 0 when every expectation holds,
1 when one fails, 2 when the scenario or the command line is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from licmaster import __version__
from licmaster.terminal import run_quietly_into_a_pipe

from .access import TOKEN_ENV, AccessError, read_token_file
from .drill import own_master
from .drill.actions import ACTIONS
from .drill.metrics import Recorder
from .drill.report import console, write_reports
from .drill.runner import Runner
from .drill.scenario import Scenario, ScenarioError, load_scenario


class ProgressLine:
    """A progress bar on a terminal; plain lines otherwise (CI logs, pipes)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int, what: str, recorder: Recorder) -> None:
        elapsed = time.perf_counter() - self.started
        stats = f"grants {recorder.grants}  denials {recorder.denial_total}"
        if self.tty:
            width = 24
            filled = round(width * done / max(1, total))
            line = f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {elapsed:6.1f}s  {what[:40]:<40} {stats}"
            self.stream.write(line[:160])
            if done == total:
                self.stream.write("\n")
        else:
            self.stream.write(f"[{done}/{total}] {elapsed:6.1f}s {what}  ({stats})\n")
        self.stream.flush()


def _announce(url: str) -> None:
    print(f"\nslave-sim: the run's master shows its dashboard at {url}", file=sys.stderr, flush=True)


async def _hold(seconds: float | None) -> None:
    """Keep the masters (and their dashboards) up: `seconds`, or until Enter."""
    if seconds is not None:
        print(f"slave-sim: keeping the dashboard up for {seconds:g} s", file=sys.stderr, flush=True)
        await asyncio.sleep(seconds)
        return
    print("slave-sim: the dashboard stays up; press Enter to end", file=sys.stderr, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slave-sim", description="Simulated PBX networks around a license master.")
    parser.add_argument("--version", action="version", version=f"slave-sim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario and report")
    run.add_argument("scenario", type=Path)
    run.add_argument("--master", help="host:port of a running master (default: start one)")
    run.add_argument("--size", default="ci", help="scenario size: ci (default) or one of its [sizes.*], e.g. full")
    run.add_argument("--report-dir", type=Path, default=Path("reports"), help="where the JSON and HTML reports go")
    run.add_argument("--workers", type=int, default=1, help="spread the PBXs over N processes (default 1)")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    run.add_argument("--dashboard", action="store_true",
                     help="print the dashboard URL of the master it starts, and keep it up after the run until Enter")
    run.add_argument("--hold", type=float, metavar="SECONDS", help="with --dashboard: keep it up this long instead of until Enter")
    run.add_argument("--force", action="store_true",
                     help="with --master: run even when the master's installed licenses are not the scenario's")
    run.add_argument("--tls", action="store_true",
                     help="speak TLS to the master (its tls_cert); without --master, the master slave-sim starts serves TLS")
    run.add_argument("--cafile", type=Path, help="with --master: the CA file (or the master's certificate) to verify it; "
                     "implies --tls (default: the system's CAs)")
    token = run.add_mutually_exclusive_group()
    token.add_argument("--token", help=f"the master's auth_token, sent in every hello (seen in ps: prefer --token-file or "
                       f"{TOKEN_ENV})")
    token.add_argument("--token-file", type=Path, help="a file holding the token")
    sub.add_parser("actions", help="list the timeline actions a scenario may use")
    chaos = sub.add_parser("chaos", help="a randomized fault drill against two masters on etcd, checked (reproducible by --seed)")
    chaos.add_argument("--seed", type=int, default=None, help="the seed of every choice (default: from the clock, printed)")
    chaos.add_argument("--seconds", type=float, default=None, help="how long faults are injected (default 30)")
    chaos.add_argument("--minutes", type=float, default=None, help="the same, in minutes")
    chaos.add_argument("--sites", type=int, default=3)
    chaos.add_argument("--pbxs", type=int, default=2, help="PBXs per site")
    chaos.add_argument("--faults", help="only these kinds, comma-separated (default: all; `slave-sim chaos --faults list` "
                       "names them)")
    chaos.add_argument("--report-dir", type=Path, default=Path("reports"))
    sim = sub.add_parser("sim", help="days of faults in a minute: the real masters and clients on one virtual clock, "
                         "deterministic from --seed")
    from .sim.command import add_arguments as add_sim_arguments

    add_sim_arguments(sim)
    replay = sub.add_parser("replay", help="a master's recorded demand played by simulated PBXs against a real master, "
                            "compressed in time, with faults if asked; the usual verdict and report")
    replay.add_argument("scenario", nargs="?", type=Path, help="a scenario file saying replay = {...} (else --data-dir, --since)")
    replay.add_argument("--data-dir", type=Path, help="the recorded master's data directory (its journal.sqlite3)")
    replay.add_argument("--config", type=Path, help="the recorded master's config (default: a licmaster.toml in or beside "
                        "the data directory whose data_dir it is): its license files and site policy")
    replay.add_argument("--since", help="where the period begins: 7d, 12h, 30m, 90s ago, epoch seconds, or an ISO 8601 time")
    replay.add_argument("--until", help="where it ends (default: now), as --since")
    replay.add_argument("--speed", help="how many times faster than recorded (default 60: an hour in a minute)")
    replay.add_argument("--licenses", nargs="+", type=Path, metavar="FILE",
                        help="the candidate license files of the master it starts (default: the recorded master's)")
    replay.add_argument("--policy", type=Path, metavar="SITES_TOML", help="the candidate site policy (default: the recorded master's)")
    replay.add_argument("--lose", action="append", default=[], metavar="NODE|@SITE",
                        help="these PBXs die (their standby PBXs take over where one is configured); with --at, repeatable")
    replay.add_argument("--at", action="append", default=[], metavar="TIME|peak", help="when each --lose happens, as --since, "
                        "or 'peak' (the record's most floating licenses in use)")
    replay.add_argument("--master", help="host:port of a running master with the candidate licenses (default: start one)")
    replay.add_argument("--force", action="store_true", help="with --master: run even when its licenses are not the candidate's")
    replay.add_argument("--report-dir", type=Path, default=Path("reports"), help="where the JSON and HTML reports go")
    replay.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(argv)
    if args.command == "replay":
        return _replay(args)
    if args.command == "chaos":
        return _chaos(args)
    if args.command == "sim":
        return _sim(args)
    if args.command == "actions":
        for name, action in ACTIONS.items():
            print(f"{name:<16} {action.doc}")
        return 0
    try:
        scenario = with_access(load_scenario(args.scenario, args.size), args)
        if args.workers < 1:
            raise ValueError("--workers must be at least 1")
        runner = Runner(scenario, args.master, None if args.quiet else ProgressLine(sys.stderr), workers=args.workers,
                        dashboard=_announce if args.dashboard else None,
                        hold=(lambda: _hold(args.hold)) if args.dashboard else None, force=args.force)
    except (ScenarioError, ValueError) as exc:
        print(f"slave-sim: {exc}", file=sys.stderr)
        return 2
    ignored = own_master.ignored_settings(scenario.master) if args.master else []
    if ignored:
        print(f"slave-sim: the scenario's [master] settings ({', '.join(ignored)}) apply to a master slave-sim starts; "
              f"the one at {args.master} keeps its own", file=sys.stderr)
    try:
        result = asyncio.run(runner.run())
    except (own_master.Mismatch, AccessError) as exc:
        print(f"slave-sim: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"slave-sim: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, OSError, TimeoutError) as exc:  # no master where --master says, or it went away for good
        where = f"at {args.master}" if args.master else "(the one this run started)"
        print(f"slave-sim: could not run: the master {where} did not answer: {exc or exc.__class__.__name__}", file=sys.stderr)
        return 2
    json_path, html_path = write_reports(result, args.report_dir)  # first: the reports outlive a closed stdout
    return run_quietly_into_a_pipe(lambda: _print_result(result, json_path, html_path))


def with_access(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    """The scenario's [master] tls, cafile and token, overridden by --tls, --cafile and the token
    (--token, --token-file, then $SLAVE_SIM_TOKEN). ValueError naming the option."""
    access = scenario.access
    if args.cafile is not None:
        if not args.master:
            raise ValueError("--cafile goes with --master: the master slave-sim starts serves a certificate it made, "
                             "which its clients trust")
        if not args.cafile.is_file():
            raise ValueError(f"--cafile: no such file {args.cafile}")
        access = replace(access, tls=True, cafile=args.cafile.resolve())
    if args.tls:
        access = replace(access, tls=True)
    if args.token is not None:
        if not args.token.strip():
            raise ValueError("--token is empty")
        access = replace(access, token=args.token.strip())
    elif args.token_file is not None:
        access = replace(access, token=read_token_file(args.token_file, "--token-file"))
    elif os.environ.get(TOKEN_ENV, "").strip():
        access = replace(access, token=os.environ[TOKEN_ENV].strip())
    return replace(scenario, access=access)


def _print_result(result: Any, json_path: Path, html_path: Path) -> int:
    print(console(result))
    print(f"  reports: {json_path}  {html_path}")
    return 0 if result.passed else 1


def _replay(args: argparse.Namespace) -> int:
    """`slave-sim replay`: everything the record, the candidates and --lose allow is checked before
    a process starts (exit status 2 naming what is wrong); then a drill (slave_sim/replay/)."""
    from .replay.run import ReplayRunner, Request, prepare
    from .replay.timeline import ReplayError

    try:
        if len(args.lose) != len(args.at):
            raise ReplayError(f"{len(args.lose)} --lose and {len(args.at)} --at: each --lose needs its --at")
        scenario = load_scenario(args.scenario, replay=True) if args.scenario is not None else None
        if scenario is not None and scenario.replay is None:
            raise ReplayError(f"{args.scenario} has no replay = {{...}}: run it with `slave-sim run {args.scenario}`")
        source = scenario.replay if scenario is not None else None
        request = Request(
            data_dir=args.data_dir or (source.data_dir if source is not None else None),
            config=args.config or (source.config if source is not None else None),
            since=args.since or (source.since if source is not None else None),
            until=args.until or (source.until if source is not None else None),
            speed=args.speed if args.speed is not None else (source.speed if source is not None else 60.0),
            licenses=tuple(args.licenses or ()), policy=args.policy,
            lose=(*(source.lose if source is not None else ()), *zip(args.lose, args.at, strict=True)),
            master=args.master, scenario=scenario)
        plan = prepare(request)
        runner = ReplayRunner(plan, args.master, None if args.quiet else ProgressLine(sys.stderr), force=args.force)
    except (ScenarioError, ReplayError) as exc:
        print(f"slave-sim: {exc}", file=sys.stderr)
        return 2
    print(f"slave-sim: {plan.scenario.description}", file=sys.stderr, flush=True)
    try:
        result = asyncio.run(runner.run())
    except (own_master.Mismatch, AccessError, RuntimeError) as exc:
        print(f"slave-sim: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, OSError, TimeoutError) as exc:
        where = f"at {args.master}" if args.master else "(the one this run started)"
        print(f"slave-sim: could not run: the master {where} did not answer: {exc or exc.__class__.__name__}", file=sys.stderr)
        return 2
    json_path, html_path = write_reports(result, args.report_dir)
    return run_quietly_into_a_pipe(lambda: _print_result(result, json_path, html_path))


def _sim(args: argparse.Namespace) -> int:
    from .sim.command import main

    return main(args)


def _chaos(args: argparse.Namespace) -> int:
    from .chaos.faults import FAULTS
    from .chaos.plan import ChaosConfig
    from .chaos.report import console as chaos_console
    from .chaos.report import write_reports as write_chaos_reports
    from .chaos.runner import run_chaos

    seconds = args.minutes * 60 if args.minutes is not None else (args.seconds if args.seconds is not None else 30.0)
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    if seconds <= 0 or args.sites < 1 or args.pbxs < 1:
        print("slave-sim: --seconds/--minutes, --sites and --pbxs must be positive", file=sys.stderr)
        return 2
    if args.faults == "list":
        print("\n".join(FAULTS))
        return 0
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip()) if args.faults else FAULTS
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown or not faults:
        print(f"slave-sim: --faults: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(FAULTS)}", file=sys.stderr)
        return 2
    if shutil.which("etcd") is None:
        print("slave-sim: the chaos drill needs etcd (Debian: apt-get install etcd-server)", file=sys.stderr)
        return 2
    print(f"slave-sim: chaos drill, seed {seed}, {seconds:g} s of faults", file=sys.stderr, flush=True)
    try:
        result = asyncio.run(run_chaos(ChaosConfig(seed=seed, seconds=seconds, sites=args.sites, pbxs_per_site=args.pbxs,
                                                    faults=faults)))
    except RuntimeError as exc:
        print(f"slave-sim: the drill could not run: {exc}", file=sys.stderr)
        return 2
    json_path, html_path = write_chaos_reports(result, args.report_dir)
    print(chaos_console(result))
    print(f"  reports: {json_path}  {html_path}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
