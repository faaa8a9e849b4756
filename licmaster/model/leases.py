"""Floating leases: checkout, checkin, sync, release, moving a failed PBX's leases to its
standby. The hot path of the master: a checkout is one function that counts against a cached
plan (planning.py); a checkin is a few dict operations. Pure.

Per node, a `Held` keeps its leases by id and by (resource, holder) and its cached plans, so
every dict the hot path touches stays small whatever the installation's size.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import errors as E
from . import rules
from .catalog import SMB_PORT
from .errors import Denial
from .inventory import Bucket
from .planning import Plan, Planner, Step, Took, TookView, took_wire
from .sites import Enforcer, Guard, SiteCounts
from .types import Node, SyncEntry


class Lease:
    __slots__ = ("count", "holder", "id", "interface", "node", "resource", "took", "view")

    def __init__(self, lease_id: str, node: str, resource: str, holder: str, took: Took, count: int,
                 interface: str | None, view: TookView | None = None) -> None:
        self.id = lease_id
        self.node = node
        self.resource = resource
        self.holder = holder
        self.took = took
        self.count = count
        self.interface = interface
        self.view = view  # shared from the plan on the fast path, else made on demand

    def took_wire(self) -> list[dict[str, Any]]:
        return took_wire(self.took)


# A granted checkout: (lease, new), where `new` is False when an identical checkout returned the
# existing lease. A plain tuple: an instance of a class costs ~2,000 CPU instructions more, and a
# checkout is ~30,000 in all.
Grant = tuple[Lease, bool]
PlanKey = str | tuple[str, str] | tuple[str, int]  # resource; (resource, interface) for isdn; (resource, client_version)


class Held:
    """One node's floating leases, by id and by (resource, holder), and its cached plans; under a
    site policy, its site's count per family (a node's leases all count to its site: a standby
    PBX's site is the one of the PBX it stands in for, so leases it takes over stay where they were)."""

    __slots__ = ("by_id", "by_resource", "plans", "site_counts")

    def __init__(self) -> None:
        self.by_id: dict[str, Lease] = {}
        self.by_resource: dict[str, dict[str, Lease]] = {}
        self.plans: dict[PlanKey, Plan | Denial] = {}
        self.site_counts: SiteCounts | None = None


@dataclass(slots=True)
class SyncResult:
    granted: list[Lease] = field(default_factory=list)
    released: list[Lease] = field(default_factory=list)
    denied: list[tuple[int, SyncEntry, Denial]] = field(default_factory=list)


class LeaseBook:
    """Every floating lease, by node."""

    def __init__(self, planner: Planner, nodes: dict[str, Node]) -> None:
        self.planner = planner
        self.nodes = nodes  # shared with the pool: what each PBX said in hello
        self.held: dict[str, Held] = {}
        self.count = 0
        self._views: dict[Took, TookView] = {}
        self._counter = itertools.count(1)
        self.id_base = 0
        self._ids = map(str, self._counter)  # lease ids, as the wire carries them (see name_leases)
        self._smb_holder: str | None = None  # R-SMB-3: the one PBX an SMB-Port serves
        self._smb_leases = 0
        self.enforcer: Enforcer | None = None  # the site policy in force, if any; with one, set_policy
        # puts the counting checkout and checkin in the instance's place
        self._enforcing = True  # False while a sync re-takes what was held before (past the policy's limits)

    def name_leases(self, base: int) -> None:
        """Lease ids from now on count from `base` + 1 (decimal strings). The daemon gives each pool
        it serves from a base no other pool of the installation ever had (its epoch and a random
        tag: `lease_id_base`), so that an id names one lease for the installation's whole history:
        a request naming an id from another master, or from before a restart, is refused
        (`unknown_lease`), never applied to another lease that reused its number. One counter,
        no string built per grant: a prefix joined to each id cost ~1% more per request (measured)."""
        self.id_base = base
        self._counter = itertools.count(base + 1)
        self._ids = map(str, self._counter)

    def issued(self) -> int:
        """Leases granted by this book (ids count from 1; read from a copy of the counter, so
        counting grants costs the hot path nothing)."""
        return next(copy.copy(self._counter)) - 1 - self.id_base

    def forget_plans(self) -> None:
        """The installation changed: every cached plan and view is stale."""
        for held in self.held.values():
            held.plans.clear()
        self._views.clear()

    def checkout(self, node: str, resource: str, holder: str, count: int = 1, interface: str | None = None,
                 client_version: int | None = None) -> Grant | Denial:
        held = self.held.get(node)
        if held is None:
            held = self.held[node] = Held()
        by_holder = held.by_resource.get(resource)
        if by_holder is None:
            by_holder = held.by_resource[resource] = {}
        else:
            lease = by_holder.get(holder)
            if lease is not None:
                return lease, False  # idempotent: a retried checkout takes nothing more
        if count < 1 or (resource == "isdn" and count > rules.CHANNELS_PER_INTERFACE.get(interface or "", count)):
            return _bad_count(interface, count)
        key: PlanKey = resource if interface is None else (resource, interface)
        if client_version is not None:
            key = (resource, client_version)
        plan = held.plans.get(key)
        if plan is None:
            plan = self._plan(held, key, node, resource, interface, client_version)
        # `type(x) is C` (C final) narrows for mypy and is the cheapest test CPython 3.11 has.
        if type(plan) is Denial:
            if not by_holder:
                del held.by_resource[resource]  # nothing kept for a refused request
            return plan
        if self._smb_holder is not None and resource == "port" and self._smb_holder != node:
            return Denial(E.SMB, f"the SMB-Port license serves only the PBX that holds it ({self._smb_holder}); "
                          "SMB-Port does not work in master/slave installations", "R-SMB-3")
        single = plan.single
        took: Took
        if single is not None and (plan.took_one is not None or count == 1):
            # Fast path: one unit from one bucket (a Port on a gateway, an operator, ...). A plan
            # under the site policy has no `single`: it is drawn below, or by _checkout_counted.
            in_use = single.in_use + 1
            if in_use > single.installed:
                return _exhausted(node, resource, plan.steps, count)
            single.in_use = in_use
            if in_use > single.peak:
                single.peak = in_use
            took = plan.took_one or ((single, 1),)
            view = plan.view
        else:
            drawn = _allocate(node, resource, plan.steps, count) if plan.guards is None else self._draws_counted(node, resource, plan, count)
            if type(drawn) is Denial:
                return drawn
            took = drawn
            view = None
        lease = Lease(next(self._ids), node, resource, holder, took, count, interface, view)
        held.by_id[lease.id] = lease
        by_holder[holder] = lease
        self.count += 1
        if self.planner.inventory.smb:
            self._note_smb(lease, +1)
        return lease, True

    def _draws_counted(self, node: str, resource: str, plan: Plan, count: int) -> Took | Denial:
        """A draw under the site policy (any plan with guards), counted family by family; all or nothing."""
        drawn = _draws(node, resource, plan.steps, count)
        if type(drawn) is Denial:
            return drawn
        refused = _take(node, resource, drawn, plan.guards or {}, self._enforcing)
        if refused is not None:
            return refused
        _apply(drawn)
        return drawn

    def _checkout_counted(self, node: str, resource: str, holder: str, count: int = 1, interface: str | None = None,
                          client_version: int | None = None) -> Grant | Denial:
        """`checkout` under a site policy; set_policy puts it in checkout's place (an instance
        attribute), so that without a policy a checkout pays nothing for sites. The request path
        under a policy — one new unit of a cached single-bucket plan — is here, with Guard.take
        written out; everything else goes to checkout, which draws guarded plans counted."""
        held = self.held.get(node)
        plan = held.plans.get(resource) if held is not None and interface is None and client_version is None else None
        if type(plan) is not Plan or plan.guard is None or count != 1 or self._smb_holder is not None:
            return LeaseBook.checkout(self, node, resource, holder, count, interface, client_version)
        assert held is not None
        by_holder = held.by_resource.get(resource)
        if by_holder is None or holder in by_holder:
            return LeaseBook.checkout(self, node, resource, holder, count, interface, client_version)
        guard = plan.guard
        bucket: Bucket = plan.guarded  # type: ignore[assignment]  # set with `guard`
        in_use = bucket.in_use + 1
        if in_use > bucket.installed:
            return _exhausted(node, resource, plan.steps, count)
        family = guard.rules
        mine = guard.mine
        if mine is None:
            if self._enforcing and family.owed and family.free() <= family.owed:
                return guard.refusal(node, resource, 1)
        else:
            held_now = mine.held
            reserve = mine.reserve
            if self._enforcing:
                if held_now >= mine.max:
                    return guard.refusal(node, resource, 1)
                owed = family.owed  # by every site; less what its own reserve still owes it:
                if held_now < reserve:
                    owed -= reserve - held_now
                if owed > 0 and (in_use + owed > bucket.installed if family.only is bucket else family.free() - 1 < owed):
                    return guard.refusal(node, resource, 1)
            if held_now < reserve:
                family.owed -= 1
            mine.held = held_now + 1
        bucket.in_use = in_use
        if in_use > bucket.peak:
            bucket.peak = in_use
        lease = Lease(next(self._ids), node, resource, holder, plan.took_one or ((bucket, 1),), count, interface, plan.view)
        held.by_id[lease.id] = lease
        by_holder[holder] = lease
        self.count += 1
        return lease, True

    def _plan(self, held: Held, key: PlanKey, node: str, resource: str, interface: str | None,
              client_version: int | None) -> Plan | Denial:
        known = self.nodes.get(node) or Node(node)
        plan = self.planner.plan(known, resource, interface, client_version)
        if type(plan) is Plan and self.enforcer is not None:
            held.site_counts = self.enforcer.site_counts(known)
            plan = _under_policy(plan, known, self.enforcer)
        if type(plan) is Plan or resource in _KNOWN_RESOURCES:
            # A refusal for an unknown resource is not cached: nothing is kept per unknown name.
            held.plans[key] = plan
        return plan

    def view(self, lease: Lease) -> TookView:
        """The lease's `took` as the wire lists it and as a journal label; cached per distinct
        `took` (shared by every lease of a single-bucket plan)."""
        view = lease.view
        if view is None:
            view = self._views.get(lease.took)
            if view is None:
                if len(self._views) > 4096:
                    self._views.clear()
                view = self._views[lease.took] = TookView(lease.took)
            lease.view = view
        return view

    def checkin(self, node: str, lease_id: str) -> Lease | None:
        """Give a lease back. Unknown, already returned or another node's: nothing happens (None)."""
        held = self.held.get(node)
        if held is None:
            return None
        lease = held.by_id.pop(lease_id, None)
        if lease is None:
            return None
        del held.by_resource[lease.resource][lease.holder]
        self.count -= 1
        for bucket, n in lease.took:
            bucket.in_use -= n
        if self._smb_leases:
            self._note_smb(lease, -1)
        return lease

    def _checkin_counted(self, node: str, lease_id: str) -> Lease | None:
        """`checkin` under a site policy: the same, and the count of the node's site given back.
        set_policy puts it in the place of `checkin`, so that without a policy a checkin pays
        nothing for sites. A copy of `checkin` on purpose: calling it from here instead cost
        +2.3% instructions per request under a 10-site policy (measured: 30,142 against 29,494)."""
        held = self.held.get(node)
        if held is None:
            return None
        lease = held.by_id.pop(lease_id, None)
        if lease is None:
            return None
        del held.by_resource[lease.resource][lease.holder]
        self.count -= 1
        counts = held.site_counts
        for bucket, n in lease.took:
            bucket.in_use -= n
            if counts is not None:  # SiteCount.give, written out
                site_count = counts.get(bucket.family)
                if site_count is not None:
                    left = site_count.held - n
                    site_count.held = left
                    if left < site_count.reserve:
                        short = site_count.reserve - left
                        site_count.rules.owed += n if n < short else short
        if self._smb_leases:
            self._note_smb(lease, -1)
        return lease

    def find(self, node: str, resource: str, holder: str) -> Lease | None:
        held = self.held.get(node)
        return held.by_resource.get(resource, {}).get(holder) if held else None

    def held_count(self, node: str) -> int:
        """How many floating leases a node holds (no list built)."""
        held = self.held.get(node)
        return len(held.by_id) if held is not None else 0

    def of_node(self, node: str) -> list[Lease]:
        held = self.held.get(node)
        return list(held.by_id.values()) if held else []

    def all(self) -> dict[str, Lease]:
        """Every live lease by id (built on demand: for reading, not the hot path)."""
        return {lid: lease for held in self.held.values() for lid, lease in held.by_id.items()}

    def release_node(self, node: str) -> list[Lease]:
        """Free every floating lease of a node (expiry, `bye`, step-down)."""
        held = self.held.get(node)
        if held is None:
            return []
        leases = list(held.by_id.values())
        for lease in leases:
            self._release(held, lease)
        return leases

    def forget_node(self, name: str) -> bool:
        """Drop a node that holds nothing any more: the book must not grow with every name ever seen."""
        held = self.held.get(name)
        if held is not None and held.by_id:
            return False
        self.held.pop(name, None)
        return True

    def node_changed(self, name: str) -> list[Lease]:
        """A node said hello with other attributes: its plans and its leases go (see Pool.set_node)."""
        held = self.held.get(name)
        if held is None:
            return []
        held.plans.clear()
        return self.release_node(name)

    def sync(self, node: str, entries: Sequence[SyncEntry], held_before: set[tuple[str, str]] | None = None) -> SyncResult:
        """Make the node's floating leases exactly `entries`, in one step: leases not listed are
        checked in first (their capacity can serve the new ones), listed ones kept, new ones taken.
        Those in `held_before` (what it held before a restart or failover) are taken past the site
        policy's limits, as they were granted under them (sites.py); never past what is installed."""
        result = SyncResult()
        result.released = self.release_unlisted(node, entries)
        seen: set[tuple[str, str]] = set()
        for i, entry in enumerate(entries):
            if (entry.resource, entry.holder) in seen:
                continue
            seen.add((entry.resource, entry.holder))
            self._enforcing = held_before is None or (entry.resource, entry.holder) not in held_before
            try:
                outcome = self.checkout(node, entry.resource, entry.holder, entry.count, entry.interface, entry.client_version)
            finally:
                self._enforcing = True
            if isinstance(outcome, Denial):
                result.denied.append((i, entry, outcome))
            else:
                result.granted.append(outcome[0])
        return result

    def release_unlisted(self, node: str, entries: Sequence[SyncEntry]) -> list[Lease]:
        """Check in the node's floating leases that `entries` do not list (a sync's first step);
        returns them."""
        held = self.held.get(node)
        if held is None:
            return []
        wanted = {(e.resource, e.holder) for e in entries}
        released = []
        for lease in list(held.by_id.values()):
            if (lease.resource, lease.holder) not in wanted:
                self._release(held, lease)
                released.append(lease)
        return released

    def adopt(self, rows: Sequence[tuple[str, str, str, str, str | None]]) -> tuple[list[Lease], list[tuple[str, str, str, Denial]]]:
        """Leases another master granted (the master this one took over from, or this master's
        own last run), counted here as they were, before anything is served: each keeps its id
        (unique for the installation, so a check-in of it frees exactly it) and takes the same
        buckets, found by their labels (`TookView.label`), past the site policy's limits and
        past what is free (it was granted within installed). A lease whose buckets this pool does
        not have (the license files changed, or no label was kept) is drawn afresh as a
        checkout; one that cannot be is returned as refused. Rows are (node, resource, holder,
        lease id, label or None); a (resource, holder) a node holds already is skipped."""
        buckets = {bucket.label(): bucket for bucket in self.planner.inventory.buckets.values()}
        labels = sorted(buckets, key=len, reverse=True)  # "PBX-Port" must not match "PBX-Port bound to ..."
        adopted: list[Lease] = []
        refused: list[tuple[str, str, str, Denial]] = []
        # label -> (took, count): a city's 100,000 leases share a few labels (a failover waits on this loop)
        read: dict[str, tuple[Took, int] | None] = {}
        smb = self.planner.inventory.smb
        attached = 0
        for node, resource, holder, lease_id, label in rows:
            held = self.held.get(node)
            if held is not None and holder in held.by_resource.get(resource, ()):
                continue
            shape = None
            if label:
                if label in read:
                    shape = read[label]
                else:
                    took_read = _took_of(label, buckets, labels)
                    shape = read[label] = (took_read, max(n for _, n in took_read)) if took_read else None
            if shape is None:
                self._enforcing = False
                try:
                    outcome = self.checkout(node, resource, holder)
                finally:
                    self._enforcing = True
                if type(outcome) is Denial:
                    refused.append((node, resource, holder, outcome))
                else:
                    adopted.append(outcome[0])
                continue
            if held is None:
                held = self.held[node] = Held()
            if held.site_counts is None and self.enforcer is not None:
                held.site_counts = self.enforcer.site_counts(self.nodes.get(node) or Node(node))
            took, count = shape
            lease = Lease(lease_id, node, resource, holder, took, count, None)
            for bucket, n in took:
                bucket.in_use += n
            if held.site_counts is not None:
                for bucket, n in took:
                    site_count = held.site_counts.get(bucket.family)
                    if site_count is not None:
                        site_count.add(n)
            held.by_id[lease_id] = lease
            by_holder = held.by_resource.get(resource)
            if by_holder is None:
                by_holder = held.by_resource[resource] = {}
            by_holder[holder] = lease
            if smb:
                self._note_smb(lease, +1)
            adopted.append(lease)
            attached += 1
        self.count += attached  # (a lease drawn afresh was counted by its checkout)
        for bucket in buckets.values():
            bucket.peak = max(bucket.peak, bucket.in_use)
        return adopted, refused

    def move(self, failed: str, standby: str) -> list[Lease]:
        """Every lease of `failed` to `standby` at once; one the standby holds already is released."""
        moved: list[Lease] = []
        source = self.held.get(failed)
        if source is None:
            return moved
        target = self.held.get(standby)
        if target is None:
            target = self.held[standby] = Held()
        if target.site_counts is None:  # the standby PBX is in the site of the PBX it stands in for
            target.site_counts = source.site_counts
        for lease in list(source.by_id.values()):
            if self.find(standby, lease.resource, lease.holder) is not None:
                self._release(source, lease)
                continue
            self._detach(source, lease)
            lease.node = standby
            self._attach(target, lease)
            moved.append(lease)
        return moved

    def _attach(self, held: Held, lease: Lease) -> None:
        held.by_id[lease.id] = lease
        held.by_resource.setdefault(lease.resource, {})[lease.holder] = lease
        self.count += 1
        if self.planner.inventory.smb:
            self._note_smb(lease, +1)

    def _detach(self, held: Held, lease: Lease) -> None:
        del held.by_id[lease.id]
        del held.by_resource[lease.resource][lease.holder]
        self.count -= 1
        if self._smb_leases:
            self._note_smb(lease, -1)

    def _release(self, held: Held, lease: Lease) -> None:
        self._detach(held, lease)
        for bucket, n in lease.took:
            bucket.in_use -= n
        if held.site_counts is not None:
            _give(held.site_counts, lease.took)

    def set_policy(self, enforcer: Enforcer | None) -> None:
        """Put a site policy in force (or none): every lease is counted to its site afresh, also
        over a limit (nothing is revoked), and plans are made again under it."""
        counting = self.enforcer is not None  # `checkout` and `checkin` are the counted ones now
        self.enforcer = enforcer
        # Never through self.__dict__: touching it would turn this object's attributes into a
        # plain dict, and every attribute read on the request path would get slower (measured).
        if enforcer is not None and not counting:
            self.checkout = self._checkout_counted  # type: ignore[method-assign]
            self.checkin = self._checkin_counted  # type: ignore[method-assign]
        elif enforcer is None and counting:
            del self.checkout, self.checkin
        self.forget_plans()
        if enforcer is not None:
            enforcer.bind(self.planner.inventory.buckets.values())
        for name, held in self.held.items():
            held.site_counts = enforcer.site_counts(self.nodes.get(name) or Node(name)) if enforcer is not None else None
            if held.site_counts is not None:
                for lease in held.by_id.values():
                    for bucket, n in lease.took:
                        count = held.site_counts.get(bucket.family)
                        if count is not None:
                            count.add(n)

    def _note_smb(self, lease: Lease, delta: int) -> None:
        """R-SMB-3: the SMB-Port serves one PBX; it is that PBX's while it holds an SMB Port."""
        if lease.resource == "port" and lease.took and lease.took[0][0].family == SMB_PORT:
            self._smb_leases += delta
            self._smb_holder = lease.node if self._smb_leases else None


LEASE_COUNT = 10**12  # leases one pool may grant before its ids would reach another tag's
LEASE_TAGS = 10_000


def lease_id_base(epoch: int, tag: int) -> int:
    """Where a pool's lease ids start: epoch, tag (0..9,999, drawn at random when the pool starts
    serving) and a count of LEASE_COUNT, as decimal digits: epoch 7, tag 42 names its leases
    70042000000000001, 70042000000000002, ... Two pools of one installation share a base only
    if they share the epoch (two masters cut apart without etcd, a data directory started
    afresh) and draw the same tag."""
    if not 0 <= tag < LEASE_TAGS:
        raise ValueError(f"a lease tag is 0..{LEASE_TAGS - 1}, not {tag}")
    return (epoch * LEASE_TAGS + tag) * LEASE_COUNT


def lease_number(lease_id: str) -> int | None:
    """A lease id as a number (ids of one pool count up in the order granted), or None for a
    string that is not a lease id."""
    return int(lease_id) if lease_id.isdigit() and len(lease_id) < 40 else None


_KNOWN_RESOURCES = frozenset({"port", "conference", "isdn", "operator", "queue-monitor"})


def _took_of(label: str, buckets: dict[str, Bucket], labels: list[str]) -> Took | None:
    """A grant's label ("PBX-Port:1", "Relay-PRIs bound to gw1:1 PBX-Channels:30") read back
    as this pool's buckets; None if a part names no bucket here."""
    took: list[tuple[Bucket, int]] = []
    rest = label
    while rest:
        for name in labels:
            if rest.startswith(name + ":"):
                digits = rest[len(name) + 1:].split(" ", 1)
                if not digits[0].isdigit() or int(digits[0]) < 1:
                    return None
                took.append((buckets[name], int(digits[0])))
                rest = digits[1] if len(digits) > 1 else ""
                break
        else:
            return None
    return tuple(took) or None


def _draws(node: str, resource: str, steps: list[Step], count: int) -> Took | Denial:
    """All or nothing: every draw of a multi-bucket checkout, computed; nothing applied yet."""
    draws: list[tuple[Any, int]] = []
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
            return _exhausted(node, resource, [(buckets, per)], per if per else count)
    return tuple(draws)


def _allocate(node: str, resource: str, steps: list[Step], count: int) -> Took | Denial:
    """Every draw of a multi-bucket checkout, applied; or the Denial, nothing drawn."""
    drawn = _draws(node, resource, steps, count)
    if type(drawn) is not Denial:
        _apply(drawn)
    return drawn


def _apply(took: Took) -> None:
    for bucket, n in took:
        bucket.in_use += n
        bucket.peak = max(bucket.peak, bucket.in_use)


def _under_policy(plan: Plan, node: Node, enforcer: Enforcer) -> Plan | Denial:
    """The plan without the buckets of families this node may not draw (include / exclude), with
    the guards of the families it may; a Denial when a step is left with nothing."""
    policy = enforcer.policy
    steps: list[Step] = []
    refused: Denial | None = None
    for buckets, per in plan.steps:
        kept = []
        for bucket in buckets:
            denial = policy.refusal(node, bucket.family)
            if denial is None:
                kept.append(bucket)
            else:
                refused = refused or denial
        if buckets and not kept and refused is not None:
            return refused
        steps.append((tuple(kept), per))
    out = Plan(steps) if refused is not None else plan
    guards = enforcer.guards(node, {b.family for buckets, _ in steps for b in buckets})
    if guards:
        out.guards = guards
        if out.single is not None and out.single.family in guards:
            # off the unguarded fast path, onto the guarded one (LeaseBook.checkout)
            out.guard, out.guarded, out.single = guards[out.single.family], out.single, None
    return out


def _take(node: str, resource: str, took: Took, guards: dict[str, Guard], policy: bool) -> Denial | None:
    """A multi-bucket draw counted against the site policy family by family; all or nothing."""
    per_family: dict[str, int] = {}
    for bucket, n in took:
        if bucket.family in guards:
            per_family[bucket.family] = per_family.get(bucket.family, 0) + n
    taken: list[tuple[Guard, int]] = []
    for family, n in per_family.items():
        guard = guards[family]
        if policy:
            refused = guard.take(node, resource, n)
            if refused is not None:
                for done, m in taken:
                    if done.mine is not None:
                        done.mine.give(m)
                return refused
        elif guard.mine is not None:
            guard.mine.add(n)
        taken.append((guard, n))
    return None


def _give(counts: SiteCounts, took: Took) -> None:
    for bucket, n in took:
        count = counts.get(bucket.family)
        if count is not None:
            count.give(n)


def _exhausted(node: str, resource: str, steps: list[Step], needed: int) -> Denial:
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


def _bad_count(interface: str | None, count: int) -> Denial:
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
