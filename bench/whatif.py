"""What if over a year (issue 24, item 6): a year of journal for a 10,000-phone installation,
about ten million rows, replayed against candidate licenses.

    python bench/whatif.py                                # 10,000 phones, 365 days
    python bench/whatif.py --phones 200 --days 3          # the smoke test's size
    python bench/whatif.py --journal /tmp/year.db         # keep the file (reused if it is there)

The journal is written as the master writes it (licmaster/daemon/storage/journal.py: the
schema, a `runs` row, then batches of 10,000 rows marshalled, format "marshal-4"), straight
with sqlite3. The installation: `--pbxs` PBXs on four sites, `--phones` phones spread over them;
each PBX says hello once at the start. From a Monday, each working day a share of the phones
(82-93%, all of them on a few busy days) registers in the morning (a `grant` of a Port) and
unregisters in the evening (`checkin`), with mid-day churn (a phone re-registering: a check-in,
then a new grant a few minutes later); on weekends a few phones. The recorded master had 96% of
the phones' count installed: on busy days it ran out, and each phone it refused is a `demand`
row (it retried until its next registration). Seeded: the same options, the same journal.

The replay runs in a fresh process (so its peak RSS is its own): `whatif.answer` over
`iter_rows`, as `licmaster whatif` reads the journal (tuples, a batch at a time), from the first
row to the last, against `--licenses` Ports (default 97% of the record's peak in use: a bit below
it, so that the replay refuses some). Prints one JSON object; targets (reported, not asserted):
replay <= 60 s and <= 500 MB peak RSS on a 2-core machine.
"""

from __future__ import annotations

import argparse
import heapq
import json
import marshal
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from licmaster.daemon.storage import journal  # noqa: E402
from licmaster.model.types import Node  # noqa: E402
from licmaster.wire import events  # noqa: E402
from licmaster.wire.events import Demand  # noqa: E402

START = 1736121600.0  # Monday 2025-01-06 00:00 UTC
DAY, HOUR = 86400.0, 3600.0
SITES = ("hq", "north", "south", "west")
BATCH = 10_000
LEASE_BASE = 1_736_121_600_000_000  # lease ids are decimal strings counted from a base, as the master's
RECORDED_SHARE = 0.96  # the recorded master's Ports, of the phones' count
CANDIDATE_SHARE = 0.97  # the default candidate, of the record's peak in use
TARGET = {"max_replay_s": 60, "max_replay_rss_mb": 500}


def pbx_names(pbxs: int) -> list[str]:
    return [f"{SITES[n % len(SITES)]}-pbx{n:03d}" for n in range(pbxs)]


def phone_day(rng: random.Random, base: float) -> list[tuple[float, float]]:
    """One phone's registrations of a day, (start, end) epoch seconds: morning to evening, split
    by 0-3 re-registrations (a reboot, a move), each a gap of about two minutes."""
    arrive = base + min(max(rng.gauss(8.5 * HOUR, 0.6 * HOUR), 6 * HOUR), 11 * HOUR)
    leave = base + min(max(rng.gauss(17.25 * HOUR, 0.7 * HOUR), 15 * HOUR), 21 * HOUR)
    churn = int(rng.random() * 3.3)  # 0, 1, 2 (30% each), 3 (9%): ~1.2 a day
    if not churn:
        return [(arrive, leave)]
    cuts = sorted(rng.uniform(arrive, leave) for _ in range(churn))
    segments, start = [], arrive
    for i, cut in enumerate(cuts):
        following = cuts[i + 1] if i + 1 < churn else leave
        segments.append((start, cut))
        start = cut + min(rng.expovariate(1 / 120), (following - cut) / 2)
    segments.append((start, leave))
    return segments


def synthesize(path: Path, *, phones: int, days: int, pbxs: int, seed: int) -> dict[str, Any]:
    """Writes the journal; returns what it holds (rows by event, the recorded peak, ...)."""
    rng = random.Random(seed)
    nodes = pbx_names(pbxs)
    node_of = [nodes[i * pbxs // phones] for i in range(phones)]
    holders = [f"phone{i:05d}" for i in range(phones)]
    installed = max(1, round(phones * RECORDED_SHARE))
    working = [d for d in range(days) if d % 7 < 5]
    busy = set(rng.sample(working, min(len(working), max(1, round(len(working) * 0.02))))) if working else set()
    counts: dict[str, int] = {}
    peak_in_use = peak_demand = 0
    leases = iter(range(LEASE_BASE + 1, 2**62))
    GRANT, CHECKIN, DEMAND, PORT, LABEL = events.GRANT, events.CHECKIN, events.DEMAND, "port", "PBX-Port13:1"

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.executescript(journal.SCHEMA)
    db.execute("BEGIN")
    db.execute("INSERT INTO runs (after_seq, started) VALUES (0, ?)", (START,))
    pending: list[tuple[Any, ...]] = []

    def write(rows: list[tuple[Any, ...]]) -> None:
        pending.extend(rows)
        while len(pending) >= BATCH:
            flush(BATCH)

    def flush(n: int) -> None:
        batch = pending[:n]
        del pending[:n]
        db.execute("INSERT INTO batches (first_ts, last_ts, count, events, format) VALUES (?, ?, ?, ?, ?)",
                   (batch[0][0], batch[-1][0], len(batch), marshal.dumps(batch, journal.MARSHAL_VERSION), journal.FORMAT))

    hellos = [(START + i * 0.001, events.HELLO, name, None, None, None,
               events.hello_detail(Node(name, mac=f"00:90:33:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}")))
              for i, name in enumerate(nodes)]
    write(hellos)
    counts[events.HELLO] = len(hellos)

    for day in range(days):
        base = START + day * DAY
        share = 0.02 if day % 7 >= 5 else 1.0 if day in busy else rng.uniform(0.82, 0.93)
        # (ts, kind, phone, segment end): kind 0 ends a registration, 1 starts one (ends first)
        moves: list[tuple[float, int, int, float]] = []
        for phone in range(phones):
            if rng.random() < share:
                for start, end in phone_day(rng, base):
                    moves.append((start, 1, phone, end))
                    moves.append((end, 0, phone, end))
        moves.sort()
        # The recorded master: a Port while there is one; else the phone is refused, retrying until
        # it gives up (at most its registration's end), and asks again at its next registration.
        out: list[tuple[Any, ...]] = []
        held: dict[int, str] = {}
        in_use = 0
        asking_until: list[float] = []  # a heap: when each refused phone still asking gives up
        for ts, kind, phone, end in moves:
            while asking_until and asking_until[0] <= ts:
                heapq.heappop(asking_until)
            if kind:
                if in_use < installed:
                    lease = str(next(leases))
                    held[phone] = lease
                    in_use += 1
                    out.append((ts, GRANT, node_of[phone], PORT, holders[phone], lease, LABEL))
                    if in_use > peak_in_use:
                        peak_in_use = in_use
                else:
                    last = min(ts + rng.uniform(20, 600), end)
                    asks = 1 + int((last - ts) / 5)
                    detail = events.demand_detail(Demand("exhausted", "PBX-Port", ts, last, asks))
                    out.append((last + 10 + rng.random(), DEMAND, node_of[phone], PORT, holders[phone], None, detail))
                    heapq.heappush(asking_until, last)
                peak_demand = max(peak_demand, in_use + len(asking_until))
            else:
                lease = held.pop(phone, None)
                if lease is not None:
                    in_use -= 1
                    out.append((ts, CHECKIN, node_of[phone], PORT, holders[phone], lease))
        out.sort(key=lambda row: row[0])  # demand rows are written after their last ask
        for row in out:
            counts[row[1]] = counts.get(row[1], 0) + 1
        write(out)
    if pending:
        flush(len(pending))
    db.execute("COMMIT")
    db.close()
    return {"rows": sum(counts.values()), "by_event": dict(sorted(counts.items())), "busy_days": len(busy),
            "recorded_installed": installed, "recorded_peak_in_use": peak_in_use, "recorded_peak_demand": peak_demand,
            "bytes": path.stat().st_size}


def period(path: Path) -> tuple[int, float, float]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows, first, last = db.execute("SELECT SUM(count), MIN(first_ts), MAX(last_ts) FROM batches").fetchone()
    finally:
        db.close()
    return rows, first, last


def replay_here(path: Path, licenses: int) -> dict[str, Any]:
    """The replay, in this process: its seconds, and peak RSS before and after."""
    from licmaster.console.whatif import answer
    from licmaster.licenses.files import parse_text

    parsed = parse_text(f'[[license]]\ntype = "PBX-Port13"\ncount = {licenses}\n')
    assert not [p for p in parsed.problems if p.severity == "error"], parsed.problems
    _rows, since, until = period(path)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    doc = answer(lambda: journal.iter_rows(path), parsed.licenses, None, since=since, until=until)  # as `licmaster whatif` does
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"seconds": seconds, "peak_rss_mb": rss / 1024, "rss_before_mb": rss_before / 1024, "asks": doc["asks"],
            "families": [{key: f[key] for key in ("family", "installed", "peak_in_use", "peak_demand", "refused",
                                                  "would_serve_everyone", "traffic")}
                         for f in doc["families"] if f["installed"] or f["peak_in_use"] or f["refused"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phones", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365, help="calendar days, from a Monday")
    parser.add_argument("--pbxs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--licenses", type=int, default=None,
                        help="the candidate's PBX-Port13 count (default: 97%% of the record's peak in use)")
    parser.add_argument("--journal", type=Path, default=None, help="write the journal here and keep it (reused if it exists)")
    parser.add_argument("--replay", type=Path, default=None, help=argparse.SUPPRESS)  # the child: replay this file, print JSON
    args = parser.parse_args()
    if args.replay is not None:
        print(json.dumps(replay_here(args.replay, args.licenses)))
        return

    with tempfile.TemporaryDirectory(prefix="whatif-bench-") as tmp:
        path = args.journal or Path(tmp) / "journal.db"
        synthesis_s: float | None = None
        record: dict[str, Any] | None = None
        if not path.exists():
            started = time.perf_counter()
            record = synthesize(path, phones=args.phones, days=args.days, pbxs=args.pbxs, seed=args.seed)
            synthesis_s = time.perf_counter() - started
        rows, _first, _last = period(path)
        recorded_peak = record["recorded_peak_in_use"] if record else None
        licenses = args.licenses
        if licenses is None:
            if recorded_peak is None:
                parser.error("--licenses is needed with a journal that was already there")
            licenses = max(1, int(recorded_peak * CANDIDATE_SHARE))
        child = subprocess.run([sys.executable, __file__, "--replay", str(path), "--licenses", str(licenses)],
                               capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"the replay failed:\n{child.stderr}")
        replayed = json.loads(child.stdout)
    print(json.dumps({
        "bench": "whatif", "phones": args.phones, "days": args.days, "pbxs": args.pbxs, "seed": args.seed, "rows": rows,
        "record": record, "synthesis_s": None if synthesis_s is None else round(synthesis_s, 2),
        "candidate_ports": licenses, "replay_s": round(replayed["seconds"], 2),
        "replay_peak_rss_mb": round(replayed["peak_rss_mb"], 1), "replay_rss_before_mb": round(replayed["rss_before_mb"], 1),
        "asks": replayed["asks"], "families": replayed["families"], "target": TARGET,
        "within_target": replayed["seconds"] <= TARGET["max_replay_s"] and replayed["peak_rss_mb"] <= TARGET["max_replay_rss_mb"],
    }, indent=2))


if __name__ == "__main__":
    main()
