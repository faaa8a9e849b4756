"""One schema for journal rows and the replica stream, with a version."""

from __future__ import annotations

import pytest

from licmaster.wire import events
from licmaster.wire.events import STREAM_VERSION, Change, StreamError


def test_rows_are_read_by_name_and_short_rows_are_padded() -> None:
    row = (1.5, events.GRANT, "pbx1", "port", "alice", "7", "PBX-Port13:1")
    assert events.as_dict(row) == {"ts": 1.5, "event": "grant", "node": "pbx1", "resource": "port", "holder": "alice",
                                   "lease": "7", "detail": "PBX-Port13:1", "rule": None}
    assert events.change_of(row) == Change("grant", "pbx1", "port", "alice", "7", "PBX-Port13:1")


def test_the_replica_event_carries_only_state_changes_with_the_stream_version() -> None:
    batch = [(1.0, events.GRANT, "a", "port", "x", "1", "PBX-Port13:1"), (1.1, events.DENY, "a", "port", "y", None, "exhausted", "R-PORT-1"),
             (1.2, events.ASSIGN, "a", "App(phone)", "ann", None, "13")]
    event = events.replica_event(batch)
    assert event is not None and event["v"] == STREAM_VERSION
    assert events.read_replica(event) == [Change("grant", "a", "port", "x", "1", "PBX-Port13:1"),
                                          Change("assign", "a", "App(phone)", "ann", None, "13")]
    assert events.replica_event([batch[1]]) is None  # a denial changes nothing a standby keeps


@pytest.mark.parametrize("event", [
    {"event": "replica", "v": STREAM_VERSION + 1, "rows": []},
    {"event": "replica", "rows": []},
    {"event": "replica", "v": STREAM_VERSION, "rows": [["grant", "a", "port"]]},
    {"event": "replica", "v": STREAM_VERSION, "rows": "x"},
])
def test_a_stream_of_another_version_or_shape_is_refused_not_misread(event: dict) -> None:
    with pytest.raises(StreamError):
        events.read_replica(event)
