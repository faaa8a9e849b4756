"""The license pool: a thin facade over the model's parts, the one object the daemon holds.

- `inventory`: what is installed, as buckets (inventory.py);
- `planner`: how each PBX draws each resource, by the rules (planning.py);
- `book`: the floating leases, the hot path (leases.py);
- `assignments`: user licenses (assignments.py).

Every operation answers a result or a `Denial` (errors are values). Invariants (tested with
hypothesis): per bucket, in use <= installed, except after a reload that removed licenses in use
(reported, never revoked silently); an operation that fails changes nothing; checkout is
idempotent per (node, resource, holder); checking everything in returns the pool to its start.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from . import errors as E
from . import rules
from .assignments import AssignResult, UserLicenses
from .catalog import FAMILIES
from .errors import Denial
from .inventory import Bucket, Inventory, ReloadReport
from .leases import Grant, Lease, LeaseBook, SyncResult
from .planning import Planner, TookView
from .sites import Enforcer, Policy
from .types import InstalledLicense, Node, SyncEntry


class Pool:
    def __init__(self, licenses: Iterable[InstalledLicense] = (), *, today: dt.date | None = None) -> None:
        self.inventory = Inventory(today)
        self.planner = Planner(self.inventory)
        self.nodes: dict[str, Node] = {}
        self.book = LeaseBook(self.planner, self.nodes)
        self.assignments = UserLicenses(self.inventory, self.planner)
        self.users = self.assignments.users
        self.install(licenses)

    # ---------------------------------------------------------------- installation

    def install(self, licenses: Iterable[InstalledLicense], *, today: dt.date | None = None) -> ReloadReport:
        """Replace the installed licenses (start, reload, an SSA term ended) without touching
        leases or assignments; see Inventory.install."""
        report = self.inventory.install(licenses, today=today)
        self.book.forget_plans()
        if self.book.enforcer is not None:
            self.book.enforcer.bind(self.inventory.buckets.values())
        return report

    def set_policy(self, policy: Policy | None) -> list[str]:
        """Put a site policy in force (None: none). Every lease is counted to its site again,
        nothing revoked; returns the limits that do not hold now (shown, not enforced backwards)."""
        enforcer = Enforcer(policy) if policy is not None else None
        self.book.set_policy(enforcer)
        return enforcer.broken() if enforcer is not None else []

    @property
    def enforcer(self) -> Enforcer | None:
        return self.book.enforcer

    @property
    def installed(self) -> list[InstalledLicense]:
        return self.inventory.installed

    @property
    def smb_installation(self) -> bool:
        """True when Ports come from an (unconverted) SMB-Port license (R-SMB)."""
        return self.inventory.smb

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
        return self.book.node_changed(node.name)

    def forget_node(self, name: str) -> bool:
        """Drop what the pool knows of a node that holds no floating lease any more (its session
        ended): node names come and go, and the pool must not grow with every name ever seen."""
        if not self.book.forget_node(name):
            return False
        self.nodes.pop(name, None)
        return True

    def _node(self, name: str) -> Node:
        node = self.nodes.get(name)
        if node is None:
            node = self.nodes[name] = Node(name)
        return node

    # ---------------------------------------------------------------- floating leases

    @property
    def leases(self) -> dict[str, Lease]:
        """Every live floating lease by id (built on demand: for reading, not the hot path)."""
        return self.book.all()

    @property
    def lease_count(self) -> int:
        return self.book.count

    def checkout(self, node: str, resource: str, holder: str, count: int = 1, interface: str | None = None,
                 client_version: int | None = None) -> Grant | Denial:
        """A floating license for `holder` (see LeaseBook.checkout: the daemon calls that one
        directly, one Python call less per request)."""
        return self.book.checkout(node, resource, holder, count, interface, client_version)

    def checkin(self, node: str, lease_id: str) -> Lease | None:
        return self.book.checkin(node, lease_id)

    def took_view(self, lease: Lease) -> TookView:
        return self.book.view(lease)

    def find_lease(self, node: str, resource: str, holder: str) -> Lease | None:
        return self.book.find(node, resource, holder)

    def release_node(self, node: str) -> list[Lease]:
        """Free every floating lease of a node (expiry, `bye`). User assignments stay (R-USER-1)."""
        return self.book.release_node(node)

    def node_leases(self, node: str) -> list[Lease]:
        return self.book.of_node(node)

    def nodes_holding(self) -> list[str]:
        """The nodes that hold (or held) floating leases in this pool."""
        return list(self.book.held)

    def sync(self, node: str, entries: Sequence[SyncEntry], held_before: set[tuple[str, str]] | None = None) -> SyncResult:
        return self.book.sync(node, entries, held_before)

    # ---------------------------------------------------------------- standby

    def standby_status(self, firmware: int = 13) -> Denial | None:
        """R-STBY-2, R-STBY-3: None when the standby function is available for this firmware."""
        return self.planner.standby_status(firmware)

    def takeover(self, standby: str, failed: str) -> list[Lease] | Denial:
        """Move every floating lease of `failed` to `standby` at once; nothing counted twice."""
        node = self._node(standby)
        if node.licensing == "decentral":
            return rules.decentral(standby)
        if node.role != "standby":
            return E.bad_request("role", f"{standby} said role {node.role!r}; only a standby may take over")
        if node.standby_for != failed:
            return E.bad_request("failed", f"{standby} is the standby for {node.standby_for!r}, not {failed!r}")
        denial = self.standby_status(node.firmware)
        if denial:
            return denial
        return self.book.move(failed, standby)

    # ---------------------------------------------------------------- user licenses

    def assign(self, node: str, user: str, families: Sequence[str]) -> AssignResult | Denial:
        return self.assignments.assign(self._node(node), user, families)

    def unassign(self, node: str, user: str, families: Sequence[str]) -> AssignResult | Denial:
        return self.assignments.unassign(self._node(node), user, families)

    def restore_assignment(self, user: str, family: str, version: int | None, node: str) -> None:
        if self.assignments.restore(user, family, version, node):
            self.inventory.reindex()
            self.book.forget_plans()

    def recording_allowed(self) -> Denial | None:
        return self.assignments.recording_allowed()

    # ---------------------------------------------------------------- reading

    def usage(self) -> list[dict[str, Any]]:
        return self.inventory.usage()

    def buckets(self) -> list[Bucket]:
        return list(self.inventory.buckets.values())

    def installed_by_family(self) -> dict[str, int]:
        """Installed per family, as this pool counts it (licenses.files.installed_by_family counts
        license files, before they are valued)."""
        totals: dict[str, int] = {}
        for bucket in self.inventory.buckets.values():
            totals[bucket.family] = totals.get(bucket.family, 0) + bucket.installed
        return totals
