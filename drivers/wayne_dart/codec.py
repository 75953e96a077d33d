"""Wayne DART wire codec: frames, CRC, escaping and typed pump transactions, as pure bytes."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, TypeAlias, TypeVar

from drivers.crc16 import crc16_reflected

# ======================================================================================
# Line layer (level 2)
# ======================================================================================
SF = 0xFA  # stop flag: ends every frame
DLE = 0x10  # sent before an SF byte that is data, so it does not end the frame
ETX = 0x03  # closes the CRC of a data frame
ADDRESS_MIN, ADDRESS_MAX = 0x50, 0x6F

# Not from the specification: a guard so a line that never sends SF cannot make a reader
# buffer forever. The largest frame this codec can build (255 bytes of transactions, every
# byte escaped) stays well below it.
MAX_FRAME_BYTES = 1024

MalformedKind: TypeAlias = Literal["bad_crc", "malformed", "garbage"]
Direction: TypeAlias = Literal["controller", "pump"]


def crc16_arc(data: bytes | bytearray) -> int:
    """CRC-16/ARC: reflected polynomial 0xA001, initial 0, no final XOR (what DART pumps use)."""
    return crc16_reflected(data, 0)


class FrameKind(enum.Enum):
    """Frame types; the value is the control byte with sequence number 0."""

    POLL = 0x20
    DATA = 0x30
    NAK = 0x50
    EOT = 0x70
    ACK = 0xC0
    ACKPOLL = 0xE0


_KIND_BY_HIGH_NIBBLE = {kind.value >> 4: kind for kind in FrameKind if kind is not FrameKind.POLL}


def _kind_of(control: int) -> FrameKind | None:
    # POLL carries no sequence number: 0x21-0x2F are not POLLs but unknown control bytes.
    if control == FrameKind.POLL.value:
        return FrameKind.POLL
    return _KIND_BY_HIGH_NIBBLE.get(control >> 4)


def _is_address(byte: int) -> bool:
    return ADDRESS_MIN <= byte <= ADDRESS_MAX


@dataclass(frozen=True, slots=True)
class Transaction:
    """One application transaction as carried in a data frame: TRANS, then LNG = len(data)."""

    trans: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.trans <= 0xFF:
            raise ValueError(f"TRANS {self.trans} does not fit in a byte")
        # A bytearray would leave a frozen, hashable value mutable underneath.
        object.__setattr__(self, "data", bytes(self.data))
        if len(self.data) > 0xFF:
            raise ValueError(f"{len(self.data)} data bytes do not fit in LNG (max 255)")

    def to_transaction(self) -> Transaction:
        return self


@dataclass(frozen=True, slots=True)
class Frame:
    """A valid line frame. `seq` is the 4-bit block sequence number (always 0 for POLL)."""

    address: int
    kind: FrameKind
    seq: int = 0
    transactions: tuple[Transaction, ...] = ()

    def __post_init__(self) -> None:
        if not _is_address(self.address):
            raise ValueError(f"address 0x{self.address:02X} is outside 0x50-0x6F")
        if not 0 <= self.seq <= 0x0F:
            raise ValueError(f"sequence number {self.seq} does not fit in 4 bits")
        if self.kind is FrameKind.POLL and self.seq:
            raise ValueError("a POLL carries no sequence number")
        object.__setattr__(self, "transactions", tuple(self.transactions))
        if self.transactions and self.kind is not FrameKind.DATA:
            raise ValueError(f"a {self.kind.name} frame carries no transactions")


@dataclass(frozen=True, slots=True)
class Malformed:
    """Bytes that are not a valid frame. Decoding reports these; it never raises."""

    raw: bytes
    reason: str
    kind: MalformedKind
    address: int | None = None
    seq: int | None = None


def poll(address: int) -> Frame:
    return Frame(address, FrameKind.POLL)


def ack(address: int, seq: int) -> Frame:
    return Frame(address, FrameKind.ACK, seq)


def nak(address: int, seq: int) -> Frame:
    return Frame(address, FrameKind.NAK, seq)


def eot(address: int, seq: int) -> Frame:
    return Frame(address, FrameKind.EOT, seq)


def ackpoll(address: int, seq: int) -> Frame:
    return Frame(address, FrameKind.ACKPOLL, seq)


def _data_body(frame: Frame) -> bytearray:
    """ADR, control byte and transactions: the bytes the CRC covers, before escaping."""
    body = bytearray((frame.address, FrameKind.DATA.value | frame.seq))
    for tx in frame.transactions:
        body += bytes((tx.trans, len(tx.data)))
        body += tx.data
    return body


def encode(frame: Frame) -> bytes:
    """Wire bytes of a frame: data frames get CRC (low byte first), ETX, SF and DLE escaping."""
    if frame.kind is not FrameKind.DATA:
        return bytes((frame.address, frame.kind.value | frame.seq, SF))
    body = _data_body(frame)
    crc = crc16_arc(body)
    body += bytes((crc & 0xFF, crc >> 8))
    wire = bytearray()
    for byte in body:
        if byte == SF:
            wire.append(DLE)
        wire.append(byte)
    wire += bytes((ETX, SF))
    return bytes(wire)


def frame_crc(frame: Frame) -> int | None:
    """The CRC a data frame carries on the wire; None for frames without one."""
    if frame.kind is not FrameKind.DATA:
        return None
    return crc16_arc(_data_body(frame))


# --------------------------------------------------------------------------------------
# Decoding.
#
# Resynchronisation rule. An unescaped SF (0xFA whose previous byte is not DLE) always ends
# a frame, so it is the one reliable landmark on a noisy line:
#   1. Bytes that cannot start a frame (anything but an address 0x50-0x6F) are reported
#      at once as one "garbage" item.
#   2. From an address byte, the candidate frame runs to the first unescaped SF. Nothing is
#      decided before that SF arrives (or MAX_FRAME_BYTES pass without one).
#   3. If the candidate is a valid frame, it is returned.
#   4. Otherwise, if a valid frame starts at a later address byte inside the candidate and
#      runs to that same SF, the bytes before it are reported as one "malformed" item (a
#      frame cut short by noise, a reset or a collision) and decoding resumes at that
#      address byte. The earliest such start wins, so the longest valid frame is kept.
#   5. Otherwise the whole candidate, SF included, is one item: "bad_crc" when it has a
#      data frame's shape, else "malformed".
# Whether an SF is escaped depends only on the byte before it, so every frame starting
# inside a candidate ends at the candidate's SF: nothing valid is skipped by rule 5.
# Rule 4 is tried before rule 5 so a truncated frame followed by a good one always yields
# the good one; the price is that noise could make a frame's tail look valid, which needs
# a 16-bit CRC to match by chance, the same odds the CRC gives any corrupted frame.
# --------------------------------------------------------------------------------------
def _unescape(wire: bytes) -> bytes:
    # DLE SF pairs cannot overlap, so one left-to-right replace is the decoding rule exactly.
    return wire.replace(bytes((DLE, SF)), bytes((SF,)))


def _split_transactions(payload: bytes) -> tuple[Transaction, ...] | str:
    """TRANS LNG DATA… back to back, or the reason they do not fit the payload."""
    transactions = []
    index = 0
    while index < len(payload):
        if index + 2 > len(payload):
            return f"transaction at byte {index} has TRANS 0x{payload[index]:02X} but no LNG"
        trans, length = payload[index], payload[index + 1]
        data = payload[index + 2 : index + 2 + length]
        if len(data) < length:
            return (
                f"transaction 0x{trans:02X} at byte {index} declares LNG {length} "
                f"but only {len(data)} bytes remain"
            )
        transactions.append(Transaction(trans, data))
        index += 2 + length
    return tuple(transactions)


def _parse_candidate(wire: bytes) -> Frame | Malformed:
    """Judge bytes that start with an address byte and end with the first unescaped SF."""
    address = wire[0]
    if len(wire) < 3:
        return Malformed(wire, "frame ends before its control byte", "malformed", address)
    control = wire[1]
    kind = _kind_of(control)
    if kind is None:
        return Malformed(wire, f"unknown control byte 0x{control:02X}", "malformed", address)
    seq = control & 0x0F if kind is not FrameKind.POLL else 0
    if kind is not FrameKind.DATA:
        if len(wire) != 3:
            reason = f"{kind.name} frame is {len(wire)} bytes long, not 3"
            return Malformed(wire, reason, "malformed", address, seq)
        return Frame(address, kind, seq)
    body = _unescape(wire[:-1])
    if len(body) < 5 or body[-1] != ETX:
        reason = "data frame too short" if len(body) < 5 else "data frame has no ETX before SF"
        return Malformed(wire, reason, "malformed", address, seq)
    content = body[:-3]
    expected, received = crc16_arc(content), body[-3] | body[-2] << 8
    if expected != received:
        reason = f"CRC mismatch: expected 0x{expected:04X}, received 0x{received:04X}"
        return Malformed(wire, reason, "bad_crc", address, seq)
    transactions = _split_transactions(content[2:])
    if isinstance(transactions, str):
        return Malformed(wire, transactions, "malformed", address, seq)
    return Frame(address, kind, seq, transactions)


def _transactions_fit(wire: bytes) -> bool:
    body = _unescape(wire[:-1])
    return len(body) >= 5 and not isinstance(_split_transactions(body[2:-3]), str)


def _find_sf(buffer: bytes) -> int:
    """Index of the first unescaped SF within the first MAX_FRAME_BYTES bytes, or -1."""
    index = buffer.find(SF, 1, MAX_FRAME_BYTES)
    while index != -1 and buffer[index - 1] == DLE:
        index = buffer.find(SF, index + 1, MAX_FRAME_BYTES)
    return index


def _next_address(buffer: bytes, start: int) -> int:
    for index in range(start, len(buffer)):
        if _is_address(buffer[index]):
            return index
    return len(buffer)


def _header(buffer: bytes) -> tuple[int, int | None]:
    """Address and, when the control byte says so, sequence number of a broken frame."""
    kind = _kind_of(buffer[1]) if len(buffer) > 1 else None
    seq = buffer[1] & 0x0F if kind is not None and kind is not FrameKind.POLL else None
    return buffer[0], seq


def decode(buffer: bytes | bytearray) -> tuple[int, Frame | Malformed | None]:
    """Decode the first item of `buffer`: (bytes consumed, item), or (0, None) for more bytes.

    Never raises. See the resynchronisation rule above.
    """
    wire = bytes(buffer)
    if not wire:
        return 0, None
    if not _is_address(wire[0]):
        end = _next_address(wire, 1)
        return end, Malformed(wire[:end], f"{end} byte(s) before a frame start", "garbage")
    end = _find_sf(wire)
    if end == -1:
        if len(wire) < MAX_FRAME_BYTES:
            return 0, None
        cut = _next_address(wire, 1)
        address, seq = _header(wire)
        reason = f"no SF within {MAX_FRAME_BYTES} bytes"
        return cut, Malformed(wire[:cut], reason, "malformed", address, seq)
    candidate = wire[: end + 1]
    whole = _parse_candidate(candidate)
    if isinstance(whole, Frame):
        return end + 1, whole
    last_short_start = len(candidate) - 3
    for start in range(1, last_short_start + 1):
        if not _is_address(candidate[start]):
            continue
        kind = _kind_of(candidate[start + 1])
        # Cheap filters before the CRC: only a DATA frame can be longer than 3 bytes, and
        # its transactions must tile the payload exactly.
        if kind is None or (kind is not FrameKind.DATA and start != last_short_start):
            continue
        if kind is FrameKind.DATA and not _transactions_fit(candidate[start:]):
            continue
        if isinstance(_parse_candidate(candidate[start:]), Frame):
            address, seq = _header(candidate)
            reason = f"frame cut short: a new frame starts {start} byte(s) in"
            return start, Malformed(candidate[:start], reason, "malformed", address, seq)
    return end + 1, whole


def decode_all(buffer: bytes | bytearray) -> list[Frame | Malformed]:
    """Decode a finished capture; bytes left without a closing SF are reported as truncated."""
    wire = bytes(buffer)
    items: list[Frame | Malformed] = []
    position = 0
    while position < len(wire):
        used, item = decode(wire[position:])
        if item is None:
            tail = wire[position:]
            address, seq = _header(tail)
            reason = "capture ends inside a frame (no SF)"
            items.append(Malformed(tail, reason, "malformed", address, seq))
            break
        items.append(item)
        position += used
    return items


# ======================================================================================
# Numbers: packed BCD and decimal scaling
# ======================================================================================
def bcd_encode(value: int, nbytes: int) -> bytes:
    """`value` as `nbytes` of packed BCD, most significant digit first."""
    if value < 0:
        raise ValueError(f"BCD cannot carry a negative value ({value})")
    digits = f"{value:0{2 * nbytes}d}"
    if len(digits) > 2 * nbytes:
        raise ValueError(f"{value} does not fit in {nbytes} BCD byte(s)")
    return bytes.fromhex(digits)


def bcd_decode(data: bytes | bytearray) -> int:
    """The integer in packed BCD `data`; ValueError if a nibble is not a decimal digit."""
    digits = bytes(data).hex()
    if not digits:
        return 0
    if not digits.isdigit():
        raise ValueError(f"not packed BCD: {digits.upper()}")
    return int(digits)


def to_decimal(raw: int, decimals: int) -> Decimal:
    """A raw wire integer with `decimals` implied decimal places, exactly."""
    if decimals < 0:
        raise ValueError(f"decimal places must not be negative ({decimals})")
    digits = tuple(int(digit) for digit in str(abs(raw)))
    return Decimal((1 if raw < 0 else 0, digits, -decimals))


# Not from the specification: far more digits than any DART field holds (10), and few enough
# that scaling exactly stays cheap (1E+100000000 would take minutes).
MAX_RAW_DIGITS = 64


def from_decimal(value: Decimal, decimals: int) -> int:
    """The raw wire integer for `value`; ValueError if it has more than `decimals` places or
    the raw integer more than MAX_RAW_DIGITS digits."""
    if decimals < 0:
        raise ValueError(f"decimal places must not be negative ({decimals})")
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number")
    # Integer arithmetic on the digits: Decimal operations would round to the context.
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    kept = len(digits)
    while kept > 1 and digits[kept - 1] == 0:  # trailing zeros say nothing of size or places
        kept -= 1
    exponent += len(digits) - kept
    digits = digits[:kept]
    if digits == (0,):
        return 0
    shift = exponent + decimals
    if shift < 0:  # the last digit kept is not 0
        raise ValueError(f"{value} has more than {decimals} decimal place(s)")
    if len(digits) + shift > MAX_RAW_DIGITS:
        raise ValueError(f"{value} needs more than {MAX_RAW_DIGITS} digits raw")
    scaled: int = int("".join(map(str, digits))) * 10**shift
    return -scaled if sign else scaled


def _bcd_field(value: int, nbytes: int, name: str) -> None:
    if not 0 <= value < 10 ** (2 * nbytes):
        raise ValueError(f"{name} {value} does not fit in {nbytes} BCD byte(s)")


def _byte_field(value: int, name: str) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} {value} does not fit in a byte")


# ======================================================================================
# Application layer (level 3): controller -> pump (CD)
# ======================================================================================
CD1_COMMAND = 0x01
CD2_ALLOWED_NOZZLES = 0x02
CD3_PRESET_VOLUME = 0x03
CD4_PRESET_AMOUNT = 0x04
CD5_PRICE_UPDATE = 0x05
CD101_REQUEST_TOTALS = 0x65


class DCC(enum.IntEnum):
    """Pump control command carried by CD1."""

    RETURN_STATUS = 0x00
    RETURN_PUMP_PARAMETERS = 0x02
    RETURN_PUMP_IDENTITY = 0x03
    RETURN_FILLING_INFORMATION = 0x04
    RESET = 0x05
    AUTHORIZE = 0x06
    STOP = 0x08
    SWITCH_OFF = 0x0A
    SUSPEND = 0x0D
    RESUME = 0x0E
    RETURN_PRICES = 0x0F


@dataclass(frozen=True, slots=True)
class Command:
    """CD1: one pump control command."""

    dcc: DCC

    def to_transaction(self) -> Transaction:
        return Transaction(CD1_COMMAND, bytes((self.dcc,)))


@dataclass(frozen=True, slots=True)
class AllowedNozzles:
    """CD2: the logical nozzles (1-15) the next authorization allows."""

    nozzles: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.nozzles:
            raise ValueError("CD2 needs at least one nozzle")
        for nozzle in self.nozzles:
            if not 1 <= nozzle <= 15:
                raise ValueError(f"nozzle {nozzle} is outside 1-15")

    def to_transaction(self) -> Transaction:
        return Transaction(CD2_ALLOWED_NOZZLES, bytes(self.nozzles))


@dataclass(frozen=True, slots=True)
class PresetVolume:
    """CD3: volume limit, raw (already scaled by the pump's volume decimals)."""

    value: int

    def __post_init__(self) -> None:
        _bcd_field(self.value, 4, "preset volume")

    def to_transaction(self) -> Transaction:
        return Transaction(CD3_PRESET_VOLUME, bcd_encode(self.value, 4))


@dataclass(frozen=True, slots=True)
class PresetAmount:
    """CD4: amount limit, raw (already scaled by the pump's amount decimals)."""

    value: int

    def __post_init__(self) -> None:
        _bcd_field(self.value, 4, "preset amount")

    def to_transaction(self) -> Transaction:
        return Transaction(CD4_PRESET_AMOUNT, bcd_encode(self.value, 4))


@dataclass(frozen=True, slots=True)
class PriceUpdate:
    """CD5: raw unit price per logical nozzle, nozzle 1 first."""

    prices: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.prices) <= 0xFF // 3:
            raise ValueError(f"CD5 carries 1-85 prices, not {len(self.prices)}")
        for price in self.prices:
            _bcd_field(price, 3, "price")

    def to_transaction(self) -> Transaction:
        return Transaction(CD5_PRICE_UPDATE, b"".join(bcd_encode(p, 3) for p in self.prices))


@dataclass(frozen=True, slots=True)
class RequestTotals:
    """CD101: ask for the electronic totals of counter COUN (a logical nozzle number)."""

    counter: int

    def __post_init__(self) -> None:
        _byte_field(self.counter, "counter")

    def to_transaction(self) -> Transaction:
        return Transaction(CD101_REQUEST_TOTALS, bytes((self.counter,)))


# ======================================================================================
# Application layer (level 3): pump -> controller (DC)
# ======================================================================================
DC1_PUMP_STATUS = 0x01
DC2_FILLED_VOLUME_AMOUNT = 0x02
DC3_NOZZLE_STATUS = 0x03
DC5_ALARM = 0x05
DC7_PUMP_PARAMETERS = 0x07
DC9_PUMP_IDENTITY = 0x09
DC101_TOTAL_COUNTERS = 0x65
DC103_PRICES = 0x67


class DartStatus(enum.IntEnum):
    """Pump status reported in DC1."""

    NOT_PROGRAMMED = 0
    RESET = 1
    AUTHORIZED = 2
    FILLING = 4
    FILLING_COMPLETED = 5
    MAX_REACHED = 6
    SWITCHED_OFF = 7
    SUSPENDED = 8


@dataclass(frozen=True, slots=True)
class PumpStatus:
    """DC1: the pump's status byte, kept as an int so an unknown value still round-trips."""

    status: int

    def __post_init__(self) -> None:
        _byte_field(self.status, "status")

    @property
    def known(self) -> DartStatus | None:
        try:
            return DartStatus(self.status)
        except ValueError:
            return None

    def to_transaction(self) -> Transaction:
        return Transaction(DC1_PUMP_STATUS, bytes((self.status,)))


@dataclass(frozen=True, slots=True)
class FilledVolumeAmount:
    """DC2: volume and amount of the current or last filling, raw."""

    volume: int
    amount: int

    def __post_init__(self) -> None:
        _bcd_field(self.volume, 4, "volume")
        _bcd_field(self.amount, 4, "amount")

    def to_transaction(self) -> Transaction:
        data = bcd_encode(self.volume, 4) + bcd_encode(self.amount, 4)
        return Transaction(DC2_FILLED_VOLUME_AMOUNT, data)


_NOZIO_NOZZLE = 0x0F
_NOZIO_OUT = 0x10


@dataclass(frozen=True, slots=True)
class NozzleStatus:
    """DC3: unit price (raw) of the selected nozzle, which nozzle (0 = none), and if it is out."""

    price: int
    nozzle: int
    nozzle_out: bool

    def __post_init__(self) -> None:
        _bcd_field(self.price, 3, "price")
        if not 0 <= self.nozzle <= 15:
            raise ValueError(f"nozzle {self.nozzle} is outside 0-15")

    def to_transaction(self) -> Transaction:
        nozio = self.nozzle | (_NOZIO_OUT if self.nozzle_out else 0)
        return Transaction(DC3_NOZZLE_STATUS, bcd_encode(self.price, 3) + bytes((nozio,)))


@dataclass(frozen=True, slots=True)
class Alarm:
    """DC5: one alarm code byte."""

    code: int

    def __post_init__(self) -> None:
        _byte_field(self.code, "alarm code")

    def to_transaction(self) -> Transaction:
        return Transaction(DC5_ALARM, bytes((self.code,)))


# DC7 layout, LNG 50: 22 reserved bytes, DPVOL, DPAMO, DPUNP, 4 reserved, MAMO (4 BCD),
# 2 reserved, GRADE (one byte per logical nozzle 1-15). Taken from a public implementation
# that reads real pumps; not yet checked against the 2.11 text, so the offsets stay here.
_DC7_LENGTH = 50
_DC7_VOLUME_DECIMALS = 22
_DC7_AMOUNT_DECIMALS = 23
_DC7_PRICE_DECIMALS = 24
_DC7_MAX_AMOUNT = slice(29, 33)
_DC7_GRADES = slice(35, 50)
GRADE_SLOTS = 15


@dataclass(frozen=True, slots=True)
class PumpParameters:
    """DC7: decimal places of volume, amount and unit price, maximum amount, grade per nozzle.

    `grades[i]` is the grade of logical nozzle i+1 (0 = no grade). Trailing zeros are dropped
    so a value survives a round trip through its 15 fixed wire slots. Reserved bytes are sent
    as zeros and ignored when read.
    """

    volume_decimals: int
    amount_decimals: int
    price_decimals: int
    max_amount: int = 0
    grades: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # Not from the specification: more than 9 places means the layout is misread.
        for name in ("volume_decimals", "amount_decimals", "price_decimals"):
            if not 0 <= getattr(self, name) <= 9:
                raise ValueError(f"{name} {getattr(self, name)} is outside 0-9")
        _bcd_field(self.max_amount, 4, "max amount")
        if len(self.grades) > GRADE_SLOTS:
            raise ValueError(f"DC7 has {GRADE_SLOTS} grade slots, not {len(self.grades)}")
        for grade in self.grades:
            _byte_field(grade, "grade")
        grades = tuple(self.grades)
        while grades and grades[-1] == 0:
            grades = grades[:-1]
        object.__setattr__(self, "grades", grades)

    def to_transaction(self) -> Transaction:
        data = bytearray(_DC7_LENGTH)
        data[_DC7_VOLUME_DECIMALS] = self.volume_decimals
        data[_DC7_AMOUNT_DECIMALS] = self.amount_decimals
        data[_DC7_PRICE_DECIMALS] = self.price_decimals
        data[_DC7_MAX_AMOUNT] = bcd_encode(self.max_amount, 4)
        data[_DC7_GRADES] = bytes(self.grades).ljust(GRADE_SLOTS, b"\x00")
        return Transaction(DC7_PUMP_PARAMETERS, bytes(data))


@dataclass(frozen=True, slots=True)
class PumpIdentity:
    """DC9: the pump's identity, ten decimal digits (5 bytes packed BCD)."""

    identity: str

    def __post_init__(self) -> None:
        if len(self.identity) != 10 or not self.identity.isascii() or not self.identity.isdigit():
            raise ValueError(f"pump identity must be 10 decimal digits, not {self.identity!r}")

    def to_transaction(self) -> Transaction:
        return Transaction(DC9_PUMP_IDENTITY, bytes.fromhex(self.identity))


@dataclass(frozen=True, slots=True)
class TotalCounters:
    """DC101: electronic totals of counter COUN: volume and two amount totals, raw."""

    counter: int
    volume: int
    amount1: int
    amount2: int

    def __post_init__(self) -> None:
        _byte_field(self.counter, "counter")
        _bcd_field(self.volume, 5, "total volume")
        _bcd_field(self.amount1, 5, "total amount 1")
        _bcd_field(self.amount2, 5, "total amount 2")

    def to_transaction(self) -> Transaction:
        data = (
            bytes((self.counter,))
            + bcd_encode(self.volume, 5)
            + bcd_encode(self.amount1, 5)
            + bcd_encode(self.amount2, 5)
        )
        return Transaction(DC101_TOTAL_COUNTERS, data)


@dataclass(frozen=True, slots=True)
class Prices:
    """DC103: raw unit price per grade, the answer to CD1 RETURN_PRICES (layout unverified)."""

    prices: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.prices) <= 0xFF // 3:
            raise ValueError(f"DC103 carries 1-85 prices, not {len(self.prices)}")
        for price in self.prices:
            _bcd_field(price, 3, "price")

    def to_transaction(self) -> Transaction:
        return Transaction(DC103_PRICES, b"".join(bcd_encode(p, 3) for p in self.prices))


@dataclass(frozen=True, slots=True)
class UnknownTransaction:
    """A transaction this codec cannot read in the given direction, and why."""

    trans: int
    data: bytes
    reason: str

    def to_transaction(self) -> Transaction:
        return Transaction(self.trans, self.data)


CommandData: TypeAlias = (
    Command | AllowedNozzles | PresetVolume | PresetAmount | PriceUpdate | RequestTotals
)
ReplyData: TypeAlias = (
    PumpStatus
    | FilledVolumeAmount
    | NozzleStatus
    | Alarm
    | PumpParameters
    | PumpIdentity
    | TotalCounters
    | Prices
)


def data(
    address: int,
    seq: int,
    *items: Transaction | CommandData | ReplyData | UnknownTransaction,
) -> Frame:
    """A DATA frame carrying `items` in order."""
    return Frame(address, FrameKind.DATA, seq, tuple(item.to_transaction() for item in items))


# Parsers get the data bytes and raise ValueError with a reason; parse_* turns that into
# UnknownTransaction so nothing a pump or a capture sends can raise out of the codec.
def _exactly(data: bytes, length: int) -> None:
    if len(data) != length:
        raise ValueError(f"LNG {len(data)}, expected {length}")


def _bcd_triples(data: bytes) -> tuple[int, ...]:
    if not data or len(data) % 3:
        raise ValueError(f"LNG {len(data)} is not a positive multiple of 3")
    return tuple(bcd_decode(data[i : i + 3]) for i in range(0, len(data), 3))


def _parse_cd1(data: bytes) -> Command:
    _exactly(data, 1)
    try:
        return Command(DCC(data[0]))
    except ValueError:
        raise ValueError(f"unknown DCC 0x{data[0]:02X}") from None


def _parse_cd2(data: bytes) -> AllowedNozzles:
    return AllowedNozzles(tuple(data))


def _parse_cd3(data: bytes) -> PresetVolume:
    _exactly(data, 4)
    return PresetVolume(bcd_decode(data))


def _parse_cd4(data: bytes) -> PresetAmount:
    _exactly(data, 4)
    return PresetAmount(bcd_decode(data))


def _parse_cd5(data: bytes) -> PriceUpdate:
    return PriceUpdate(_bcd_triples(data))


def _parse_cd101(data: bytes) -> RequestTotals:
    _exactly(data, 1)
    return RequestTotals(data[0])


def _parse_dc1(data: bytes) -> PumpStatus:
    _exactly(data, 1)
    return PumpStatus(data[0])


def _parse_dc2(data: bytes) -> FilledVolumeAmount:
    _exactly(data, 8)
    return FilledVolumeAmount(bcd_decode(data[:4]), bcd_decode(data[4:]))


def _parse_dc3(data: bytes) -> NozzleStatus:
    _exactly(data, 4)
    # Bits 5-7 of NOZIO have no documented meaning; ignoring them keeps the nozzle readable.
    nozio = data[3]
    return NozzleStatus(bcd_decode(data[:3]), nozio & _NOZIO_NOZZLE, bool(nozio & _NOZIO_OUT))


def _parse_dc5(data: bytes) -> Alarm:
    _exactly(data, 1)
    return Alarm(data[0])


def _parse_dc7(data: bytes) -> PumpParameters:
    _exactly(data, _DC7_LENGTH)
    return PumpParameters(
        volume_decimals=data[_DC7_VOLUME_DECIMALS],
        amount_decimals=data[_DC7_AMOUNT_DECIMALS],
        price_decimals=data[_DC7_PRICE_DECIMALS],
        max_amount=bcd_decode(data[_DC7_MAX_AMOUNT]),
        grades=tuple(data[_DC7_GRADES]),
    )


def _parse_dc9(data: bytes) -> PumpIdentity:
    _exactly(data, 5)
    bcd_decode(data)  # only to reject non-decimal nibbles
    return PumpIdentity(data.hex())


def _parse_dc101(data: bytes) -> TotalCounters:
    _exactly(data, 16)
    return TotalCounters(
        data[0], bcd_decode(data[1:6]), bcd_decode(data[6:11]), bcd_decode(data[11:16])
    )


def _parse_dc103(data: bytes) -> Prices:
    return Prices(_bcd_triples(data))


_COMMAND_PARSERS: dict[int, Callable[[bytes], CommandData]] = {
    CD1_COMMAND: _parse_cd1,
    CD2_ALLOWED_NOZZLES: _parse_cd2,
    CD3_PRESET_VOLUME: _parse_cd3,
    CD4_PRESET_AMOUNT: _parse_cd4,
    CD5_PRICE_UPDATE: _parse_cd5,
    CD101_REQUEST_TOTALS: _parse_cd101,
}
_REPLY_PARSERS: dict[int, Callable[[bytes], ReplyData]] = {
    DC1_PUMP_STATUS: _parse_dc1,
    DC2_FILLED_VOLUME_AMOUNT: _parse_dc2,
    DC3_NOZZLE_STATUS: _parse_dc3,
    DC5_ALARM: _parse_dc5,
    DC7_PUMP_PARAMETERS: _parse_dc7,
    DC9_PUMP_IDENTITY: _parse_dc9,
    DC101_TOTAL_COUNTERS: _parse_dc101,
    DC103_PRICES: _parse_dc103,
}


_Parsed = TypeVar("_Parsed")


def _parse(
    tx: Transaction, parsers: dict[int, Callable[[bytes], _Parsed]], family: str
) -> _Parsed | UnknownTransaction:
    parser = parsers.get(tx.trans)
    if parser is None:
        return UnknownTransaction(tx.trans, tx.data, f"no {family} transaction 0x{tx.trans:02X}")
    try:
        return parser(tx.data)
    except ValueError as exc:
        return UnknownTransaction(tx.trans, tx.data, str(exc))


def parse_command(tx: Transaction) -> CommandData | UnknownTransaction:
    """Read a transaction sent by the controller (CD); never raises."""
    return _parse(tx, _COMMAND_PARSERS, "CD")


def parse_reply(tx: Transaction) -> ReplyData | UnknownTransaction:
    """Read a transaction sent by a pump (DC); never raises."""
    return _parse(tx, _REPLY_PARSERS, "DC")


# ======================================================================================
# Human and JSON description (used by `edgectl decode dart`)
# ======================================================================================
def _hex(raw: bytes) -> str:
    return raw.hex(" ").upper()


_NAMES: dict[type, str] = {
    Command: "CD1 command",
    AllowedNozzles: "CD2 allowed nozzles",
    PresetVolume: "CD3 preset volume",
    PresetAmount: "CD4 preset amount",
    PriceUpdate: "CD5 price update",
    RequestTotals: "CD101 request total counters",
    PumpStatus: "DC1 pump status",
    FilledVolumeAmount: "DC2 filled volume and amount",
    NozzleStatus: "DC3 nozzle status and filling price",
    Alarm: "DC5 alarm",
    PumpParameters: "DC7 pump parameters",
    PumpIdentity: "DC9 pump identity",
    TotalCounters: "DC101 total counters",
    Prices: "DC103 prices",
}


def _explain(item: CommandData | ReplyData) -> tuple[str, dict[str, Any]]:
    """A one-line reading and JSON-able values; volumes, amounts and prices stay raw
    because their decimal places come from the pump (DC7) or the site, not the frame."""
    values: dict[str, Any]
    match item:
        case Command(dcc=dcc):
            return f"{dcc.name} (0x{dcc:02X})", {"dcc": dcc.name, "code": int(dcc)}
        case AllowedNozzles(nozzles=nozzles):
            return "nozzles " + ", ".join(map(str, nozzles)), {"nozzles": list(nozzles)}
        case PresetVolume(value=value) | PresetAmount(value=value):
            return f"{value} (raw)", {"value": value}
        case PriceUpdate(prices=prices):
            text = ", ".join(f"nozzle {n}: {p}" for n, p in enumerate(prices, 1))
            return f"{text} (raw)", {"prices": list(prices)}
        case RequestTotals(counter=counter):
            return f"counter {counter}", {"counter": counter}
        case PumpStatus(status=status):
            known = item.known
            name = known.name if known is not None else "unknown status"
            return f"{name} ({status})", {"status": name, "code": status}
        case FilledVolumeAmount(volume=volume, amount=amount):
            return f"volume {volume}, amount {amount} (raw)", {"volume": volume, "amount": amount}
        case NozzleStatus(price=price, nozzle=nozzle, nozzle_out=out):
            where = f"nozzle {nozzle} {'out' if out else 'in'}" if nozzle else "no nozzle selected"
            if not nozzle and out:
                where += " (nozzle-out bit set)"
            values = {"price": price, "nozzle": nozzle, "nozzle_out": out}
            return f"{where}, price {price} (raw)", values
        case Alarm(code=code):
            return f"code {code} (0x{code:02X})", {"code": code}
        case PumpParameters():
            values = {
                "volume_decimals": item.volume_decimals,
                "amount_decimals": item.amount_decimals,
                "price_decimals": item.price_decimals,
                "max_amount": item.max_amount,
                "grades": list(item.grades),
            }
            grades = ", ".join(f"{n}:{g}" for n, g in enumerate(item.grades, 1)) or "none"
            text = (
                f"decimals volume {item.volume_decimals}, amount {item.amount_decimals}, "
                f"price {item.price_decimals}; max amount {item.max_amount}; "
                f"grade per nozzle {grades}"
            )
            return text, values
        case PumpIdentity(identity=identity):
            return identity, {"identity": identity}
        case TotalCounters():
            values = {
                "counter": item.counter,
                "volume": item.volume,
                "amount1": item.amount1,
                "amount2": item.amount2,
            }
            text = (
                f"counter {item.counter}: volume {item.volume}, amount {item.amount1}, "
                f"amount 2 {item.amount2} (raw)"
            )
            return text, values
        case Prices(prices=prices):
            text = ", ".join(f"grade {n}: {p}" for n, p in enumerate(prices, 1))
            return f"{text} (raw)", {"prices": list(prices)}
    raise AssertionError(f"no description for {item!r}")  # every typed item is matched


def describe_transaction(tx: Transaction, direction: Direction) -> dict[str, Any]:
    """Name, reading and values of one transaction as sent by `direction`."""
    parsed = parse_command(tx) if direction == "controller" else parse_reply(tx)
    described: dict[str, Any] = {"trans": f"0x{tx.trans:02X}"}
    if isinstance(parsed, UnknownTransaction):
        family = "CD" if direction == "controller" else "DC"
        described.update(
            name=f"unreadable {family} transaction 0x{tx.trans:02X}",
            text=parsed.reason,
            values={"data": _hex(tx.data)},
            known=False,
        )
    else:
        text, values = _explain(parsed)
        described.update(name=_NAMES[type(parsed)], text=text, values=values, known=True)
    described["raw"] = _hex(bytes((tx.trans, len(tx.data))) + tx.data)
    return described


def describe(item: Frame | Malformed, direction: Direction | None = None) -> dict[str, Any]:
    """A JSON-able description of a decoded item.

    TRANS numbers mean different things in each direction (0x01 is a CD1 command or a DC1
    status), so a DATA frame is read as sent by `direction`; with None it carries both
    readings under "readings" instead of "transactions".
    """
    if isinstance(item, Malformed):
        described: dict[str, Any] = {
            "type": item.kind.upper(),
            "valid": False,
            "address": None if item.address is None else f"0x{item.address:02X}",
            "seq": item.seq,
            "reason": item.reason,
        }
        if item.kind == "bad_crc":
            described["crc"] = "bad"
        described["raw"] = _hex(item.raw)
        return described
    described = {
        "type": item.kind.name,
        "valid": True,
        "address": f"0x{item.address:02X}",
        "seq": None if item.kind is FrameKind.POLL else item.seq,
    }
    if item.kind is FrameKind.DATA:
        described["crc"] = "ok"
        described["crc_value"] = f"0x{frame_crc(item):04X}"
        described["from"] = direction
        if direction is None:
            described["readings"] = {
                side: [describe_transaction(tx, side) for tx in item.transactions]
                for side in ("controller", "pump")
            }
        else:
            described["transactions"] = [
                describe_transaction(tx, direction) for tx in item.transactions
            ]
    described["raw"] = _hex(encode(item))
    return described
