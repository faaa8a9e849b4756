"""A standby master follows the master and takes over when it dies (real processes, 127.0.0.1)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from licmaster.client import MasterClient

from .daemon import Daemon, Raw, next_event

LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "App(phone)13"\ncount = 2\n'


def in_use(usage: dict, family: str) -> int:
    return sum(p["in_use"] for p in usage["pools"] if p["family"] == family)


async def test_the_standby_takes_over_with_leases_and_assignments(tmp_path: Path) -> None:
    master = Daemon(tmp_path / "master", LICENSES, grace_ms=1500).start()
    standby = Daemon(tmp_path / "standby", LICENSES, grace_ms=1500, standby_of=master.master).start()
    try:
        # The standby serves no PBX: it says where the master is.
        stray = await Raw.open(standby.address)
        refused = await stray.hello("stray")
        assert (refused["error"], refused["master"]) == ("not_master", master.master)

        pbx = MasterClient([master.master, standby.master], "pbx1", connect_timeout=0.5)
        await pbx.connect()
        first_epoch = pbx.epoch
        await pbx.checkout("port", "alice")
        await pbx.checkout("port", "bob")
        await pbx.assign("ann", ["App(phone)"])

        watcher = MasterClient([standby.master], "watcher", role="observer")
        await watcher.connect()
        assert (await watcher.usage())["standby_of"] == master.master
        for _ in range(100):  # the standby has attached and the changes have flowed
            if (await pbx.usage())["replicas"] == 1:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)

        master.kill9()
        promoted = await next_event(watcher, "epoch")
        assert promoted["epoch"] > first_epoch
        reconnected = await next_event(pbx, "reconnected")
        assert reconnected["master"] == standby.master and pbx.epoch == promoted["epoch"]

        usage = await pbx.usage()
        assert in_use(usage, "PBX-Port") == 2  # re-synced during grace, nothing counted twice
        assert in_use(usage, "App(phone)") == 1  # the user assignment was replicated
        assert (await pbx.assign("ann", ["App(phone)"]))["took"] == []

        newcomer = MasterClient([standby.master], "pbx2")
        await newcomer.connect()
        held = await newcomer.checkout("port", "carol")  # waits out grace (the client retries `grace`)
        assert held.lease
        assert in_use(await newcomer.usage(), "PBX-Port") == 3
        for client in (newcomer, pbx, watcher):
            await client.close()
    finally:
        standby.stop()
        master.stop()
    assert "promoted" in standby.log


async def test_a_standby_refuses_pbx_requests_but_answers_observers(tmp_path: Path) -> None:
    master = Daemon(tmp_path / "master", LICENSES).start()
    standby = Daemon(tmp_path / "standby", LICENSES, standby_of=master.master).start()
    try:
        observer = await Raw.open(standby.address)
        assert (await observer.hello("obs", role="observer"))["ok"]
        usage = await observer.request("usage")
        assert usage["ok"] and usage["standby_of"] == master.master
        assert (await observer.request("checkout", resource="port", holder="x"))["error"] == "not_master"
    finally:
        standby.stop()
        master.stop()
