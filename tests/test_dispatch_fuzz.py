"""Hypothesis-generated garbage fed to a real Master in this process, while a well-behaved PBX
keeps working. Nothing a client sends may raise out of request handling, corrupt the pool, or
disturb another session; every well-framed request is answered. In-process, so thousands of
cases run in seconds (the live-socket version of these is test_serve_fuzz.py)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from licmaster.testing import InProcessMaster
from licmaster.testing.harness import InProcessPeer
from licmaster.wire.requests import OPS

from .daemon import in_process
from .test_serve_fuzz import FIELDS, LICENSES, frames_of, json_like

# Every msgpack type, deep nesting (up to msgpack's own packing limit; deeper is in
# test_dispatch.py, built by hand) and huge sizes, in every field of every op.
deep = st.integers(1, 500).map(lambda depth: __import__("functools").reduce(lambda inner, _: [inner], range(depth), None))
huge = st.integers(1, 60_000).map(lambda n: "x" * n) | st.integers(1, 60_000).map(lambda n: b"\0" * n) \
    | st.integers(1, 5_000).map(lambda n: list(range(n))) | st.integers(1, 2_000).map(lambda n: {str(i): i for i in range(n)})
value = json_like | deep | huge | st.integers(-2**63, 2**64 - 1) | st.sampled_from(["port", "operator", "isdn", "bri", "pbx", 13, 0])
requests = st.fixed_dictionaries(
    {"op": st.sampled_from(sorted(OPS)) | value, "id": st.integers(-3, 2**64 + 3) | value},
    optional={f: value for f in [*FIELDS, "client_version", "stream", "interface"]},
)

GOOD_HELLO = {"node": "good", "role": "pbx", "firmware": 13, "platform": "gateway", "mac": "00:90:33:00:00:01",
              "licensing": "central"}
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))


def well_behaved_still_works(good: InProcessPeer, steady: str) -> None:
    reply = good.call("checkout", resource="port", holder="steady")
    assert reply["ok"] and reply["lease"] == steady, reply
    assert good.call("heartbeat")["ok"]
    usage = good.call("usage")
    assert "good" in [n["node"] for n in good.call("nodes")["nodes"]]
    for pool in usage["pools"]:
        assert 0 <= pool["in_use"] <= pool["installed"], pool


async def start(tmp_path: Path) -> tuple[InProcessMaster, InProcessPeer, str]:
    d = await in_process(tmp_path / "m", LICENSES, lease_ttl_ms=30_000, heartbeat_ms=1000)
    good = d.connect_now()
    assert good.call("hello", **GOOD_HELLO)["ok"]
    steady = good.call("checkout", resource="port", holder="steady")["lease"]
    return d, good, steady


async def fuzz(tmp_path: Path, test: Callable[[InProcessMaster, InProcessPeer, str], Callable[[], None]]) -> None:
    """Run a hypothesis test against one master, the well-behaved PBX checked after each case."""
    d, good, steady = await start(tmp_path)
    try:
        test(d, good, steady)()
    finally:
        await d.stop()


async def test_random_requests_are_each_answered(tmp_path: Path) -> None:
    await fuzz(tmp_path, random_requests)


async def test_random_bytes_and_frame_lengths_close_only_their_connection(tmp_path: Path) -> None:
    await fuzz(tmp_path, random_bytes)


def random_requests(d: InProcessMaster, good: InProcessPeer, steady: str) -> Callable[[], None]:
    @SETTINGS
    @given(say_hello=st.booleans(), batch=st.lists(requests, min_size=1, max_size=6))
    def one(say_hello: bool, batch: list[dict]) -> None:
        conn = d.connect_now()
        frames = frames_of(say_hello, batch)
        conn.send_bytes(b"".join(frames))
        conn.settle()
        replies = [m for m in conn.take() if "event" not in m]
        # every frame answered, in order, unless the connection was closed with a reason
        assert len(replies) == len(frames) or conn.transport.closed, (frames, replies)
        for reply in replies:
            assert isinstance(reply.get("ok"), bool), reply
            if reply["ok"] is False:
                assert isinstance(reply["error"], str) and isinstance(reply["message"], str), reply
                assert reply["error"] != "internal", reply
        conn.close()
        well_behaved_still_works(good, steady)

    return one


def random_bytes(d: InProcessMaster, good: InProcessPeer, steady: str) -> Callable[[], None]:
    @SETTINGS
    @given(data=st.binary(min_size=1, max_size=300) | st.builds(lambda n, t: struct.pack(">I", n) + t,
                                                                   st.integers(0, 2**32 - 1), st.binary(max_size=64)))
    def one(data: bytes) -> None:
        conn = d.connect_now()
        conn.send_bytes(data)
        conn.settle()
        for reply in conn.take():
            assert reply.get("ok") is False or "event" in reply, reply
        conn.close()
        well_behaved_still_works(good, steady)

    return one
