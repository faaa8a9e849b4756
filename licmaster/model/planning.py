"""How a PBX draws a resource: the plan (which buckets, in which order, how many each), decided
once per (node, resource) from what the PBX said in `hello` and what is installed, and cached by
the lease book until either changes. Cold code: every rule that depends on the PBX (firmware,
platform, MAC, model, licensing) is read here, so the hot checkout only counts. Pure."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from . import errors as E
from . import rules
from .catalog import SMB_PORT
from .errors import Denial
from .inventory import Bucket, Inventory
from .types import RESOURCES, Node

if TYPE_CHECKING:
    from .sites import Guard

# A step of a plan: draw `count` from the first buckets with room, in order (count 0: the
# request's own count, e.g. conference channels).
Step = tuple[tuple[Bucket, ...], int]
Took = tuple[tuple[Bucket, int], ...]


def took_wire(took: Took) -> list[dict[str, Any]]:
    """What a lease took, as the wire lists it."""
    return [{"family": b.family, "version": b.version, "count": n} for b, n in took]


class TookView:
    """What a lease took, as the wire lists it and as a journal label; shared by every lease of
    a single-bucket plan, so the daemon can cache its encoding per view."""

    __slots__ = ("label", "wire")

    def __init__(self, took: Took) -> None:
        self.wire = took_wire(took)
        self.label = " ".join(f"{b.label()}:{n}" for b, n in took)


@final
class Plan:
    """The steps, and shortcuts for the common single-bucket case."""

    __slots__ = ("guard", "guarded", "guards", "single", "steps", "took_one", "view")

    def __init__(self, steps: list[Step]) -> None:
        # Under the site policy (sites.py): the guard of each family drawn; a single-bucket plan
        # moves its bucket from `single` to `guarded`, with its family's guard in `guard`.
        self.guards: dict[str, Guard] | None = None
        self.guard: Guard | None = None
        self.guarded: Bucket | None = None
        self.steps = steps
        only = len(steps) == 1 and len(steps[0][0]) == 1
        self.single: Bucket | None = steps[0][0][0] if only else None
        # a fixed single unit (per == 1): the `took` tuple can be shared by every lease
        self.took_one: Took | None = ((steps[0][0][0], 1),) if only and steps[0][1] == 1 else None
        self.view = TookView(self.took_one) if self.took_one else None


class Planner:
    """Plans and the standby verdict, read from an inventory."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def plan(self, node: Node, resource: str, interface: str | None = None, client_version: int | None = None) -> Plan | Denial:
        steps = self._steps(node, resource, interface, client_version)
        return steps if isinstance(steps, Denial) else Plan(steps)

    def capacity(self, node: Node, resource: str, client_version: int | None = None) -> int | Denial:
        """How many of `resource` (one unit each) this node could draw from what is free now: the
        figure `licmaster check` reports, computed from the same plan a checkout draws by."""
        plan = self.plan(node, resource, None, client_version)
        if isinstance(plan, Denial):
            return plan
        return min((sum(max(0, b.free) for b in buckets) // (per or 1) for buckets, per in plan.steps), default=0)

    def _steps(self, node: Node, resource: str, interface: str | None, client_version: int | None) -> list[Step] | Denial:
        if node.licensing == "decentral":
            return rules.decentral(node.name)
        if node.role == "observer":
            return E.bad_request("role", "an observer is read-only and cannot check licenses out")
        if resource == "port":
            return self._port(node)
        if resource == "conference":
            return self._conference(node)
        if resource == "isdn":
            return self._isdn(node, interface)
        if resource == "operator":  # R-OP-3: against the workstation software's version, or the firmware's
            return self._floating(node, "PBX-Operator", 1, client_version)
        if resource == "queue-monitor":
            if not rules.queue_monitor_supported(node.firmware):
                return Denial(E.VERSION, f"{rules.queue_monitor_text()}; {node.name} runs V{node.firmware}", "R-VER-4")
            return self._floating(node, "PBX-QueueMonitor", 1, client_version)
        return Denial(E.UNKNOWN_RESOURCE, f"unknown resource {resource[:64]!r}: expected one of {', '.join(RESOURCES)}")

    def version_denial(self, family: str, firmware: int, node: str, rule: str = "R-VER-2") -> Denial | None:
        """R-VER-1/R-VER-2: the family serves nothing to this version if any license caps it."""
        cap = rules.capping_versions(self.inventory.versions.get(family, {}), firmware)
        return rules.version_capped(family, cap, node, firmware, rule) if cap else None

    def _floating(self, node: Node, family: str, per: int, client_version: int | None = None) -> list[Step] | Denial:
        if client_version is not None:
            denial = self.version_denial(family, client_version, f"{node.name}'s {family.removeprefix('PBX-')} software", "R-OP-3")
        else:
            denial = self.version_denial(family, node.firmware, node.name)
        if denial:
            return denial
        return [(tuple(self.inventory.family_buckets.get(family, ())), per)]

    def _port(self, node: Node) -> list[Step] | Denial:
        family = SMB_PORT if self.inventory.smb else "PBX-Port"
        steps = self._floating(node, family, 1)
        if isinstance(steps, Denial):
            return steps
        if node.platform == "ipva":  # R-IPVA-1: a Port on an IPVA takes an IPVA license too
            ipva = self._bound(node, "PBX-IPVA", 1, "R-IPVA-2")
            if isinstance(ipva, Denial):
                return ipva
            denial = self.version_denial("PBX-IPVA", node.firmware, node.name)
            if denial:
                return denial
            steps = steps + ipva
        return steps

    def _bound(self, node: Node, family: str, per: int, rule: str) -> list[Step] | Denial:
        """A device-bound license: only the device with that MAC draws it (R-HW-1, R-IPVA-2)."""
        buckets = self.inventory.bound_buckets.get((family, node.mac or ""))
        if not buckets:
            others = self.inventory.bound_macs.get(family)
            if others:
                return Denial(E.BOUND_ELSEWHERE, f"every {family} license is bound to another device "
                              f"({', '.join(sorted(others))}); {node.name} ({node.mac}) has none", rule, {"family": family})
            return [((), per)]
        return [(tuple(buckets), per)]

    def _conference(self, node: Node) -> list[Step] | Denial:
        """R-CHAN-3 (Policy): the bridge's own Relay-Channels first, then pooled PBX-Channels."""
        buckets = tuple(self.inventory.bound_buckets.get(("Relay-Channels", node.mac or ""), ()))
        denial = self.version_denial("PBX-Channels", node.firmware, node.name)
        if denial is None:
            buckets += tuple(self.inventory.family_buckets.get("PBX-Channels", ()))
        elif not buckets:
            return denial
        return [(buckets, 0)]

    def _isdn(self, node: Node, interface: str | None) -> list[Step] | Denial:
        if interface not in rules.CHANNELS_PER_INTERFACE:
            return E.bad_request("interface", "isdn needs interface \"bri\" or \"pri\"")
        steps: list[Step] = []
        for family, n in rules.isdn_licenses(node.model, interface, 1):
            bound = self._bound(node, family, n if family != "Relay-Channels" else 0, "R-HW-1")
            if isinstance(bound, Denial):
                return bound
            steps += bound
        return steps

    def standby_status(self, firmware: int = 13) -> Denial | None:
        """R-STBY-2, R-STBY-3: None when the standby function is available for this firmware."""
        inv = self.inventory
        if inv.smb:
            return Denial(E.STANDBY_UNLICENSED, "the standby function does not work with SMB-Port licenses", "R-STBY-3")
        ports = inv.installed_in("PBX-Port")
        cap = rules.capping_versions(inv.versions.get("PBX-Standby", {}), firmware)
        standby = 0 if cap else inv.installed_in("PBX-Standby")
        short = rules.standby_shortfall(standby, ports)
        if short:
            why = f" ({rules.capped_text('PBX-Standby', cap)} for V{firmware}, R-VER-1)" if cap else ""
            return Denial(E.STANDBY_UNLICENSED, f"the standby function needs as many Standby licenses as Port licenses: "
                          f"{standby} usable Standby{why} for {ports} Port", "R-STBY-2",
                          {"standby": standby, "ports": ports})
        return None
