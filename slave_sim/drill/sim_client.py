"""The simulator's client: the public MasterClient, whose `freeze()` and `abort()` are the faults a
drill injects into a PBX (a cut that leaves the connection open, a crash)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from licmaster.client import LicenseError, MasterClient


class SimClient(MasterClient):
    """A PBX of the simulator: MasterClient as it is, but that a hello a master refuses
    (`no_quorum` while no master may grant, `busy`: the client's `refused` event) is told to
    `on_hello_refused`; the client goes on as it would (it tries the next master, and again)."""

    def __init__(self, *args: Any, on_hello_refused: Callable[[LicenseError], None] | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None, **kwargs: Any) -> None:
        def told(event: dict[str, Any]) -> None:
            if event.get("event") == "refused" and on_hello_refused is not None:
                on_hello_refused(LicenseError(event))
            if on_event is not None:
                on_event(event)

        super().__init__(*args, on_event=told, **kwargs)
