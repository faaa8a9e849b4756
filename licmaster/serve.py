"""`licmaster serve`: run the master until SIGTERM/SIGINT; SIGHUP reloads the license files."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import signal
import socket
import sys
from pathlib import Path

from licmaster.console.api import Console
from licmaster.daemon import logs
from licmaster.daemon.config import Config, ConfigError, load_config
from licmaster.daemon.master import Master, StartError


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="run the license master")
    serve.add_argument("--config", type=Path, help="TOML config file (every key has a default; default $LICMASTER_CONFIG)")
    serve.add_argument("--listen", help="host:port for PBXs (overrides the config)")
    serve.add_argument("--http", help="host:port for the admin API (overrides the config)")
    serve.add_argument("--data-dir", dest="data_dir", help="data directory (overrides the config)")
    serve.add_argument("--licenses", nargs="+", metavar="FILE", help="license files (override the config)")
    serve.add_argument("--name", default=socket.gethostname(), help="this master's name, told to PBXs (default: host name)")
    serve.add_argument("--ready-file", dest="ready_file", type=Path,
                       help="once serving, write JSON {listen, pid, epoch, role} here (for supervisors and tests)")
    serve.set_defaults(run=run)


NO_LICENSES_HINT = "pass --licenses FILE or set licenses = [...] in the config; serving an empty pool"
NO_LICENSES = ("licmaster: WARNING: no license files: the pool is EMPTY and every checkout is refused "
               "(start it with --licenses FILE, or with licenses = [...] in its config)")


def run(args: argparse.Namespace) -> int:
    if args.config is None and os.environ.get("LICMASTER_CONFIG"):
        args.config = Path(os.environ["LICMASTER_CONFIG"])  # as every other subcommand finds it
    try:
        config = load_config(args.config, listen=args.listen, http=args.http, data_dir=args.data_dir,
                             licenses=[str(Path(p).resolve()) for p in args.licenses] if args.licenses else None)
    except ConfigError as exc:
        print(f"licmaster: config: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_format, config.log_level)
    _raise_fd_limit(config.max_connections)
    if not config.licenses:
        logs.event("no_license_files", logging.WARNING, hint=NO_LICENSES_HINT)
    try:
        return asyncio.run(_serve(config, args.name, args.ready_file, args.config))
    except StartError as exc:
        print(f"licmaster: {exc}", file=sys.stderr)
        return 1


def _raise_fd_limit(connections: int) -> None:
    """Each connection is a file descriptor: lift the soft limit towards max_connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 64  # + the data files, the listeners, the journal's
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            logs.event("fd_limit", max_connections=connections, file_descriptors=new,
                       hint="raise the hard limit (ulimit -Hn) to serve max_connections")


def notify_systemd(*states: str) -> None:
    """Tell systemd (a `Type=notify` unit: examples/licmaster.service) that the master serves,
    or stops: a datagram to $NOTIFY_SOCKET, as sd_notify(3) sends it. Nothing without systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # the abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(states).encode(), address)
    except OSError as exc:
        logs.event("systemd_notify_failed", logging.WARNING, socket=address, why=str(exc))


def write_ready(path: Path, master: Master, console: Console | None) -> None:
    """The machine-readable "serving" signal: written whole (rename), so a reader never sees half."""
    host, port = master.address or ("?", 0)
    http = console.address if console else None
    doc = {"listen": f"{host}:{port}", "pid": os.getpid(), "epoch": master.epoch, "role": master.role.state.value,
           "http": f"{http[0]}:{http[1]}" if http else None}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


async def _serve(config: Config, name: str, ready_file: Path | None, config_file: Path | None = None) -> int:
    master = Master(config, name=name)
    master.config_file = config_file  # a reload re-reads the console's tokens from it
    await master.start()
    console = Console(master) if config.http else None
    if console is not None:
        try:
            await console.start()
        except StartError:
            await master.stop("the console could not start")
            raise
    # Every request allocates a few short-lived dicts; the default gen-0 threshold (700) runs
    # the collector every ~70 requests. Leases hold no cycles, so collect far less often, and
    # keep what start-up built out of the collector's way.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    host, port = master.address or ("?", 0)
    console_at = f", console at {master.dispatch.console_url}/" if console is not None and master.dispatch.console_url else ""
    print(f"licmaster: serving PBXs on {host}:{port}{console_at}, data in {Path(config.data_dir).resolve()}",
          file=sys.stderr, flush=True)
    if not config.licenses:  # said again last, where whoever started it looks
        print(NO_LICENSES, file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reason = {"why": "stopping"}

    def on_stop(sig: signal.Signals) -> None:
        reason["why"] = f"signal {sig.name}"
        stop.set()

    # The handlers first, then "ready": a supervisor that signals the moment it is told the master
    # serves must find them in place (a SIGTERM before them would kill it without `shutdown`).
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig)
    loop.add_signal_handler(signal.SIGHUP, master.reload, "SIGHUP")
    if ready_file is not None:
        write_ready(ready_file, master, console)
    notify_systemd("READY=1", f"STATUS=serving PBXs on {host}:{port} ({master.role.state.value})"
                   + ("; NO license files: an empty pool" if not config.licenses else ""))
    await stop.wait()
    notify_systemd("STOPPING=1")
    if console is not None:
        await console.stop()
    await master.stop(reason["why"])
    return 0
