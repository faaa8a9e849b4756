"""Scenario files (TOML): the network, the licenses, a timeline of steps, and expectations. Pure.

docs/scenarios.md documents the format; `load_scenario` validates everything and names what
is wrong (file, section, key) before anything runs.
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from licmaster.model import errors
from licmaster.model.catalog import FAMILIES
from licmaster.model.rules import normalize_mac

from ..access import MasterAccess, read_token_file
from .actions import ACTIONS


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file, the section and the key."""


LINKS = ("standby-master", "master-etcd")
FAILOVER_ACTIONS = tuple(a.name for a in ACTIONS.values() if a.failover)  # failover_steps() says why these
# Codes a refused failover step is recorded with: the protocol's error codes (docs/protocol.md),
# and slave-sim's own for what no master said: no_connection (the standby reached no master),
# not_settled (after fail-master, the PBXs or the auditor were not on the acting master in time).
NO_CONNECTION, NOT_SETTLED = "no_connection", "not_settled"
FAILOVER_CODES = frozenset({value for name, value in vars(errors).items() if name.isupper() and isinstance(value, str)}
                           | {NO_CONNECTION, NOT_SETTLED})


@dataclass(frozen=True)
class IsdnSpec:
    interface: str
    channels: int


@dataclass(frozen=True)
class PbxSpec:
    name: str
    platform: str = "gateway"
    model: str | None = None
    firmware: int = 13
    mac: str = "00:90:33:00:00:01"
    licensing: str = "central"
    local_licenses: Path | None = None
    standby: str | None = None
    users: int = 0
    devices_per_user: int = 1
    executives: int = 0
    trunks: int = 0
    groups: int = 0
    queues: int = 0
    isdn: tuple[IsdnSpec, ...] = ()
    rooms: int = 0
    operators: int = 0
    template: tuple[str, ...] = ()
    standby_first: bool = False  # lists the standby master before the master (a site closer to it)
    site: str | None = None  # the site it is sized in (its copies and its standby too)


@dataclass(frozen=True)
class SiteExpect:
    """Bounds on one site's sizing figures (`[expect] sites`)."""

    refused: tuple[int, int] | None = None  # requests of its PBXs refused
    short: tuple[int, int] | None = None  # the most of its users without a Port at once
    peak: tuple[int, int] | None = None  # the most Ports it held at once


@dataclass(frozen=True)
class Step:
    action: str
    pbx: tuple[str, ...] = ()  # empty: every PBX
    fraction: float = 1.0
    rate: float = 0.0  # per second; 0: as fast as the master answers
    seconds: float = 0.0
    audit: bool = False
    participants: int = 4
    firmware: int = 13
    standby: str = ""
    label: str = ""
    licenses: tuple[Path, ...] = ()
    cut: tuple[str, ...] = ()  # partition: links to cut
    heal: tuple[str, ...] = ()  # partition: links to heal

    def describe(self) -> str:
        action = ACTIONS[self.action]
        target = (",".join(self.pbx) or "all") if action.targeted else ""
        return self.label or " ".join(x for x in (self.action, target, action.detail(self)) if x)

    @property
    def link_changes(self) -> str:
        """A partition's links, as "cut a heal b"."""
        return " ".join([*(f"cut {n}" for n in self.cut), *(f"heal {n}" for n in self.heal)])


@dataclass(frozen=True)
class Expectations:
    no_over_allocation: bool = True
    audit_agrees: bool = True
    nothing_left: bool = False
    denials: dict[str, tuple[int, int]] = field(default_factory=dict)
    denial_rules: dict[str, tuple[int, int]] = field(default_factory=dict)
    peak_in_use: dict[str, int | str] = field(default_factory=dict)
    takeover_ms_max: float | None = None
    takeovers: tuple[int, int] | None = None
    # the most licenses in use beyond the installed count, summed over every serving master at a
    # sample (a partition of two masters without etcd); None: not checked
    over_installed_across_masters: tuple[int, int] | None = None
    sites: dict[str, SiteExpect] = field(default_factory=dict)
    # refused failover steps allowed, by code (a count or [min, max] each); a code not named: none
    failover_refused: dict[str, tuple[int, int]] = field(default_factory=dict)
    # leases whose devices lost service because of licensing (told `lapsed`, or lost at a
    # re-sync): a count or [min, max]; 0 unless the drill rehearses such a loss
    out_of_service: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class ReplaySource:
    """`replay = { data_dir = "...", since = "...", until = "...", speed = 60 }`: the scenario is a
    master's recorded demand, played by `slave-sim replay` (slave_sim/replay/): its PBXs and steps
    come from the record. Times are kept as written (7d, epoch seconds, ISO 8601) and read when it
    runs, as the command line's are."""

    data_dir: Path
    since: str
    until: str | None = None
    speed: float = 60.0
    config: Path | None = None  # the recorded master's config (default: found beside the data directory)
    lose: tuple[tuple[str, str], ...] = ()  # (NODE or @SITE, TIME or "peak"), as --lose and --at


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    path: Path
    licenses: tuple[Path, ...]
    master: dict[str, Any]
    pbxs: tuple[PbxSpec, ...]
    steps: tuple[Step, ...]
    expect: Expectations
    size: str = "ci"
    standby_master: bool = False
    etcd: bool = False  # the masters hold leadership in an etcd member slave-sim starts
    access: MasterAccess = MasterAccess()  # TLS and the token every client of the run connects with
    replay: ReplaySource | None = None  # a record played in place of [[pbx]] and [[step]]

    def pbx(self, name: str) -> PbxSpec:
        for spec in self.pbxs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def device_count(self) -> int:
        return sum(p.users * p.devices_per_user + p.executives + p.trunks + p.groups + p.queues for p in self.pbxs)


_PBX_KEYS = {"name", "copies", "platform", "model", "firmware", "mac", "licensing", "local_licenses", "standby", "users",
             "devices_per_user", "executives", "trunks", "groups", "queues", "isdn", "rooms", "operators", "template",
             "standby_first", "site"}
_STEP_KEYS = {"action", "pbx", "fraction", "rate", "seconds", "audit", "participants", "firmware", "standby", "label",
              "licenses", "cut", "heal"}
_EXPECT_KEYS = {"no_over_allocation", "audit_agrees", "nothing_left", "denials", "denial_rules", "peak_in_use",
                "takeover_ms_max", "takeovers", "over_installed_across_masters", "sites", "failover_refused", "out_of_service"}
_MASTER_KEYS = {"heartbeat_ms", "lease_ttl_ms", "hold_s", "grace_ms", "journal_flush_ms", "takeover_after_ms", "licenses",
                "standby", "etcd", "policy", "tls", "cafile", "token", "token_file"}
LEASE_TTL_MS = 3000  # a master slave-sim starts, without [master] lease_ttl_ms (drill/master_process.py)
HOLD_MOST_S = 30 * 86_400
_TOP_KEYS = {"name", "description", "master", "pbx", "step", "expect", "sizes", "replay"}
_REPLAY_KEYS = {"data_dir", "since", "until", "speed", "config", "lose"}
JOURNAL_NAME = "journal.sqlite3"  # in a master's data directory
_SIZE_KEYS = {"users_scale", "rate_scale", "copies_scale", "rooms_scale", "licenses", "pause_scale", "expect", "files"}


def load_scenario(path: str | Path, size: str = "ci", *, replay: bool = False) -> Scenario:
    """`replay`: the caller plays a `replay = {...}` scenario (`slave-sim replay`); any other
    refuses one, naming the command that plays it."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{p}: not valid TOML: {exc}") from None
    scenario = scenario_from_dict(raw, p, size)
    if scenario.replay is not None and not replay:
        raise ScenarioError(f"{p}: replay = {{...}} plays a master's record: run it with `slave-sim replay {p}`")
    return scenario


def scenario_from_dict(raw: dict[str, Any], path: Path, size: str = "ci") -> Scenario:
    where = str(path)
    _known(raw, _TOP_KEYS, where)
    sizes = raw.get("sizes", {})
    if size != "ci" and size not in sizes:
        raise ScenarioError(f"{where}: no [sizes.{size}] (sizes: ci{''.join(', ' + s for s in sizes)})")
    sizing = sizes.get(size, {}) if size != "ci" else {}
    _known(sizing, _SIZE_KEYS, f"{where} [sizes.{size}]")
    # A size may swap any file the scenario names (master, step or local licenses) for another.
    base = _Files(path.resolve().parent, sizing.get("files", {}), f"{where} [sizes.{size}] files")
    master = dict(raw.get("master", {}))
    _known(master, _MASTER_KEYS, f"{where} [master]")
    license_list = sizing.get("licenses", master.pop("licenses", []))
    master.pop("licenses", None)
    standby_master = master.pop("standby", False)
    if not isinstance(standby_master, bool):
        raise ScenarioError(f"{where} [master]: standby must be true or false")
    etcd = master.pop("etcd", False)
    if not isinstance(etcd, bool):
        raise ScenarioError(f"{where} [master]: etcd must be true or false")
    licenses = tuple(_path(base, x, f"{where} licenses") for x in _list(license_list, f"{where} licenses"))
    if "policy" in master:  # the site policy of the master slave-sim starts, as an absolute path
        master["policy"] = str(_path(base, master["policy"], f"{where} [master] policy").resolve())
    access = _access(master, base, f"{where} [master]")  # how the run's clients connect; not the master's own settings
    _hold(master, f"{where} [master]")
    replay = _replay(raw["replay"], base, where) if "replay" in raw else None
    if replay is not None and ("pbx" in raw or "step" in raw):
        raise ScenarioError(f"{where}: replay = {{...}} plays the record's PBXs and what they did: leave out [[pbx]] and [[step]]")
    pbxs = _pbxs(raw.get("pbx", []), base, where, sizing) if replay is None else ()
    names = [p.name for p in pbxs]
    if len(set(names)) != len(names):
        raise ScenarioError(f"{where}: PBX names must be unique: {names}")
    standby_names = {p.standby for p in pbxs if p.standby}
    clash = standby_names & set(names)
    if clash:
        raise ScenarioError(f"{where}: standby name(s) {sorted(clash)} are also PBX names")
    steps = tuple(_step(s, i, where, set(names), standby_names, sizing, base) for i, s in enumerate(raw.get("step", [])))
    expect_raw = dict(raw.get("expect", {}))
    expect_raw.update(sizing.get("expect", {}))  # a larger size brings its own counts
    expect = _expect(expect_raw, f"{where} [expect]")
    sites = {p.site for p in pbxs if p.site}
    unknown_sites = sorted(set(expect.sites) - sites)
    if unknown_sites and replay is None:  # a replay's sites are the record's, known when it is read
        raise ScenarioError(f"{where} [expect] sites: no PBX is in site(s) {', '.join(unknown_sites)} "
                            f"(sites: {', '.join(sorted(sites)) or 'none: give each [[pbx]] its site'})")
    if expect.failover_refused and not failover_steps(steps) and replay is None:
        raise ScenarioError(f"{where} [expect] failover_refused: the scenario has no failover step "
                            f"({', '.join(FAILOVER_ACTIONS)}) to refuse")
    name = raw.get("name", path.stem)
    if any(ACTIONS[s.action].needs == "standby-master" for s in steps) and not standby_master:
        named = " and ".join(a.name for a in ACTIONS.values() if a.needs == "standby-master")
        raise ScenarioError(f"{where}: {named} need a standby master: set standby = true in [master]")
    if any(ACTIONS[s.action].needs == "etcd" for s in steps) and not etcd:
        named = " and ".join(a.name for a in ACTIONS.values() if a.needs == "etcd")
        raise ScenarioError(f"{where}: {named} need the masters in etcd: set etcd = true in [master]")
    return Scenario(name=str(name), description=str(raw.get("description", "")), path=path, licenses=licenses,
                    master=master, pbxs=pbxs, steps=steps, expect=expect, size=size, standby_master=standby_master, etcd=etcd,
                    access=access, replay=replay)


def _replay(table: Any, base: _Files, where: str) -> ReplaySource:
    """`replay = { data_dir, since, until, speed, config, lose }`, paths relative to the scenario."""
    w = f"{where} replay"
    _known(table, _REPLAY_KEYS, w)
    data_dir = table.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise ScenarioError(f"{w}: data_dir must be the recorded master's data directory, not {data_dir!r}")
    folder = base / data_dir
    if not (folder / JOURNAL_NAME).is_file():
        raise ScenarioError(f"{w}: no journal in {folder} ({JOURNAL_NAME} is missing)")
    if "since" not in table:
        raise ScenarioError(f"{w}: since is required: where the period begins (\"7d\", epoch seconds or an ISO 8601 time)")
    speed = table.get("speed", 60.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed) or speed <= 0:
        raise ScenarioError(f"{w}: speed must be a number above 0 (how many times faster than recorded), not {speed!r}")
    lose = table.get("lose", [])
    if not isinstance(lose, list) or not all(isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                                             for pair in lose):
        raise ScenarioError(f"{w}: lose must be a list of [\"NODE or @SITE\", TIME or \"peak\"] pairs, not {lose!r}")
    config = table.get("config")
    return ReplaySource(data_dir=folder.resolve(), since=_when(table["since"], f"{w}: since"),
                        until=_when(table["until"], f"{w}: until") if "until" in table else None, speed=float(speed),
                        config=_path(base, config, f"{w} config").resolve() if config is not None else None,
                        lose=tuple((pair[0], _when(pair[1], f"{w}: lose {pair[0]}")) for pair in lose))


def _when(value: Any, where: str) -> str:
    """A time as written: text (7d, epoch seconds, ISO 8601, "peak"), a number (epoch seconds) or
    a TOML date-time (UTC unless it says); read when the replay runs."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return repr(float(value))
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    raise ScenarioError(f"{where} must be a time (\"7d\", epoch seconds, an ISO 8601 time), not {value!r}")


def _access(master: dict[str, Any], base: _Files, where: str) -> MasterAccess:
    """`tls`, `cafile`, `token` / `token_file`, taken out of `master`: how every client of the run
    connects (to a master slave-sim starts, which is then given the same; or to --master's)."""
    tls = master.pop("tls", False)
    if not isinstance(tls, bool):
        raise ScenarioError(f"{where}: tls must be true or false, not {tls!r}")
    cafile = master.pop("cafile", None)
    ca = _path(base, cafile, f"{where} cafile").resolve() if cafile is not None else None
    token, token_file = master.pop("token", None), master.pop("token_file", None)
    if token is not None and token_file is not None:
        raise ScenarioError(f"{where}: token and token_file: give one of them")
    if token is not None and (not isinstance(token, str) or not token.strip() or token != token.strip()):
        raise ScenarioError(f"{where}: token must be the master's auth_token, a string without surrounding blanks")
    if token_file is not None:
        try:
            token = read_token_file(_path(base, token_file, f"{where} token_file"), f"{where} token_file")
        except ValueError as exc:
            raise ScenarioError(str(exc)) from None
    return MasterAccess(tls=tls or ca is not None, cafile=ca, token=token)  # a CA file means TLS


def _hold(master: dict[str, Any], where: str) -> None:
    """`hold_s`: how long the master keeps an absent PBX's floating licenses; from the lease TTL
    to 30 days, as the master takes it (a drill about reclaiming a dead PBX's licenses sets it
    short, e.g. equal to the TTL)."""
    if "hold_s" not in master:
        return
    hold, ttl_ms = master["hold_s"], master.get("lease_ttl_ms", LEASE_TTL_MS)
    ttl_s = ttl_ms / 1000 if isinstance(ttl_ms, (int, float)) else LEASE_TTL_MS / 1000  # a wrong TTL: the master says so
    if isinstance(hold, bool) or not isinstance(hold, (int, float)) or not ttl_s <= hold <= HOLD_MOST_S:
        raise ScenarioError(f"{where}: hold_s must be a number of seconds from the lease TTL ({ttl_s:g}) to 30 days "
                            f"({HOLD_MOST_S}), not {hold!r}")


def _known(table: dict[str, Any], keys: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ScenarioError(f"{where}: expected a table")
    unknown = sorted(set(table) - keys)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(keys))})")


def _list(value: Any, where: str) -> list[Any]:
    if isinstance(value, (str, int)):
        return [value]
    if not isinstance(value, list):
        raise ScenarioError(f"{where}: expected a list")
    return value


class _Files:
    """The scenario's folder, with the file swaps of the chosen size."""

    def __init__(self, folder: Path, swaps: dict[str, str], where: str) -> None:
        if not isinstance(swaps, dict) or not all(isinstance(v, str) for v in swaps.values()):
            raise ScenarioError(f"{where}: expected {{ \"old.toml\" = \"new.toml\" }}")
        self.folder, self.swaps = folder, swaps

    def __truediv__(self, name: str) -> Path:
        return self.folder / self.swaps.get(name, name)


def _path(base: _Files, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{where}: expected a file path, not {value!r}")
    p = base / value
    if not p.is_file():
        raise ScenarioError(f"{where}: no such file {p}")
    return p


def _int(table: dict[str, Any], key: str, default: int, where: str, lo: int = 0, hi: int = 1_000_000) -> int:
    value = table.get(key, default)
    if value.__class__ is not int or not lo <= value <= hi:
        raise ScenarioError(f"{where}: {key} must be a whole number from {lo} to {hi}, not {value!r}")
    return value


def _num(table: dict[str, Any], key: str, default: float, where: str, lo: float = 0.0, hi: float = 1e9) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ScenarioError(f"{where}: {key} must be a number from {lo:g} to {hi:g}, not {value!r}")
    return float(value)


def _choice(table: dict[str, Any], key: str, default: str, allowed: tuple[str, ...], where: str) -> str:
    value = table.get(key, default)
    if value not in allowed:
        raise ScenarioError(f"{where}: {key} must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)


def _pbxs(items: Any, base: _Files, where: str, sizing: dict[str, Any]) -> tuple[PbxSpec, ...]:
    if not isinstance(items, list) or not items:
        raise ScenarioError(f"{where}: at least one [[pbx]] is needed")
    users_scale = _num(sizing, "users_scale", 1.0, f"{where} sizes")
    copies_scale = _num(sizing, "copies_scale", 1.0, f"{where} sizes")
    rooms_scale = _num(sizing, "rooms_scale", 1.0, f"{where} sizes")
    out: list[PbxSpec] = []
    for i, item in enumerate(items):
        w = f"{where} [[pbx]] #{i + 1}"
        _known(item, _PBX_KEYS, w)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ScenarioError(f"{w}: name is required")
        copies = max(1, round(_int(item, "copies", 1, w, 1, 1000) * copies_scale))
        mac = normalize_mac(str(item.get("mac", "00:90:33:00:00:01")))
        if mac is None:
            raise ScenarioError(f"{w}: mac must be xx:xx:xx:xx:xx:xx")
        licensing = _choice(item, "licensing", "central", ("central", "decentral"), w)
        local = item.get("local_licenses")
        if licensing == "decentral" and local is None:
            raise ScenarioError(f"{w}: a decentral PBX needs local_licenses (R-MODE-2)")
        if licensing == "central" and local is not None:
            raise ScenarioError(f"{w}: local_licenses makes a PBX decentral: set licensing = \"decentral\"")
        isdn = []
        for j, spec in enumerate(item.get("isdn", [])):
            sw = f"{w} isdn #{j + 1}"
            interface = _choice(spec, "interface", "pri", ("bri", "pri"), sw)
            isdn.append(IsdnSpec(interface, _int(spec, "channels", 2 if interface == "bri" else 30, sw, 1, 30)))
        template = tuple(_list(item.get("template", []), f"{w} template"))
        for family in template:
            if family not in FAMILIES:
                raise ScenarioError(f"{w}: template names unknown license family {family!r}")
        spec = PbxSpec(
            name=name, platform=_choice(item, "platform", "gateway", ("gateway", "ipva"), w), model=item.get("model"),
            firmware=_int(item, "firmware", 13, w, 1, 99), mac=mac, licensing=licensing,
            local_licenses=_path(base, local, f"{w} local_licenses") if local else None,
            standby=item.get("standby"),
            users=round(_int(item, "users", 0, w) * users_scale), devices_per_user=_int(item, "devices_per_user", 1, w, 1, 16),
            executives=round(_int(item, "executives", 0, w) * users_scale), trunks=_int(item, "trunks", 0, w),
            groups=_int(item, "groups", 0, w), queues=_int(item, "queues", 0, w), isdn=tuple(isdn),
            rooms=round(_int(item, "rooms", 0, w) * rooms_scale), operators=round(_int(item, "operators", 0, w) * rooms_scale),
            template=template, standby_first=bool(item.get("standby_first", False)), site=_site(item, w))
        if copies == 1:
            out.append(spec)
        else:
            for n in range(1, copies + 1):
                octets = mac.split(":")
                copy_mac = ":".join(octets[:4] + [f"{n // 256:02x}", f"{n % 256:02x}"])
                out.append(replace(spec, name=f"{name}{n}", mac=copy_mac,
                                   standby=f"{spec.standby}{n}" if spec.standby else None))
    return tuple(out)


def _site(item: dict[str, Any], where: str) -> str | None:
    site = item.get("site")
    if site is None:
        return None
    if not isinstance(site, str) or not site or len(site) > 64:
        raise ScenarioError(f"{where}: site must be a name (1 to 64 characters), not {site!r}")
    return site


def _step(item: Any, i: int, where: str, names: set[str], standbys: set[str], sizing: dict[str, Any], base: _Files) -> Step:
    w = f"{where} [[step]] #{i + 1}"
    _known(item, _STEP_KEYS, w)
    action = item.get("action")
    if action not in ACTIONS:
        raise ScenarioError(f"{w}: action must be one of {', '.join(ACTIONS)}, not {action!r}")
    targets = tuple(_list(item.get("pbx", []), f"{w} pbx"))
    for t in targets:
        if not any(n == t or n.startswith(t) and n[len(t):].isdigit() for n in names):
            raise ScenarioError(f"{w}: no PBX named {t!r} (PBXs: {', '.join(sorted(names))})")
    standby = item.get("standby", "")
    if action == "takeover" and not any(s == standby or s.startswith(standby) and s[len(standby):].isdigit() for s in standbys):
        raise ScenarioError(f"{w}: takeover needs standby = the name of a PBX's standby ({', '.join(sorted(standbys)) or 'none defined'})")
    licenses = tuple(_path(base, x, f"{w} licenses") for x in _list(item.get("licenses", []), f"{w} licenses"))
    if action == "reload-licenses" and not licenses:
        raise ScenarioError(f"{w}: reload-licenses needs licenses = [\"file.toml\", ...]")
    cut, heal = tuple(_list(item.get("cut", []), f"{w} cut")), tuple(_list(item.get("heal", []), f"{w} heal"))
    for link in (*cut, *heal):
        if link not in LINKS:
            raise ScenarioError(f"{w}: no link named {link!r} (links: {', '.join(LINKS)})")
    if action == "partition" and not (cut or heal):
        raise ScenarioError(f"{w}: partition needs cut = [...] and/or heal = [...]")
    if action == "etcd-down" and not item.get("seconds"):
        raise ScenarioError(f"{w}: etcd-down needs seconds = how long every etcd member stays down")
    rate_scale = _num(sizing, "rate_scale", 1.0, f"{where} sizes")
    pause_scale = _num(sizing, "pause_scale", 1.0, f"{where} sizes")
    return Step(action=action, pbx=targets, fraction=_num(item, "fraction", 1.0, w, 0.0, 1.0),
                rate=_num(item, "rate", 0.0, w) * rate_scale, seconds=_num(item, "seconds", 0.0, w, 0, 3600) * pause_scale,
                audit=bool(item.get("audit", False)), participants=_int(item, "participants", 4, w, 1, 1000),
                firmware=_int(item, "firmware", 13, w, 1, 99), standby=str(standby), label=str(item.get("label", "")),
                licenses=licenses, cut=cut, heal=heal)


def _bounds(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value) and value[0] <= value[1]:
        return (value[0], value[1])
    raise ScenarioError(f"{where}: expected a count or [min, max], not {value!r}")


def _expect(raw: Any, where: str) -> Expectations:
    _known(raw, _EXPECT_KEYS, where)
    peak = raw.get("peak_in_use", {})
    for family, value in peak.items():
        if family not in FAMILIES or not (value == "installed" or isinstance(value, int)):
            raise ScenarioError(f"{where}: peak_in_use.{family} must name a family and be a count or \"installed\"")
    return Expectations(
        no_over_allocation=bool(raw.get("no_over_allocation", True)),
        audit_agrees=bool(raw.get("audit_agrees", True)),
        nothing_left=bool(raw.get("nothing_left", False)),
        denials={k: _bounds(v, f"{where} denials.{k}") for k, v in raw.get("denials", {}).items()},
        denial_rules={k: _bounds(v, f"{where} denial_rules.{k}") for k, v in raw.get("denial_rules", {}).items()},
        peak_in_use=dict(peak),
        takeover_ms_max=_num(raw, "takeover_ms_max", 0, where) or None if "takeover_ms_max" in raw else None,
        takeovers=_bounds(raw["takeovers"], f"{where} takeovers") if "takeovers" in raw else None,
        over_installed_across_masters=_bounds(raw["over_installed_across_masters"], f"{where} over_installed_across_masters")
        if "over_installed_across_masters" in raw else None,
        sites=_site_expects(raw.get("sites", {}), f"{where} sites"),
        failover_refused=_failover_refused(raw.get("failover_refused", {}), f"{where} failover_refused"),
        out_of_service=_bounds(raw.get("out_of_service", 0), f"{where} out_of_service"),
    )


def _failover_refused(raw: Any, where: str) -> dict[str, tuple[int, int]]:
    """`failover_refused = { standby_unlicensed = 1 }`: a drill that rehearses a refused failover
    says which code and how many times; any other refused failover step still fails the run."""
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected {{ code = count or [min, max] }}, e.g. {{ standby_unlicensed = 1 }}, "
                            f"not {raw!r}")
    unknown = sorted(set(raw) - FAILOVER_CODES)
    if unknown:
        raise ScenarioError(f"{where}: unknown error code(s) {', '.join(unknown)} (codes: {', '.join(sorted(FAILOVER_CODES))})")
    return {code: _bounds(value, f"{where}.{code}") for code, value in raw.items()}


def _site_expects(raw: Any, where: str) -> dict[str, SiteExpect]:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected {{ site = {{ refused = ..., short = ..., peak = ... }} }}")
    out = {}
    for site, bounds in raw.items():
        _known(bounds, {"refused", "short", "peak"}, f"{where}.{site}")
        out[site] = SiteExpect(**{k: _bounds(v, f"{where}.{site}.{k}") for k, v in bounds.items()})
    return out


def failover_steps(steps: tuple[Step, ...] | list[Step]) -> list[Step]:
    """The failover steps of a timeline: the actions where a standby takes over what a failed peer
    held, so that a refusal means the installation did not fail over, and fails the run unless
    `[expect] failover_refused` allows it.

    - `takeover`: a standby PBX takes over its failed PBX's leases. The master may refuse it
      (standby_unlicensed R-STBY-2/3, decentral R-MODE-2, ...), or no master answers the standby
      (no_connection): either way the failed PBX's phones lose their licenses at the lease TTL.
    - `fail-master`: the standby master takes over from the killed master. It fails when the PBXs
      (or the auditor) are not on the acting master at the new epoch within 30 s (not_settled).

    Not failover steps: `kill` and `cut` are the failure itself; `restore` is a PBX coming back to
    its own leases (what its sync is refused counts among the denials); `restart-master` is the
    same master again, no standby involved; `reload-licenses` and `partition` are faults, not a
    hand-over; `return-master` is the failed master following the acting one, and its failure
    already stops the run, since the steps after it assume the two swapped roles.
    """
    return [s for s in steps if s.action in FAILOVER_ACTIONS]


def matches(target: str, name: str) -> bool:
    """A step's `pbx = "site"` names PBX "site" and its copies "site1", "site2", ..."""
    return name == target or (name.startswith(target) and name[len(target):].isdigit())
