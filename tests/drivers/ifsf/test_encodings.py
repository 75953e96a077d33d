"""IFSF encodings: the facts' examples, the refusals, and round trips for every encoding."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import FrameError
from drivers.ifsf import databases as db
from drivers.ifsf import encodings as enc
from tests.drivers.ifsf.frames import DECIMALS
from tests.drivers.ifsf.strategies import ENCODINGS, signed_decimals, values_for


@pytest.mark.parametrize(("wire", "value", "digits"), DECIMALS, ids=[str(d[1]) for d in DECIMALS])
def test_signed_decimal_examples(wire: bytes, value: Decimal, digits: int) -> None:
    decoded = enc.decode_decimal(wire, digits)
    assert decoded == value
    assert format(decoded, "f") == format(value, "f")  # the places the wire gives are kept
    assert enc.encode_decimal(decoded, digits) == wire
    assert enc.encode_decimal(value, digits) == wire


def test_the_point_position_is_bits_7_to_1() -> None:
    # A reader of the low nibble only would put this point 2 digits in, not 18.
    assert enc.decode_decimal(bytes.fromhex("12 12 34 56 78")) == Decimal("123456780000000000")


def test_negative_zero_keeps_its_sign() -> None:
    wire = enc.encode_decimal(Decimal("-0.00"), 8)
    assert wire == bytes.fromhex("86 00 00 00 00")
    assert str(enc.decode_decimal(wire)) == "-0.00"


@pytest.mark.parametrize(
    ("value", "digits", "wire"),
    [
        (Decimal("123456780"), 8, "09 12 34 56 78"),  # a trailing zero goes into the point
        (Decimal("0.0000000001000"), 12, "00 00 00 00 00 01 00"),  # 13 places: one zero dropped
        (Decimal("1E+126"), 8, "7F 10 00 00 00"),  # zeros move into the digits
        (Decimal("0E-20"), 8, "00 00 00 00 00"),
        (Decimal(7), 2, "02 07"),
    ],
)
def test_values_are_placed_to_fit(value: Decimal, digits: int, wire: str) -> None:
    assert enc.encode_decimal(value, digits) == bytes.fromhex(wire)
    assert enc.decode_decimal(bytes.fromhex(wire)) == value


@pytest.mark.parametrize(
    ("value", "digits"),
    [
        (Decimal("123456789"), 8),  # nine significant digits
        (Decimal("1E-9"), 8),  # nine places
        (Decimal("1E+200"), 8),
        (Decimal("NaN"), 8),
        (Decimal("Infinity"), 8),
        (Decimal(1), 7),  # odd digit count
        (Decimal(1), 0),
    ],
)
def test_values_the_wire_cannot_carry_are_refused(value: Decimal, digits: int) -> None:
    with pytest.raises(ValueError):
        enc.encode_decimal(value, digits)


@pytest.mark.parametrize(
    ("wire", "digits"),
    [("06", None), ("", None), ("06 12 3A 56 78", None), ("06 12 34", 8), ("06 12 34 56 78", 6)],
)
def test_bytes_that_are_not_a_signed_decimal(wire: str, digits: int | None) -> None:
    with pytest.raises(FrameError):
        enc.decode_decimal(bytes.fromhex(wire), digits)


def test_bin_bcd_ascii_examples() -> None:
    assert enc.decode_bin(bytes.fromhex("11 10")) == 4368
    assert enc.encode_bin(4368, 2) == bytes.fromhex("11 10")
    assert enc.decode_bcd(bytes.fromhex("00 42"), 4) == 42
    assert enc.encode_bcd(42, 4) == bytes.fromhex("00 42")
    assert enc.decode_ascii(b"SUPER 95", 8) == "SUPER 95"
    assert enc.encode_ascii("GAS", 8) == b"GAS     "
    assert enc.decode_lna(bytes.fromhex("02 01")) == enc.Lna(2, 1)


@pytest.mark.parametrize(
    ("decode", "wire"),
    [
        (lambda w: enc.decode_bin(w), ""),
        (lambda w: enc.decode_bin(w, 2), "01"),
        (lambda w: enc.decode_bcd(w), "1A"),
        (lambda w: enc.decode_bcd(w, 4), "12"),
        (lambda w: enc.decode_ascii(w), "C0 A8"),
        (lambda w: enc.decode_ascii(w, 8), "41"),
        (lambda w: enc.decode_lna(w), "02"),
    ],
)
def test_unreadable_bytes_raise_frame_error(decode: Any, wire: str) -> None:
    with pytest.raises(FrameError):
        decode(bytes.fromhex(wire))


@pytest.mark.parametrize(
    "encode",
    [
        lambda: enc.encode_bin(256, 1),
        lambda: enc.encode_bin(-1, 1),
        lambda: enc.encode_bin(1, 0),
        lambda: enc.encode_bcd(10000, 4),
        lambda: enc.encode_bcd(-1, 4),
        lambda: enc.encode_bcd(1, 3),
        lambda: enc.encode_ascii("é"),
        lambda: enc.encode_ascii("toolong", 4),
        lambda: enc.Lna(256, 1),
    ],
)
def test_values_out_of_range_raise_value_error(encode: Any) -> None:
    with pytest.raises(ValueError):
        encode()


# ------------------------------------------------------------------------- round trips
@given(
    st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), st.binary(min_size=n, max_size=n)))
)
def test_bin_round_trip(case: tuple[int, bytes]) -> None:
    size, wire = case
    assert enc.encode_bin(enc.decode_bin(wire, size), size) == wire


@given(
    st.integers(1, 10).flatmap(
        lambda n: st.tuples(st.just(2 * n), st.integers(0, 10 ** (2 * n) - 1))
    )
)
def test_bcd_round_trip(case: tuple[int, int]) -> None:
    digits, value = case
    wire = enc.encode_bcd(value, digits)
    assert len(wire) == digits // 2 and enc.decode_bcd(wire, digits) == value


@given(st.text(st.characters(max_codepoint=0x7F), max_size=30))
def test_ascii_round_trip(text: str) -> None:
    assert enc.decode_ascii(enc.encode_ascii(text)) == text


@given(
    st.sampled_from([2, 4, 6, 8, 12, 16]).flatmap(
        lambda n: signed_decimals(n).map(lambda value: (n, value))
    )
)
def test_signed_decimal_bytes_round_trip(case: tuple[int, Decimal]) -> None:
    # The wire's own width: Decimal drops leading zeros (0001 at point 0 is 0.0001, one digit).
    digits, value = case
    # Every byte string the decoder reads comes back exactly, whatever the point and sign.
    wire = enc.encode_decimal(value, digits)
    again = enc.decode_decimal(wire)
    assert again == value and again.is_signed() == value.is_signed()


@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
    st.sampled_from([4, 6, 8, 12]),
)
def test_signed_decimal_value_round_trip(value: Decimal, digits: int) -> None:
    try:
        wire = enc.encode_decimal(value, digits)
    except ValueError:
        return  # too many digits, places or too large for this width
    assert len(wire) == 1 + digits // 2
    assert enc.decode_decimal(wire, digits) == value


@given(st.binary(min_size=2, max_size=8))
def test_any_decodable_decimal_bytes_encode_back(wire: bytes) -> None:
    try:
        value = enc.decode_decimal(wire)
    except FrameError:
        return
    assert enc.encode_decimal(value, 2 * (len(wire) - 1)) == wire


@pytest.mark.parametrize("encoding", ENCODINGS, ids=repr)
@given(data=st.data())
def test_every_encoding_round_trips(encoding: db.Encoding, data: st.DataObject) -> None:
    value = data.draw(values_for(encoding))
    wire = encoding.encode(value)
    assert encoding.decode(wire) == value
    assert encoding.encode(encoding.decode(wire)) == wire
    text, shown = encoding.show(value)
    assert isinstance(text, str)
    json.dumps(shown)


@pytest.mark.parametrize(
    "call",
    [
        lambda: enc.encode_bin(1, 2**63),  # once built a 2**66-bit number
        lambda: enc.encode_bcd(1, 2**63),
        lambda: enc.encode_decimal(Decimal(1), 2**63),
        lambda: enc.encode_ascii("a", 2**63),
        lambda: enc.encode_bin(1, enc.MAX_BIN_BYTES + 1),
        lambda: enc.encode_bcd(1, enc.MAX_BCD_DIGITS + 2),
    ],
)
def test_absurd_widths_are_refused_at_once(call: Any) -> None:
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize(
    "decode",
    [enc.decode_bin, enc.decode_bcd, enc.decode_decimal],
    ids=["bin", "bcd", "decimal"],
)
def test_numbers_longer_than_any_field_are_frame_errors(decode: Any) -> None:
    # 6000 BCD digits once passed Python's int/str digit limit as a bare ValueError.
    with pytest.raises(FrameError, match=r"more than|longer than"):
        decode(bytes(3000))


def test_a_field_of_no_fixed_width_is_written_in_the_fewest_bytes() -> None:
    temperature = db.Signed(None)
    value = temperature.decode(bytes.fromhex("04 00 06 00"))
    assert value == Decimal("6.00")
    assert temperature.encode(value) == bytes.fromhex("02 06 00")
    assert temperature.decode(temperature.encode(value)) == value


@pytest.mark.parametrize("text", ["0.0001", "-0.000123", "0E+64", "12.5"])
def test_a_signed_field_of_free_width_holds_the_places_after_the_point(text: str) -> None:
    """Found by the full suite's hypothesis run: 0.0001 (one digit, four places) was given two
    BCD digits and refused."""
    from drivers.ifsf.databases import Signed

    field = Signed(None)
    value = Decimal(text)
    again = field.decode(field.encode(value))
    assert again == value
