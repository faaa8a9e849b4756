"""The `licmaster` command: `check` an installation's license files, `serve` the master."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from licmaster.daemon import serve
from licmaster.daemon.journal import read_journal
from licmaster.licenses.files import load_files
from licmaster.licenses.verdict import render_text, verdict
from licmaster.model.catalog import CURRENT_VERSION
from licmaster.model.rules import normalize_mac


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="licmaster", description="License master for PBX networks (innovaphone V13 model).")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="verdict on license files before buying or installing them")
    check.add_argument("files", nargs="+", metavar="LICENSE_FILE")
    check.add_argument("--firmware", type=int, default=CURRENT_VERSION, help="PBX software version to check for (default %(default)s)")
    check.add_argument("--json", action="store_true", help="print one JSON object: families, errors, warnings")
    check.add_argument("--today", type=dt.date.fromisoformat, default=None, help="date for SSA terms (YYYY-MM-DD; default today)")
    check.add_argument("--platform", choices=("gateway", "ipva"), default="gateway", help="the PBX's platform (default %(default)s)")
    check.add_argument("--mac", type=_mac, default=None, help="the PBX's MAC: which device-bound licenses are its own")
    check.add_argument("--model", default=None, help="the gateway model, e.g. IP811")
    check.set_defaults(run=_check)

    serve.add_parser(sub)

    journal = sub.add_parser("journal", help="read the journal: grants, check-ins, denials, expiries, takeovers")
    journal.add_argument("--data-dir", default="licmaster-data", type=Path, help="the master's data directory")
    journal.add_argument("--event", help="only this event (grant, checkin, deny, expire, bye, takeover, ...)")
    journal.add_argument("--node", help="only this node")
    journal.add_argument("--last", type=int, default=0, help="only the last N events")
    journal.add_argument("--json", action="store_true", help="one JSON object per line")
    journal.set_defaults(run=_journal)

    args = parser.parse_args(argv)
    return int(args.run(args))


def _check(args: argparse.Namespace) -> int:
    loaded = load_files(args.files)
    v = verdict(loaded, args.firmware, args.today, platform=args.platform, mac=args.mac, model=args.model)
    if args.json:
        print(json.dumps(v.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(render_text(v))
    return 0 if v.ok else 1


def _mac(text: str) -> str:
    mac = normalize_mac(text)
    if mac is None:
        raise argparse.ArgumentTypeError(f"not a MAC address (xx:xx:xx:xx:xx:xx): {text!r}")
    return mac


def _journal(args: argparse.Namespace) -> int:
    path = args.data_dir / "journal.sqlite3"
    if not path.is_file():
        print(f"licmaster: no journal at {path}", file=sys.stderr)
        return 2
    rows = [r for r in read_journal(path, event=args.event) if args.node is None or r["node"] == args.node]
    if args.last:
        rows = rows[-args.last:]
    for row in rows:
        if args.json:
            print(json.dumps(row))
            continue
        when = dt.datetime.fromtimestamp(row["ts"], dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        fields = " ".join(f"{k}={row[k]}" for k in ("node", "resource", "holder", "lease", "detail", "rule") if row[k] is not None)
        print(f"{when} {row['event']:<9} {fields}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
