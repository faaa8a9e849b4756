"""The license pool: installed licenses, floating leases, user assignments. Pure and synchronous.

Every operation of PROTOCOL.md is a method here answering a result or a `Denial` (errors are
values). Checkout and checkin are O(1) in the number of installed licenses and live leases:
a per-(node, resource) *plan* (the buckets to draw from, in order) is computed once and cached
until the node or the installation changes.

Invariants (tested with hypothesis): per bucket (family, version, bound MAC), in use <=
installed, except after a reload that removed licenses in use (reported, never revoked
silently); an operation that fails changes nothing; checkout is idempotent per
(node, resource, holder); checking everything in returns the pool to its initial state.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import errors as E
from . import rules
from .catalog import FAMILIES, SMB_PORT, Consumption, LicenseType
from .errors import Denial
from .licensefile import InstalledLicense, Problem, effective_licenses, error

RESOURCES = ("port", "conference", "isdn", "operator", "queue-monitor")
ROLES = ("pbx", "standby", "observer")
PLATFORMS = ("gateway", "ipva")
LICENSING = ("central", "decentral")


@dataclass(frozen=True, slots=True)
class Node:
    """What a PBX said in `hello`."""

    name: str
    role: str = "pbx"
    firmware: int = 13
    platform: str = "gateway"
    mac: str | None = None
    licensing: str = "central"
    model: str | None = None
    standby_for: str | None = None


class Bucket:
    """Licenses of one family, version and binding: the unit of counting."""

    __slots__ = ("family", "version", "bound", "installed", "in_use", "tiers")

    def __init__(self, family: str, version: int | None, bound: str | None) -> None:
        self.family = family
        self.version = version
        self.bound = bound
        self.installed = 0
        self.in_use = 0
        self.tiers: dict[str, int] = {}

    @property
    def key(self) -> tuple[str, int | None, str | None]:
        return (self.family, self.version, self.bound)

    @property
    def free(self) -> int:
        return self.installed - self.in_use

    def label(self) -> str:
        v = "" if self.version is None else str(self.version)
        name = f"Port{v}" if self.family == SMB_PORT else f"{self.family}{v}"
        return f"{name} bound to {self.bound}" if self.bound else name

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "version": self.version, "bound": self.bound,
                "installed": self.installed, "in_use": self.in_use}


# A step of a plan: draw `count` from the first buckets with room, in order.
Step = tuple[tuple[Bucket, ...], int]


class Lease:
    __slots__ = ("id", "node", "resource", "holder", "took", "count", "interface", "view")

    def __init__(self, lease_id: str, node: str, resource: str, holder: str,
                 took: tuple[tuple[Bucket, int], ...], count: int, interface: str | None,
                 view: TookView | None = None) -> None:
        self.id = lease_id
        self.node = node
        self.resource = resource
        self.holder = holder
        self.took = took
        self.count = count
        self.interface = interface
        self.view = view  # shared from the plan on the fast path, else made on demand

    def took_wire(self) -> list[dict[str, Any]]:
        return _took_wire(self.took)



# A granted checkout: (lease, new), where `new` is False when an identical checkout returned the
# existing lease. A plain tuple: an instance of a class costs ~2,000 CPU instructions more, and a
# checkout is ~30,000 in all.
Grant = tuple[Lease, bool]


class Plan:
    """How a node draws a resource: the steps, and shortcuts for the common single-bucket case."""

    __slots__ = ("steps", "single", "took_one", "view")

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        only = len(steps) == 1 and len(steps[0][0]) == 1
        self.single: Bucket | None = steps[0][0][0] if only else None
        # a fixed single unit (per == 1): the `took` tuple can be shared by every lease
        self.took_one = ((self.single, 1),) if only and steps[0][1] == 1 else None
        self.view = TookView(self.took_one) if self.took_one else None


class _Held:
    """One node's floating leases, by id and by (resource, holder), and its cached plans.
    Kept per node so that every dict the hot path touches stays small."""

    __slots__ = ("by_id", "by_resource", "plans")

    def __init__(self) -> None:
        self.by_id: dict[str, Lease] = {}
        self.by_resource: dict[str, dict[str, Lease]] = {}
        self.plans: dict[Any, Plan | Denial] = {}


class TookView:
    """What a lease took, as the wire lists it and as a journal label; `packed` is for the
    codec layer to fill once (the model does not encode)."""

    __slots__ = ("wire", "label", "packed")

    def __init__(self, took: tuple[tuple[Bucket, int], ...]) -> None:
        self.wire = _took_wire(took)
        self.label = " ".join(f"{b.label()}:{n}" for b, n in took)
        self.packed: bytes | None = None


@dataclass(frozen=True, slots=True)
class SyncEntry:
    resource: str
    holder: str
    count: int = 1
    interface: str | None = None


@dataclass(slots=True)
class SyncResult:
    granted: list[Lease] = field(default_factory=list)
    released: list[Lease] = field(default_factory=list)
    denied: list[tuple[int, SyncEntry, Denial]] = field(default_factory=list)


@dataclass(slots=True)
class Assignment:
    family: str
    bucket: Bucket | None  # None: covered by the user's PBX-UC, or a free app
    node: str


@dataclass(slots=True)
class AssignResult:
    took: list[dict[str, Any]]
    warnings: list[Problem]
    changed: list[tuple[str, int | None]] = field(default_factory=list)  # (family, version) recorded or removed


@dataclass(slots=True)
class ReloadReport:
    """What a reload changed, and what no longer fits (never revoked silently)."""

    problems: list[Problem]
    overcommitted: list[dict[str, Any]]


class Pool:
    def __init__(self, licenses: Iterable[InstalledLicense] = (), *, today: dt.date | None = None) -> None:
        self._today = today
        self._buckets: dict[tuple[str, int | None, str | None], Bucket] = {}
        self._family_buckets: dict[str, list[Bucket]] = defaultdict(list)  # unbound, by version
        self._bound_buckets: dict[tuple[str, str], Bucket] = {}  # (family, mac)
        self._bound_macs: dict[str, set[str]] = defaultdict(set)
        self._versions: dict[str, dict[int, int]] = defaultdict(dict)  # family -> version -> installed
        self.installed: list[InstalledLicense] = []
        self.nodes: dict[str, Node] = {}
        self._held: dict[str, _Held] = {}
        self._wire: dict[tuple[tuple[Bucket, int], ...], TookView] = {}
        self._lease_count = 0
        self._smb = False  # Ports come from an unconverted SMB-Port license
        self._ids = map(str, itertools.count(1))  # lease ids, as the wire carries them
        self.users: dict[str, dict[str, Assignment]] = {}
        self._smb_holder: str | None = None
        self._smb_leases = 0
        self.install(licenses)

    # ---------------------------------------------------------------- installation

    def install(self, licenses: Iterable[InstalledLicense], *, today: dt.date | None = None) -> ReloadReport:
        """Replace the installed licenses (load or reload) without touching leases or assignments.

        R-HW-1: a hardware license can never disappear; if the new set has fewer, the old count
        stays and the reload reports it. What is in use beyond the new capacity stays in use
        (never revoked silently) and is listed in `overcommitted`. `today` decides which SSA
        terms still run (R-SSA-1); by default the pool's date, or the real one.
        """
        new = list(licenses)
        problems: list[Problem] = []
        new_counts = _count_by_key(effective_licenses(new, today or self._today))
        for key, bucket in self._buckets.items():
            family = FAMILIES[key[0]]
            if family.is_hardware and new_counts.get(key, (0, {}))[0] < bucket.installed:
                kept = bucket.installed - new_counts.get(key, (0, {}))[0]
                problems.append(error(
                    f"{kept} × {bucket.label()} cannot be removed: hardware licenses stay bound to their device; kept", "R-HW-1"))
                new.append(InstalledLicense(_type_of(bucket), kept, bucket.bound, source="kept (R-HW-1)"))
                prev = new_counts.get(key, (0, {}))
                new_counts[key] = (bucket.installed, prev[1])
        for bucket in self._buckets.values():
            bucket.installed = 0
            bucket.tiers = {}
        for key, (count, tiers) in new_counts.items():
            bucket = self._bucket(key)
            bucket.installed = count
            bucket.tiers = tiers
        self.installed = new
        self._reindex()
        over = [dict(b.to_dict(), over=b.in_use - b.installed) for b in self._buckets.values() if b.in_use > b.installed]
        for o in over:
            problems.append(error(
                f"{o['in_use']} × {o['family']}{o['version'] or ''} in use but only {o['installed']} installed now: "
                "no lease is revoked, new requests wait until use falls below the installed count"))
        return ReloadReport(problems, over)

    def _bucket(self, key: tuple[str, int | None, str | None]) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = Bucket(*key)
        return bucket

    def _reindex(self) -> None:
        self._family_buckets.clear()
        self._bound_buckets.clear()
        self._bound_macs.clear()
        self._versions.clear()
        # Buckets with nothing installed and nothing in use are dropped; in-use ones stay visible.
        for key in [k for k, b in self._buckets.items() if b.installed == 0 and b.in_use == 0]:
            del self._buckets[key]
        for bucket in sorted(self._buckets.values(), key=lambda b: (b.family, b.version or 0, b.bound or "")):
            if bucket.bound is None:
                self._family_buckets[bucket.family].append(bucket)
            else:
                self._bound_buckets[(bucket.family, bucket.bound)] = bucket
                self._bound_macs[bucket.family].add(bucket.bound)
            if bucket.version is not None and bucket.installed:
                versions = self._versions[bucket.family]
                versions[bucket.version] = versions.get(bucket.version, 0) + bucket.installed
        for held in self._held.values():
            held.plans.clear()
        self._smb = bool(self._family_buckets.get(SMB_PORT))
        self._wire.clear()

    @property
    def smb_installation(self) -> bool:
        """True when Ports come from an (unconverted) SMB-Port license (R-SMB)."""
        return self._smb

    @property
    def leases(self) -> dict[str, Lease]:
        """Every live floating lease by id (a view built on demand: for reading, not the hot path)."""
        return {lid: lease for held in self._held.values() for lid, lease in held.by_id.items()}

    @property
    def lease_count(self) -> int:
        return self._lease_count

    def took_view(self, lease: Lease) -> TookView:
        """The lease's `took` as the wire lists it, and as a short label for the journal; cached
        per distinct `took` (shared by every lease of a single-bucket plan)."""
        view = lease.view
        if view is None:
            view = self._wire.get(lease.took)
            if view is None:
                if len(self._wire) > 4096:
                    self._wire.clear()
                view = self._wire[lease.took] = TookView(lease.took)
            lease.view = view
        return view

    def find_lease(self, node: str, resource: str, holder: str) -> Lease | None:
        held = self._held.get(node)
        return held.by_resource.get(resource, {}).get(holder) if held else None

    def remove_license(self, lic: InstalledLicense) -> ReloadReport | Denial:
        """Remove installed licenses. R-HW-1: hardware licenses can never be removed."""
        if FAMILIES[lic.family].is_hardware:
            return Denial(E.BAD_REQUEST, f"{lic.type} is a hardware license bound to {lic.bind}: it can never be removed", "R-HW-1")
        remaining: list[InstalledLicense] = []
        to_remove = lic.count
        for have in self.installed:
            if to_remove and have.type == lic.type and have.bind == lic.bind:
                take = min(have.count, to_remove)
                to_remove -= take
                if have.count > take:
                    remaining.append(InstalledLicense(have.type, have.count - take, have.bind, have.ssa_until, have.rented, have.source))
                continue
            remaining.append(have)
        if to_remove:
            return Denial(E.UNKNOWN_LICENSE, f"cannot remove {lic}: only {lic.count - to_remove} installed")
        return self.install(remaining)

    # ---------------------------------------------------------------- nodes

    def set_node(self, node: Node) -> list[Lease]:
        """Register or update what a PBX said in `hello`.

        A node that comes back *changed* (another firmware, platform, MAC, licensing or role)
        loses its floating leases: they were granted under the rules for what it was (R-VER,
        R-IPVA, R-MODE), and its `sync` takes back what the rules allow it now. The leases
        released are returned. The same node saying hello again keeps everything.
        """
        old = self.nodes.get(node.name)
        self.nodes[node.name] = node
        if old is None or old == node:
            return []
        held = self._held.get(node.name)
        if held is None:
            return []
        held.plans.clear()
        return self.release_node(node.name)

    def forget_node(self, name: str) -> bool:
        """Drop what the pool knows of a node that holds no floating lease any more (its session
        ended): node names come and go, and the pool must not grow with every name ever seen."""
        held = self._held.get(name)
        if held is not None and held.by_id:
            return False
        self._held.pop(name, None)
        self.nodes.pop(name, None)
        return True

    def _node(self, name: str) -> Node:
        node = self.nodes.get(name)
        if node is None:
            node = self.nodes[name] = Node(name)
        return node

    # ---------------------------------------------------------------- floating leases

    def checkout(self, node: str, resource: str, holder: str, count: int = 1, interface: str | None = None) -> Grant | Denial:
        held = self._held.get(node)
        if held is None:
            held = self._held[node] = _Held()
        by_holder = held.by_resource.get(resource)
        if by_holder is None:
            by_holder = held.by_resource[resource] = {}
        else:
            lease = by_holder.get(holder)
            if lease is not None:
                return lease, False  # idempotent: a retried checkout takes nothing more
        if count < 1 or (resource == "isdn" and count > rules.CHANNELS_PER_INTERFACE.get(interface or "", count)):
            return _bad_count(resource, interface, count)
        plan = held.plans.get(resource if interface is None else (resource, interface))
        if plan is None:
            plan = self._plan(held, node, resource, interface)
        if plan.__class__ is Denial:
            return plan  # type: ignore[return-value]
        if self._smb and resource == "port" and self._smb_holder is not None and self._smb_holder != node:
            return Denial(E.SMB, f"the SMB-Port license serves only the PBX that holds it ({self._smb_holder}); "
                          "SMB-Port does not work in master/slave installations", "R-SMB-3")
        single = plan.single  # type: ignore[union-attr]
        if single is not None and (plan.took_one is not None or count == 1):  # type: ignore[union-attr]
            # Fast path: one unit from one bucket (a Port on a gateway, an operator, ...).
            if single.installed - single.in_use < 1:
                return self._exhausted(node, resource, plan.steps, count)  # type: ignore[union-attr]
            single.in_use += 1
            took = plan.took_one or ((single, 1),)  # type: ignore[union-attr]
            view = plan.view  # type: ignore[union-attr]
        else:
            took_or_denial = self._allocate(node, resource, plan.steps, count)  # type: ignore[union-attr]
            if took_or_denial.__class__ is Denial:
                return took_or_denial  # type: ignore[return-value]
            took = took_or_denial  # type: ignore[assignment]
            view = None
        lease = Lease(next(self._ids), node, resource, holder, took, count, interface, view)
        held.by_id[lease.id] = lease
        by_holder[holder] = lease
        self._lease_count += 1
        if self._smb:
            self._note_smb(lease, +1)
        return lease, True

    def _plan(self, held: _Held, node: str, resource: str, interface: str | None) -> Plan | Denial:
        steps = self._make_plan(self._node(node), resource, interface)
        plan = steps if isinstance(steps, Denial) else Plan(steps)
        held.plans[resource if interface is None else (resource, interface)] = plan
        return plan

    def _attach(self, held: _Held, lease: Lease) -> None:
        held.by_id[lease.id] = lease
        by_holder = held.by_resource.get(lease.resource)
        if by_holder is None:
            by_holder = held.by_resource[lease.resource] = {}
        by_holder[lease.holder] = lease
        self._lease_count += 1
        if self._smb:
            self._note_smb(lease, +1)

    def _detach(self, held: _Held, lease: Lease) -> None:
        del held.by_id[lease.id]
        del held.by_resource[lease.resource][lease.holder]
        self._lease_count -= 1
        if self._smb_leases:
            self._note_smb(lease, -1)

    def _note_smb(self, lease: Lease, delta: int) -> None:
        """R-SMB-3: the SMB-Port serves one PBX; it is that PBX's while it holds an SMB Port."""
        if lease.resource == "port" and lease.took and lease.took[0][0].family == SMB_PORT:
            self._smb_leases += delta
            self._smb_holder = lease.node if self._smb_leases else None

    def _allocate(self, node: str, resource: str, steps: list[Step], count: int) -> tuple[tuple[Bucket, int], ...] | Denial:
        """All or nothing: compute every draw first, apply only if all fit."""
        draws: list[tuple[Bucket, int]] = []
        for buckets, per in steps:
            need = per if per else count
            for bucket in buckets:
                if need == 0:
                    break
                already = sum(n for b, n in draws if b is bucket)
                n = min(need, bucket.installed - bucket.in_use - already)
                if n > 0:
                    draws.append((bucket, n))
                    need -= n
            if need:
                return self._exhausted(node, resource, [(buckets, per)], per if per else count)
        for bucket, n in draws:
            bucket.in_use += n
        return tuple(draws)

    def _exhausted(self, node: str, resource: str, steps: list[Step], needed: int) -> Denial:
        for buckets, per in steps:
            free = sum(max(0, b.free) for b in buckets)
            want = per if per else needed
            if free < want:
                family = buckets[0].family if buckets else "?"
                families = " or ".join(sorted({b.family for b in buckets}))
                return Denial(E.EXHAUSTED, f"not enough free {families} for {resource} on {node}: "
                              f"{want} needed, {free} free of {sum(b.installed for b in buckets)} installed",
                              _exhausted_rule(family, resource), {"family": family, "free": free, "needed": want})
        return Denial(E.EXHAUSTED, f"not enough free licenses for {resource} on {node}", None, {"needed": needed})

    def checkin(self, node: str, lease_id: str) -> Lease | None:
        """Give a lease back. Unknown, already returned or another node's: nothing happens (None)."""
        held = self._held.get(node)
        if held is None:
            return None
        lease = held.by_id.pop(lease_id, None)
        if lease is None:
            return None
        del held.by_resource[lease.resource][lease.holder]
        self._lease_count -= 1
        for bucket, n in lease.took:
            bucket.in_use -= n
        if self._smb_leases:
            self._note_smb(lease, -1)
        return lease

    def _release(self, held: _Held, lease: Lease) -> None:
        self._detach(held, lease)
        for bucket, n in lease.took:
            bucket.in_use -= n

    def release_node(self, node: str) -> list[Lease]:
        """Free every floating lease of a node (expiry, `bye`). User assignments stay (R-USER-1)."""
        held = self._held.get(node)
        if held is None:
            return []
        leases = list(held.by_id.values())
        for lease in leases:
            self._release(held, lease)
        return leases

    def node_leases(self, node: str) -> list[Lease]:
        held = self._held.get(node)
        return list(held.by_id.values()) if held else []

    def sync(self, node: str, entries: Sequence[SyncEntry]) -> SyncResult:
        """Make the node's floating leases exactly `entries`, in one step: leases not listed are
        checked in first (their capacity can serve the new ones), listed ones kept, new ones taken."""
        result = SyncResult()
        wanted = {(e.resource, e.holder) for e in entries}
        held = self._held.get(node)
        for lease in list(held.by_id.values()) if held else []:
            if (lease.resource, lease.holder) not in wanted:
                self._release(held, lease)  # type: ignore[arg-type]
                result.released.append(lease)
        seen: set[tuple[str, str]] = set()
        for i, entry in enumerate(entries):
            if (entry.resource, entry.holder) in seen:
                continue
            seen.add((entry.resource, entry.holder))
            outcome = self.checkout(node, entry.resource, entry.holder, entry.count, entry.interface)
            if outcome.__class__ is Denial:
                result.denied.append((i, entry, outcome))  # type: ignore[arg-type]
            else:
                result.granted.append(outcome[0])  # type: ignore[index]
        return result

    # ---------------------------------------------------------------- plans

    def _make_plan(self, node: Node, resource: str, interface: str | None) -> list[Step] | Denial:
        if node.licensing == "decentral":
            return Denial(E.DECENTRAL, f"{node.name} has licenses installed locally (decentral): it cannot use any license "
                          "of the master, and does not fall back on it when it runs short", "R-MODE-2")
        if node.role == "observer":
            return E.bad_request("role", "an observer is read-only and cannot check licenses out")
        if resource == "port":
            return self._plan_port(node)
        if resource == "conference":
            return self._plan_conference(node)
        if resource == "isdn":
            return self._plan_isdn(node, interface)
        if resource == "operator":
            return self._plan_floating(node, "PBX-Operator", 1)
        if resource == "queue-monitor":
            if not rules.queue_monitor_supported(node.firmware):
                return Denial(E.VERSION, f"Queue Monitor needs PBX software V{rules.QUEUE_MONITOR_MIN_FIRMWARE} or newer; "
                              f"{node.name} runs V{node.firmware}", "R-VER-4")
            return self._plan_floating(node, "PBX-QueueMonitor", 1)
        return Denial(E.UNKNOWN_RESOURCE, f"unknown resource {resource!r}: expected one of {', '.join(RESOURCES)}")

    def _version_denial(self, family: str, firmware: int, node: str) -> Denial | None:
        """R-VER-1/R-VER-2: the family serves nothing to this firmware if any license caps it."""
        cap = rules.capping_versions(self._versions.get(family, {}), firmware)
        if not cap:
            return None
        what = ", ".join(f"{n} × {family}{v}" for v, n in cap)
        return Denial(E.VERSION, f"{family} is capped at V{cap[0][0]} by {what}: {node} runs V{firmware}; "
                      "the lowest version decides for the whole installation (remove or upgrade them)", "R-VER-2",
                      {"family": family, "capped_at": cap[0][0]})

    def _plan_floating(self, node: Node, family: str, per: int) -> list[Step] | Denial:
        denial = self._version_denial(family, node.firmware, node.name)
        if denial:
            return denial
        return [(tuple(self._family_buckets.get(family, ())), per)]

    def _plan_port(self, node: Node) -> list[Step] | Denial:
        family = SMB_PORT if self.smb_installation else "PBX-Port"
        steps = self._plan_floating(node, family, 1)
        if isinstance(steps, Denial):
            return steps
        if node.platform == "ipva":  # R-IPVA-1: a Port on an IPVA takes an IPVA license too
            ipva = self._plan_bound(node, "PBX-IPVA", 1, "R-IPVA-2")
            if isinstance(ipva, Denial):
                return ipva
            denial = self._version_denial("PBX-IPVA", node.firmware, node.name)
            if denial:
                return denial
            steps = steps + ipva
        return steps

    def _plan_bound(self, node: Node, family: str, per: int, rule: str) -> list[Step] | Denial:
        """A device-bound license: only the device with that MAC draws it (R-HW-1, R-IPVA-2)."""
        bucket = self._bound_buckets.get((family, node.mac or ""))
        if bucket is None:
            others = self._bound_macs.get(family)
            if others:
                return Denial(E.BOUND_ELSEWHERE, f"every {family} license is bound to another device "
                              f"({', '.join(sorted(others))}); {node.name} ({node.mac}) has none", rule, {"family": family})
            return [((), per)]
        return [((bucket,), per)]

    def _plan_conference(self, node: Node) -> list[Step] | Denial:
        """R-CHAN-3 (Policy): the bridge's own Relay-Channels first, then pooled PBX-Channels."""
        own = self._bound_buckets.get(("Relay-Channels", node.mac or ""))
        buckets: tuple[Bucket, ...] = (own,) if own else ()
        if self._version_denial("PBX-Channels", node.firmware, node.name) is None:
            buckets += tuple(self._family_buckets.get("PBX-Channels", ()))
        elif not buckets:
            return self._version_denial("PBX-Channels", node.firmware, node.name)  # type: ignore[return-value]
        return [(buckets, 0)]

    def _plan_isdn(self, node: Node, interface: str | None) -> list[Step] | Denial:
        if interface not in rules.CHANNELS_PER_INTERFACE:
            return E.bad_request("interface", "isdn needs interface \"bri\" or \"pri\"")
        needs = rules.isdn_licenses(node.model, interface, 1)
        steps: list[Step] = []
        for family, n in needs:
            bound = self._plan_bound(node, family, n if family != "Relay-Channels" else 0, "R-HW-1")
            if isinstance(bound, Denial):
                return bound
            steps += bound
        return steps

    # ---------------------------------------------------------------- standby

    def standby_status(self, firmware: int = 13) -> Denial | None:
        """R-STBY-2, R-STBY-3: None when the standby function is available for this firmware."""
        if self.smb_installation:
            return Denial(E.STANDBY_UNLICENSED, "the standby function does not work with SMB-Port licenses", "R-STBY-3")
        ports = sum(b.installed for b in self._family_buckets.get("PBX-Port", ()))
        cap = rules.capping_versions(self._versions.get("PBX-Standby", {}), firmware)
        standby = 0 if cap else sum(b.installed for b in self._family_buckets.get("PBX-Standby", ()))
        short = rules.standby_shortfall(standby, ports)
        if short:
            why = f" ({', '.join(f'{n} × PBX-Standby{v}' for v, n in cap)} cap it below V{firmware}, R-VER-1)" if cap else ""
            return Denial(E.STANDBY_UNLICENSED, f"the standby function needs as many Standby licenses as Port licenses: "
                          f"{standby} usable Standby{why} for {ports} Port", "R-STBY-2",
                          {"standby": standby, "ports": ports})
        return None

    def takeover(self, standby: str, failed: str) -> list[Lease] | Denial:
        """Move every floating lease of `failed` to `standby` at once; nothing counted twice."""
        node = self._node(standby)
        if node.licensing == "decentral":
            return Denial(E.DECENTRAL, f"{standby} is decentral and cannot use the master's licenses", "R-MODE-2")
        if node.role != "standby":
            return E.bad_request("role", f"{standby} said role {node.role!r}; only a standby may take over")
        if node.standby_for != failed:
            return E.bad_request("failed", f"{standby} is the standby for {node.standby_for!r}, not {failed!r}")
        denial = self.standby_status(node.firmware)
        if denial:
            return denial
        moved: list[Lease] = []
        source = self._held.get(failed)
        target = self._held.get(standby)
        if target is None:
            target = self._held[standby] = _Held()
        for lease in list(source.by_id.values()) if source else []:
            if self.find_lease(standby, lease.resource, lease.holder) is not None:
                self._release(source, lease)  # type: ignore[arg-type]  # the standby holds it already
                continue
            self._detach(source, lease)  # type: ignore[arg-type]
            lease.node = standby
            self._attach(target, lease)
            moved.append(lease)
        return moved

    # ---------------------------------------------------------------- user licenses

    def assign(self, node: str, user: str, families: Sequence[str]) -> AssignResult | Denial:
        """Configure user licenses (R-USER-1): durable, all or nothing, prerequisites checked
        against what the user holds afterwards (R-USER-2, R-APP-1, R-UC-1)."""
        n = self._node(node)
        denial = self._check_user_families(n, families)
        if denial:
            return denial
        held = self.users.get(user, {})
        after = set(held) | set(families)
        missing = rules.missing_prerequisites(after)
        if missing:
            return _prerequisite_denial(user, missing)
        # R-UC-1: a module the user's PBX-UC holds takes no license and is not recorded apart.
        covered = rules.UC_MODULES if "PBX-UC" in after else frozenset()
        draws: list[tuple[str, Bucket | None]] = []
        for family in dict.fromkeys(families):
            if family in held or family in covered:
                continue
            if FAMILIES[family].consumption is Consumption.NONE:
                draws.append((family, None))
                continue
            bucket = self._user_bucket(family, n)
            if isinstance(bucket, Denial):
                return bucket
            draws.append((family, bucket))
        took = []
        changed: list[tuple[str, int | None]] = []
        record = self.users.setdefault(user, {})
        for family, bucket in draws:
            if bucket is not None:
                bucket.in_use += 1
                took.append({"family": family, "version": bucket.version, "count": 1})
            record[family] = Assignment(family, bucket, node)
            changed.append((family, bucket.version if bucket else None))
        warnings = []
        if rules.CONFERENCE_APP in families and not any(
                b.installed for f in rules.CHANNEL_FAMILIES for b in self._buckets.values() if b.family == f):
            warnings.append(Problem("warning", "the Conference App is useful only with conference channels licensed; none are installed", "R-APP-2"))
        return AssignResult(took, warnings, changed)

    def _check_user_families(self, node: Node, families: Sequence[str]) -> Denial | None:
        if node.licensing == "decentral":
            return Denial(E.DECENTRAL, f"{node.name} has licenses installed locally (decentral): it cannot use the master's", "R-MODE-2")
        if node.role == "observer":
            return E.bad_request("role", "an observer is read-only")
        for family in families:
            fam = FAMILIES.get(family)
            if fam is None:
                return Denial(E.UNKNOWN_LICENSE, f"unknown license family {family!r}", None, {"family": family})
            if fam.consumption not in (Consumption.USER, Consumption.NONE):
                return E.bad_request("families", f"{family} is not a user license ({fam.consumption.value}); R-USER-1 lists the user licenses")
        return None

    def _user_bucket(self, family: str, node: Node) -> Bucket | Denial:
        if family == "PBX-VoicemailUser":
            versions = self._versions.get(family, {})
            blocked = sorted(v for v in versions if not rules.voicemail_runs(v, node.firmware) and v >= rules.VOICEMAIL_V13)
            if blocked:
                return Denial(E.VERSION, f"PBX-VoicemailUser{blocked[0]} cannot run on PBX software V{node.firmware}: "
                              f"V13 Voicemail User licenses do not downgrade to V9 or older", "R-VER-3")
        denial = self._version_denial(family, node.firmware, node.name)
        if denial:
            return denial
        for bucket in self._family_buckets.get(family, ()):
            if bucket.free > 0:
                return bucket
        installed = sum(b.installed for b in self._family_buckets.get(family, ()))
        return Denial(E.EXHAUSTED, f"no free {family}: all {installed} installed are configured on users", "R-USER-1",
                      {"family": family, "free": 0, "needed": 1})

    def unassign(self, node: str, user: str, families: Sequence[str]) -> AssignResult | Denial:
        n = self._node(node)
        denial = self._check_user_families(n, families)
        if denial:
            return denial
        held = self.users.get(user, {})
        after = set(held) - set(families)
        missing = rules.missing_prerequisites(after)
        if missing:
            return _prerequisite_denial(user, missing, removing=True)
        returned = []
        changed: list[tuple[str, int | None]] = []
        for family in dict.fromkeys(families):
            assignment = held.pop(family, None)
            if assignment is None:
                continue
            changed.append((family, assignment.bucket.version if assignment.bucket else None))
            if assignment.bucket is not None:
                assignment.bucket.in_use -= 1
                returned.append({"family": family, "version": assignment.bucket.version, "count": 1})
        if not held:
            self.users.pop(user, None)
        return AssignResult(returned, [], changed)

    def restore_assignment(self, user: str, family: str, version: int | None, node: str) -> None:
        """Re-apply a durable assignment after a restart, exactly as it was (even past capacity:
        a reload that shrank the pool is reported by `install`, never revoked here)."""
        bucket = None
        if version is not None:
            known = (family, version, None) in self._buckets
            bucket = self._bucket((family, version, None))
            bucket.in_use += 1
            if not known:
                self._reindex()
        self.users.setdefault(user, {})[family] = Assignment(family, bucket, node)

    def recording_allowed(self) -> Denial | None:
        """R-REC-1: recording queues, conference rooms or the gateway needs a user with the recorder license."""
        if any(rules.RECORDER in held for held in self.users.values()):
            return None
        return Denial(E.PREREQUISITE, "recording waiting queues, conference rooms or the gateway needs at least one user "
                      f"with the {rules.RECORDER} license", "R-REC-1", {"missing": [rules.RECORDER]})

    # ---------------------------------------------------------------- reading

    def usage(self) -> list[dict[str, Any]]:
        return [b.to_dict() for b in sorted(self._buckets.values(), key=lambda b: (b.family, b.version or 0, b.bound or ""))]

    def buckets(self) -> list[Bucket]:
        return list(self._buckets.values())


def _took_wire(took: tuple[tuple[Bucket, int], ...]) -> list[dict[str, Any]]:
    """What a lease took, as the wire lists it."""
    return [{"family": b.family, "version": b.version, "count": n} for b, n in took]


def _count_by_key(licenses: list[InstalledLicense]) -> dict[tuple[str, int | None, str | None], tuple[int, dict[str, int]]]:
    out: dict[tuple[str, int | None, str | None], tuple[int, dict[str, int]]] = {}
    for lic in licenses:
        if FAMILIES[lic.family].consumption is Consumption.NONE:
            continue
        key = (lic.family, lic.version, lic.bind)
        count, tiers = out.get(key, (0, {}))
        tiers = dict(tiers)
        tiers[lic.tier] = tiers.get(lic.tier, 0) + lic.count
        out[key] = (count + lic.count, tiers)
    return out


def _type_of(bucket: Bucket) -> LicenseType:
    return LicenseType(bucket.family, bucket.version)


def _bad_count(resource: str, interface: str | None, count: int) -> Denial:
    if count < 1:
        return E.bad_request("count", f"must be at least 1, not {count}")
    most = rules.CHANNELS_PER_INTERFACE[interface or ""]
    return Denial(E.BAD_REQUEST, f"field 'count': a {interface} interface has at most {most} B-channels, not {count}",
                  "R-HW-3", {"field": "count"})


def _exhausted_rule(family: str, resource: str) -> str | None:
    if resource == "conference":
        return "R-CHAN-1"  # whether the bridge's own Relay-Channels or pooled PBX-Channels ran out
    return {"PBX-Port": "R-PORT-1", SMB_PORT: "R-SMB-2", "PBX-IPVA": "R-IPVA-1", "PBX-Channels": "R-CHAN-1",
            "Relay-Channels": "R-HW-3", "Relay-BRIs": "R-HW-3", "Relay-PRIs": "R-HW-3",
            "PBX-Operator": "R-OP-1", "PBX-QueueMonitor": "R-QM-1"}.get(family)


def _prerequisite_denial(user: str, missing: list[tuple[str, tuple[str, ...], str]], removing: bool = False) -> Denial:
    family, lacking, rule = missing[0]
    verb = "would lose" if removing else "needs"
    return Denial(E.PREREQUISITE, f"{family} on user {user} {verb} {' and '.join(lacking)} (or PBX-UC) on the same user",
                  rule, {"missing": list(lacking), "family": family})
