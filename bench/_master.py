"""A real `licmaster serve` for a benchmark, in a temporary directory (licmaster.testing)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from licmaster.testing import MasterProcess  # noqa: E402


def bench_master(workdir: Path, licenses: str, **config: Any) -> MasterProcess:
    """Started on `licenses` (TOML text), logging warnings only."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "licenses.toml").write_text(licenses)
    return MasterProcess(workdir, {"licenses": ["licenses.toml"], "log_level": "warning", **config}, name="bench-master").start()
