"""Veeder-Root TLS serial protocol as pure text and bytes: commands, checksummed replies, reports.

Facts: /work/shared/protocols/veeder-root-tls.md. A command is SOH + optional security code +
function code + data (+ an optional terminator some emulators need). A computer-format reply
(`i…`) is SOH + function code + data + `&&` + CCCC + ETX; a display-format reply (`I…`) is SOH +
a printed report + ETX, without checksum. Decoding never raises: a refusal (`9999FF1B`) is a
typed reply, bytes that are not a reply are a `Malformed` item.
"""

from __future__ import annotations

import bisect
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal
from typing import Any, Literal, TypeAlias

SOH = 0x01
ETX = 0x03
ESC = 0x1B  # aborts a response in progress
SECURITY_CODE_LENGTH = 6
FUNCTION_CODE_LENGTH = 6
COMMAND_BUFFER = 128  # characters the console buffers for one command
TERMINATORS = (b"", b"\n", b"\r\n")

# Not from the manual: a guard so a line that never sends ETX cannot make a reader buffer
# forever. A 16-tank i202 with ten deliveries per tank stays well below it.
MAX_RESPONSE_BYTES = 65536

# Data characters that follow the function code in commands this codec knows, so a console
# without a command terminator can tell where a command ends.
COMMAND_DATA_LENGTHS: dict[str, int] = {"s501": 10, "S501": 10}

# i201 status bits (ssss).
STATUS_DELIVERY_IN_PROGRESS = 0x0001
STATUS_LEAK_TEST_IN_PROGRESS = 0x0002
STATUS_INVALID_HEIGHT = 0x0004

# Tank alarm codes of i205 named in the facts file; others are shown by number.
TANK_ALARMS: dict[int, str] = {
    2: "leak",
    3: "high water",
    4: "overfill",
    5: "low product",
    6: "sudden loss",
    7: "high product",
    11: "delivery needed",
    25: "reconciliation warning",
    26: "reconciliation alarm",
}

DECIMAL_PLACES = 4  # a float32 carries ~7 significant digits; volumes need no more places
_QUANTUM = Decimal(1).scaleb(-DECIMAL_PLACES)
_WIDE = Context(prec=60)  # float32 reaches 3.4e38: 39 integer digits
_HEX = frozenset("0123456789ABCDEFabcdef")
_DIGITS = frozenset("0123456789")
_YEAR_PIVOT = 70  # YY below it is 20YY, else 19YY (the manual's example is 1996)

MalformedKind: TypeAlias = Literal["bad_checksum", "malformed", "truncated", "garbage"]


# ======================================================================================
# Numbers and dates
# ======================================================================================
def checksum(data: bytes | bytearray) -> int:
    """CCCC for `data` (SOH through `&&`): the 16-bit sum of data plus CCCC is 0."""
    return -sum(data) & 0xFFFF


def decode_float(text: str) -> Decimal | None:
    """8 hex digits of a big-endian IEEE-754 single as a Decimal; None for NaN / infinity.

    Rounded to the 7 significant digits a single carries (so 48.97 stays 48.97, not
    48.970001220703125) and to at most DECIMAL_PLACES places. Raises ValueError.
    """
    if len(text) != 8 or not _HEX.issuperset(text):
        raise ValueError(f"{text!r} is not 8 hex digits")
    (value,) = struct.unpack(">f", bytes.fromhex(text))
    if not math.isfinite(value):
        return None
    number = Decimal(format(value, ".7g"))
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)  # finite by the check above
    if exponent > 0:
        number = number.quantize(Decimal(1), context=_WIDE)
    elif exponent < -DECIMAL_PLACES:
        number = number.quantize(_QUANTUM, context=_WIDE)
    return Decimal(0) if number == 0 else number  # no -0, no 0E-4


def encode_float(value: Decimal | float | None) -> str:
    """8 upper-case hex digits of the nearest IEEE-754 single; None is sent as NaN (a NaN
    reads back as None). ValueError for an infinity or a value beyond a single: it would
    read back as no value."""
    number = math.nan if value is None else float(value)
    if math.isinf(number):
        raise ValueError(f"{value} does not fit an IEEE-754 single")
    try:
        packed = struct.pack(">f", number)
    except OverflowError as exc:
        raise ValueError(f"{value} does not fit an IEEE-754 single") from exc
    return packed.hex().upper()


def parse_timestamp(text: str) -> datetime:
    """`YYMMDDHHmm` (console local time) as a naive datetime. Raises ValueError."""
    if len(text) != 10 or not _DIGITS.issuperset(text):
        raise ValueError(f"{text!r} is not YYMMDDHHmm")
    yy = int(text[0:2])
    year = 2000 + yy if yy < _YEAR_PIVOT else 1900 + yy
    return datetime(year, int(text[2:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]))


def format_timestamp(at: datetime) -> str:
    """`YYMMDDHHmm` of `at` as it reads (time zone ignored: consoles keep local time)."""
    if not 1900 + _YEAR_PIVOT <= at.year < 2000 + _YEAR_PIVOT:
        raise ValueError(f"{at.year} cannot be written as YY")
    return at.strftime("%y%m%d%H%M")


def alarm_name(code: int) -> str:
    return TANK_ALARMS.get(code, f"tank alarm {code:02d}")


# ======================================================================================
# Commands
# ======================================================================================
@dataclass(frozen=True, slots=True)
class Command:
    """A command as the console reads it: function code (`i20100`), data, security code."""

    code: str
    data: str = ""
    security_code: str | None = None


def _check_text(text: str, what: str) -> None:
    if not all(0x20 < ord(char) < 0x7F for char in text):
        raise ValueError(f"{what} {text!r} must be printable ASCII without spaces")


def encode_command(
    code: str, *, data: str = "", security_code: str | None = None, terminator: bytes = b""
) -> bytes:
    """SOH + security code (when the console has one) + function code + data + terminator."""
    if not code:
        raise ValueError("empty function code")
    _check_text(code, "function code")
    if data:
        _check_text(data, "command data")
    if security_code is not None:
        if len(security_code) != SECURITY_CODE_LENGTH:
            raise ValueError(f"a security code has {SECURITY_CODE_LENGTH} characters")
        _check_text(security_code, "security code")
    if terminator not in TERMINATORS:
        raise ValueError(f"terminator must be one of {TERMINATORS}, not {terminator!r}")
    text = (security_code or "") + code + data
    if len(text) > COMMAND_BUFFER:
        raise ValueError(f"command of {len(text)} characters exceeds the console's buffer")
    return bytes((SOH,)) + text.encode("ascii") + terminator


def decode_command(
    buffer: bytes | bytearray,
    *,
    security: bool = False,
    terminator: bytes = b"",
    data_lengths: dict[str, int] = COMMAND_DATA_LENGTHS,
) -> tuple[int, Command | Malformed | None]:
    """The console's side: the first command in `buffer`, or (0, None) for more bytes.

    With a terminator a command runs up to it; without one it is the security code (when
    `security`), 6 characters of function code and the data length `data_lengths` gives.
    Bytes before SOH (ESC included) are one "garbage" item.
    """
    wire = bytes(buffer)
    if not wire:
        return 0, None
    if wire[0] != SOH:
        end = _next_soh(wire, 1)
        return end, Malformed(wire[:end], f"{end} byte(s) before SOH", "garbage")
    head = SECURITY_CODE_LENGTH if security else 0
    if terminator:
        stop = wire.find(terminator, 1, COMMAND_BUFFER + 2 + len(terminator))
        limit = stop if stop != -1 else min(len(wire), COMMAND_BUFFER + 2)
        cut = wire.find(SOH, 1, limit)
        if cut != -1:
            return cut, Malformed(wire[:cut], "command cut short by a new SOH", "truncated")
        if stop == -1:
            if len(wire) <= COMMAND_BUFFER + 1:
                return 0, None
            reason = f"no terminator within {COMMAND_BUFFER} characters"
            return limit, Malformed(wire[:limit], reason, "malformed")
        body = wire[1:stop].decode("latin-1")
        used = stop + len(terminator)
    else:
        need = 1 + head + FUNCTION_CODE_LENGTH
        if len(wire) >= need:
            code = wire[1 + head : need].decode("latin-1")
            need += data_lengths.get(code[:4], 0)
        cut = wire.find(SOH, 1, need)
        if cut != -1:
            return cut, Malformed(wire[:cut], "command cut short by a new SOH", "truncated")
        if len(wire) < need:
            return 0, None
        body = wire[1:need].decode("latin-1")
        used = need
    if len(body) < head + 1:
        return used, Malformed(wire[:used], "command without a function code", "malformed")
    security_code = body[:head] if security else None
    code = body[head : head + FUNCTION_CODE_LENGTH]
    return used, Command(code, body[head + FUNCTION_CODE_LENGTH :], security_code)


def _next_soh(wire: bytes, start: int) -> int:
    index = wire.find(SOH, start)
    return len(wire) if index == -1 else index


# ======================================================================================
# Replies
# ======================================================================================
INVENTORY_FIELDS = (
    "volume",
    "tc_volume",
    "ullage",
    "height",
    "water",
    "temperature",
    "water_volume",
)
DELIVERY_FIELDS = (
    "start_volume",
    "start_tc_volume",
    "start_water",
    "start_temperature",
    "end_volume",
    "end_tc_volume",
    "end_water",
    "end_temperature",
    "start_height",
    "end_height",
)

Floats: TypeAlias = tuple[Decimal | None, ...]


def _named_floats(item: Any, names: Sequence[str]) -> Floats:
    """The floats an item sends, in wire order: its named fields cut to NN, then extras."""
    named = tuple(getattr(item, name) for name in names)
    count: int = item.float_count
    return named[:count] if count <= len(named) else named + item.extra


def _check_floats(item: Any, names: Sequence[str]) -> None:
    count: int = item.float_count
    if count < 0 or count > 0xFF:
        raise ValueError(f"float count {count} does not fit NN (two hex digits)")
    extra = max(0, count - len(names))
    if len(item.extra) != extra:
        raise ValueError(f"NN {count} needs {extra} extra float(s), not {len(item.extra)}")
    if any(getattr(item, name) is not None for name in names[count:]):
        raise ValueError(f"NN {count}: fields past the count must be None")


@dataclass(frozen=True, slots=True)
class TankInventory:
    """One tank of an i201 reply (or one row of a printed I201 report).

    `float_count` is NN as sent: the named fields take the first floats in the facts'
    order, fields past NN are None, floats past the seventh are kept in `extra`. A
    non-finite float (NaN from a failed probe) reads as None. `product` is the one-char
    product code of i201, or the label printed in an I201 report.
    """

    tank: int
    product: str
    status: int = 0
    volume: Decimal | None = None
    tc_volume: Decimal | None = None
    ullage: Decimal | None = None
    height: Decimal | None = None
    water: Decimal | None = None
    temperature: Decimal | None = None
    water_volume: Decimal | None = None
    extra: Floats = ()
    float_count: int = len(INVENTORY_FIELDS)

    def __post_init__(self) -> None:
        _check_floats(self, INVENTORY_FIELDS)

    @classmethod
    def from_floats(cls, tank: int, product: str, status: int, floats: Floats) -> TankInventory:
        known = len(INVENTORY_FIELDS)
        named = dict(zip(INVENTORY_FIELDS, floats[:known], strict=False))
        return cls(tank, product, status, **named, extra=floats[known:], float_count=len(floats))

    @property
    def floats(self) -> Floats:
        return _named_floats(self, INVENTORY_FIELDS)

    @property
    def delivery_in_progress(self) -> bool:
        return bool(self.status & STATUS_DELIVERY_IN_PROGRESS)

    @property
    def leak_test_in_progress(self) -> bool:
        return bool(self.status & STATUS_LEAK_TEST_IN_PROGRESS)

    @property
    def invalid_height(self) -> bool:
        return bool(self.status & STATUS_INVALID_HEIGHT)


@dataclass(frozen=True, slots=True)
class Inventory:
    """i201: `tank` is the TT echoed (0 = all tanks); `at` is the console's clock."""

    tank: int
    at: datetime
    tanks: tuple[TankInventory, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One delivery of an i202 reply; `float_count` works as in TankInventory."""

    start: datetime
    end: datetime
    start_volume: Decimal | None = None
    start_tc_volume: Decimal | None = None
    start_water: Decimal | None = None
    start_temperature: Decimal | None = None
    end_volume: Decimal | None = None
    end_tc_volume: Decimal | None = None
    end_water: Decimal | None = None
    end_temperature: Decimal | None = None
    start_height: Decimal | None = None
    end_height: Decimal | None = None
    extra: Floats = ()
    float_count: int = len(DELIVERY_FIELDS)

    def __post_init__(self) -> None:
        _check_floats(self, DELIVERY_FIELDS)

    @classmethod
    def from_floats(cls, start: datetime, end: datetime, floats: Floats) -> DeliveryRecord:
        known = len(DELIVERY_FIELDS)
        named = dict(zip(DELIVERY_FIELDS, floats[:known], strict=False))
        return cls(start, end, **named, extra=floats[known:], float_count=len(floats))

    @property
    def floats(self) -> Floats:
        return _named_floats(self, DELIVERY_FIELDS)


@dataclass(frozen=True, slots=True)
class TankDeliveries:
    tank: int
    product: str
    deliveries: tuple[DeliveryRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """i202: the deliveries each tank has on record."""

    tank: int
    at: datetime
    tanks: tuple[TankDeliveries, ...] = ()


@dataclass(frozen=True, slots=True)
class TankAlarmCodes:
    tank: int
    codes: tuple[int, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(alarm_name(code) for code in self.codes)


@dataclass(frozen=True, slots=True)
class AlarmStatus:
    """i205: the alarms active on each tank; a tank with none is listed with no codes."""

    tank: int
    at: datetime
    tanks: tuple[TankAlarmCodes, ...] = ()


@dataclass(frozen=True, slots=True)
class SystemStatus:
    """i101: the facts give no layout, so the date is read when present and the rest kept."""

    code: str
    at: datetime | None
    data: str = ""


@dataclass(frozen=True, slots=True)
class ClockReply:
    """i501 (clock read) or s501 (clock set): the console's time after the command."""

    code: str
    at: datetime
    data: str = ""  # anything after the date, kept but not interpreted


@dataclass(frozen=True, slots=True)
class UnknownReply:
    """A well-formed, checksummed reply to a function code this codec does not read."""

    code: str
    data: str


@dataclass(frozen=True, slots=True)
class Unsupported:
    """`SOH 9999FF1B ETX`: the console does not support (or refused) the command."""


@dataclass(frozen=True, slots=True)
class DisplayReport:
    """A display-format reply: a printed report. `code` is its function-code line if any."""

    code: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """Bytes that are not a valid reply. Decoding reports these; it never raises."""

    raw: bytes
    reason: str
    kind: MalformedKind


Reply: TypeAlias = (
    Inventory
    | DeliveryReport
    | AlarmStatus
    | SystemStatus
    | ClockReply
    | UnknownReply
    | Unsupported
    | DisplayReport
)


class _Bad(Exception):
    """A field that cannot be read; turned into Malformed at the decode boundary."""


class _Fields:
    """Reads fixed-width fields off a reply body, left to right."""

    def __init__(self, text: str, position: int) -> None:
        self.text = text
        self.position = position

    @property
    def remaining(self) -> int:
        return len(self.text) - self.position

    def rest(self) -> str:
        rest = self.text[self.position :]
        self.position = len(self.text)
        return rest

    def take(self, width: int, what: str) -> str:
        if self.remaining < width:
            raise _Bad(f"{what}: the reply ends at character {len(self.text)}")
        value = self.text[self.position : self.position + width]
        self.position += width
        return value

    def _convert(self, width: int, what: str, convert: Callable[[str], Any]) -> Any:
        start = self.position
        value = self.take(width, what)
        try:
            return convert(value)
        except ValueError as exc:
            raise _Bad(f"{what} at character {start}: {value!r} ({exc})") from exc

    def decimal(self, width: int, what: str) -> int:
        return int(self._convert(width, what, _decimal_digits))

    def hex(self, width: int, what: str) -> int:
        return int(self._convert(width, what, _hex_digits))

    def timestamp(self, what: str) -> datetime:
        at: datetime = self._convert(10, what, parse_timestamp)
        return at

    def floats(self, count: int, what: str) -> Floats:
        return tuple(self._convert(8, f"{what} {n + 1}", decode_float) for n in range(count))


def _decimal_digits(text: str) -> int:
    if not _DIGITS.issuperset(text):
        raise ValueError("not decimal")
    return int(text)


def _hex_digits(text: str) -> int:
    if not _HEX.issuperset(text):
        raise ValueError("not hex")
    return int(text, 16)


def _selector(code: str) -> int:
    try:
        return _decimal_digits(code[4:6])
    except ValueError:
        raise _Bad(f"tank number {code[4:6]!r} in {code!r} is not decimal") from None


def _parse_inventory(code: str, fields: _Fields) -> Inventory:
    selected = _selector(code)
    at = fields.timestamp("date")
    tanks = []
    while fields.remaining:
        tank = fields.decimal(2, "tank number")
        product = fields.take(1, f"tank {tank} product code")
        status = fields.hex(4, f"tank {tank} status bits")
        count = fields.hex(2, f"tank {tank} float count NN")
        floats = fields.floats(count, f"tank {tank} float")
        tanks.append(TankInventory.from_floats(tank, product, status, floats))
    return Inventory(selected, at, tuple(tanks))


def _counts(text: str) -> list[int]:
    """A count field as it may be meant: decimal first, hex when that reads differently."""
    options = []
    if _DIGITS.issuperset(text):
        options.append(int(text))
    if _HEX.issuperset(text) and int(text, 16) not in options:
        options.append(int(text, 16))
    return options


def _tank_deliveries(fields: _Fields) -> TankDeliveries:
    tank = fields.decimal(2, "tank number")
    product = fields.take(1, f"tank {tank} product code")
    start = fields.position
    dd = fields.take(2, f"tank {tank} delivery count")
    options = _counts(dd)
    if not options:
        raise _Bad(f"tank {tank} delivery count at character {start}: {dd!r} is not a number")
    # The facts do not say whether dd is decimal or hex; they differ only from 10 up.
    # Take the reading under which this tank's records parse.
    failure: _Bad | None = None
    after = fields.position
    for count in options:
        fields.position = after
        try:
            records = tuple(_delivery(fields, tank, n) for n in range(count))
        except _Bad as exc:
            failure = failure or exc
            continue
        return TankDeliveries(tank, product, records)
    assert failure is not None
    raise failure


def _delivery(fields: _Fields, tank: int, number: int) -> DeliveryRecord:
    what = f"tank {tank} delivery {number + 1}"
    start = fields.timestamp(f"{what} start")
    end = fields.timestamp(f"{what} end")
    count = fields.hex(2, f"{what} float count NN")
    return DeliveryRecord.from_floats(start, end, fields.floats(count, f"{what} float"))


def _parse_deliveries(code: str, fields: _Fields) -> DeliveryReport:
    selected = _selector(code)
    at = fields.timestamp("date")
    tanks = []
    while fields.remaining:
        tanks.append(_tank_deliveries(fields))
    return DeliveryReport(selected, at, tuple(tanks))


def _parse_alarms(code: str, fields: _Fields) -> AlarmStatus:
    selected = _selector(code)
    at = fields.timestamp("date")
    tanks = []
    while fields.remaining:
        tank = fields.decimal(2, "tank number")
        count = fields.decimal(2, f"tank {tank} alarm count")
        codes = tuple(fields.decimal(2, f"tank {tank} alarm code") for _ in range(count))
        tanks.append(TankAlarmCodes(tank, codes))
    return AlarmStatus(selected, at, tuple(tanks))


def _parse_system_status(code: str, fields: _Fields) -> SystemStatus:
    at: datetime | None = None
    if fields.remaining >= 10:
        try:
            at = parse_timestamp(fields.text[fields.position : fields.position + 10])
        except ValueError:
            at = None
        else:
            fields.position += 10
    return SystemStatus(code, at, fields.rest())


def _parse_clock(code: str, fields: _Fields) -> ClockReply:
    return ClockReply(code, fields.timestamp("date"), fields.rest())


_PARSERS: dict[str, Callable[[str, _Fields], Reply]] = {
    "i201": _parse_inventory,
    "i202": _parse_deliveries,
    "i205": _parse_alarms,
    "i101": _parse_system_status,
    "i501": _parse_clock,
    "s501": _parse_clock,
}

_REFUSAL = "9999"
_DISPLAY_CODE = re.compile(r"^[A-Z][0-9A-Z]{5}$")


def _looks_computer(text: str) -> bool:
    """Computer-format replies start with their lower-case function code (`i201…`)."""
    return len(text) >= 2 and "a" <= text[0] <= "z" and text[1] in _HEX


def _display_code(text: str) -> str | None:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if _DISPLAY_CODE.match(line) else None
    return None


def _judge(raw: bytes) -> Reply | Malformed:
    """Classify and read one complete reply `raw` (SOH … ETX)."""
    text = raw[1:-1].decode("latin-1")
    if not text:
        return Malformed(raw, "empty reply", "malformed")
    if text.startswith(_REFUSAL) and len(text) == len(_REFUSAL) + 4:
        digits = text[len(_REFUSAL) :]
        if _HEX.issuperset(digits):
            return _check(raw, len(_REFUSAL) + 1, digits) or Unsupported()
    amp = text.rfind("&&")  # from the end: product labels may contain "&"
    tail = text[amp + 2 :] if amp != -1 else ""
    if amp == -1 or len(tail) != 4 or not _HEX.issuperset(tail):
        if _looks_computer(text):
            what = "no &&" if amp == -1 else f"{tail!r} after the last && is not CCCC"
            return Malformed(raw, f"computer-format reply without a checksum ({what})", "malformed")
        return DisplayReport(_display_code(text), text)
    bad = _check(raw, amp + 3, tail)
    if bad is not None:
        return bad
    content = text[:amp]
    if len(content) < FUNCTION_CODE_LENGTH:
        return Malformed(raw, f"function code {content!r} cut short", "malformed")
    code = content[:FUNCTION_CODE_LENGTH]
    parser = _PARSERS.get(code[:4])
    if parser is None:
        return UnknownReply(code, content[FUNCTION_CODE_LENGTH:])
    try:
        return parser(code, _Fields(content, FUNCTION_CODE_LENGTH))
    except _Bad as exc:
        return Malformed(raw, f"{code}: {exc}", "malformed")


def _check(raw: bytes, covered: int, digits: str) -> Malformed | None:
    """Verify CCCC = `digits` over raw[:covered] (SOH through &&)."""
    expected, received = checksum(raw[:covered]), int(digits, 16)
    if expected == received:
        return None
    reason = f"checksum mismatch: computed {expected:04X}, received {received:04X}"
    return Malformed(raw, reason, "bad_checksum")


def decode(buffer: bytes | bytearray, *, etx: int = ETX) -> tuple[int, Reply | Malformed | None]:
    """Decode the first item of `buffer`: (bytes consumed, item), or (0, None) for more bytes.

    Bytes before SOH are one "garbage" item. A reply runs from SOH to the first `etx`; a
    second SOH before it means the first reply was cut short (the console restarted or
    aborted it), reported as "malformed" up to that SOH. Never raises.
    """
    wire = bytes(buffer)
    if not wire:
        return 0, None
    if wire[0] != SOH:
        end = _next_soh(wire, 1)
        return end, Malformed(wire[:end], f"{end} byte(s) before SOH", "garbage")
    stop = wire.find(etx, 1, MAX_RESPONSE_BYTES)
    cut = wire.find(SOH, 1, stop if stop != -1 else MAX_RESPONSE_BYTES)
    if cut != -1:
        reason = f"reply cut short: a new SOH {cut} byte(s) in, no ETX before it"
        return cut, Malformed(wire[:cut], reason, "truncated")
    if stop == -1:
        if len(wire) < MAX_RESPONSE_BYTES:
            return 0, None
        reason = f"no ETX within {MAX_RESPONSE_BYTES} bytes"
        return MAX_RESPONSE_BYTES, Malformed(wire[:MAX_RESPONSE_BYTES], reason, "malformed")
    return stop + 1, _judge(wire[: stop + 1])


def decode_all(
    buffer: bytes | bytearray, *, etx: int = ETX
) -> list[tuple[bytes, Reply | Malformed]]:
    """Decode a finished capture into (raw, item) pairs; a tail without ETX is malformed."""
    wire = bytes(buffer)
    items: list[tuple[bytes, Reply | Malformed]] = []
    position = 0
    while position < len(wire):
        used, item = decode(wire[position:], etx=etx)
        if item is None:
            tail = wire[position:]
            reason = "capture ends inside a reply (no ETX)"
            items.append((tail, Malformed(tail, reason, "truncated")))
            break
        items.append((wire[position : position + used], item))
        position += used
    return items


# ======================================================================================
# Encoding replies (the simulator's side)
# ======================================================================================
def encode_computer(body: str, *, etx: int = ETX) -> bytes:
    """SOH + body + `&&` + CCCC + ETX."""
    head = bytes((SOH,)) + body.encode("latin-1") + b"&&"
    return head + f"{checksum(head):04X}".encode("ascii") + bytes((etx,))


def _float_text(floats: Floats) -> str:
    return f"{len(floats):02X}" + "".join(encode_float(value) for value in floats)


def _two_digits(value: int, what: str) -> str:
    if not 0 <= value <= 99:
        raise ValueError(f"{what} {value} does not fit two digits")
    return f"{value:02d}"


def _product_code(product: str, tank: int) -> str:
    # The i2xx replies carry one character; a longer product is a printed report's label.
    if not product:
        raise ValueError(f"tank {tank} has no product code")
    return product[:1]


def _function_code(code: str, family: frozenset[str] | None) -> str:
    """A reply's own function code: 6 characters of a family its type is read back as."""
    if len(code) != FUNCTION_CODE_LENGTH:
        raise ValueError(f"function code {code!r} is not {FUNCTION_CODE_LENGTH} characters")
    if family is not None and code[:4] not in family:
        raise ValueError(f"function code {code!r} is not one of {sorted(family)}")
    if family is None and (code[:4] in _PARSERS or code.startswith(_REFUSAL)):
        raise ValueError(f"function code {code!r} would be read as another reply")
    return code


def reply_body(item: Reply) -> str:
    """The text between SOH and `&&` of a computer-format reply.

    ValueError for a value the reply cannot carry so that it reads back the same: a number
    wider than its field, a product code missing, a function code of another reply.
    """
    match item:
        case Inventory():
            parts = [f"i201{_two_digits(item.tank, 'tank number')}", format_timestamp(item.at)]
            for tank in item.tanks:
                if not 0 <= tank.status <= 0xFFFF:
                    raise ValueError(f"tank {tank.tank} status {tank.status} is not 16 bits")
                parts.append(_two_digits(tank.tank, "tank number"))
                parts.append(f"{_product_code(tank.product, tank.tank)}{tank.status:04X}")
                parts.append(_float_text(tank.floats))
            return "".join(parts)
        case DeliveryReport():
            parts = [f"i202{_two_digits(item.tank, 'tank number')}", format_timestamp(item.at)]
            for tank_deliveries in item.tanks:
                records = tank_deliveries.deliveries
                number = tank_deliveries.tank
                parts.append(_two_digits(number, "tank number"))
                parts.append(_product_code(tank_deliveries.product, number))
                parts.append(_two_digits(len(records), f"tank {number} delivery count"))
                for record in records:
                    parts += [format_timestamp(record.start), format_timestamp(record.end)]
                    parts.append(_float_text(record.floats))
            return "".join(parts)
        case AlarmStatus():
            parts = [f"i205{_two_digits(item.tank, 'tank number')}", format_timestamp(item.at)]
            for alarms in item.tanks:
                parts.append(_two_digits(alarms.tank, "tank number"))
                parts.append(_two_digits(len(alarms.codes), f"tank {alarms.tank} alarm count"))
                parts += [_two_digits(code, "alarm code") for code in alarms.codes]
            return "".join(parts)
        case SystemStatus():
            code = _function_code(item.code, frozenset({"i101"}))
            if item.at is None:
                try:
                    parse_timestamp(item.data[:10])
                except ValueError:
                    return code + item.data
                raise ValueError(f"data {item.data[:10]!r} would be read as the date")
            return code + format_timestamp(item.at) + item.data
        case ClockReply():
            code = _function_code(item.code, frozenset({"i501", "s501"}))
            return code + format_timestamp(item.at) + item.data
        case UnknownReply():
            return _function_code(item.code, None) + item.data
    raise ValueError(f"{type(item).__name__} is not a computer-format reply")


def _framed(text: str, etx: int, what: str) -> bytes:
    """`text` as the bytes between SOH and ETX: latin-1, and holding neither (either would
    end the reply early)."""
    try:
        data = text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not latin-1 text") from None
    for byte, name in ((SOH, "SOH"), (etx, "the ETX")):
        if byte in data:
            raise ValueError(f"{what} holds {name} (0x{byte:02X}), which would end the reply")
    return data


def encode_reply(item: Reply, *, etx: int = ETX) -> bytes:
    """Wire bytes of a reply, as a console sends it; decoding them gives `item` back (floats
    to a single's precision, a product to its first character) or this raises ValueError."""
    if isinstance(item, Unsupported):
        head = bytes((SOH,)) + _REFUSAL.encode("ascii")
        refusal = f"{checksum(head):04X}".encode("ascii")
        # Its SOH starts it (even a terminator reprogrammed to 0x01 is read after it).
        if etx in refusal or etx in head[1:]:
            raise ValueError("the refusal would hold the terminator")
        return head + refusal + bytes((etx,))
    if isinstance(item, DisplayReport):
        data = _framed(item.text, etx, "the report")
        if not isinstance(_judge(bytes((SOH,)) + data + bytes((etx,))), DisplayReport):
            raise ValueError("the report would be read as a computer-format reply or as empty")
        return bytes((SOH,)) + data + bytes((etx,))
    head = bytes((SOH,)) + _framed(reply_body(item), etx, "the reply") + b"&&"
    check = f"{checksum(head):04X}".encode("ascii")
    if etx in check:
        # A terminator reprogrammed to a hex digit would end the reply inside its checksum.
        raise ValueError(f"the reply's checksum {check.decode()} holds the terminator")
    return head + check + bytes((etx,))


# ======================================================================================
# Display format: the printed I201 in-tank inventory report
# ======================================================================================
# The facts give no layout, so this reads the common TLS-300/350 report:
#
#     I20100
#     JAN 22, 1996  3:06 PM
#     <station header lines>
#     IN-TANK INVENTORY
#     TANK PRODUCT             VOLUME TC VOLUME   ULLAGE   HEIGHT    WATER     TEMP
#       1  UNLEADED              5329      5413     4699    48.97     0.00    37.39
#
# What is accepted:
# - Line ends LF, CRLF or CR; blank lines and leading/trailing spaces anywhere.
# - The header is the first line whose first word is TANK and in which at least two column
#   names below are recognised. Column names are matched longest first, case-insensitive,
#   with any spacing inside: TC VOLUME / TC VOL / NET VOLUME / TC GALLONS / TC LITRES ->
#   tc_volume; WATER VOLUME / WATER VOL -> water_volume; 90% ULLAGE / 95% ULLAGE / ULLAGE
#   -> ullage; GROSS VOLUME / VOLUME / GALLONS / LITRES / LITERS -> volume; HEIGHT /
#   INCHES / MM -> height; WATER -> water; TEMPERATURE / TEMP / DEG F / DEG C ->
#   temperature. Any other word is a column whose values are ignored.
# - A tank row follows the header and starts with a 1-2 digit tank number; its values are
#   the numbers at the end of the row (thousands commas allowed), at most one per column;
#   what lies between the tank number and them is the product label (spaces, digits and
#   "&" allowed). A row with one number per column maps them in order; a row with fewer
#   (a blank column) maps each number to the column whose heading ends nearest its right
#   edge. Rows without numbers (PROBE OUT …) and other lines after the header are kept in
#   `unparsed`.
# - The function code is the first non-blank line when it looks like one (I20100); the
#   print date is the first line before the header in one of _PRINT_DATES.
_COLUMN_NAMES: tuple[tuple[str, str], ...] = (
    ("TC VOLUME", "tc_volume"),
    ("TC VOL", "tc_volume"),
    ("NET VOLUME", "tc_volume"),
    ("TC GALLONS", "tc_volume"),
    ("TC LITRES", "tc_volume"),
    ("TC LITERS", "tc_volume"),
    ("WATER VOLUME", "water_volume"),
    ("WATER VOL", "water_volume"),
    ("90% ULLAGE", "ullage"),
    ("95% ULLAGE", "ullage"),
    ("ULLAGE", "ullage"),
    ("GROSS VOLUME", "volume"),
    ("VOLUME", "volume"),
    ("GALLONS", "volume"),
    ("LITRES", "volume"),
    ("LITERS", "volume"),
    ("HEIGHT", "height"),
    ("INCHES", "height"),
    ("MM", "height"),
    ("WATER", "water"),
    ("TEMPERATURE", "temperature"),
    ("TEMP", "temperature"),
    ("DEG F", "temperature"),
    ("DEG C", "temperature"),
)
_COLUMN_PATTERNS = tuple(
    (re.compile(r"\s+".join(map(re.escape, name.split())) + r"(?!\S)", re.IGNORECASE), fills)
    for name, fills in sorted(_COLUMN_NAMES, key=lambda pair: -len(pair[0]))
)
# All of them in one alternation, tried in the same order (the first that matches wins): one
# match a heading instead of 24 (a 64 KB header of unknown words took 0.6 s).
_ANY_COLUMN = re.compile(
    "|".join(f"({pattern.pattern})" for pattern, _fills in _COLUMN_PATTERNS), re.IGNORECASE
)
_PRINT_DATES = (
    "%b %d, %Y %I:%M %p",  # JAN 22, 1996 3:06 PM
    "%b %d, %Y %H:%M",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %H:%M",
    "%Y-%m-%d %H:%M",
    "%y-%m-%d %H:%M",  # TLS2: 22-05-01 14:58
    "%d.%m.%Y %H:%M",
)
# A tank number and something after it; the rest of the row is read token by token. (Not
# `(\S.*?)\s*$`: that backtracks over every blank of a long row, quadratic in its length.)
_ROW = re.compile(r"\s*(\d{1,2})\s+\S")
_NUMBER = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?$")


@dataclass(frozen=True, slots=True)
class Column:
    """One heading of the report: the field it fills (None: ignored) and where it ends."""

    name: str
    fills: str | None
    end: int


@dataclass(frozen=True, slots=True)
class DisplayInventory:
    """An I201 report read back into numbers. Status bits are not printed: 0 here."""

    code: str | None
    printed_at: datetime | None
    columns: tuple[Column, ...]
    tanks: tuple[TankInventory, ...] = ()
    unparsed: tuple[str, ...] = ()


def _columns(header: str) -> tuple[Column, ...] | None:
    words = header.split()
    if not words or words[0].upper() != "TANK":
        return None
    position = header.upper().find("TANK") + 4
    product = re.search(r"\bPRODUCT\b", header[position:], re.IGNORECASE)
    if product is not None:
        position += product.end()
    columns = []
    while True:
        while position < len(header) and header[position].isspace():
            position += 1
        if position >= len(header):
            break
        match = _ANY_COLUMN.match(header, position)
        if match is not None and match.lastindex is not None:
            fills = _COLUMN_PATTERNS[match.lastindex - 1][1]
            columns.append(Column(" ".join(match.group(0).upper().split()), fills, match.end()))
            position = match.end()
        else:
            end = position
            while end < len(header) and not header[end].isspace():
                end += 1
            columns.append(Column(header[position:end].upper(), None, end))
            position = end
    known = [column for column in columns if column.fills is not None]
    return tuple(columns) if len(known) >= 2 else None


_PRINT_DATE_CHARS = range(8, 33)  # "1/2/2024 1:00" to "SEPTEMBER 30, 2024 12:00 PM"


def _print_date(line: str) -> datetime | None:
    text = " ".join(line.split())
    # strptime costs ~10 µs a pattern: a reply of 30000 short lines took 2.7 s untested.
    if len(text) not in _PRINT_DATE_CHARS or not any(char.isdigit() for char in text):
        return None
    for pattern in _PRINT_DATES:
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    return None


def _row(line: str, columns: tuple[Column, ...]) -> TankInventory | None:
    match = _ROW.match(line)
    if match is None:
        return None
    tokens = list(re.finditer(r"\S+", line))[1:]  # after the tank number
    numbers: list[re.Match[str]] = []
    while tokens and len(numbers) < len(columns) and _NUMBER.match(tokens[-1].group(0)):
        if not any(char.isdigit() for char in tokens[-1].group(0)):
            break
        numbers.insert(0, tokens.pop())
    if not numbers or not tokens:
        return None  # no values, or nothing left for a product label
    label = line[tokens[0].start() : tokens[-1].end()]
    if len(numbers) == len(columns):
        placed = list(zip(columns, numbers, strict=True))
    else:
        placed = _align(columns, numbers)
    values: dict[str, Decimal] = {}
    for column, number in placed:
        if column.fills is not None and column.fills not in values:
            values[column.fills] = Decimal(number.group(0).replace(",", ""))
    floats = tuple(values.get(name) for name in INVENTORY_FIELDS)
    return TankInventory.from_floats(int(match.group(1)), label, 0, floats)


def _align(
    columns: tuple[Column, ...], numbers: list[re.Match[str]]
) -> list[tuple[Column, re.Match[str]]]:
    """Put each number under the heading that ends nearest its right edge, keeping order
    (the left one of two as near)."""
    ends = [column.end for column in columns]  # increasing: headings are read left to right
    placed = []
    first_free = 0
    for index, number in enumerate(numbers):
        last_allowed = len(columns) - (len(numbers) - index)
        # The nearest end is the first at or right of the number's, or the one before it:
        # found by bisection, as a scan of every heading made a wide report quadratic.
        right = bisect.bisect_left(ends, number.end(), first_free, last_allowed + 1)
        nearby = [c for c in (right - 1, right) if first_free <= c <= last_allowed]
        best = min(nearby, key=lambda c: abs(ends[c] - number.end()))
        placed.append((columns[best], number))
        first_free = best + 1
    return placed


def parse_display_inventory(text: str) -> DisplayInventory | Malformed:
    """Read a printed I201 in-tank inventory report (see the notes above)."""
    lines = text.splitlines()
    code = _display_code(text)
    printed_at: datetime | None = None
    columns: tuple[Column, ...] | None = None
    tanks: list[TankInventory] = []
    unparsed: list[str] = []
    for line in lines:
        if columns is None:
            columns = _columns(line)
            if columns is None and printed_at is None:
                printed_at = _print_date(line)
            continue
        if not line.strip():
            continue
        row = _row(line, columns)
        if row is None:
            unparsed.append(line.strip())
        else:
            tanks.append(row)
    if columns is None:
        reason = "no inventory header (a line starting TANK with two known column names)"
        return Malformed(text.encode("latin-1", "replace"), reason, "malformed")
    return DisplayInventory(code, printed_at, columns, tuple(tanks), tuple(unparsed))


def _display_number(value: Decimal | None, places: int) -> str:
    if value is None:
        return ""
    return f"{value:.{places}f}"


def format_display_inventory(
    at: datetime,
    tanks: Sequence[TankInventory],
    *,
    code: str = "I20100",
    header: Sequence[str] = (),
    line_end: str = "\r\n",
) -> str:
    """A printed I201 report in the TLS-350 layout (used by the simulator)."""
    hour = at.strftime("%I").lstrip("0") or "12"
    lines = ["", code, f"{at.strftime('%b %d, %Y').upper()} {hour:>2}:{at:%M} {at:%p}", ""]
    lines += [*header, "", "IN-TANK INVENTORY", ""]
    lines.append("TANK PRODUCT             VOLUME TC VOLUME   ULLAGE   HEIGHT    WATER     TEMP")
    for tank in tanks:
        lines.append(
            f"{tank.tank:>3}  {tank.product:<20.20}"
            f"{_display_number(tank.volume, 0):>6}"
            f"{_display_number(tank.tc_volume, 0):>10}"
            f"{_display_number(tank.ullage, 0):>9}"
            f"{_display_number(tank.height, 2):>9}"
            f"{_display_number(tank.water, 2):>9}"
            f"{_display_number(tank.temperature, 2):>9}"
        )
    lines += ["", ""]
    return line_end.join(lines)


# ======================================================================================
# Human and JSON description (used by `edgectl decode tls`)
# ======================================================================================
def _number(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _tank_inventory(tank: TankInventory) -> dict[str, Any]:
    described: dict[str, Any] = {"tank": tank.tank, "product": tank.product}
    described["status"] = f"{tank.status:04X}"
    described["delivery_in_progress"] = tank.delivery_in_progress
    described["leak_test_in_progress"] = tank.leak_test_in_progress
    described["invalid_height"] = tank.invalid_height
    described["float_count"] = tank.float_count
    for name in INVENTORY_FIELDS:
        described[name] = _number(getattr(tank, name))
    described["extra"] = [_number(value) for value in tank.extra]
    return described


def _delivery_record(record: DeliveryRecord) -> dict[str, Any]:
    described: dict[str, Any] = {
        "start": record.start.isoformat(),
        "end": record.end.isoformat(),
        "float_count": record.float_count,
    }
    for name in DELIVERY_FIELDS:
        described[name] = _number(getattr(record, name))
    described["extra"] = [_number(value) for value in record.extra]
    return described


def describe(item: Reply | Malformed, raw: bytes | None = None) -> dict[str, Any]:
    """A JSON-able description of a decoded item (`raw`: the bytes it came from)."""
    described: dict[str, Any]
    match item:
        case Malformed():
            described = {"type": item.kind.upper(), "valid": False, "reason": item.reason}
        case Unsupported():
            described = {"type": "UNSUPPORTED", "valid": True, "code": _REFUSAL}
        case Inventory():
            described = {
                "type": "INVENTORY",
                "valid": True,
                "code": f"i201{item.tank:02d}",
                "at": item.at.isoformat(),
                "tanks": [_tank_inventory(tank) for tank in item.tanks],
            }
        case DeliveryReport():
            described = {
                "type": "DELIVERIES",
                "valid": True,
                "code": f"i202{item.tank:02d}",
                "at": item.at.isoformat(),
                "tanks": [
                    {
                        "tank": tank.tank,
                        "product": tank.product,
                        "deliveries": [_delivery_record(r) for r in tank.deliveries],
                    }
                    for tank in item.tanks
                ],
            }
        case AlarmStatus():
            described = {
                "type": "ALARMS",
                "valid": True,
                "code": f"i205{item.tank:02d}",
                "at": item.at.isoformat(),
                "tanks": [
                    {
                        "tank": tank.tank,
                        "alarms": [{"code": code, "name": alarm_name(code)} for code in tank.codes],
                    }
                    for tank in item.tanks
                ],
            }
        case SystemStatus():
            described = {
                "type": "SYSTEM_STATUS",
                "valid": True,
                "code": item.code,
                "at": None if item.at is None else item.at.isoformat(),
                "data": item.data,
            }
        case ClockReply():
            described = {
                "type": "CLOCK",
                "valid": True,
                "code": item.code,
                "at": item.at.isoformat(),
                "data": item.data,
            }
        case UnknownReply():
            described = {"type": "UNKNOWN", "valid": True, "code": item.code, "data": item.data}
        case DisplayReport():
            described = {"type": "DISPLAY", "valid": True, "code": item.code, "text": item.text}
            inventory = (
                parse_display_inventory(item.text)
                if item.code is not None and item.code.upper().startswith("I201")
                else None
            )
            if isinstance(inventory, DisplayInventory):
                described["printed_at"] = (
                    None if inventory.printed_at is None else inventory.printed_at.isoformat()
                )
                described["columns"] = [column.name for column in inventory.columns]
                described["tanks"] = [_tank_inventory(tank) for tank in inventory.tanks]
                described["unparsed"] = list(inventory.unparsed)
            elif isinstance(inventory, Malformed):
                described["inventory_error"] = inventory.reason
    if raw is not None:
        computer = not isinstance(item, (DisplayReport, Malformed)) or (
            isinstance(item, Malformed) and item.kind == "bad_checksum"
        )
        if computer and len(raw) >= 6:
            described["checksum"] = raw[-5:-1].decode("latin-1")
            described["checksum_ok"] = not isinstance(item, Malformed)
        described["raw"] = printable(raw)
    return described


_CONTROL_NAMES = {SOH: "<SOH>", ETX: "<ETX>", ESC: "<ESC>", 0x0A: "<LF>", 0x0D: "<CR>"}


def printable(raw: bytes, *, etx: int = ETX) -> str:
    """Raw bytes as text with control characters named: <SOH>i20100…&&EF20<ETX>.

    A reprogrammed `etx` is shown as <ETX> too; other bytes outside printable ASCII as <HH>.
    """
    out = []
    for byte in raw:
        if byte == etx:
            out.append("<ETX>")
        elif byte in _CONTROL_NAMES:
            out.append(_CONTROL_NAMES[byte])
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"<{byte:02X}>")
    return "".join(out)


# ======================================================================================
# One-line summaries (the `sniff` view of a console's line)
# ======================================================================================
COMMAND_NAMES: dict[str, str] = {
    "i101": "system status",
    "i201": "in-tank inventory",
    "I201": "in-tank inventory report",
    "i202": "delivery report",
    "i205": "tank alarms",
    "i501": "read the clock",
    "s501": "set the clock",
}
_TANK_COMMANDS = frozenset({"i201", "I201", "i202", "I202", "i205", "I205"})


def tank_number(code: str) -> int | None:
    """TT of a function code (`i20102` -> 2, 0 = all tanks); None unless two ASCII digits.

    Not `str.isdigit()`: it takes '³' and '٣' (which a line can carry) as digits, and
    `int()` then reads '٣' as 3 or refuses '³'.
    """
    selector = code[4:6]
    return int(selector) if len(selector) == 2 and _DIGITS.issuperset(selector) else None


def describe_command(command: Command) -> dict[str, Any]:
    """A JSON-able description of a command as sent (the security code is never included)."""
    function = command.code[:4]
    summary = COMMAND_NAMES.get(function, f"function {function}")
    tank = tank_number(command.code)
    if function in _TANK_COMMANDS and tank is not None:
        summary += ", all tanks" if tank == 0 else f", tank {tank}"
    if command.data:
        try:
            summary += f" to {parse_timestamp(command.data).isoformat(sep=' ', timespec='minutes')}"
        except ValueError:
            summary += f" with data {command.data}"
    return {
        "type": command.code,
        "valid": True,
        "code": command.code,
        "data": command.data,
        "security_code": command.security_code is not None,
        "summary": summary,
    }


def summarize(described: Mapping[str, Any]) -> str:
    """One line saying what a reply described by `describe` holds (figures in the console's
    units, as sent)."""
    if not described["valid"]:
        return str(described["reason"])
    kind, code = described["type"], described.get("code") or ""
    if kind == "UNSUPPORTED":
        return "9999FF1B: the console does not support (or refused) the command"
    head = code
    if described.get("at"):
        head += f" at {_minutes(described['at'])}"
    tanks = described.get("tanks")
    if kind == "INVENTORY" or (kind == "DISPLAY" and tanks is not None):
        body = "; ".join(_inventory_summary(tank) for tank in tanks or ()) or "no tanks"
        return f"{head or 'inventory report'}: {body}"
    if kind == "ALARMS":
        body = "; ".join(
            f"tank {tank['tank']}: "
            + (", ".join(f"{a['code']:02d} {a['name']}" for a in tank["alarms"]) or "none")
            for tank in tanks or ()
        )
        return f"{head}: {body or 'no tanks'}"
    if kind == "DELIVERIES":
        body = "; ".join(_deliveries_summary(tank) for tank in tanks or ())
        return f"{head}: {body or 'no tanks'}"
    if kind == "DISPLAY":
        lines = [line for line in str(described.get("text", "")).splitlines() if line.strip()]
        return f"{code or 'printed report'}: {len(lines)} line(s) of text"
    data = str(described.get("data") or "")
    return f"{head} {data}".strip() if data else head


def _inventory_summary(tank: Mapping[str, Any]) -> str:
    figures = ", ".join(
        f"{name.replace('_', ' ')} {tank[name]}"
        for name in ("volume", "tc_volume", "ullage", "height", "water", "temperature")
        if tank.get(name) is not None
    )
    flags = [
        name.replace("_", " ")
        for name in ("delivery_in_progress", "leak_test_in_progress", "invalid_height")
        if tank.get(name)
    ]
    text = f"tank {tank['tank']} ({tank['product']}) {figures}"
    return text + (f" [{', '.join(flags)}]" if flags else "")


def _deliveries_summary(tank: Mapping[str, Any]) -> str:
    records = tank["deliveries"]
    text = f"tank {tank['tank']}: {len(records)} deliveries"
    if records:
        last = max(records, key=lambda record: record["start"])
        text += f", last {_minutes(last['start'])} -> {_minutes(last['end'])}"
    return text


def _minutes(stamp: str) -> str:
    """An ISO timestamp as a console gives it: to the minute."""
    return stamp.replace("T", " ")[:16]
