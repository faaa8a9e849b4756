"""Who holds which floating licenses, rebuilt from journal events. Pure.

After a restart (or a `kill -9`) the pool starts empty while PBXs still believe they hold their
leases; a standby master that takes over starts the same way. During the grace window a node may
re-take only what it held (by `sync` or `checkout`); anything new waits (`grace`). So no restart
or failover ever lets more licenses be in use than installed, and PBXs that come back find their
licenses waiting for them. The events come from the previous run's journal (restart) or from the
master's replication stream (standby).
"""

from __future__ import annotations

from collections.abc import Iterable

from licmaster.wire.events import BYE, CHECKIN, EXPIRE, GRANT, RELEASE, TAKEOVER, Change

Key = tuple[str, str]  # (resource, holder)


class Holdings:
    """Leases by node, kept up to date one event at a time, with what each took (the grant's
    label: a master that takes over adopts each lease as it was, `rows`)."""

    def __init__(self) -> None:
        self.by_node: dict[str, dict[str, Key]] = {}
        self.lease_node: dict[str, str] = {}
        self.took: dict[str, str] = {}  # lease id -> the grant's label (TookView.label), when known

    def apply(self, event: str, node: str | None, resource: str | None, holder: str | None,
              lease: str | None, detail: str | None) -> None:
        """One event. For `takeover`, `node` is the standby and `detail` the failed node."""
        if node is None:
            return
        if event == GRANT and lease and resource and holder:
            self.by_node.setdefault(node, {})[lease] = (resource, holder)
            self.lease_node[lease] = node
            if detail:
                self.took[lease] = detail
        elif event in (CHECKIN, RELEASE) and lease:
            owner = self.lease_node.pop(lease, None)
            self.took.pop(lease, None)
            if owner is not None:
                self.by_node.get(owner, {}).pop(lease, None)
        elif event in (EXPIRE, BYE):
            for lid in self.by_node.pop(node, {}):
                self.lease_node.pop(lid, None)
                self.took.pop(lid, None)
        elif event == TAKEOVER and detail:
            moved = self.by_node.pop(detail, {})
            target = self.by_node.setdefault(node, {})
            held = set(target.values())
            for lid, key in moved.items():
                if key in held:  # the standby held it already: one of the two was checked in
                    self.lease_node.pop(lid, None)
                    self.took.pop(lid, None)
                    continue
                target[lid] = key
                self.lease_node[lid] = node

    def apply_many(self, changes: Iterable[Change]) -> None:
        """Each change in turn, as `apply`; grants and check-ins (nearly all of a busy master's
        stream) without a call each: a standby applies every row its master journals."""
        by_node, lease_node, took, apply = self.by_node, self.lease_node, self.took, self.apply
        for change in changes:
            event, node, resource, holder, lease, detail = change
            if event == GRANT and node is not None and lease and resource and holder:
                held = by_node.get(node)
                if held is None:
                    held = by_node[node] = {}
                held[lease] = (resource, holder)
                lease_node[lease] = node
                if detail:
                    took[lease] = detail
            elif event == CHECKIN and node is not None and lease:
                owner = lease_node.pop(lease, None)
                took.pop(lease, None)
                if owner is not None:
                    held = by_node.get(owner)
                    if held is not None:
                        held.pop(lease, None)
            else:
                apply(event, node, resource, holder, lease, detail)

    def apply_all(self, changes: Iterable[Change]) -> Holdings:
        for change in changes:
            self.apply(*change)
        return self

    def held(self) -> dict[str, set[Key]]:
        return {node: set(leases.values()) for node, leases in self.by_node.items() if leases}

    def rows(self) -> list[tuple[str, str, str, str, str | None]]:
        """Every lease as (node, resource, holder, lease id, label or None)."""
        return [(node, resource, holder, lid, self.took.get(lid))
                for node, leases in self.by_node.items() for lid, (resource, holder) in leases.items()]


def holdings_at_end(changes: Iterable[Change]) -> Holdings:
    """Replay the changes, oldest first: who held what, with what each took."""
    return Holdings().apply_all(changes)
