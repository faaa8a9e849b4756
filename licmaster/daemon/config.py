"""The master's configuration (TOML). Every key has a default; docs/operations.md documents them.

```toml
listen = "127.0.0.1:4460"       # the PBXs' TCP listener
http = "127.0.0.1:4461"         # the console (admin API, metrics); "" for none
data_dir = "licmaster-data"     # SQLite files: state.sqlite3, journal.sqlite3
licenses = ["licenses.toml"]    # license files, relative to this file
policy = ""                     # "sites.toml": the site policy (reserve, max, include/exclude), read with the licenses
heartbeat_ms = 1000
lease_ttl_ms = 3000               # how long a PBX may be silent before it is absent
hold_s = 259200                 # how long an absent PBX keeps its floating licenses (72 h; lease_ttl_ms to 30 days)
grace_ms = 3000                 # after a restart: checkouts wait this long for PBXs to re-sync
hello_timeout_ms = 5000
max_frame = 65536
max_connections = 10000
journal_flush_ms = 200
journal_keep_days = 90          # older journal history is deleted (0: keep it all)
fsync = false                   # true: survive power loss too (an fsync per durable change)
auth_token = ""                 # when set, hello must carry auth = {token = "..."}
tls_cert = ""                   # both set: the PBX listener speaks TLS
tls_key = ""
tls_ca = ""                     # CA file to verify the other masters (default: tls_cert itself)
log_format = "kv"               # or "json"
log_level = "info"
standby_of = ""                 # "host:port": be the standby master of that master
takeover_after_ms = 1000        # a standby takes over when the master is unreachable this long (at most lease_ttl_ms)
peers = []                      # ["host:port", ...]: the other masters of this installation
vendor_keys = []                # ["vendor.pub", ...]: license files must be signed by one of these
hardware_id = ""                # this installation's id for signed files (default: the host's MAC)
admin_tokens = []               # [{token = "...", role = "view" | "manage", name = "..."}]: the console's access
metrics_token = ""              # a bearer token for /metrics alone (the Prometheus scrape), apart from admin_tokens
metrics_public = false          # true: /metrics answers anyone, without a token
etcd_endpoints = []             # ["host:port", ...]: hold leadership in etcd (one pool under any partition)
etcd_prefix = "/licmaster"      # the installation's keys in etcd
etcd_ttl_s = 2                  # the leader key's lease
advertise = ""                  # "host:port" the other masters reach this one at (default: listen)
```
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

TAKEOVER_AFTER_MS = 1000
HOLD_S = 259_200  # 72 h: a cut-off PBX keeps its phones up over a long weekend (docs/operations.md, "Two clocks")
HOLD_MOST_S = 30 * 86_400
ADMIN_ROLES = ("view", "manage")


@dataclass(frozen=True)
class AdminToken:
    token: str
    role: str  # "view": read; "manage": read, reload, release
    name: str = ""  # who, in the journal (default: the role and the token's first 4 characters)

    @property
    def who(self) -> str:
        return self.name or f"{self.role}:{self.token[:4]}..."


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Config:
    listen: str = "127.0.0.1:4460"
    http: str = "127.0.0.1:4461"
    data_dir: Path = Path("licmaster-data")
    licenses: tuple[Path, ...] = field(default_factory=tuple)
    policy: Path | None = None  # the site policy file (docs/operations.md, "Sites"), read with the licenses
    heartbeat_ms: int = 1000
    lease_ttl_ms: int = 3000
    # Two clocks (docs/operations.md, "Two clocks"): a PBX silent for lease_ttl_ms is absent;
    # its floating licenses stay its own, counted and given to nobody else, until hold_s after
    # its last word.
    hold_s: float = HOLD_S
    grace_ms: int | None = None  # None: lease_ttl_ms
    hello_timeout_ms: int = 5000
    max_frame: int = 65_536
    max_connections: int = 10_000
    journal_flush_ms: int = 200
    journal_keep_days: int = 90  # 0: keep forever
    fsync: bool = False
    auth_token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""  # verifies the other masters (standby_of, peers); default tls_cert
    log_format: str = "kv"
    log_level: str = "info"
    standby_of: str = ""  # "host:port": this daemon is the standby master of that master
    takeover_after_ms: int | None = None  # None: TAKEOVER_AFTER_MS, or lease_ttl_ms if shorter
    # The other masters of the installation. A master asks them at start: if one of them is an
    # acting master (its standby took over while this one was down), it follows that one.
    peers: tuple[str, ...] = ()
    # Signed license files: the vendor's public keys (several, for key rotation). Set, every
    # license file must be signed by one of them for this installation; empty, unsigned files
    # load and the master logs that they are unverified.
    vendor_keys: tuple[Path, ...] = ()
    # The console (docs/admin-api.md): bearer tokens with a role, "view" or "manage". None:
    # the API is read-only and answers only on loopback.
    admin_tokens: tuple[AdminToken, ...] = ()
    # /metrics apart from the admin tokens (a Prometheus scrape): a bearer token that reads
    # /metrics and nothing else, or /metrics open to anyone. Re-read with admin_tokens at a reload.
    metrics_token: str = ""
    metrics_public: bool = False
    hardware_id: str = ""  # this installation's id; default: the host's MAC (licmaster id)
    # Leadership in etcd (docs/operations.md, "One pool under partition"): with endpoints, only
    # the holder of <etcd_prefix>/leader grants, and standbys become master only by election.
    etcd_endpoints: tuple[str, ...] = ()
    etcd_prefix: str = "/licmaster"
    etcd_ttl_s: int = 2  # the leader key's lease; the leader stops granting 0.5 s before it could lapse
    # The address the other masters reach this one at, written in the etcd leader key (behind NAT,
    # a proxy, a container's port mapping); default: the listening address.
    advertise: str = ""

    @property
    def effective_takeover_after_ms(self) -> int:
        """How long a standby master waits for its master before taking over. The masters watch
        each other faster than PBXs are watched: 1 s by default, so that a failover completes
        within 2 s; a master paused for less (a long GC, a VM migration of 0.5 s) keeps its role."""
        return min(TAKEOVER_AFTER_MS, self.lease_ttl_ms) if self.takeover_after_ms is None else self.takeover_after_ms

    @property
    def effective_grace_ms(self) -> int:
        """The lease TTL by default. With etcd never less: a new leader must not give out again
        what the old one's PBXs may still hold, and they hold it at most a lease TTL after the
        old one last confirmed it (docs/operations.md, "Two clocks")."""
        grace = self.lease_ttl_ms if self.grace_ms is None else self.grace_ms
        return max(grace, self.lease_ttl_ms) if self.etcd_endpoints else grace

    @property
    def listen_address(self) -> tuple[str, int]:
        return split_address(self.listen, "listen")

    @property
    def http_address(self) -> tuple[str, int]:
        return split_address(self.http, "http")


_INT_RANGES = {
    "heartbeat_ms": (10, 3_600_000),
    "lease_ttl_ms": (20, 86_400_000),
    "grace_ms": (0, 86_400_000),
    "hello_timeout_ms": (10, 600_000),
    "max_frame": (64, 64 * 1024 * 1024),
    "max_connections": (1, 1_000_000),
    "journal_flush_ms": (1, 60_000),
    "journal_keep_days": (0, 36_500),
    "takeover_after_ms": (10, 3_600_000),
}


def split_address(text: str, key: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected \"host:port\", not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def load_config(path: str | Path | None, **overrides: Any) -> Config:
    """Read a config file (or none: every default), then apply command-line overrides."""
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        base = p.resolve().parent
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(raw, base)


def config_from_dict(raw: dict[str, Any], base: Path) -> Config:
    """The config, or ConfigError listing every problem at once (one a line), not only the first."""
    known = {f.name for f in fields(Config)}
    problems: list[str] = []
    unknown = sorted(set(raw) - known)
    if unknown:
        problems.append(f"unknown config key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in known:
            try:
                values[key] = _value(key, value, base)
            except ConfigError as exc:
                problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    config = Config(**values)
    checks: list[Callable[[], object]] = [lambda: config.listen_address]
    if config.http:  # "" turns the console off
        checks.append(lambda: config.http_address)
    if config.standby_of:
        checks.append(lambda: split_address(config.standby_of, "standby_of"))
    if config.advertise:
        checks.append(lambda: split_address(config.advertise, "advertise"))
    for check in checks:
        try:
            check()
        except ConfigError as exc:
            problems.append(str(exc))
    if bool(config.tls_cert) != bool(config.tls_key):
        problems.append("tls_cert and tls_key go together: set both or neither")
    if config.tls_ca and not config.tls_cert:
        problems.append("tls_ca verifies the other masters' TLS: it needs tls_cert and tls_key for this one")
    if config.metrics_token and config.metrics_public:
        problems.append("metrics_token and metrics_public: set one (metrics_public opens /metrics to anyone, a token is then moot)")
    if not config.lease_ttl_ms / 1000 <= config.hold_s <= HOLD_MOST_S:
        problems.append(f"hold_s ({config.hold_s:g}) must be from lease_ttl_ms ({config.lease_ttl_ms / 1000:g} s) "
                        f"to 30 days ({HOLD_MOST_S}): how long an absent PBX keeps its licenses")
    if config.heartbeat_ms >= config.lease_ttl_ms:
        problems.append(f"heartbeat_ms ({config.heartbeat_ms}) must be below lease_ttl_ms ({config.lease_ttl_ms})")
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def _value(key: str, value: Any, base: Path) -> Any:
    """One key's value, checked and converted; ConfigError naming the key."""
    if key in _INT_RANGES:
        lo, hi = _INT_RANGES[key]
        if value.__class__ is not int or not lo <= value <= hi:
            raise ConfigError(f"{key}: expected a whole number from {lo} to {hi}, not {value!r}")
        return value
    if key in ("fsync", "metrics_public"):
        if value.__class__ is not bool:
            raise ConfigError(f"{key}: expected true or false, not {value!r}")
        return value
    if key == "metrics_token" and (not isinstance(value, str) or 0 < len(value) < 16):
        raise ConfigError("metrics_token: expected a secret of at least 16 characters (or \"\" for none)")
    if key == "policy" and value == "":
        return None
    if key in ("data_dir", "policy"):
        return _path(value, base, key)
    if key == "vendor_keys":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"vendor_keys: expected a list of public key files, not {value!r}")
        return tuple(_path(v, base, key) for v in value)
    if key == "admin_tokens":
        return _admin_tokens(value)
    if key == "licenses":
        if isinstance(value, (str, Path)):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError("licenses: expected a list of license file paths")
        return tuple(_path(v, base, key) for v in value)
    if key == "log_format":
        if value not in ("kv", "json"):
            raise ConfigError(f"log_format: expected \"kv\" or \"json\", not {value!r}")
        return value
    if key in ("etcd_endpoints", "peers"):
        return _addresses(key, value)
    if key == "hold_s":
        if value.__class__ not in (int, float) or value != value:
            raise ConfigError(f"hold_s: expected a number of seconds, not {value!r}")
        return value
    if key == "etcd_ttl_s":
        if value.__class__ is not int or not 2 <= value <= 60:
            raise ConfigError(f"etcd_ttl_s: expected a whole number of seconds from 2 to 60, not {value!r}")
        return value
    if key == "log_level":
        if value not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level: expected debug, info, warning or error, not {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, not {value!r}")
    return value


def _addresses(key: str, value: Any) -> tuple[str, ...]:
    """A list of "host:port" (etcd endpoints may also carry a scheme: http://host:port)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a list of \"host:port\" strings, not {value!r}")
    for address in value:
        split_address(address.split("://")[-1] if key == "etcd_endpoints" else address, key)
    return tuple(value)


def _admin_tokens(value: Any) -> tuple[AdminToken, ...]:
    if not isinstance(value, list):
        raise ConfigError('admin_tokens: expected a list of {token = "...", role = "view" | "manage"}')
    tokens = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"token", "role", "name"}:
            raise ConfigError(f"admin_tokens[{i}]: expected {{token, role, name?}}, not {item!r}")
        token, role, name = item.get("token"), item.get("role"), item.get("name", "")
        if not isinstance(token, str) or len(token) < 16:
            raise ConfigError(f"admin_tokens[{i}].token: expected a secret of at least 16 characters")
        if role not in ADMIN_ROLES:
            raise ConfigError(f"admin_tokens[{i}].role: expected \"view\" or \"manage\", not {role!r}")
        if not isinstance(name, str):
            raise ConfigError(f"admin_tokens[{i}].name: expected a string")
        tokens.append(AdminToken(token, role, name))
    return tuple(tokens)


def _path(value: Any, base: Path, key: str) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise ConfigError(f"{key}: expected a path, not {value!r}")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p
