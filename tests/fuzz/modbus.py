"""Fuzz entries of the Modbus probe decoding: register blocks, map files, ADUs on the wire."""

from __future__ import annotations

import tempfile
import tomllib
from datetime import datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from drivers.base import FrameError
from drivers.modbus_probe import adu
from drivers.modbus_probe.driver import alarms_from_values, reading_from_values
from drivers.modbus_probe.registers import (
    FieldSpec,
    RegisterMap,
    RegisterMapError,
    Unit,
    ValueType,
    WordOrder,
    decode_field,
    decode_registers,
    encode_registers,
    float32_to_decimal,
    implausible,
    load_register_map,
    parse_register_map,
)
from tests.fuzz.targets import (
    TRICKY_DIGITS,
    Entry,
    Refused,
    Target,
    attempt,
    edge_integers,
    huge_integers,
    json_able,
    json_values,
    mutated,
    repeated,
)

MAPS = Path(__file__).resolve().parents[2] / "config" / "modbus"
SHIPPED = sorted(MAPS.glob("*.toml"))


@cache
def shipped_tables() -> tuple[dict[str, Any], ...]:
    return tuple(tomllib.loads(path.read_text("utf-8")) for path in SHIPPED)


@cache
def shipped_maps() -> tuple[RegisterMap, ...]:
    return tuple(load_register_map(path) for path in SHIPPED)


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
# Words a probe sends: NaN and infinity as float32 high words, sign bits, all ones.
_words = st.one_of(
    st.integers(0, 0xFFFF),
    st.sampled_from([0x7FC0, 0x7F80, 0xFF80, 0x8000, 0x7FFF, 0xFFFF, 0x0000, 0x4000]),
)
_loose_words = st.one_of(_words, edge_integers)
registers = st.tuples(
    st.integers(0, 15),  # which map: one of the shipped ones or one of _specs
    st.one_of(st.lists(_words, max_size=40), st.lists(_loose_words, max_size=40)),
)

_specs = [
    FieldSpec(f"f_{t.value}_{o.value.lower()}_{u.value.lower()}", 0, t, u, o, Decimal(s))
    for t in ValueType
    for o in (WordOrder.ABCD, WordOrder.DCBA)
    for u, s in ((Unit.DEG_F, "0.01"), (Unit.GAL, "1E-9"), (Unit.IN, "1000"))
]
fields = st.tuples(st.integers(0, len(_specs) - 1), st.lists(_loose_words, max_size=3))
float_bytes = st.binary(max_size=6)

_number_like = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(),
    st.sampled_from(["0.01", "1E+999999", "1E-999999", "١٠", "1_0", " 1 ", "0x10", "NaN", "-0"]),
    st.text("0123456789.eE-+_ " + TRICKY_DIGITS, max_size=12),
    huge_integers,
    st.sampled_from([2**64, -(2**63)]),
)
_field_value = st.one_of(_number_like, json_values)


@st.composite
def map_tables(draw: st.DrawFn) -> dict[str, Any]:
    """A shipped map's tables with a few values, keys or tables changed."""
    table: dict[str, Any] = dict(draw(st.sampled_from(shipped_tables())))
    table["fields"] = {name: dict(spec) for name, spec in table["fields"].items()}
    for _ in range(draw(st.integers(0, 3))):
        place = draw(st.sampled_from(["top", "field", "alarm", "status"]))
        if place == "top":
            key = draw(
                st.sampled_from(
                    [
                        "name",
                        "function_code",
                        "base",
                        "stride",
                        "max_tanks",
                        "word_order",
                        "fields",
                        "description",
                        "extra",
                    ]
                )
            )
            table[key] = draw(_field_value)
        elif place == "field" and isinstance(table["fields"], dict) and table["fields"]:
            spec = table["fields"][draw(st.sampled_from(sorted(table["fields"])))]
            if isinstance(spec, dict):
                key = draw(
                    st.sampled_from(
                        ["address", "type", "unit", "scale", "plausible", "word_order", "extra"]
                    )
                )
                spec[key] = draw(_field_value)
        elif place == "alarm":
            names = {
                draw(
                    st.one_of(
                        st.text("0123456789" + TRICKY_DIGITS, max_size=3), st.just("9" * 5000)
                    )
                ): "alarm"
            }
            table["alarm_bits"] = {
                "field": draw(st.sampled_from(["alarms", "status", "x"])),
                "names": names,
            }
        else:
            table["status_bits"] = {
                "field": "status",
                draw(st.sampled_from(["delivery_in_progress", "x"])): draw(_field_value),
            }
    return table


@st.composite
def map_files(draw: st.DrawFn) -> bytes:
    """A shipped map file with a few bytes changed, or a line that TOML reads oddly."""
    text = draw(st.sampled_from(SHIPPED)).read_bytes()
    line = draw(
        st.sampled_from(
            [
                b"scale = " + b"1" * 5000,  # past the int <-> str limit
                b"scale = 1e400",
                b"scale = nan",
                b'scale = "1E+999999"',
                b"base = -1",
                b"max_tanks = 99999999999999999999",
                b'name = "x\\n"',
                b"\xff\xfe",
                b"[fields.\xc3\xa9]",
                b"description = " + b"[" * 3000 + b"]" * 3000,  # nested past the recursion limit
            ]
        )
    )
    noise = st.one_of(st.binary(min_size=1, max_size=4), st.just(line))
    return draw(st.one_of(mutated(text, noise), st.just(text + b"\n" + line)))


_rtu_frames = st.builds(
    lambda device, function, data: adu.with_crc(bytes((device, function)) + data),
    st.integers(0, 255),
    st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16, 23, 0x83, 0x84, 99]),
    st.binary(max_size=20),
)
adus = st.tuples(
    st.one_of(
        st.binary(max_size=40),
        _rtu_frames,
        _rtu_frames.flatmap(lambda wire: mutated(wire, st.binary(min_size=1, max_size=3))),
    ),
    st.sampled_from(["rtu", "socket"]),
    st.booleans(),
)

# (name, value) pairs rather than a dict: the fuzzer takes a dict's members for JSON.
_values = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "product_height",
                "water_height",
                "temperature",
                "gross_volume",
                "net_volume",
                "water_volume",
                "ullage",
                "status",
                "alarms",
            ]
        ),
        st.integers(-1000, 20000).map(lambda n: Decimal(n).scaleb(-1)),
    ),
    max_size=9,
)
round_trips = st.tuples(st.integers(0, 15), _values)


# Long inputs: an ADU stream of one token, a map file of one line repeated.
big_adus = st.tuples(
    repeated(st.one_of(st.binary(min_size=1, max_size=6), st.just(b"\x01\x03\xff"))),
    st.sampled_from(["rtu", "socket"]),
    st.booleans(),
)
big_map_files = st.tuples(
    st.sampled_from(SHIPPED).map(lambda path: path.read_bytes()),
    # Not "a." repeated: tomllib takes a second on 30000 dotted keys, at start, not polling.
    repeated(st.sampled_from([b"[fields.a]\n", b"#\n", b"x = [", b'"\\u00e9', b"\t"]), 60_000),
).map(b"\n".join)


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------
_AT = datetime(2024, 1, 15, 12, 30)


def _maps() -> tuple[RegisterMap, ...]:
    return (
        *shipped_maps(),
        *(RegisterMap(f"one_{n}", 3, (spec,)) for n, spec in enumerate(_specs)),
    )


def check_values(rmap: RegisterMap, values: dict[str, Decimal]) -> None:
    """What the driver does with decoded values never raises."""
    reading_from_values("gauge", 1, _AT, rmap, values)
    alarms_from_values(rmap, values)
    implausible(rmap, values)


def check_registers(case: tuple[int, list[int]]) -> None:
    """decode_registers raises only FrameError; what it reads goes on to a tank reading."""
    which, words = case
    maps = _maps()
    rmap = maps[which % len(maps)]
    values = attempt(FrameError, decode_registers, rmap, words)
    if not isinstance(values, Refused):
        check_values(rmap, values)


def check_field(case: tuple[int, list[int]]) -> None:
    """decode_field raises only FrameError, whatever registers it is given."""
    which, words = case
    attempt(FrameError, decode_field, _specs[which % len(_specs)], words)


def check_float_bytes(data: bytes) -> None:
    value = attempt(FrameError, float32_to_decimal, data)
    assert isinstance(value, Refused | Decimal | None)


def check_map_table(table: dict[str, Any]) -> None:
    """parse_register_map raises only RegisterMapError; a map it accepts decodes any block."""
    rmap = attempt(RegisterMapError, parse_register_map, table)
    if isinstance(rmap, Refused):
        return
    for word in (0, 0x7FC0, 0xFFFF, 0x7F7F):
        values = decode_registers(rmap, [word] * rmap.block_length)
        check_values(rmap, values)


@cache
def _scratch() -> Path:
    """A directory for the map file under test, removed when the process ends."""
    directory = tempfile.TemporaryDirectory(prefix="edgectl-fuzz-maps-")
    _kept.append(directory)  # its finalizer removes it at exit
    return Path(directory.name)


_kept: list[tempfile.TemporaryDirectory[str]] = []


def check_map_file(data: bytes) -> None:
    """load_register_map raises only RegisterMapError, whatever the file holds."""
    path = _scratch() / "map.toml"
    path.write_bytes(data)
    rmap = attempt(RegisterMapError, load_register_map, path)
    if not isinstance(rmap, Refused):
        decode_registers(rmap, [0xFFFF] * rmap.block_length)


def check_adu(case: tuple[bytes, str, bool]) -> None:
    """frame_length / decode / describe never raise on any bytes."""
    wire, framing, request = case
    if framing not in ("rtu", "socket"):
        return
    length = adu.frame_length(wire, framing, request=request)  # type: ignore[arg-type]
    if length is not None:
        assert 0 < length <= len(wire) or not wire
        item = adu.decode(wire[:length], framing, request=request)  # type: ignore[arg-type]
    else:
        item = adu.decode(wire, framing, request=request, complete=False)  # type: ignore[arg-type]
    json_able(adu.describe(item))


def _step(spec: FieldSpec, value: Decimal) -> Decimal:
    """How far a decoded value may be from the one encoded: half a raw step of an integer
    field, seven significant digits of a float32 (plus the 4-place rounding of both)."""
    if spec.type is ValueType.FLOAT32:
        return abs(value) * Decimal("1e-6") + Decimal("0.0001")
    one = abs(spec.unit.to_canonical(spec.scale) - spec.unit.to_canonical(Decimal(0)))
    return one / 2 + Decimal("0.0001")


def check_round_trip(case: tuple[int, list[tuple[str, Decimal]]]) -> None:
    """A shipped map decodes what it encodes (to its resolution), and what it decoded
    encodes to registers that decode the same."""
    which, pairs = case
    maps = shipped_maps()
    rmap = maps[which % len(maps)]
    wanted = {name: value for name, value in pairs if value.is_finite()}  # NaN reads as no value
    block = attempt((ValueError, KeyError), encode_registers, rmap, wanted)
    if isinstance(block, Refused):
        return
    decoded = decode_registers(rmap, block)
    assert decode_registers(rmap, encode_registers(rmap, decoded)) == decoded
    for name, value in wanted.items():
        assert abs(decoded[name] - value) <= _step(rmap.field(name), value), name


def _alarm_names(key: str) -> dict[str, Any]:
    table = dict(shipped_tables()[0])
    return {**table, "alarm_bits": {"field": "alarms", "names": {key: "alarm"}}}


def _scale(scale: str) -> dict[str, Any]:
    table = dict(shipped_tables()[1])
    fields = {name: dict(spec) for name, spec in table["fields"].items()}
    fields["product_height"]["scale"] = scale
    return {**table, "fields": fields}


TARGET = Target(
    "modbus",
    (
        Entry(
            "registers",
            registers,
            check_registers,
            weight=3,
            seeds=[(n, [0x4000, 0] * 20) for n in range(3)],
            # a float32 of 1e28 or more raised decimal.InvalidOperation, FLT_MAX OverflowError
            examples=[(1, [0xEFBC, 0x2091] * 8), (1, [0x7F7F, 0xFFFF] * 8), (1, [10**4300] * 16)],
        ),
        Entry("fields", fields, check_field, examples=[(0, []), (0, [1, 70000])]),
        Entry("float32", float_bytes, check_float_bytes, examples=[b"", b"\xef\xbc \x91"]),
        Entry(
            "maps",
            map_tables(),
            check_map_table,
            weight=3,
            seeds=shipped_tables(),
            examples=[_alarm_names("³"), _alarm_names("9" * 5000), _scale("1E+999999")],
        ),
        Entry(
            "map_files",
            map_files(),
            check_map_file,
            weight=2,
            seeds=[path.read_bytes() for path in SHIPPED],
            examples=[SHIPPED[0].read_bytes() + b"\nstride = " + b"1" * 5000 + b"\n"],
        ),
        Entry("adu", adus, check_adu, weight=2),
        Entry("big_adu", big_adus, check_adu, big=100),
        Entry("big_map_file", big_map_files, check_map_file, big=100),
        Entry(
            "round_trip",
            round_trips,
            check_round_trip,
            examples=[(1, [("product_height", Decimal("1E+39"))])],  # struct's OverflowError
        ),
    ),
)
