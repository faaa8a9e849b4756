"""What the PBXs held when the previous run of the master ended, rebuilt from its journal. Pure.

After a restart (or a `kill -9`) the pool starts empty while PBXs still believe they hold their
leases. During the grace window a node may re-take only what it held then (by `sync` or
`checkout`); anything new waits (`grace`). So no restart ever lets more licenses be in use than
installed, and PBXs that come back find their licenses waiting for them.
"""

from __future__ import annotations

from collections.abc import Iterable

# journal events that change who holds what
GRANT, CHECKIN, RELEASE, EXPIRE, BYE, TAKEOVER = "grant", "checkin", "release", "expire", "bye", "takeover"
STATE_EVENTS = (GRANT, CHECKIN, RELEASE, EXPIRE, BYE, TAKEOVER)

Key = tuple[str, str]  # (resource, holder)


def held_at_end(rows: Iterable[tuple[str, str | None, str | None, str | None, str | None, str | None]]) -> dict[str, set[Key]]:
    """Replay (event, node, resource, holder, lease, detail) rows, oldest first.

    For `takeover` rows, `node` is the standby and `detail` the failed node.
    """
    by_node: dict[str, dict[str, Key]] = {}
    lease_node: dict[str, str] = {}
    for event, node, resource, holder, lease, detail in rows:
        if node is None:
            continue
        if event == GRANT and lease and resource and holder:
            by_node.setdefault(node, {})[lease] = (resource, holder)
            lease_node[lease] = node
        elif event in (CHECKIN, RELEASE) and lease:
            owner = lease_node.pop(lease, None)
            if owner is not None:
                by_node.get(owner, {}).pop(lease, None)
        elif event in (EXPIRE, BYE):
            for lid in by_node.pop(node, {}):
                lease_node.pop(lid, None)
        elif event == TAKEOVER and detail:
            moved = by_node.pop(detail, {})
            target = by_node.setdefault(node, {})
            for lid, key in moved.items():
                if key in target.values():
                    lease_node.pop(lid, None)
                    continue
                target[lid] = key
                lease_node[lid] = node
    return {node: set(leases.values()) for node, leases in by_node.items() if leases}
