"""The client's state without I/O (licmaster/client/core.py), driven in memory: which master,
which leases, and when they are the PBX's to use."""

from __future__ import annotations

import pytest

from licmaster.client.core import HeldLease, Holdings, MasterList, Parts
from licmaster.wire.codec import FrameError

A, B, C = ("10.0.0.1", 4460), ("10.0.0.2", 4460), ("10.0.0.3", 4460)


def test_a_named_master_is_gone_to_and_added_when_new() -> None:
    masters = MasterList(["10.0.0.1:4460", "10.0.0.2:4460"])
    assert masters.current == A
    assert masters.go_to_named({"error": "not_master", "master": "10.0.0.3:4460"}) and masters.current == C
    assert masters.addresses == [A, B, C]
    assert not masters.go_to_named({"error": "not_master", "master": "no port"}) and masters.current == C  # unreadable
    assert not masters.go_to_named({"event": "shutdown"})  # names nobody


def test_a_client_that_keeps_to_its_own_addresses_follows_no_name() -> None:
    masters = MasterList([A, B], follow_named=False)
    assert not masters.go_to_named({"master": "10.0.0.3:4460"}) and masters.addresses == [A, B]


def test_a_round_tries_each_address_once_in_order_from_the_current_one() -> None:
    masters = MasterList([A, B, C])
    masters.go_to(B)
    assert masters.next_untried({B}) and masters.current == C
    assert masters.next_untried({B, C}) and masters.current == A
    assert not masters.next_untried({A, B, C})
    masters.pin(C)
    assert masters.addresses == [C] and masters.current == C
    with pytest.raises(ValueError):
        MasterList([])


def lease(holder: str, lease_id: str) -> HeldLease:
    return HeldLease("port", holder, lease_id)


def test_an_ok_reply_confirms_the_leases_only_on_a_connection_where_they_were_synced() -> None:
    holdings = Holdings()
    holdings.adopt([lease("alice", "11")])
    old, new = object(), object()
    holdings.session_opened(new)  # leases to bring: nothing is confirmed before their sync
    holdings.ok_reply(new, 5.0, False, {"ok": True})  # a heartbeat before the sync
    assert not holdings.confirmed(5.1, 3.0) and holdings.believed(5.1, 3.0) == {}
    holdings.ok_reply(new, 6.0, True, {"ok": True, "leases": [], "denied": []})
    assert holdings.confirmed(8.9, 3.0) and not holdings.confirmed(9.0, 3.0)  # counted from the send time
    holdings.ok_reply(old, 8.0, False, {"ok": True})  # a late answer on the connection before: no confirmation
    assert holdings.confirmed_at == 6.0


def test_lapsed_is_said_once_per_lapse() -> None:
    holdings = Holdings()
    holdings.adopt([lease("alice", "11")])
    wire = object()
    holdings.ok_reply(wire, 1.0, True, {"ok": True})
    assert holdings.lapse(3.9, 3.0) is None
    said = holdings.lapse(4.0, 3.0)
    assert said == {"event": "lapsed", "leases": 1, "why": "no master confirmed them for 3 s"}
    assert holdings.lapse(5.0, 3.0) is None  # once
    holdings.ok_reply(wire, 6.0, False, {"ok": True})
    assert holdings.lapse(10.0, 3.0) is not None  # a new lapse


def test_a_sync_answer_drops_what_was_refused_and_gives_each_lease_its_new_id() -> None:
    holdings = Holdings()
    holdings.adopt([lease("alice", "11"), lease("bob", "12")])
    wire = object()
    lost = holdings.ok_reply(wire, 1.0, True, {"ok": True, "denied": [{"resource": "port", "holder": "bob", "error": "exhausted"}]})
    assert [(e["event"], e["holder"], e["error"]) for e in lost] == [("lost", "bob", "exhausted")]
    stale = holdings.synced_ids({"leases": [{"resource": "port", "holder": "alice", "lease": "71"},
                                            {"resource": "port", "holder": "carol", "lease": "72"}]})
    assert holdings.held[("port", "alice")].lease == "71"  # the new master's id from now on
    assert stale == ["72"]  # granted for a lease checked in meanwhile: to be given back


def test_a_revocation_takes_only_the_very_lease_it_names() -> None:
    holdings = Holdings()
    holdings.adopt([lease("alice", "11")])
    assert holdings.revoked({"resource": "port", "holder": "alice", "lease": "99"}) is None  # another id: not this one
    lost = holdings.revoked({"resource": "port", "holder": "alice", "lease": "11", "reason": "by ops"})
    assert lost is not None and lost["error"] == "revoked" and holdings.held == {}


def test_a_reply_in_parts_is_whole_only_with_its_last_part_and_parts_that_do_not_add_up_are_refused() -> None:
    parts = Parts()
    with pytest.raises(FrameError):
        parts.add(1, {"id": 1, "part": 1, "data": b""})
    with pytest.raises(FrameError):
        parts.add(1, {"id": 1, "parts": 1})


def test_leases_stay_the_pbxs_for_the_whole_hold_not_only_a_lease_ttl() -> None:
    # The two clocks: a PBX cut off from every master keeps using what it holds for hold_s.
    holdings = Holdings()
    holdings.adopt([lease("alice", "11")])
    wire = object()
    holdings.ok_reply(wire, 1.0, True, {"ok": True})
    hold = 259_200.0
    assert holdings.lapse(1.0 + 3.0, hold) is None and holdings.confirmed(1.0 + 3600, hold)
    assert set(holdings.believed(1.0 + hold - 0.001, hold)) == {("port", "alice")}
    assert holdings.believed(1.0 + hold, hold) == {} and holdings.lapse(1.0 + hold, hold) is not None
