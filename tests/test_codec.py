"""Frames and messages to and from bytes (docs/protocol.md, "Framing")."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from licmaster.wire.codec import FrameDecoder, FrameError, decode_payload, encode, encode_many


def frames_of(data: bytes, max_frame: int = 65536) -> list[dict]:
    return FrameDecoder(max_frame).feed(data)


def test_a_frame_is_a_length_then_one_map() -> None:
    data = encode({"op": "heartbeat", "id": 7})
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    assert frames_of(data) == [{"op": "heartbeat", "id": 7}]


@given(st.lists(st.dictionaries(st.text(max_size=8), st.integers(-2**63, 2**64 - 1) | st.text(max_size=8), max_size=5), max_size=8),
       st.integers(1, 50))
def test_any_split_of_the_stream_gives_the_same_messages(messages: list[dict], chunk: int) -> None:
    stream = encode_many(messages)
    decoder = FrameDecoder()
    out: list[dict] = []
    for i in range(0, len(stream), chunk):
        out += decoder.feed(stream[i:i + chunk])
    assert out == messages and decoder.pending == 0


@pytest.mark.parametrize(("data", "says"), [
    (struct.pack(">I", 0), "outside 1..65536"),
    (struct.pack(">I", 65537), "outside 1..65536"),
    (struct.pack(">I", 1) + b"\xc1", "not a MessagePack map"),
    (struct.pack(">I", 2) + msgpack.packb([1]), "must hold a map"),
    (struct.pack(">I", 3) + msgpack.packb({}) + b"\x01\x02", "trailing bytes"),
    (struct.pack(">I", 3) + msgpack.packb({1: 2}), "not a MessagePack map"),
])
def test_broken_frames_are_named(data: bytes, says: str) -> None:
    with pytest.raises(FrameError, match=says):
        frames_of(data)


def test_messages_before_a_broken_frame_are_kept() -> None:
    good = encode({"id": 1, "op": "heartbeat"})
    with pytest.raises(FrameError) as err:
        frames_of(good + struct.pack(">I", 0))
    assert err.value.decoded == [{"id": 1, "op": "heartbeat"}]  # type: ignore[attr-defined]


def test_the_decoder_holds_at_most_one_partial_frame() -> None:
    decoder = FrameDecoder(100)
    decoder.feed(struct.pack(">I", 100) + b"\x80" * 50)
    assert decoder.pending == 54


@pytest.mark.parametrize("keys", [{b"op": 1}, {"op": "heartbeat", b"id": 1}])
def test_non_string_keys_are_refused(keys: dict) -> None:
    payload = msgpack.packb(keys, use_bin_type=True)
    with pytest.raises(FrameError, match="keys must be strings"):
        decode_payload(payload)
    with pytest.raises(FrameError, match="keys must be strings"):
        frames_of(struct.pack(">I", len(payload)) + payload)


def test_a_frame_completed_by_a_later_read_leaves_nothing_pending() -> None:
    decoder, frame = FrameDecoder(), encode({"id": 1, "op": "heartbeat"})
    assert decoder.feed(frame[:3]) == [] and decoder.pending == 3
    assert decoder.feed(frame[3:]) == [{"id": 1, "op": "heartbeat"}] and decoder.pending == 0
    assert decoder.feed(frame) == [{"id": 1, "op": "heartbeat"}] and decoder.pending == 0
