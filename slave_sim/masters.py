"""What several masters count together. Pure.

A master that takes over (a standby promoted, an election won) adopts every lease the other had
out, under the same id, for PBXs absent on it (docs/operations.md, "Two clocks"). While both
serve (cut apart without etcd, or one suspended without quorum), each counts that one phone's
license: summed over the masters it is counted twice, which is not a license more in use.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def held_in_either(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One master's sessions, each node's leases those of either listing (by lease id).

    A master's counts (`usage`) and its leases (`nodes(held=True)`) are two requests: a check-in
    or checkout between them would make the leases disagree with the counts, and a Port counted
    twice in the counts go unseen in the leases (a false "over installed"). Listed before and
    after the counts, every lease the counts saw is in one of the two listings (unless it came
    and went between them): what is counted twice is then never less than at the counts."""
    merged: dict[str, dict[str, list[Any]]] = {}
    for listing in (before, after):
        for node in listing:
            by_id = merged.setdefault(node["node"], {})
            for lease in node.get("held", []):
                by_id.setdefault(lease[2], lease)
    return [{"node": node, "held": list(by_id.values())} for node, by_id in merged.items()]


def ports_counted_twice(nodes_by_master: list[list[dict[str, Any]]]) -> int:
    """Port leases counted by more than one master for the same PBX and holder, beyond their
    first count; each master's sessions as `nodes(held=True)` lists them ([resource, holder, id]
    per lease). A Port lease takes one Port (R-PORT-1): so many Ports counted twice."""
    counts = Counter((node["node"], holder) for nodes in nodes_by_master for node in nodes
                     for resource, holder, _ in node.get("held", []) if resource == "port")
    return sum(n - 1 for n in counts.values())


GRANTING = ("acting", "grace")  # roles that grant
SERVING = (*GRANTING, "suspended")  # roles that count a book (a suspended master grants nothing)


def books_in_use(roles: dict[str, str], epochs: dict[str, int] | None = None) -> set[str]:
    """The masters whose in-use counts are licenses in use, by role: every one that grants
    (acting, grace), and a suspended one (leadership unconfirmed: it keeps its book and resumes
    with it if its leadership is renewed) only while none grants. Once another master leads, a
    suspended one's book is stale (what was checked in on the other is still in it), and it
    gives way without serving from it: counting it too would count Ports twice that no phone
    uses. Should it resume while another grants, both grant, and both count.

    With `epochs` (etcd's revisions), of several suspended masters only the newest leader's may
    resume: a higher epoch means the key was created again after the older one's lapsed, so the
    older cannot renew it (`slave-sim sim --etcd --seed 201`: two suspended, 63 "in use" of 60
    though the PBXs believed 59)."""
    granting = {master for master, role in roles.items() if role in GRANTING}
    if granting:
        return granting
    suspended = {master for master, role in roles.items() if role == "suspended"}
    if epochs and len(suspended) > 1:
        newest = max(epochs.get(master, 0) for master in suspended)
        suspended = {master for master in suspended if epochs.get(master, 0) == newest}
    return suspended
