"""Framing one direction of an IFSF TCP link by M_Lg, whatever the segments carry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ifsf import codec
from drivers.ifsf.codec import FramingLost, Malformed, Message
from drivers.ifsf.framing import StreamFramer
from tests.drivers.ifsf.frames import GOLDEN, h
from tests.drivers.ifsf.strategies import messages

STREAM = b"".join(g.wire for g in GOLDEN)
EXPECTED = [g.message for g in GOLDEN]
# A message framed by its M_Lg whose type (101) is not defined.
UNDEFINED_TYPE = h("01 03 02 01 00 BE 00 03 01 21 14")


def test_several_messages_in_one_segment() -> None:
    framer = StreamFramer()
    assert framer.feed(STREAM) == EXPECTED
    assert framer.pending == 0


def test_one_message_split_over_many_segments() -> None:
    wire = GOLDEN[3].wire
    framer = StreamFramer()
    assert framer.feed(wire[:3]) == []  # inside the header
    assert framer.feed(wire[3:9]) == []  # header complete, body not
    assert framer.pending == 9
    assert framer.feed(wire[9:]) == [GOLDEN[3].message]
    assert framer.pending == 0


def test_byte_by_byte() -> None:
    framer = StreamFramer()
    found: list[Message | Malformed] = []
    for byte in STREAM:
        found += framer.feed(bytes((byte,)))
    assert found == EXPECTED


def test_segments_that_end_and_start_mid_message() -> None:
    framer = StreamFramer()
    first, second = STREAM[: len(STREAM) // 2 + 3], STREAM[len(STREAM) // 2 + 3 :]
    assert framer.feed(first) + framer.feed(second) == EXPECTED


def test_a_framed_but_unreadable_message_is_reported_and_the_stream_goes_on() -> None:
    framer = StreamFramer()
    found = framer.feed(GOLDEN[0].wire + UNDEFINED_TYPE + GOLDEN[1].wire)
    assert found[0] == GOLDEN[0].message and found[2] == GOLDEN[1].message
    bad = found[1]
    assert isinstance(bad, Malformed) and bad.kind == "malformed" and bad.raw == UNDEFINED_TYPE
    assert "type 101 is not defined" in bad.reason


def test_an_oversize_m_lg_loses_the_stream_until_reset() -> None:
    framer = StreamFramer(max_length=100)
    garbage = b"GET / HTTP/1.1\r\n"  # M_Lg reads "HT": 0x4854
    with pytest.raises(FramingLost, match="M_Lg 18516 is above the longest message") as lost:
        framer.feed(GOLDEN[0].wire + garbage)
    assert lost.value.decoded == [GOLDEN[0].message]  # what came before is not lost
    assert lost.value.code == "framing_lost"
    assert framer.lost and framer.pending == 0
    with pytest.raises(FramingLost):
        framer.feed(GOLDEN[1].wire)  # nothing more is read from this stream
    framer.reset()
    assert framer.feed(GOLDEN[1].wire) == [GOLDEN[1].message]


def test_the_guard_is_tunable_up_to_what_m_lg_can_say() -> None:
    big = codec.encode(
        Message(
            GOLDEN[0].message.recipient,
            GOLDEN[0].message.originator,
            1,
            GOLDEN[0].message.database,
            codec.Write((codec.DataItem(0xC8, bytes(5000)),)),
        )
    )
    with pytest.raises(FramingLost):
        StreamFramer().feed(big)
    assert len(StreamFramer(max_length=codec.M_LG_LIMIT).feed(big)) == 1


def test_decode_all_of_a_capture() -> None:
    items = codec.decode_all(STREAM + UNDEFINED_TYPE + GOLDEN[0].wire[:5])
    assert items[: len(EXPECTED)] == EXPECTED
    assert [getattr(item, "kind", None) for item in items[len(EXPECTED) :]] == [
        "malformed",
        "truncated",
    ]
    unframeable = codec.decode_all(GOLDEN[0].wire + h("01 03 02 01 00 1E FF FF 01"))
    assert unframeable[0] == GOLDEN[0].message
    assert isinstance(unframeable[1], Malformed) and unframeable[1].kind == "unframeable"


@given(st.lists(messages(), min_size=1, max_size=5), st.data())
def test_any_messages_split_anywhere_come_back_in_order(
    sent: list[Message], data: st.DataObject
) -> None:
    stream = b"".join(codec.encode(message) for message in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = StreamFramer(max_length=codec.M_LG_LIMIT)
    found: list[Message | Malformed] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        found += framer.feed(stream[start:end])
    assert found == sent and framer.pending == 0
