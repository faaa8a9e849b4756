"""The dashboard's feed: what a page gets as it opens (the state, the last hour's denials and
events, also from before a restart) and as things happen; a browser that falls behind is dropped."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from licmaster.client import MasterClient
from licmaster.console.api import Console
from licmaster.console.live import NOTABLE, Live, event_text
from licmaster.wire import events

from .daemon import Daemon, in_process
from .test_console import LICENSES, PBX, Console_, console_on


def test_a_subscriber_that_does_not_read_is_dropped_and_its_stream_told_to_end() -> None:
    master = SimpleNamespace(dispatch=SimpleNamespace(denials=SimpleNamespace(listeners=[])))
    hub = Live(master)  # type: ignore[arg-type]
    slow: asyncio.Queue[str] = asyncio.Queue(maxsize=3)
    hub.subscribers.add(slow)
    for n in range(3):
        hub._send(f"message {n}")
    assert slow.full() and slow in hub.subscribers
    hub._send("one too many")
    assert slow not in hub.subscribers
    drained = [slow.get_nowait() for _ in range(slow.qsize())]
    assert drained[-1] == ""  # the end marker: the stream handler stops and the browser reconnects


def test_a_flood_of_pbx_names_leaves_the_hours_history_bounded_by_count_too() -> None:
    from licmaster.console.live import GONE_MOST, REFUSED_CELLS_MOST

    master = SimpleNamespace(dispatch=SimpleNamespace(denials=SimpleNamespace(listeners=[])))
    hub = Live(master)  # type: ignore[arg-type]
    now = time.time()
    for i in range(GONE_MOST + 500):
        hub._note_gone((now + i / 1000, events.EXPIRE, f"pbx-{i}", None, None, None, "1"))
        hub._count_denials(now, 1, f"pbx-{i}", "PBX-Port")
    assert len(hub.gone) == GONE_MOST and "pbx-0" not in hub.gone and f"pbx-{GONE_MOST + 499}" in hub.gone
    cells = hub.refused_per_minute[int(now // 60)]
    assert len(cells) == REFUSED_CELLS_MOST + 1 and cells[("*", "PBX-Port")] == GONE_MOST + 500 - REFUSED_CELLS_MOST
    assert sum(cells.values()) == GONE_MOST + 500  # every refusal still counted


def test_every_notable_event_reads_as_words() -> None:
    texts = {name: event_text((0.0, name, "pbx1", None, None, None, "3")) for name in NOTABLE}
    assert texts[events.EXPIRE] == "pbx1 went silent: its session expired, 3 leases back in the pool"
    assert texts[events.TAKEOVER] == "pbx1 took over from 3, and its leases"
    assert texts[events.RELOAD_REFUSED].startswith("reload REFUSED")
    generic = {name for name, text in texts.items() if text.startswith("master ")}
    assert generic == {events.START, events.STOP}  # every other kind has its own words
    assert len(set(texts.values())) == len(NOTABLE)


def test_a_bye_or_expire_reads_its_count_with_the_unit_and_a_fence_its_reason() -> None:
    def text(name: str, detail: str) -> str:
        return event_text((0.0, name, "hq", None, None, None, detail))
    assert text(events.BYE, "28") == "hq left, 28 leases back in the pool"  # the journal keeps a bare 28
    assert text(events.BYE, "1") == "hq left, 1 lease back in the pool"
    assert text(events.EXPIRE, "0") == "hq went silent: its session expired, 0 leases back in the pool"
    assert text(events.BYE, "released by alice") == "hq left: released by alice"  # fenced: no count, no unit


async def sse(c: Console_, until: set[str], timeout: float = 10.0) -> dict[str, list[Any]]:
    """The live feed's events by name, read until each name in `until` has come once."""
    return await feed(c.http, c.base, until, timeout)


async def feed(http: aiohttp.ClientSession, base: str, until: set[str], timeout: float = 10.0) -> dict[str, list[Any]]:
    """`sse` on any console (one of a `licmaster serve` process, say)."""
    seen: dict[str, list[Any]] = {}
    async with http.get(base + "/api/v1/live") as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        name = ""
        async with asyncio.timeout(timeout):
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    seen.setdefault(name, []).append(json.loads(line[6:]))
                    if until <= seen.keys():
                        return seen
    raise AssertionError(f"the feed ended before {until - seen.keys()}")


async def test_a_page_opened_after_denials_and_a_silent_pbx_gets_them_at_once(tmp_path: Path) -> None:
    # A hold as short as the lease TTL: a silent PBX's session expires, its leases back, at the
    # TTL (with the default 72 h it would be absent: the test below). The incident is the expiry.
    async with console_on(tmp_path, LICENSES, lease_ttl_ms=600, hold_s=0.6) as c:
        pbx = c.master.connect_now()
        assert pbx.call("hello", node="pbx1", **PBX)["ok"]
        for holder in "abcd":
            pbx.call("checkout", resource="port", holder=holder)
        ipva = c.master.connect_now()
        assert ipva.call("hello", node="vm", **{**PBX, "platform": "ipva", "mac": "00:90:33:00:00:0b"})["ok"]
        pbx.close()  # gone without a word: its session expires after the TTL, its hold ending with it
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not c.master.master.dispatch.sessions.by_node.get("pbx1"):  # type: ignore[union-attr]
                break
        await c.master.master.journal.flush()  # type: ignore[union-attr]
        recent = (await sse(c, {"state", "history", "recent"}))["recent"][0]
    assert recent["denied"] == 1
    [denial] = recent["denials"]
    assert (denial["node"], denial["code"], denial["rule"]) == ("pbx1", "exhausted", "R-PORT-1")
    texts = [e["text"] for e in recent["events"]]
    assert "pbx1 went silent: its session expired, 3 leases back in the pool" in texts
    assert texts[0].startswith("master start")


async def test_events_reach_an_open_page_as_they_happen(tmp_path: Path) -> None:
    async with console_on(tmp_path, LICENSES) as c:
        async def reload_soon() -> None:
            await asyncio.sleep(0.3)
            c.master.master.reload("a test")  # type: ignore[union-attr]
        task = asyncio.create_task(reload_soon())
        seen = await sse(c, {"recent", "events"})
        await task
    assert [e["event"] for e in seen["events"][0]] == ["reload"]
    assert seen["events"][0][0]["text"].startswith("licenses reloaded: ")


async def test_after_a_restart_the_page_still_shows_the_last_hour_with_each_refusal_in_words(tmp_path: Path) -> None:
    ipva = {**PBX, "platform": "ipva", "mac": "00:90:33:00:00:0b"}
    d = await in_process(tmp_path / "m", '[[license]]\ntype = "PBX-IPVA13"\ncount = 1\nbind = "00:90:33:00:00:0a"\n',
                         http="127.0.0.1:0")
    vm = d.connect_now()
    assert vm.call("hello", node="vm", **ipva)["ok"]
    assert vm.call("checkout", resource="port", holder="a")["error"] == "bound_elsewhere"
    await d.stop()
    await d.start()  # a new run on the same data directory
    assert d.master is not None
    console = Console(d.master)
    await console.start()
    c = Console_(d, console, aiohttp.ClientSession())
    try:
        recent = (await sse(c, {"recent"}))["recent"][0]
    finally:
        await c.http.close()
        await console.stop()
        await d.stop()
    [denial] = recent["denials"]
    assert (denial["node"], denial["code"], denial["rule"]) == ("vm", "bound_elsewhere", "R-IPVA-2")
    assert "00:90:33:00:00:0a" in denial["message"]  # the MAC it needed, from the journal's note
    assert recent["denied"] == 1
    assert [e["event"] for e in recent["events"] if e["event"] in ("start", "stop")] == ["start", "stop", "start"]


async def test_a_denial_before_the_page_opened_comes_once_not_again_as_live(tmp_path: Path) -> None:
    async with console_on(tmp_path, LICENSES) as c:
        pbx = c.master.connect_now()
        assert pbx.call("hello", node="pbx1", **PBX)["ok"]
        hub = c.console.live
        assert hub is not None
        for holder in "abcd":  # the fourth is refused, between two ticks of the feed
            pbx.call("checkout", resource="port", holder=holder)
        queue = hub.subscribe()
        hub._publish()  # the next tick
        names = []
        while not queue.empty():
            names.append(queue.get_nowait().split("\n", 1)[0])
        assert "event: denials" not in names  # it came in `recent` already
        assert names[:3] == ["event: state", "event: history", "event: recent"] and hub.recent()["denied"] == 1


async def test_after_a_restart_the_state_still_has_refusals_by_node_and_family_and_the_pbxs_gone(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", LICENSES, http="127.0.0.1:0")
    pbx, left, sim = d.connect_now(), d.connect_now(), d.connect_now()
    assert pbx.call("hello", node="pbx1", **PBX)["ok"]
    for holder in "abc":
        pbx.call("checkout", resource="port", holder=holder)
    for _ in range(4):  # the journal keeps one row and a count of the three more: all four are counted
        assert pbx.call("checkout", resource="port", holder="d")["error"] == "exhausted"
    assert pbx.call("checkout", resource="operator", holder="desk")["error"] == "version"  # PBX-Operator12 for a V13 PBX
    assert left.call("hello", node="branch", **PBX)["ok"] and left.call("bye")["ok"]
    assert sim.call("hello", node="slave-sim-auditor", role="observer")["ok"] and sim.call("bye")["ok"]
    await d.stop()
    await d.start()  # a new run on the same data directory: the page's last hour comes from the journal
    assert d.master is not None
    console = Console(d.master)
    await console.start()
    c = Console_(d, console, aiohttp.ClientSession())
    try:
        seen = await sse(c, {"recent", "state"})
        hub = console.live
        assert hub is not None
        await hub.seeded.wait()
        state = hub.state()
    finally:
        await c.http.close()
        await console.stop()
        await d.stop()
    assert state["refused"] == {"cells": [["pbx1", "PBX-Operator", 1], ["pbx1", "PBX-Port", 4]], "nodes": 1}
    assert seen["recent"][0]["denied"] == 5
    assert [(g["node"], g["event"]) for g in state["gone"]] == [("branch", "bye")]  # not slave-sim's own session
    simulator = [e for e in seen["recent"][0]["events"] if e["node"] == "slave-sim-auditor"]
    assert [(e["event"], e["simulator"]) for e in simulator] == [("bye", True)]
    assert not any(e["simulator"] for e in seen["recent"][0]["events"] if e["node"] != "slave-sim-auditor")


async def test_a_pbx_gone_is_listed_until_it_is_back_and_an_observer_gone_is_not(tmp_path: Path) -> None:
    async with console_on(tmp_path, LICENSES) as c:
        hub = c.console.live
        assert hub is not None
        pbx, observer = c.master.connect_now(), c.master.connect_now()
        assert pbx.call("hello", node="pbx1", **PBX)["ok"]
        assert observer.call("hello", node="a-standby-master", role="observer")["ok"]
        hub.state()  # a tick of the feed: it sees who is here, in which role
        assert pbx.call("bye")["ok"] and observer.call("bye")["ok"]
        await c.master.master.journal.flush()  # type: ignore[union-attr]
        [gone] = hub.state()["gone"]
        assert (gone["node"], gone["event"], gone["role"]) == ("pbx1", "bye", "pbx") and gone["at"] > 0
        again = c.master.connect_now()
        assert again.call("hello", node="pbx1", **PBX)["ok"]
        assert hub.state()["gone"] == []


@pytest.mark.process  # a real `licmaster serve`, for a real client (this module is not in conftest's PROCESS_MODULES)
async def test_a_pbx_gone_silent_is_in_the_state_as_absent_and_its_absence_and_return_are_events_in_words(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "m", '[[license]]\ntype = "PBX-Port13"\ncount = 5\n', lease_ttl_ms=1000, hold_s=7200).start()
    cut_off, back = MasterClient([d.master], "pbx1"), MasterClient([d.master], "pbx1")
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://{d.http}"

            async def state_until(check: Callable[[dict[str, Any]], bool], said: str = "") -> dict[str, list[Any]]:
                """What a page opened now gets (its first state, the last hour's events), once its state
                passes `check` and an event's text matches `said` (the journal's batch may come a tick later)."""
                for _ in range(100):
                    seen = await feed(http, base, {"state", "recent"})
                    if check(seen["state"][0]) and any(re.fullmatch(said, e["text"]) for e in seen["recent"][0]["events"]):
                        return seen
                    await asyncio.sleep(0.1)
                raise AssertionError(f"not in the state, or no event {said!r}, in time")

            await cut_off.connect()
            for holder in ("alice", "bob"):
                await cut_off.checkout("port", holder)
            seen = await state_until(lambda state: state["pools"][0]["in_use"] == 2, "master start.*")
            assert seen["state"][0]["absent"] == {"pbxs": 0, "leases": 0, "hold_s": 7200, "shown": []}
            cut_off.freeze()  # cut off: the connection stays open, nothing comes any more
            seen = await state_until(lambda state: state["absent"]["pbxs"] == 1, r"pbx1 went silent: absent, 2 leases held until \S+Z")
            state = seen["state"][0]
            [pbx1] = state["absent"]["shown"]
            assert (state["absent"]["leases"], pbx1["node"], pbx1["leases"], pbx1["held"]) == (2, "pbx1", 2, {"port": 2})
            assert 7200 - 30 < pbx1["back_at"] - pbx1["since"] < 7200  # hold_s after its last word, a TTL before `since`
            [node] = state["nodes"]
            assert (node["node"], node["connected"], node["absent"], node["leases"]) == ("pbx1", False, True, 2)
            assert state["pools"][0]["in_use"] == 2  # still counted

            await back.connect()  # pbx1 again, restarted: back within its hold, holding nothing (its leases go back)
            seen = await state_until(lambda state: state["absent"]["pbxs"] == 0, r"pbx1 is back after \d+\.\d s, within its hold")
            assert seen["state"][0]["absent"]["shown"] == [] and seen["state"][0]["pools"][0]["in_use"] == 0
    finally:
        cut_off.abort()  # frozen: close() would send nothing
        await back.close()
        d.stop()


def test_an_absence_and_a_return_read_as_words() -> None:
    def text(name: str, detail: str) -> str:
        return event_text((0.0, name, "hq", None, None, None, detail))
    assert text(events.ABSENT, "1 leases held until 2026-12-06T14:05:09Z") == \
        "hq went silent: absent, 1 lease held until 2026-12-06T14:05:09Z"
    assert text(events.ABSENT, "28 leases adopted, held until 2026-12-06T14:05:09Z") == \
        "hq absent, not back since this master began serving: 28 leases adopted, held until 2026-12-06T14:05:09Z"
    assert text(events.BACK, "4200") == "hq is back after 4.2 s, within its hold"
    assert text(events.BACK, str(259_140_000)) == "hq is back after 71 h 59 min, within its hold"
    assert text(events.BACK, "303000") == "hq is back after 5 min 3 s, within its hold"
