"""The packages are layers, and imports only go down. Read from the source, not from a list:
a new module is checked the day it is written.

    licmaster.model        pure: nothing but itself
    licmaster.licenses     license files -> model
    licmaster.wire         codec, requests, replies, events: model only
    licmaster.client       what PBX integrations import: wire (and model's error codes)
    licmaster.daemon       the master: all of the above
    licmaster.testing      runs masters: daemon, client
    licmaster.cli          the command
    licmaster.terminal     what both commands do the same at a terminal: nothing of the project
    slave_sim              the simulator: model, licenses, client, testing; never daemon internals
    slave_sim.replay       what reads a master's record offline: also wire, the daemon's journal and config, console
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED: dict[str, set[str]] = {
    "licmaster.model": {"licmaster.model"},
    "licmaster.licenses": {"licmaster.model", "licmaster.licenses"},
    "licmaster.wire": {"licmaster.model", "licmaster.wire"},
    "licmaster.client": {"licmaster.wire", "licmaster.model", "licmaster.client"},
    "licmaster.daemon": {"licmaster.model", "licmaster.licenses", "licmaster.wire", "licmaster.client", "licmaster.daemon"},
    # The operator's console over the daemon: API, metrics, the live dashboard, the usage report.
    # It reads the master through Master.status() and its public methods; the daemon never imports it.
    "licmaster.console": {"licmaster.model", "licmaster.licenses", "licmaster.wire", "licmaster.daemon", "licmaster.console"},
    "licmaster.serve": {"licmaster.daemon", "licmaster.console", "licmaster.serve"},  # `licmaster serve`: the two together
    "licmaster.testing": {"licmaster.daemon", "licmaster.client", "licmaster.wire", "licmaster.testing"},
    "licmaster.cli": {"licmaster.model", "licmaster.licenses", "licmaster.wire", "licmaster.daemon", "licmaster.cli", "licmaster",
                      "licmaster.console_cli", "licmaster.terminal", "licmaster.console", "licmaster.serve"},
    "licmaster.console_cli": set(),  # talks HTTP to a master: imports nothing of it
    "licmaster.terminal": set(),  # the commands' shared terminal manners: imports nothing of the project
    "slave_sim": {"licmaster.model", "licmaster.licenses", "licmaster.client", "licmaster.testing", "slave_sim", "licmaster",
                  "licmaster.terminal", "slave_sim.replay"},
    # `slave-sim replay` reads a master's record as `licmaster whatif` does: its journal and config
    # (the daemon's storage and config readers), the rows' schema (wire), whatif's peak and time
    # parsing (console). What it plays, it plays as a client, as the rest of slave_sim does.
    "slave_sim.replay": {"licmaster.model", "licmaster.licenses", "licmaster.client", "licmaster.testing", "slave_sim", "licmaster",
                         "licmaster.terminal", "slave_sim.replay", "licmaster.wire", "licmaster.daemon", "licmaster.console"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in ("licmaster", "slave_sim") for p in (ROOT / pkg).rglob("*.py")}


def imports_of(name: str, path: Path) -> set[str]:
    """Project modules `name` imports, relative imports resolved (TYPE_CHECKING ones included:
    a layer may not even name what is above it)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    known = modules()
    return {m for m in found if m in known and m != name}


def layer_of(name: str) -> str:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if name == layer or name.startswith(layer + "."):
            return layer
    return name


@pytest.mark.parametrize("name", sorted(modules()))
def test_each_module_imports_only_from_its_layer_or_below(name: str) -> None:
    layer = layer_of(name)
    if layer == "licmaster":
        return  # the package's own __init__
    assert layer in ALLOWED, f"{name} is in no layer: add it to ALLOWED"
    wrong = sorted(m for m in imports_of(name, modules()[name]) if layer_of(m) not in ALLOWED[layer] | {"licmaster"})
    assert not wrong, f"{name} ({layer}) imports {wrong}"


def test_no_import_cycles() -> None:
    graph = {name: imports_of(name, path) for name, path in modules().items()}
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            pytest.fail("import cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        for nxt in graph.get(node, ()):
            if not (nxt.startswith(node + ".") or node.startswith(nxt + ".") and nxt.count(".") < node.count(".")):
                visit(nxt, stack + [node])
        done.add(node)

    for name in graph:
        visit(name, [])


# Modules whose state is kept without I/O (h11's way): they may not import what does I/O or waits.
PURE = {"licmaster.client.core", "licmaster.daemon.ha.failover"}
IO_MODULES = {"asyncio", "socket", "ssl", "selectors", "threading", "time", "sqlite3", "subprocess"}


@pytest.mark.parametrize("name", sorted(PURE))
def test_the_cores_without_io_import_nothing_that_does_io(name: str) -> None:
    tree = ast.parse(modules()[name].read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & IO_MODULES, f"{name} imports {sorted(imported & IO_MODULES)}"
