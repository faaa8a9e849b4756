"""The master's side of replication: the standby masters following this one, and the rule that
makes every answered grant known to them (synchronous replication, batched per read).

A standby attaches with `replicate` (dispatch.py sends it the snapshot, then `attach`). From then
on every journal row is pushed to it in order, and a reply that follows a state change waits
until every attached standby has acknowledged the rows it follows:

- `hold`: a read that granted anything (a checkout, a re-sync, a takeover, a user license:
  Dispatcher.handle decides) has its replies held, and so has every later read on that
  connection while one is held (replies keep request order). What only frees (a check-in) is
  not held: a standby that missed it counts a lease too many, never one too few;
- `push` (scheduled once per loop turn, so that the reads of one turn share one push, and before
  each journal flush for rows journaled outside a read: the reaper, the console) sends the rows
  not yet sent, as `replica` events whose last frame carries the push's `seq`. The journal's door
  packs them (storage/door.py) and the journal writes the same bytes: a row is packed once;
- `ack`: a standby applied everything up to `seq`; held replies that no standby still owes go out;
- `drop_late`: a standby that has not acknowledged a push within `ack_timeout_s` is dropped (its
  connection closed, `replica_dropped`): the master keeps serving, alone, and says so. Only an
  attached standby counts as in sync, so a reply never goes out before an in-sync standby has
  the rows behind it (docs/operations.md, "Failover keeps the holds").

Without an attached standby nothing is held: `syncing` is False and the request path pays one
attribute read per read. The feed knows its connections only as `Endpoint`s, and the clock is
handed in: no socket, no task here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from licmaster.wire import events
from licmaster.wire.codec import PART_MARGIN

if TYPE_CHECKING:
    from licmaster.daemon.sessions import Endpoint
    from licmaster.daemon.storage.door import Door

Replies = list[Any]


class ReplicaFeed:
    """The standby masters following this one, each with the largest frame it reads and the last
    push it acknowledged; the replies held until they have acknowledged what they follow."""

    def __init__(self, on_change: Callable[[int, str], None] | None = None, *, clock: Callable[[], float] | None = None,
                 ack_timeout_s: float = 0.5, schedule: Callable[[Callable[[], None]], object] | None = None) -> None:
        self._replicas: dict[Endpoint, int] = {}  # connection -> its max_frame
        self.acked: dict[Endpoint, int] = {}  # connection -> the last push it acknowledged
        self.names: dict[Endpoint, str] = {}  # connection -> the standby master's name
        # With leadership in etcd (`recorded`): a standby that left keeps the replies waiting (at
        # the last push it acknowledged) until the in-sync record in etcd no longer names it.
        self.recorded = False
        self.leaving: dict[Endpoint, tuple[str, int]] = {}
        self.had_standby = False  # once a standby followed, its absence is a degraded state
        self.on_change = on_change  # (standbys now, why): the master logs and journals it
        self.clock = clock or (lambda: 0.0)
        self.ack_timeout_s = ack_timeout_s
        self.schedule = schedule  # runs a callable on the loop's next turn (loop.call_soon)
        self.syncing = False  # a standby is attached: replies after a state change wait for it
        self.door: Door | None = None  # the journal's door (Journal.door), bound by the master
        self.seq = 0  # the last push's number
        self._sent: deque[tuple[int, float]] = deque()  # (seq, loop time sent) of pushes some standby still owes
        self.held: dict[Endpoint, deque[tuple[int, Replies]]] = {}  # connection -> (push it waits for, replies)
        self._push_scheduled = False

    def __len__(self) -> int:
        return len(self._replicas)

    def __contains__(self, conn: object) -> bool:
        return conn in self._replicas

    @property
    def degraded(self) -> bool:
        """A standby followed this master and none does now: a failover would find nobody."""
        return self.had_standby and not self._replicas

    @property
    def in_sync(self) -> int:
        """Standbys that have every row behind every reply answered (every attached one: a late one is dropped)."""
        return len(self._replicas)

    def in_sync_names(self) -> list[str]:
        return sorted(set(self.names.values()))

    def attach(self, conn: Endpoint, max_frame: int, name: str = "") -> None:
        """After its snapshot (sent in the same turn): in sync from here on."""
        if self._replicas and self.door is not None and self.door.unpacked:
            # Rows the standbys already attached have not been sent yet: to them first, or the
            # new one's snapshot would mark them sent (found by review: with three masters, a
            # standby acknowledged an empty push, and the reply of a grant it never got went out).
            self.push()
        self._replicas[conn] = max_frame
        self.acked[conn] = self.seq
        self.names[conn] = name
        self.had_standby = True
        self.syncing = True
        if self.door is not None:
            self.door.pack(1 << 62)  # the snapshot has what the door holds now: not pushed, but written as packed
        # The same standby, left on an older connection: its snapshot has what that one owed. Kept
        # waiting for it, every reply held from then on waited for good, as the in-sync record
        # names the standby again (`slave-sim sim --etcd --seed 3 --fault-every 30`, found by a
        # helper: every PBX found the elected master unresponsive).
        if name:
            for old in [old for old, (left, _) in self.leaving.items() if left == name]:
                del self.leaving[old]
            self._release()
        if self.on_change is not None:
            self.on_change(len(self._replicas), "a standby master attached")

    def detach(self, conn: Endpoint, why: str = "a standby master's connection was lost") -> None:
        if self._replicas.pop(conn, None) is None:
            self.held.pop(conn, None)  # a PBX's connection: what it waited for can reach nobody now
            return
        acked = self.acked.pop(conn, 0)
        name = self.names.pop(conn, "")
        # The same standby attached again on another connection (its snapshot has what this one
        # owed): nothing to wait for. Else, named in the in-sync record, it keeps replies waiting.
        if self.recorded and not (name and name in self.names.values()):
            self.leaving[conn] = (name, acked)
        self.syncing = bool(self._replicas) or bool(self.leaving)
        self._release()
        if self.on_change is not None:
            self.on_change(len(self._replicas), why)

    # ---------------------------------------------------------------- the request path

    def hold(self, conn: Endpoint, replies: Replies) -> Replies:
        """Keep a read's replies until the push that carries its rows is acknowledged; returns
        what to write now (nothing; or everything, for a connection closing after its reply)."""
        if conn.closing:  # its bye: the connection closes after this reply, which frees, never grants
            return replies
        queue = self.held.get(conn)
        if queue is None:
            queue = self.held[conn] = deque()
        queue.append((self.seq + 1, replies))
        if not self._push_scheduled:
            self._push_scheduled = True
            if self.schedule is not None:
                self.schedule(self.push)
        return []

    def push(self) -> None:
        """Send the rows not yet sent, as one push (the reads of a loop turn share it)."""
        self._push_scheduled = False
        door = self.door
        if door is None:
            return
        if not self._replicas:
            self.seq += 1  # what was held for this push now waits only on standbys that left, if any
            self._release()
            return
        # Packed once, for the standby with the smallest frames: every standby gets the same bytes,
        # and the journal writes them too.
        runs = door.pack(min(self._replicas.values()) - PART_MARGIN)
        self.seq += 1
        self._sent.append((self.seq, self.clock()))
        frames = b"".join(events.replica_push(runs, self.seq))
        for conn in list(self._replicas):
            if conn.open:
                conn.send_frames(frames)
            else:
                self.detach(conn)

    def before_flush(self) -> None:
        """A journal flush is about to take the door's rows: those not pushed yet go now
        (journaled outside a read: the reaper's expiries, the console's releases, adoption at a
        takeover), packed, so that the journal writes what the standbys have."""
        if self._replicas and self.door is not None and (self.door.unpacked or self._push_scheduled):
            self.push()

    # ---------------------------------------------------------------- acknowledgements

    def ack(self, conn: Endpoint, seq: int) -> None:
        """A standby applied every push up to `seq`."""
        if conn in self._replicas and seq > self.acked[conn]:
            self.acked[conn] = min(seq, self.seq)
            self._release()

    def left(self, recorded: list[str]) -> None:
        """The in-sync record in etcd now names only `recorded`: standbys that left and are not
        named hold nothing back any more."""
        for conn, (name, _) in list(self.leaving.items()):
            if name not in recorded:
                del self.leaving[conn]
        self.syncing = bool(self._replicas) or bool(self.leaving)
        self._release()

    def _release(self) -> None:
        """Write the held replies that no standby still owes an acknowledgement for (attached,
        or left but still named in the in-sync record)."""
        owed = [*self.acked.values(), *(acked for _, acked in self.leaving.values())]
        floor = min(owed) if owed else self.seq + 1
        while self._sent and self._sent[0][0] <= floor:
            self._sent.popleft()
        for conn, queue in list(self.held.items()):
            while queue and queue[0][0] <= floor:
                conn.send_replies(queue.popleft()[1])
            if not queue:
                del self.held[conn]

    def drop_late(self, now: float) -> list[Endpoint]:
        """Standbys that have not acknowledged a push sent `ack_timeout_s` ago or more: detached and
        their connections closed, so that no reply waits on them any longer. Returns them."""
        late = []
        for conn, acked in list(self.acked.items()):
            owed = next((sent for seq, sent in self._sent if seq > acked), None)
            if owed is not None and now - owed >= self.ack_timeout_s:
                late.append(conn)
        for conn in late:
            self.detach(conn, f"a standby master did not acknowledge within {int(self.ack_timeout_s * 1000)} ms: dropped")
            conn.close({"event": "replica_dropped", "reason": "no acknowledgement in time: attach again with a new snapshot"})
        return late
