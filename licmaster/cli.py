"""The `licmaster` command: `check` an installation's license files, `serve` the master."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence

from .catalog import CURRENT_VERSION
from . import serve
from .licensefile import load_files
from .verdict import render_text, verdict


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="licmaster", description="License master for PBX networks (innovaphone V13 model).")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="verdict on license files before buying or installing them")
    check.add_argument("files", nargs="+", metavar="LICENSE_FILE")
    check.add_argument("--firmware", type=int, default=CURRENT_VERSION, help="PBX software version to check for (default %(default)s)")
    check.add_argument("--json", action="store_true", help="print one JSON object: families, errors, warnings")
    check.add_argument("--today", type=dt.date.fromisoformat, default=None, help="date for SSA terms (YYYY-MM-DD; default today)")
    check.set_defaults(run=_check)

    serve.add_parser(sub)

    args = parser.parse_args(argv)
    return int(args.run(args))


def _check(args: argparse.Namespace) -> int:
    loaded = load_files(args.files)
    v = verdict(loaded, args.firmware, args.today)
    if args.json:
        print(json.dumps(v.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(render_text(v))
    return 0 if v.ok else 1


if __name__ == "__main__":
    sys.exit(main())
