"""A master of a simulation (licmaster/testing/simloop.py): a real `Master` on the virtual loop's
network, at its own host address, started, killed (-9) and restarted as its process would be.

`kill` is what a kill -9 leaves: no `stop` row, no shutdown event, the journal's rows not yet
written lost, the listener gone, every connection of its host reset, the data directory free for
the next start. Nothing else of the master is touched.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from licmaster.daemon.config import Config
from licmaster.daemon.ha.etcd import EtcdClient
from licmaster.daemon.master import Master
from licmaster.testing.simloop import HOST, Inline, VirtualLoop

PORT = 4460
LEASE_TAGS = 10_000  # model/leases.py's (this layer imports no model module; tests/test_sim.py checks they agree)


class SimMaster:
    def __init__(self, workdir: Path, host: str, licenses: str, *, seed: int = 0,
                 etcd_client: Callable[[Sequence[str]], EtcdClient] | None = None, **config: Any) -> None:
        self.workdir, self.host = workdir, host
        self.rng = random.Random(seed)  # the tags of its pools' lease ids: from the simulation's seed
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "licenses.toml").write_text(licenses)
        self.config = Config(listen=f"{host}:{PORT}", http="", data_dir=workdir / "data",
                             licenses=(workdir / "licenses.toml",), **config)
        self.master: Master | None = None
        self.starts = 0
        self.etcd_client = etcd_client  # a model of etcd on the loop's clock (licmaster/testing/etcd_model.py)

    @property
    def address(self) -> str:
        return f"{self.host}:{PORT}"

    @property
    def alive(self) -> bool:
        return self.master is not None

    async def start(self) -> None:
        """Start as its process would, its tasks on its host (their connections come from there)."""
        context = contextvars.copy_context()
        context.run(HOST.set, self.host)
        def tag() -> int:
            return self.rng.randrange(LEASE_TAGS)

        seams: dict[str, Any] = {} if self.etcd_client is None else {"etcd_client": self.etcd_client}
        self.master = Master(self.config, name=self.host, io_executor=Inline(), lease_tag=tag, **seams)
        self.starts += 1
        await asyncio.get_running_loop().create_task(self.master.start(), context=context)

    def kill(self) -> None:
        """kill -9: its tasks gone, its unwritten journal rows lost, its connections reset."""
        master, self.master = self.master, None
        if master is None:
            return
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualLoop)
        tasks = [master._reaper, master._recording]
        if master.follower is not None:
            master.follower.client._stop_tasks()
            tasks.append(master.follower._task)
        if master.peer_watch is not None:
            tasks.append(master.peer_watch._task)
            for client in master.peer_watch._clients.values():
                client._stop_tasks()
        if master.leadership is not None:
            tasks.append(master.leadership._task)
        if master.journal is not None:
            tasks.append(master.journal._task)
            master.journal.rows.clear()  # what a kill -9 loses: not yet written
            master.journal._executor.submit(master.journal._close_db)
        for task in tasks:
            if task is not None:
                task.cancel()
        if master._server is not None:
            master._server.close()
        if master.store is not None:
            master.store.close()
        master._release_lock()
        loop.network.reset(self.host)
