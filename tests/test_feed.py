"""Synchronous replication, the master's side (licmaster/daemon/ha/feed.py): replies that follow a
state change wait for every attached standby master; nothing else does."""

from __future__ import annotations

from typing import Any

from licmaster.daemon.ha.feed import ReplicaFeed
from licmaster.daemon.storage.door import Door
from licmaster.wire.codec import FrameDecoder
from licmaster.wire.events import GRANT

from .stream import read_replica


class Peer:
    """A connection as the feed sees it: what was written to it, and whether it is closed."""

    def __init__(self) -> None:
        self.closing = False
        self.replies: list[Any] = []
        self.frames = b""
        self.closed_with: dict[str, Any] | None = None

    @property
    def open(self) -> bool:
        return not self.closing

    def send_replies(self, replies: list[Any]) -> None:
        self.replies += replies

    def send_frames(self, frames: bytes) -> None:
        self.frames += frames

    def close(self, event: dict[str, Any] | None = None) -> None:
        self.closing, self.closed_with = True, event

    def events(self) -> list[dict[str, Any]]:
        return FrameDecoder(1 << 20).feed(self.frames)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def feed_with_standby() -> tuple[ReplicaFeed, list[Any], Peer, Clock]:
    scheduled: list[Any] = []
    clock = Clock()
    feed = ReplicaFeed(clock=clock, ack_timeout_s=0.5, schedule=scheduled.append)
    feed.door = Door()
    rows = feed.door.rows
    standby = Peer()
    feed.attach(standby, 65536)  # type: ignore[arg-type]
    return feed, rows, standby, clock



def recorded_feed_with_a_reply_held() -> tuple[ReplicaFeed, list[Any], Peer, Peer]:
    """With etcd (the in-sync record): standby 10.1.0.2 attached, a grant pushed to it, and the
    PBX's reply held for its ack."""
    feed = ReplicaFeed(clock=Clock(), schedule=lambda _: None)
    feed.door = Door()
    feed.recorded = True
    rows = feed.door.rows
    standby, pbx = Peer(), Peer()
    feed.attach(standby, 65536, "10.1.0.2:4460")  # type: ignore[arg-type]
    grant(rows, "7001")
    feed.hold(pbx, [{"id": 1}])  # type: ignore[arg-type]
    feed.push()
    return feed, rows, standby, pbx


def grant(rows: list[Any], lease: str) -> None:
    rows.append((1.0, GRANT, "pbx1", "port", f"holder{lease}", lease, "PBX-Port:1"))


def test_a_reply_after_a_grant_waits_for_the_standbys_acknowledgement_and_no_longer() -> None:
    feed, rows, standby, _ = feed_with_standby()
    pbx = Peer()
    grant(rows, "7001")
    assert feed.hold(pbx, [{"id": 1, "ok": True}]) == []  # type: ignore[arg-type]
    feed.push()  # the loop's next turn
    (event,) = standby.events()
    assert event["event"] == "replica" and event["seq"] == 1 and read_replica(event)[0].lease == "7001"
    assert pbx.replies == []  # not before the standby has it
    feed.ack(standby, 1)  # type: ignore[arg-type]
    assert pbx.replies == [{"id": 1, "ok": True}] and feed.held == {}


def test_replies_keep_request_order_behind_a_held_one_and_the_reads_of_a_turn_share_one_push() -> None:
    feed, rows, standby, _ = feed_with_standby()
    pbx, other = Peer(), Peer()
    grant(rows, "7001")
    feed.hold(pbx, [{"id": 1}])  # type: ignore[arg-type]
    grant(rows, "7002")
    feed.hold(other, [{"id": 9}])  # type: ignore[arg-type]
    feed.hold(pbx, [{"id": 2}])  # type: ignore[arg-type]  # a heartbeat behind the held grant
    feed.push()
    assert [e["seq"] for e in standby.events()] == [1]  # one push for the turn
    assert [c.lease for c in read_replica(standby.events()[0])] == ["7001", "7002"]
    feed.ack(standby, 1)  # type: ignore[arg-type]
    assert pbx.replies == [{"id": 1}, {"id": 2}] and other.replies == [{"id": 9}]


def test_rows_journaled_outside_a_read_go_with_the_flush_and_nothing_is_sent_twice() -> None:
    feed, rows, standby, _ = feed_with_standby()
    grant(rows, "7001")
    feed.hold(Peer(), [{"id": 1}])  # type: ignore[arg-type]
    feed.push()
    grant(rows, "7002")  # e.g. a lease adopted at a takeover, or an expiry by the reaper
    feed.before_flush()  # the journal's flush is about to take the door's rows
    assert [[c.lease for c in read_replica(e)] for e in standby.events()] == [["7001"], ["7002"]]
    assert feed.door is not None
    batch, packed, packed_count = feed.door.take()
    assert packed_count == len(batch) == 2 and len(packed) == 2  # the journal writes what was pushed
    feed.before_flush()  # nothing new: nothing sent
    assert len(standby.events()) == 2


def test_a_standby_that_does_not_acknowledge_in_time_is_dropped_and_the_replies_go_out() -> None:
    feed, rows, standby, clock = feed_with_standby()
    pbx = Peer()
    grant(rows, "7001")
    feed.hold(pbx, [{"id": 1}])  # type: ignore[arg-type]
    feed.push()
    clock.now += 0.4
    assert feed.drop_late(clock.now) == [] and pbx.replies == []
    clock.now += 0.1
    assert feed.drop_late(clock.now) == [standby]
    assert pbx.replies == [{"id": 1}] and feed.in_sync == 0 and not feed.syncing and feed.degraded
    assert standby.closed_with is not None and standby.closed_with["event"] == "replica_dropped"


def test_without_a_standby_nothing_is_held_and_a_lost_standby_releases_what_waited_for_it() -> None:
    feed = ReplicaFeed()
    assert not feed.syncing
    feed, rows, standby, _ = feed_with_standby()
    pbx = Peer()
    grant(rows, "7001")
    feed.hold(pbx, [{"id": 1}])  # type: ignore[arg-type]
    feed.push()
    feed.detach(standby)  # type: ignore[arg-type]
    assert pbx.replies == [{"id": 1}]


def test_a_connection_closing_after_its_reply_is_answered_at_once() -> None:
    feed, rows, _, _ = feed_with_standby()
    bye = Peer()
    bye.closing = True
    assert feed.hold(bye, [{"id": 1}]) == [{"id": 1}]  # type: ignore[arg-type]


def test_a_standby_back_on_a_new_connection_pays_what_its_old_one_owed() -> None:
    # etcd: a standby that left keeps replies waiting until the in-sync record drops its name. The
    # same standby attached again (a new snapshot: everything up to now) is named by the record
    # again, so the old connection's debt must go with the new attach, or every reply waits for good.
    feed, rows, first, pbx = recorded_feed_with_a_reply_held()
    feed.detach(first)  # type: ignore[arg-type]  # gone before its ack: the record still names it
    assert pbx.replies == [] and feed.leaving
    again = Peer()
    feed.attach(again, 65536, "10.1.0.2:4460")  # type: ignore[arg-type]  # its snapshot has 7001
    assert pbx.replies == [{"id": 1}] and not feed.leaving
    grant(rows, "7002")
    feed.hold(pbx, [{"id": 2}])  # type: ignore[arg-type]
    feed.push()
    feed.ack(again, feed.seq)  # type: ignore[arg-type]
    assert pbx.replies == [{"id": 1}, {"id": 2}]  # and the next ones go out as the new connection acks


def test_the_old_connection_of_a_standby_attached_again_leaves_no_debt_whichever_goes_first() -> None:
    # The other order than above: the new connection attaches before the old one is found lost
    # (dropped late, or closing while it flushed): the old one must not keep replies waiting.
    feed, rows, old, pbx = recorded_feed_with_a_reply_held()
    again = Peer()
    feed.attach(again, 65536, "10.1.0.2:4460")  # type: ignore[arg-type]  # its snapshot has 7001
    feed.detach(old)  # type: ignore[arg-type]
    assert pbx.replies == [{"id": 1}] and not feed.leaving


def test_a_second_standby_attaching_in_the_turn_of_a_grant_does_not_take_its_rows_from_the_first() -> None:
    # Three masters: the new standby's snapshot has the grant; the standby already attached must
    # still be sent it before the reply goes out.
    feed, rows, first, _ = feed_with_standby()
    pbx = Peer()
    grant(rows, "7001")
    feed.hold(pbx, [{"id": 1}])  # type: ignore[arg-type]
    second = Peer()
    feed.attach(second, 65536, "10.1.0.3:4460")  # type: ignore[arg-type]  # in the same turn, before the push
    assert [c.lease for e in first.events() for c in read_replica(e)] == ["7001"]
    feed.push()  # the turn's own push
    feed.ack(first, feed.seq)  # type: ignore[arg-type]
    feed.ack(second, feed.seq)  # type: ignore[arg-type]
    assert pbx.replies == [{"id": 1}]
