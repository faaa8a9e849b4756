"""An operator's actions on the master (daemon/operator.py), in-process with a real store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from licmaster.daemon import operator

from .daemon import in_process

LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 3\n[[license]]\ntype = "App(phone)13"\ncount = 2\n'


async def test_an_unassign_the_store_cannot_make_durable_leaves_the_pool_as_it_was(tmp_path: Path) -> None:
    d = await in_process(tmp_path / "m", LICENSES)
    try:
        assert d.master is not None
        pbx = await d.connect()
        await pbx.hello("pbx1")
        assert (await pbx.request("assign", user="ann", families=["App(phone)"]))["ok"]
        store = d.master.dispatch.store
        assert store is not None
        store.db.close()  # the disk goes away under the master: the delete cannot be made durable
        with pytest.raises(sqlite3.ProgrammingError):
            operator.unassign(d.master.dispatch, "ann", "App(phone)", "ops")
        # Not durable, so not done: ann keeps her license in the pool too (as after a restart she would).
        assert "App(phone)" in d.master.pool.users.get("ann", {})
        assert sum(p["in_use"] for p in d.master.pool.usage() if p["family"] == "App(phone)") == 1
    finally:
        await d.stop()
