"""Fuzz entries of the Wayne DART codec: line bytes, transactions, typed items, numbers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from drivers.wayne_dart import codec
from drivers.wayne_dart.codec import DCC, DLE, ETX, SF, Frame, FrameKind, Malformed, Transaction
from tests.drivers.wayne_dart.frames import GOLDEN, TYPED
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

# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
addresses = st.integers(codec.ADDRESS_MIN, codec.ADDRESS_MAX)
_byte = st.integers(0, 0xFF)
_bcd_byte = st.integers(0, 99).map(lambda n: int(f"{n:02d}", 16))
# Data that is mostly BCD (so typed parsers get far) with some bytes that are not.
_data = st.one_of(
    st.binary(max_size=60),
    st.lists(st.one_of(_bcd_byte, _byte), max_size=60).map(bytes),
    st.sampled_from([b"", b"\xfa", b"\x10\xfa", b"\x99" * 50, b"\xff" * 16]),
)
_trans = st.one_of(st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x05, 0x07, 0x09, 0x65, 0x67]), _byte)
transactions = st.builds(Transaction, _trans, _data.map(lambda data: data[:255]))
# What check_transaction takes: TRANS and data, which it turns into a Transaction itself.
raw_transactions = st.tuples(_trans, _data)

_bcd3, _bcd4, _bcd5 = (st.integers(0, 10 ** (2 * n) - 1) for n in (3, 4, 5))
typed_items = st.one_of(
    st.builds(codec.Command, st.sampled_from(DCC)),
    st.builds(
        codec.AllowedNozzles, st.lists(st.integers(1, 15), min_size=1, max_size=15).map(tuple)
    ),
    st.builds(codec.PresetVolume, _bcd4),
    st.builds(codec.PresetAmount, _bcd4),
    st.builds(codec.PriceUpdate, st.lists(_bcd3, min_size=1, max_size=85).map(tuple)),
    st.builds(codec.RequestTotals, _byte),
    st.builds(codec.PumpStatus, _byte),
    st.builds(codec.FilledVolumeAmount, _bcd4, _bcd4),
    st.builds(codec.NozzleStatus, _bcd3, st.integers(0, 15), st.booleans()),
    st.builds(codec.Alarm, _byte),
    st.builds(
        codec.PumpParameters,
        st.integers(0, 9),
        st.integers(0, 9),
        st.integers(0, 9),
        _bcd4,
        st.lists(_byte, max_size=15).map(tuple),
    ),
    st.builds(codec.PumpIdentity, st.text("0123456789", min_size=10, max_size=10)),
    st.builds(codec.TotalCounters, _byte, _bcd5, _bcd5, _bcd5),
    st.builds(codec.Prices, st.lists(_bcd3, min_size=1, max_size=85).map(tuple)),
)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    kind = draw(st.sampled_from(FrameKind))
    address = draw(addresses)
    if kind is FrameKind.POLL:
        return codec.poll(address)
    seq = draw(st.integers(0, 15))
    if kind is not FrameKind.DATA:
        return Frame(address, kind, seq)
    items = draw(st.lists(st.one_of(typed_items, transactions), max_size=4))
    txs = [item.to_transaction() for item in items]
    while sum(2 + len(tx.data) for tx in txs) > 255:
        txs.pop()
    return Frame(address, kind, seq, tuple(txs))


_specials = st.sampled_from(
    [bytes((SF,)), bytes((DLE,)), bytes((DLE, SF)), bytes((ETX, SF)), b"\x50", b"\x6f\x20"]
)
_noise = st.one_of(st.binary(min_size=1, max_size=6), _specials)
_encoded = frames().map(codec.encode)
# Random bytes rarely hold a frame: captures mix real frames, damaged ones, pieces and noise.
captures = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.one_of(
            _encoded,
            _encoded.flatmap(lambda wire: mutated(wire, _noise)),
            _encoded.flatmap(lambda wire: st.integers(1, len(wire)).map(lambda n: wire[:n])),
            _noise,
        ),
        max_size=10,
    ).map(b"".join),
    # A data frame with no SF for longer than the reader's guard.
    st.integers(codec.MAX_FRAME_BYTES - 2, codec.MAX_FRAME_BYTES + 2).map(
        lambda n: b"\x50\x30" + b"\x00" * n
    ),
)

_decimal_text = st.one_of(
    st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{1,30})?([eE][-+]?[0-9]{1,9})?", fullmatch=True),
    st.sampled_from(["NaN", "sNaN", "Infinity", "-Infinity", "-0", "1E+999999999", "1E-999999999"]),
)
decimals = st.one_of(st.decimals(), _decimal_text.map(Decimal))
numbers = st.one_of(
    st.tuples(st.just("bcd_decode"), st.binary(max_size=12)),
    st.tuples(st.just("bcd_encode"), edge_integers, st.integers(-1, 12)),
    st.tuples(st.just("to_decimal"), edge_integers, st.integers(-1, 12)),
    st.tuples(st.just("from_decimal"), decimals, st.integers(-1, 12)),
)
# Typed items built from any integers: a value the wire cannot carry must be refused.
_ints = edge_integers


def _loose(build: Any, *args: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.tuples(st.just(build), st.tuples(*args))


loose_items = st.one_of(
    _loose(codec.Transaction, _ints, st.binary(max_size=300)),
    _loose(codec.AllowedNozzles, st.lists(_ints, max_size=16).map(tuple)),
    _loose(codec.PresetVolume, _ints),
    _loose(codec.PresetAmount, _ints),
    _loose(codec.PriceUpdate, st.lists(_ints, max_size=90).map(tuple)),
    _loose(codec.RequestTotals, _ints),
    _loose(codec.PumpStatus, _ints),
    _loose(codec.FilledVolumeAmount, _ints, _ints),
    _loose(codec.NozzleStatus, _ints, _ints, st.booleans()),
    _loose(codec.Alarm, _ints),
    _loose(
        codec.PumpParameters, _ints, _ints, _ints, _ints, st.lists(_ints, max_size=16).map(tuple)
    ),
    _loose(codec.PumpIdentity, st.text(max_size=12)),
    _loose(codec.TotalCounters, _ints, _ints, _ints, _ints),
    _loose(codec.Prices, st.lists(_ints, max_size=90).map(tuple)),
    _loose(Frame, _ints, st.sampled_from(FrameKind), _ints),
    _loose(codec.data, _ints, _ints, typed_items),
)


# Long lines: one token repeated up to 64 KB (frame starts without an SF, escapes, SFs).
big_lines = repeated(
    st.one_of(
        st.binary(min_size=1, max_size=8),
        st.sampled_from([b"\x50", b"\x50\x30", b"\xfa", b"\x10", b"\x10\xfa", b"\x50\x20\xfa"]),
        st.sampled_from(GOLDEN).map(lambda golden: golden.wire),
    )
)


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------
def _raw(item: Frame | Malformed) -> bytes:
    return codec.encode(item) if isinstance(item, Frame) else item.raw


def check_line(wire: bytes) -> None:
    """decode / decode_all / describe never raise; every byte is in exactly one item; a
    decoded frame encodes back to the same bytes; a driver's chunked reading sees the same."""
    items = codec.decode_all(wire)
    assert b"".join(map(_raw, items)) == wire
    used, first = codec.decode(wire)
    if first is not None:
        assert first == items[0] and used == len(_raw(first))
    for item in items:
        for direction in ("controller", "pump", None):
            json_able(codec.describe(item, direction))  # type: ignore[arg-type]
        if isinstance(item, Frame):
            encoded = codec.encode(item)
            assert codec.decode(encoded) == (len(encoded), item)
            for tx in item.transactions:
                check_transaction(tx)


def check_stream(wire: bytes) -> None:
    """What a line master does with a long stream, in 4 KB reads: every byte in one item."""
    buffer, accounted = bytearray(), 0
    for start in range(0, len(wire), 4096):
        buffer += wire[start : start + 4096]
        while True:
            used, item = codec.decode(buffer)
            if used == 0:
                break
            assert item is not None
            accounted += len(_raw(item))
            del buffer[:used]
    accounted += sum(len(_raw(item)) for item in codec.decode_all(buffer))
    assert accounted == len(wire)


def check_raw_transaction(case: tuple[int, bytes]) -> None:
    tx = attempt(ValueError, Transaction, *case)
    if not isinstance(tx, Refused):
        check_transaction(tx)


def check_transaction(tx: Transaction) -> None:
    """parse_command / parse_reply / describe_transaction never raise; what they read
    encodes back to a transaction they read the same way."""
    for parse, direction in ((codec.parse_command, "controller"), (codec.parse_reply, "pump")):
        parsed = parse(tx)
        json_able(codec.describe_transaction(tx, direction))  # type: ignore[arg-type]
        if not isinstance(parsed, codec.UnknownTransaction):
            assert parse(parsed.to_transaction()) == parsed


_PLACES = range(-1, 21)  # decimal places and BCD widths a program passes (-1: refused)


def check_numbers(case: tuple[Any, ...]) -> None:
    """BCD and decimal scaling raise only ValueError, and invert each other.

    The numbers are data; the decimal places and BCD widths come from the program (DC7
    gives 0-9 places, fields are 1-5 bytes) and stay near their range.
    """
    if case[-1] not in _PLACES:
        return
    match case:
        case ("bcd_decode", bytes() as data):
            value = attempt(ValueError, codec.bcd_decode, data)
            if not isinstance(value, Refused) and data:
                assert codec.bcd_encode(value, len(data)) == data
        case ("bcd_encode", int() as value, int() as nbytes):
            wire = attempt(ValueError, codec.bcd_encode, value, nbytes)
            if not isinstance(wire, Refused):
                assert len(wire) == max(nbytes, 0) and codec.bcd_decode(wire) == value
        case ("to_decimal", int() as raw, int() as places):
            number = attempt(ValueError, codec.to_decimal, raw, places)
            if not isinstance(number, Refused):
                back = attempt(ValueError, codec.from_decimal, number, places)
                if isinstance(back, Refused):
                    assert len(str(abs(raw))) > codec.MAX_RAW_DIGITS, back
                else:
                    assert back == raw
        case ("from_decimal", Decimal() as number, int() as places):
            raw = attempt(ValueError, codec.from_decimal, number, places)
            if not isinstance(raw, Refused):
                assert codec.to_decimal(raw, places) == number


def check_item(case: tuple[Any, tuple[Any, ...]]) -> None:
    """Typed items raise only ValueError for a value the wire cannot carry; one they let be
    built goes through a frame and back unchanged."""
    build, args = case
    item = attempt(ValueError, build, *args)
    if isinstance(item, Refused):
        return
    frame = item if isinstance(item, Frame) else codec.data(codec.ADDRESS_MIN, 0, item)
    encoded = codec.encode(frame)
    assert codec.decode(encoded) == (len(encoded), frame)
    if isinstance(item, codec.CommandData):
        assert codec.parse_command(item.to_transaction()) == item
    elif isinstance(item, codec.ReplyData):
        assert codec.parse_reply(item.to_transaction()) == item


TARGET = Target(
    "dart",
    (
        Entry(
            "line",
            captures,
            check_line,
            weight=4,
            seeds=[golden.wire for golden in GOLDEN] + [b"".join(g.wire for g in GOLDEN)],
        ),
        Entry(
            "transactions",
            raw_transactions,
            check_raw_transaction,
            weight=2,
            seeds=[(typed.wire[0], typed.wire[2:]) for typed in TYPED],
        ),
        Entry("items", loose_items, check_item),
        Entry("big", big_lines, check_stream, big=100),
        Entry(
            "numbers",
            numbers,
            check_numbers,
            # from_decimal scaled any exponent exactly: 1E+100000000 took 5 minutes.
            examples=[("from_decimal", Decimal("1E+10000"), 0)],
        ),
    ),
)
