"""Register maps of Modbus tank probes: TOML files as frozen models, and pure register decoding.

Every probe family lays its values out differently (addresses, 16/32-bit, float or scaled
integer, word order, units), so none of that is code: a map file says it, `load_register_map`
checks it, and `decode_registers` turns one tank's block of registers into values in the
canonical units mm, °C and L. No I/O beyond reading the map file, no clock.
"""

from __future__ import annotations

import enum
import math
import re
import struct
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    localcontext,
)
from pathlib import Path
from typing import Any, NoReturn

from drivers.base import DriverError, FrameError

# One FC03/FC04 request returns at most 125 registers (Modbus application protocol 6.3/6.4).
MAX_READ_REGISTERS = 125
_ADDRESS_LIMIT = 0x10000
# Canonical values keep at most this many decimals: enough for 0.1 mm, 0.01 °C or 0.001 L
# after a unit conversion whose factor (5/9 for °F) has no finite decimal expansion.
_RESOLUTION = Decimal("0.0001")
_RESOLUTION_EXPONENT = -4
# A float32 reaches 3.4e38: 39 integer digits, more than the default context's 28.
_WIDE = Context(prec=40)
# Encoding any value a caller gives: too large for a Decimal is Infinity here (then refused as
# outside the field's type), not decimal.Overflow.
_ENCODING = Context(traps=[InvalidOperation, DivisionByZero])
# Scales a map may give: beyond these a raw register means nothing in mm, °C or L, and the
# product of a float32 and the scale could overflow a Decimal.
_SCALE_LIMITS = (Decimal("1E-12"), Decimal("1E+12"))
# Used with fullmatch, ASCII only: `$` also matches before a final newline, and `\d` or
# Decimal() take digits of any script ('٣').
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_NUMBER = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")
_BIT_NUMBER = re.compile(r"[0-9]{1,2}")
_SHOWN = 60


def _shown(value: object) -> str:
    """A value from a map file or a device for a message: cut short, and never raising (an
    int of over 4300 digits has no str(), a deeply nested list no repr())."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 1]}…"


class RegisterMapError(DriverError):
    """A register map that cannot be used; the message names the file and the key."""

    code = "register_map"

    def __init__(self, problem: str, *, source: str, key: str | None = None) -> None:
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + problem)
        self.problem = problem
        self.source = source
        self.key = key


# ======================================================================================
# Vocabulary
# ======================================================================================
class WordOrder(enum.Enum):
    """Where the bytes A B C D of a big-endian 32-bit value sit in two registers.

    ABCD: high word first (Modbus's own byte order, Pneumercator); CDAB: low word first
    (Franklin); BADC: bytes swapped inside each word; DCBA: fully little-endian. A 16-bit
    value only knows "bytes swapped or not" (BADC and DCBA swap).
    """

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"

    @property
    def words_swapped(self) -> bool:
        return self in (WordOrder.CDAB, WordOrder.DCBA)

    @property
    def bytes_swapped(self) -> bool:
        return self in (WordOrder.BADC, WordOrder.DCBA)

    def to_bytes(self, words: Sequence[int]) -> bytes:
        """The value's big-endian bytes from its registers as read (one or two words)."""
        if len(words) == 1:
            data = words[0].to_bytes(2, "big")
        else:
            first, second = words
            high, low = (second, first) if self.words_swapped else (first, second)
            data = high.to_bytes(2, "big") + low.to_bytes(2, "big")
        return _swap_pairs(data) if self.bytes_swapped else data

    def to_words(self, data: bytes) -> list[int]:
        """The registers a device in this order holds for a value's big-endian bytes."""
        if self.bytes_swapped:
            data = _swap_pairs(data)
        words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        if len(words) == 2 and self.words_swapped:
            words.reverse()
        return words


def _swap_pairs(data: bytes) -> bytes:
    out = bytearray(data)
    out[0::2], out[1::2] = data[1::2], data[0::2]
    return bytes(out)


class ValueType(enum.Enum):
    """How the bits of a value are read. An integer with a scale is a "scaled integer"."""

    FLOAT32 = "float32"
    INT32 = "int32"
    UINT32 = "uint32"
    INT16 = "int16"
    UINT16 = "uint16"

    @property
    def width(self) -> int:
        """Registers the value occupies."""
        return 1 if self in (ValueType.INT16, ValueType.UINT16) else 2

    @property
    def struct_code(self) -> str:
        return _STRUCT_CODES[self]

    @property
    def is_integer(self) -> bool:
        return self is not ValueType.FLOAT32


_STRUCT_CODES = {
    ValueType.FLOAT32: ">f",
    ValueType.INT32: ">i",
    ValueType.UINT32: ">I",
    ValueType.INT16: ">h",
    ValueType.UINT16: ">H",
}


class Quantity(enum.Enum):
    """What a unit measures; each has one canonical unit that decoded values are given in."""

    LENGTH = "length"  # mm
    TEMPERATURE = "temperature"  # °C
    VOLUME = "volume"  # L
    RATIO = "ratio"  # %
    NUMBER = "number"  # a raw count or bit field, no unit


class Unit(enum.Enum):
    MM = "mm"
    CM = "cm"
    M = "m"
    IN = "in"
    FT = "ft"
    DEG_C = "degC"
    DEG_F = "degF"
    L = "L"
    GAL = "gal"  # US gallon, 3.785411784 L exactly
    M3 = "m3"
    PERCENT = "%"
    RAW = "raw"

    @property
    def quantity(self) -> Quantity:
        return _UNIT_QUANTITY[self]

    def to_canonical(self, value: Decimal) -> Decimal:
        """`value` in this unit, converted to mm, °C, L, % or left raw."""
        if self is Unit.DEG_F:
            return (value - 32) * 5 / 9
        return value * _UNIT_FACTOR[self]

    def from_canonical(self, value: Decimal) -> Decimal:
        if self is Unit.DEG_F:
            return value * 9 / 5 + 32
        return value / _UNIT_FACTOR[self]


_UNIT_QUANTITY = {
    Unit.MM: Quantity.LENGTH,
    Unit.CM: Quantity.LENGTH,
    Unit.M: Quantity.LENGTH,
    Unit.IN: Quantity.LENGTH,
    Unit.FT: Quantity.LENGTH,
    Unit.DEG_C: Quantity.TEMPERATURE,
    Unit.DEG_F: Quantity.TEMPERATURE,
    Unit.L: Quantity.VOLUME,
    Unit.GAL: Quantity.VOLUME,
    Unit.M3: Quantity.VOLUME,
    Unit.PERCENT: Quantity.RATIO,
    Unit.RAW: Quantity.NUMBER,
}
_UNIT_FACTOR = {
    Unit.MM: Decimal(1),
    Unit.CM: Decimal(10),
    Unit.M: Decimal(1000),
    Unit.IN: Decimal("25.4"),
    Unit.FT: Decimal("304.8"),
    Unit.DEG_C: Decimal(1),
    Unit.L: Decimal(1),
    Unit.GAL: Decimal("3.785411784"),
    Unit.M3: Decimal(1000),
    Unit.PERCENT: Decimal(1),
    Unit.RAW: Decimal(1),
}
# What may be written in a map file for each unit.
UNIT_NAMES: dict[str, Unit] = {
    "mm": Unit.MM,
    "cm": Unit.CM,
    "m": Unit.M,
    "in": Unit.IN,
    "ft": Unit.FT,
    "°C": Unit.DEG_C,
    "degC": Unit.DEG_C,
    "C": Unit.DEG_C,
    "°F": Unit.DEG_F,
    "degF": Unit.DEG_F,
    "F": Unit.DEG_F,
    "L": Unit.L,
    "l": Unit.L,
    "gal": Unit.GAL,
    "m3": Unit.M3,
    "%": Unit.PERCENT,
    "raw": Unit.RAW,
}

# Fields the driver turns into a tank reading, with what each must measure. Other names are
# allowed (point temperatures, spare registers) and decoded, but not reported.
KNOWN_FIELDS: dict[str, Quantity] = {
    "product_height": Quantity.LENGTH,  # product surface above the tank bottom
    "water_height": Quantity.LENGTH,
    "temperature": Quantity.TEMPERATURE,  # average product temperature
    "gross_volume": Quantity.VOLUME,
    "net_volume": Quantity.VOLUME,  # temperature-compensated, by the device
    "water_volume": Quantity.VOLUME,
    "ullage": Quantity.VOLUME,
    "fill_percent": Quantity.RATIO,
    "status": Quantity.NUMBER,
    "alarms": Quantity.NUMBER,
}
# Meanings a status bit may be given; the driver maps them onto the gauge status flags.
STATUS_FLAGS = frozenset({"delivery_in_progress", "leak_test_in_progress", "invalid_height"})


# ======================================================================================
# The model
# ======================================================================================
@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One value in a tank's block: `address` is relative to the block's first register.

    The device's raw number times `scale` is the value in `unit`; `plausible` bounds the
    canonical value (mm, °C, L, %) and is only reported, never enforced.
    """

    name: str
    address: int
    type: ValueType
    unit: Unit
    word_order: WordOrder = WordOrder.ABCD
    scale: Decimal = Decimal(1)
    plausible: tuple[Decimal, Decimal] | None = None

    @property
    def width(self) -> int:
        return self.type.width

    @property
    def end(self) -> int:
        """First relative address after this field."""
        return self.address + self.type.width


@dataclass(frozen=True, slots=True)
class BitTable:
    """Meanings of single bits of an integer field: (bit number, meaning) pairs."""

    field: str
    bits: tuple[tuple[int, str], ...]

    def active(self, value: int) -> tuple[tuple[int, str], ...]:
        return tuple((bit, meaning) for bit, meaning in self.bits if value >> bit & 1)


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """How one device family presents its tanks.

    Tank N's block starts at `base + stride·(N−1)` and is read with `function_code` (3:
    holding registers, 4: input registers) in one request of `block_length` registers.
    Addresses are zero-based protocol addresses, as on the wire: a manual's "40002" is
    holding register 1, its "30201" input register 200.
    """

    name: str
    function_code: int
    fields: tuple[FieldSpec, ...]
    base: int = 0
    stride: int = 0
    max_tanks: int = 1
    description: str = ""
    status_bits: BitTable | None = None
    alarm_bits: BitTable | None = None

    def __post_init__(self) -> None:
        _check_map(self)

    @property
    def block_length(self) -> int:
        return max(spec.end for spec in self.fields)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.fields)

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def tank_address(self, tank: int) -> int:
        """Protocol address of the first register of tank `tank` (1-based)."""
        if not 1 <= tank <= self.max_tanks:
            raise ValueError(f"map {self.name} has tanks 1-{self.max_tanks}, not {tank}")
        return self.base + self.stride * (tank - 1)


def _check_map(rmap: RegisterMap) -> None:
    """Cross-field rules; raises RegisterMapError naming the offending key."""

    def fail(key: str, problem: str) -> NoReturn:
        raise RegisterMapError(problem, source=f"map {rmap.name!r}", key=key)

    if rmap.function_code not in (3, 4):
        fail(
            "function_code",
            f"must be 3 (holding) or 4 (input registers), not {_shown(rmap.function_code)}",
        )
    if not rmap.fields:
        fail("fields", "a map needs at least one field")
    if rmap.max_tanks < 1:
        fail("max_tanks", "must be at least 1")
    if not 0 <= rmap.base < _ADDRESS_LIMIT:
        fail("base", f"must be a register address 0-65535, not {rmap.base}")
    seen: dict[int, str] = {}
    for spec in rmap.fields:
        for address in range(spec.address, spec.end):
            other = seen.get(address)
            if other is not None:
                fail(
                    f"fields.{spec.name}.address",
                    f"register {address} is already used by field {other!r}",
                )
            seen[address] = spec.name
    length = rmap.block_length
    if length > MAX_READ_REGISTERS:
        fail(
            "fields", f"a tank block of {length} registers exceeds one read ({MAX_READ_REGISTERS})"
        )
    if rmap.max_tanks > 1 and rmap.stride < length:
        fail("stride", f"{rmap.stride} is shorter than one tank's block ({length} registers)")
    last = rmap.base + rmap.stride * (rmap.max_tanks - 1) + length
    if last > _ADDRESS_LIMIT:
        fail("max_tanks", f"tank {rmap.max_tanks} would end beyond register 65535")
    for key, table in (("status_bits", rmap.status_bits), ("alarm_bits", rmap.alarm_bits)):
        if table is None:
            continue
        if table.field not in rmap.field_names:
            fail(f"{key}.field", f"no field named {table.field!r}")
        spec = rmap.field(table.field)
        if not spec.type.is_integer or spec.scale != 1:
            fail(f"{key}.field", f"field {spec.name!r} must be an unscaled integer")
        for bit, _meaning in table.bits:
            if not 0 <= bit < 16 * spec.width:
                fail(key, f"bit {bit} is outside the {16 * spec.width}-bit field {spec.name!r}")


# ======================================================================================
# Decoding and encoding (pure)
# ======================================================================================
def decode_registers(register_map: RegisterMap, registers: Sequence[int]) -> dict[str, Decimal]:
    """Values of one tank from its block of registers, in mm, °C, L, % or raw.

    `registers` starts at the tank's block (relative address 0) and must cover every field.
    A float the device reports as NaN or infinite (a probe's way of saying "no value") is
    left out of the result rather than guessed.
    """
    if len(registers) < register_map.block_length:
        raise FrameError(
            f"map {register_map.name} needs {register_map.block_length} registers, "
            f"got {len(registers)}"
        )
    for index, word in enumerate(registers):
        if not 0 <= word <= 0xFFFF:
            raise FrameError(f"register {index} holds {_shown(word)}, not a 16-bit value")
    values: dict[str, Decimal] = {}
    for spec in register_map.fields:
        value = decode_field(spec, registers[spec.address : spec.end])
        if value is not None:
            values[spec.name] = value
    return values


def decode_field(spec: FieldSpec, words: Sequence[int]) -> Decimal | None:
    """One field's canonical value from its own registers (None: the float is not a number).

    Raises FrameError unless `words` are `spec.width` 16-bit values.
    """
    if len(words) != spec.width or not all(0 <= word <= 0xFFFF for word in words):
        shown = ", ".join(map(_shown, words[:4]))
        raise FrameError(f"field {spec.name} needs {spec.width} 16-bit register(s), not [{shown}]")
    data = spec.word_order.to_bytes(words)
    raw: Decimal | None
    if spec.type is ValueType.FLOAT32:
        raw = float32_to_decimal(data)
        if raw is None:
            return None
    else:
        raw = Decimal(struct.unpack(spec.type.struct_code, data)[0])
    return _tidy(spec.unit.to_canonical(raw * spec.scale))


def float32_to_decimal(data: bytes) -> Decimal | None:
    """The shortest decimal that is exactly this float32 (9.875, 23.4 — not 23.399999618…).

    Raises FrameError unless `data` is 4 bytes.
    """
    if len(data) != 4:
        raise FrameError(f"a float32 is 4 bytes, not {len(data)}")
    value = struct.unpack(">f", data)[0]
    if not math.isfinite(value):
        return None
    for digits in range(1, 10):  # nine significant digits always round-trip a float32
        text = f"{value:.{digits}g}"
        try:
            if struct.pack(">f", float(text)) == data:
                break
        except OverflowError:  # near the largest float32, 3.403e+38 is beyond it
            continue
    number = Decimal(text)
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:  # "1e+03" from %g: write it as 1000
        number = number.quantize(Decimal(1), context=_WIDE)
    return number


def _tidy(value: Decimal) -> Decimal:
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < _RESOLUTION_EXPONENT:
        return value.quantize(_RESOLUTION, rounding=ROUND_HALF_EVEN)
    return value


def encode_field(spec: FieldSpec, value: Decimal | int | float) -> list[int]:
    """The registers a device holds for a canonical value (the inverse of `decode_field`).

    ValueError when the value does not fit the field's type (a float32 takes NaN and the
    infinities, an integer only a finite number in its range).
    """
    number = Decimal(value) if isinstance(value, int) else Decimal(str(value))
    if number.is_snan() or (spec.type.is_integer and not number.is_finite()):
        raise ValueError(f"field {spec.name}: {number} cannot be written as {spec.type.value}")
    with localcontext(_ENCODING):
        scaled = spec.unit.from_canonical(number) / spec.scale
    if spec.type is ValueType.FLOAT32:
        try:
            data = struct.pack(">f", float(scaled))
            if number.is_finite() and math.isinf(float(scaled)):
                raise OverflowError
        except OverflowError:
            raise ValueError(f"field {spec.name}: {_shown(value)} is outside float32") from None
    elif not scaled.is_finite() or scaled.adjusted() > 20:  # int() of 1E+999999 is slow
        raise ValueError(f"field {spec.name}: {_shown(value)} is outside {spec.type.value}")
    else:
        raw = int(scaled.to_integral_value(rounding=ROUND_HALF_EVEN))
        try:
            data = struct.pack(spec.type.struct_code, raw)
        except struct.error as exc:
            raise ValueError(
                f"field {spec.name}: {value} is {raw} raw, outside {spec.type.value}"
            ) from exc
    return spec.word_order.to_words(data)


def encode_registers(
    register_map: RegisterMap, values: Mapping[str, Decimal | int | float]
) -> list[int]:
    """One tank's block for these canonical values; fields not given read as zero."""
    unknown = set(values) - set(register_map.field_names)
    if unknown:
        raise KeyError(f"map {register_map.name} has no field {sorted(unknown)[0]!r}")
    block = [0] * register_map.block_length
    for spec in register_map.fields:
        if spec.name in values:
            block[spec.address : spec.end] = encode_field(spec, values[spec.name])
    return block


def implausible(register_map: RegisterMap, values: Mapping[str, Decimal]) -> tuple[str, ...]:
    """Names of the decoded fields whose value lies outside the map's plausible range."""
    out = []
    for spec in register_map.fields:
        value = values.get(spec.name)
        if value is None or spec.plausible is None:
            continue
        low, high = spec.plausible
        if not low <= value <= high:
            out.append(spec.name)
    return tuple(out)


# ======================================================================================
# Map files
# ======================================================================================
_TOP_KEYS = frozenset(
    {
        "name",
        "description",
        "function_code",
        "base",
        "stride",
        "max_tanks",
        "word_order",
        "fields",
        "status_bits",
        "alarm_bits",
    }
)
_FIELD_KEYS = frozenset({"address", "type", "word_order", "unit", "scale", "plausible"})


def load_register_map(path: Path | str) -> RegisterMap:
    """Read and check a map file; every mistake is a RegisterMapError naming file and key."""
    path = Path(path)
    source = path.name
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise RegisterMapError(
            f"cannot read the map file: {exc.strerror}", source=str(path)
        ) from exc
    except UnicodeDecodeError as exc:
        raise RegisterMapError("the map file is not UTF-8 text", source=source) from exc
    try:
        data = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of over 4300 digits
        raise RegisterMapError(f"not valid TOML: {exc}", source=source) from exc
    except RecursionError as exc:
        raise RegisterMapError("not valid TOML: nested too deeply", source=source) from exc
    return parse_register_map(data, source=source)


def parse_register_map(data: Mapping[str, Any], *, source: str = "<map>") -> RegisterMap:
    """A RegisterMap from the tables of a map file (already parsed TOML)."""
    reader = _Reader(source)
    reader.no_unknown_keys(data, _TOP_KEYS, "")
    name = reader.string(data, "name", required=True)
    if not _NAME.fullmatch(name):
        reader.fail("name", f"{name!r}: use lower-case letters, digits and '_'")
    default_order = reader.word_order(data, "word_order", WordOrder.ABCD)
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, Mapping) or not raw_fields:
        reader.fail("fields", "a [fields.<name>] table per value is required")
    fields = tuple(
        reader.field(field_name, table, default_order) for field_name, table in raw_fields.items()
    )
    try:
        return RegisterMap(
            name=name,
            description=reader.string(data, "description"),
            function_code=reader.integer(data, "function_code", required=True),
            base=reader.integer(data, "base", default=0, low=0, high=_ADDRESS_LIMIT - 1),
            stride=reader.integer(data, "stride", default=0, low=0, high=_ADDRESS_LIMIT - 1),
            max_tanks=reader.integer(data, "max_tanks", default=1, low=1, high=255),
            fields=fields,
            status_bits=reader.status_bits(data.get("status_bits")),
            alarm_bits=reader.alarm_bits(data.get("alarm_bits")),
        )
    except RegisterMapError as exc:
        raise RegisterMapError(exc.problem, source=source, key=exc.key) from None


class _Reader:
    """Typed access to the tables of one map file, failing with the key's full name."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> NoReturn:
        raise RegisterMapError(problem, source=self.source, key=key or None)

    def no_unknown_keys(
        self, table: Mapping[str, Any], allowed: frozenset[str], prefix: str
    ) -> None:
        for key in table:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.fail(f"{prefix}{key}", f"unknown key (known keys: {known})")

    def string(
        self, table: Mapping[str, Any], key: str, *, required: bool = False, prefix: str = ""
    ) -> str:
        value = table.get(key)
        if value is None:
            if required:
                self.fail(prefix + key, "is required")
            return ""
        if not isinstance(value, str):
            self.fail(prefix + key, f"must be a string, not {_shown(value)}")
        return str(value)

    def integer(
        self,
        table: Mapping[str, Any],
        key: str,
        *,
        required: bool = False,
        default: int = 0,
        low: int | None = None,
        high: int | None = None,
        prefix: str = "",
    ) -> int:
        value = table.get(key)
        if value is None:
            if required:
                self.fail(prefix + key, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(prefix + key, f"must be a whole number, not {_shown(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(prefix + key, f"{_shown(value)} is outside {low}-{high}")
        return int(value)

    def decimal(self, value: Any, key: str) -> Decimal:
        # Strings and integers are exact; a TOML float is taken by its shortest text form
        # ("0.1", not the binary 0.1000000000000000055…), which is what the author wrote.
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.fail(key, f"must be a number or a numeric string, not {_shown(value)}")
        if isinstance(value, int):
            return Decimal(value)  # exact, and str() of it may not exist (over 4300 digits)
        if isinstance(value, str) and not _NUMBER.fullmatch(value):
            if value in ("NaN", "nan", "Infinity", "inf", "-inf", "-Infinity"):
                self.fail(key, f"{_shown(value)} is not a finite number")
            self.fail(key, f"{_shown(value)} is not a number")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            self.fail(key, f"{_shown(value)} is not a number")
        if not number.is_finite():
            self.fail(key, f"{_shown(value)} is not a finite number")
        return number

    def word_order(
        self, table: Mapping[str, Any], key: str, default: WordOrder, prefix: str = ""
    ) -> WordOrder:
        value = table.get(key)
        if value is None:
            return default
        try:
            return WordOrder(value)
        except ValueError:
            known = ", ".join(order.value for order in WordOrder)
            self.fail(prefix + key, f"{_shown(value)} is not one of {known}")

    def field(self, name: str, table: Any, default_order: WordOrder) -> FieldSpec:
        prefix = f"fields.{name}."
        if not _NAME.fullmatch(name):
            self.fail(f"fields.{name}", "field names use lower-case letters, digits and '_'")
        if not isinstance(table, Mapping):
            self.fail(f"fields.{name}", "must be a table")
        self.no_unknown_keys(table, _FIELD_KEYS, prefix)
        address = self.integer(
            table, "address", required=True, low=0, high=_ADDRESS_LIMIT - 1, prefix=prefix
        )
        type_name = self.string(table, "type", required=True, prefix=prefix)
        try:
            value_type = ValueType(type_name)
        except ValueError:
            known = ", ".join(t.value for t in ValueType)
            self.fail(prefix + "type", f"{type_name!r} is not one of {known}")
        unit_name = self.string(table, "unit", required=True, prefix=prefix)
        unit = UNIT_NAMES.get(unit_name)
        if unit is None:
            known = ", ".join(UNIT_NAMES)
            self.fail(prefix + "unit", f"{unit_name!r} is not one of {known}")
        expected = KNOWN_FIELDS.get(name)
        if expected is not None and unit.quantity is not expected:
            self.fail(
                prefix + "unit",
                f"{unit_name!r} measures {unit.quantity.value}, {name} needs {expected.value}",
            )
        scale = Decimal(1)
        if "scale" in table:
            scale = self.decimal(table["scale"], prefix + "scale")
            if scale == 0:
                self.fail(prefix + "scale", "must not be zero")
            low, high = _SCALE_LIMITS
            if not low <= abs(scale) <= high:
                self.fail(prefix + "scale", f"{_shown(scale)}: must be between {low} and {high}")
        plausible = None
        if "plausible" in table:
            bounds = table["plausible"]
            if not isinstance(bounds, list) or len(bounds) != 2:
                self.fail(prefix + "plausible", "must be [lowest, highest]")
            low = self.decimal(bounds[0], prefix + "plausible")
            high = self.decimal(bounds[1], prefix + "plausible")
            if low > high:
                self.fail(prefix + "plausible", f"lowest {low} is above highest {high}")
            plausible = (low, high)
        return FieldSpec(
            name=name,
            address=address,
            type=value_type,
            unit=unit,
            word_order=self.word_order(table, "word_order", default_order, prefix),
            scale=scale,
            plausible=plausible,
        )

    def _bit_table_field(self, table: Any, key: str) -> str:
        if not isinstance(table, Mapping):
            self.fail(key, "must be a table")
        return self.string(table, "field", required=True, prefix=f"{key}.")

    def _bit(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 32:
            self.fail(key, f"must be a bit number 0-31, not {_shown(value)}")
        return int(value)

    def status_bits(self, table: Any) -> BitTable | None:
        if table is None:
            return None
        field = self._bit_table_field(table, "status_bits")
        bits = []
        for key, value in table.items():
            if key == "field":
                continue
            if key not in STATUS_FLAGS:
                known = ", ".join(sorted(STATUS_FLAGS))
                self.fail(f"status_bits.{key}", f"unknown status flag (known: {known})")
            bits.append((self._bit(value, f"status_bits.{key}"), key))
        return BitTable(field, tuple(sorted(bits)))

    def alarm_bits(self, table: Any) -> BitTable | None:
        if table is None:
            return None
        field = self._bit_table_field(table, "alarm_bits")
        self.no_unknown_keys(table, frozenset({"field", "names"}), "alarm_bits.")
        names = table.get("names")
        if not isinstance(names, Mapping) or not names:
            self.fail("alarm_bits.names", 'a table of "bit" = "meaning" is required')
        bits = []
        for key, meaning in names.items():
            if not isinstance(key, str) or not _BIT_NUMBER.fullmatch(key):
                label = key if isinstance(key, str) and len(key) <= 8 else _shown(key)
                self.fail(f"alarm_bits.names.{label}", 'keys are bit numbers, e.g. "0"')
            if not isinstance(meaning, str) or not meaning:
                self.fail(f"alarm_bits.names.{key}", "must be the alarm's text")
            bits.append((self._bit(int(key), f"alarm_bits.names.{key}"), meaning))
        return BitTable(field, tuple(sorted(bits)))
