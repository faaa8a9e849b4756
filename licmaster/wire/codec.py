"""Frames and messages to and from bytes (docs/protocol.md, "Framing"). Pure: no sockets.

A frame is a 4-byte unsigned big-endian length L, then L bytes holding exactly one MessagePack
map with string keys, 1 <= L <= max_frame.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgpack
import msgspec

DEFAULT_MAX_FRAME = 65_536
HEADER = struct.Struct(">I")
_HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack


class FrameError(ValueError):
    """The byte stream is broken: the connection cannot go on (answer `bad_frame`, close).
    `decoded` holds the messages of the same read that came before the break."""

    decoded: list[dict[str, Any]] = []


_packer = msgpack.Packer(use_bin_type=True)  # headers (pack_map_header) and the replies' constant parts
# Packing: msgspec's encoder gives the same bytes as msgpack's packer (tested) at a third of the
# cost on our rows (a 7-field journal row: ~760 CPU instructions against ~2,750), which is what a
# push to the standby packs for every grant (daemon/ha/feed.py).
_pack = msgspec.msgpack.Encoder().encode


def encode(message: dict[str, Any]) -> bytes:
    """One frame holding `message`."""
    payload = _pack(message)
    return _pack_header(len(payload)) + payload


Reply = dict[str, Any] | bytes  # a map, or a whole frame already encoded (wire/replies.py)


def encode_many(messages: list[Reply], limit: int = DEFAULT_MAX_FRAME) -> bytes:
    """Frames for several messages, joined: one write for a batch of replies. A message may be
    a map, or a whole frame already encoded (see replies.ReplyEncoder). A map that packs into
    more than `limit` bytes (the peer's max_frame) goes out in parts (`split_reply`)."""
    pack = _pack
    parts = []
    for message in messages:
        if message.__class__ is bytes:
            parts.append(message)
        else:
            payload = pack(message)
            if len(payload) > limit:
                parts.append(split_reply(message, limit))  # type: ignore[arg-type]
                continue
            parts.append(_pack_header(len(payload)))
            parts.append(payload)
    return b"".join(parts)


PART_MARGIN = 256  # bytes of a part's frame that are not its rows (its other keys, the header): replies and the replica stream


def split_reply(message: dict[str, Any], limit: int) -> bytes:
    """A reply too large for one frame, as `parts` frames of at most `limit` bytes each: the first
    holds every field, its top-level lists empty, and `parts`; each further one holds `id`, `part`
    (1 to parts - 1) and the next run of one list's items, lists in order. The client joins them
    (MasterClient) into the reply `encode` would have sent whole. Only top-level lists are cut:
    every other field is bounded by the protocol."""
    lists = {key: value for key, value in message.items() if value.__class__ is list}
    runs = [(key, packed) for key, value in lists.items() for _, packed in packed_runs(value, limit - PART_MARGIN)]
    first = {**message, **{key: [] for key in lists}, "parts": len(runs) + 1}
    frames = [encode(first)]
    rid = message.get("id")
    frames += [frame_with({"id": rid, "part": i}, key, packed) for i, (key, packed) in enumerate(runs, 1)]
    return b"".join(frames)


class ReplyParts:
    """The client's side of `split_reply`: feed each frame of a reply in parts; `add` answers the
    whole reply once its last part came, None before. A part out of order is a FrameError."""

    __slots__ = ("message", "next", "parts")

    def __init__(self, first: dict[str, Any]) -> None:
        self.parts = first.pop("parts")
        self.message = first
        self.next = 1

    def add(self, part: dict[str, Any]) -> dict[str, Any] | None:
        if part.get("part") != self.next:
            raise FrameError(f"reply part {str(part.get('part'))[:16]} where part {self.next} of {self.parts} was due")
        for key, value in part.items():
            if key not in ("id", "part"):
                target = self.message.get(key)
                if target.__class__ is not list or value.__class__ is not list:
                    raise FrameError(f"reply part {self.next}: {key[:32]} is not a list of the reply")
                target.extend(value)
        self.next += 1
        return self.message if self.next >= self.parts else None


def packed_runs(items: Sequence[Any], limit: int) -> list[tuple[int, bytes]]:
    """`items` cut into consecutive runs, each packed as a MessagePack array of at most `limit`
    bytes: (how many items, the packed array). How a list that grows with the installation
    (a snapshot, a journal batch) crosses the wire in frames of a bounded size.

    The run length is guessed from the first items' size and checked on the packed run; a run
    over the limit is halved until it fits. One item that alone is over the limit raises
    ValueError: the caller's bounds on an item must keep it well under any frame.
    """
    pack = _pack
    runs: list[tuple[int, bytes]] = []
    if not items:
        return runs
    if len(items) <= 256:  # the common case (a read's rows, a small batch): packed once, if it fits
        packed: bytes = pack(items)
        if len(packed) <= limit:
            return [(len(items), packed)]
    sample = items[:256]
    per_item = max(1, len(pack(sample)) // len(sample))
    step = max(1, (limit * 3 // 4) // per_item)
    todo: list[tuple[int, int]] = [(start, min(start + step, len(items))) for start in range(0, len(items), step)]
    todo.reverse()
    while todo:
        start, stop = todo.pop()
        packed = pack(items[start:stop])
        if len(packed) <= limit:
            runs.append((stop - start, packed))
        elif stop - start == 1:
            raise ValueError(f"one item packs into {len(packed)} bytes, over the limit of {limit}")
        else:
            middle = (start + stop) // 2
            todo += [(middle, stop), (start, middle)]  # the first half next: runs stay in order
    return runs


def join_arrays(arrays: list[bytes], count: int) -> bytes:
    """MessagePack arrays (as packed_runs gives them) joined into one array of their `count`
    items in order, without unpacking them: the same bytes as packing the items at once."""
    parts = [_array_header(count)]
    for packed in arrays:
        first = packed[0]
        parts.append(packed[1:] if first & 0xF0 == 0x90 else packed[3:] if first == 0xDC else packed[5:])
    return b"".join(parts)


def _array_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x90 | count,))
    return b"\xdc" + count.to_bytes(2, "big") if count < 65_536 else b"\xdd" + count.to_bytes(4, "big")


def frame_with(head: dict[str, Any], key: str, packed_value: bytes) -> bytes:
    """One frame holding `head` and `key` = a value already packed (packed_runs): the same bytes
    `encode({**head, key: value})` gives, without packing the value twice."""
    pack = _pack
    parts = [_packer.pack_map_header(len(head) + 1)]
    for name, value in head.items():
        parts.append(pack(name))
        parts.append(pack(value))
    parts.append(pack(key))
    parts.append(packed_value)
    payload = b"".join(parts)
    return _pack_header(len(payload)) + payload


# msgspec's decoder: ~3,900 CPU instructions for a 4-key request where msgpack's unpackb took
# ~7,100 (it caches map keys), and no allocation bigger than the bytes it was given (a length
# that claims more than is there is "truncated" before anything is allocated). Keys of other
# types than str come back as they are: the loop below refuses them. What it cannot decode is
# decoded again by msgpack's unpacker, which decides: the contract stays msgpack's, e.g. a value
# nested a thousand deep (past msgspec's recursion limit) is a bad request, not a broken stream.
_unpackb = msgspec.msgpack.Decoder().decode
_unpackb_strict = msgpack.unpackb  # msgpack >= 1.0 defaults: raw=False, strict_map_key=True, use_list=True


def decode_payload(payload: bytes | memoryview) -> dict[str, Any]:
    """Exactly one MessagePack map with string keys, or FrameError saying what is wrong.
    (The one implementation is `FrameDecoder.feed`'s loop, where it runs for every request.)"""
    data = bytes(payload)
    return FrameDecoder(max(len(data), 1)).feed(_pack_header(len(data)) + data)[0]


def _decode_strictly(payload: memoryview) -> Any:
    """What msgspec could not decode, as msgpack's unpacker decodes it, or the FrameError naming why not."""
    try:
        return _unpackb_strict(payload)
    except Exception as exc:
        if isinstance(exc, msgpack.ExtraData):
            raise FrameError("trailing bytes after the MessagePack map") from None
        # FormatError, StackError, bad UTF-8, unhashable map key, ...
        raise FrameError(f"not a MessagePack map: {exc.__class__.__name__}") from None


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole messages out.

    Holds at most one partial frame (<= max_frame + 4 bytes), so a client cannot grow the
    server's memory by sending.
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Every whole message in the bytes so far. Raises FrameError at the first broken frame;
        the messages before it are in `FrameError.decoded`."""
        buf = self._buf
        if buf:
            buf += data
            view = memoryview(buf)
        else:
            view = memoryview(data)
        messages: list[dict[str, Any]] = []
        append = messages.append
        pos, end, max_frame = 0, len(view), self.max_frame
        try:
            # Every request passes here (100,000 a second): the decoding is inline, not a call.
            while end - pos >= _HEADER_SIZE:
                (length,) = _unpack_header(view, pos)
                if length == 0 or length > max_frame:
                    raise FrameError(f"frame length {length} outside 1..{max_frame}")
                stop = pos + _HEADER_SIZE + length
                if stop > end:
                    break
                try:
                    message = _unpackb(view[pos + _HEADER_SIZE:stop])
                except Exception:
                    message = _decode_strictly(view[pos + _HEADER_SIZE:stop])
                if message.__class__ is not dict:
                    raise FrameError(f"a frame must hold a map, not {type(message).__name__}")
                for key in message:
                    if key.__class__ is not str:  # strict_map_key lets bytes keys through
                        raise FrameError("map keys must be strings")
                append(message)
                pos = stop
        except FrameError as exc:
            exc.decoded = messages
            view.release()
            self._buf = bytearray()
            raise
        if pos == end:
            view.release()
            if buf:
                buf.clear()
        else:
            rest = bytes(view[pos:])
            view.release()
            self._buf = bytearray(rest)
        return messages

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame waiting for the rest."""
        return len(self._buf)
