"""`licmaster status` and `licmaster release`: the console from a terminal, like rlmstat."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:4461"
DEFAULT_DATA_DIR = Path("licmaster-data")
# Where the CLI finds its master, each setting from its flag, else its variable, else the config
# (--config, else $LICMASTER_CONFIG, read as `serve` reads it), else the default.
ENV_CONFIG, ENV_URL, ENV_TOKEN, ENV_TOKEN_FILE = "LICMASTER_CONFIG", "LICMASTER_URL", "LICMASTER_TOKEN", "LICMASTER_TOKEN_FILE"


class BadInput(Exception):
    """What the command was given cannot be used (a config, a token file, a console address):
    one line naming it, exit status 2."""


@dataclass(frozen=True)
class FromConfig:
    """What a master's config file says about finding it. This module reads no config (it talks
    HTTP and imports nothing of the master): the command reads it (cli.py) and sets
    `args.read_config`, called only when a setting is not given otherwise."""

    where: str  # "--config FILE" or "LICMASTER_CONFIG FILE"
    url: str | None  # the console as a client asks it; None: `http = ""`, no console
    cafile: str | None  # verifies an https console: tls_ca, else tls_cert
    view_token: str | None  # the first view token of admin_tokens, else the first manage one
    manage_token: str | None  # the first manage token
    data_dir: Path  # relative to the config file, as `serve` takes it


ConfigReader = Callable[[argparse.Namespace], FromConfig | None]


def add_config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="the master's config file, read as `serve --config` reads it: its data_dir, "
                   f"console address and tokens (default ${ENV_CONFIG})")


def add_token_arguments(p: argparse.ArgumentParser, what: str) -> None:
    which = p.add_mutually_exclusive_group()
    which.add_argument("--token", help=f"{what} (shown in ps and shell history: prefer --token-file or ${ENV_TOKEN})")
    which.add_argument("--token-file", type=Path, metavar="FILE",
                       help=f"read the token from this file, alone in it (default: ${ENV_TOKEN} or ${ENV_TOKEN_FILE}, "
                       "else the config's admin_tokens)")


def config_source(args: argparse.Namespace) -> tuple[Path, str] | None:
    """The config file to read, and what named it: --config, else $LICMASTER_CONFIG."""
    if getattr(args, "config", None) is not None:
        return args.config, "--config"
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG]), ENV_CONFIG
    return None


def _from_config(args: argparse.Namespace) -> FromConfig | None:
    reader: ConfigReader | None = getattr(args, "read_config", None)
    return reader(args) if reader is not None else None


def data_dir(args: argparse.Namespace) -> Path:
    """--data-dir, else the config's data_dir (relative to the config file, as `serve` takes it),
    else ./licmaster-data."""
    if args.data_dir is not None:
        return Path(args.data_dir)
    found = _from_config(args)
    return found.data_dir if found is not None else DEFAULT_DATA_DIR


def console_wanted(args: argparse.Namespace) -> bool:
    """Whether a console address or token was given (a flag or a variable): `reload` then asks the
    console rather than signalling the master of a data directory."""
    return bool(args.url or args.token or args.token_file or os.environ.get(ENV_URL) or os.environ.get(ENV_TOKEN)
                or os.environ.get(ENV_TOKEN_FILE))


def resolve_console(args: argparse.Namespace, *, manage: bool) -> None:
    """Fill in args.url, args.token and args.cafile: --url, else $LICMASTER_URL, else the config's
    `http` (https when it serves TLS, verified with its tls_ca or tls_cert), else the default; the
    token from --token, --token-file, $LICMASTER_TOKEN or $LICMASTER_TOKEN_FILE, else the config's
    first manage token (for a change) or view token (for reading). BadInput when one is unusable."""
    if args.url:
        url, args.url_from = args.url, "--url"
    elif os.environ.get(ENV_URL):
        url, args.url_from = os.environ[ENV_URL], ENV_URL
    elif (found := _from_config(args)) is not None:
        if found.url is None:
            raise BadInput(f"{found.where}: http = \"\", the master serves no console to ask")
        url, args.url_from = found.url, f"`http` in {found.where.partition(' ')[2]}"
        if args.cafile is None:
            args.cafile = found.cafile
    else:
        url, args.url_from = DEFAULT_URL, f"the default; say where with --url, ${ENV_URL} or --config"
    args.url = checked_url(url, args.url_from)
    args.token = _token(args, manage=manage)


def checked_url(text: str, source: str) -> str:
    """The console's base URL, or BadInput naming where it came from."""
    base = console_url(text)
    try:
        parts = urllib.parse.urlsplit(base)
        parts.port  # noqa: B018 (raises ValueError when out of range)
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
            or not base.isprintable() or any(c.isspace() for c in base)):
        raise BadInput(f"{source} {text!r} is not a console address (http(s)://host:port or host:port)")
    return base


def _token(args: argparse.Namespace, *, manage: bool) -> str | None:
    if args.token:
        return _one_word(args.token, "--token")
    if args.token_file is not None:
        return read_token_file(args.token_file, "--token-file")
    if os.environ.get(ENV_TOKEN) and os.environ.get(ENV_TOKEN_FILE):
        raise BadInput(f"{ENV_TOKEN} and {ENV_TOKEN_FILE} are both set: unset one")
    if os.environ.get(ENV_TOKEN):
        return _one_word(os.environ[ENV_TOKEN], ENV_TOKEN)
    if os.environ.get(ENV_TOKEN_FILE):
        return read_token_file(Path(os.environ[ENV_TOKEN_FILE]), ENV_TOKEN_FILE)
    found = _from_config(args)
    if found is None:
        return None
    return found.manage_token if manage else found.view_token


def _one_word(token: str, source: str) -> str:
    token = token.strip()
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise BadInput(f"{source}: a token is one word, without spaces or line breaks")
    return token


def read_token_file(path: Path, source: str) -> str:
    """The token alone in a file (a trailing newline is fine), or BadInput naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{source} {path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{source} {path}: not a text file") from None
    if not text.strip():
        raise BadInput(f"{source} {path}: empty, no token in it")
    if any(c.isspace() for c in text.strip()):
        raise BadInput(f"{source} {path}: more than the token in it (a token file holds the token alone)")
    return text.strip()


def _context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.cafile:
        return None
    try:
        return ssl.create_default_context(cafile=args.cafile)
    except OSError as exc:  # ssl.SSLError is one
        raise BadInput(f"CA file {args.cafile} (--cafile, or the config's tls_ca/tls_cert): cannot use it: "
                       f"{getattr(exc, 'strerror', None) or exc}") from None


def _unreachable(args: argparse.Namespace, exc: BaseException) -> SystemExit:
    where = getattr(args, "url_from", "")
    return SystemExit(f"licmaster: cannot reach the console at {console_url(args.url)}{f' ({where})' if where else ''}: "
                      f"{getattr(exc, 'reason', exc)}")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, help_text in (("status", "pools and nodes of a running master, as tables; who holds what (--node, --users)"),
                            ("release", "force-release a stuck PBX's floating licenses, or one of them (needs a manage token)"),
                            ("unassign", "take a user license back from a user (needs a manage token)")):
        p = sub.add_parser(name, help=help_text)
        if name == "status":
            p.add_argument("--node", help="this node's floating leases: resource, holder, lease, since when")
            p.add_argument("--users", action="store_true", help="the user licenses: user, family, version, node, since when")
            p.add_argument("--family", help="who holds this family across every node (like lmstat -a), e.g. PBX-Operator")
        if name == "release":
            p.add_argument("node")
            which = p.add_mutually_exclusive_group()
            which.add_argument("--lease", help="only this lease (licmaster status --node NODE lists them)")
            which.add_argument("--holder", help="only this holder's lease(s)")
        if name == "unassign":
            p.add_argument("user")
            p.add_argument("family", help="e.g. App(phone), PBX-UC")
        p.add_argument("--url", help=f"the master's console, http(s)://host:port or host:port (default ${ENV_URL}, "
                       f"else the config's http, else {DEFAULT_URL})")
        add_config_argument(p)
        add_token_arguments(p, "a console token (admin_tokens)" + ("; none needed on loopback for reading" if name == "status"
                                                                     else ": a manage token"))
        p.add_argument("--cafile", help="CA certificate to verify an https console (default: the config's tls_ca or tls_cert)")
        p.add_argument("--json", action="store_true", help="print the API's JSON")
        p.set_defaults(run={"status": _status, "release": _release, "unassign": _unassign}[name])


def console_url(text: str) -> str:
    """The console's base URL: `host:port` is taken as http://host:port."""
    text = text.strip().rstrip("/")
    return text if "://" in text else f"http://{text}"


def _call(args: argparse.Namespace, path: str, method: str = "GET") -> Any:
    base = console_url(args.url)
    try:
        request = urllib.request.Request(base + path, method=method)
    except ValueError:
        raise SystemExit(f"licmaster: --url {args.url!r} is not a console address (http://host:port or host:port)") from None
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    context = _context(args)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
            raise SystemExit(f"licmaster: {exc.code} {body.get('error')}: {body.get('message')}") from None
        except (ValueError, AttributeError):
            raise SystemExit(f"licmaster: {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _unreachable(args, exc) from None
    except (http.client.HTTPException, ValueError):
        # e.g. the PBX port (MessagePack, not HTTP), or another server's page
        raise SystemExit(f"licmaster: {base} does not answer as a licmaster console (the console is the master's "
                         "`http` address, 127.0.0.1:4461 by default; the PBX port does not speak HTTP)") from None


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _status(args: argparse.Namespace) -> int:
    resolve_console(args, manage=False)
    if args.node:
        return _node_status(args)
    if args.family:
        return _family_status(args)
    if args.users:
        return _users_status(args)
    usage, nodes = _call(args, "/api/v1/usage"), _all_nodes(args)
    if args.json:
        print(json.dumps({"usage": usage, "nodes": nodes}, indent=2))
        return 0
    print(f"master {usage['master']}: {usage['role']}, epoch {usage['epoch']}, {usage['grants']} grants since start")
    print()
    print(table(["family", "version", "bound", "installed", "usable", "in use", "peak"],
                [[p["family"], p["version"], p["bound"], p["installed"], p["usable"], p["in_use"], p["peak"]] for p in usage["pools"]]))
    for term in usage.get("terms", []):
        what = f"{term['count']} × {term['family']}" + (f" V{term['version']}" if term["version"] else "")
        when = f"SSA until {term['ssa_until']} ({term['days_left']} days)" if term["ssa_until"] else ""
        print(f"  {what}: " + ", ".join(x for x in (when, "rented (iSC)" if term["rented"] else "") if x))
    if usage.get("sites"):
        print()
        print(table(["site", "family", "in use", "reserve", "max", "over", "refused"],
                    [[r["site"], r["family"], r["in_use"], r["reserve"] or "-", r["max"] if r["max"] is not None else "-",
                      r["over"] or "-", r["refused"]] for r in usage["sites"]]))
    if usage["denials"]:
        print()
        print("denials since start: " + ", ".join(f"{k}: {n}" for k, n in usage["denials"].items()))
    now = time.time()
    absent = usage.get("absent") or {}
    if absent.get("pbxs"):
        print()
        print(f"absent: {absent['pbxs']} PBX(s) silent past the lease TTL hold {absent['leases']} lease(s), "
              f"theirs until their hold ({absent['hold_s']:g} s) runs out")
        print(table(["node", "absent since", "holds", "goes back"],
                    [[a["node"], _when(a["since"]), ", ".join(f"{r} {n}" for r, n in sorted(a["held"].items())),
                      f"{_when(a['back_at'])} (in {_duration(a['back_at'] - now)})"] for a in absent["shown"]]))
        if absent["pbxs"] > len(absent["shown"]):
            print(f"  ... and {absent['pbxs'] - len(absent['shown'])} more (the longest absent are shown)")
    print()
    print(table(["node", "role", "firmware", "platform", "address", "connected", "leases", "last seen"],
                [[n["node"], n["role"], n["firmware"], n["platform"], n["address"], "yes" if n["connected"] else "no",
                  n["leases"], f"{now - n['last_seen']:.1f} s ago"] for n in nodes]) if nodes else "(no sessions)")
    return 0


def _duration(seconds: float) -> str:
    """`71 h 59 min`, `12 min`, `40 s`."""
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _node_status(args: argparse.Namespace) -> int:
    node = urllib.parse.quote(args.node, safe="")
    pages = _pages(args, f"/api/v1/nodes/{node}?limit=10000", "held")
    first, held = pages[0], [h for page in pages for h in page["held"]]
    if args.json:
        print(json.dumps({**first, "held": held}, indent=2))
        return 0
    print(f"{first['node']}: {first['role']}, firmware {first['firmware']}, {first['platform']}, "
          f"{'connected' if first['connected'] else 'not connected'} since {_when(first['connected_since'])}")
    print(table(["resource", "holder", "lease", "took", "since"],
                [[h["resource"], h["holder"], h["lease"], ", ".join(f"{t['count']} {t['family']}" for t in h["took"]) or "-",
                  _when(h["since"])] for h in held]) if held else "(holds no floating license)")
    return 0


def _family_status(args: argparse.Namespace) -> int:
    """Who holds one family, across every node: its floating leases, or the users it is assigned to."""
    family = urllib.parse.quote(args.family, safe="")
    pages = _pages(args, f"/api/v1/families/{family}?limit=10000", "held")
    first = pages[0]
    held, users = [h for page in pages for h in page["held"]], [u for page in pages for u in page["users"]]
    if args.json:
        print(json.dumps({**first, "held": held, "users": users, "next_cursor": None}, indent=2))
        return 0
    print(f"{first['family']}: {first['in_use']} of {first['installed']} installed in use")
    if first["consumption"] == "user":
        print(table(["user", "version", "node", "since"], [[u["user"], u["version"], u["node"], _when(u["since"])] for u in users])
              if users else f"(no user holds {first['family']})")
        return 0
    if not held:
        print(f"(no node holds {first['family']})")
        return 0
    per_node: dict[str, int] = {}
    for h in held:
        per_node[h["node"]] = per_node.get(h["node"], 0) + h["count"]
    print(f"held by {len(per_node)} node(s): " + ", ".join(f"{node} {count}" for node, count in per_node.items()))
    print()
    print(table(["node", "holder", "resource", "lease", "took"],
                [[h["node"], h["holder"], h["resource"], h["lease"],
                  ", ".join(f"{t['count']}" + (f" V{t['version']}" if t["version"] else "") for t in h["took"])] for h in held]))
    return 0


def _users_status(args: argparse.Namespace) -> int:
    rows = [u for page in _pages(args, "/api/v1/users?limit=5000", "users") for u in page["users"]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(table(["user", "family", "version", "node", "since"],
                [[u["user"], u["family"], u["version"], u["node"], _when(u["since"])] for u in rows])
          if rows else "(no user licenses assigned)")
    return 0


def _pages(args: argparse.Namespace, path: str, key: str) -> list[dict[str, Any]]:
    """Every page of a paged API answer, following next_cursor."""
    pages: list[dict[str, Any]] = []
    cursor = ""
    while True:
        pages.append(_call(args, path + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")))
        cursor = pages[-1].get("next_cursor") or ""
        if not cursor:
            return pages


def _all_nodes(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every session (the API gives at most 1,000 a page)."""
    return [n for page in _pages(args, "/api/v1/nodes?limit=1000", "nodes") for n in page["nodes"]]


def post_reload(args: argparse.Namespace) -> dict[str, Any]:
    """POST /api/v1/reload (`?force=true` with --force): {"ok": True, "changed", "warnings", "problems"} or
    {"ok": False, "problems", "forceable"} (422)."""
    force = "?force=true" if getattr(args, "force", False) else ""
    request = urllib.request.Request(console_url(args.url) + "/api/v1/reload" + force, method="POST")
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    context = _context(args)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return {"ok": True, **json.loads(response.read())}
    except urllib.error.HTTPError as exc:
        if exc.code == 422:
            return {"ok": False, **json.loads(exc.read())}
        raise SystemExit(f"licmaster: {exc.code} {exc.reason}: reloading needs a manage token (--token-file, "
                         f"${ENV_TOKEN_FILE}, or the config's admin_tokens)") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _unreachable(args, exc) from None
    except (http.client.HTTPException, ValueError):
        raise SystemExit(f"licmaster: {console_url(args.url)} does not answer as a licmaster console") from None


def _release(args: argparse.Namespace) -> int:
    resolve_console(args, manage=True)
    node = urllib.parse.quote(args.node, safe="")
    one = f"?lease={urllib.parse.quote(args.lease)}" if args.lease else f"?holder={urllib.parse.quote(args.holder)}" if args.holder else ""
    result = _call(args, f"/api/v1/nodes/{node}/release{one}", method="POST")
    if args.json:
        print(json.dumps(result))
    elif one:
        print(f"{result['node']}: released " + ", ".join(f"{t['resource']} of {t['holder']} (lease {t['lease']})"
                                                          for t in result["leases"]) + f"; the PBX was told (by {result['by']})")
    else:
        print(f"{result['node']}: {result['released']} floating license(s) released, its session fenced (by {result['by']})")
    return 0


def _unassign(args: argparse.Namespace) -> int:
    resolve_console(args, manage=True)
    user = urllib.parse.quote(args.user, safe="")
    result = _call(args, f"/api/v1/users/{user}/unassign?family={urllib.parse.quote(args.family)}", method="POST")
    if args.json:
        print(json.dumps(result))
    else:
        version = f" V{result['version']}" if result["version"] else ""
        print(f"{result['user']}: {result['family']}{version} taken back, by {result['by']}")
    return 0


