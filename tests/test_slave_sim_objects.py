"""Device registrations decide when a Port is taken and given back (R-PORT-1, R-PORT-2, R-PORT-3)."""

import pytest

from slave_sim.drill.objects import DeviceRegistry, ObjectKind, PortAction


def test_one_port_per_object_however_many_devices_R_PORT_1() -> None:
    """Enforces R-PORT-1."""
    reg = DeviceRegistry()
    assert reg.register("alice", ObjectKind.USER, "dect") is PortAction.CHECKOUT
    assert reg.register("alice", ObjectKind.USER, "ip222") is PortAction.NONE
    assert reg.register("trunk0", ObjectKind.TRUNK, "sip") is PortAction.CHECKOUT
    assert reg.ports_needed() == 2


def test_groups_and_waiting_queues_take_no_port_R_PORT_2() -> None:
    """Enforces R-PORT-2."""
    reg = DeviceRegistry()
    assert reg.register("sales", ObjectKind.GROUP, "d1") is PortAction.NONE
    assert reg.register("hotline", ObjectKind.QUEUE, "d2") is PortAction.NONE
    assert reg.unregister("hotline", "d2") is PortAction.NONE
    assert reg.ports_needed() == 0


def test_port_taken_at_first_device_released_at_last_R_PORT_3() -> None:
    """Enforces R-PORT-3."""
    reg = DeviceRegistry()
    reg.register("bob", ObjectKind.EXECUTIVE, "a")
    reg.register("bob", ObjectKind.EXECUTIVE, "b")
    assert reg.unregister("bob", "a") is PortAction.NONE
    assert reg.unregister("bob", "a") is PortAction.NONE  # twice: no effect
    assert reg.unregister("bob", "b") is PortAction.CHECKIN
    assert reg.devices("bob") == frozenset()


def test_an_object_keeps_its_kind() -> None:
    reg = DeviceRegistry()
    reg.register("x", ObjectKind.USER, "a")
    with pytest.raises(ValueError, match="is a user, not a group"):
        reg.register("x", ObjectKind.GROUP, "b")
