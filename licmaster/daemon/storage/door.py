"""The journal's door: the rows recorded and not yet taken by a flush, and the MessagePack of
those a push to the standby masters has packed already. Pure: no file, no thread.

With a standby attached, every row is packed once, on the request path, for the push that must
reach the standby before the grant is answered (daemon/ha/feed.py). The journal writes those
very bytes (`batch_blob`): packing the batch again for the disk cost ~1,260 CPU instructions a
row, a twentieth of a request. Without a standby nothing is packed here, and the writer thread
packs the batch with marshal, as it always did: it is the cheaper encoding to read back.
"""

from __future__ import annotations

import marshal

from licmaster.wire.codec import join_arrays, packed_runs
from licmaster.wire.events import Row

# Batches are written with marshal (version 4: tuples of str, float and None), three times
# cheaper than MessagePack to read back; a batch a push packed is written as MessagePack. The
# format is stored with each batch so that a reader can tell.
MARSHAL_VERSION = 4
MARSHAL = f"marshal-{MARSHAL_VERSION}"
MSGPACK = "msgpack"


class Door:
    __slots__ = ("packed", "packed_count", "rows")

    def __init__(self) -> None:
        # One list for the journal's life (`take` copies and clears it), so the request path binds
        # it once and appends to it directly: CPython's list.append is specialised, a bound method
        # or a call through Journal.record costs ~230 instructions more per request (measured).
        self.rows: list[Row] = []
        self.packed: list[bytes] = []  # MessagePack arrays of rows[:packed_count], in order
        self.packed_count = 0

    @property
    def unpacked(self) -> int:
        """Rows recorded since the last `pack`."""
        return len(self.rows) - self.packed_count

    def pack(self, limit: int) -> list[bytes]:
        """The rows recorded since the last call, as MessagePack arrays of at most `limit` bytes
        each (codec.packed_runs), kept for the journal's write; none if there are none."""
        rows = self.rows
        if self.packed_count == len(rows):
            return []
        runs = [packed for _, packed in packed_runs(rows[self.packed_count:], limit)]
        self.packed += runs
        self.packed_count = len(rows)
        return runs

    def take(self) -> tuple[list[Row], list[bytes], int]:
        """(the rows, the arrays packed of them, how many rows those hold), the door then empty."""
        taken = (self.rows.copy(), self.packed, self.packed_count)
        self.rows.clear()
        self.packed = []
        self.packed_count = 0
        return taken


def batch_blob(batch: list[Row], packed: list[bytes], packed_count: int) -> tuple[bytes, str]:
    """A batch as one blob and its format: the arrays a push packed, joined into one MessagePack
    array with the rows after them; marshal when none was packed."""
    if not packed:
        return marshal.dumps(batch, MARSHAL_VERSION), MARSHAL
    if packed_count < len(batch):
        packed = [*packed, *(run for _, run in packed_runs(batch[packed_count:], 1 << 62))]
    return join_arrays(packed, len(batch)), MSGPACK
