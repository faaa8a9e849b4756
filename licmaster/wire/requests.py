"""Requests of docs/protocol.md: validation of the envelope and of each op's fields. Pure.

Every validator answers plain values or a `Denial` with code `bad_request` naming the field and
its bound (the two hot ones raise `Refused` instead, see there). Unknown extra fields are ignored
(forward compatibility: other people's clients may send more).

Untrusted values are never rendered whole: `describe` names a value by its type and a bounded
prefix, without recursing into containers (a map nested a thousand deep must not cost a
RecursionError, nor a 60 KB string a 60 KB log line). Text that reaches logs or the journal
(node names, holders, users, models) must be printable: no control or format characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from licmaster.model import errors as E
from licmaster.model.errors import Denial, bad_request
from licmaster.model.rules import normalize_mac
from licmaster.model.types import (
    LICENSING,
    PLATFORMS,
    RESOURCES,
    ROLES,
    Node,
    SyncEntry,
)

PROTOCOL_VERSION = 1
MAX_ID = 2**64 - 1
MAX_TEXT = 256
MAX_COUNT = 10_000
VERSIONED_CLIENTS = frozenset({"operator", "queue-monitor"})  # R-OP-3: their software has a version of its own
MAX_FAMILIES = 64
MAX_SYNC = 10_000  # entries of one sync: more than any PBX holds
_NODE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")  # matched with fullmatch: no trailing newline slips through


def describe(value: Any, most: int = 32) -> str:
    """A bounded, non-recursive rendering of an untrusted value, for messages and logs."""
    if value.__class__ in (int, bool, float) or value is None:
        text = repr(value)
        return text if len(text) <= most else text[:most] + "..."
    if value.__class__ is str:
        return repr(value[:most]) + ("..." if len(value) > most else "")
    if value.__class__ in (list, dict, bytes):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"

OPS = frozenset({"hello", "heartbeat", "bye", "checkout", "checkin", "sync", "takeover", "assign", "unassign", "usage",
                 "nodes", "replicate", "ack", "recording"})
MIN_FRAME, MAX_FRAME = 4096, 64 * 1024 * 1024  # what a peer may say it reads (`max_frame`)
MAX_PAGE = 200  # entries of one `nodes` page: 200 of the longest fit well in 64 KiB


def envelope(msg: dict[str, Any]) -> tuple[int, str] | tuple[int | None, Denial]:
    """(id, op), or (id if readable, Denial)."""
    rid = msg.get("id")
    if rid.__class__ is not int or not 0 <= rid <= MAX_ID:  # bool is not int by class
        return None, bad_request("id", "must be an unsigned integer")
    v = msg.get("v", PROTOCOL_VERSION)
    if v != PROTOCOL_VERSION or v.__class__ is not int:
        return rid, bad_request("v", f"protocol version {describe(v)} is not supported (this server speaks 1)")
    op = msg.get("op")
    if op.__class__ is not str:
        return rid, bad_request("op", "must be a string")
    if op not in OPS:
        return rid, Denial(E.UNKNOWN_OP, f"unknown op {op[:64]!r}: this server knows {', '.join(sorted(OPS))}")
    return rid, op


def _text(msg: dict[str, Any], name: str, *, required: bool = True, most: int = MAX_TEXT) -> str | None | Denial:
    value = msg.get(name)
    if value is None:
        return bad_request(name, "is required") if required else None
    if value.__class__ is not str or not 1 <= len(value) <= most or not value.isprintable():
        return bad_request(name, f"must be 1 to {most} printable characters")
    return value


def _choice(msg: dict[str, Any], name: str, allowed: tuple[str, ...], default: str | None = None) -> str | Denial:
    value = msg.get(name, default)
    if value not in allowed or value.__class__ is not str:
        return bad_request(name, f"must be one of {', '.join(allowed)}")
    return value


def node_name(msg: dict[str, Any], name: str) -> str | Denial:
    value = msg.get(name)
    if value.__class__ is not str or not _NODE_RE.fullmatch(value):
        return bad_request(name, "must be 1 to 64 of A-Z a-z 0-9 . _ - (nothing else, not even a trailing newline)")
    return value


@dataclass(frozen=True, slots=True)
class Hello:
    node: Node
    auth: dict[str, Any] | None
    max_frame: int | None = None
    fresh: bool = False  # the client holds no lease (a PBX started afresh): whatever its node held goes back at once


def hello(msg: dict[str, Any]) -> Hello | Denial:
    name = node_name(msg, "node")
    if isinstance(name, Denial):
        return name
    role = _choice(msg, "role", ROLES)
    if isinstance(role, Denial):
        return role
    auth = msg.get("auth")
    if auth is not None and (auth.__class__ is not dict or len(auth) > 8):
        return bad_request("auth", "must be a map of at most 8 entries, e.g. {token}")
    token = auth.get("token") if auth else None
    if token is not None and (token.__class__ is not str or len(token) > MAX_TEXT):
        return bad_request("auth.token", f"must be a string of at most {MAX_TEXT} characters")
    max_frame = frame_size(msg)
    if isinstance(max_frame, Denial):
        return max_frame
    fresh = msg.get("fresh", False)
    if fresh.__class__ is not bool:
        return bad_request("fresh", "must be true (this client holds no lease) or false")
    if role == "observer":
        return Hello(Node(name, role="observer"), auth, max_frame)
    firmware = msg.get("firmware")
    if firmware.__class__ is not int or not 1 <= firmware <= 99:
        return bad_request("firmware", "must be the PBX software's major version, a whole number from 1 to 99")
    platform = _choice(msg, "platform", PLATFORMS)
    if isinstance(platform, Denial):
        return platform
    licensing = _choice(msg, "licensing", LICENSING)
    if isinstance(licensing, Denial):
        return licensing
    mac_raw = msg.get("mac")
    mac = normalize_mac(mac_raw) if mac_raw.__class__ is str else None
    if mac is None:
        return bad_request("mac", "must be the device's MAC, xx:xx:xx:xx:xx:xx")
    model = _text(msg, "model", required=False, most=32)
    if isinstance(model, Denial):
        return model
    standby_for: str | None = None
    if role == "standby":
        named = node_name(msg, "standby_for")
        if isinstance(named, Denial):
            return named
        standby_for = named
    elif "standby_for" in msg:
        return bad_request("standby_for", "only a standby says which node it may take over")
    return Hello(Node(name, role, firmware, platform, mac, licensing, model, standby_for), auth, max_frame, fresh)


def frame_size(msg: dict[str, Any]) -> int | None | Denial:
    """`max_frame`: the largest frame the peer reads, if it says (hello, replicate)."""
    value = msg.get("max_frame")
    if value is None:
        return None
    if value.__class__ is not int or not MIN_FRAME <= value <= MAX_FRAME:
        return bad_request("max_frame", f"must be a whole number of bytes from {MIN_FRAME} to {MAX_FRAME}")
    return value


def page(msg: dict[str, Any]) -> tuple[str | None, int] | Denial:
    """`cursor` (the `next` of the page before; absent for the first) and `limit` (at most
    MAX_PAGE are given, whatever is asked: a reply stays bounded)."""
    cursor = msg.get("cursor")
    if cursor is not None and (cursor.__class__ is not str or not _NODE_RE.fullmatch(cursor)):
        return bad_request("cursor", "must be the `next` of an earlier page (a node name), or absent for the first page")
    limit = msg.get("limit", MAX_PAGE)
    if limit.__class__ is not int or limit < 1:
        return bad_request("limit", f"must be a whole number from 1 (at most {MAX_PAGE} are given a page)")
    return cursor, min(limit, MAX_PAGE)


class Refused(Exception):
    """A request refused by validation, with its denial. The two hot validators (checkout,
    checkin) raise it instead of returning a Denial: in CPython 3.11 a `try` costs nothing when
    nothing is raised, and the caller needs no type test on the result."""

    def __init__(self, denial: Denial) -> None:
        super().__init__(denial.message)
        self.denial = denial


def checkout(msg: dict[str, Any], required: int = 4) -> tuple[str, str, int, str | None, int | None]:
    """(resource, holder, count, interface, client_version), or Refused. `required`: how many keys
    the map has besides the optional ones (op, id, resource, holder; a sync entry: 2)."""
    resource = msg.get("resource")
    if resource.__class__ is not str:  # its length is bounded by what names a resource (planning)
        raise Refused(bad_request("resource", f"must be one of {', '.join(RESOURCES)}"))
    holder = msg.get("holder")
    if holder.__class__ is not str or not 1 <= len(holder) <= MAX_TEXT or not holder.isprintable():
        raise Refused(bad_request("holder", f"must be 1 to {MAX_TEXT} printable characters"))
    if len(msg) == required:  # no optional field: the common checkout, without three look-ups
        return resource, holder, 1, None, None
    count = msg.get("count", 1)
    if count.__class__ is not int or not 1 <= count <= MAX_COUNT:
        raise Refused(bad_request("count", f"must be a whole number from 1 to {MAX_COUNT}"))
    interface = msg.get("interface")
    if interface is not None and interface not in ("bri", "pri"):
        raise Refused(bad_request("interface", "must be \"bri\" or \"pri\""))
    client_version = msg.get("client_version")
    if client_version is not None and (client_version.__class__ is not int or not 1 <= client_version <= 99
                                       or resource not in VERSIONED_CLIENTS):
        raise Refused(bad_request("client_version", "is the Operator or Queue Monitor software's major version (1 to 99), "
                                  "for resource operator or queue-monitor only"))
    return resource, holder, count, interface, client_version


def checkin(msg: dict[str, Any]) -> str:
    """The lease id, or Refused."""
    lease = msg.get("lease")
    if lease.__class__ is not str or not 1 <= len(lease) <= 64:
        raise Refused(bad_request("lease", "must be the lease string a checkout returned"))
    return lease


def sync(msg: dict[str, Any]) -> list[SyncEntry] | Denial:
    leases = msg.get("leases")
    if leases.__class__ is not list or len(leases) > MAX_SYNC:
        return bad_request("leases", f"must be a list of at most {MAX_SYNC} {{resource, holder, count?, interface?}}")
    entries = []
    for i, item in enumerate(leases):
        if item.__class__ is not dict:
            return bad_request(f"leases[{i}]", "must be a map")
        try:
            parsed = checkout(item, required=2)
        except Refused as refused:
            denial = refused.denial
            return bad_request(f"leases[{i}].{denial.details['field']}", denial.message.split(": ", 1)[1])
        entries.append(SyncEntry(*parsed))
    return entries


def takeover(msg: dict[str, Any]) -> str | Denial:
    return node_name(msg, "failed")


def assignment(msg: dict[str, Any]) -> tuple[str, list[str]] | Denial:
    user = _text(msg, "user")
    if isinstance(user, Denial):
        return user
    families = msg.get("families")
    if families.__class__ is not list or not 1 <= len(families) <= MAX_FAMILIES or any(f.__class__ is not str for f in families):
        return bad_request("families", f"must be a list of 1 to {MAX_FAMILIES} license family names")
    return user, families  # type: ignore[return-value]
