"""Shared helpers: build license sets from short TOML, and pools from them."""

from __future__ import annotations

import datetime as dt

import pytest

from licmaster.licenses.files import parse_text
from licmaster.model.pool import Pool
from licmaster.model.types import InstalledLicense, Node

MAC_A = "00:90:33:00:00:0a"
MAC_B = "00:90:33:00:00:0b"
TODAY = dt.date(2026, 11, 27)


def licenses(*entries: tuple) -> list[InstalledLicense]:
    """licenses(("PBX-Port13", 10), ("PBX-IPVA13", 5, MAC_A)) -> validated InstalledLicense list."""
    lines = []
    for entry in entries:
        lines.append("[[license]]")
        lines.append(f"type = {entry[0]!r}")
        lines.append(f"count = {entry[1]}")
        if len(entry) > 2 and entry[2]:
            lines.append(f"bind = {entry[2]!r}")
    result = parse_text("\n".join(lines))
    assert result.ok, result.errors
    return result.licenses


def pool_of(*entries: tuple, nodes: tuple[Node, ...] = ()) -> Pool:
    pool = Pool(licenses(*entries), today=TODAY)
    for node in nodes:
        pool.set_node(node)
    return pool


@pytest.fixture
def office() -> Pool:
    return pool_of(("PBX-Port13", 10), ("PBX-Standby13", 10), ("PBX-Channels13", 4), ("PBX-Operator13", 1),
                   nodes=(Node("pbx1", mac=MAC_A), Node("pbx2", mac=MAC_B)))


# Tests that start real processes (masters, etcd members, the CLI) or a real browser, marked here
# in one place so that `pytest -m "not process"` runs the in-memory suite alone (about a tenth of
# the time) and `pytest -m "not browser"` runs everything but Chromium.
PROCESS_MODULES = frozenset({
    "test_alerts", "test_bench", "test_chaos", "test_cli", "test_client", "test_console", "test_dashboard", "test_datadir",
    "test_durability", "test_examples", "test_leadership", "test_replication", "test_serve_fuzz", "test_server",
    "test_site_policy", "test_slave_sim", "test_standby_master"})
BROWSER_MODULES = frozenset({"test_dashboard"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module is not None else ""
        if module in PROCESS_MODULES:
            item.add_marker(pytest.mark.process)
        if module in BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
