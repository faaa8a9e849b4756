"""Reply shapes: the pre-encoded frames decode to exactly the maps a plain encoding gives."""

from hypothesis import given
from hypothesis import strategies as st

from licmaster.wire.codec import FrameDecoder, encode_many
from licmaster.wire.replies import ReplyEncoder


class View:
    """What a lease took, as the model's TookView offers it to the encoder."""

    def __init__(self, wire: list) -> None:
        self.wire = wire


def frames_of(data: bytes, max_frame: int) -> list:
    return FrameDecoder(max_frame).feed(data)


@given(st.integers(0, 2**64 - 1), st.integers(1, 10**6), st.text(min_size=1, max_size=64),
       st.lists(st.fixed_dictionaries({"family": st.text(max_size=20), "version": st.none() | st.integers(0, 99),
                                       "count": st.integers(0, 10_000)}), max_size=3))
def test_pre_encoded_replies_are_whole_frames_of_the_plain_maps(rid: int, epoch: int, lease: str, took: list) -> None:
    replies = ReplyEncoder(epoch)
    ok, grant = replies.ok(rid), replies.grant(rid, lease, View(took))
    assert frames_of(ok, 1 << 20) == [{"id": rid, "ok": True, "epoch": epoch}]
    assert frames_of(grant, 1 << 20) == [{"id": rid, "ok": True, "epoch": epoch, "lease": lease, "took": took}]
    framed = encode_many([ok, {"id": rid, "ok": False}, grant])
    assert frames_of(framed, 1 << 20) == [{"id": rid, "ok": True, "epoch": epoch}, {"id": rid, "ok": False},
                                          {"id": rid, "ok": True, "epoch": epoch, "lease": lease, "took": took}]


def test_a_new_epoch_never_reuses_the_frames_of_the_old_one() -> None:
    """The grant prefix holds the epoch: it is cached per encoder, and a new epoch has a new one."""
    view = View([{"family": "PBX-Port", "version": 13, "count": 1}])
    before, after = ReplyEncoder(1).grant(7, "1", view), ReplyEncoder(2).grant(7, "1", view)
    assert frames_of(before, 1 << 20)[0]["epoch"] == 1
    assert frames_of(after, 1 << 20)[0]["epoch"] == 2
