"""The simulator's client: the public MasterClient plus the faults a drill injects into a PBX."""

from __future__ import annotations

import asyncio
from typing import Any

from licmaster.client import MasterClient, NotConnected


class SimClient(MasterClient):
    _frozen = False

    def freeze(self) -> None:
        """Stop all traffic but keep the connection open, as a PBX cut off by the network would
        look to the master: no heartbeat, nothing read, nothing sent, no reconnect."""
        self._stop_tasks()
        if self._wire and self._wire.transport:
            self._wire.transport.pause_reading()
        self._frozen = True
        self._fail_pending(NotConnected("client frozen"))

    def abort(self) -> None:
        """Drop the connection at once, as a crash would (no bye, no reconnect)."""
        self._stop_tasks()
        if self._wire and self._wire.transport:
            self._wire.transport.abort()
        self._wire = None
        self.connected.clear()
        self._fail_pending(NotConnected("client aborted"))

    def _request(self, op: str, fields: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        if self._frozen:
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            future.set_exception(NotConnected(f"{self.node}: cut off (frozen by the drill)"))
            return future
        return super()._request(op, fields)
