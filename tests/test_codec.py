"""Frames and messages to and from bytes (docs/protocol.md, "Framing")."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from licmaster.wire.codec import FrameDecoder, FrameError, ReplyParts, decode_payload, encode, encode_many, join_arrays, packed_runs


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
    (struct.pack(">I", 3) + msgpack.packb({1: 2}), "map keys must be strings"),
    (struct.pack(">I", 3) + b"\x81\x80\x01", "not a MessagePack map"),  # a map as a key
    (struct.pack(">I", 5) + b"\xdd\xff\xff\xff\xff", "not a MessagePack map"),  # 4 billion items claimed, none there
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


# ---------------------------------------------------------------- lists that grow with the installation


def join(frames: list[dict]) -> dict:
    """What MasterClient does with a reply in parts."""
    first, *rest = frames
    if "parts" not in first:
        assert not rest
        return first
    joining = ReplyParts(first)
    whole = None
    for part in rest:
        assert whole is None
        whole = joining.add(part)
    assert whole is not None
    return whole


@settings(max_examples=80, deadline=None)
@given(leases=st.lists(st.dictionaries(st.sampled_from(["resource", "holder", "lease"]), st.text(max_size=300)), max_size=400),
       denied=st.lists(st.integers(-2**63, 2**63 - 1), max_size=50), limit=st.integers(4096, 20_000))
def test_a_reply_over_the_peers_frame_limit_comes_in_parts_that_join_into_it(leases: list, denied: list, limit: int) -> None:
    reply = {"id": 9, "ok": True, "epoch": 3, "leases": leases, "denied": denied, "released": 2}
    read = frames_of(encode_many([reply], limit), limit)  # a decoder that refuses any frame over the limit
    assert join(read) == reply


def test_a_reply_within_the_limit_stays_one_frame() -> None:
    reply = {"id": 1, "ok": True, "leases": [{"lease": "7"}] * 10}
    assert frames_of(encode_many([reply], 4096)) == [reply]


def test_parts_out_of_order_are_a_broken_stream() -> None:
    joining = ReplyParts({"id": 1, "ok": True, "leases": [], "parts": 3})
    with pytest.raises(FrameError):
        joining.add({"id": 1, "part": 2, "leases": [1]})
    with pytest.raises(FrameError):
        ReplyParts({"id": 1, "ok": True, "leases": [], "parts": 3}).add({"id": 1, "part": 1, "epoch": [1]})


@given(items=st.lists(st.text(max_size=200), max_size=500), limit=st.integers(2048, 9000))
def test_packed_runs_keep_every_item_in_order_and_each_run_within_the_limit(items: list, limit: int) -> None:
    runs = packed_runs(items, limit)
    assert all(len(packed) <= limit for _, packed in runs)
    assert [x for _, packed in runs for x in msgpack.unpackb(packed)] == items
    assert sum(n for n, _ in runs) == len(items)


WIRE_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=300) | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=20) | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=40), inner, max_size=8),
    max_leaves=60)


@given(WIRE_VALUES)
def test_what_the_master_packs_is_byte_for_byte_what_msgpacks_packer_gives(value: object) -> None:
    """codec packs with msgspec's encoder (a third of the cost): a peer cannot tell."""
    assert encode({"v": value})[4:] == msgpack.Packer(use_bin_type=True).pack({"v": value})


@given(st.lists(st.lists(st.tuples(st.floats(allow_nan=False), st.text(max_size=20), st.none()), max_size=40), max_size=6),
       st.sampled_from([0, 10, 70_000]))
def test_packed_arrays_join_into_the_array_of_all_their_items(runs: list[list[tuple]], padding: int) -> None:
    runs = [*runs, [(0.0, "x", None)] * padding]  # past 15 and past 65,535 items: each header size
    items = [item for run in runs for item in run]
    joined = join_arrays([msgpack.packb(run) for run in runs], len(items))
    assert joined == msgpack.packb(items)


@given(st.dictionaries(st.text(max_size=40), WIRE_VALUES, max_size=8))
def test_a_request_decodes_to_what_msgpacks_unpacker_gives(message: dict) -> None:
    """codec decodes with msgspec (it caches map keys: ~45% cheaper per request)."""
    packed = msgpack.packb(message, use_bin_type=True)
    assert msgpack.packb(decode_payload(packed), use_bin_type=True) == packed  # NaN != NaN: compared packed


@given(st.binary(max_size=64) | st.builds(lambda head, tail: head + tail, st.sampled_from([b"\x81", b"\x82\xa1a", b"\xdd", b"\x91" * 40]),
                                          st.binary(max_size=32)))
def test_any_bytes_are_a_map_or_a_frame_error_as_msgpacks_unpacker_decides(payload: bytes) -> None:
    try:
        strict = msgpack.unpackb(payload)
    except Exception:
        strict = FrameError
    try:
        got = decode_payload(payload)
    except FrameError:
        assert strict is FrameError or not isinstance(strict, dict) or any(k.__class__ is not str for k in strict)
        return
    assert isinstance(strict, dict) and got.keys() == strict.keys()


def test_a_value_nested_past_msgspecs_limit_is_decoded_as_msgpack_decodes_it() -> None:
    deep = b"\x81\xa1v" + b"\x91" * 1000 + b"\xc0"  # msgspec gives up at the recursion limit, msgpack at 1,024
    value = decode_payload(deep)["v"]
    for _ in range(1000):
        value = value[0]
    assert value is None
