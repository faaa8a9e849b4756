"""The journal's door (licmaster/daemon/storage/door.py): rows packed once for the standby are
the bytes the journal writes; without a standby the journal writes marshal, as always."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from licmaster.daemon.storage.door import MARSHAL, MSGPACK, Door, batch_blob
from licmaster.daemon.storage.journal import _decode

ROWS = st.lists(st.tuples(st.floats(0, 2e9), st.sampled_from(["grant", "checkin", "deny"]), st.text(max_size=30),
                          st.sampled_from(["port", "ipva"]), st.text(max_size=60), st.none() | st.text(max_size=12)),
                max_size=120)


def test_without_a_push_the_batch_is_written_with_marshal() -> None:
    door = Door()
    door.rows.append((1.0, "grant", "pbx", "port", "alice", "7"))
    batch, packed, count = door.take()
    blob, fmt = batch_blob(batch, packed, count)
    assert (fmt, packed, count, door.rows) == (MARSHAL, [], 0, [])
    assert list(_decode(blob, fmt)) == batch


def test_rows_are_packed_once_and_the_journal_writes_the_pushed_bytes() -> None:
    door = Door()
    rows = door.rows  # the list the request path binds once: the same for the door's life
    rows.append((1.0, "grant", "pbx", "port", "alice", "7"))
    first = door.pack(4096)
    assert len(first) == 1 and door.pack(4096) == [] and door.unpacked == 0
    rows.append((2.0, "checkin", "pbx", "port", "alice", "7"))
    assert door.unpacked == 1
    batch, packed, count = door.take()
    assert door.rows is rows and rows == [] and door.packed == [] and door.packed_count == 0
    blob, fmt = batch_blob(batch, packed, count)  # the first row as pushed, the second packed for the write
    assert fmt == MSGPACK and blob.startswith(b"\x92") and first[0][1:] in blob
    assert list(_decode(blob, fmt)) == batch


@given(ROWS, st.lists(st.integers(0, 120), max_size=6), st.integers(200, 5000))
def test_any_pushes_in_any_frame_size_write_the_batch_as_it_was(rows: list[tuple], pushes: list[int], limit: int) -> None:
    door = Door()
    for row_count in sorted(pushes):
        door.rows.extend(rows[len(door.rows):row_count])
        for packed in door.pack(limit):
            assert len(packed) <= limit
    door.rows.extend(rows[len(door.rows):])
    batch, packed, count = door.take()
    if not batch:
        return
    blob, fmt = batch_blob(batch, packed, count)
    assert list(_decode(blob, fmt)) == rows
