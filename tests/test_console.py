"""The operator's console: the JSON API, access, metrics. A real Master in this process, its
console on a real port of 127.0.0.1, asked with a real HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from licmaster.console.access import decide
from licmaster.console.api import Console
from licmaster.daemon.config import AdminToken
from licmaster.testing import InProcessMaster

from .daemon import Daemon, in_process, self_signed_cert

LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "PBX-Operator12"\ncount = 1\n'
PBX = {"role": "pbx", "firmware": 13, "platform": "gateway", "mac": "00:90:33:00:00:01", "licensing": "central"}
VIEW, MANAGE = "view-token-0123456789", "manage-token-0123456789"
TOKENS = [{"token": VIEW, "role": "view"}, {"token": MANAGE, "role": "manage", "name": "alice"}]


class Console_:
    """A started master with its console, and an HTTP client on it."""

    def __init__(self, master: InProcessMaster, console: Console, http: aiohttp.ClientSession) -> None:
        self.master, self.console, self.http = master, console, http
        assert console.address is not None
        self.base = f"http://{console.address[0]}:{console.address[1]}"

    async def get(self, path: str, token: str | None = None, status: int = 200) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.get(self.base + path, headers=headers) as response:
            assert response.status == status, (response.status, await response.text())
            return await response.json() if response.content_type == "application/json" else await response.text()

    async def post(self, path: str, token: str | None = None, status: int = 200) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.post(self.base + path, headers=headers) as response:
            assert response.status == status, (response.status, await response.text())
            return await response.json()


async def open_console(tmp_path: Path, **config: Any) -> Console_:
    d = await in_process(tmp_path / "m", LICENSES, http="127.0.0.1:0", **config)
    assert d.master is not None
    console = Console(d.master)
    await console.start()
    return Console_(d, console, aiohttp.ClientSession())


@contextlib.asynccontextmanager
async def console_on(tmp_path: Path, licenses: str, **config: Any) -> AsyncIterator[Console_]:
    """A master on these licenses, its console started, a client on it; all stopped after."""
    d = await in_process(tmp_path / "m", licenses, http="127.0.0.1:0", **config)
    assert d.master is not None
    console = Console(d.master)
    await console.start()
    c = Console_(d, console, aiohttp.ClientSession())
    try:
        yield c
    finally:
        await c.http.close()
        await console.stop()
        await d.stop()


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console_]:
    c = await open_console(tmp_path)
    yield c
    await c.http.close()
    await c.console.stop()
    await c.master.stop()


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Console_]:
    c = await open_console(tmp_path, admin_tokens=TOKENS)
    yield c
    await c.http.close()
    await c.console.stop()
    await c.master.stop()


async def test_usage_follows_checkouts_with_peak_and_denials(console: Console_) -> None:
    pbx = console.master.connect_now()
    assert pbx.call("hello", node="pbx1", **PBX)["ok"]
    leases = [pbx.call("checkout", resource="port", holder=h)["lease"] for h in ("a", "b", "c")]
    assert pbx.call("checkout", resource="port", holder="d")["error"] == "exhausted"
    pbx.call("checkin", lease=leases[0])
    usage = await console.get("/api/v1/usage")
    port = next(p for p in usage["pools"] if p["family"] == "PBX-Port")
    assert (port["installed"], port["in_use"], port["peak"], port["usable"]) == (3, 2, 3, 3)
    operator = next(p for p in usage["pools"] if p["family"] == "PBX-Operator")
    assert operator["usable"] == 0  # a V12 license does not serve the V13 PBX connected (R-VER-2)
    assert usage["denials"] == {"exhausted (R-PORT-1)": 1} and usage["grants"] == 3


async def test_nodes_and_one_node_with_what_it_holds_since_when(console: Console_) -> None:
    pbx = console.master.connect_now()
    assert pbx.call("hello", node="pbx1", **PBX, model="IP811")["ok"]
    pbx.call("checkout", resource="port", holder="alice")
    listed = (await console.get("/api/v1/nodes"))["nodes"]
    assert [(n["node"], n["role"], n["leases"], n["connected"]) for n in listed] == [("pbx1", "pbx", 1, True)]
    one = await console.get("/api/v1/nodes/pbx1")
    assert (one["firmware"], one["model"], one["mac"]) == (13, "IP811", "00:90:33:00:00:01")
    assert [(h["resource"], h["holder"]) for h in one["held"]] == [("port", "alice")]
    assert one["held"][0]["since"] is not None and one["last_seen"] >= one["connected_since"]
    missing = await console.get("/api/v1/nodes/nobody", status=404)
    assert missing["error"] == "unknown_node"


async def every_page(c: Console_, path: str) -> list[dict[str, Any]]:
    """Each page of a paged API answer, following next_cursor to the end."""
    pages, cursor = [], ""
    while True:
        pages.append(await c.get(path + (f"&cursor={cursor}" if cursor else "")))
        cursor = pages[-1]["next_cursor"]
        if not cursor:
            return pages


async def test_nodes_and_held_leases_come_in_pages_with_a_cursor(tmp_path: Path) -> None:
    many = '[[license]]\ntype = "PBX-Port13"\ncount = 100\n'
    async with console_on(tmp_path, many) as c:
        peers = [c.master.connect_now() for _ in range(25)]
        for i, peer in enumerate(peers):
            assert peer.call("hello", node=f"pbx-{i:02}", **PBX)["ok"]
        for h in range(30):
            peers[3].call("checkout", resource="port", holder=f"phone-{h}")
        pages = await every_page(c, "/api/v1/nodes?limit=10")
        assert all(len(p["nodes"]) <= 10 and p["total"] == 25 for p in pages)
        assert [n["node"] for p in pages for n in p["nodes"]] == [f"pbx-{i:02}" for i in range(25)]
        pages = await every_page(c, "/api/v1/nodes/pbx-03?limit=7")
        assert all(len(p["held"]) <= 7 and p["leases"] == 30 for p in pages)
        assert [h["holder"] for p in pages for h in p["held"]] == [f"phone-{h}" for h in range(30)]  # in the order granted, each once
        assert (await c.get("/api/v1/nodes?limit=5000", status=400))["error"] == "bad_request"
        assert (await c.get("/api/v1/nodes/pbx-03?cursor=x", status=400))["error"] == "bad_request"


async def test_the_journal_pages_with_a_cursor_and_filters(console: Console_) -> None:
    pbx = console.master.connect_now()
    assert pbx.call("hello", node="pbx1", **PBX)["ok"]
    for holder in ("a", "b", "c"):
        pbx.call("checkout", resource="port", holder=holder)
    first = await console.get("/api/v1/journal?event=grant&limit=2")
    assert [e["holder"] for e in first["events"]] == ["a", "b"] and first["next_cursor"]
    rest = await console.get(f"/api/v1/journal?event=grant&limit=2&cursor={first['next_cursor']}")
    assert [e["holder"] for e in rest["events"]] == ["c"] and rest["next_cursor"] is None
    assert (await console.get("/api/v1/journal?node=nobody"))["events"] == []
    for bad in ("limit=0", "limit=abc", "cursor=x.y", "since=yesterday"):
        assert (await console.get(f"/api/v1/journal?{bad}", status=400))["error"] == "bad_request"


async def test_denials_by_code_rule_and_node_over_a_window(console: Console_) -> None:
    pbx = console.master.connect_now()
    assert pbx.call("hello", node="pbx1", **PBX)["ok"]
    for holder in ("a", "b", "c", "d", "e", "f"):
        pbx.call("checkout", resource="port", holder=holder)
    counts = (await console.get("/api/v1/denials?window=600"))["denials"]
    assert counts == [{"code": "exhausted", "rule": "R-PORT-1", "node": "pbx1", "count": 3}]


async def test_check_and_ha(console: Console_) -> None:
    check = await console.get("/api/v1/check")
    assert [w["rule"] for w in check["warnings"]] == ["R-VER-2"]  # the V12 Operator license on V13
    assert (await console.get("/api/v1/check?firmware=12"))["ok"] is True
    ha = await console.get("/api/v1/ha")
    assert (ha["role"], ha["replication"]["standbys"], ha["peers"]) == ("acting", 0, [])


async def test_reload_and_release_need_a_manage_token_and_say_who(guarded: Console_) -> None:
    pbx = guarded.master.connect_now()
    assert pbx.call("hello", node="stuck", **PBX)["ok"]
    pbx.call("checkout", resource="port", holder="alice")
    assert (await guarded.post("/api/v1/nodes/stuck/release", VIEW, status=403))["error"] == "forbidden"
    released = await guarded.post("/api/v1/nodes/stuck/release", MANAGE)
    assert released == {"node": "stuck", "released": 1, "by": "alice"}
    await asyncio.sleep(0)
    assert {"event": "fenced", "reason": "released by an operator (alice)"} in pbx.take()
    assert guarded.master.master is not None and guarded.master.master.pool.lease_count == 0
    await guarded.master.master.journal.flush()  # type: ignore[union-attr]
    journal = await guarded.get("/api/v1/journal?node=stuck&event=bye", VIEW)
    assert journal["events"][0]["detail"] == "released by alice"
    report = await guarded.post("/api/v1/reload", MANAGE)
    assert report["licenses"] == 4 and report["changed"] == {}
    guarded.master.license_file.write_text('[[license]]\ntype = "PBX-Port13"\ncount = 0\n')
    refused = await guarded.post("/api/v1/reload", MANAGE, status=422)
    assert refused["error"] == "reload_refused" and refused["problems"]
    # the refusal stays said, everywhere, until the next good reload
    ha = await guarded.get("/api/v1/ha", VIEW)
    assert ha["last_reload"]["ok"] is False and ha["last_reload"]["by"] == "alice"
    assert (await guarded.get("/api/v1/usage", VIEW))["last_reload"]["ok"] is False
    families = {f.name: f for f in text_string_to_metric_families(await guarded.get("/metrics", VIEW))}
    assert families["licmaster_last_reload_success"].samples[0].value == 0
    watcher = guarded.master.connect_now()
    assert watcher.call("hello", node="watcher", role="observer")["ok"]
    assert watcher.call("usage")["last_reload"]["ok"] is False  # and on the wire


async def test_with_tokens_every_request_needs_one(guarded: Console_) -> None:
    assert (await guarded.get("/api/v1/usage", status=401))["error"] == "unauthorized"
    assert (await guarded.get("/api/v1/usage", "not-a-token", status=401))["error"] == "unauthorized"
    assert (await guarded.get("/api/v1/usage", VIEW))["role"] == "acting"
    assert "licmaster_epoch" in await guarded.get("/metrics", VIEW)


async def test_without_tokens_the_console_is_read_only(console: Console_) -> None:
    assert (await console.post("/api/v1/reload", status=403))["message"].startswith("no admin_tokens configured")


def test_without_tokens_only_loopback_may_read() -> None:
    assert decide((), None, "127.0.0.1", mutation=False).allowed
    assert decide((), None, "::1", mutation=False).allowed
    off_host = decide((), None, "192.0.2.7", mutation=False)
    assert (off_host.allowed, off_host.status) == (False, 403)
    tokens = (AdminToken(VIEW, "view"),)
    assert decide(tokens, f"Bearer {VIEW}", "192.0.2.7", mutation=False).allowed  # a token works from anywhere
    assert decide(tokens, f"Basic {VIEW}", "127.0.0.1", mutation=False).status == 401


async def test_metrics_parse_and_match_the_pool(console: Console_) -> None:
    pbx = console.master.connect_now()
    assert pbx.call("hello", node="pbx1", **PBX)["ok"]
    pbx.call("checkout", resource="port", holder="a")
    pbx.call("checkout", resource="operator", holder="desk")  # refused: R-VER-2
    text = await console.get("/metrics")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    port = (("bound", ""), ("family", "PBX-Port"), ("version", "13"))
    assert samples[("licmaster_licenses_installed", port)] == 3
    assert samples[("licmaster_licenses_in_use", port)] == 1
    assert samples[("licmaster_grants_total", ())] == 1
    assert samples[("licmaster_denials_total", (("code", "version"), ("family", "PBX-Operator"), ("rule", "R-VER-2")))] == 1
    assert samples[("licmaster_sessions", (("role", "pbx"),))] == 1
    assert samples[("licmaster_role", (("role", "acting"),))] == 1
    assert samples[("licmaster_request_batch_seconds_count", ())] >= 3


async def test_pools_bound_to_different_macs_are_series_of_their_own_and_denials_count_by_family(tmp_path: Path) -> None:
    # Two PBX-IPVA13 entries of 10 and 5, each bound to its own VM: one full while the other has room
    # was one series of 15, "10 of 15 in use"; an alert must see the full one.
    licenses = ('[[license]]\ntype = "PBX-IPVA13"\ncount = 10\nbind = "00:90:33:00:00:0a"\n'
                '[[license]]\ntype = "PBX-IPVA13"\ncount = 5\nbind = "00:90:33:00:00:0b"\n'
                '[[license]]\ntype = "PBX-Port13"\ncount = 20\n')
    async with console_on(tmp_path, licenses) as c:
        vm = c.master.connect_now()
        assert vm.call("hello", node="vm-b", **{**PBX, "platform": "ipva", "mac": "00:90:33:00:00:0b"})["ok"]
        for n in range(5):  # its own 5 (R-IPVA-1, R-IPVA-2), then refused: the other VM's 10 are not its
            assert vm.call("checkout", resource="port", holder=f"u{n}")["ok"]
        assert vm.call("checkout", resource="port", holder="u5")["error"] == "exhausted"
        other = c.master.connect_now()
        assert other.call("hello", node="vm-c", **{**PBX, "platform": "ipva", "mac": "00:90:33:00:00:0c"})["ok"]
        assert other.call("checkout", resource="port", holder="x")["error"] == "bound_elsewhere"
        assert other.call("checkout", resource="nonsense", holder="x")["error"] == "unknown_resource"
        text = await c.get("/metrics")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
        ipva = {s[1]: v for s, v in samples.items() if s[0] == "licmaster_licenses_in_use" and ("family", "PBX-IPVA") in s[1]}
        assert ipva == {(("bound", "00:90:33:00:00:0a"), ("family", "PBX-IPVA"), ("version", "13")): 0,
                        (("bound", "00:90:33:00:00:0b"), ("family", "PBX-IPVA"), ("version", "13")): 5}
        assert samples[("licmaster_licenses_installed", (("bound", "00:90:33:00:00:0b"), ("family", "PBX-IPVA"),
                                                          ("version", "13")))] == 5
        denials = {s[1]: v for s, v in samples.items() if s[0] == "licmaster_denials_total"}
        assert denials[(("code", "bound_elsewhere"), ("family", "PBX-IPVA"), ("rule", "R-IPVA-2"))] == 1
        assert denials[(("code", "unknown_resource"), ("family", ""), ("rule", ""))] == 1  # about no family
        assert sum(v for labels, v in denials.items() if ("family", "PBX-IPVA") in labels) == 2
        assert all(name in ("family", "code", "rule") for labels in denials for name, _ in labels)  # no node label
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True) \
            if shutil.which("promtool") else None
        assert check is None or check.returncode == 0, check.stdout + check.stderr


async def test_the_console_speaks_https_when_the_master_serves_tls(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    d = Daemon(tmp_path / "m", LICENSES, tls_cert=str(cert), tls_key=str(key)).start()
    try:
        assert d.http is not None
        context = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http, http.get(f"https://{d.http}/api/v1/ha", ssl=context) as response:
            assert response.status == 200 and (await response.json())["role"] == "acting"
    finally:
        d.stop()


async def test_status_and_release_from_the_command_line(tmp_path: Path) -> None:
    """`licmaster status` and `licmaster release` against a real `licmaster serve`."""
    import sys

    from licmaster.client import MasterClient

    d = Daemon(tmp_path / "m", LICENSES, admin_tokens=TOKENS).start()
    try:
        pbx = MasterClient([d.master], "stuck-pbx")
        await pbx.connect()
        await pbx.checkout("port", "alice")

        def licmaster(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "licmaster.cli", *args, "--url", f"http://{d.http}"],
                                  capture_output=True, text=True, timeout=30)

        status = await asyncio.to_thread(licmaster, "status", "--token", VIEW)
        assert status.returncode == 0, status.stderr
        assert "stuck-pbx" in status.stdout and "PBX-Port" in status.stdout and "absent:" not in status.stdout
        pbx.freeze()  # cut off: absent after the lease TTL, its Port its own for its hold (72 h)
        for _ in range(100):
            status = await asyncio.to_thread(licmaster, "status", "--token", VIEW)
            if "absent:" in status.stdout:
                break
            await asyncio.sleep(0.1)
        assert "absent: 1 PBX(s) silent past the lease TTL hold 1 lease(s)" in status.stdout
        assert re.search(r"stuck-pbx .* port 1 .*\(in 7[01] h \d+ min\)", status.stdout), status.stdout
        refused = await asyncio.to_thread(licmaster, "release", "stuck-pbx", "--token", VIEW)
        assert refused.returncode != 0 and "403 forbidden" in refused.stderr
        released = await asyncio.to_thread(licmaster, "release", "stuck-pbx", "--token", MANAGE)
        assert released.returncode == 0 and "1 floating license(s) released" in released.stdout
        as_json = await asyncio.to_thread(licmaster, "status", "--token", VIEW, "--json")
        assert json.loads(as_json.stdout)["nodes"] == []
        await pbx.close(bye=False)
    finally:
        d.stop()


async def test_the_usage_report_over_the_api(console: Console_) -> None:
    pbx = console.master.connect_now()
    assert pbx.call("hello", node="pbx1", **PBX)["ok"]
    for holder in ("a", "b", "c", "d"):
        pbx.call("checkout", resource="port", holder=holder)
    report = await console.get("/api/v1/report?since=1h")
    assert report["days"][0]["peak"] == {"PBX-Port": 3} and report["refused"][0]["count"] == 1
    page = await console.get("/api/v1/report?since=1h&format=html")
    assert "<svg" in page


async def test_an_unknown_api_path_or_method_gets_the_apis_json_error(console: Console_) -> None:
    missing = await console.get("/api/v1/nope", status=404)
    assert missing["error"] == "not_found" and "/api/v1/nope" in missing["message"]
    wrong = await console.get("/api/v1/reload", status=405)  # reload is POST only
    assert wrong["error"] == "method_not_allowed" and "GET is not allowed" in wrong["message"]


async def ask(c: Console_, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with c.http.request(method, c.base + path, headers=headers) as response:
        return response.status, await response.json()


async def test_a_method_no_path_takes_is_405_on_a_read_only_console_not_403(console: Console_) -> None:
    # Read-only on loopback (no admin_tokens): was 403 "read-only", as if a DELETE changed something.
    for method, path in (("DELETE", "/api/v1/usage"), ("DELETE", "/api/v1/reload"), ("PUT", "/api/v1/nodes/pbx1"),
                         ("POST", "/api/v1/usage")):
        status, body = await ask(console, method, path)
        assert (status, body["error"]) == (405, "method_not_allowed"), (method, path, body)
        assert f"{method} is not allowed here" in body["message"]
    assert (await ask(console, "POST", "/api/v1/reload"))[0] == 403  # a change the console takes: still read-only


async def test_a_method_no_path_takes_is_405_for_a_view_token_and_401_without_one(guarded: Console_) -> None:
    assert (await ask(guarded, "DELETE", "/api/v1/usage", VIEW))[0] == 405  # a view token may read: told 405
    assert (await ask(guarded, "DELETE", "/api/v1/usage"))[0] == 401  # who are you, first
    assert (await ask(guarded, "POST", "/api/v1/reload", VIEW))[0] == 403  # a change: a manage token's


async def test_ha_on_a_master_without_a_standby_says_nothing_takes_over(console: Console_) -> None:
    coordination = (await console.get("/api/v1/ha"))["coordination"]
    assert coordination["mode"] == "single" and "nothing takes over" in coordination["note"]
    assert "standby takes over" not in coordination["note"]


async def test_the_journal_api_gives_a_counts_unit_beside_the_detail_as_stored(console: Console_) -> None:
    pbx = console.master.connect_now()
    assert pbx.call("hello", node="pbx1", **PBX)["ok"]
    for holder in ("a", "b"):
        pbx.call("checkout", resource="port", holder=holder)
    assert pbx.call("bye")["ok"]
    [bye] = (await console.get("/api/v1/journal?event=bye"))["events"]
    assert (bye["detail"], bye["detail_text"]) == ("2", "2 leases")  # stored bare: other code parses it



async def test_an_operator_takes_one_lease_or_one_user_license_back_and_it_is_said_everywhere(tmp_path: Path) -> None:
    licenses = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "App(phone)13"\ncount = 2\n'
    async with console_on(tmp_path, licenses, admin_tokens=TOKENS) as c:
        pbx = c.master.connect_now()
        assert pbx.call("hello", node="pbx1", **PBX)["ok"]
        kept = pbx.call("checkout", resource="port", holder="alice")["lease"]
        gone = pbx.call("checkout", resource="port", holder="bob")["lease"]
        assert pbx.call("assign", user="ann", families=["App(phone)"])["ok"]
        assert (await c.post("/api/v1/nodes/pbx1/release?holder=bob", VIEW, status=403))["error"] == "forbidden"
        released = await c.post("/api/v1/nodes/pbx1/release?holder=bob", MANAGE)
        assert released["leases"] == [{"resource": "port", "holder": "bob", "lease": gone}] and released["by"] == "alice"
        await asyncio.sleep(0)
        told = [m for m in pbx.take() if m.get("event") == "revoked"]
        assert told == [{"event": "revoked", "resource": "port", "holder": "bob", "lease": gone,
                         "reason": "released by an operator (alice)"}]
        assert [h["lease"] for h in (await c.get("/api/v1/nodes/pbx1", VIEW))["held"]] == [kept]  # the session goes on
        assert (await c.post("/api/v1/nodes/pbx1/release?lease=999", MANAGE, status=404))["error"] == "unknown_lease"

        users = await c.get("/api/v1/users", VIEW)
        assert [(u["user"], u["family"], u["node"]) for u in users["users"]] == [("ann", "App(phone)", "pbx1")]
        assert users["users"][0]["since"] > 0
        taken = await c.post("/api/v1/users/ann/unassign?family=App(phone)", MANAGE)
        assert taken == {"user": "ann", "family": "App(phone)", "version": 13, "by": "alice"}
        assert (await c.get("/api/v1/users", VIEW))["users"] == []
        assert c.master.master.store is not None and c.master.master.store.assignments() == []  # durable too
        assert (await c.post("/api/v1/users/ann/unassign?family=App(phone)", MANAGE, status=404))["error"] == "unknown_assignment"
        await c.master.master.journal.flush()  # type: ignore[union-attr]
        said = [e["detail"] for e in (await c.get("/api/v1/journal?event=operator", VIEW))["events"]]
        assert said == ["release 1 lease(s) of pbx1 by alice", "unassign App(phone) of ann by alice"]


async def test_ssa_terms_and_rentals_are_shown_with_the_days_left(tmp_path: Path) -> None:
    licenses = ('[[license]]\ntype = "PBX-Port12"\ncount = 4\nssa_until = 2099-01-01\n'
                '[[license]]\ntype = "App(phone)13"\ncount = 2\nrented = true\n')
    async with console_on(tmp_path, licenses) as c:
        terms = (await c.get("/api/v1/usage"))["terms"]
        assert [(t["family"], t["ssa_until"], t["rented"]) for t in terms] == [("PBX-Port", "2099-01-01", False),
                                                                               ("App(phone)", None, True)]
        assert terms[0]["days_left"] > 26_000 and terms[0]["lowers_version"]
        families = {f.name: f for f in text_string_to_metric_families(await c.get("/metrics"))}
        [sample] = families["licmaster_ssa_days_left"].samples
        assert sample.labels == {"family": "PBX-Port", "version": "12"} and sample.value == terms[0]["days_left"]


async def test_two_ssa_terms_of_one_family_and_version_are_one_series_the_sooner_end(tmp_path: Path) -> None:
    # Two samples with the same labels make a scrape Prometheus rejects whole.
    licenses = ('[[license]]\ntype = "PBX-Port13"\ncount = 4\nssa_until = 2099-01-01\n'
                '[[license]]\ntype = "PBX-Port13"\ncount = 2\nssa_until = 2098-01-01\n')
    async with console_on(tmp_path, licenses) as c:
        terms = (await c.get("/api/v1/usage"))["terms"]
        families = {f.name: f for f in text_string_to_metric_families(await c.get("/metrics"))}
        [sample] = families["licmaster_ssa_days_left"].samples
        assert sample.value == min(t["days_left"] for t in terms) and len(terms) == 2



STANDBY_COVERED = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "PBX-Standby13"\ncount = 3\n'


def standby_cover(text: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for f in text_string_to_metric_families(text) if f.name == "licmaster_standby_cover"
            for s in f.samples]


async def test_a_reload_taking_standby_cover_away_needs_force_and_the_cover_is_in_metrics_and_usage(tmp_path: Path) -> None:
    import sys

    async with console_on(tmp_path, STANDBY_COVERED, admin_tokens=TOKENS, lease_ttl_ms=60_000) as c:
        assert standby_cover(await c.get("/metrics", VIEW)) == [({"reason": "covered"}, 1.0)]
        hq, standby = c.master.connect_now(), c.master.connect_now()
        assert hq.call("hello", node="hq", **PBX)["ok"]
        assert standby.call("hello", node="hq-standby", **{**PBX, "role": "standby", "standby_for": "hq"})["ok"]
        c.master.license_file.write_text(STANDBY_COVERED.replace("count = 3", "count = 5", 1))  # 5 Ports, 3 Standby
        refused = await c.post("/api/v1/reload", MANAGE, status=422)
        assert refused["error"] == "reload_refused" and refused["forceable"] is True and "force=true" in refused["message"]
        assert "3 usable Standby for 5 Port (R-STBY-2)" in refused["problems"][0]
        assert (await c.post("/api/v1/reload?force=maybe", MANAGE, status=400))["error"] == "bad_request"
        assert standby_cover(await c.get("/metrics", VIEW)) == [({"reason": "covered"}, 1.0)]  # the set in force stays

        def licmaster(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "licmaster.cli", "reload", "--url", c.base, "--token", MANAGE, *args],
                                  capture_output=True, text=True, timeout=30)

        again = await asyncio.to_thread(licmaster)
        assert again.returncode == 1 and "licmaster reload --force takes it anyway" in again.stderr, again.stderr
        forced = await asyncio.to_thread(licmaster, "--force")
        assert forced.returncode == 0 and forced.stdout.startswith("reloaded: PBX-Port 3->5"), forced.stdout + forced.stderr
        assert "[R-STBY-2]" in forced.stdout and "FORCED" in forced.stdout
        assert standby_cover(await c.get("/metrics", VIEW)) == [({"reason": "standby_short"}, 0.0)]
        cover = (await c.get("/api/v1/usage", VIEW))["standby_cover"]
        assert (cover["held"], cover["rule"], cover["standbys"]) == (False, "R-STBY-2", ["hq-standby (for hq)"])
        assert "3 usable Standby for 5 Port" in cover["message"]
        assert (await c.get("/api/v1/ha", VIEW))["last_reload"]["forced"] is True


# ---------------------------------------------------------------- issue 23, items 6 and 7

SCRAPE = "scrape-token-0123456789"


async def test_a_metrics_token_reads_metrics_and_nothing_else_and_metrics_public_opens_metrics_alone(tmp_path: Path) -> None:
    async with console_on(tmp_path / "token", LICENSES, admin_tokens=TOKENS, metrics_token=SCRAPE) as c:
        assert "licmaster_epoch" in await c.get("/metrics", SCRAPE)
        assert "licmaster_epoch" in await c.get("/metrics", VIEW)  # an admin token still reads it
        assert "metrics_token" in (await c.get("/metrics", status=401))["message"]
        assert (await c.get("/metrics", "not-the-scrape-token", status=401))["error"] == "unauthorized"
        assert (await c.get("/api/v1/usage", SCRAPE, status=401))["error"] == "unauthorized"  # good for /metrics only
        assert (await c.post("/api/v1/reload", SCRAPE, status=401))["error"] == "unauthorized"
    async with console_on(tmp_path / "public", LICENSES, admin_tokens=TOKENS, metrics_public=True) as c:
        assert "licmaster_epoch" in await c.get("/metrics")
        assert (await c.get("/api/v1/usage", status=401))["error"] == "unauthorized"


def test_metrics_off_loopback_with_a_metrics_token_and_no_admin_tokens() -> None:
    from licmaster.console.access import decide_metrics

    assert decide_metrics((), SCRAPE, False, f"Bearer {SCRAPE}", "192.0.2.7").allowed
    assert decide_metrics((), SCRAPE, False, None, "192.0.2.7").status == 401
    assert decide_metrics((), "", True, None, "192.0.2.7").allowed
    assert decide_metrics((), "", False, None, "192.0.2.7").status == 403  # as before: loopback only
    assert decide_metrics((), SCRAPE, False, None, "127.0.0.1").allowed  # the console's loopback reading, as before


async def test_a_reload_takes_new_tokens_from_the_config_and_a_bad_config_keeps_the_old_ones(tmp_path: Path) -> None:
    from licmaster.testing.process import write_config

    new = "ops-token-0123456789abc"
    async with console_on(tmp_path, LICENSES, admin_tokens=TOKENS) as c:
        assert (await c.get("/api/v1/usage", new, status=401))["error"] == "unauthorized"
        assert (await c.get("/metrics", SCRAPE, status=401))["error"] == "unauthorized"
        c.master.config["admin_tokens"] = [TOKENS[1], {"token": new, "role": "manage", "name": "ops"}]  # VIEW revoked
        c.master.config["metrics_token"] = SCRAPE
        write_config(c.master.workdir / "licmaster.toml", c.master.config)
        taken = await c.post("/api/v1/reload", MANAGE)
        assert taken["tokens"] == {"ok": True, "changed": ["ops (manage) added", "view:view... (view) removed", "metrics_token set"],
                                   "problems": []}
        assert (await c.get("/api/v1/usage", new))["role"] == "acting"
        assert (await c.get("/api/v1/usage", VIEW, status=401))["error"] == "unauthorized"
        assert "licmaster_epoch" in await c.get("/metrics", SCRAPE)

        c.master.config["admin_tokens"] = [{"token": "short", "role": "manage"}]  # a bad config: nothing of it is taken
        write_config(c.master.workdir / "licmaster.toml", c.master.config)
        kept = await c.post("/api/v1/reload", new)
        assert kept["tokens"]["ok"] is False and kept["changed"] == {}
        assert "admin_tokens[0].token: expected a secret of at least 16 characters" in kept["tokens"]["problems"][0]
        assert (await c.get("/api/v1/usage", new))["role"] == "acting" and "licmaster_epoch" in await c.get("/metrics", SCRAPE)
        ha = await c.get("/api/v1/ha", new)
        assert ha["last_reload"]["tokens"]["ok"] is False  # said until the next reload
        assert c.master.master is not None and c.master.master.journal is not None
        await c.master.master.journal.flush()
        said = [e["detail"] for e in (await c.get("/api/v1/journal?event=operator", new))["events"]]
        assert said[0].startswith("console tokens reloaded: ops (manage) added") and said[0].endswith("(by alice)")
        assert said[1].startswith("console tokens NOT reloaded, the ones in force stay:") and "admin_tokens[0]" in said[1]


OPERATORS = ('[[license]]\ntype = "PBX-Port13"\ncount = 10\n[[license]]\ntype = "PBX-Operator13"\ncount = 5\n'
             '[[license]]\ntype = "App(phone)13"\ncount = 3\n')


async def test_who_holds_a_family_across_every_node_in_pages(tmp_path: Path) -> None:
    async with console_on(tmp_path, OPERATORS) as c:
        peers = {name: c.master.connect_now() for name in ("branch", "hq", "annex")}
        for name, peer in peers.items():
            assert peer.call("hello", node=name, **PBX)["ok"]
        for name, desks in (("hq", ["desk-1", "desk-2"]), ("branch", ["desk-3"]), ("annex", [])):
            peers[name].call("checkout", resource="port", holder=f"{name}-phone")
            for desk in desks:
                assert peers[name].call("checkout", resource="operator", holder=desk)["ok"]
        assert peers["hq"].call("assign", user="ann", families=["App(phone)"])["ok"]
        one = await c.get("/api/v1/families/PBX-Operator")
        assert (one["family"], one["consumption"], one["installed"], one["in_use"]) == ("PBX-Operator", "floating", 5, 3)
        assert [(h["node"], h["holder"], h["count"]) for h in one["held"]] == [("branch", "desk-3", 1), ("hq", "desk-1", 1),
                                                                                ("hq", "desk-2", 1)]
        assert one["held"][0]["took"] == [{"family": "PBX-Operator", "version": 13, "count": 1}] and one["next_cursor"] is None
        pages = await every_page(c, "/api/v1/families/PBX-Operator?limit=1")
        assert [len(p["held"]) for p in pages] == [1, 1, 1]
        assert [h["holder"] for p in pages for h in p["held"]] == ["desk-3", "desk-1", "desk-2"]  # each once, in order
        users = await c.get("/api/v1/families/App(phone)")
        assert users["consumption"] == "user" and users["held"] == []
        assert [(u["user"], u["node"], u["version"]) for u in users["users"]] == [("ann", "hq", 13)]
        nobody = await c.get("/api/v1/families/PBX-Channels")
        assert (nobody["installed"], nobody["held"], nobody["users"]) == (0, [], [])
        assert (await c.get("/api/v1/families/PBX-Nonsense", status=404))["error"] == "unknown_family"
        for bad in ("limit=0", "limit=10001", "cursor=hq", "cursor=hq/x"):
            assert (await c.get(f"/api/v1/families/PBX-Operator?{bad}", status=400))["error"] == "bad_request"


# ---------------------------------------------------------------- two clocks: absent PBXs

ABSENT_LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 5\n[[license]]\ntype = "PBX-Operator13"\ncount = 1\n'
HOLD_DEFAULT_S = 259_200  # 72 h: the config's default, not set in these tests


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def test_a_pbx_gone_silent_is_absent_in_metrics_usage_ha_and_nodes_with_its_leases_held_until_it_is_back(
        tmp_path: Path) -> None:
    from licmaster.client import MasterClient

    d = Daemon(tmp_path / "m", ABSENT_LICENSES, lease_ttl_ms=1000).start()  # hold_s: the default
    cut_off, present, back = MasterClient([d.master], "pbx1"), MasterClient([d.master], "pbx2"), MasterClient([d.master], "pbx1")
    try:
        async with aiohttp.ClientSession() as http:
            async def get(path: str) -> Any:
                async with http.get(f"http://{d.http}{path}") as response:
                    assert response.status == 200, await response.text()
                    return await response.json() if response.content_type == "application/json" else await response.text()

            async def until_absent(pbxs: int) -> str:
                for _ in range(200):
                    text = await get("/metrics")
                    if metric(text, "licmaster_absent_pbxs") == pbxs:
                        return str(text)
                    await asyncio.sleep(0.05)
                raise AssertionError(f"licmaster_absent_pbxs never {pbxs}")

            for client in (cut_off, present):
                await client.connect()
            for holder in ("alice", "bob"):
                await cut_off.checkout("port", holder)
            await cut_off.checkout("operator", "desk")
            await present.checkout("port", "carol")
            text = await get("/metrics")
            assert (metric(text, "licmaster_absent_pbxs"), metric(text, "licmaster_absent_leases")) == (0, 0)
            assert metric(text, "licmaster_hold_seconds") == HOLD_DEFAULT_S
            assert metric(text, "licmaster_absent_hold_left_seconds") is None  # no absent PBX, no hold ending
            assert (await get("/api/v1/usage"))["absent"] == {"pbxs": 0, "leases": 0, "hold_s": HOLD_DEFAULT_S, "shown": []}

            silent_at = time.time()
            cut_off.freeze()  # cut off: the connection stays open, nothing comes any more
            text = await until_absent(1)
            assert metric(text, "licmaster_absent_leases") == 3
            left = metric(text, "licmaster_absent_hold_left_seconds")
            assert left is not None and HOLD_DEFAULT_S - 30 < left < HOLD_DEFAULT_S
            port = {"family": "PBX-Port", "version": "13", "bound": ""}
            assert metric(text, "licmaster_licenses_in_use", **port) == 3  # its two still counted: nobody else gets them
            assert metric(text, "licmaster_sessions", role="pbx") == 2  # its session stays

            usage = await get("/api/v1/usage")
            absent = usage["absent"]
            assert (absent["pbxs"], absent["leases"], absent["hold_s"]) == (1, 3, HOLD_DEFAULT_S)
            [pbx1] = absent["shown"]
            assert (pbx1["node"], pbx1["leases"], pbx1["held"]) == ("pbx1", 3, {"port": 2, "operator": 1})
            assert silent_at < pbx1["since"] <= time.time()  # a lease TTL after its last word
            assert silent_at - 2 < pbx1["back_at"] - HOLD_DEFAULT_S <= silent_at + 0.5  # hold_s after its last word
            ha = (await get("/api/v1/ha"))["absent"]
            assert (ha["pbxs"], ha["leases"], [a["node"] for a in ha["shown"]]) == (1, 3, ["pbx1"])
            one = await get("/api/v1/nodes/pbx1")
            assert one["connected"] is False and one["leases"] == 3
            assert abs(one["absent_since"] - pbx1["since"]) < 0.5 and abs(one["back_at"] - pbx1["back_at"]) < 0.5
            other = await get("/api/v1/nodes/pbx2")
            assert (other["connected"], other["absent_since"], other["back_at"]) == (True, None, None)

            await back.connect()  # pbx1 again, restarted: holding nothing, it says so, and its leases go back
            text = await until_absent(0)
            assert metric(text, "licmaster_absent_leases") == 0 and metric(text, "licmaster_absent_hold_left_seconds") is None
            assert metric(text, "licmaster_licenses_in_use", **port) == 1
            assert (await get("/api/v1/usage"))["absent"] == {"pbxs": 0, "leases": 0, "hold_s": HOLD_DEFAULT_S, "shown": []}
            journal = (await get("/api/v1/journal?node=pbx1"))["events"]
            assert [e["event"] for e in journal if e["event"] in ("absent", "back")] == ["absent", "back"]
    finally:
        cut_off.abort()  # frozen: close() would send nothing
        for client in (present, back):
            await client.close()
        d.stop()


async def test_what_if_over_the_api_with_a_candidate_beside_the_license_files_and_nothing_else(console: Console_) -> None:
    pbx = console.master.connect_now()
    assert pbx.call("hello", node="pbx1", **PBX)["ok"]
    for holder in ("a", "b", "c"):
        assert pbx.call("checkout", resource="port", holder=holder)["ok"]
    (console.master.license_file.parent / "fewer.toml").write_text('[[license]]\ntype = "PBX-Port13"\ncount = 2\n')
    as_installed = await console.get("/api/v1/whatif?since=1h")
    port = next(f for f in as_installed["families"] if f["family"] == "PBX-Port")
    assert port["refused"] == 0 and port["peak_in_use"] == 3
    fewer = await console.get("/api/v1/whatif?since=1h&licenses=fewer.toml")
    port = next(f for f in fewer["families"] if f["family"] == "PBX-Port")
    assert (port["installed"], port["refused"], port["would_serve_everyone"]) == (2, 1, 3)
    lost = await console.get("/api/v1/whatif?since=1h&lose=pbx1&at=peak")
    assert lost["lost"][0]["down"][0]["failed"] == "pbx1" and lost["lost"][0]["down"][0]["leases"] == 3
    for query in ("licenses=../licmaster.toml", "licenses=/etc/passwd", "licenses=missing.toml", "lose=pbx1", "firmware=x"):
        refused = await console.get(f"/api/v1/whatif?{query}", status=400)
        assert refused["error"] == "bad_request"
    report = await console.get("/api/v1/report?since=1h&whatif=fewer.toml")  # the usage report's What if section
    port = next(f for f in report["whatif"]["families"] if f["family"] == "PBX-Port")
    assert (port["installed"], port["refused"]) == (2, 1)
    assert (await console.get("/api/v1/report?since=1h&whatif=../x.toml", status=400))["error"] == "bad_request"
