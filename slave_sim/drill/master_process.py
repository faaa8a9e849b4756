"""The run's own master: a real `licmaster serve` (licmaster.testing.MasterProcess) on copies of
the scenario's license files in a temporary directory, so that a drill can replace them and
reload; killed (-9) and restarted on the same port for drills, stopped at the end."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path
from typing import Any

from licmaster.testing import MasterProcess as Process

from .scenario import LEASE_TTL_MS


class RunMaster(Process):
    """The run's own master (named apart from licmaster.testing.MasterProcess, which it extends)."""

    def __init__(self, licenses: tuple[Path, ...], settings: dict[str, Any], workdir: Path | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="slave-sim-") if workdir is None else None
        root = Path(self._tmp.name) if self._tmp is not None else workdir
        assert root is not None
        # The master reads copies, so that a drill can replace them and reload (SIGHUP).
        self.licenses = tuple(root / f"licenses-{i}.toml" for i in range(max(1, len(licenses))))
        root.mkdir(parents=True, exist_ok=True)
        self._install(licenses)
        super().__init__(root, {"log_level": "warning", "heartbeat_ms": 1000, "lease_ttl_ms": LEASE_TTL_MS,
                                "licenses": [str(p.resolve()) for p in self.licenses], **settings}, name="sim-master")

    @property
    def journal(self) -> Path:
        return self.workdir / "data" / "journal.sqlite3"

    def _install(self, sources: tuple[Path, ...]) -> None:
        for i, copy in enumerate(self.licenses):
            copy.write_text(sources[i].read_text() if i < len(sources) else "")
        extra = sources[len(self.licenses):]
        if extra:  # more files than at start: append them to the last copy
            self.licenses[-1].write_text(self.licenses[-1].read_text() + "\n" + "\n".join(p.read_text() for p in extra))

    def reload(self, sources: tuple[Path, ...]) -> None:
        """Replace the license files and have the master reload them (SIGHUP)."""
        self._install(sources)
        if self.alive:
            self.signal(signal.SIGHUP)

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
