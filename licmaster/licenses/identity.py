"""This machine's hardware identity, the installation id a signed license file is bound to.

By default the MAC address of the host's first network interface that has one (by interface
name, loopback and all-zero addresses left out), as innovaphone binds licenses to a device's
MAC; `hardware_id` in the config overrides it (a VM whose MAC changes, tests).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from licmaster.model.rules import normalize_mac


def host_mac(sys_class_net: Path = Path("/sys/class/net")) -> str:
    try:
        interfaces = sorted(p for p in sys_class_net.iterdir() if p.name != "lo")
    except OSError:
        interfaces = []
    for interface in interfaces:
        try:
            mac = normalize_mac((interface / "address").read_text())
        except OSError:
            continue
        if mac is not None and mac != "00:00:00:00:00:00":
            return mac
    node = uuid.getnode()  # may be random when the host shows no MAC: still stable for this process only
    return ":".join(f"{(node >> shift) & 0xFF:02x}" for shift in range(40, -1, -8))


def installation_id(hardware_id: str = "") -> str:
    return hardware_id or host_mac()
