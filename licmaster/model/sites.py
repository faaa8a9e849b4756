"""The site policy: which PBXs form a site, and per site and family what is kept for it
(`reserve`), what it may hold at most (`max`), and per family which PBXs may draw it at all
(`include`, `exclude`). Pure: parsed from a TOML document's data, enforced as counts.

Semantics (docs/operations.md, "Sites"):
- A node belongs to the first site, in file order, one of whose patterns (a name or a glob)
  matches its name. A standby PBX belongs to the site of the PBX it stands in for, so what it
  takes over, and what it draws afterwards, counts to that site.
- `reserve = N`: while site S holds fewer than N of a family, the others cannot take the last
  N - held(S) free units of it. Counted in units of the family, any version: a guarantee where
  the site's PBXs can use every version installed (`check --policy` says when not).
- `max = N`: site S never holds more than N of the family by checkout.
- `include` / `exclude`: node patterns, or `@site`, of the nodes that alone may / may not draw
  a family; decided when a node's plan is made, so it costs a checkout nothing.
- Only licenses drawn by checkout (floating and device-bound families) are governed; a user
  license is assigned to a person, not drawn by a site's rush, and is refused in a policy.
- A re-sync of leases a PBX held before (a restart, a failover) is taken even over a max or
  into a reserve, as the previous master granted them; the excess is shown (`over`), never
  revoked. New checkouts then wait until the site is back under its limits.

The hot path pays one attribute test per checkout without a policy. With one, a plan made for
a node carries the `Guard` of each family it draws; a checkout calls `Guard.take` once.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import errors as E
from .catalog import FAMILIES, Consumption
from .errors import Denial
from .inventory import Bucket
from .types import Node

POLICY = "policy"  # the rule a policy refusal names
GOVERNED = frozenset(f.name for f in FAMILIES.values() if f.consumption in (Consumption.FLOATING, Consumption.BOUND))
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a site's name, and a node's (as hello accepts it)
_PATTERN_RE = re.compile(r"[A-Za-z0-9._\-*?\[\]!]{1,64}")
_SITE_KEYS = frozenset({"nodes", "reserve", "max"})
_FAMILY_KEYS = frozenset({"include", "exclude"})


class PolicyError(ValueError):
    """A policy that cannot be used; `problems` lists every one found, not only the first."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Site:
    name: str
    nodes: tuple[str, ...]  # names or globs
    reserve: Mapping[str, int] = field(default_factory=dict)
    max: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Access:
    family: str
    include: tuple[str, ...] | None  # None: every node may draw it (unless excluded)
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Policy:
    sites: tuple[Site, ...]
    access: Mapping[str, Access] = field(default_factory=dict)
    source: str = ""

    @property
    def families(self) -> list[str]:
        """Every family a site's reserve or max names, sorted."""
        return sorted({f for s in self.sites for f in (*s.reserve, *s.max)})

    def site_of(self, name: str) -> Site | None:
        """The first site one of whose patterns matches `name`."""
        for site in self.sites:
            if any(_matches(name, pattern) for pattern in site.nodes):
                return site
        return None

    def site_of_node(self, node: Node) -> Site | None:
        """A standby PBX counts to the site of the PBX it stands in for."""
        if node.role == "standby" and node.standby_for:
            return self.site_of(node.standby_for)
        return self.site_of(node.name)

    def refusal(self, node: Node, family: str) -> Denial | None:
        """Why `node` may not draw `family` at all (include / exclude), or None."""
        rule = self.access.get(family)
        if rule is None:
            return None
        site = self.site_of_node(node)
        if rule.include is not None and not any(self._selects(p, node.name, site) for p in rule.include):
            return Denial(E.POLICY, f"{node.name} may not draw {family}: only {', '.join(rule.include)} may", POLICY,
                          {"limit": "include", "family": family})
        hit = next((p for p in rule.exclude if self._selects(p, node.name, site)), None)
        if hit is not None:
            return Denial(E.POLICY, f"{node.name} may not draw {family}: excluded by {hit!r}", POLICY,
                          {"limit": "exclude", "family": family})
        return None

    @staticmethod
    def _selects(pattern: str, name: str, site: Site | None) -> bool:
        if pattern.startswith("@"):
            return site is not None and site.name == pattern[1:]
        return _matches(name, pattern)


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern)


# ==================================================================== reading a policy file


def parse_policy(data: Mapping[str, Any], *, source: str = "policy") -> Policy:
    """A Policy from a TOML document's data, or PolicyError listing every problem at once."""
    problems: list[str] = []
    for key in data:
        if key not in ("site", "family"):
            problems.append(f"{source}: unknown key {key!r} (known: site, family)")
    sites: list[Site] = []
    raw_sites = data.get("site", {})
    if not isinstance(raw_sites, Mapping):
        problems.append(f"{source}: [site] must be tables, one per site ([site.hq])")
        raw_sites = {}
    seen_exact: dict[str, str] = {}
    for name, body in raw_sites.items():
        where = f"{source}: site {name!r}"
        if not _NAME_RE.fullmatch(name):
            problems.append(f"{where}: a site's name is 1 to 64 of A-Z a-z 0-9 . _ -")
        if not _table(body, _SITE_KEYS, where, problems):
            continue
        nodes = _patterns(body.get("nodes"), f"{where}: nodes", problems, sites_allowed=False)
        if not nodes:
            problems.append(f"{where}: nodes lists no node (names or globs, e.g. [\"hq\", \"hq-*\"])")
        for pattern in nodes:
            if not _is_glob(pattern):
                if pattern in seen_exact:
                    problems.append(f"{where}: node {pattern!r} is in site {seen_exact[pattern]!r} already (a node is in one site)")
                seen_exact[pattern] = name
        reserve = _counts(body.get("reserve", {}), f"{where}: reserve", problems)
        most = _counts(body.get("max", {}), f"{where}: max", problems)
        for family, n in reserve.items():
            if family in most and n > most[family]:
                problems.append(f"{where}: reserve {n} of {family} is above its max {most[family]}")
        sites.append(Site(name, tuple(nodes), reserve, most))
    # an exact name listed by one site and matched by an earlier site's glob: it would never be in the later one
    for i, site in enumerate(sites):
        for pattern in site.nodes:
            if _is_glob(pattern):
                continue
            earlier = next((s for s in sites[:i] if any(_is_glob(p) and _matches(pattern, p) for p in s.nodes)), None)
            if earlier is not None:
                problems.append(f"{source}: site {site.name!r}: node {pattern!r} is matched by site {earlier.name!r} first "
                                "(a node is in the first site that matches it)")
    access: dict[str, Access] = {}
    raw_families = data.get("family", {})
    if not isinstance(raw_families, Mapping):
        problems.append(f"{source}: [family] must be tables, one per family ([family.\"PBX-Operator\"])")
        raw_families = {}
    names = {s.name for s in sites}
    for family, body in raw_families.items():
        where = f"{source}: family {family!r}"
        _family(family, where, problems)
        if not _table(body, _FAMILY_KEYS, where, problems):
            continue
        include = _patterns(body.get("include"), f"{where}: include", problems, sites=names) if "include" in body else None
        exclude = _patterns(body.get("exclude", []), f"{where}: exclude", problems, sites=names)
        if include is not None and not include:
            problems.append(f"{where}: include lists nobody: no node could draw it (leave the family out of the licenses instead)")
        access[family] = Access(family, tuple(include) if include is not None else None, tuple(exclude))
    if problems:
        raise PolicyError(problems)
    return Policy(tuple(sites), access, source)


def _table(body: Any, keys: frozenset[str], where: str, problems: list[str]) -> bool:
    """Whether `body` is a table; its unknown keys are problems."""
    if not isinstance(body, Mapping):
        problems.append(f"{where}: must be a table")
        return False
    for key in body:
        if key not in keys:
            problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(keys))})")
    return True


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _family(family: Any, where: str, problems: list[str]) -> bool:
    if family not in FAMILIES:
        problems.append(f"{where}: unknown family {str(family)[:64]!r} (families are named as in licenses and usage, "
                        f"e.g. PBX-Port; known: {', '.join(sorted(GOVERNED))})")
        return False
    if family not in GOVERNED:
        problems.append(f"{where}: {family} is a user license (assigned to a person, not drawn by checkout); "
                        f"a site policy governs {', '.join(sorted(GOVERNED))}")
        return False
    return True


def _counts(value: Any, where: str, problems: list[str]) -> dict[str, int]:
    if not isinstance(value, Mapping):
        problems.append(f"{where}: must be a table of family = count, e.g. {{ \"PBX-Port\" = 20 }}")
        return {}
    out: dict[str, int] = {}
    for family, n in value.items():
        if not _family(family, f"{where}", problems):
            continue
        if n.__class__ is not int or n < 0:
            problems.append(f"{where}: {family} = {str(n)[:32]!r}: a count, 0 or more")
            continue
        out[family] = n
    return out


def _patterns(value: Any, where: str, problems: list[str], *, sites: Iterable[str] = (), sites_allowed: bool = True) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        problems.append(f"{where}: must be a list of node names or globs" + (", or @site" if sites_allowed else ""))
        return []
    known = set(sites)
    out = []
    for pattern in value:
        if sites_allowed and pattern.startswith("@"):
            if pattern[1:] not in known:
                problems.append(f"{where}: {pattern!r} names no site of this policy (known: {', '.join(sorted(known)) or 'none'})")
            out.append(pattern)
        elif not _PATTERN_RE.fullmatch(pattern) or not _can_match_a_node(pattern):
            problems.append(f"{where}: {pattern[:70]!r} matches no node name (names are 1 to 64 of A-Z a-z 0-9 . _ -; "
                            "globs use * ? [...])")
        else:
            out.append(pattern)
    return out


def _can_match_a_node(pattern: str) -> bool:
    """Whether some valid node name matches the glob (it is one of the valid names, with each
    wildcard and class stood in for by a character it allows)."""
    try:
        regex = re.compile(fnmatch.translate(pattern))
    except re.error:
        return False
    literal = re.sub(r"\[!?[^\]]*\]|[*?]", "", pattern)
    if len(literal) > 64:
        return False
    # The wildcards can stand for valid characters; a class may not: try each allowed character.
    for filler in "a0._-Z":
        candidate = re.sub(r"\[(!?)([^\]]*)\]", lambda m: _class_pick(m.group(1), m.group(2)), pattern)
        candidate = candidate.replace("*", "").replace("?", filler)
        if candidate and _NAME_RE.fullmatch(candidate) and regex.match(candidate):
            return True
    return False


def _class_pick(negated: str, body: str) -> str:
    allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
    for c in allowed:
        if (fnmatch.fnmatchcase(c, f"[{body}]") if body else False) != bool(negated):
            return c
    return "\x00"  # nothing valid fits the class


def check_installed(policy: Policy, installed: Mapping[str, int]) -> list[str]:
    """What cannot all hold against these installed counts: reservations summing past them."""
    problems = []
    for family in policy.families:
        reserved = sum(s.reserve.get(family, 0) for s in policy.sites)
        have = installed.get(family, 0)
        if reserved > have:
            parts = ", ".join(f"{s.name} {s.reserve[family]}" for s in policy.sites if s.reserve.get(family))
            problems.append(f"{policy.source}: reservations of {family} sum to {reserved} ({parts}), "
                            f"more than the {have} installed")
    return problems


def reach(policy: Policy, installed: Mapping[str, int]) -> list[dict[str, Any]]:
    """Per site and family: what it is guaranteed (its reserve) and the most it can reach (its
    max, or what the others' reserves leave of what is installed)."""
    out = []
    for site in policy.sites:
        for family in policy.families:
            have = installed.get(family, 0)
            others = sum(s.reserve.get(family, 0) for s in policy.sites if s is not site)
            can = max(0, have - others)
            if family in site.max:
                can = min(can, site.max[family])
            out.append({"site": site.name, "family": family, "guaranteed": min(site.reserve.get(family, 0), have),
                        "reserve": site.reserve.get(family, 0), "max": site.max.get(family), "reach": can})
    return out


# ==================================================================== enforcing it


NO_MAX = 1 << 62  # a site's max when the policy sets none: one int compare on the request path, not a None test


class SiteCount:
    """What one site holds of one family, against its limits."""

    __slots__ = ("family", "held", "max", "reserve", "rules", "site")

    def __init__(self, site: str, family: str, reserve: int, most: int | None, rules: FamilyRules) -> None:
        self.site, self.family, self.rules = site, family, rules
        self.reserve = reserve
        self.max = most if most is not None else NO_MAX
        self.held = 0

    def add(self, n: int) -> None:
        """Count `n` more held (also over a limit: a re-sync, a policy changed under leases)."""
        held = self.held
        if held < self.reserve:
            self.rules.owed -= min(n, self.reserve - held)
        self.held = held + n

    def give(self, n: int) -> None:
        held = self.held - n
        self.held = held
        if held < self.reserve:
            self.rules.owed += min(n, self.reserve - held)


class FamilyRules:
    """One family under the policy: its buckets (what is installed and free) and the units the
    sites' reservations still claim (`owed`: the sum over sites of reserve - held, when above 0)."""

    __slots__ = ("buckets", "family", "only", "owed", "sites")

    def __init__(self, family: str) -> None:
        self.family = family
        self.buckets: tuple[Bucket, ...] = ()
        self.only: Bucket | None = None  # the one bucket, when the family has one (the common case)
        self.owed = 0
        self.sites: dict[str, SiteCount] = {}

    def free(self) -> int:
        free = 0
        for bucket in self.buckets:
            free += bucket.installed - bucket.in_use
        return free


class Guard:
    """One node's checks for one family: its site's count (or none), and the family's reservations."""

    __slots__ = ("mine", "rules")

    def __init__(self, rules: FamilyRules, mine: SiteCount | None) -> None:
        self.rules, self.mine = rules, mine

    def take(self, node: str, resource: str, n: int) -> Denial | None:
        """Check `n` units for `node` against the limits, and count them when they fit. On the
        request path: SiteCount.add and FamilyRules.free are written out here, one call saved each."""
        mine = self.mine
        rules = self.rules
        if mine is None:
            owed_others = rules.owed
            if owed_others and rules.free() - n < owed_others:
                return self._reserved(node, resource, n, owed_others)
            return None
        held = mine.held
        if held + n > mine.max:
            return Denial(E.POLICY, f"site {mine.site} at its max {mine.max} of {mine.family}", POLICY,
                          {"limit": "max", "site": mine.site, "family": mine.family, "max": mine.max, "held": held})
        short = mine.reserve - held  # of its own reserve, still owed to it
        owed_others = rules.owed - short if short > 0 else rules.owed
        if owed_others:
            only = rules.only
            free = only.installed - only.in_use if only is not None else rules.free()
            if free - n < owed_others:
                return self._reserved(node, resource, n, owed_others)
        if short > 0:
            rules.owed -= n if n < short else short
        mine.held = held + n
        return None

    def refusal(self, node: str, resource: str, n: int) -> Denial:
        """Why `n` more units do not fit (called once `take`, or its copy in the request path, said no)."""
        refused = self.take(node, resource, n)
        assert refused is not None, "refusal() asked of a request that fits"
        return refused

    def _reserved(self, node: str, resource: str, n: int, owed_others: int) -> Denial:
        rules = self.rules
        mine = self.mine.site if self.mine is not None else None
        owed = sorted(c.site for c in rules.sites.values() if c.held < c.reserve and c.site != mine)
        return Denial(E.POLICY, f"not enough free {rules.family} for {resource} on {node}: {rules.free()} free, "
                      f"the last {owed_others} reserved for site {', '.join(owed)}", POLICY,
                      {"limit": "reserve", "family": rules.family, "sites": owed, "needed": n, "free": rules.free()})


SiteCounts = dict[str, SiteCount]  # family -> the count of one site


class Enforcer:
    """A policy in force over an inventory's buckets: the counts and each node's guards."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.families: dict[str, FamilyRules] = {}
        for family in policy.families:
            rules = self.families[family] = FamilyRules(family)
            for site in policy.sites:  # every site counted for every family the policy names
                count = SiteCount(site.name, family, site.reserve.get(family, 0), site.max.get(family), rules)
                rules.sites[site.name] = count
                rules.owed += count.reserve

    def bind(self, buckets: Iterable[Bucket]) -> None:
        """The installation's buckets (at start and after each reload)."""
        by_family: dict[str, list[Bucket]] = {}
        for bucket in buckets:
            by_family.setdefault(bucket.family, []).append(bucket)
        for family, rules in self.families.items():
            rules.buckets = tuple(by_family.get(family, ()))
            rules.only = rules.buckets[0] if len(rules.buckets) == 1 else None

    def guards(self, node: Node, families: Iterable[str]) -> dict[str, Guard]:
        """The guards of the families a node's plan draws; none for a family nothing limits."""
        site = self.policy.site_of_node(node)
        out = {}
        for family in families:
            rules = self.families.get(family)
            if rules is None:
                continue
            mine = rules.sites[site.name] if site is not None else None
            if mine is None and not any(c.reserve for c in rules.sites.values()):
                continue  # no site of its own and no reservation to respect
            out[family] = Guard(rules, mine)
        return out

    def site_counts(self, node: Node) -> SiteCounts | None:
        """The counts a node's leases go to, per family: its site's (None: in no site)."""
        site = self.policy.site_of_node(node)
        if site is None:
            return None
        return {family: rules.sites[site.name] for family, rules in self.families.items()}

    def usage(self) -> list[dict[str, Any]]:
        """Per site and family: held, reserve, max, and by how much a limit is passed (`over`)."""
        out = []
        for family, rules in sorted(self.families.items()):
            for count in rules.sites.values():
                most = count.max if count.max != NO_MAX else None
                out.append({"site": count.site, "family": family, "in_use": count.held, "reserve": count.reserve,
                            "max": most, "over": max(0, count.held - most) if most is not None else 0})
        return out

    def broken(self, sites: Iterable[str] | None = None) -> list[str]:
        """Limits not holding right now (a re-sync over a max, a reload that took licenses away):
        the reservations, and the max of every site or of `sites` (what one PBX's re-sync can break)."""
        out = []
        names = None if sites is None else list(sites)
        for family, rules in self.families.items():
            for c in rules.sites.values() if names is None else [rules.sites[name] for name in names]:
                if c.held > c.max:
                    out.append(f"site {c.site} holds {c.held} of {family}, over its max {c.max}")
            if rules.free() < rules.owed:
                out.append(f"{family}: {rules.free()} free, less than the {rules.owed} the reservations still claim")
        return out
