"""The simulator's client: the public MasterClient, whose `freeze()` and `abort()` are the faults a
drill injects into a PBX (a cut that leaves the connection open, a crash)."""

from __future__ import annotations

from licmaster.client import MasterClient


class SimClient(MasterClient):
    """A PBX of the simulator: nothing of MasterClient is changed (the drill uses its public API)."""
