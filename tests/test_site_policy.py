"""The site policy in a running master: enforced on the wire with its own error code, journaled
and counted per site, shown in usage, the console and /metrics, reloaded with the licenses (a bad
policy refused whole, every problem listed), checked by `licmaster check --policy`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from licmaster.daemon.master import StartError
from licmaster.daemon.storage.journal import read_journal

from .daemon import in_process
from .test_console import PBX, console_on

PORTS_100 = '[[license]]\ntype = "PBX-Port13"\ncount = 100\n'
SITES = """
[site.hq]
nodes = ["hq", "hq-*"]

[site.branch-b]
nodes = ["branch-b"]
reserve = { "PBX-Port" = 20 }
max = { "PBX-Port" = 30 }
"""
ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


async def test_a_rush_at_hq_leaves_the_branch_its_reserve_and_every_refusal_names_the_policy(tmp_path: Path) -> None:
    policy = write(tmp_path / "sites.toml", SITES)
    async with console_on(tmp_path, PORTS_100, policy=policy) as c:
        hq = c.master.connect_now()
        assert hq.call("hello", node="hq", **PBX)["ok"]
        replies = [hq.call("checkout", resource="port", holder=f"h{i}") for i in range(90)]
        assert sum(r["ok"] for r in replies) == 80
        refusal = replies[-1]
        assert (refusal["error"], refusal["rule"], refusal["limit"], refusal["sites"]) == ("policy", "policy", "reserve", ["branch-b"])
        assert refusal["message"].endswith("the last 20 reserved for site branch-b")
        branch = c.master.connect_now()
        assert branch.call("hello", node="branch-b", **PBX)["ok"]
        assert all(branch.call("checkout", resource="port", holder=f"b{i}")["ok"] for i in range(20))
        capped = [branch.call("checkout", resource="port", holder=f"more{i}") for i in range(2)]
        assert [r.get("error") for r in capped] == ["exhausted", "exhausted"]  # 100 in use: the pool is empty first
        usage = await c.get("/api/v1/usage")
        rows = {(r["site"], r["family"]): r for r in usage["sites"]}
        assert (rows["hq", "PBX-Port"]["in_use"], rows["hq", "PBX-Port"]["refused_by_code"]) == (80, {"policy": 10})
        assert (rows["branch-b", "PBX-Port"]["in_use"], rows["branch-b", "PBX-Port"]["reserve"], rows["branch-b", "PBX-Port"]["max"]) \
            == (20, 20, 30)
        status = await asyncio.create_subprocess_exec(sys.executable, "-m", "licmaster.cli", "status", "--url", c.base,
                                                      stdout=subprocess.PIPE, cwd=ROOT)  # the console is in this loop
        printed = (await status.communicate())[0].decode()
        assert status.returncode == 0, printed
        [hq_row] = [line.split() for line in printed.splitlines() if line.startswith("hq ") and "PBX-Port" in line]
        assert hq_row == ["hq", "PBX-Port", "80", "-", "-", "-", "10"]
        wire = c.master.connect_now()
        assert wire.call("hello", node="watcher", role="observer")["ok"]
        assert wire.call("usage")["sites"] == usage["sites"]
        metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(await c.get("/metrics")) for s in f.samples}
        assert metrics["licmaster_site_in_use", (("family", "PBX-Port"), ("site", "hq"))] == 80
        assert metrics["licmaster_site_reserve", (("family", "PBX-Port"), ("site", "branch-b"))] == 20
        assert metrics["licmaster_site_refused_total", (("code", "policy"), ("family", "PBX-Port"), ("site", "hq"))] == 10
        await c.master.master.journal.flush()  # type: ignore[union-attr]
        c.master.master.dispatch.denials.flush(0)  # type: ignore[union-attr]
        await c.master.master.journal.flush()  # type: ignore[union-attr]
        report = await c.get("/api/v1/report?since=1h")
        sites = {s["site"]: s for s in report["sites"]}
        assert sites["hq"]["peak"] == {"PBX-Port": 80} and sites["hq"]["refused_by_code"] == {"policy": 10}
        assert sites["branch-b"]["peak"] == {"PBX-Port": 20} and sites["branch-b"]["refused_by_code"] == {"exhausted": 2}
    denied = read_journal(tmp_path / "m" / "data" / "journal.sqlite3", event="deny")
    assert any(r["node"] == "hq" and r["detail"] == "policy" and "reserved for site branch-b" in r["note"] for r in denied)


async def test_a_branch_at_its_max_is_capped_and_the_rest_is_served(tmp_path: Path) -> None:
    policy = write(tmp_path / "sites.toml", SITES)
    async with console_on(tmp_path, PORTS_100, policy=policy) as c:
        branch = c.master.connect_now()
        assert branch.call("hello", node="branch-b", **PBX)["ok"]
        replies = [branch.call("checkout", resource="port", holder=f"b{i}") for i in range(35)]
        assert sum(r["ok"] for r in replies) == 30
        assert replies[-1]["message"] == "site branch-b at its max 30 of PBX-Port" and replies[-1]["limit"] == "max"
        hq = c.master.connect_now()
        assert hq.call("hello", node="hq-2", **PBX)["ok"]
        assert all(hq.call("checkout", resource="port", holder=f"h{i}")["ok"] for i in range(70))


async def test_a_bad_policy_stops_the_start_and_a_reload_listing_every_problem(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", '[site.a]\nnodes = ["a"]\nreserve = { "PBX-Port" = 300, "PBX-UC" = 1 }\n')
    with pytest.raises(StartError) as refused:
        await in_process(tmp_path / "m1", PORTS_100, policy=bad)
    assert "PBX-UC is a user license" in str(refused.value) and "more than the 100 installed" not in str(refused.value)
    over = write(tmp_path / "over.toml", '[site.a]\nnodes = ["a"]\nreserve = { "PBX-Port" = 300 }\n')
    with pytest.raises(StartError, match="reservations of PBX-Port sum to 300 .* more than the 100 installed"):
        await in_process(tmp_path / "m2", PORTS_100, policy=over)
    policy = write(tmp_path / "sites.toml", SITES)
    d = await in_process(tmp_path / "m3", PORTS_100, policy=policy)
    try:
        assert d.master is not None
        Path(policy).write_text(SITES.replace("= 30", "= 10"))  # reserve 20 above max 10
        assert d.master.reload("test") is None
        assert d.master.last_reload is not None and not d.master.last_reload["ok"]
        assert any("reserve 20 of PBX-Port is above its max 10" in p for p in d.master.last_reload["problems"])
        pbx = d.connect_now()
        assert pbx.call("hello", node="branch-b", **PBX)["ok"]
        assert sum(pbx.call("checkout", resource="port", holder=f"b{i}")["ok"] for i in range(32)) == 30  # the old one holds
        Path(policy).write_text(SITES.replace("= 30", "= 25").replace("= 20", "= 5"))
        report = d.master.reload("test")
        assert report is not None and d.master.last_reload["changed"]["site policy"][1].startswith("2 site(s)")
        usage = {(r["site"], r["family"]): r for r in d.master.sites_usage()}
        assert (usage["branch-b", "PBX-Port"]["in_use"], usage["branch-b", "PBX-Port"]["over"]) == (30, 5)  # nothing revoked
        assert not pbx.call("checkout", resource="port", holder="new")["ok"]
    finally:
        await d.stop()


async def test_a_resync_after_a_restart_is_taken_over_the_max_and_shown(tmp_path: Path) -> None:
    policy = write(tmp_path / "sites.toml", SITES)
    d = await in_process(tmp_path / "m", PORTS_100, policy=policy, grace_ms=3000)
    try:
        assert d.master is not None
        pbx = d.connect_now()
        assert pbx.call("hello", node="branch-b", **PBX)["ok"]
        assert all(pbx.call("checkout", resource="port", holder=f"b{i}")["ok"] for i in range(30))
        await d.master.journal.flush()  # type: ignore[union-attr]
        await d.stop()
        Path(policy).write_text(SITES.replace("= 30", "= 25"))  # the max lowered while it was down
        await d.start()
        again = d.connect_now()
        assert again.call("hello", node="branch-b", **PBX)["ok"]
        synced = again.call("sync", leases=[{"resource": "port", "holder": f"b{i}"} for i in range(30)])
        assert synced["ok"] and len(synced["leases"]) == 30 and synced["denied"] == []
        [row] = [r for r in d.master.sites_usage() if r["site"] == "branch-b"]
        assert (row["in_use"], row["max"], row["over"]) == (30, 25, 5)
    finally:
        await d.stop()


def test_check_says_per_site_what_it_is_guaranteed_and_can_reach(tmp_path: Path) -> None:
    licenses = write(tmp_path / "lic.toml", PORTS_100)
    policy = write(tmp_path / "sites.toml", SITES)
    out = subprocess.run([sys.executable, "-m", "licmaster.cli", "check", licenses, "--policy", policy, "--json"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rows = {r["site"]: (r["guaranteed"], r["reach"]) for r in json.loads(out.stdout)["sites"]["sites"]}
    assert rows == {"hq": (0, 80), "branch-b": (20, 30)}
    text = subprocess.run([sys.executable, "-m", "licmaster.cli", "check", licenses, "--policy", policy],
                          capture_output=True, text=True, cwd=ROOT).stdout
    assert "branch-b         PBX-Port           guaranteed    20, can reach    30" in text
    write(tmp_path / "sites.toml", SITES.replace("= 20", "= 200"))
    bad = subprocess.run([sys.executable, "-m", "licmaster.cli", "check", licenses, "--policy", policy],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "Sites (" in bad.stdout and "REFUSED" in bad.stdout
    assert "reserve 200 of PBX-Port is above its max 30" in bad.stdout and "sum to 200" not in bad.stdout


async def test_without_a_policy_usage_and_metrics_have_no_sites(tmp_path: Path) -> None:
    async with console_on(tmp_path, PORTS_100) as c:
        usage = await c.get("/api/v1/usage")
        assert usage["sites"] == []
        metrics = await c.get("/metrics")
        assert "licmaster_site_in_use" not in metrics


async def test_many_pbxs_at_once_never_break_a_limit_and_a_failover_keeps_the_counts(tmp_path: Path) -> None:
    from licmaster.client import LicenseError, MasterClient
    from licmaster.testing import free_port

    from .daemon import Daemon

    policy = write(tmp_path / "sites.toml", SITES)
    standby_address = f"127.0.0.1:{free_port()}"
    master = Daemon(tmp_path / "master", PORTS_100, policy=policy, peers=[standby_address]).start()
    standby = Daemon(tmp_path / "standby", PORTS_100, policy=policy, listen=standby_address, standby_of=master.master).start()
    names = [f"hq-{i}" for i in range(8)] + ["branch-b"]
    pbxs = [MasterClient([master.master, standby.master], name) for name in names]
    watcher = MasterClient([master.master], "watcher", role="observer")
    try:
        await asyncio.gather(*(p.connect() for p in pbxs))
        await watcher.connect()
        samples: list[dict[str, int]] = []
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                usage = await watcher.usage()
                samples.append({"in_use": sum(p["in_use"] for p in usage["pools"]),
                                **{r["site"]: r["in_use"] for r in usage["sites"]}})
                await asyncio.sleep(0.01)

        async def rush(pbx: MasterClient, n: int) -> int:
            got = 0
            for i in range(n):
                try:
                    await pbx.checkout("port", f"u{i}")
                    got += 1
                except LicenseError as refused:
                    assert refused.code in ("policy", "exhausted")
            return got

        sampler = asyncio.create_task(sample())
        got = await asyncio.gather(*(rush(p, 40 if p.node != "branch-b" else 25) for p in pbxs))
        done.set()
        await sampler
        assert sum(got) == 100 and 20 <= got[-1] <= 25  # branch-b: at least its 20, whoever was faster
        assert all(s["in_use"] <= 100 and s.get("branch-b", 0) <= 30 for s in samples)
        assert all(s.get("hq", 0) <= 80 for s in samples if s.get("branch-b", 0) < 20)  # the reserve held while it asked
        before = {r["site"]: r["in_use"] for r in (await watcher.usage())["sites"]}
        await watcher.close()
        master.kill9()
        for _ in range(100):  # the PBXs re-sync onto the standby, which applies the same policy
            await asyncio.sleep(0.1)
            if all(p.epoch >= 2 and len(p.leases) == n for p, n in zip(pbxs, got, strict=True)):
                break
        after_watch = MasterClient([standby.master], "watcher-2", role="observer")
        await after_watch.connect()
        after = {r["site"]: r["in_use"] for r in (await after_watch.usage())["sites"]}
        await after_watch.close()
        assert after == before
    finally:
        for p in pbxs:
            await p.close()
        standby.stop()
        master.stop()
