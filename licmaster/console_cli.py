"""`licmaster status` and `licmaster release`: the console from a terminal, like rlmstat."""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:4461"


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, help_text in (("status", "pools and nodes of a running master, as tables; who holds what (--node, --users)"),
                            ("release", "force-release a stuck PBX's floating licenses, or one of them (needs a manage token)"),
                            ("unassign", "take a user license back from a user (needs a manage token)")):
        p = sub.add_parser(name, help=help_text)
        if name == "status":
            p.add_argument("--node", help="this node's floating leases: resource, holder, lease, since when")
            p.add_argument("--users", action="store_true", help="the user licenses: user, family, version, node, since when")
        if name == "release":
            p.add_argument("node")
            which = p.add_mutually_exclusive_group()
            which.add_argument("--lease", help="only this lease (licmaster status --node NODE lists them)")
            which.add_argument("--holder", help="only this holder's lease(s)")
        if name == "unassign":
            p.add_argument("user")
            p.add_argument("family", help="e.g. App(phone), PBX-UC")
        p.add_argument("--url", default=DEFAULT_URL, help="the master's console, http(s)://host:port or host:port "
                       "(default %(default)s)")
        p.add_argument("--token", help="a console token (admin_tokens); none needed on loopback for reading")
        p.add_argument("--cafile", help="CA certificate to verify an https console")
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
    context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
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
        raise SystemExit(f"licmaster: cannot reach the console at {base}: {getattr(exc, 'reason', exc)}") from None
    except (http.client.HTTPException, ValueError):
        # e.g. the PBX port (MessagePack, not HTTP), or another server's page
        raise SystemExit(f"licmaster: {base} does not answer as a licmaster console (the console is the master's "
                         "`http` address, 127.0.0.1:4461 by default; the PBX port does not speak HTTP)") from None


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _status(args: argparse.Namespace) -> int:
    if args.node:
        return _node_status(args)
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
    print()
    now = time.time()
    print(table(["node", "role", "firmware", "platform", "address", "connected", "leases", "last seen"],
                [[n["node"], n["role"], n["firmware"], n["platform"], n["address"], "yes" if n["connected"] else "no",
                  n["leases"], f"{now - n['last_seen']:.1f} s ago"] for n in nodes]) if nodes else "(no sessions)")
    return 0


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
    context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return {"ok": True, **json.loads(response.read())}
    except urllib.error.HTTPError as exc:
        if exc.code == 422:
            return {"ok": False, **json.loads(exc.read())}
        raise SystemExit(f"licmaster: {exc.code} {exc.reason}: reloading needs a manage token (--token)") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SystemExit(f"licmaster: cannot reach the console at {console_url(args.url)}: {getattr(exc, 'reason', exc)}") from None
    except (http.client.HTTPException, ValueError):
        raise SystemExit(f"licmaster: {console_url(args.url)} does not answer as a licmaster console") from None


def _release(args: argparse.Namespace) -> int:
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
    user = urllib.parse.quote(args.user, safe="")
    result = _call(args, f"/api/v1/users/{user}/unassign?family={urllib.parse.quote(args.family)}", method="POST")
    if args.json:
        print(json.dumps(result))
    else:
        version = f" V{result['version']}" if result["version"] else ""
        print(f"{result['user']}: {result['family']}{version} taken back, by {result['by']}")
    return 0


