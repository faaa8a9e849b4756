"""PBX objects and their registered devices: when a Port is taken and when it is given back.

Pure. A PBX (real or simulated) feeds device registrations in; the registry says when to check a
Port out (first device of the object, R-PORT-3) and in (last device gone), one per object
however many devices it has (R-PORT-1), and never for group numbers or waiting queues (R-PORT-2).
"""

from __future__ import annotations

from enum import Enum


class ObjectKind(str, Enum):
    USER = "user"
    EXECUTIVE = "executive"
    TRUNK = "trunk"  # Trunk/Gateway object: T0, T2, SIP, FXS (one Port whatever its channels)
    GROUP = "group"  # group number: no Port (R-PORT-2)
    QUEUE = "queue"  # waiting queue: no Port (R-PORT-2)

    @property
    def needs_port(self) -> bool:
        """R-PORT-1, R-PORT-2."""
        return self not in (ObjectKind.GROUP, ObjectKind.QUEUE)


class PortAction(str, Enum):
    NONE = "none"
    CHECKOUT = "checkout"
    CHECKIN = "checkin"


class DeviceRegistry:
    """Devices registered per object; O(1) per registration."""

    def __init__(self) -> None:
        self._devices: dict[str, set[str]] = {}
        self._kinds: dict[str, ObjectKind] = {}

    def register(self, obj: str, kind: ObjectKind, device: str) -> PortAction:
        """A device registers for `obj`. CHECKOUT when it is the object's first (R-PORT-3)."""
        known = self._kinds.setdefault(obj, kind)
        if known is not kind:
            raise ValueError(f"object {obj!r} is a {known.value}, not a {kind.value}")
        devices = self._devices.setdefault(obj, set())
        first = not devices
        devices.add(device)
        return PortAction.CHECKOUT if first and kind.needs_port else PortAction.NONE

    def unregister(self, obj: str, device: str) -> PortAction:
        """A device goes. CHECKIN when it was the object's last (R-PORT-3)."""
        devices = self._devices.get(obj)
        if not devices or device not in devices:
            return PortAction.NONE
        devices.discard(device)
        if devices:
            return PortAction.NONE
        del self._devices[obj]
        kind = self._kinds.pop(obj)
        return PortAction.CHECKIN if kind.needs_port else PortAction.NONE

    def devices(self, obj: str) -> frozenset[str]:
        return frozenset(self._devices.get(obj, ()))

    def ports_needed(self) -> int:
        """How many Ports the registered objects hold: one per object with a device (R-PORT-1)."""
        return sum(1 for obj in self._devices if self._kinds[obj].needs_port)
