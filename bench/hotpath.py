"""The master's cost per request, in-process and deterministic: CPU instructions (callgrind).

    python bench/hotpath.py                 # under valgrind if it is installed, else wall time only
    python bench/hotpath.py --requests 20480
    python bench/hotpath.py --sites 10       # under a 10-site policy (reserve and max on PBX-Port)
    python bench/hotpath.py --standby        # a standby master attached: every reply waits for its ack

A real `Master` (licenses, store, journal) is fed batches of 64 pipelined checkouts, then the 64
checkins of their leases, through the protocol's `data_received`, exactly as a socket read would
deliver them; replies go to a transport that drops them. No socket, no load generator: what is
left is the master's own work per request (decoding, validation, the pool, the journal, reply
encoding). Instructions per request are counted by running this script twice under callgrind,
with no requests and with --requests, and dividing the difference: the same build gives the
same figure to within a few instructions, where wall-clock figures on a shared machine move
by ±30%. This is the figure to compare before and after a change to the hot path.

With `--standby`, a standby master's connection is attached (`replicate`) and acknowledges each
push as it comes (daemon/ha/feed.py): the master holds each read's replies until then, so each
read is followed by the loop turn in which the push goes out and the standby's `ack` comes in.

Prints one JSON object. (Debian: `apt-get install valgrind`.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from licmaster.daemon import logs  # noqa: E402
from licmaster.daemon.config import Config  # noqa: E402
from licmaster.daemon.master import Master  # noqa: E402
from licmaster.wire.codec import encode  # noqa: E402
from licmaster.wire.events import STREAM_VERSION  # noqa: E402

BATCH = 64


class DroppingTransport(asyncio.Transport):
    """Stands in for the socket: the replies are counted, not sent."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def close(self) -> None:
        return None

    def get_extra_info(self, name: str) -> Any:
        return None

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def pause_reading(self) -> None:
        return None


class StandbyTransport(DroppingTransport):
    """The standby master's end: it acknowledges the last push it received (the feed's `seq`)."""

    def __init__(self, master: Master) -> None:
        super().__init__()
        self.master = master
        self.owed: int | None = None

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self.owed = self.master.feed.seq


def batches(requests: int, base: int) -> tuple[list[bytes], list[bytes]]:
    """Checkout reads and checkin reads; lease ids count from the pool's base: base+1, base+2, ..."""
    pairs = max(requests // 2, BATCH)
    checkouts, checkins = [], []
    for first in range(1, pairs + 1, BATCH):
        ids = range(first, first + BATCH)
        checkouts.append(b"".join(encode({"op": "checkout", "resource": "port", "holder": f"h{i}", "id": i}) for i in ids))
        checkins.append(b"".join(encode({"op": "checkin", "lease": str(base + i), "id": i}) for i in ids))
    return checkouts, checkins


def site_policy(sites: int) -> str:
    """`sites` sites, each reserving 10 Ports; the bench's PBX is in the first, which has a max
    too: each checkout counts against its site's max and the others' reservations (the worst case)."""
    lines = []
    for i in range(sites):
        lines += [f"[site.site-{i}]", f'nodes = ["{"pbx" if i == 0 else f"branch-{i}-*"}"]', 'reserve = { "PBX-Port" = 10 }']
        if i == 0:
            lines.append('max = { "PBX-Port" = 500000 }')
    return "\n".join(lines) + "\n"


async def run(requests: int, built: int, sites: int = 0, standby: bool = False) -> float:
    """Seconds spent answering `requests` requests (half checkouts, half checkins), of `built`
    prepared (preparing them is not measured, but callgrind counts it: keep it the same)."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "licenses.toml").write_text('[[license]]\ntype = "PBX-Port13"\ncount = 1000000\n')
        policy = None
        if sites:
            policy = workdir / "sites.toml"
            policy.write_text(site_policy(sites))
        logs.setup("kv", "error")
        master = Master(Config(listen="127.0.0.1:0", data_dir=workdir / "data", licenses=(workdir / "licenses.toml",),
                               lease_ttl_ms=60_000, heartbeat_ms=5_000, policy=policy))
        await master.start(listen=False)
        conn = master.new_connection()
        conn.connection_made(DroppingTransport())
        conn.data_received(encode({"op": "hello", "id": 0, "node": "pbx", "role": "pbx", "firmware": 13,
                                   "platform": "gateway", "mac": "00:90:33:00:00:01", "licensing": "central"}))
        checkouts, checkins = batches(built, master.pool.book.id_base)
        replica, replica_end = None, None
        if standby:
            replica_end = StandbyTransport(master)
            replica = master.new_connection()
            replica.connection_made(replica_end)
            replica.data_received(encode({"op": "hello", "id": 0, "node": "standby-replica", "role": "observer"}))
            replica.data_received(encode({"op": "replicate", "id": 1, "stream": STREAM_VERSION}))
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)  # as `licmaster serve` runs
        start = time.perf_counter()
        if replica is None or replica_end is None:
            for k in range(requests // (2 * BATCH)):
                conn.data_received(checkouts[k])
                conn.data_received(checkins[k])
        else:
            # The push the feed schedules for the loop's turn is run here, as the loop would run it
            # after the read: the master's work, without a loop turn of this harness's own.
            scheduled: list[Callable[[], None]] = []
            master.feed.schedule = scheduled.append
            acks = [encode({"op": "ack", "id": 2 + seq, "seq": seq}) for seq in range(2 * (built // (2 * BATCH)) + 2)]
            for k in range(requests // (2 * BATCH)):
                for read in (checkouts[k], checkins[k]):
                    conn.data_received(read)
                    for push in scheduled:
                        push()
                    scheduled.clear()
                    replica.data_received(acks[replica_end.owed or 0])  # the ack of the push it received
        elapsed = time.perf_counter() - start
        if master.pool.leases:
            raise RuntimeError("leases left after the checkins: the harness is out of step with the master")
        await master.stop()  # flushes the journal: its cost is counted too
        return elapsed


def instructions(requests: int, sites: int, standby: bool) -> int | None:
    """Instructions per request under callgrind, or None without valgrind."""
    if shutil.which("valgrind") is None:
        return None
    counts = []
    for n in (0, requests):
        out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                              __file__, "--inner", str(n), "--requests", str(requests), "--sites", str(sites),
                              *(["--standby"] if standby else [])],
                             capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": "0"}, check=True)
        found = re.search(r"Collected : (\d+)", out.stderr)
        if found is None:
            raise RuntimeError("callgrind printed no count:\n" + out.stderr[-2000:])
        counts.append(int(found.group(1)))
    return round((counts[1] - counts[0]) / requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_480, help="requests measured (a multiple of 128)")
    parser.add_argument("--sites", type=int, default=0, help="under a site policy of this many sites (default: none)")
    parser.add_argument("--standby", action="store_true", help="a standby master attached (synchronous replication)")
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)  # one measured run, for callgrind
    args = parser.parse_args()
    requests = max(2 * BATCH, args.requests // (2 * BATCH) * 2 * BATCH)
    if args.inner is not None:
        asyncio.run(run(args.inner, requests, args.sites, args.standby))
        return
    walls = [asyncio.run(run(requests, requests, args.sites, args.standby)) / requests * 1e6 for _ in range(3)]
    out: dict[str, Any] = {"bench": "hotpath", "requests": requests, "batch": BATCH, "sites": args.sites,
                           "standby": args.standby, "us_per_request_wall_median": round(sorted(walls)[1], 3),
                           "instructions_per_request": instructions(requests, args.sites, args.standby)}
    if out["instructions_per_request"] is None:
        out["note"] = "valgrind not found: instructions not counted (apt-get install valgrind)"
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
