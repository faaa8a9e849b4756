"""The shapes of replies: errors from denials, and the two replies that make up most traffic
encoded as whole frames. Pure."""

from __future__ import annotations

from typing import Any, Protocol

import msgpack

from licmaster.model.errors import BAD_FRAME, Denial
from licmaster.wire.codec import HEADER, Reply

_packer = msgpack.Packer(use_bin_type=True)
_pack_header = HEADER.pack


class TookWire(Protocol):
    """What a lease took, as the wire lists it (the model's TookView)."""

    @property
    def wire(self) -> list[dict[str, Any]]: ...


def error_reply(rid: int | None, denial: Denial) -> Reply:
    reply: dict[str, Any] = {"id": rid, "ok": False}
    reply.update(denial.to_wire())
    return reply


def broken_frame_reply(why: str) -> Reply:
    return {"id": None, "ok": False, "error": BAD_FRAME, "message": f"broken frame: {why}"}


class ReplyEncoder:
    """The two replies that make up most traffic, as whole frames, without building a dict.

    `ok(rid)` is `{"ok": true, "epoch": E, "id": rid}` and `grant(...)` is
    `{"ok": true, "epoch": E, "took": [...], "lease": L, "id": rid}`: the constant parts are
    packed once (the epoch is fixed for a master's run, a `took` list is shared by every lease
    of its kind), the variable ones with msgpack's own packer. Decodes to the same maps as
    `encode` would give (tested).
    """

    __slots__ = ("_grant_head", "_ok_frames", "_prefixes")

    def __init__(self, epoch: int) -> None:
        pack = _packer.pack
        common = pack("ok") + pack(True) + pack("epoch") + pack(epoch)
        ok_head = b"\x83" + common + pack("id")
        # An id packs into 1, 2, 3, 5 or 9 bytes: the frame up to the id, for each of those sizes.
        self._ok_frames: dict[int, bytes] = {size: _pack_header(len(ok_head) + size) + ok_head for size in (1, 2, 3, 5, 9)}
        self._grant_head = b"\x85" + common + pack("took")
        # The grant frame up to the lease id, per `took` view (the model shares one view among
        # every lease of a kind); kept here, with the epoch it contains, not in the model.
        self._prefixes: dict[Any, bytes] = {}

    def ok(self, rid: int) -> bytes:
        packed: bytes = _packer.pack(rid)
        return self._ok_frames[len(packed)] + packed

    def grant(self, rid: int, lease: str, view: TookWire) -> bytes:
        """A grant of `lease`, which took what `view.wire` lists."""
        try:  # a subscript, not .get(): no method call on the path every grant takes
            prefix = self._prefixes[view]
        except KeyError:
            if len(self._prefixes) > 4096:
                self._prefixes.clear()
            prefix = self._prefixes[view] = self._grant_head + _packer.pack(view.wire) + _LEASE_KEY
        pack = _packer.pack
        payload = b"".join((prefix, pack(lease), _ID_KEY, pack(rid)))
        return _pack_header(len(payload)) + payload


_LEASE_KEY = _packer.pack("lease")
_ID_KEY = _packer.pack("id")


