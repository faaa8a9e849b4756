"""The live dashboard in a real headless browser (Debian's chromium and chromium-driver, driven by
selenium): it shows what the master holds within a second of a change, and after a failover it
finds the new master by itself."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from licmaster.client import MasterClient
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
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}"):
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
