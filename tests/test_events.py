"""One schema for journal rows and the replica stream, with a version."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from licmaster.daemon.storage.door import Door
from licmaster.wire import events
from licmaster.wire.codec import PART_MARGIN, FrameDecoder
from licmaster.wire.events import STREAM_VERSION, Change, StreamError
from licmaster.wire.requests import MIN_FRAME

from .stream import read_replica


def test_rows_are_read_by_name_and_short_rows_are_padded() -> None:
    row = (1.5, events.GRANT, "pbx1", "port", "alice", "7", "PBX-Port13:1")
    assert events.as_dict(row) == {"ts": 1.5, "event": "grant", "node": "pbx1", "resource": "port", "holder": "alice",
                                   "lease": "7", "detail": "PBX-Port13:1", "rule": None, "note": None}
    assert events.change_of(row) == Change("grant", "pbx1", "port", "alice", "7", "PBX-Port13:1")


def frames(data: bytes, max_frame: int = 65_536) -> list[dict]:
    return FrameDecoder(max_frame).feed(data)


def pushed(batch: list[tuple], max_frame: int = 65_536) -> bytes:
    """What the master sends a standby for these rows: the journal's door packs them within the
    standby's frames, a push frames them (daemon/ha/feed.py)."""
    door = Door()
    door.rows.extend(batch)
    return b"".join(events.replica_push(door.pack(max_frame - PART_MARGIN), seq=1))


def test_the_replica_event_carries_every_row_and_the_standby_reads_only_state_changes() -> None:
    batch = [(1.0, events.GRANT, "a", "port", "x", "1", "PBX-Port13:1"), (1.1, events.DENY, "a", "port", "y", None, "exhausted", "R-PORT-1"),
             (1.2, events.ASSIGN, "a", "App(phone)", "ann", None, "13")]
    [event] = frames(pushed(batch))
    assert event["v"] == STREAM_VERSION
    assert read_replica(event) == [Change("grant", "a", "port", "x", "1", "PBX-Port13:1"),
                                          Change("assign", "a", "App(phone)", "ann", None, "13")]
    [denial] = frames(pushed([batch[1]]))  # sent as it is (no choice per row on the master)
    assert read_replica(denial) == []  # a denial changes nothing a standby keeps


def test_a_rush_of_grants_in_one_batch_crosses_in_frames_the_standby_can_read() -> None:
    batch = [(1.0, events.GRANT, f"pbx{i % 100}", "port", f"user-{i}", str(i), "PBX-Port13:1") for i in range(5_000)]
    data = pushed(batch, 4096)
    read = frames(data, 4096)  # a decoder that refuses any frame over 4096 bytes
    assert len(read) > 1
    assert [c.lease for e in read for c in read_replica(e)] == [str(i) for i in range(5_000)]


LEASE_ROWS = st.lists(st.tuples(st.text(min_size=1, max_size=64), st.sampled_from(["port", "ipva", "channel"]),
                                st.text(min_size=1, max_size=256), st.text(min_size=1, max_size=64),
                                st.text(max_size=64)).map(list), max_size=300)
ASSIGNMENT_ROWS = st.lists(st.tuples(st.text(min_size=1, max_size=256), st.sampled_from(["App(phone)", "PBX-UC"]),
                                     st.none() | st.integers(9, 13), st.text(min_size=1, max_size=64)).map(list), max_size=100)


@settings(max_examples=60, deadline=None)
@given(leases=LEASE_ROWS, assignments=ASSIGNMENT_ROWS, max_frame=st.integers(MIN_FRAME, 70_000))
def test_a_snapshot_of_any_size_comes_whole_in_frames_within_the_limit(leases: list, assignments: list, max_frame: int) -> None:
    """Any rows (4-byte UTF-8 holders of 256 characters included), any frame size a standby may
    ask: every frame within it, and the standby's Snapshot has every row, in order."""
    read = frames(b"".join(events.snapshot_frames(leases, assignments, max_frame)), max_frame)
    snapshot = events.Snapshot()
    for event in read:
        assert not snapshot.done
        snapshot.add(event)
    assert snapshot.done and snapshot.leases == leases and snapshot.assignments == assignments


def test_an_empty_master_sends_one_part_so_the_standby_knows_it_has_the_whole() -> None:
    [event] = frames(b"".join(events.snapshot_frames([], [], 65_536)))
    snapshot = events.Snapshot()
    snapshot.add(event)
    assert snapshot.done and snapshot.leases == [] and snapshot.assignments == []


@pytest.mark.parametrize("event", [
    {"event": "snapshot", "v": STREAM_VERSION, "part": 1, "parts": 2, "leases": []},  # part 0 missing
    {"event": "snapshot", "v": STREAM_VERSION + 1, "part": 0, "parts": 1, "leases": []},
    {"event": "snapshot", "v": STREAM_VERSION, "part": 0, "parts": "two", "leases": []},
    {"event": "snapshot", "v": STREAM_VERSION, "part": 0, "parts": 1, "leases": [["a", "port", "x"]]},
    {"event": "snapshot", "v": STREAM_VERSION, "part": 0, "parts": 1, "assignments": "x"},
])
def test_a_snapshot_part_out_of_order_or_of_another_shape_is_refused(event: dict) -> None:
    with pytest.raises(StreamError):
        events.Snapshot().add(event)


@pytest.mark.parametrize("event", [
    {"event": "replica", "v": STREAM_VERSION + 1, "rows": []},
    {"event": "replica", "rows": []},
    {"event": "replica", "v": STREAM_VERSION, "rows": [["grant", "a", "port"]]},
    {"event": "replica", "v": STREAM_VERSION, "rows": "x"},
    {"event": "replica", "v": STREAM_VERSION, "rows": b"\x00garbage"},
    {"event": "replica", "v": STREAM_VERSION, "rows": [[1.0, "grant", "a", "port", 7, "1"]]},
    {"event": "replica", "v": STREAM_VERSION, "rows": [[1.0, "grant", "a"]]},
    {"event": "replica", "v": STREAM_VERSION, "rows": [[1.0, "grant", "a", "port", "x", "1", None, None, None, None]]},
])
def test_a_stream_of_another_version_or_shape_is_refused_not_misread(event: dict) -> None:
    with pytest.raises(StreamError):
        read_replica(event)


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
                       lambda inner: st.lists(inner, max_size=10), max_leaves=40)


@given(JSONISH)
def test_any_value_as_replica_rows_is_read_or_refused_with_a_stream_error(rows: object) -> None:
    try:
        changes = read_replica({"event": "replica", "v": STREAM_VERSION, "rows": rows})
    except StreamError:
        return
    assert all(isinstance(change, Change) for change in changes)


def test_every_event_the_journal_may_hold_is_known_by_name() -> None:
    named = {value for name, value in vars(events).items() if name.isupper() and isinstance(value, str)}
    assert events.KINDS == named


def test_a_hello_row_reads_back_as_the_node_that_said_it() -> None:
    from licmaster.model.types import Node
    from licmaster.wire.events import hello_detail, read_hello

    node = Node("hq-standby", role="standby", firmware=13, platform="ipva", mac="00:90:33:00:00:0a", model="IP811",
                standby_for="hq")
    assert read_hello("hq-standby", hello_detail(node)) == node
    assert read_hello("pbx", hello_detail(Node("pbx"))) == Node("pbx")
    for bad in (None, "", "not json", "[1]", '{"colour":"red"}', '{"firmware":"x","bogus":1}'):
        assert read_hello("pbx", bad) is None
