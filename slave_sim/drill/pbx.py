"""A simulated PBX: its objects and devices, and a real client of the master.

Users, executives and trunks take a Port when their first device registers and give it back
with the last (R-PORT-1/3, through slave_sim.drill.objects); group numbers and waiting queues take
none (R-PORT-2). Conference rooms, ISDN interfaces, operator desks and queue monitors check
their licenses out as they come into use. A decentral PBX serves itself from its own local
license file and never draws on the master (R-MODE-2/3): when it runs short, it asks the master
once, as a misconfigured PBX would, and records the refusal the master gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from licmaster.client import HeldLease, LicenseError
from licmaster.licenses.files import load_files
from licmaster.model import rules
from licmaster.model.errors import Denial
from licmaster.model.pool import Pool
from licmaster.model.types import Node

from ..access import PLAIN, MasterAccess
from .metrics import Recorder
from .objects import DeviceRegistry, ObjectKind, PortAction
from .scenario import NO_CONNECTION, PbxSpec
from .sim_client import SimClient

Device = tuple[str, ObjectKind, str]  # (object, kind, device)


class Refused(NamedTuple):
    """Why a request was not granted: the master's code, rule and sentence, or slave-sim's own
    code when no master answered."""

    code: str
    rule: str | None
    message: str


class SimPBX:
    def __init__(self, spec: PbxSpec, masters: list[str], recorder: Recorder, *, role: str = "pbx",
                 standby_for: str | None = None, name: str | None = None, access: MasterAccess = PLAIN) -> None:
        self.spec = spec
        self.access = access  # TLS and the token its hello carries
        self.name = name or spec.name
        self.role = role
        self.standby_for = standby_for
        self.masters = list(reversed(masters)) if spec.standby_first else masters
        self.recorder = recorder
        self.firmware = spec.firmware
        self.registry = DeviceRegistry()
        self.devices: list[Device] = self._devices()
        self.registered: set[tuple[str, str]] = set()
        self.waiting: set[str] = set()  # users refused a Port, still wanting one (per-site sizing)
        self.state = "down"  # up, dead (killed), cut (hangs), fenced (taken over)
        self.client: SimClient | None = None
        self.assigned: dict[str, list[dict[str, Any]]] = {}  # user -> took
        self.local: Pool | None = None
        self.local_leases: dict[tuple[str, str], Any] = {}
        if spec.licensing == "decentral" and spec.local_licenses is not None:
            loaded = load_files([spec.local_licenses])
            self.local = Pool(loaded.licenses)
            self.local.set_node(Node(self.name, firmware=self.firmware, platform=spec.platform, mac=spec.mac, model=spec.model))

    # ---------------------------------------------------------------- the network it has

    def _devices(self) -> list[Device]:
        s, out = self.spec, []
        for u in range(s.users):
            for d in range(s.devices_per_user):
                out.append((f"{self.name}/user{u}", ObjectKind.USER, f"dev{d}"))
        out += [(f"{self.name}/exec{e}", ObjectKind.EXECUTIVE, "dev0") for e in range(s.executives)]
        out += [(f"{self.name}/trunk{t}", ObjectKind.TRUNK, "sip") for t in range(s.trunks)]
        out += [(f"{self.name}/group{g}", ObjectKind.GROUP, "member") for g in range(s.groups)]
        out += [(f"{self.name}/queue{q}", ObjectKind.QUEUE, "agent") for q in range(s.queues)]
        # interleave devices of one user with other users' (a real morning: not all devices at once)
        return sorted(out, key=lambda d: (d[2], d[0]))

    @property
    def users(self) -> list[str]:
        return [f"{self.name}/user{u}" for u in range(self.spec.users)]

    @property
    def alive(self) -> bool:
        return self.state == "up"

    # ---------------------------------------------------------------- life cycle

    async def start(self) -> None:
        self.client = self._new_client()
        await self._timed("hello", self.client.connect)
        self.state = "up"

    def _new_client(self) -> SimClient:
        s = self.spec
        return SimClient(self.masters, self.name, role=self.role, firmware=self.firmware, platform=s.platform,
                            mac=s.mac, licensing=s.licensing, model=s.model, standby_for=self.standby_for,
                            on_event=self._on_event, on_hello_refused=self._hello_refused, connect_timeout=5.0,
                            **self.access.client_options())

    def _hello_refused(self, refusal: LicenseError) -> None:
        """A master refused this PBX a session (`no_quorum`: it cannot confirm its leadership): a
        denial of the PBX's, whatever it was going to ask; its client tries again by itself."""
        self.recorder.denial("hello", self.name, refusal.code, refusal.rule, site=self.spec.site)

    def _on_event(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        self.recorder.availability.seen(round(self.recorder.now(), 3), self.name, event, **self._clocks())
        if name == "fenced" and self.state == "up" and not str(event.get("reason", "")).startswith("absent"):
            self.state = "fenced"
            self.recorder.fault(f"{self.name} fenced: {event.get('reason')}")
        elif name == "lost":
            self.recorder.denial("sync", self.name, event.get("error") or "?", event.get("rule"), site=self.spec.site)
        elif name == "lapsed":
            self.recorder.fault(f"{self.name} told its {event.get('leases')} leases lapsed: {event.get('why')}")
        elif name == "reconnected":
            self.recorder.fault(f"{self.name} reconnected (epoch {event.get('epoch')})")

    def _clocks(self) -> dict[str, float]:
        """How long its client has gone without a confirmation, and its hold (what a lapse is
        checked against)."""
        if self.client is None:
            return {}
        return {"silent_s": asyncio.get_running_loop().time() - self.client.confirmed_at, "hold_s": self.client.hold_s}

    async def stop(self) -> None:
        if self.client is not None and self.state == "up":
            await self.client.close()
        self.state = "down"

    def kill(self) -> None:
        """Dies: the connection drops, nothing more is sent (no bye)."""
        if self.client is not None:
            self.client.abort()
        self.state = "dead"

    def cut(self) -> None:
        """Cut off: the connection stays open but nothing goes through, in either direction."""
        if self.client is not None:
            self.client.freeze()
        self.state = "cut"

    async def restore(self) -> None:
        """Back after a kill or a cut: a new connection, and a sync of what it believes it holds."""
        self._lapsed_while_cut()
        held = list(self.client.leases.values()) if self.client else []
        if self.client is not None:
            self.client.abort()
        self.client = self._new_client()
        await self._timed("hello", self.client.connect)
        self.client.adopt(held)
        await self._resync()
        self.state = "up"

    async def upgrade(self, firmware: int) -> None:
        """A new PBX software version: a new hello with it, and a sync of what it held (R-VER)."""
        held = list(self.client.leases.values()) if self.client else []
        if self.client is not None:
            await self.client.close(bye=False)
        self.firmware = firmware
        if self.local is not None:
            self.local.set_node(Node(self.name, firmware=firmware, platform=self.spec.platform, mac=self.spec.mac))
        self.client = self._new_client()
        await self._timed("hello", self.client.connect)
        self.client.adopt(held)
        await self._resync()

    def _lapsed_while_cut(self) -> None:
        """A cut-off PBX's client is frozen (no heartbeat loop, so no `lapsed` event): what it
        would have been told, had its hold run out during the cut, is counted as it comes back."""
        client = self.client
        if self.state != "cut" or client is None or not client.leases or client.confirmed():
            return
        self.recorder.availability.lapsed(round(self.recorder.now(), 3), self.name, len(client.leases), **self._clocks())
        self.recorder.fault(f"{self.name} cut off past its hold ({client.hold_s:g} s): its {len(client.leases)} leases lapsed")

    async def _resync(self) -> None:
        """The sync of what it believes it holds (after a restore or an upgrade). A refused entry
        is a `lost` event (_on_event); a sync refused whole loses every lease it brought. Objects
        whose Port did not come back lose their registrations."""
        assert self.client is not None
        try:
            await self._timed("sync", self.client.sync)
        except LicenseError as exc:
            for _, holder in sorted(self.client.leases):
                self.recorder.availability.lost(round(self.recorder.now(), 3), self.name, holder, exc.code)
            self.client.leases.clear()
        else:
            self.recorder.availability.served(self.name)
        self._forget_lost()

    def _forget_lost(self) -> None:
        """Objects whose Port the master did not re-grant lose their registrations."""
        assert self.client is not None
        for obj, kind, device in self.devices:
            if (obj, device) in self.registered and kind.needs_port and ("port", obj) not in self.client.leases \
                    and self.local is None:
                self.registered.discard((obj, device))
                self.registry.unregister(obj, device)

    async def _timed(self, op: str, call: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            result = await call()
        except LicenseError as exc:
            self.recorder.op(op, self.name, time.perf_counter() - start, exc.code, exc.rule)
            raise
        self.recorder.op(op, self.name, time.perf_counter() - start)
        return result

    # ---------------------------------------------------------------- licenses

    async def _checkout(self, resource: str, holder: str, count: int = 1, interface: str | None = None) -> bool:
        if self.local is not None:
            return await self._checkout_local(resource, holder, count, interface)
        assert self.client is not None
        try:
            await self._timed("checkout", lambda: self.client.checkout(resource, holder, count, interface))  # type: ignore[union-attr]
        except LicenseError as exc:
            self.recorder.denial("checkout", self.name, exc.code, exc.rule, site=self.spec.site)
            return False
        except ConnectionError:
            self.recorder.op("checkout", self.name, 0.0, "no_connection", None)
            return False
        return True

    async def _checkout_local(self, resource: str, holder: str, count: int, interface: str | None) -> bool:
        """R-MODE-3: a decentral PBX is self-sufficient; the master refuses it when it runs short."""
        assert self.local is not None
        outcome = self.local.checkout(self.name, resource, holder, count, interface)
        if not isinstance(outcome, Denial):
            lease, _new = outcome
            self.local_leases[(resource, holder)] = lease
            self.recorder.op("local-checkout", self.name, 0.0)
            return True
        self.recorder.denial("local-checkout", self.name, outcome.code, outcome.rule, site=self.spec.site)
        if self.client is not None and self.state == "up":
            try:
                await self._timed("checkout", lambda: self.client.checkout(resource, holder, count, interface))  # type: ignore[union-attr]
            except LicenseError as exc:
                self.recorder.denial("checkout", self.name, exc.code, exc.rule, site=self.spec.site)
        return False

    async def _checkin(self, resource: str, holder: str) -> None:
        if self.local is not None:
            lease = self.local_leases.pop((resource, holder), None)
            if lease is not None:
                self.local.checkin(self.name, lease.id)
            return
        if self.client is None or (resource, holder) not in self.client.leases:
            return
        client = self.client
        with contextlib.suppress(ConnectionError):  # the client forgets the lease before it asks
            await self._timed("checkin", lambda: client.checkin(resource, holder))

    # ---------------------------------------------------------------- actions (each one unit of work)

    def to_register(self, fraction: float) -> list[Device]:
        waiting = [d for d in self.devices if (d[0], d[2]) not in self.registered]
        return waiting[: round(len(self.devices) * fraction)] if fraction < 1 else waiting

    def to_unregister(self, fraction: float) -> list[Device]:
        present = [d for d in self.devices if (d[0], d[2]) in self.registered]
        return present[: round(len(self.devices) * fraction)] if fraction < 1 else present

    async def register(self, device: Device) -> None:
        obj, kind, dev = device
        if (obj, dev) in self.registered:
            return
        action = self.registry.register(obj, kind, dev)
        if action is PortAction.CHECKOUT:
            if not await self._checkout("port", obj):
                self.registry.unregister(obj, dev)  # refused: the device stays unregistered
                if obj not in self.waiting:  # its user waits for a Port (the site's shortfall)
                    self.waiting.add(obj)
                    self.recorder.demand(self.spec.site, 0, +1)
                return
            self.recorder.demand(self.spec.site, +1, -1 if obj in self.waiting else 0)
            self.waiting.discard(obj)
        self.registered.add((obj, dev))

    async def unregister(self, device: Device) -> None:
        obj, _, dev = device
        if (obj, dev) not in self.registered:
            if obj in self.waiting:  # a refused user goes home: it no longer waits
                self.waiting.discard(obj)
                self.recorder.demand(self.spec.site, 0, -1)
            return
        self.registered.discard((obj, dev))
        if self.registry.unregister(obj, dev) is PortAction.CHECKIN:
            self.recorder.demand(self.spec.site, -1, 0)
            await self._checkin("port", obj)

    async def configure_user(self, user: str) -> None:
        if not self.spec.template or user in self.assigned or self.client is None:
            return
        try:
            reply = await self._timed("assign", lambda: self.client.assign(user, self.spec.template))  # type: ignore[union-attr]
        except LicenseError as exc:
            self.recorder.denial("assign", self.name, exc.code, exc.rule, site=self.spec.site)
            return
        self.assigned[user] = reply.get("took", [])

    def assignments(self) -> list[tuple[str, list[str]]]:
        """The user licenses this PBX assigned in the run: (user, its template's families)."""
        return [(user, list(self.spec.template)) for user in self.assigned]

    def rooms(self) -> list[str]:
        return [f"{self.name}/room{r}" for r in range(self.spec.rooms)]

    async def start_conference(self, room: str, participants: int) -> None:
        channels = rules.conference_channels(participants)  # R-CHAN-2: 3 or fewer take none
        if channels:
            await self._checkout("conference", room, channels)

    async def end_conference(self, room: str) -> None:
        await self._checkin("conference", room)

    def desks(self) -> list[str]:
        return [f"{self.name}/desk{d}" for d in range(self.spec.operators)]

    async def operator_login(self, desk: str) -> None:
        await self._checkout("operator", desk)

    async def operator_logout(self, desk: str) -> None:
        await self._checkin("operator", desk)

    def queues(self) -> list[str]:
        return [f"{self.name}/queue{q}" for q in range(self.spec.queues)]

    async def monitor_queue(self, queue: str) -> None:
        await self._checkout("queue-monitor", queue)

    def interfaces(self) -> list[tuple[str, str, int]]:
        return [(f"{self.name}/{i.interface}{n}", i.interface, i.channels) for n, i in enumerate(self.spec.isdn)]

    async def isdn_up(self, interface: tuple[str, str, int]) -> None:
        await self._checkout("isdn", interface[0], interface[2], interface[1])

    async def isdn_down(self, interface: tuple[str, str, int]) -> None:
        await self._checkin("isdn", interface[0])

    async def takeover(self) -> Refused | None:
        """As a standby: take over the failed PBX's leases (R-STBY-2, R-STBY-3). None when it did;
        otherwise why not: the master's refusal, or no master reached (no_connection)."""
        assert self.client is not None and self.standby_for is not None
        try:
            reply = await self._timed("takeover", lambda: self.client.takeover(self.standby_for))  # type: ignore[union-attr, arg-type]
        except LicenseError as exc:
            self.recorder.denial("takeover", self.name, exc.code, exc.rule, site=self.spec.site)
            return Refused(exc.code, exc.rule, exc.message)
        except ConnectionError as exc:  # NotConnected: no master answered the standby
            self.recorder.op("takeover", self.name, 0.0, NO_CONNECTION, None)
            return Refused(NO_CONNECTION, None, str(exc) or "no master answered")
        self.recorder.fault(f"{self.name} took over {self.standby_for}: {reply.get('moved', 0)} leases moved")
        return None

    # ---------------------------------------------------------------- what this PBX believes it holds

    def belief(self) -> dict[str, int]:
        """Licenses the master should count for this PBX, per family, as the PBX believes: what
        its client holds while within its hold (`believed()`), up, cut off or dead alike (the
        master cannot tell a dead PBX from a cut-off one: it keeps what either held for its
        hold). Nothing once it said bye, or its standby took over."""
        out: dict[str, int] = {}
        if self.client is None or self.state not in ("up", "cut", "dead"):
            return out
        held: list[HeldLease] = list(self.client.believed().values())
        for lease in held:
            for took in lease.took:
                out[took["family"]] = out.get(took["family"], 0) + took["count"]
        return out

    def assigned_belief(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for took in self.assigned.values():
            for t in took:
                out[t["family"]] = out.get(t["family"], 0) + t["count"]
        return out
