"""The `licmaster` command: `check` license files, `serve` the master, read its `journal`, print
this machine's `id`, and the vendor's `license keygen` / `license sign`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from licmaster import __version__, console_cli, serve
from licmaster.console import report as usage_report
from licmaster.console import whatif
from licmaster.daemon import reload_requests
from licmaster.daemon.config import Config, ConfigError, load_config
from licmaster.daemon.storage.datadir import holder_pid
from licmaster.daemon.storage.journal import iter_rows, read_journal
from licmaster.licenses.files import installed_by_family, load_files
from licmaster.licenses.identity import installation_id
from licmaster.licenses.policy import load_policy
from licmaster.licenses.signing import TABLE as SIGNATURE_TABLE
from licmaster.licenses.signing import SigningError, Verifier, keygen, load_private_key, signature_table
from licmaster.licenses.verdict import render_text, verdict
from licmaster.model.catalog import CURRENT_VERSION
from licmaster.model.rules import normalize_mac
from licmaster.model.sites import Policy, PolicyError, reach
from licmaster.model.types import InstalledLicense
from licmaster.terminal import run_quietly_into_a_pipe
from licmaster.wire import events


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="licmaster", description="License master for PBX networks (innovaphone V13 model).")
    parser.add_argument("--version", action="version", version=f"licmaster {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="verdict on license files before buying or installing them")
    check.add_argument("files", nargs="+", metavar="LICENSE_FILE")
    check.add_argument("--firmware", type=int, default=CURRENT_VERSION, help="PBX software version to check for (default %(default)s)")
    check.add_argument("--json", action="store_true", help="print one JSON object: families, errors, warnings")
    check.add_argument("--today", type=dt.date.fromisoformat, default=None, help="date for SSA terms (YYYY-MM-DD; default today)")
    check.add_argument("--warn-days", type=int, default=30, metavar="N",
                       help="warn of an SSA end within N days that will lower a version (default %(default)s)")
    check.add_argument("--platform", choices=("gateway", "ipva"), default="gateway", help="the PBX's platform (default %(default)s)")
    check.add_argument("--mac", type=_mac, default=None, help="the PBX's MAC: which device-bound licenses are its own")
    check.add_argument("--model", default=None, help="the gateway model, e.g. IP811")
    check.add_argument("--vendor-key", dest="vendor_keys", action="append", default=[], metavar="PUB",
                       help="verify the files' signatures with this vendor public key (repeatable)")
    check.add_argument("--installation", default=None,
                       help="with --vendor-key: the installation the files must be bound to (default: this machine's id)")
    check.add_argument("--policy", type=Path, default=None, metavar="SITES_TOML",
                       help="also check a site policy against these licenses: per site, what it is guaranteed and can reach")
    check.set_defaults(run=_check)

    ident = sub.add_parser("id", help="print this machine's installation id (what signed license files are bound to)")
    ident.add_argument("--config", type=Path, help="a master's config: its hardware_id, if set, is the id (default $LICMASTER_CONFIG)")
    ident.set_defaults(run=_id)

    lic = sub.add_parser("license", help="vendor tools: make a key pair, sign license files")
    lic_sub = lic.add_subparsers(dest="license_command", required=True)
    keygen = lic_sub.add_parser("keygen", help="write a vendor key pair NAME.key (private) and NAME.pub")
    keygen.add_argument("--out", required=True, metavar="NAME")
    keygen.set_defaults(run=_keygen)
    sign = lic_sub.add_parser("sign", help="sign a license file for one or more installations")
    sign.add_argument("file", type=Path, metavar="FILE")
    sign.add_argument("--key", required=True, type=Path, help="the vendor's private key (NAME.key)")
    sign.add_argument("--installation", action="append", required=True, metavar="ID",
                      help="an installation id it is bound to (licmaster id on the master; repeat for its standby)")
    sign.add_argument("--out", required=True, type=Path, help="the signed license file to write")
    sign.set_defaults(run=_sign)

    serve.add_parser(sub)
    console_cli.add_parsers(sub)

    reload = sub.add_parser("reload", help="re-read a running master's license files; print what changed or why it refused")
    reload.add_argument("--data-dir", type=Path,
                        help="the master's data directory (default: the config's data_dir, else ./licmaster-data): a reload "
                        "request in it, SIGHUP to the master holding it, then that reload's outcome")
    console_cli.add_config_argument(reload)
    reload.add_argument("--url", help="or through its console (with a manage token): http(s)://host:port or host:port "
                        f"(default ${console_cli.ENV_URL}, else the config's http); a token or $LICMASTER_URL also goes this way")
    console_cli.add_token_arguments(reload, "a manage token of the console (admin_tokens)")
    reload.add_argument("--cafile", help="CA certificate to verify an https console (default: the config's tls_ca or tls_cert)")
    reload.add_argument("--force", action="store_true",
                        help="take a license set that would take standby cover away from a standby PBX connected now")
    reload.add_argument("--json", action="store_true", help="print the outcome as JSON")
    reload.set_defaults(run=_reload)

    journal = sub.add_parser("journal", help="read the journal: grants, check-ins, denials, expiries, takeovers")
    journal.add_argument("--data-dir", type=Path, help="the master's data directory (default: the config's, else ./licmaster-data)")
    console_cli.add_config_argument(journal)
    journal.add_argument("--event", help="only this event (grant, checkin, deny, expire, bye, takeover, ...)")
    journal.add_argument("--node", help="only this node")
    journal.add_argument("--since", help="only since then: 7d, 12h, 30m, 90s, or epoch seconds")
    journal.add_argument("--last", type=int, default=0, help="only the last N events")
    journal.add_argument("--json", action="store_true", help="one JSON object per line")
    journal.set_defaults(run=_journal)

    rep = sub.add_parser("report", help="usage report from the journal: peaks per hour, day and node, who was refused, top holders")
    rep.add_argument("--data-dir", type=Path, help="the master's data directory (default: the config's, else ./licmaster-data)")
    console_cli.add_config_argument(rep)
    rep.add_argument("--since", default="7d", help="how far back: 7d, 12h, 30m, or epoch seconds (default %(default)s)")
    fmt = rep.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--html", action="store_true", help="one self-contained page with charts")
    fmt.add_argument("--csv", action="store_true", help=f"for a spreadsheet, {usage_report.CSV_HELP}")
    rep.add_argument("--out", type=Path, help="write here instead of printing")
    rep.add_argument("--licenses", nargs="+", metavar="FILE", help="the installed license files: each peak with the headroom left")
    rep.add_argument("--policy", type=Path, metavar="SITES_TOML", help="the site policy: peaks and refusals per site too")
    rep.add_argument("--whatif", nargs="+", metavar="FILE", help="candidate license files: a What if section, the period's "
                     "demand replayed against them (licmaster whatif)")
    rep.set_defaults(run=_report)

    wi = sub.add_parser("whatif", help="replay the recorded demand against other licenses, a policy, failures: "
                        "who would have been refused, and the count that serves everyone")
    wi.add_argument("--data-dir", type=Path, help="the master's data directory (default: the config's, else ./licmaster-data)")
    console_cli.add_config_argument(wi)
    wi.add_argument("--since", default="7d", help="from: 7d, 12h, 30m, or epoch seconds (default %(default)s)")
    wi.add_argument("--until", help="to: epoch seconds (default: now)")
    wi.add_argument("--licenses", nargs="+", metavar="FILE", help="the candidate license files (default: the config's)")
    wi.add_argument("--policy", type=Path, metavar="SITES_TOML", help="the candidate site policy (default: the config's)")
    wi.add_argument("--firmware", type=int, help="replay as if every PBX ran this major version")
    wi.add_argument("--lose", action="append", default=[], metavar="NODE|@SITE",
                    help="these PBXs die (their standby PBXs take over where R-STBY-2 allows); with --at, repeatable")
    wi.add_argument("--at", action="append", default=[], metavar="TIME|peak", help="when each --lose happens: epoch seconds or 'peak'")
    wi.add_argument("--json", action="store_true")
    wi.set_defaults(run=_whatif)

    parser.set_defaults(read_config=_from_config)  # where a command finds its master (console_cli.FromConfig)
    args = parser.parse_args(argv)
    return run_quietly_into_a_pipe(lambda: _run(args))


def _master_config(args: argparse.Namespace) -> Config | None:
    """The master's config from --config or $LICMASTER_CONFIG, read as `serve` reads it (None
    without either); BadInput when it cannot be read or has problems (all of them, one line)."""
    source = console_cli.config_source(args)
    if source is None:
        return None
    path, flag = source
    try:
        return load_config(path)
    except ConfigError as exc:
        problems = [line.removeprefix(f"{path}: ") for line in str(exc).splitlines()]
        raise console_cli.BadInput(f"{flag} {path}: {'; '.join(problems)}") from None


def _from_config(args: argparse.Namespace) -> console_cli.FromConfig | None:
    """What the config says about finding the master: its console as a client asks it (https with
    tls_cert; a console on every address is asked on loopback), tokens, data directory."""
    config = _master_config(args)
    source = console_cli.config_source(args)
    if config is None or source is None:
        return None
    url = None
    if config.http:
        host, port = config.http_address
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        url = f"{'https' if config.tls_cert else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"
    manage = next((t.token for t in config.admin_tokens if t.role == "manage"), None)
    view = next((t.token for t in config.admin_tokens if t.role == "view"), manage)
    return console_cli.FromConfig(where=f"{source[1]} {source[0]}", url=url,
                                  cafile=(config.tls_ca or config.tls_cert) if config.tls_cert else None,
                                  view_token=view, manage_token=manage, data_dir=Path(config.data_dir))


def _run(args: argparse.Namespace) -> int:
    """The subcommand; what it was given and cannot use (a config, a token file, a console
    address) is one line naming it, exit status 2."""
    try:
        return int(args.run(args))
    except console_cli.BadInput as exc:
        print(f"licmaster: {exc}", file=sys.stderr)
        return 2



def _check(args: argparse.Namespace) -> int:
    verifier = None
    if args.vendor_keys:
        try:
            verifier = Verifier.from_files(args.vendor_keys, args.installation or installation_id())
        except SigningError as exc:
            print(f"licmaster: {exc}", file=sys.stderr)
            return 2
    loaded = load_files(args.files, verifier=verifier)
    v = verdict(loaded, args.firmware, args.today, platform=args.platform, mac=args.mac, model=args.model,
                warn_days=args.warn_days)
    sites = _check_policy(args.policy, loaded.licenses) if args.policy is not None else None
    policy_ok = sites is None or sites["ok"]
    if args.json:
        doc = v.to_dict() | ({"sites": sites} if sites is not None else {})
        doc["ok"] = doc["ok"] and policy_ok  # the whole verdict: a refused policy is not OK
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    elif sites is None:
        print(render_text(v))
    else:
        # The verdict's last line sums up: after the sites, and counting the policy's errors too.
        body, _, summary = render_text(v).rpartition("\n")
        if not policy_ok:
            policy_errors = f"the site policy: {len(sites['problems'])} error(s)"
            summary = f"{len(v.errors)} error(s), {len(v.warnings)} warning(s); {policy_errors}"
        print(body + "\n" + _render_sites(sites) + "\n\n" + summary)
    return 0 if v.ok and policy_ok else 1


def _check_policy(path: Path, licenses: list[InstalledLicense]) -> dict[str, Any]:
    """The policy's problems, or per site and family what it is guaranteed and can reach."""
    installed = installed_by_family(licenses)
    try:
        policy = load_policy(path, installed)
    except PolicyError as exc:
        return {"ok": False, "file": str(path), "problems": exc.problems, "sites": [], "notes": []}
    notes = []
    for family in policy.families:
        versions = sorted({lic.version for lic in licenses if lic.family == family and lic.version is not None})
        if len(versions) > 1:
            notes.append(f"{family} is installed in versions {', '.join(f'V{v}' for v in versions)}: a reservation counts "
                         "units of any version, so it holds for a site whose PBXs can use each of them (R-VER-2)")
    for access in policy.access.values():
        who = f"only {', '.join(access.include)}" if access.include is not None else "every node"
        notes.append(f"{access.family}: {who} may draw it" + (f", except {', '.join(access.exclude)}" if access.exclude else ""))
    return {"ok": True, "file": str(path), "problems": [], "sites": reach(policy, installed), "notes": notes,
            "members": {site.name: list(site.nodes) for site in policy.sites}}


def _render_sites(sites: dict[str, Any]) -> str:
    lines = [f"Sites ({sites['file']}): " + ("OK" if sites["ok"] else "REFUSED")]
    lines += [f"  error: {p}" for p in sites["problems"]]
    for row in sites["sites"]:
        limits = ", ".join(x for x in (f"reserve {row['reserve']}" if row["reserve"] else "",
                                       f"max {row['max']}" if row["max"] is not None else "") if x) or "no limit of its own"
        lines.append(f"  {row['site']:<16} {row['family']:<18} guaranteed {row['guaranteed']:>5}, can reach {row['reach']:>5}"
                     f"   ({limits}; nodes {', '.join(sites['members'][row['site']])})")
    lines += [f"  note: {n}" for n in sites["notes"]]
    return "\n".join(lines)


def _id(args: argparse.Namespace) -> int:
    config = _master_config(args)
    print(installation_id(config.hardware_id if config is not None else ""))
    return 0


def _keygen(args: argparse.Namespace) -> int:
    try:
        key, pub = keygen(args.out)
    except SigningError as exc:
        print(f"licmaster: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {key} (private: keep it with the vendor) and {pub} (public: vendor_keys on the masters)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    """Sign only a file that loads without error, and that is not signed already."""
    loaded = load_files([args.file])
    if not loaded.ok:
        print("licmaster: not signed, the file has errors:\n" + "\n".join(f"  {p}" for p in loaded.errors), file=sys.stderr)
        return 1
    text = args.file.read_text(encoding="utf-8")
    doc = tomllib.loads(text)
    if SIGNATURE_TABLE in doc:
        print(f"licmaster: {args.file} is signed already: sign the unsigned file", file=sys.stderr)
        return 1
    try:
        table = signature_table(doc.get("license", []), load_private_key(args.key), args.installation)
    except SigningError as exc:
        print(f"licmaster: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(text.rstrip("\n") + "\n" + table, encoding="utf-8")
    print(f"wrote {args.out}: {sum(lic.count for lic in loaded.licenses)} licenses, bound to {', '.join(args.installation)}")
    return 0


def _site_name(policy: Policy) -> Callable[[str], str | None]:
    def site_of(node: str) -> str | None:
        site = policy.site_of(node)
        return site.name if site is not None else None
    return site_of


def _whatif(args: argparse.Namespace) -> int:
    """`licmaster whatif`: the journal's demand replayed in the master's own pool (console/whatif.py)."""
    path = console_cli.data_dir(args) / "journal.sqlite3"
    if not path.is_file():
        print(f"licmaster: no journal at {path}", file=sys.stderr)
        return 2
    now = time.time()
    try:
        since = usage_report.parse_age(args.since, now)
    except ValueError:
        print(f"licmaster: --since {args.since!r}: expected 7d, 12h, 30m, 90s or epoch seconds", file=sys.stderr)
        return 2
    try:
        until = float(args.until) if args.until else now
    except ValueError:
        print(f"licmaster: --until {args.until!r}: expected epoch seconds", file=sys.stderr)
        return 2
    if len(args.at) != len(args.lose):
        print(f"licmaster: {len(args.lose)} --lose and {len(args.at)} --at: each --lose needs its --at", file=sys.stderr)
        return 2
    if args.firmware is not None and not 1 <= args.firmware <= 99:
        print(f"licmaster: --firmware {args.firmware}: a major version from 1 to 99", file=sys.stderr)
        return 2
    config = _master_config(args)
    files = args.licenses or ([str(p) for p in config.licenses] if config is not None else [])
    if not files:
        print("licmaster: --licenses FILE...: the candidate license files (or --config for the installed ones)", file=sys.stderr)
        return 2
    loaded = load_files(files)
    if not loaded.ok:
        print("licmaster: the candidate license files have errors:\n" + "\n".join(f"  {p}" for p in loaded.errors), file=sys.stderr)
        return 2
    policy_file = args.policy or (config.policy if config is not None else None)
    policy = None
    if policy_file is not None:
        try:
            policy = load_policy(policy_file, installed_by_family(loaded.licenses))
        except PolicyError as exc:
            print("licmaster: the site policy has errors:\n" + "\n".join(f"  {p}" for p in exc.problems), file=sys.stderr)
            return 2
    try:
        doc = whatif.answer(lambda: iter_rows(path), loaded.licenses, policy, since=since, until=until, firmware=args.firmware,
                            lose=list(zip(args.lose, args.at, strict=True)))
    except ValueError as exc:
        print(f"licmaster: --{exc}", file=sys.stderr)
        return 2
    doc.update(licenses=files, policy=str(policy_file) if policy_file else None)
    print(json.dumps(doc, indent=2) if args.json else whatif.render_text(doc))
    return 0


def _report(args: argparse.Namespace) -> int:
    path = console_cli.data_dir(args) / "journal.sqlite3"
    if not path.is_file():
        print(f"licmaster: no journal at {path}", file=sys.stderr)
        return 2
    now = dt.datetime.now(dt.UTC).timestamp()
    try:
        since = usage_report.parse_age(args.since, now)
    except ValueError:
        print(f"licmaster: --since {args.since!r}: expected 7d, 12h, 30m, 90s or epoch seconds", file=sys.stderr)
        return 2
    installed = installed_by_family(load_files(args.licenses).licenses) if args.licenses else None
    site_of = None
    if args.policy is not None:
        try:
            policy = load_policy(args.policy)
        except PolicyError as exc:
            print("licmaster: the site policy has errors:\n" + "\n".join(f"  {p}" for p in exc.problems), file=sys.stderr)
            return 2
        site_of = _site_name(policy)
    doc = usage_report.from_journal(path, since, now, installed, site_of)
    if args.whatif:
        candidates = load_files(args.whatif)
        if not candidates.ok:
            print("licmaster: the candidate license files have errors:\n" + "\n".join(f"  {p}" for p in candidates.errors),
                  file=sys.stderr)
            return 2
        doc["whatif"] = whatif.answer(lambda: iter_rows(path), candidates.licenses,
                                      load_policy(args.policy) if args.policy is not None else None, since=since, until=now)
    text = (json.dumps(doc, indent=2) if args.json else usage_report.render_html(doc) if args.html
            else usage_report.render_csv(doc) if args.csv else usage_report.render_text(doc))
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


def _reload(args: argparse.Namespace) -> int:
    """Through the console when given --url/--token, else SIGHUP to the master of --data-dir; then
    what came of this reload: what changed, `check`'s warnings on the new set, or why it was refused."""
    outcome: dict[str, Any]
    if args.url or args.token or args.token_file or (args.data_dir is None and console_cli.console_wanted(args)):
        console_cli.resolve_console(args, manage=True)
        outcome = console_cli.post_reload(args)
    else:
        signalled = _reload_by_signal(console_cli.data_dir(args), args.force)
        if isinstance(signalled, str):
            print(f"licmaster: {signalled}", file=sys.stderr)
            return 2
        outcome = signalled
    if args.json:
        print(json.dumps(outcome, indent=2))
    elif outcome.get("ok"):
        changed = outcome.get("changed") or {}
        print("reloaded: " + (", ".join(f"{f} {a}->{b}" for f, (a, b) in changed.items()) or "nothing changed"))
        for problem in outcome.get("problems", []):
            print(f"  problem: {problem.get('message', problem) if isinstance(problem, dict) else problem}")
        for warning in outcome.get("warnings", []):
            print(f"  warning: {warning['where'] + ': ' if warning.get('where') else ''}{warning['message']} [{warning.get('rule') or '-'}]")
        if outcome.get("forced"):
            print("  FORCED: a standby PBX connected now lost its standby cover: its takeover would be refused")
    else:
        print("reload REFUSED, the license set in force stays:", file=sys.stderr)
        for problem in outcome.get("problems", []):
            print(f"  {problem}", file=sys.stderr)
        if outcome.get("forceable"):
            print("licmaster reload --force takes it anyway", file=sys.stderr)
    tokens = outcome.get("tokens") or {"ok": True, "changed": []}  # None: a master started without a config file
    if not args.json and tokens["changed"]:
        print("tokens: " + "; ".join(tokens["changed"]))
    if not args.json and not tokens["ok"]:
        print("tokens NOT reloaded, the ones in force stay:", file=sys.stderr)
        for problem in tokens["problems"]:
            print(f"  {problem}", file=sys.stderr)
    return 0 if outcome.get("ok") and tokens["ok"] else 1


def _reload_by_signal(data_dir: Path, force: bool) -> dict[str, Any] | str:
    """A reload request in `data_dir`, SIGHUP to the master holding it, then the outcome of that
    request's reload as the master wrote it (daemon/reload_requests.py): the outcome, or why not."""
    pid = holder_pid(data_dir)
    if pid is None:
        return f"no master is running on {data_dir} (its licmaster.pid is not locked)"
    try:
        request_id = reload_requests.ask(data_dir, force=force)
    except OSError as exc:
        return f"cannot leave a reload request in {data_dir}: {exc.strerror or exc} (run as the master's user, or use --url/--token)"
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        reload_requests.withdraw(data_dir, request_id)
        return f"cannot signal the master (pid {pid}): {exc.strerror or exc}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        outcome = reload_requests.collect(data_dir, request_id)
        if outcome is not None:
            return outcome
        time.sleep(0.05)
    reload_requests.withdraw(data_dir, request_id)
    return f"the master (pid {pid}) took the signal but did not answer the reload request within 10 s"


def _mac(text: str) -> str:
    mac = normalize_mac(text)
    if mac is None:
        raise argparse.ArgumentTypeError(f"not a MAC address (xx:xx:xx:xx:xx:xx): {text!r}")
    return mac


def _journal(args: argparse.Namespace) -> int:
    path = console_cli.data_dir(args) / "journal.sqlite3"
    if not path.is_file():
        print(f"licmaster: no journal at {path}", file=sys.stderr)
        return 2
    if args.event is not None and args.event not in events.KINDS:
        print(f"licmaster: --event {args.event!r} is no journal event; they are: {', '.join(sorted(events.KINDS))}", file=sys.stderr)
        return 2
    since = None
    if args.since is not None:
        try:
            since = usage_report.parse_age(args.since, dt.datetime.now(dt.UTC).timestamp())
        except ValueError:
            print(f"licmaster: --since {args.since!r}: expected 7d, 12h, 30m, 90s or epoch seconds", file=sys.stderr)
            return 2
    rows = [r for r in read_journal(path, event=args.event) if (args.node is None or r["node"] == args.node)
            and (since is None or r["ts"] >= since)]
    if args.last:
        rows = rows[-args.last:]
    for row in rows:
        if args.json:
            print(json.dumps(row))
            continue
        when = dt.datetime.fromtimestamp(row["ts"], dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        shown = {**row, "detail": events.detail_text(row["event"], row["detail"])}  # `28 leases`, not a bare 28
        fields = " ".join(f"{k}={shown[k]}" for k in ("node", "resource", "holder", "lease", "detail", "rule") if shown[k] is not None)
        note = f" — {row['note']}" if row.get("note") else ""
        print(f"{when} {row['event']:<9} {fields}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
