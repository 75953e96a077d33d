"""Fuzz entries of the IFSF codec: TCP streams, single messages, heartbeats, data values,
encodings and typed builders.

Decoding entry points may raise only FrameError (FramingLost for a stream that cannot be
framed); builders and encoders only ValueError. What decodes must encode back to its bytes.
"""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from drivers.base import FrameError
from drivers.ifsf import codec
from drivers.ifsf import databases as db
from drivers.ifsf import encodings as enc
from drivers.ifsf.framing import StreamFramer
from drivers.ifsf.heartbeat import Heartbeat, decode_heartbeat, describe_heartbeat, encode_heartbeat
from tests.drivers.ifsf.frames import GOLDEN, HEARTBEAT_WIRE
from tests.drivers.ifsf.strategies import FIELDS, addresses, messages
from tests.fuzz.targets import (
    Entry,
    Refused,
    Target,
    attempt,
    edge_integers,
    json_able,
    mutated,
    repeated,
)

_GUARD = 600  # a small M_Lg guard, so that fuzzed streams reach FramingLost often

# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
_encoded = messages().map(codec.encode)
_specials = st.sampled_from(
    [b"\x00\x00", b"\xff\xff", b"\x00\x02", b"\x02\x58", b"\x02\x59", b"\xff", b"\x64\x00"]
)
_noise = st.one_of(st.binary(min_size=1, max_size=6), _specials)
captures = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.one_of(
            _encoded,
            st.sampled_from(GOLDEN).map(lambda golden: golden.wire),
            _encoded.flatmap(lambda wire: mutated(wire, _noise)),
            _encoded.flatmap(lambda wire: st.integers(1, len(wire)).map(lambda n: wire[:n])),
            _noise,
        ),
        max_size=8,
    ).map(b"".join),
)
# (bytes, whether to set M_Lg to what follows the header: so mutations reach the body)
single = st.tuples(st.one_of(_encoded, captures), st.booleans())
heartbeat_bytes = st.one_of(
    st.binary(max_size=14),
    st.binary(min_size=10, max_size=10).map(lambda w: w[:8] + b"\x01" + w[9:]),
)
# (DB_Ad bytes, data id, data): a known data id most of the time.
_known = st.sampled_from(FIELDS)
values = st.one_of(
    st.tuples(st.binary(max_size=9), st.integers(0, 0xFF), st.binary(max_size=20)),
    st.tuples(
        addresses.map(lambda address: address.wire),
        _known.map(lambda known: known[1]),
        st.binary(max_size=16),
    ),
)
_decimal_text = st.one_of(
    st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,9})?", fullmatch=True),
    st.sampled_from(["NaN", "sNaN", "Infinity", "-Infinity", "-0", "1E+999999999", "1E-999999"]),
)
_places = st.integers(-1, 20)
numbers = st.one_of(
    st.tuples(st.sampled_from(["bin", "bcd", "decimal", "ascii", "lna"]), st.binary(max_size=10)),
    st.tuples(st.just("encode_bin"), edge_integers, _places),
    st.tuples(st.just("encode_bcd"), edge_integers, _places),
    st.tuples(
        st.just("encode_decimal"), st.one_of(st.decimals(), _decimal_text.map(Decimal)), _places
    ),
    st.tuples(st.just("encode_ascii"), st.text(max_size=20), st.one_of(st.none(), _places)),
)
_ints = edge_integers


def _loose(build: Any, *args: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.tuples(st.just(build), st.tuples(*args))


_lna = st.builds(enc.Lna, st.integers(0, 255), st.integers(0, 255))
loose_items = st.one_of(
    _loose(enc.Lna, _ints, _ints),
    _loose(db.FuellingPoint, _ints),
    _loose(db.LogicalNozzle, _ints, _ints),
    _loose(db.TransactionBuffer, _ints, _ints, st.booleans()),
    _loose(db.ErrorEntry, _ints, _ints),
    _loose(db.Product, _ints),
    _loose(db.ProductPerMode, _ints, _ints),
    _loose(db.Meter, _ints),
    _loose(db.UnknownDatabase, st.binary(max_size=10)),
    _loose(db.nozzle_mask, st.lists(_ints, max_size=9)),
    _loose(codec.DataItem, _ints, st.binary(max_size=300), st.booleans()),
    _loose(codec.DataAck, _ints, _ints),
    _loose(codec.Read, st.lists(_ints, max_size=5).map(tuple)),
    _loose(codec.Ack, _ints),
    _loose(Heartbeat, st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address), _ints, _lna, _ints),
    _loose(codec.Message, _lna, _lna, _ints, addresses, st.just(codec.Read((0x14,))), _ints),
    # A typed value for any data id of any database: refused unless it fits.
    _loose(
        codec.item,
        addresses,
        st.integers(0, 0xFF),
        st.one_of(
            st.none(),
            _ints,
            st.decimals(),
            st.text(max_size=20),
            st.binary(max_size=12),
            _lna,
            st.lists(_lna, max_size=3).map(tuple),
        ),
    ),
)


big_streams = repeated(
    st.one_of(
        st.binary(min_size=1, max_size=8),
        st.sampled_from([b"\x00", b"\x00\x00\x00\x00\x00\x00\x00\x02\x01\x21"]),
        st.sampled_from(GOLDEN).map(lambda golden: golden.wire),
    )
)


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------
def _raw(item: codec.Message | codec.Malformed) -> bytes:
    return codec.encode(item) if isinstance(item, codec.Message) else item.raw


def check_stream(wire: bytes) -> None:
    """decode_all accounts for every byte once; a message encodes back to its bytes; the
    framer fed in pieces sees the same messages, up to a FramingLost where decode_all has an
    unframeable item."""
    items = codec.decode_all(wire, max_length=_GUARD)
    assert b"".join(map(_raw, items)) == wire
    for item in items:
        json_able(codec.describe(item))
        if isinstance(item, codec.Message):
            assert codec.decode_message(codec.encode(item)) == item
    framer = StreamFramer(max_length=_GUARD)
    seen: list[codec.Message | codec.Malformed] = []
    lost = False
    for start in range(0, len(wire), 7):
        try:
            seen += framer.feed(wire[start : start + 7])
        except codec.FramingLost as exc:
            seen += exc.decoded
            lost = True
            break
    tail_kinds = [item.kind for item in items if isinstance(item, codec.Malformed)]
    complete = [
        item for item in items if getattr(item, "kind", "") not in ("truncated", "unframeable")
    ]
    assert seen == complete
    assert lost == ("unframeable" in tail_kinds)


def check_big(wire: bytes) -> None:
    """A long stream in 4 KB reads through the framer: no slow path."""
    framer = StreamFramer()
    for start in range(0, len(wire), 4096):
        try:
            framer.feed(wire[start : start + 4096])
        except codec.FramingLost:
            framer.reset()
    codec.decode_all(wire, max_length=codec.M_LG_LIMIT)


def check_message(case: tuple[bytes, bool]) -> None:
    wire, fix = case
    if fix and len(wire) >= codec.HEADER_BYTES:
        wire = wire[:6] + (len(wire) - codec.HEADER_BYTES).to_bytes(2, "big")[-2:] + wire[8:]
        if len(wire) - codec.HEADER_BYTES > codec.M_LG_LIMIT:
            return
    message = attempt(FrameError, codec.decode_message, wire)
    if isinstance(message, Refused):
        return
    assert codec.encode(message) == wire
    json_able(codec.describe(message))


def check_heartbeat(wire: bytes) -> None:
    heartbeat = attempt(FrameError, decode_heartbeat, wire)
    if isinstance(heartbeat, Refused):
        return
    assert encode_heartbeat(heartbeat) == wire
    json_able(describe_heartbeat(heartbeat))


def check_value(case: tuple[bytes, int, bytes]) -> None:
    """Reading a data element raises only FrameError; what it reads writes back to a value
    read the same."""
    raw, data_id, data = case
    address = attempt(FrameError, db.parse_address, raw)
    if isinstance(address, Refused):
        assert not 1 <= len(raw) <= db.MAX_DB_AD_BYTES
        return
    assert address.wire == raw and db.parse_address(address.wire) == address
    json_able(db.describe_value(address, data_id, data))
    value = attempt(FrameError, db.decode_value, address, data_id, data)
    if not isinstance(value, Refused):
        again = db.encode_value(address, data_id, value)
        assert db.decode_value(address, data_id, again) == value
        # A field of no fixed width is written in the fewest bytes; at the same width, the
        # same bytes.
        if len(again) == len(data):
            assert again == data


def check_numbers(case: tuple[Any, ...]) -> None:
    match case:
        case ("bin", bytes() as data):
            value = attempt(FrameError, enc.decode_bin, data)
            if not isinstance(value, Refused):
                assert enc.encode_bin(value, len(data)) == data
        case ("bcd", bytes() as data):
            value = attempt(FrameError, enc.decode_bcd, data)
            if not isinstance(value, Refused):
                assert enc.encode_bcd(value, 2 * len(data)) == data
        case ("decimal", bytes() as data):
            number = attempt(FrameError, enc.decode_decimal, data)
            if not isinstance(number, Refused):
                assert enc.encode_decimal(number, 2 * (len(data) - 1)) == data
        case ("ascii", bytes() as data):
            text = attempt(FrameError, enc.decode_ascii, data)
            if not isinstance(text, Refused):
                assert enc.encode_ascii(text) == data
        case ("lna", bytes() as data):
            lna = attempt(FrameError, enc.decode_lna, data)
            if not isinstance(lna, Refused):
                assert lna.wire == data
        case ("encode_bin", int() as value, int() as size):
            wire = attempt(ValueError, enc.encode_bin, value, size)
            if not isinstance(wire, Refused):
                assert enc.decode_bin(wire, size) == value
        case ("encode_bcd", int() as value, int() as digits):
            wire = attempt(ValueError, enc.encode_bcd, value, digits)
            if not isinstance(wire, Refused):
                assert enc.decode_bcd(wire, digits) == value
        case ("encode_decimal", Decimal() as number, int() as digits):
            wire = attempt(ValueError, enc.encode_decimal, number, digits)
            if not isinstance(wire, Refused):
                assert enc.decode_decimal(wire, digits) == number
        case ("encode_ascii", str() as text, size):
            if isinstance(size, bool) or not (size is None or isinstance(size, int)):
                return
            wire = attempt(ValueError, enc.encode_ascii, text, size)
            if not isinstance(wire, Refused):
                assert enc.decode_ascii(wire).rstrip(" ") == text.rstrip(" ")


def check_item(case: tuple[Any, tuple[Any, ...]]) -> None:
    """Builders raise only ValueError; what they build encodes and reads back unchanged."""
    build, args = case
    built = attempt(ValueError, build, *args)
    if isinstance(built, Refused):
        return
    if isinstance(built, codec.Message):
        assert codec.decode_message(codec.encode(built)) == built
    elif isinstance(built, Heartbeat):
        assert decode_heartbeat(encode_heartbeat(built)) == built
    elif isinstance(built, codec.DataItem):
        carrier = codec.Message(enc.Lna(1, 1), enc.Lna(2, 1), 0, db.COM_SV, codec.Write((built,)))
        assert codec.decode_message(codec.encode(carrier)) == carrier
    elif isinstance(built, db.UnknownDatabase):
        # Bytes given as unknown may name a known database: they read back as that one.
        assert db.parse_address(built.wire).wire == built.wire
    elif hasattr(built, "wire") and hasattr(built, "database"):
        assert db.parse_address(built.wire) == built


TARGET = Target(
    "ifsf",
    (
        Entry(
            "stream",
            captures,
            check_stream,
            weight=4,
            seeds=[golden.wire for golden in GOLDEN] + [b"".join(g.wire for g in GOLDEN)],
        ),
        Entry(
            "message",
            single,
            check_message,
            weight=3,
            seeds=[(golden.wire, True) for golden in GOLDEN],
        ),
        Entry("heartbeat", heartbeat_bytes, check_heartbeat, seeds=[HEARTBEAT_WIRE]),
        Entry(
            "values",
            values,
            check_value,
            weight=2,
            # A temperature of no fixed width, 000600 with 4 places before the point, is
            # written back as 0600: the same value in fewer bytes.
            examples=[(b"!! B", 13, b"\x04\x00\x06\x00"), (b"\x21", 0x3B, bytes(3000))],
            seeds=[
                (golden.message.database.wire, data.data_id, data.data)
                for golden in GOLDEN
                if isinstance(golden.message.body, codec.Answer | codec.Write | codec.Unsolicited)
                for data in golden.message.body.items
            ],
        ),
        Entry(
            "numbers",
            numbers,
            check_numbers,
            # A width of 2**63 built a number of 2**66 bits (the run was killed for memory),
            # and 6000 BCD digits passed Python's int/str digit limit with a bare ValueError.
            examples=[
                ("encode_bin", 1, 2**63),
                ("encode_bcd", 1, 2**63),
                ("encode_decimal", Decimal(1), 2**63),
                ("encode_ascii", "a", 2**63),
                ("bcd", bytes(3000)),
                ("decimal", bytes(3000)),
                ("bin", bytes(3000)),
            ],
        ),
        Entry("items", loose_items, check_item),
        Entry("big", big_streams, check_big, big=100),
    ),
)
