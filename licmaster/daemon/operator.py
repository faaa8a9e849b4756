"""What an operator may take back by hand, as a license server's operator expects (FlexNet's
lmremove, RLM's remove): one floating lease of a PBX, or one user license of a user. Each goes
through the same paths as the PBX's own check-in or unassign (the pool, the durable store, the
journal, the replica stream), is journaled with who did it (an `operator` row), and the PBX
concerned is told (`revoked`), so that what it believes it holds stays true."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from licmaster.daemon import logs
from licmaster.model.errors import Denial
from licmaster.model.leases import Lease
from licmaster.wire.events import OPERATOR, RELEASE, UNASSIGN

if TYPE_CHECKING:
    from licmaster.daemon.dispatch import Dispatcher


class NotFound(LookupError):
    """No such lease, holder or assignment: nothing was changed."""


def release_leases(dispatch: Dispatcher, node: str, *, lease: str | None, holder: str | None, who: str) -> list[Lease]:
    """The node's lease `lease`, or every lease of `holder` (one per resource): checked in, each
    journaled `release` "released by WHO", the PBX told `revoked`. NotFound if none matches."""
    chosen = [held for held in dispatch.pool.node_leases(node)
              if (lease is not None and held.id == lease) or (holder is not None and held.holder == holder)]
    if not chosen:
        raise NotFound(f"{node[:64]} holds no lease {lease!r}" if lease is not None else f"{node[:64]} holds nothing for {holder!r}")
    session = dispatch.sessions.get(node)
    for held in chosen:
        dispatch.book.checkin(node, held.id)
        dispatch.record(RELEASE, node, held.resource, held.holder, held.id, f"released by {who}")
        if session is not None and session.conn is not None:
            session.conn.send_event({"event": "revoked", "resource": held.resource, "holder": held.holder, "lease": held.id,
                                     "reason": f"released by an operator ({who})"})
    dispatch.record(OPERATOR, node, detail=f"release {len(chosen)} lease(s) of {node} by {who}")
    logs.event("operator_release", logging.WARNING, node=node, leases=len(chosen), who=who)
    return chosen


def unassign(dispatch: Dispatcher, user: str, family: str, who: str) -> int | None:
    """Take a user license back from a user (durable first, as any unassign). Returns the version
    given back; NotFound if the user has no such license; Denial if the model refuses (a
    prerequisite of another license the user keeps: R-USER-2, R-APP-1)."""
    assignment = dispatch.pool.users.get(user, {}).get(family)
    if assignment is None:
        raise NotFound(f"{user[:64]!r} has no {family[:64]} license")
    result = dispatch.pool.unassign(assignment.node, user, [family])
    if isinstance(result, Denial):
        raise DeniedByModel(result)
    assert dispatch.store is not None
    try:  # durable first, as Dispatcher._configure: a store that fails leaves the pool as it was
        dispatch.store.delete_assignments(user, [family])
    except Exception:
        dispatch.pool.assign(assignment.node, user, [family])
        raise
    version = result.changed[0][1] if result.changed else None
    dispatch.record(UNASSIGN, assignment.node, family, user, None, str(version))
    dispatch.record(OPERATOR, assignment.node, family, user, detail=f"unassign {family} of {user} by {who}")
    logs.event("operator_unassign", logging.WARNING, user=user, family=family, node=assignment.node, who=who)
    return version


class DeniedByModel(Exception):
    def __init__(self, denial: Denial) -> None:
        super().__init__(denial.message)
        self.denial = denial
