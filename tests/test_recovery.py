"""Who held what, rebuilt from journal events (restart) or a replication stream (standby)."""

from hypothesis import given
from hypothesis import strategies as st

from licmaster.daemon.ha.recovery import Holdings, holdings_at_end
from licmaster.wire.events import BYE, CHECKIN, EXPIRE, GRANT, RELEASE, TAKEOVER, Change


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


_small = st.sampled_from(["a", "b", "c", None, ""])
_changes = st.lists(st.builds(Change, st.sampled_from([GRANT, CHECKIN, RELEASE, EXPIRE, BYE, TAKEOVER, "assign"]),
                              _small, st.sampled_from(["port", None]), _small, st.sampled_from(["1", "2", "3", None]), _small),
                    max_size=40)


@given(_changes)
def test_a_standby_applying_a_push_at_once_ends_where_applying_it_change_by_change_does(changes: list[Change]) -> None:
    one_by_one, at_once = Holdings(), Holdings()
    for change in changes:
        one_by_one.apply(*change)
    at_once.apply_many(changes)
    assert (at_once.by_node, at_once.lease_node, at_once.took) == (one_by_one.by_node, one_by_one.lease_node, one_by_one.took)
