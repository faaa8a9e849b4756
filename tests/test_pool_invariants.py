"""Invariants of the pool over random operation sequences (hypothesis stateful testing).

- per bucket, in use <= installed, and in use equals what the leases and assignments hold;
- an operation that fails changes nothing;
- checkout is idempotent per (node, resource, holder);
- checking everything in returns the pool to its initial state.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from licmaster.model.errors import Denial
from licmaster.model.pool import Pool
from licmaster.model.types import Node, SyncEntry

from .conftest import MAC_A, MAC_B, licenses

NODES = {
    "gw": Node("gw", mac=MAC_A, model="IP1130"),
    "vm": Node("vm", platform="ipva", mac=MAC_B),
    "old": Node("old", firmware=11),
    "dec": Node("dec", licensing="decentral"),
    "stby": Node("stby", role="standby", standby_for="gw"),
}
RESOURCES = st.sampled_from(["port", "conference", "isdn", "operator", "queue-monitor", "bogus"])
HOLDERS = st.sampled_from([f"h{i}" for i in range(6)])
USER_FAMILIES = st.lists(st.sampled_from(["PBX-UC", "App(phone)", "App(softphone)", "PBX-Video", "App(rcc)",
                                          "PBX-Mobility", "App(chat)", "App(voicemail)"]), min_size=1, max_size=3)


def snapshot(pool: Pool) -> tuple:
    return (
        sorted((b.key, b.installed, b.in_use) for b in pool.buckets()),
        sorted((lease.id, lease.node, lease.resource, lease.holder) for lease in pool.leases.values()),
        sorted((u, tuple(sorted(a))) for u, a in pool.users.items()),
    )


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = Pool(licenses(("PBX-Port13", 5), ("PBX-Port11", 2), ("PBX-Standby13", 7), ("PBX-IPVA13", 2, MAC_B),
                                  ("PBX-Channels13", 4), ("Relay-Channels", 3, MAC_A), ("Relay-PRIs", 1, MAC_A),
                                  ("PBX-Operator13", 1), ("PBX-UC13", 2), ("App(phone)13", 2), ("App(softphone)13", 1)))
        for node in NODES.values():
            self.pool.set_node(node)
        self.initial = snapshot(self.pool)

    def _checked(self, before: tuple, outcome: object) -> None:
        if isinstance(outcome, Denial):
            assert snapshot(self.pool) == before, "a failed operation changed the pool"

    @rule(node=st.sampled_from(sorted(NODES)), resource=RESOURCES, holder=HOLDERS,
          count=st.integers(-1, 8), interface=st.sampled_from([None, "bri", "pri"]))
    def checkout(self, node: str, resource: str, holder: str, count: int, interface: str | None) -> None:
        before = snapshot(self.pool)
        existing = self.pool.find_lease(node, resource, holder)
        outcome = self.pool.checkout(node, resource, holder, count, interface)
        self._checked(before, outcome)
        if existing is not None:
            assert outcome == (existing, False)  # the lease it had, nothing new taken
            assert snapshot(self.pool) == before

    @rule(node=st.sampled_from(sorted(NODES)), data=st.data())
    def checkin(self, node: str, data: st.DataObject) -> None:
        ids = sorted(self.pool.leases) + ["nope"]
        self.pool.checkin(node, data.draw(st.sampled_from(ids)))

    @rule(node=st.sampled_from(sorted(NODES)),
          entries=st.lists(st.tuples(RESOURCES, HOLDERS, st.integers(1, 3)), max_size=4))
    def sync(self, node: str, entries: list) -> None:
        self.pool.sync(node, [SyncEntry(r, h, c, "pri" if r == "isdn" else None) for r, h, c in entries])

    @rule(node=st.sampled_from(sorted(NODES)))
    def release(self, node: str) -> None:
        self.pool.release_node(node)

    @rule(failed=st.sampled_from(sorted(NODES)))
    def takeover(self, failed: str) -> None:
        before = snapshot(self.pool)
        self._checked(before, self.pool.takeover("stby", failed))

    @rule(node=st.sampled_from(sorted(NODES)), user=st.sampled_from(["ann", "bob", "cat"]), families=USER_FAMILIES,
          remove=st.booleans())
    def configure(self, node: str, user: str, families: list[str], remove: bool) -> None:
        before = snapshot(self.pool)
        op = self.pool.unassign if remove else self.pool.assign
        self._checked(before, op(node, user, families))

    @invariant()
    def never_more_in_use_than_installed(self) -> None:
        for bucket in self.pool.buckets():
            assert 0 <= bucket.in_use <= bucket.installed, bucket.to_dict()

    @invariant()
    def in_use_is_what_leases_and_assignments_hold(self) -> None:
        held: dict = {}
        for lease in self.pool.leases.values():
            for bucket, n in lease.took:
                held[bucket.key] = held.get(bucket.key, 0) + n
        for assignments in self.pool.users.values():
            for a in assignments.values():
                if a.bucket is not None:
                    held[a.bucket.key] = held.get(a.bucket.key, 0) + 1
        assert {b.key: b.in_use for b in self.pool.buckets() if b.in_use} == held

    @invariant()
    def decentral_holds_nothing(self) -> None:
        assert self.pool.node_leases("dec") == []

    def teardown(self) -> None:
        for lease in list(self.pool.leases.values()):
            self.pool.checkin(lease.node, lease.id)
        for user, assignments in list(self.pool.users.items()):
            self.pool.users.pop(user)
            for a in assignments.values():
                if a.bucket is not None:
                    a.bucket.in_use -= 1
        assert snapshot(self.pool)[:2] == self.initial[:2], "checking everything in did not restore the pool"


TestPoolInvariants = PoolMachine.TestCase
TestPoolInvariants.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
