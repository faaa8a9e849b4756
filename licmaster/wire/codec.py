"""Frames and messages to and from bytes (docs/protocol.md, "Framing"). Pure: no sockets.

A frame is a 4-byte unsigned big-endian length L, then L bytes holding exactly one MessagePack
map with string keys, 1 <= L <= max_frame.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

DEFAULT_MAX_FRAME = 65_536
HEADER = struct.Struct(">I")
_HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack


class FrameError(ValueError):
    """The byte stream is broken: the connection cannot go on (answer `bad_frame`, close).
    `decoded` holds the messages of the same read that came before the break."""

    decoded: list[dict[str, Any]] = []


_packer = msgpack.Packer(use_bin_type=True)


def encode(message: dict[str, Any]) -> bytes:
    """One frame holding `message`."""
    payload: bytes = _packer.pack(message)
    return _pack_header(len(payload)) + payload


Reply = dict[str, Any] | bytes  # a map, or a whole frame already encoded (wire/replies.py)


def encode_many(messages: list[Reply]) -> bytes:
    """Frames for several messages, joined: one write for a batch of replies. A message may be
    a map, or a whole frame already encoded (see replies.ReplyEncoder)."""
    pack = _packer.pack
    parts = []
    for message in messages:
        if message.__class__ is bytes:
            parts.append(message)
        else:
            payload = pack(message)
            parts.append(_pack_header(len(payload)))
            parts.append(payload)
    return b"".join(parts)


_unpackb = msgpack.unpackb  # msgpack >= 1.0 defaults: raw=False, strict_map_key=True, use_list=True


def decode_payload(payload: bytes | memoryview) -> dict[str, Any]:
    """Exactly one MessagePack map with string keys, or FrameError saying what is wrong.
    (The one implementation is `FrameDecoder.feed`'s loop, where it runs for every request.)"""
    data = bytes(payload)
    return FrameDecoder(max(len(data), 1)).feed(_pack_header(len(data)) + data)[0]


def _not_a_map(exc: Exception) -> FrameError:
    if isinstance(exc, msgpack.ExtraData):
        return FrameError("trailing bytes after the MessagePack map")
    # FormatError, StackError, bad UTF-8, unhashable map key, ...
    return FrameError(f"not a MessagePack map: {exc.__class__.__name__}")


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
                except Exception as exc:
                    raise _not_a_map(exc) from None
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
