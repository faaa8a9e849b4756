"""licmaster.client against the real daemon: what a PBX integration relies on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from licmaster.client import HeldLease, LicenseError, MasterClient, NotConnected
from licmaster.client.connection import OUTAGE_AFTER_S, RETRY_OUTAGE_CAP_S
from licmaster.daemon.config import Config
from licmaster.daemon.master import Master
from licmaster.testing import free_port
from licmaster.testing.simloop import HOST, Inline, VirtualLoop

from .daemon import Daemon, in_virtual_time, next_event, self_signed_cert

LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "PBX-Standby13"\ncount = 3\n' \
           '[[license]]\ntype = "PBX-Channels13"\ncount = 8\n'


async def virtual_master(tmp_path: Path, **config: Any) -> Master:
    """A real master on the virtual clock's in-memory network (licmaster/testing/simloop.py), at 127.0.0.1:4460."""
    (tmp_path / "licenses.toml").write_text(LICENSES)
    master = Master(Config(listen="127.0.0.1:4460", http="", data_dir=tmp_path / "data", licenses=(tmp_path / "licenses.toml",),
                           **config), io_executor=Inline())
    await master.start()
    return master



@pytest.fixture
def daemon(tmp_path: Path):
    d = Daemon(tmp_path / "master", LICENSES, grace_ms=1500).start()
    yield d
    d.stop()


async def test_checkout_checkin_and_typed_errors(daemon: Daemon) -> None:
    client = MasterClient([daemon.master], "pbx1", mac="00:90:33:00:00:01")
    hello = await client.connect()
    assert hello["master"] == "test-master"
    held = await client.checkout("conference", "room1", count=5)
    assert held.took == [{"family": "PBX-Channels", "version": 13, "count": 5}]
    with pytest.raises(LicenseError) as refused:
        await client.checkout("conference", "room2", count=4)
    assert refused.value.code == "exhausted" and refused.value.rule == "R-CHAN-1"
    await client.checkin("conference", "room1")
    assert client.leases == {}
    await client.checkout("conference", "room2", count=4)
    with pytest.raises(LicenseError) as no_recorder:
        await client.may_record()  # nobody has the recorder license here
    assert (no_recorder.value.code, no_recorder.value.rule) == ("prerequisite", "R-REC-1")
    await client.close()


async def test_pipelined_sends_resolve_in_order(daemon: Daemon) -> None:
    client = MasterClient([daemon.master], "pbx1")
    await client.connect()
    futures = [client.send("checkout", resource="port", holder=f"u{i}") for i in range(4)]
    replies = await asyncio.gather(*futures)
    assert [r["ok"] for r in replies] == [True, True, True, False]
    await client.close()


async def test_heartbeats_keep_a_quiet_client_alive(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "m", LICENSES, heartbeat_ms=100, lease_ttl_ms=600).start()
    try:
        client = MasterClient([daemon.master], "quiet")
        await client.connect()
        await client.checkout("port", "alice")
        await asyncio.sleep(1.5)  # well past lease_ttl_ms = 600
        usage = await client.usage()
        assert [n["node"] for n in await client.all_nodes()] == ["quiet"]
        assert next(p for p in usage["pools"] if p["family"] == "PBX-Port")["in_use"] == 1
        await client.close()
    finally:
        daemon.stop()


def test_a_quiet_client_says_a_word_once_an_interval_never_twice_nor_later(tmp_path: Path) -> None:
    # On a virtual clock. It sent on every half-interval wake (twice the load quiet PBXs put on
    # a master), then once an interval but up to 1.25 intervals apart (what protocol.md promises
    # is at least once every heartbeat_ms). A request of its own counts as its word.
    async def main(loop: VirtualLoop) -> list[tuple[float, str]]:
        master = await virtual_master(tmp_path, heartbeat_ms=1000)
        client = MasterClient(["127.0.0.1:4460"], "quiet", connect_timeout=2.0)
        await client.connect()
        sent: list[tuple[float, str]] = []
        request = client._request

        def seen(op: str, fields: dict[str, Any]) -> Any:
            sent.append((loop.time(), op))
            return request(op, fields)

        client._request = seen  # type: ignore[method-assign]
        await asyncio.sleep(10.3)
        await client.checkout("port", "desk")  # between two heartbeats
        await asyncio.sleep(20)
        await client.close()
        await master.stop()
        return sent

    sent = in_virtual_time(main)
    times = [at for at, _ in sent]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert 28 <= sum(op == "heartbeat" for _, op in sent) <= 31  # one an interval, over 30 s
    assert max(gaps) <= 1.0 + 1e-6, max(gaps)


async def test_first_master_down_the_second_serves(daemon: Daemon) -> None:
    client = MasterClient([f"127.0.0.1:{free_port()}", daemon.master], "pbx1", connect_timeout=1)
    await client.connect()
    assert client.address == daemon.address
    await client.close()


async def test_no_master_at_all_says_so() -> None:
    client = MasterClient([f"127.0.0.1:{free_port()}"], "pbx1", connect_timeout=1)
    with pytest.raises(NotConnected, match="no master answered"):
        await client.connect()


async def test_reconnects_after_a_master_restart_and_resyncs(daemon: Daemon) -> None:
    client = MasterClient([daemon.master], "pbx1")
    await client.connect()
    await client.checkout("port", "alice")
    await client.checkout("port", "bob")
    await asyncio.sleep(0.1)  # the journal reaches the disk
    daemon.kill9()
    daemon.restart_same_port()
    event = await next_event(client, "reconnected")
    assert event["epoch"] == 2
    usage = await client.usage()
    assert next(p for p in usage["pools"] if p["family"] == "PBX-Port")["in_use"] == 2
    assert set(client.leases) == {("port", "alice"), ("port", "bob")}
    # during grace a new holder waits, and is served when grace ends (the client retries `grace`)
    held = await client.checkout("port", "carol")
    assert held.lease
    await client.close()


async def test_a_standby_takes_over_and_the_failed_node_is_fenced(daemon: Daemon) -> None:
    slave = MasterClient([daemon.master], "slave")
    await slave.connect()
    await slave.checkout("port", "alice")
    standby = MasterClient([daemon.master], "slave-stby", role="standby", standby_for="slave")
    await standby.connect()
    reply = await standby.takeover("slave")
    assert reply["moved"] == 1 and ("port", "alice") in standby.leases
    fenced = await next_event(slave, "fenced")
    assert "slave-stby" in fenced["reason"]
    await standby.close()
    await slave.close(bye=False)


async def test_bye_on_close_gives_everything_back(daemon: Daemon) -> None:
    client = MasterClient([daemon.master], "pbx1")
    await client.connect()
    for holder in ("a", "b", "c"):
        await client.checkout("port", holder)
    await client.close()
    other = MasterClient([daemon.master], "pbx2")
    await other.connect()
    for holder in ("a", "b", "c"):
        await other.checkout("port", holder)
    await other.close()


async def test_tls_listener_and_client(tmp_path: Path) -> None:
    import ssl

    cert, key = self_signed_cert(tmp_path)
    d = Daemon(tmp_path / "m", LICENSES, tls_cert=str(cert), tls_key=str(key)).start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        client = MasterClient([d.master], "pbx1", ssl=context)
        await client.connect()
        assert (await client.checkout("port", "alice")).lease
        await client.close()
        plain = MasterClient([d.master], "pbx2", connect_timeout=1)
        with pytest.raises((NotConnected, ConnectionError, OSError)):
            await plain.connect()  # a client speaking plain TCP to a TLS listener gets nowhere
    finally:
        d.stop()


async def test_a_hung_master_is_left_and_the_client_comes_back_when_it_answers(daemon: Daemon) -> None:
    import signal

    client = MasterClient([daemon.master], "pbx1", connect_timeout=0.5)
    await client.connect()
    await client.checkout("port", "alice")
    daemon.signal(signal.SIGSTOP)  # the master hangs: the socket stays open, nothing is answered
    try:
        event = await next_event(client, "unresponsive", timeout=10)
        assert event["master"] == daemon.master
    finally:
        daemon.signal(signal.SIGCONT)
    await next_event(client, "reconnected", timeout=15)
    usage = await client.usage()
    assert next(p for p in usage["pools"] if p["family"] == "PBX-Port")["in_use"] == 1  # not twice
    await client.checkin("port", "alice")
    usage = await client.usage()
    assert next(p for p in usage["pools"] if p["family"] == "PBX-Port")["in_use"] == 0
    await client.close()


async def test_leases_brought_to_a_master_are_confirmed_by_their_sync_not_by_a_heartbeat_before_it(tmp_path: Path) -> None:
    """With a resumed leader's grace (the chaos drill's seed 2), a PBX sent away and back must not
    stretch its belief with ok heartbeats while the master does not hold its leases yet: only
    the sync that gives them back confirms them."""
    daemon = Daemon(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 1\n').start()
    try:
        back = MasterClient([daemon.master], "pbx1", reconnect=False)
        back.adopt([HeldLease("port", "alice", "41")])  # held on another master, say
        await back.connect()
        await back.call("heartbeat")  # ok: a live session, not these leases
        assert not back.confirmed() and back.believed() == {}
        await back.sync()
        assert back.confirmed() and set(back.believed()) == {("port", "alice")}
        await back.close()
    finally:
        daemon.stop()


async def test_a_request_on_a_connection_dropped_during_its_hello_fails_instead_of_waiting_forever() -> None:
    # A standby master answers hello `not_master`: the client drops that connection. A request
    # sent on it meanwhile (send() does not wait for the session) used to wait for ever.
    async def standby(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from licmaster.wire.codec import FrameDecoder, encode
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for message in decoder.feed(data):
                if message.get("op") == "hello":
                    await asyncio.sleep(0.1)  # the caller's request goes out while hello waits
                    writer.write(encode({"id": message["id"], "ok": False, "error": "not_master", "message": "standby"}))
        writer.close()

    server = await asyncio.start_server(standby, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = MasterClient([f"127.0.0.1:{port}"], "pbx1", reconnect=False)
    try:
        connecting = asyncio.create_task(client.connect())
        await asyncio.sleep(0.03)
        pending = client.send("checkout", resource="port", holder="alice")
        with pytest.raises(NotConnected):
            await connecting
        with pytest.raises(NotConnected, match="hello refused"):
            await asyncio.wait_for(pending, 5)  # before the fix: TimeoutError here
    finally:
        server.close()
        await server.wait_closed()


def test_a_pbx_refused_by_every_master_for_long_slows_its_rounds_and_finds_a_master_back_within_the_outage_cap(tmp_path: Path) -> None:
    # On a virtual clock (licmaster/testing/simloop.py): the PBX is cut from its master for two
    # minutes. For the first OUTAGE_AFTER_S it tries again every RETRY_CAP_S at most (a failover
    # would be found at once); then every RETRY_OUTAGE_CAP_S at most (it tried 4 times a second
    # for ever, which a returning master got from every PBX at once); healed, it is back within that.

    async def main(loop: VirtualLoop) -> tuple[list[float], float, float]:
        master = await virtual_master(tmp_path)
        HOST.set("10.0.0.5")
        client = MasterClient(["127.0.0.1:4460"], "branch", connect_timeout=2.0)
        await client.connect()
        await client.checkout("port", "desk")
        attempts: list[float] = []
        connect = loop.network.connect

        async def counted(host: str, port: int, factory: Any, **kw: Any) -> Any:
            attempts.append(loop.time())
            return await connect(host, port, factory, **kw)

        loop.network.connect = counted  # type: ignore[method-assign]
        loop.network.set_cut("10.0.0.5", "127.0.0.1")
        cut_at = loop.time()
        await asyncio.sleep(120)
        loop.network.heal("10.0.0.5", "127.0.0.1")
        healed_at = loop.time()
        await asyncio.wait_for(client.ready.wait(), 30)
        while not client.connected.is_set():
            await asyncio.sleep(0.01)
        back_at = loop.time()
        assert client.believed()  # its Port kept all along (its hold), and re-synced
        await client.close()
        await master.stop()
        return [at - cut_at for at in attempts], healed_at - cut_at, back_at - healed_at

    attempts, healed, back = in_virtual_time(main)
    early = [at for at in attempts if at < OUTAGE_AFTER_S]
    late = [at for at in attempts if OUTAGE_AFTER_S + 5 <= at < healed]
    assert len(early) >= 10  # fast while a failover may be under way
    assert len(late) <= (healed - OUTAGE_AFTER_S - 5) / (RETRY_OUTAGE_CAP_S / 2) + 1, len(late)  # then at most one round per cap/2
    assert back <= RETRY_OUTAGE_CAP_S + 1.0, back


def test_a_client_leaves_a_silent_master_and_stops_using_its_leases_when_each_falls_due(tmp_path: Path) -> None:
    # On a virtual clock, the branch cut off from its master: `unresponsive` one lease TTL after
    # the master's last word, and `lapsed` once the hold has run from the last confirmation,
    # each on time (within 10 ms). The client looked twice an interval: up to half a
    # heartbeat interval late on each (and twice the wake-ups of a quiet client).
    async def main(loop: VirtualLoop) -> tuple[float, float]:
        master = await virtual_master(tmp_path, heartbeat_ms=1000, lease_ttl_ms=3000, hold_s=10)
        HOST.set("10.0.0.5")
        said: dict[str, float] = {}
        client = MasterClient(["127.0.0.1:4460"], "branch", connect_timeout=2.0,
                              on_event=lambda event: said.setdefault(str(event.get("event")), loop.time()))
        await client.connect()
        await client.checkout("port", "desk")
        await asyncio.sleep(5.3)
        loop.network.set_cut("10.0.0.5", "127.0.0.1")
        heard, confirmed = client._last_heard, client.holdings.confirmed_at
        await asyncio.sleep(15)
        await client.close()
        await master.stop()
        return said["unresponsive"] - heard, said["lapsed"] - confirmed

    silent_for, unconfirmed_for = in_virtual_time(main)
    assert 3.0 <= silent_for <= 3.01, silent_for
    assert 10.0 <= unconfirmed_for <= 10.01, unconfirmed_for


def test_a_connection_lost_in_the_turn_its_re_sync_is_answered_is_made_again(tmp_path: Path) -> None:
    # On a virtual clock: the master answers the re-sync and closes the connection in the same
    # instant, so the close reaches the client before its reconnect task resumes. The task must
    # notice and go on; it ended, having said `reconnected` on a dead connection (a helper's
    # simulation found it: the PBX was never served again).

    async def main(loop: VirtualLoop) -> tuple[bool, bool, list[str]]:
        master = await virtual_master(tmp_path)
        HOST.set("10.0.0.5")
        events: list[str] = []
        client = MasterClient(["127.0.0.1:4460"], "branch", connect_timeout=2.0,
                              on_event=lambda event: events.append(str(event.get("event"))))
        await client.connect()
        await client.checkout("port", "desk")
        ops = master.dispatch._ops
        sync = ops["sync"]

        def sync_then_close(session: Any, rid: int, msg: dict[str, Any]) -> Any:
            ops["sync"] = sync  # once
            conn = session.conn
            loop.call_soon(conn.close)  # after the reply is written, in the same instant
            return sync(session, rid, msg)

        ops["sync"] = sync_then_close
        loop.network.reset("10.0.0.5")  # a reset: the client reconnects and re-syncs
        await asyncio.sleep(30)
        settled, believed = client.settled, bool(client.believed())
        await client.close()
        await master.stop()
        return settled, believed, events

    settled, believed, events = in_virtual_time(main)
    assert settled and believed, events  # connected again, its Port re-synced


def test_events_nobody_reads_are_not_kept_for_ever() -> None:
    # A queue nobody read kept every event: a standby master's client, every replica push it got.
    kept = MasterClient(["127.0.0.1:1"], "pbx1", events_kept=3)
    for n in range(5):
        kept._emit({"event": "epoch", "epoch": n})
    assert [kept.events.get_nowait()["epoch"] for _ in range(kept.events.qsize())] == [2, 3, 4]  # the newest
    told: list[dict[str, Any]] = []
    callback_only = MasterClient(["127.0.0.1:1"], "standby-replica", on_event=told.append, events_kept=0)
    callback_only._emit({"event": "replica", "seq": 1})
    assert callback_only.events.empty() and told == [{"event": "replica", "seq": 1}]


def test_a_connection_lost_in_the_turn_its_hello_is_answered_is_not_taken_for_connected(tmp_path: Path) -> None:
    # As with the re-sync above, at the hello: the close reaches the client before connect()
    # resumes. It said `connected` with no connection; a client that does not reconnect by
    # itself (a master's watch on its peer) then failed every request, for good (seed 901).
    async def main(loop: VirtualLoop) -> tuple[str, bool]:
        master = await virtual_master(tmp_path)
        op_hello = master.dispatch.op_hello

        def hello_then_close(conn: Any, rid: int, msg: dict[str, Any], now: float) -> Any:
            loop.call_soon(conn.close)  # after the reply is written, in the same instant
            return op_hello(conn, rid, msg, now)

        master.dispatch.op_hello = hello_then_close  # type: ignore[method-assign]
        watcher = MasterClient(["127.0.0.1:4460"], "peer-watch", role="observer", reconnect=False, connect_timeout=2.0)
        try:
            await watcher.connect()
            outcome = "connected"
        except NotConnected:
            outcome = "not connected"
        await asyncio.sleep(1)
        said = watcher.connected.is_set()
        await master.stop()
        return outcome, said

    assert in_virtual_time(main) == ("not connected", False)
