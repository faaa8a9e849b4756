"""Who held what, rebuilt from journal events (restart) or a replication stream (standby)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from licmaster.daemon.ha.recovery import Holdings, holdings_at_end
from licmaster.wire.events import (
    ASSIGN,
    BYE,
    CHECKIN,
    DENY,
    EXPIRE,
    GRANT,
    RELEASE,
    TAKEOVER,
    UNASSIGN,
    Change,
    StreamError,
    replica_change,
)


def test_grants_checkins_and_expiry_replay_to_what_is_held() -> None:
    rows = [
        ("grant", "a", "port", "alice", "1", "PBX-Port13:1"),
        ("grant", "a", "port", "bob", "2", "PBX-Port13:1"),
        ("grant", "b", "port", "carl", "3", "PBX-Port13:1"),
        ("checkin", "a", "port", "bob", "2", None),
        ("grant", "c", "operator", "desk", "4", None),
        ("expire", "c", None, None, None, "1"),
        ("release", "b", "port", "carl", "3", "node changed"),
    ]
    assert holdings_at_end(rows).held() == {"a": {("port", "alice")}}


def test_takeover_moves_holdings_and_counts_nothing_twice() -> None:
    rows = [
        ("grant", "slave", "port", "alice", "1", None),
        ("grant", "slave", "port", "bob", "2", None),
        ("grant", "stby", "port", "alice", "3", None),
        ("takeover", "stby", None, None, None, "slave"),
    ]
    holdings = Holdings().apply_all(rows)
    assert holdings.held() == {"stby": {("port", "alice"), ("port", "bob")}}
    assert holdings.by_node == {"stby": {"3": ("port", "alice"), "2": ("port", "bob")}}
    holdings.apply("checkin", "stby", "port", "bob", "2", None)  # lease ids survive the move
    assert holdings.held() == {"stby": {("port", "alice")}}


def test_bye_and_unknown_leases_are_harmless() -> None:
    holdings = Holdings().apply_all([("checkin", "a", "port", "x", "99", None), ("bye", "nobody", None, None, None, "0")])
    assert holdings.held() == {}


_text = st.sampled_from(["a", "b", "c", ""])
_field = _text | st.none() | st.integers(0, 3) | st.binary(max_size=1)  # decoding may give any of them
_kind = st.sampled_from([GRANT, CHECKIN, RELEASE, EXPIRE, BYE, TAKEOVER, ASSIGN, UNASSIGN, DENY, "nonsense"])
_row = st.builds(lambda kind, fields, size, as_tuple: (tuple if as_tuple else list)([1.0, kind, *fields][:size]),
                 _kind | _field, st.lists(_text | st.none(), min_size=8, max_size=8) | st.lists(_field, min_size=8, max_size=8),
                 st.integers(4, 10), st.booleans())
_lease_row = st.builds(lambda kind, node, holder, lease, label: [1.0, kind, node, "port", holder, lease, *label],
                       st.sampled_from([GRANT, CHECKIN]), _text, _text, st.sampled_from(["1", "2", "3", ""]),
                       st.sampled_from([[], ["PBX-Port13:1"], [None], [""]]))


@given(st.lists(_lease_row | _row, max_size=40))
def test_a_standby_applying_a_push_ends_where_checking_and_applying_each_row_apart_does(rows: list) -> None:
    """Holdings.apply_rows, the standby's inline path for grants and check-ins, against the
    reference: each row read by replica_change and applied by apply. Same holdings, same
    assignments, and the same first row refused (those before it applied by both)."""
    fast, reference = Holdings(), Holdings()
    expected: list[Change] = []
    refused_at = None
    for index, row in enumerate(rows):
        try:
            change = replica_change(row)
        except StreamError:
            refused_at = index
            break
        if change is not None and change.event in (ASSIGN, UNASSIGN):
            expected.append(change)
        elif change is not None:
            reference.apply(*change)
    assignments: list[Change] = []
    if refused_at is None:
        fast.apply_rows(rows, assignments)
    else:
        with pytest.raises(StreamError):
            fast.apply_rows(rows, assignments)
    assert assignments == expected
    assert (fast.by_node, fast.lease_node, fast.took) == (reference.by_node, reference.lease_node, reference.took)
