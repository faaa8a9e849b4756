"""Hypothesis-generated garbage against a live `licmaster serve` over a real socket, while a
well-behaved PBX keeps working. Nothing a client sends may crash the daemon, corrupt the pool, or
disturb another session. The many-case version runs in-process (test_dispatch_fuzz.py); this
one keeps the real socket and process honest with fewer cases."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from licmaster.wire.codec import FrameDecoder, encode
from licmaster.wire.requests import OPS

from .daemon import Daemon

LICENSES = '[[license]]\ntype = "PBX-Port13"\ncount = 5\n[[license]]\ntype = "PBX-Channels13"\ncount = 5\n' \
           '[[license]]\ntype = "App(phone)13"\ncount = 3\n[[license]]\ntype = "PBX-Standby13"\ncount = 5\n'


class Blocking:
    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=5)
        self.decoder = FrameDecoder(1 << 24)
        self.inbox: list[dict] = []
        self.ids = 0

    def request(self, op: str, **fields) -> dict:
        self.ids += 1
        self.sock.sendall(encode({"op": op, "id": self.ids, **fields}))
        while True:
            while not self.inbox:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                self.inbox += self.decoder.feed(data)
            reply = self.inbox.pop(0)
            if reply.get("id") == self.ids:
                return reply

    def drain(self, until_id: int | None = None) -> list[dict]:
        """Everything the master answers until it closes, answers `until_id`, or goes quiet for a moment."""
        self.sock.settimeout(0.3)
        try:
            while not any(m.get("id") == until_id for m in self.inbox) or until_id is None:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.inbox += self.decoder.feed(data)
        except (TimeoutError, ConnectionError, OSError):
            pass
        return self.inbox

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    d = Daemon(tmp_path_factory.mktemp("fuzz"), LICENSES, lease_ttl_ms=30_000, heartbeat_ms=1000).start()
    good = Blocking(d.address)
    assert good.request("hello", node="good", role="pbx", firmware=13, platform="gateway",
                        mac="00:90:33:00:00:01", licensing="central")["ok"]
    steady = good.request("checkout", resource="port", holder="steady")
    assert steady["ok"]
    good.steady = steady["lease"]  # type: ignore[attr-defined]
    yield d, good
    good.close()
    d.stop()


def well_behaved_still_works(good: Blocking) -> None:
    """The good session keeps its lease (fuzzed sessions may take the rest) and is answered."""
    reply = good.request("checkout", resource="port", holder="steady")
    assert reply["ok"] and reply["lease"] == good.steady, reply  # type: ignore[attr-defined]
    assert good.request("heartbeat")["ok"]
    usage = good.request("usage")
    assert "good" in [n["node"] for n in good.request("nodes")["nodes"]]
    for pool in usage["pools"]:
        assert 0 <= pool["in_use"] <= pool["installed"], pool


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["node", "role", "firmware", "platform", "mac", "licensing", "model", "standby_for", "auth", "resource",
          "holder", "count", "interface", "lease", "leases", "failed", "user", "families", "v"]
requests = st.fixed_dictionaries(
    {"op": st.sampled_from(sorted(OPS)) | st.text(max_size=8) | json_like, "id": st.integers(-3, 2**64 + 3) | json_like},
    optional={f: (json_like | st.sampled_from(["port", "pbx", "standby", "gateway", "ipva", "central", "bri", "App(phone)", 13, 1]))
              for f in FIELDS},
)
SENTINEL = 2**64 - 1
HELLO = {"op": "hello", "id": 0, "node": "fuzzy", "role": "pbx", "firmware": 13, "platform": "gateway",
         "mac": "00:90:33:00:00:02", "licensing": "central"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=300))
def test_random_bytes(live, data: bytes) -> None:
    daemon, good = live
    conn = Blocking(daemon.address)
    try:
        conn.sock.sendall(data)
    except OSError:
        pass
    for reply in conn.drain():
        assert reply.get("ok") is False or "event" in reply, reply
    conn.close()
    well_behaved_still_works(good)


def frames_of(say_hello: bool, batch: list[dict]) -> list[bytes]:
    """The frames of a generated batch (a hello first, if asked); messages msgpack cannot
    encode (integers out of range, say) are left out."""
    frames = [encode(HELLO)] if say_hello else []
    for message in batch:
        try:
            frames.append(encode(message))
        except (TypeError, ValueError, OverflowError):
            continue
    return frames


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(say_hello=st.booleans(), batch=st.lists(requests, min_size=1, max_size=6))
def test_random_requests(live, say_hello: bool, batch: list[dict]) -> None:
    daemon, good = live
    conn = Blocking(daemon.address)
    frames = frames_of(say_hello, batch)
    frames.append(encode({"op": "heartbeat", "id": SENTINEL}))  # answered last: no waiting for quiet
    try:
        conn.sock.sendall(b"".join(frames))
    except OSError:
        pass
    replies = conn.drain(until_id=SENTINEL)
    for reply in replies:
        assert "event" in reply or isinstance(reply.get("ok"), bool), reply
        if reply.get("ok") is False:
            assert isinstance(reply["error"], str) and isinstance(reply["message"], str) and reply["error"] != "internal", reply
    conn.close()
    well_behaved_still_works(good)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.integers(0, 2**32 - 1), tail=st.binary(max_size=64))
def test_random_frame_lengths(live, length: int, tail: bytes) -> None:
    daemon, good = live
    conn = Blocking(daemon.address)
    try:
        conn.sock.sendall(struct.pack(">I", length) + tail)
    except OSError:
        pass
    conn.drain()
    conn.close()
    well_behaved_still_works(good)


def test_the_daemon_is_still_up_and_logged_no_internal_error(live) -> None:
    daemon, good = live
    well_behaved_still_works(good)
    assert "internal_error" not in daemon.log
