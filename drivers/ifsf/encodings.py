"""IFSF data encodings as pure bytes: binN, bcdN, ascN, LNAs and the signed decimal.

Decoders read bytes a peer sent and raise `FrameError` when they cannot; encoders take values
a program chose and raise `ValueError` when the wire cannot carry them.

The signed decimal carries amounts and volumes (bin8 + bcd8), unit prices (bin8 + bcd6) and
totals (bin8 + bcd12): in its leading byte bit 8 is the sign (1 = negative) and bits 7-1 the
number of digits in front of the decimal point, counted from the left of the BCD digits. A
point past the last digit appends zeros: `0B 12 34 56 78` is 12345678000. One source reads
only the low nibble for the point position; this codec reads bits 7-1, which every capture
agrees with (no capture has a point position above 15).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from drivers.base import FrameError

SIGN_BIT = 0x80
POINT_MASK = 0x7F
# Not from the sources, whose widest fields are bin32 and bcd12: bounds that keep a number's
# conversion cheap and its text within Python's int/str digit limit, whatever a peer sends.
MAX_BIN_BYTES = 16
MAX_BCD_DIGITS = 64
MAX_TEXT_BYTES = 0xFFFF  # the longest data element a 2-byte length can carry

# Subnets with a known role (node 1-127 in each).
SUBNET_ROLES = {1: "dispenser", 2: "controller device", 9: "tank level gauge"}


@dataclass(frozen=True, slots=True, order=True)
class Lna:
    """A logical node address: subnet and node, one byte each (the usual CD is 2.1)."""

    subnet: int
    node: int

    def __post_init__(self) -> None:
        for name in ("subnet", "node"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"LNA {name} {getattr(self, name)} does not fit in a byte")

    def __str__(self) -> str:
        return f"{self.subnet}.{self.node}"

    @property
    def role(self) -> str | None:
        return SUBNET_ROLES.get(self.subnet)

    @property
    def wire(self) -> bytes:
        return bytes((self.subnet, self.node))


def decode_lna(data: bytes) -> Lna:
    if len(data) != 2:
        raise FrameError(f"an LNA is 2 bytes, not {len(data)}")
    return Lna(data[0], data[1])


# --------------------------------------------------------------------------- binN
def decode_bin(data: bytes, size: int | None = None) -> int:
    """An unsigned big-endian integer; `size` in bytes when the field has a fixed one."""
    if not data:
        raise FrameError("no bytes for a binary number")
    if len(data) > MAX_BIN_BYTES:
        raise FrameError(f"a {len(data)}-byte binary number is longer than {MAX_BIN_BYTES}")
    if size is not None and len(data) != size:
        raise FrameError(f"bin{8 * size} is {size} byte(s), not {len(data)}")
    return int.from_bytes(data, "big")


def encode_bin(value: int, size: int) -> bytes:
    if not 1 <= size <= MAX_BIN_BYTES:
        raise ValueError(f"a binary field has 1-{MAX_BIN_BYTES} bytes, not {size}")
    if not 0 <= value < 1 << (8 * size):
        raise ValueError(f"{value} does not fit in bin{8 * size}")
    return value.to_bytes(size, "big")


# --------------------------------------------------------------------------- bcdN
def _digits(data: bytes) -> str:
    if len(data) * 2 > MAX_BCD_DIGITS:
        raise FrameError(f"{len(data) * 2} BCD digits are more than {MAX_BCD_DIGITS}")
    digits = data.hex()
    if not digits.isdigit():
        raise FrameError(f"not packed BCD: {data.hex(' ').upper()}")
    return digits


def decode_bcd(data: bytes, digits: int | None = None) -> int:
    """Packed BCD, high digit first; `digits` (even) when the field has a fixed width."""
    if not data:
        raise FrameError("no bytes for a BCD number")
    if digits is not None and len(data) * 2 != digits:
        raise FrameError(f"bcd{digits} is {digits // 2} byte(s), not {len(data)}")
    return int(_digits(data))


def _check_digits(digits: int) -> None:
    if not 2 <= digits <= MAX_BCD_DIGITS or digits % 2:
        raise ValueError(
            f"a BCD field holds an even number of digits, 2-{MAX_BCD_DIGITS}, not {digits}"
        )


def encode_bcd(value: int, digits: int) -> bytes:
    _check_digits(digits)
    if not 0 <= value < 10**digits:
        raise ValueError(f"{value} does not fit in bcd{digits}")
    return bytes.fromhex(f"{value:0{digits}d}")


# --------------------------------------------------------------------------- ascN
def decode_ascii(data: bytes, size: int | None = None) -> str:
    """ASCII text, kept as sent (padding included) so it encodes back to the same bytes."""
    if size is not None and len(data) != size:
        raise FrameError(f"asc{size} is {size} byte(s), not {len(data)}")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError(f"not ASCII: {data.hex(' ').upper()}") from None


def encode_ascii(text: str, size: int | None = None) -> bytes:
    """`text` as ASCII; with `size`, padded with spaces to that width."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{text!r} is not ASCII") from None
    if size is None:
        return data
    if not 0 <= size <= MAX_TEXT_BYTES:
        raise ValueError(f"an ASCII field has 0-{MAX_TEXT_BYTES} bytes, not {size}")
    if len(data) > size:
        raise ValueError(f"{text!r} is longer than asc{size}")
    return data.ljust(size, b" ")


# --------------------------------------------------------------------------- bin8 + bcdN
def decode_decimal(data: bytes, digits: int | None = None) -> Decimal:
    """A signed decimal: the leading byte's sign and point position over BCD digits.

    The Decimal keeps the wire's exponent (`06 00 99 00 00` is 9900.00, two places), so it
    encodes back to the same bytes with `encode_decimal(value, digits)`.
    """
    if len(data) < 2:
        raise FrameError(f"a signed decimal is a byte and BCD digits, not {len(data)} byte(s)")
    if digits is not None and (len(data) - 1) * 2 != digits:
        raise FrameError(f"bin8+bcd{digits} is {1 + digits // 2} bytes, not {len(data)}")
    head, body = data[0], _digits(data[1:])
    point = head & POINT_MASK
    sign = 1 if head & SIGN_BIT else 0
    return Decimal((sign, tuple(int(d) for d in body), point - len(body)))


def encode_decimal(value: Decimal, digits: int) -> bytes:
    """`value` over `digits` BCD digits, with the point where its exponent puts it.

    Trailing zeros are dropped (or added) only when the value does not fit otherwise, so a
    decoded value comes back byte for byte; ValueError if no placing of the point fits.
    """
    _check_digits(digits)
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    sign, coefficient, wire_exponent = value.as_tuple()
    assert isinstance(wire_exponent, int)  # finite, checked above
    exponent: int = wire_exponent
    kept = list(coefficient)
    if kept == [0]:
        # Zero fits anywhere: keep its exponent when the point can be placed there.
        exponent = min(max(exponent, -digits), POINT_MASK - digits)
    while len(kept) > digits and kept[-1] == 0:
        kept.pop()
        exponent += 1
    if len(kept) > digits:
        raise ValueError(f"{value} needs more than {digits} digits")
    point = exponent + digits
    while point < 0 and len(kept) > 1 and kept[-1] == 0:
        kept.pop()
        point += 1
    if point > POINT_MASK:
        shift = min(digits - len(kept), point - POINT_MASK)
        kept += [0] * shift
        point -= shift
    if point < 0:
        raise ValueError(f"{value} has more decimal places than {digits} digits can hold")
    if point > POINT_MASK:
        raise ValueError(f"{value} is too large for bin8+bcd{digits}")
    body = "".join(map(str, kept)).rjust(digits, "0")
    return bytes(((SIGN_BIT if sign else 0) | point,)) + bytes.fromhex(body)
