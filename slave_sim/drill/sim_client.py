"""The simulator's client: the public MasterClient, whose `freeze()` and `abort()` are the faults a
drill injects into a PBX (a cut that leaves the connection open, a crash)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from licmaster.client import LicenseError, MasterClient


class SimClient(MasterClient):
    """A PBX of the simulator: MasterClient as it is, but that a hello a master refuses
    (`no_quorum` while no master may grant, ...) is told to `on_hello_refused` before the client
    goes on as it would (a reconnect tries again by itself)."""

    def __init__(self, *args: Any, on_hello_refused: Callable[[LicenseError], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_hello_refused = on_hello_refused

    async def connect(self) -> dict[str, Any]:
        try:
            return await super().connect()
        except LicenseError as exc:
            if self.on_hello_refused is not None:
                self.on_hello_refused(exc)
            raise
