"""The live dashboard in a real headless browser (Debian's chromium and chromium-driver, driven by
selenium): it shows what the master holds within a second of a change, and after a failover it
finds the new master by itself."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from licmaster.client import LicenseError, MasterClient
from licmaster.testing import free_port

from .daemon import Daemon

webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                reason="needs chromium and chromium-driver (scripts/setup-test-host installs them)")

LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n'


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}",
                 "--lang=en-US"):  # a 12-hour locale: the page must still show 24-hour times
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or ""), options=options)
    yield driver
    driver.quit()


async def until(check: Callable[[], object], timeout: float) -> float:
    """Seconds until `check()` is true (polling the page every 50 ms), or a failure."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"not seen within {timeout} s")


def port_count(driver: object) -> str:
    from selenium.common.exceptions import WebDriverException
    try:
        return driver.execute_script(  # type: ignore[attr-defined, no-any-return]
            "const c = document.querySelector('[data-family=\"PBX-Port\"] .count'); return c ? c.textContent : '';")
    except WebDriverException:
        return ""


def header(driver: object) -> str:
    return driver.execute_script("return document.getElementById('master').textContent")  # type: ignore[attr-defined, no-any-return]


async def test_the_page_shows_a_checkout_within_a_second(tmp_path: Path, browser: object) -> None:
    d = Daemon(tmp_path / "m", LICENSES).start()
    try:
        browser.get(f"http://{d.http}/")  # type: ignore[attr-defined]
        await until(lambda: port_count(browser) == "0 / 3", 10)
        pbx = MasterClient([d.master], "pbx1")
        await pbx.connect()
        await pbx.checkout("port", "alice")
        await pbx.checkout("port", "bob")
        seen_after = await until(lambda: port_count(browser) == "2 / 3", 1.0)
        assert seen_after <= 1.0
        assert "acting" in header(browser)
        await pbx.close()
        await until(lambda: port_count(browser) == "0 / 3", 1.0)
    finally:
        d.stop()


async def test_after_a_failover_the_page_shows_the_new_master(tmp_path: Path, browser: object) -> None:
    standby_address = f"127.0.0.1:{free_port()}"
    master = Daemon(tmp_path / "master", LICENSES, peers=[standby_address]).start()
    standby = Daemon(tmp_path / "standby", LICENSES, listen=standby_address, standby_of=master.master).start()
    try:
        pbx = MasterClient([master.master, standby.master], "pbx1")
        await pbx.connect()
        await pbx.checkout("port", "alice")
        browser.get(f"http://{master.http}/")  # type: ignore[attr-defined]
        await until(lambda: port_count(browser) == "1 / 3", 10)
        await until(lambda: "follows" in browser.execute_script(  # type: ignore[attr-defined]
            "return document.getElementById('masters').textContent"), 10)  # it knows the standby's console
        epoch = pbx.epoch
        master.kill9()
        await until(lambda: f"epoch {epoch + 1}" in header(browser), 15)
        assert standby.master in header(browser) or "test-master" in header(browser)
        await until(lambda: port_count(browser) == "1 / 3", 5)  # alice re-synced on the new master
        await pbx.close()
    finally:
        standby.stop()
        master.stop()


async def test_after_a_restart_the_page_reconnects_by_itself(tmp_path: Path, browser: object) -> None:
    d = Daemon(tmp_path / "m", LICENSES, http=f"127.0.0.1:{free_port()}").start()
    try:
        browser.get(f"http://{d.http}/")  # type: ignore[attr-defined]
        await until(lambda: "epoch 1" in header(browser), 10)
        d.kill9()
        d.restart_same_port()  # the same ports, a new run: epoch 2
        await until(lambda: "epoch 2" in header(browser), 10)
        pbx = MasterClient([d.master], "pbx1")
        await pbx.connect()
        await pbx.checkout("port", "alice")
        await until(lambda: port_count(browser) == "1 / 3", 2)
        await pbx.close()
    finally:
        d.stop()


INCIDENT_LICENSES = ('[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "PBX-Operator13"\ncount = 2\n'
                     '[[license]]\ntype = "PBX-QueueMonitor13"\ncount = 2\n[[license]]\ntype = "PBX-Video13"\ncount = 2\n')


def page(driver: object, script: str) -> object:
    return driver.execute_script(script)  # type: ignore[attr-defined]


async def test_a_page_opened_after_an_incident_shows_it_and_draws_a_chart_with_axes(tmp_path: Path, browser: object) -> None:
    # A hold as short as the lease TTL (2 s here): the killed PBX's session expires and its lease
    # goes back at the TTL, as after a hold that ran out (with the default 72 h it would be absent:
    # test_the_page_shows_each_absent_pbx_what_it_holds_and_when_that_goes_back).
    d = Daemon(tmp_path / "m", INCIDENT_LICENSES, hold_s=2).start()
    try:
        pbx = MasterClient([d.master], "pbx1")
        await pbx.connect()
        for holder in ("alice", "bob", "carol"):
            await pbx.checkout("port", holder)
        await pbx.checkout("operator", "desk")
        await pbx.checkout("queue-monitor", "q1")
        with pytest.raises(LicenseError, match="exhausted"):
            await pbx.checkout("port", "dave")
        gone = MasterClient([d.master], "pbx2")
        await gone.connect()
        await gone.checkout("operator", "desk2")
        await gone.close(bye=False)  # killed: its session expires after the lease TTL, its hold ending with it
        import signal
        d.signal(signal.SIGHUP)  # a reload
        await until(lambda: "session_expire" in d.log and "event=reload" in d.log, 10)
        await asyncio.sleep(0.5)
        browser.set_window_size(1400, 1100)  # type: ignore[attr-defined]
        browser.get(f"http://{d.http}/")  # type: ignore[attr-defined]  # only now: the page must catch up
        await until(lambda: port_count(browser) == "3 / 3", 10)
        await until(lambda: "expired" in str(page(browser, "return document.getElementById('events').textContent")), 10)
        denials_text = str(page(browser, "return document.getElementById('denials').textContent"))
        assert "exhausted" in denials_text and "pbx1" in denials_text
        assert str(page(browser, "return document.getElementById('denied').textContent")) == "last hour: 1"
        events_text = str(page(browser, "return document.getElementById('events').textContent"))
        assert "pbx2 went silent: its session expired, 1 lease back in the pool" in events_text
        assert "licenses reloaded" in events_text and "master start" in events_text
        # peak and usable beside each pool, not only on hover
        extra = page(browser, "return [...document.querySelectorAll('.pool')].map(p => "
                              "[p.dataset.family, p.querySelector('.extra').textContent])")
        assert ["PBX-Operator", "peak 2 · usable 2"] in extra and ["PBX-Port", "peak 3 · usable 3"] in extra  # type: ignore[operator]
        # the chart: a time axis, a count axis, one line per family in use, no two alike
        await until(lambda: page(browser, "return document.querySelectorAll('#chart polyline').length") == 3, 5)
        ticks = page(browser, "return [[...document.querySelectorAll('#chart .time-tick')].map(t => t.textContent),"
                              " [...document.querySelectorAll('#chart .count-tick')].map(t => t.textContent)]")
        time_ticks, count_ticks = ticks  # type: ignore[misc]
        assert time_ticks and all(":" in t for t in time_ticks)
        assert count_ticks[0] == "0" and int(count_ticks[-1]) >= 3
        lines = page(browser, "return [...document.querySelectorAll('#chart polyline')].map(l => "
                              "[l.dataset.family, l.getAttribute('stroke') + (l.getAttribute('stroke-dasharray') || '')])")
        assert sorted(f for f, _ in lines) == ["PBX-Operator", "PBX-Port", "PBX-QueueMonitor"]  # type: ignore[union-attr]
        assert len({style for _, style in lines}) == 3  # type: ignore[union-attr]
        swatches = page(browser, "return [...document.querySelectorAll('.pool .swatch')].map(s => s.style.background)")
        assert len(set(swatches)) == 4  # type: ignore[arg-type]  # each pool in its family's colour, as in the chart
        browser.save_screenshot(str(tmp_path / "incident.png"))  # type: ignore[attr-defined]
        await pbx.close()
    finally:
        d.stop()


async def test_a_chart_spanning_days_draws_a_handful_of_ticks_not_one_an_hour(tmp_path: Path, browser: object) -> None:
    d = Daemon(tmp_path / "m", LICENSES).start()
    try:
        browser.get(f"http://{d.http}/")  # type: ignore[attr-defined]
        await until(lambda: port_count(browser) == "0 / 3", 10)
        # a sample from a day ago (a clock that jumped, a browser left open): the chart keeps to the last hour
        ticks = page(browser, "source.close(); clearTimeout(retryTimer); history = [{at: Date.now() / 1000 - 86400, "
                              "in_use: {'PBX-Port': 1}}, ...history]; chart(); "
                              "return document.querySelectorAll('#chart .time-tick').length")
        assert 1 <= ticks <= 8  # type: ignore[operator]
    finally:
        d.stop()


async def test_no_two_families_share_a_style_even_with_every_family_of_the_catalog(tmp_path: Path, browser: object) -> None:
    from licmaster.model.catalog import FAMILIES
    d = Daemon(tmp_path / "m", LICENSES).start()
    try:
        browser.get(f"http://{d.http}/")  # type: ignore[attr-defined]
        await until(lambda: port_count(browser) == "0 / 3", 10)
        styles = page(browser, "source.close(); clearTimeout(retryTimer);"  # no live event may redraw meanwhile
                               "const fams = arguments[0]; lastState = null; history = [{at: 0, in_use: {}}, "
                               "{at: 60, in_use: Object.fromEntries(fams.map((f, i) => [f, i + 1]))}];"
                               "chart(); return [...document.querySelectorAll('#chart polyline')].map(l => "
                               "l.getAttribute('stroke') + (l.getAttribute('stroke-dasharray') || ''));".replace(
                                   "arguments[0]", json.dumps(sorted(FAMILIES))))
        assert len(styles) == len(FAMILIES) == len(set(styles))  # type: ignore[arg-type]
    finally:
        d.stop()


async def test_the_page_shows_each_site_against_its_reserve_and_max(tmp_path: Path, browser: object) -> None:
    policy = tmp_path / "sites.toml"
    policy.write_text('[site.hq]\nnodes = ["hq*"]\n[site.branch]\nnodes = ["branch"]\nreserve = { "PBX-Port" = 1 }\n'
                      'max = { "PBX-Port" = 1 }\n')
    d = Daemon(tmp_path / "m", LICENSES, policy=str(policy)).start()
    try:
        hq = MasterClient([d.master], "hq1")
        await hq.connect()
        await hq.checkout("port", "alice")
        await hq.checkout("port", "bob")
        with pytest.raises(LicenseError, match="reserved for site branch"):
            await hq.checkout("port", "carol")
        browser.get(f"http://{d.http}/")  # type: ignore[attr-defined]
        await until(lambda: page(browser, "return document.getElementById('sites-section').hidden") is False, 10)
        rows = page(browser, "return [...document.querySelectorAll('#sites tbody tr')].map(r => "
                             "[...r.children].map(c => c.textContent))")
        assert rows == [["hq", "PBX-Port", "2", "–", "–", "1"], ["branch", "PBX-Port", "0", "1", "1", "0"]]
        await hq.close()
    finally:
        d.stop()


def banner(driver: object) -> tuple[bool, str]:
    return tuple(page(driver, "const b = document.getElementById('cover-banner'); "  # type: ignore[return-value]
                              "return [!b.hidden && b.offsetHeight > 0, b.textContent];"))


async def test_a_banner_says_so_while_standby_cover_is_missing(tmp_path: Path, browser: object) -> None:
    import signal

    covered = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "PBX-Standby13"\ncount = 3\n'
    d = Daemon(tmp_path / "m", covered).start()
    try:
        browser.set_window_size(1400, 900)  # type: ignore[attr-defined]
        browser.get(f"http://{d.http}/")  # type: ignore[attr-defined]
        await until(lambda: port_count(browser) == "0 / 3", 10)
        assert banner(browser) == (False, "")
        d.license_file.write_text(covered.replace("count = 3", "count = 5", 1))  # 5 Ports, still 3 Standby
        d.signal(signal.SIGHUP)  # no standby PBX is connected: taken, and the cover is gone
        await until(lambda: banner(browser)[0], 10)
        shown, text = banner(browser)
        assert text.startswith("Standby cover MISSING: no standby PBX is connected now")
        assert "3 usable Standby for 5 Port (R-STBY-2)" in text
        standby = MasterClient([d.master], "hq-standby", role="standby", standby_for="hq")
        await standby.connect()
        await until(lambda: "standby PBX hq-standby (for hq) could not take over" in banner(browser)[1], 5)
        browser.save_screenshot(str(tmp_path / "cover.png"))  # type: ignore[attr-defined]
        d.license_file.write_text(covered.replace("count = 3", "count = 5"))  # 5 and 5: covered again
        d.signal(signal.SIGHUP)
        await until(lambda: not banner(browser)[0], 10)
        await standby.close()
    finally:
        d.stop()


TRIAGE_LICENSES = ('[[license]]\ntype = "PBX-Port13"\ncount = 10\n[[license]]\ntype = "PBX-Standby13"\ncount = 10\n'
                   '[[license]]\ntype = "PBX-Operator13"\ncount = 2\n[[license]]\ntype = "PBX-QueueMonitor13"\ncount = 1\n')
CLOCK = r"^\d\d:\d\d:\d\d$"  # 24 hours: 14:05:09, never 2:05:09 PM


async def test_the_page_answers_triage_at_a_glance(tmp_path: Path, browser: object) -> None:
    import re
    import signal

    d = Daemon(tmp_path / "m", TRIAGE_LICENSES).start()
    try:
        pbx1, pbx2 = MasterClient([d.master], "pbx1"), MasterClient([d.master], "pbx2")
        await pbx1.connect()
        await pbx2.connect()
        for n in range(9):  # 9 of 10 Ports: near exhaustion
            await pbx1.checkout("port", f"user{n}")
        await pbx1.checkout("queue-monitor", "q1")
        with pytest.raises(LicenseError, match="exhausted"):
            await pbx1.checkout("queue-monitor", "q2")
        await pbx2.checkout("operator", "desk1")
        await pbx2.checkout("operator", "desk2")
        for _ in range(3):  # the journal keeps one row and a count; the box counts all three
            with pytest.raises(LicenseError, match="exhausted"):
                await pbx2.checkout("operator", "desk3")
        standby = MasterClient([d.master], "hq-standby", role="standby", standby_for="hq")
        await standby.connect()
        silent, leaving = MasterClient([d.master], "branch-silent"), MasterClient([d.master], "branch-leaving")
        await silent.connect()
        await leaving.connect()
        await silent.close(bye=False)  # its session expires after the lease TTL
        await leaving.close()  # bye
        preflight = MasterClient([d.master], "slave-sim-preflight", role="observer")  # as slave-sim names its own
        await preflight.connect()
        await preflight.usage()
        await preflight.close()
        d.signal(signal.SIGHUP)  # a reload: its time is on the page
        browser.set_window_size(1400, 1300)  # type: ignore[attr-defined]
        browser.get(f"http://{d.http}/")  # type: ignore[attr-defined]
        await until(lambda: port_count(browser) == "9 / 10", 10)

        # near exhaustion: amber from 90% of usable, red when none is left, with the percentage
        pools = page(browser, "return Object.fromEntries([...document.querySelectorAll('.pool')].map(p => [p.dataset.family, "
                              "[p.dataset.level, p.querySelector('.pct').textContent, p.querySelector('.fill').className]]))")
        assert pools["PBX-Port"] == ["near", "90%", "fill near"]  # type: ignore[index]
        assert pools["PBX-Operator"] == ["full", "100%", "fill full"]  # type: ignore[index]
        # standby cover: a line, not an unused PBX-Standby pool
        assert "PBX-Standby" not in pools  # type: ignore[operator]
        await until(lambda: "hq-standby" in str(page(browser, "return document.getElementById('cover').textContent")), 5)
        cover = page(browser, "const c = document.getElementById('cover'); return [c.dataset.held, c.textContent]")
        assert cover == ["true", "Standby cover holds: 10 Standby for 10 Port (V13, R-STBY-2) · standby PBX hq-standby (for hq)"]

        # who was refused: by node and family, every refusal counted
        def box() -> object:
            return page(browser, "const t = document.getElementById('refused'); if (t.hidden) return null;"
                                 "const head = [...t.querySelectorAll('thead th')].map(c => c.textContent);"
                                 "return [head, [...t.querySelectorAll('tbody tr')].map(r => [...r.children].map(c => c.textContent))];")
        await until(lambda: box() is not None, 5)
        assert box() == [["node", "PBX-Operator", "PBX-QueueMonitor", "all"],
                         [["pbx2", "3", "", "3"], ["pbx1", "", "1", "1"]]]

        # which PBXs are missing: gone within the hour, with since when, until they are back
        def missing() -> dict[str, list[str]]:
            return {r[0]: r[1:] for r in page(browser, "return [...document.querySelectorAll('#nodes tr.gone')].map(r => "  # type: ignore[union-attr]
                                                       "[...r.children].map(c => c.textContent))")}
        await until(lambda: "branch-silent" in missing(), 10)
        gone = missing()
        assert sorted(gone) == ["branch-leaving", "branch-silent"]  # not slave-sim's own session
        assert gone["branch-silent"][2] == "expired: went silent" and gone["branch-leaving"][2] == "left (bye)"
        assert all(re.match(CLOCK, row[3]) for row in gone.values()), gone
        first_rows = page(browser, "return [...document.querySelectorAll('#nodes tbody tr')].slice(0, 2).map(r => r.dataset.node)")
        assert sorted(first_rows) == ["branch-leaving", "branch-silent"]  # type: ignore[arg-type]  # missing first

        # the simulator's own sessions are marked as such in the events
        await until(lambda: "slave-sim-preflight" in str(page(browser, "return document.getElementById('events').textContent")), 5)
        marked = page(browser, "return [...document.querySelectorAll('#events li')].filter(li => li.textContent.includes("
                               "'slave-sim-preflight')).map(li => [li.className, li.querySelector('.sim') !== null])")
        assert marked == [["bye simulator", True]]
        unmarked = page(browser, "return [...document.querySelectorAll('#events li')].filter(li => li.textContent.includes("
                                 "'branch-leaving')).map(li => li.querySelector('.sim') !== null)")
        assert unmarked == [False]

        # 24 hours everywhere: events, denials, the reload, the chart's time axis
        await until(lambda: "last reload" in str(page(browser, "return document.getElementById('reload').textContent")), 10)
        reload_said = str(page(browser, "return document.getElementById('reload').textContent"))
        assert re.match(r"last reload \d\d:\d\d:\d\d by SIGHUP", reload_said), reload_said
        stamps = page(browser, "return [...document.querySelectorAll('#events li, #denials li')].map(li => "
                               "li.firstChild.textContent.trim())")
        assert stamps and all(re.match(CLOCK, t) for t in stamps), stamps  # type: ignore[union-attr]
        await until(lambda: page(browser, "return document.querySelectorAll('#chart .time-tick').length") != 0, 10)
        ticks = page(browser, "return [...document.querySelectorAll('#chart .time-tick')].map(t => t.textContent)")
        assert all(re.match(r"^\d\d:\d\d(:\d\d)?$", t) for t in ticks), ticks  # type: ignore[union-attr]
        browser.save_screenshot(str(tmp_path / "triage.png"))  # type: ignore[attr-defined]

        # a missing PBX that comes back is no longer missing
        back = MasterClient([d.master], "branch-leaving")
        await back.connect()
        await until(lambda: "branch-leaving" not in missing(), 5)
        for client in (pbx1, pbx2, standby, back):
            await client.close()
    finally:
        d.stop()


def absent_panel(driver: object) -> tuple[str, bool, list[list[str]]]:
    """The Absent PBXs panel: its summary, whether its table is hidden, and the table's rows."""
    return tuple(page(driver, "return [document.getElementById('absent-summary').textContent, "  # type: ignore[return-value]
                              "document.getElementById('absent').hidden, [...document.querySelectorAll('#absent tbody tr')]"
                              ".map(r => [...r.children].map(c => c.textContent))]"))


async def test_the_page_shows_each_absent_pbx_what_it_holds_and_when_that_goes_back(tmp_path: Path, browser: object) -> None:
    import re

    d = Daemon(tmp_path / "m", INCIDENT_LICENSES, lease_ttl_ms=1000).start()  # hold_s: the default, 72 h
    present, cut_off, back = MasterClient([d.master], "pbx1"), MasterClient([d.master], "pbx2"), MasterClient([d.master], "pbx2")
    try:
        browser.set_window_size(1400, 1300)  # type: ignore[attr-defined]
        browser.get(f"http://{d.http}/")  # type: ignore[attr-defined]
        await until(lambda: port_count(browser) == "0 / 3", 10)
        assert absent_panel(browser) == (
            "No PBX is absent: every PBX holding licenses was heard within the lease TTL (hold 72 h).", True, [])
        await present.connect()
        await cut_off.connect()
        await present.checkout("port", "alice")
        for holder in ("bob", "carol"):
            await cut_off.checkout("port", holder)
        await cut_off.checkout("operator", "desk")
        silent_at = time.time()
        cut_off.freeze()  # cut off: the connection stays open, nothing comes any more
        await until(lambda: absent_panel(browser)[2], 10)
        summary, hidden, rows = absent_panel(browser)
        assert (summary, hidden) == ("1 absent PBX holds 3 leases (hold 72 h)", False)
        [(node, since, holds, goes_back)] = rows
        assert (node, holds) == ("pbx2", "port 2, operator 1")
        assert re.fullmatch(r"(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d", since), since  # 24 h; the date only if not today
        # 72 h after its last word, another day: with its date, and what is left, cut to the minute
        assert goes_back == time.strftime("%Y-%m-%d ", time.localtime(silent_at + 259_200)) + goes_back[11:], goes_back
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(in 71 h 59 min\)", goes_back), goes_back
        assert port_count(browser) == "3 / 3"  # its two Ports still counted: nobody else gets them
        state = page(browser, "return [...document.querySelectorAll('#nodes tbody tr')].map(r => "
                              "[r.dataset.node, r.className, r.children[3].textContent])")
        assert state[0] == ["pbx2", "absent", "absent"]  # type: ignore[index]  # missing first
        await until(lambda: "pbx2 went silent: absent, 3 leases held until" in str(
            page(browser, "return document.getElementById('events').textContent")), 5)
        browser.save_screenshot(str(tmp_path / "absent.png"))  # type: ignore[attr-defined]

        await back.connect()  # pbx2 again, restarted: back within its hold, holding nothing (its leases go back)
        await until(lambda: absent_panel(browser)[1], 5)
        assert absent_panel(browser) == (
            "No PBX is absent: every PBX holding licenses was heard within the lease TTL (hold 72 h).", True, [])
        await until(lambda: port_count(browser) == "1 / 3", 5)
        await until(lambda: "pbx2 is back after" in str(page(browser, "return document.getElementById('events').textContent")), 5)
    finally:
        cut_off.abort()  # frozen: close() would send nothing
        for client in (present, back):
            await client.close()
        d.stop()
