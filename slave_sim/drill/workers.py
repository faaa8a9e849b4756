"""`--workers N`: the PBXs spread over N processes, each with its own Network, driven in lockstep
by the runner over a pipe. Each command is one message and one answer:

    ("start",)            -> None            connect every PBX of this worker
    ("play", step_index)  -> int             play that step on this worker's PBXs; units of work done
    ("settled", epoch)    -> bool            wait until every live PBX re-synced with that epoch
    ("belief",)           -> {family: n}     what this worker's PBXs believe they hold
    ("stop",)             -> Recorder        everyone leaves; the measurements come back
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..access import MasterAccess
from .metrics import Recorder
from .network import Network
from .scenario import load_scenario


def worker_main(conn: Connection, scenario_path: str, size: str, masters: list[str], worker: int, workers: int,
                start: float, access: MasterAccess | None = None) -> None:
    asyncio.run(_serve(conn, Path(scenario_path), size, masters, worker, workers, start, access))


async def _serve(conn: Connection, path: Path, size: str, masters: list[str], worker: int, workers: int, start: float,
                 access: MasterAccess | None = None) -> None:
    scenario = load_scenario(path, size)
    if access is not None:  # the run's, with the command line's --tls, --cafile, --token (over the pipe, not argv)
        scenario = replace(scenario, access=access)
    recorder = Recorder(start=start)
    network = Network(scenario, masters, recorder, worker=worker, workers=workers)
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        try:
            answer: Any = None
            if command[0] == "start":
                await network.start()
            elif command[0] == "play":
                answer = await network.play(scenario.steps[command[1]])
            elif command[0] == "settled":
                answer = await network.settled(command[1])
            elif command[0] == "belief":
                answer = network.belief()
            elif command[0] == "assignments":
                answer = network.assignments()
            elif command[0] == "stop":
                await network.stop()
                conn.send(("ok", recorder))
                return
            conn.send(("ok", answer))
        except Exception as exc:  # tell the runner, which fails the run with it
            conn.send(("error", f"worker {worker}: {exc.__class__.__name__}: {exc}"))


class RemoteNetwork:
    """The runner's handle on one worker process."""

    def __init__(self, scenario_path: Path, size: str, masters: list[str], worker: int, workers: int, start: float,
                 access: MasterAccess | None = None) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, name=f"slave-sim-worker-{worker}", daemon=True,
                                   args=(child, str(scenario_path), size, masters, worker, workers, start, access))
        self.process.start()
        self.worker = worker
        self.last_belief: dict[str, int] = {}

    async def call(self, *command: Any) -> Any:
        loop = asyncio.get_running_loop()
        self.conn.send(command)
        status, answer = await loop.run_in_executor(None, self.conn.recv)
        if status != "ok":
            raise RuntimeError(answer)
        return answer

    async def start(self) -> None:
        await self.call("start")

    async def play_index(self, index: int) -> int:
        return int(await self.call("play", index))

    async def settled(self, epoch: int) -> bool:
        return bool(await self.call("settled", epoch))

    async def fetch_belief(self) -> dict[str, int]:
        self.last_belief = await self.call("belief")
        return self.last_belief

    async def assignments(self) -> list[tuple[str, list[str]]]:
        return list(await self.call("assignments"))

    async def stop(self) -> Recorder:
        recorder: Recorder = await self.call("stop")
        self.process.join(10)
        return recorder

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
