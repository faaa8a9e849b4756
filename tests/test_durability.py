"""`kill -9` and restart: nothing durable lost, and no window with more in use than installed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from licmaster.daemon.storage.journal import read_journal
from licmaster.wire.events import read_demand, read_hello

from .daemon import Daemon, Raw

LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 2\n[[license]]\ntype = "App(phone)13"\ncount = 2\n' \
           '[[license]]\ntype = "Relay-Channels"\ncount = 4\nbind = "00:90:33:00:00:01"\n'


async def keep_alive(seconds: float, *conns: Raw) -> None:
    """Wait while heart-beating, as live PBXs do."""
    for _ in range(int(seconds / 0.1)):
        await asyncio.sleep(0.1)
        for conn in conns:
            assert (await conn.request("heartbeat"))["ok"]


def port_in_use(usage: dict) -> int:
    return next(p for p in usage["pools"] if p["family"] == "PBX-Port")["in_use"]


async def test_kill9_restart_keeps_assignments_and_never_over_allocates(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "m", LICENSES, grace_ms=1500).start()
    try:
        a = await Raw.open(d.address)
        await a.hello("pbx-a")
        assert (await a.request("assign", user="ann", families=["App(phone)"]))["ok"]
        assert (await a.request("checkout", resource="port", holder="alice"))["ok"]
        assert (await a.request("checkout", resource="port", holder="bob"))["ok"]
        await asyncio.sleep(0.1)  # let the journal batch reach the disk (journal_flush_ms = 20)
        d.kill9()
        d.restart_same_port()

        # A newcomer right after the restart must wait: pbx-a still believes it holds both Ports.
        newcomer = await Raw.open(d.address)
        hello = await newcomer.hello("pbx-new")
        assert hello["epoch"] == 2 and hello["grace_ms"] > 0
        early = await newcomer.request("checkout", resource="port", holder="carol")
        assert early["error"] == "grace" and early["retry_ms"] > 0

        # pbx-a comes back and re-syncs what it held: granted during grace.
        a2 = await Raw.open(d.address)
        await a2.hello("pbx-a")
        synced = await a2.request("sync", leases=[{"resource": "port", "holder": "alice"}, {"resource": "port", "holder": "bob"}])
        assert synced["ok"] and synced["denied"] == [] and len(synced["leases"]) == 2
        usage = await a2.request("usage")
        assert port_in_use(usage) == 2

        # The user assignment survived the kill: ann still holds App(phone), and only one is left.
        phone = next(p for p in usage["pools"] if p["family"] == "App(phone)")
        assert phone["in_use"] == 1
        assert (await a2.request("assign", user="ann", families=["App(phone)"]))["took"] == []
        assert (await a2.request("assign", user="bea", families=["App(phone)"]))["ok"]
        assert (await a2.request("assign", user="cid", families=["App(phone)"]))["error"] == "exhausted"

        # After grace the newcomer is served normally, and is refused because both Ports are in use.
        await keep_alive(1.6, newcomer, a2)
        late = await newcomer.request("checkout", resource="port", holder="carol")
        assert late["error"] == "exhausted"
    finally:
        d.stop()


async def test_what_a_pbx_does_not_resync_after_a_kill_9_stays_its_own_for_its_hold_then_is_free(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "m", LICENSES, grace_ms=800, hold_s=3.5).start()
    try:
        a = await Raw.open(d.address)
        await a.hello("pbx-a")
        lease = (await a.request("checkout", resource="port", holder="alice"))["lease"]
        await asyncio.sleep(0.1)
        d.kill9()
        d.restart_same_port()
        b = await Raw.open(d.address)
        await b.hello("pbx-b")
        await keep_alive(0.9, b)  # pbx-a never came back: its lease is adopted, absent, within its hold
        assert (await b.request("checkout", resource="port", holder="x"))["ok"]
        refused = await b.request("checkout", resource="port", holder="y")
        assert refused["error"] == "exhausted"  # 2 installed: x, and alice's (pbx-a may still use it)
        usage = await b.request("usage")
        assert [(s["node"], s["held"]) for s in usage["absent"]["shown"]] == [("pbx-a", {"port": 1})]
        assert next(lease for lease in (await b.request("nodes", held=True))["nodes"] if lease["node"] == "pbx-a")["held"] == \
            [["port", "alice", lease]]  # adopted with its id: a check-in of it frees exactly it
        await keep_alive(3.0, b)  # its hold (3.5 s after the restart) runs out
        assert (await b.request("checkout", resource="port", holder="y"))["ok"]
    finally:
        d.stop()


async def test_hardware_licenses_survive_a_license_file_that_forgot_them(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "m", LICENSES).start()
    d.stop()
    d.license_file.write_text('[[license]]\ntype = "PBX-Port13"\ncount = 2\n')
    d.start()
    try:
        obs = await Raw.open(d.address)
        await obs.hello("obs", role="observer")
        usage = await obs.request("usage")
        relay = [p for p in usage["pools"] if p["family"] == "Relay-Channels"]
        assert relay == [{"family": "Relay-Channels", "version": None, "bound": "00:90:33:00:00:01", "installed": 4, "in_use": 0}]
        assert "R-HW-1" in d.log
    finally:
        d.stop()


async def test_the_journal_records_grants_checkins_and_denials_with_rules(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "m", LICENSES).start()
    try:
        a = await Raw.open(d.address)
        await a.hello("pbx-a")
        lease = (await a.request("checkout", resource="port", holder="alice"))["lease"]
        await a.request("checkin", lease=lease)
        await a.request("assign", user="ann", families=["App(softphone)"])
        await a.request("bye")
    finally:
        assert d.stop() == 0
    rows = read_journal(d.workdir / "data" / "journal.sqlite3")
    roles = [r["detail"] for r in rows if r["event"] == "role"]
    assert roles == ["starting -> acting: started", "acting -> stopped: signal SIGTERM"]  # every role change journaled
    # Each session's hello is recorded with what the PBX said of itself: what a replay needs.
    [hello] = [r for r in rows if r["event"] == "hello"]
    node = read_hello(hello["node"], hello["detail"])
    assert node is not None and (node.name, node.firmware, node.platform, node.licensing) == ("pbx-a", 13, "gateway", "central")
    events = [(r["event"], r["node"], r["holder"], r["detail"], r["rule"]) for r in rows if r["event"] not in ("start", "role", "hello")]
    # ann's refused assignment is also an unmet demand, still open at the stop: written then, whole
    demand = next(r for r in rows if r["event"] == "demand")
    assert (demand["node"], demand["holder"], demand["rule"]) == ("pbx-a", "ann", "R-USER-2")
    said = read_demand(demand["detail"])
    assert said is not None and (said.code, said.family, said.asks) == ("prerequisite", "App(softphone)", 1)
    assert events == [
        ("grant", "pbx-a", "alice", "PBX-Port13:1", None),
        ("checkin", "pbx-a", "alice", None, None),
        ("deny", "pbx-a", "ann", "prerequisite", "R-USER-2"),
        ("bye", "pbx-a", None, "0", None),
        ("demand", "pbx-a", "ann", demand["detail"], "R-USER-2"),
        ("stop", None, None, "signal SIGTERM", None),
    ]


async def test_licmaster_journal_prints_what_happened(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    d = Daemon(tmp_path / "m", LICENSES).start()
    try:
        a = await Raw.open(d.address)
        await a.hello("pbx-a")
        await a.request("checkout", resource="port", holder="alice")
        await a.request("assign", user="ann", families=["App(softphone)"])
    finally:
        d.stop()

    def journal(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "licmaster.cli", "journal", "--data-dir", str(d.workdir / "data"), *args],
                              capture_output=True, text=True)

    text = journal().stdout
    assert "grant     node=pbx-a resource=port holder=alice" in text
    denials = [json.loads(line) for line in journal("--event", "deny", "--json").stdout.splitlines()]
    assert [(r["node"], r["detail"], r["rule"]) for r in denials] == [("pbx-a", "prerequisite", "R-USER-2")]
    assert journal("--data-dir", str(tmp_path / "nowhere")).returncode == 2


async def test_a_restart_after_the_journal_was_pruned_still_waits_for_the_holders(tmp_path: Path) -> None:
    # In-process, to have the hourly retention run now: the real Master, sockets and client.
    from licmaster.client import MasterClient
    from licmaster.daemon.config import Config
    from licmaster.daemon.master import Master

    (tmp_path / "licenses.toml").write_text('[[license]]\ntype = "PBX-Port13"\ncount = 3\n')
    config = Config(listen="127.0.0.1:0", data_dir=tmp_path / "data", licenses=(tmp_path / "licenses.toml",),
                    heartbeat_ms=100, lease_ttl_ms=2000, grace_ms=1500, journal_flush_ms=20)
    journal_path = tmp_path / "data" / "journal.sqlite3"
    master = Master(config)
    await master.start()
    pbx = MasterClient([master.address], "pbx-a")
    await pbx.connect()
    await pbx.checkout("port", "alice")
    await pbx.checkout("port", "bob")
    await asyncio.sleep(0.1)
    assert master.journal is not None
    master.journal.keep_s, master.journal.prune_every_s = 0.0, 0.0  # keep nothing; prune at each flush
    await pbx.checkout("port", "carol")  # newer batches, so that the grants' batch is an old one
    await asyncio.sleep(0.05)
    await pbx.checkin("port", "carol")
    await asyncio.sleep(0.1)
    assert not [r for r in read_journal(journal_path) if r["holder"] in ("alice", "bob")]  # their grants are gone
    await pbx.close(bye=False)  # the PBX still believes it holds both Ports
    await master.stop()

    again = Master(config)
    await again.start()
    try:
        newcomer = MasterClient([again.address], "pbx-b", max_retry_s=0.0)
        await newcomer.connect()
        assert (await newcomer.send("checkout", resource="port", holder="x"))["error"] == "grace"
        back = MasterClient([again.address], "pbx-a")
        await back.connect()
        synced = await back.call("sync", leases=[{"resource": "port", "holder": "alice"}, {"resource": "port", "holder": "bob"}])
        assert len(synced["leases"]) == 2 and synced["denied"] == []
        for client in (newcomer, back):
            await client.close()
    finally:
        await again.stop()


async def test_a_pbx_that_lies_in_its_re_sync_gets_only_what_is_free_beside_what_others_hold(tmp_path: Path) -> None:
    # Bad input: after a kill -9, pbx-b re-syncs leases it never held. It gets what is free, and
    # nothing of pbx-a's (adopted, absent, within its hold): the pool stays within installed.
    d = Daemon(tmp_path / "m", LICENSES, grace_ms=300).start()
    try:
        a = await Raw.open(d.address)
        await a.hello("pbx-a")
        assert (await a.request("checkout", resource="port", holder="alice"))["ok"]
        await asyncio.sleep(0.1)
        d.kill9()
        d.restart_same_port()
        b = await Raw.open(d.address)
        await b.hello("pbx-b")
        claims = [{"resource": "port", "holder": h} for h in ("alice", "x", "y")]  # 2 Ports installed
        synced = await b.request("sync", leases=claims)
        assert synced["ok"] and len(synced["leases"]) == 1
        assert sorted(e["error"] for e in synced["denied"]) == ["exhausted", "exhausted"]
        usage = await b.request("usage")
        assert port_in_use(usage) == 2 and usage["absent"]["shown"][0]["node"] == "pbx-a"
    finally:
        d.stop()
