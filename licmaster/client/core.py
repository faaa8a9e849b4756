"""The client's state without I/O: which master to use, the highest epoch seen, the leases the PBX
holds with their confirmation and lapse, and replies that come in parts. No socket, no task, no
clock of its own (times are handed in): `MasterClient` (connection.py) is its asyncio shell, and
the tests drive it in memory.

Lease validity (docs/operations.md, "Two clocks"): the leases are the PBX's while a master
confirmed them (answered a request ok) within its hold (`hold_s`), counted from when that request was
*sent*; only on a connection where the master holds exactly these leases (after their sync, or
a hello with none to bring) does an ok reply confirm them.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from licmaster.wire.codec import FrameError, ReplyParts

Address = tuple[str, int]
Key = tuple[str, str]  # (resource, holder)


@dataclass
class HeldLease:
    resource: str
    holder: str
    lease: str
    count: int = 1
    interface: str | None = None
    took: list[dict[str, Any]] = field(default_factory=list)
    client_version: int | None = None  # R-OP-3: the Operator / Queue Monitor software's version


def parse_address(address: str | Address) -> Address:
    if isinstance(address, tuple):
        return address
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class MasterList:
    """The masters a PBX may use, and the one it uses now. Every move to a master a reply or an
    event names goes through `go_to` (added to the list if it is new)."""

    def __init__(self, masters: Sequence[str | Address], *, follow_named: bool = True) -> None:
        if not masters:
            raise ValueError("at least one master address is needed")
        self.addresses = [parse_address(m) for m in masters]
        self.index = 0
        # Go to the master a `not_master` or `shutdown` names. False for a PBX that must keep to
        # its own addresses (behind NAT or a proxy, where the name is not its way there).
        self.follow_named = follow_named

    @property
    def current(self) -> Address:
        return self.addresses[self.index]

    def go_to(self, address: Address) -> None:
        if address not in self.addresses:
            self.addresses.append(address)
        self.index = self.addresses.index(address)

    def named(self, message: dict[str, Any]) -> Address | None:
        """The master a reply or an event names (`master`), if it names one that can be read and
        this client follows names."""
        if not self.follow_named or not message.get("master"):
            return None
        try:
            return parse_address(message["master"])
        except (ValueError, TypeError):
            return None

    def go_to_named(self, message: dict[str, Any]) -> bool:
        """Go where the message says; False (nowhere) if it names no master this client may use."""
        named = self.named(message)
        if named is None:
            return False
        self.go_to(named)
        return True

    def next(self) -> None:
        self.index = (self.index + 1) % len(self.addresses)

    def next_untried(self, tried: set[Address]) -> bool:
        """The next address, in order from the current one, not yet tried in this round."""
        untried = [i for i, address in enumerate(self.addresses) if address not in tried]
        if not untried:
            return False
        self.index = min(untried, key=lambda i: (i - self.index) % len(self.addresses))
        return True

    def pin(self, address: Address) -> None:
        """Use this one master and no other (an observer watching one master)."""
        self.addresses[:] = [address]
        self.index = 0


class Holdings:
    """The leases a PBX holds, keyed by (resource, holder), and whether a master confirmed them."""

    def __init__(self) -> None:
        self.held: dict[Key, HeldLease] = {}
        self.confirmed_at = -math.inf  # the send time of the last request a master confirmed them with
        self.lapsed = False  # `lapsed` said for the current lapse
        # The connection on which the master holds exactly these leases (after their sync, or a
        # hello with none to bring); any object that names a connection.
        self.synced: Hashable | None = None

    # ---------------------------------------------------------------- validity

    def confirmed(self, now: float, hold: float) -> bool:
        return now < self.confirmed_at + hold

    def believed(self, now: float, hold: float) -> dict[Key, HeldLease]:
        """What the PBX may use now: all it holds while confirmed, none past the hold."""
        return self.held if self.confirmed(now, hold) else {}

    def lapse(self, now: float, hold: float) -> dict[str, Any] | None:
        """The `lapsed` event, once per lapse: held, and no confirmation for a whole hold."""
        if self.held and not self.lapsed and not self.confirmed(now, hold):
            self.lapsed = True
            return {"event": "lapsed", "leases": len(self.held), "why": f"no master confirmed them for {hold:g} s"}
        return None

    def session_opened(self, connection: Hashable) -> None:
        """A hello answered ok: with nothing to bring the master holds exactly these (none)."""
        self.synced = connection if not self.held else None

    def ok_reply(self, connection: Hashable, sent_at: float, is_sync: bool, reply: dict[str, Any]) -> list[dict[str, Any]]:
        """An ok reply of a current master to a request sent at `sent_at`: a sync's refused
        entries are no longer the PBX's from this instant (before any confirmation), and on a
        synced connection the reply confirms every lease. Returns the `lost` events."""
        lost = self.drop_denied(reply) if is_sync else []
        if is_sync:
            self.synced = connection
        if connection == self.synced:
            self.confirmed_at = max(self.confirmed_at, sent_at)
            self.lapsed = False
        return lost

    # ---------------------------------------------------------------- changes

    def granted(self, reply: dict[str, Any], resource: str, holder: str, count: int, interface: str | None,
                client_version: int | None) -> HeldLease:
        held = HeldLease(resource, holder, reply["lease"], count, interface, reply.get("took", []), client_version)
        self.held[(resource, holder)] = held
        return held

    def sync_entries(self) -> list[dict[str, Any]]:
        """What a `sync` asks for: every lease held."""
        entries = []
        for held in self.held.values():
            entry: dict[str, Any] = {"resource": held.resource, "holder": held.holder}
            if held.count != 1:
                entry["count"] = held.count
            if held.interface:
                entry["interface"] = held.interface
            if held.client_version is not None:
                entry["client_version"] = held.client_version
            entries.append(entry)
        return entries

    def synced_ids(self, reply: dict[str, Any]) -> list[str]:
        """A sync's answer: each lease's id on the master now serving, used from now on. Returns
        the ids of leases checked in while the sync was on its way, to be given back."""
        stale = []
        for granted in reply.get("leases", []):
            kept = self.held.get((granted["resource"], granted["holder"]))
            if kept is not None:
                kept.lease, kept.took = granted["lease"], granted.get("took", [])
            else:
                stale.append(granted["lease"])
        return stale

    def drop_denied(self, reply: dict[str, Any]) -> list[dict[str, Any]]:
        """A sync's refused entries: no longer the PBX's (`lost` events)."""
        lost = []
        for denied in reply.get("denied", []):
            gone = self.held.pop((denied.get("resource"), denied.get("holder")), None)
            if gone is not None:
                lost.append({"event": "lost", "resource": gone.resource, "holder": gone.holder, "error": denied.get("error"),
                             "rule": denied.get("rule"), "message": denied.get("message")})
        return lost

    def revoked(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """An operator took one lease back: the `lost` event, if it was this very lease."""
        held = self.held.get((event.get("resource"), event.get("holder")))  # type: ignore[arg-type]
        if held is None or held.lease != event.get("lease"):
            return None
        del self.held[(held.resource, held.holder)]
        return {"event": "lost", "resource": held.resource, "holder": held.holder, "error": "revoked", "message": event.get("reason")}

    def moved(self, reply: dict[str, Any]) -> None:
        """A takeover's answer: the failed PBX's leases are this (standby) PBX's now."""
        for lease in reply.get("leases", []):
            self.held[(lease["resource"], lease["holder"])] = HeldLease(lease["resource"], lease["holder"], lease["lease"],
                                                                        took=lease.get("took", []))

    def adopt(self, leases: Iterable[HeldLease]) -> None:
        for held in leases:
            self.held[(held.resource, held.holder)] = held
        self.synced = None  # the master knows nothing of them until the next sync


class Parts:
    """Replies that come in parts (codec.split_reply), by request id."""

    def __init__(self) -> None:
        self.joining: dict[int, ReplyParts] = {}

    def add(self, rid: int, message: dict[str, Any]) -> dict[str, Any] | None:
        """The whole reply once its last part is here; FrameError for parts that do not add up."""
        if "parts" in message:
            if not isinstance(message["parts"], int) or message["parts"] < 2:
                raise FrameError(f"a reply in {str(message['parts'])[:16]} parts")
            self.joining[rid] = ReplyParts(message)
            return None
        joining = self.joining.get(rid)
        if joining is None:
            raise FrameError(f"reply part {str(message.get('part'))[:16]} of no reply in parts")
        whole = joining.add(message)
        if whole is not None:
            del self.joining[rid]
        return whole

    def clear(self) -> None:
        self.joining.clear()
