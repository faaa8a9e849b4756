"""The dashboard's feed: a browser that falls behind is dropped, and its stream ends."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from licmaster.daemon.console.live import Live


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
