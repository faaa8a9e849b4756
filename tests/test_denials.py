"""Unmet demand in the journal (daemon/denials.py): each holder refused is one demand, from its
first ask to its last, however often it retries; a flood of holders keeps the state bounded."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

from licmaster.daemon.denials import DROPPED_BITS, MAX_NODE_DEMANDS, RETRY_S, DenialJournal
from licmaster.daemon.storage.journal import read_journal
from licmaster.model import errors as E
from licmaster.model.errors import Denial
from licmaster.wire import events
from licmaster.wire.events import Demand, demand_detail, read_demand

from .daemon import in_process

EXHAUSTED = Denial(E.EXHAUSTED, "not enough free PBX-Port for port: 5 of 5 in use", rule="R-PORT-1")
WALL0 = 1_700_000_000.0  # the wall clock when the loop's clock reads 0


class Clock:
    """The loop's clock and the wall clock, moved together."""

    def __init__(self) -> None:
        self.now = 1000.0

    def wall(self) -> float:
        return WALL0 + self.now


def journal(clock: Clock, **options: Any) -> tuple[DenialJournal, list[tuple[Any, ...]]]:
    rows: list[tuple[Any, ...]] = []
    return DenialJournal(lambda *row: rows.append(row), wall=clock.wall, **options), rows


def demands(rows: list[tuple[Any, ...]], event: str = events.DEMAND) -> list[tuple[str, str, str | None, Demand | None]]:
    return [(r[1], r[2], r[3], read_demand(r[5])) for r in rows if r[0] == event]


def test_five_phones_refused_together_are_five_demands() -> None:
    clock = Clock()
    denials, rows = journal(clock)
    for phone in ("p1", "p2", "p3", "p4", "p5"):
        denials.deny("pbx1", EXHAUSTED, "port", phone, clock.now)
    clock.now += RETRY_S + 1
    denials.tick(clock.now)
    found = demands(rows)
    assert sorted(holder for _, _, holder, _ in found) == ["p1", "p2", "p3", "p4", "p5"]
    for node, resource, _, demand in found:
        assert (node, resource) == ("pbx1", "port")
        assert demand == Demand("exhausted", "PBX-Port", WALL0 + 1000.0, WALL0 + 1000.0, 1)
    assert all(r[6] == "R-PORT-1" for r in rows if r[0] == events.DEMAND)
    # the refusals are counted as before: one deny row with its holder and words, four more
    assert [(r[0], r[3], r[5]) for r in rows if r[0] in (events.DENY, events.DENY_REPEATED)] == [
        ("deny", "p1", "exhausted"), ("deny_repeated", None, "exhausted x4")]


def test_one_phone_retrying_fifty_times_in_three_seconds_is_one_demand() -> None:
    clock = Clock()
    denials, rows = journal(clock)
    start = clock.now
    for i in range(50):
        clock.now = start + i * 3.0 / 49
        denials.deny("pbx1", EXHAUSTED, "port", "alice", clock.now)
        denials.tick(clock.now)
    assert demands(rows) == []  # still asking: open
    clock.now += RETRY_S / 2
    denials.tick(clock.now)
    assert demands(rows) == []  # a pause shorter than the retry window: it may still ask again
    clock.now += RETRY_S
    denials.tick(clock.now)
    [(node, resource, holder, demand)] = demands(rows)
    assert (node, resource, holder) == ("pbx1", "port", "alice")
    assert demand is not None and demand.asks == 50
    assert (demand.first, demand.last) == (WALL0 + start, round(WALL0 + start + 3.0, 3))
    assert denials.open_demands == 0


def test_demands_far_apart_stay_apart_and_a_retry_window_is_per_holder() -> None:
    clock = Clock()
    denials, rows = journal(clock)
    t0 = clock.now

    def ask(at: float, node: str, resource: str) -> None:
        clock.now = at
        denials.deny(node, EXHAUSTED, resource, "alice", at)

    ask(t0, "pbx1", "port")
    ask(t0 + RETRY_S, "pbx1", "port")  # just within: a retry
    ask(t0 + 2 * RETRY_S + 0.5, "pbx1", "port")  # after a longer pause: a new demand
    ask(t0 + 2 * RETRY_S + 0.5, "pbx2", "port")  # the same name on another node: another
    ask(t0 + 2 * RETRY_S + 0.5, "pbx1", "conference")  # another resource: another
    clock.now = t0 + 4 * RETRY_S
    denials.tick(clock.now)
    found = sorted((n, r, d.first - WALL0, d.last - WALL0, d.asks) for n, r, _, d in demands(rows) if d is not None)
    assert found == [("pbx1", "conference", t0 + 20.5, t0 + 20.5, 1), ("pbx1", "port", t0, t0 + RETRY_S, 2),
                     ("pbx1", "port", t0 + 20.5, t0 + 20.5, 1), ("pbx2", "port", t0 + 20.5, t0 + 20.5, 1)]


def test_a_refusal_about_no_license_is_no_demand() -> None:
    clock = Clock()
    denials, rows = journal(clock)
    denials.deny("pbx1", Denial(E.BAD_REQUEST, "field 'count': too big"), "port", "a", clock.now)
    denials.deny("pbx1", Denial(E.GRACE, "grace window"), "port", "b", clock.now)
    denials.deny("pbx1", Denial(E.UNKNOWN_RESOURCE, "no such resource"), "x" * 1000, "c", clock.now)
    denials.deny("pbx1", Denial(E.POLICY, "reserved for site b", rule="R-SITE-2"), "port", "d", clock.now)
    denials.close(clock.now)
    assert [holder for _, _, holder, _ in demands(rows)] == ["d"]
    assert len([r for r in rows if r[0] == events.DENY]) == 4  # every one journaled as before


def test_a_flood_of_a_hundred_thousand_holders_keeps_the_state_bounded() -> None:
    clock = Clock()
    denials, rows = journal(clock)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100_000):
            denials.deny("flooder", EXHAUSTED, "port", f"holder-{i}", clock.now + i * 1e-5)  # one second in all
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert denials.open_demands == MAX_NODE_DEMANDS
    assert held < 2_000_000  # about 1,024 demands and one bitmap, not 100,000 of anything
    clock.now += RETRY_S + 1
    denials.tick(clock.now)
    named = demands(rows)
    assert len(named) == MAX_NODE_DEMANDS
    [(node, resource, holder, summary)] = demands(rows, events.DEMAND_DROPPED)
    assert (node, resource, holder) == ("flooder", "port", None)
    assert summary is not None and summary.asks == 100_000 - MAX_NODE_DEMANDS
    assert summary.holders is not None and not summary.at_least
    assert abs(summary.holders - summary.asks) < 0.05 * summary.asks  # estimated: distinct holders, each asking once
    assert len(rows) < MAX_NODE_DEMANDS + 10  # the rows: the demands, one summary, one deny, one deny_repeated
    assert denials.open_demands == 0


def test_the_holders_dropped_are_counted_not_their_retries() -> None:
    clock = Clock()
    denials, rows = journal(clock, max_node_demands=2)
    for _ in range(20):  # five phones, each asking 20 times: two named, three summarised
        for phone in ("p1", "p2", "p3", "p4", "p5"):
            denials.deny("pbx1", EXHAUSTED, "port", phone, clock.now)
    clock.now += RETRY_S + 1
    denials.tick(clock.now)
    assert sorted((h, d.asks) for _, _, h, d in demands(rows) if d is not None) == [("p1", 20), ("p2", 20)]
    [(_, _, _, summary)] = demands(rows, events.DEMAND_DROPPED)
    assert summary is not None and (summary.holders, summary.asks, summary.at_least) == (3, 60, False)
    assert DROPPED_BITS >= 1 << 15


def test_all_nodes_together_are_bounded_and_so_are_their_summaries() -> None:
    clock = Clock()
    denials, rows = journal(clock, max_demands=10, max_dropped=3)
    for n in range(6):
        for h in range(4):
            denials.deny(f"pbx{n}", EXHAUSTED, "port", f"h{h}", clock.now)
    assert denials.open_demands == 10
    denials.close(clock.now)
    assert len(demands(rows)) == 10
    summaries = demands(rows, events.DEMAND_DROPPED)
    assert len(summaries) == 4 and summaries[-1][:2] == ("*", "*")  # three nodes by name, the others together
    assert sum(d.asks for *_, d in summaries if d is not None) == 24 - 10
    assert summaries[-1][3] is not None and summaries[-1][3].holders == 4  # pbx4's and pbx5's holders, apart


def test_a_demand_still_open_at_stop_is_written_as_it_stands() -> None:
    clock = Clock()
    denials, rows = journal(clock)
    denials.deny("pbx1", EXHAUSTED, "port", "alice", clock.now)
    clock.now += 2
    denials.deny("pbx1", EXHAUSTED, "port", "alice", clock.now)
    clock.now += 1
    denials.flush(clock.now)
    assert demands(rows) == []
    denials.close(clock.now)
    [(_, _, _, demand)] = demands(rows)
    assert demand is not None and (demand.asks, demand.last - demand.first) == (2, 2.0)


def test_a_demand_row_reads_back_and_reads_as_words() -> None:
    detail = demand_detail(Demand("exhausted", "PBX-Port", 1_700_000_000.1234, 1_700_000_003.5, 50))
    assert detail == "exhausted family=PBX-Port first=1700000000.123400 last=1700000003.500000 asks=50"
    assert read_demand(detail) == Demand("exhausted", "PBX-Port", 1_700_000_000.1234, 1_700_000_003.5, 50)  # to the microsecond
    assert events.detail_text(events.DEMAND, detail) == "exhausted (PBX-Port), 50 asks over 3.4 s from 2023-11-14T22:13:20.123Z"
    dropped = demand_detail(Demand("policy", None, 1_700_000_000.0, 1_700_000_009.0, 400, 120, True))
    assert read_demand(dropped) == Demand("policy", None, 1_700_000_000.0, 1_700_000_009.0, 400, 120, True)
    assert events.detail_text(events.DEMAND_DROPPED, dropped).startswith("policy, at least 120 more holders not named, 400 asks")
    assert read_demand("exhausted x4") is None and read_demand(None) is None


async def test_a_real_master_journals_each_refused_phone_and_the_readers_count_as_before(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 2\n')
    try:
        pbx = d.connect_now()
        assert pbx.call("hello", node="pbx1", role="pbx", firmware=13, platform="gateway", mac="00:90:33:00:00:01",
                        licensing="central")["ok"]
        replies = [pbx.call("checkout", resource="port", holder=f"phone{i}") for i in range(7)]
        assert [r["ok"] for r in replies] == [True, True, False, False, False, False, False]
        for _ in range(3):  # phone2 retries
            assert pbx.call("checkout", resource="port", holder="phone2")["error"] == "exhausted"
    finally:
        await d.stop()
    rows = read_journal(tmp_path / "m" / "data" / "journal.sqlite3")
    found = {r["holder"]: read_demand(r["detail"]) for r in rows if r["event"] == "demand"}
    assert sorted(found) == ["phone2", "phone3", "phone4", "phone5", "phone6"]
    assert found["phone2"] is not None and found["phone2"].asks == 4 and found["phone3"] is not None and found["phone3"].asks == 1
    assert all(r["node"] == "pbx1" and r["resource"] == "port" and r["rule"] for r in rows if r["event"] == "demand")
    refused = sum(1 if r["event"] == "deny" else int(r["detail"].rpartition(" x")[2]) for r in rows
                  if r["event"] in ("deny", "deny_repeated"))
    assert refused == 8  # the refusals' own count is what it was: every request refused
