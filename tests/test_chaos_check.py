"""The chaos drill's checker on histories made by hand: it passes a sound one and names the first
violation of each rule."""

from __future__ import annotations

from typing import Any

from slave_sim.availability import HOLD_RULE, Availability, describe
from slave_sim.chaos.check import RULES, by_rule, check


def history(**changes: Any) -> dict[str, Any]:
    sound = {
        "samples": [{"t": 0.1, "believed": 2, "acting": 2, "installed": 3}, {"t": 0.2, "believed": 3, "acting": 3, "installed": 3}],
        "grants": [{"t": 0.05, "pbx": "p1", "holder": "a"}, {"t": 0.06, "pbx": "p1", "holder": "b"},
                   {"t": 0.07, "pbx": "p2", "holder": "c"}],
        "checkins": [{"t": 0.3, "pbx": "p1", "holder": "b"}],
        # p2's hold ran out (2 s without a confirmation), then its re-sync lost "c": allowed
        "lapses": [{"t": 0.35, "pbx": "p2", "leases": 1, "silent_s": 2.0, "hold_s": 2.0}],
        "losses": [{"t": 0.4, "pbx": "p2", "holder": "c", "why": "exhausted", "lapsed": True}],
        "held": {"p1": ["a"], "p2": []},
        "last_heal": 10.0, "served": {"p1": 10.5, "p2": 11.0},
    }
    return {**sound, **changes}


def test_a_sound_history_passes() -> None:
    assert check(history()) == []


def test_more_believed_than_installed_is_the_first_violation_with_its_sample() -> None:
    samples = [{"t": 0.1, "believed": 3, "acting": 1, "installed": 3}, {"t": 0.2, "believed": 4, "acting": 1, "installed": 3},
               {"t": 0.3, "believed": 5, "acting": 1, "installed": 3}]
    [violation] = check(history(samples=samples))
    assert violation["t"] == 0.2 and violation["sample"]["believed"] == 4 and "believed 4 > installed 3" in violation["detail"]


def test_more_in_use_on_the_serving_masters_than_installed_is_a_violation() -> None:
    [violation] = check(history(samples=[{"t": 1.0, "believed": 0, "acting": 4, "installed": 3}]))
    assert "acting 4 > installed 3" in violation["detail"]


def test_a_grant_neither_held_nor_given_back_nor_told_lost_is_a_violation() -> None:
    [violation] = check(history(held={"p1": [], "p2": []}))
    assert violation["pbx"] == "p1" and "'a'" in violation["detail"]


def test_a_grant_after_its_loss_must_be_held_again() -> None:
    grants = history()["grants"] + [{"t": 0.5, "pbx": "p2", "holder": "c"}]  # lost at 0.4, granted again at 0.5
    [violation] = check(history(grants=grants))
    assert violation["pbx"] == "p2" and "'c'" in violation["detail"]


def test_a_pbx_not_served_within_5_s_of_the_last_heal_is_a_violation() -> None:
    violations = check(history(served={"p1": 15.5, "p2": None}))
    assert [v["pbx"] for v in violations] == ["p1", "p2"]
    assert "after 5.50 s" in violations[0]["detail"] and "never" in violations[1]["detail"]


def test_a_lease_believed_and_counted_under_the_same_id_for_the_same_holder_is_sound() -> None:
    believed = {"p1": [["port", "a", "11"], ["port", "b", "12"]]}
    counted = {"p1": [["port", "b", "12"], ["port", "a", "11"], ["port", "leaked", "13"]]}  # a leak is no violation
    assert check(history(audits=[{"t": 5.0, "believed": believed, "counted": counted}])) == []


def test_each_way_a_belief_can_differ_from_the_master_s_count_is_named() -> None:
    from slave_sim.chaos.check import belief_violations
    believed = {"p1": [["port", "a", "11"], ["port", "b", "12"], ["port", "c", "13"]]}
    counted = {"p1": [["port", "a", "21"], ["port", "x", "12"]]}  # a under another id; b's id is x's; c not at all
    found = belief_violations(believed, counted, 5.0)
    assert [v["detail"] for v in found] == [
        "p1 believes port 'a' as lease 11: the master counts it under id 21",
        "p1 believes port 'b' as lease 12: the master counts id 12 for port 'x'",
        "p1 believes port 'c' as lease 13: the master does not count it"]
    assert check(history(audits=[{"t": 5.0, "believed": believed, "counted": counted}]))[0]["rule"] == \
        "every lease a PBX believes is the master's count for it"


def test_a_lease_lost_within_its_hold_is_a_violation() -> None:
    losses = [{"t": 0.4, "pbx": "p2", "holder": "c", "why": "exhausted", "lapsed": False}]
    [violation] = check(history(losses=losses))
    assert violation["rule"] == HOLD_RULE and violation["pbx"] == "p2"
    assert violation["detail"] == "p2 lost 'c' at t=0.40 s (exhausted) within its hold"
    counts = by_rule([violation])
    assert list(counts) == list(RULES) and counts[HOLD_RULE] == 1 and sum(counts.values()) == 1


def test_a_lapse_before_a_whole_hold_without_a_confirmation_is_a_violation() -> None:
    lapses = [{"t": 0.35, "pbx": "p2", "leases": 1, "silent_s": 1.5, "hold_s": 2.0}]
    [violation] = check(history(lapses=lapses))
    assert violation["rule"] == HOLD_RULE
    assert violation["detail"] == "p2 was told its 1 leases lapsed at t=0.35 s, 1.5 s after its last confirmation (hold 2 s)"


def test_availability_counts_what_the_pbxs_were_told_and_a_re_sync_ends_a_lapse() -> None:
    seen = Availability()
    seen.seen(1.0, "p1", {"event": "lost", "holder": "a", "error": "exhausted"})  # within its hold
    seen.seen(2.0, "p1", {"event": "lapsed", "leases": 3}, silent_s=5.0, hold_s=5.0)
    seen.seen(2.5, "p1", {"event": "lost", "holder": "b", "error": "exhausted"})  # its hold had run out
    seen.seen(3.0, "p1", {"event": "reconnected"})
    seen.seen(4.0, "p1", {"event": "lost", "holder": "c", "error": "revoked"})  # confirmed again since: within its hold
    seen.seen(4.5, "p1", {"event": "unresponsive"})  # not about its leases
    assert seen.summary() == {"lapses": 1, "leases_lapsed": 3, "leases_lost": 3, "out_of_service": 6}
    assert [v["detail"].split(" at ")[0] for v in seen.within_hold()] == ["p1 lost 'a'", "p1 lost 'c'"]
    assert describe(seen.summary()) == ("1 time(s) a PBX was told its leases lapsed (3 leases it had to stop using), "
                                        "3 lease(s) lost at a re-sync")
    other = Availability()
    other.seen(0.5, "p2", {"event": "lapsed", "leases": 2}, silent_s=float("inf"), hold_s=5.0)  # never confirmed
    seen.merge(other)
    assert [lapse["pbx"] for lapse in seen.lapses] == ["p2", "p1"] and seen.summary()["leases_lapsed"] == 5
    assert len(seen.within_hold()) == 2  # a lapse of leases never confirmed is after any hold
