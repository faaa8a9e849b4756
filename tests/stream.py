"""The replica stream read the plain way, for tests: every row checked, then the changes."""

from __future__ import annotations

from typing import Any

from licmaster.wire.events import Change, replica_change, replica_rows


def read_replica(event: dict[str, Any]) -> list[Change]:
    """The changes of a `replica` event (what a standby keeps), every row checked before any is
    returned; StreamError if its version or shape is not this one's. The standby itself applies
    a push with Holdings.apply_rows, which checks each row as it applies it."""
    return [change for row in replica_rows(event) if (change := replica_change(row)) is not None]
