"""Register maps and decoding: the worked frame, word orders, scaled integers, map files."""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadInputRegistersRequest

from drivers.base import FrameError
from drivers.modbus_probe.registers import (
    FieldSpec,
    RegisterMap,
    RegisterMapError,
    Unit,
    ValueType,
    WordOrder,
    decode_field,
    decode_registers,
    encode_field,
    encode_registers,
    float32_to_decimal,
    implausible,
    load_register_map,
    parse_register_map,
)

MAPS = Path(__file__).resolve().parents[3] / "config" / "modbus"
SHIPPED = sorted(MAPS.glob("*.toml"))
quiet = settings(database=None, deadline=None)


def spec(
    type_: ValueType,
    order: WordOrder = WordOrder.ABCD,
    *,
    unit: Unit = Unit.RAW,
    scale: str = "1",
) -> FieldSpec:
    return FieldSpec("x", 0, type_, unit, order, Decimal(scale))


# ---------------------------------------------------------------------- the worked frame
def test_worked_frame_from_the_protocols_notes() -> None:
    """Request 01 04 00 00 00 02 71 CB; response data 41 1E 00 00 (CRC 8F BE) is 9.875."""
    framer = FramerRTU(DecodePDU(False))
    request = ReadInputRegistersRequest(address=0, count=2, dev_id=1)
    assert framer.buildFrame(request) == bytes.fromhex("01 04 00 00 00 02 71 CB")

    used, response = framer.handleFrame(bytes.fromhex("01 04 04 41 1E 00 00 8F BE"), 1, 0)
    assert used == 9 and response is not None
    assert list(response.registers) == [0x411E, 0x0000]

    level = FieldSpec("product_height", 0, ValueType.FLOAT32, Unit.MM)
    rmap = RegisterMap("probe", 4, (level,))
    assert decode_registers(rmap, response.registers) == {"product_height": Decimal("9.875")}


def test_a_corrupted_crc_is_not_a_frame() -> None:
    framer = FramerRTU(DecodePDU(False))
    _used, response = framer.handleFrame(bytes.fromhex("01 04 04 41 1E 00 00 8F BF"), 1, 0)
    assert response is None


# ---------------------------------------------------------------------- word orders
FLOAT_WORDS = {  # 9.875 = 0x411E0000, and 123.456 = 0x42F6E979 to tell all four apart
    WordOrder.ABCD: [0x42F6, 0xE979],
    WordOrder.CDAB: [0xE979, 0x42F6],
    WordOrder.BADC: [0xF642, 0x79E9],
    WordOrder.DCBA: [0x79E9, 0xF642],
}


@pytest.mark.parametrize("order", list(WordOrder))
def test_float32_in_every_word_order(order: WordOrder) -> None:
    assert decode_field(spec(ValueType.FLOAT32, order), FLOAT_WORDS[order]) == Decimal("123.456")
    assert encode_field(spec(ValueType.FLOAT32, order), Decimal("123.456")) == FLOAT_WORDS[order]


INT_WORDS = {  # 98765 = 0x000181CD
    WordOrder.ABCD: [0x0001, 0x81CD],
    WordOrder.CDAB: [0x81CD, 0x0001],
    WordOrder.BADC: [0x0100, 0xCD81],
    WordOrder.DCBA: [0xCD81, 0x0100],
}


@pytest.mark.parametrize("order", list(WordOrder))
def test_int32_in_every_word_order(order: WordOrder) -> None:
    assert decode_field(spec(ValueType.INT32, order), INT_WORDS[order]) == 98765
    assert decode_field(spec(ValueType.UINT32, order), INT_WORDS[order]) == 98765


@pytest.mark.parametrize(
    ("order", "words"),
    [(WordOrder.ABCD, [0x1234]), (WordOrder.CDAB, [0x1234]), (WordOrder.BADC, [0x3412])],
)
def test_16_bit_values_only_know_byte_swapping(order: WordOrder, words: list[int]) -> None:
    assert decode_field(spec(ValueType.UINT16, order), words) == 0x1234


def test_int16_is_twos_complement_and_uint16_is_not() -> None:
    assert decode_field(spec(ValueType.INT16), [0xFFFE]) == -2
    assert decode_field(spec(ValueType.UINT16), [0xFFFE]) == 65534


# ---------------------------------------------------------------------- each family
def test_franklin_scaled_integer_low_word_first() -> None:
    """The manual's example: 9876.5 gal is 98765 = 0x000181CD, stored 0x81CD then 0x0001."""
    gallons = spec(ValueType.INT32, WordOrder.CDAB, unit=Unit.GAL, scale="0.1")
    assert decode_field(gallons, [0x81CD, 0x0001]) == Decimal("37386.6195")  # 9876.5 gal in L
    # Negative values are two's complement: -98765 = 0xFFFE7E33.
    assert decode_field(gallons, [0x7E33, 0xFFFE]) == Decimal("-37386.6195")
    raw_gallons = spec(ValueType.INT32, WordOrder.CDAB, scale="0.1")
    assert decode_field(raw_gallons, [0x81CD, 0x0001]) == Decimal("9876.5")


def test_franklin_map_addresses_and_alarms() -> None:
    rmap = load_register_map(MAPS / "franklin_ts550evo.toml")
    assert rmap.function_code == 4
    assert [rmap.tank_address(n) for n in (1, 2, 3, 72)] == [200, 236, 272, 2756]
    assert rmap.field("product_height").address == 4  # tank 1: registers 204-205
    assert rmap.alarm_bits is not None
    assert rmap.alarm_bits.active(0b101) == ((0, "High-high product"), (2, "High water"))
    with pytest.raises(ValueError):
        rmap.tank_address(73)


def test_pneumercator_high_word_first_with_us_units() -> None:
    rmap = load_register_map(MAPS / "pneumercator_tms.toml")
    assert rmap.function_code == 3
    assert [rmap.tank_address(n) for n in (1, 2, 12)] == [1, 17, 177]
    block = [0] * 16
    block[0:2] = [0x0000, 0x0001]  # status: delivery in progress
    block[2:4] = [0x0000, 0x03E8]  # height 1000 × 0.1 in = 100 in
    block[4:6] = [0x0000, 0x1F40]  # gross 8000 gal
    block[8:10] = [0x0000, 0x01F4]  # 50.0 %
    block[10:12] = [0xFFFF, 0xFFC4]  # -60 × 0.1 °F = -6 °F
    values = decode_registers(rmap, block)
    assert values["product_height"] == Decimal("2540.0")
    assert values["gross_volume"] == Decimal("30283.2943")  # 4 decimals kept
    assert values["fill_percent"] == Decimal("50.0")
    assert values["temperature"] == Decimal("-21.1111")  # (−6 − 32) × 5/9
    assert values["status"] == 1
    assert rmap.status_bits is not None
    assert rmap.status_bits.active(1) == ((0, "delivery_in_progress"),)


def test_generic_probe_float32_block() -> None:
    rmap = load_register_map(MAPS / "generic_magnetostrictive.toml")
    block = encode_registers(
        rmap,
        {"product_height": Decimal("1523.5"), "water_height": 12, "temperature": Decimal("18.25")},
    )
    assert block[0:2] == [0x44BE, 0x7000]  # 1523.5 as float32 ABCD
    values = decode_registers(rmap, block)
    assert values["product_height"] == Decimal("1523.5")
    assert values["water_height"] == 12
    assert values["temperature"] == Decimal("18.25")
    assert values["temperature_point_3"] == 0


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_maps_load(path: Path) -> None:
    rmap = load_register_map(path)
    assert rmap.name == path.stem
    assert {"product_height", "temperature"} <= set(rmap.field_names)
    assert rmap.block_length <= 125


# ---------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("value", "text"),
    [(9.875, "9.875"), (23.4, "23.4"), (0.1, "0.1"), (1000.0, "1000"), (-40.0, "-40")],
)
def test_float32_becomes_its_shortest_decimal(value: float, text: str) -> None:
    decimal = float32_to_decimal(struct.pack(">f", value))
    assert decimal == Decimal(text) and str(decimal) == text


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_float_that_is_not_a_number_is_left_out(value: float) -> None:
    rmap = RegisterMap("probe", 4, (FieldSpec("temperature", 0, ValueType.FLOAT32, Unit.DEG_C),))
    words = WordOrder.ABCD.to_words(struct.pack(">f", value))
    assert decode_registers(rmap, words) == {}


@pytest.mark.parametrize(
    ("unit", "raw", "canonical"),
    [
        (Unit.CM, "12.5", "125.0"),
        (Unit.M, "1.2345", "1234.5000"),
        (Unit.IN, "10", "254.0"),
        (Unit.DEG_F, "212", "100"),
        (Unit.M3, "2.5", "2500.0"),
        (Unit.GAL, "1", "3.785411784"),
    ],
)
def test_units_convert_to_mm_degc_and_litres(unit: Unit, raw: str, canonical: str) -> None:
    assert unit.to_canonical(Decimal(raw)) == Decimal(canonical)


@quiet
@given(
    path=st.sampled_from(SHIPPED),
    data=st.data(),
)
def test_encode_then_decode_round_trips_every_shipped_map(path: Path, data: Any) -> None:
    rmap = load_register_map(path)
    values = {}
    for field in rmap.fields:
        if field.type is ValueType.FLOAT32:
            values[field.name] = Decimal(str(data.draw(st.integers(0, 40000)))) / 8
        elif field.type.value.startswith("u"):
            values[field.name] = data.draw(st.integers(0, 60000)) * field.scale
        else:
            values[field.name] = data.draw(st.integers(-30000, 30000)) * field.scale
        values[field.name] = field.unit.to_canonical(
            field.unit.from_canonical(field.unit.to_canonical(values[field.name]))
        )
    decoded = decode_registers(rmap, encode_registers(rmap, values))
    for name, value in values.items():
        assert abs(decoded[name] - value) <= Decimal("0.001"), name


def test_decoding_needs_the_whole_block() -> None:
    rmap = load_register_map(MAPS / "generic_magnetostrictive.toml")
    with pytest.raises(FrameError, match="needs 16 registers, got 4"):
        decode_registers(rmap, [0, 0, 0, 0])
    with pytest.raises(FrameError, match="not a 16-bit value"):
        decode_registers(rmap, [0x10000] + [0] * 15)


def test_out_of_range_values_are_flagged() -> None:
    rmap = load_register_map(MAPS / "generic_magnetostrictive.toml")
    values = {
        "product_height": Decimal(6000),
        "water_height": Decimal(3),
        "temperature": Decimal(95),
    }
    assert implausible(rmap, values) == ("product_height", "temperature")
    assert implausible(rmap, {"product_height": Decimal(2000)}) == ()


def test_a_raw_value_too_big_for_its_type_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="outside uint16"):
        encode_field(spec(ValueType.UINT16), 70000)


# ---------------------------------------------------------------------- bad maps
def good_map() -> dict[str, Any]:
    return {
        "name": "probe",
        "function_code": 4,
        "fields": {
            "product_height": {"address": 0, "type": "float32", "unit": "mm"},
            "status": {"address": 2, "type": "uint16", "unit": "raw"},
        },
    }


def _set(path: str, value: Any) -> dict[str, Any]:
    data = good_map()
    *parents, last = path.split(".")
    table: Any = data
    for key in parents:
        table = table[key]
    if value is _DELETE:
        del table[last]
    else:
        table[last] = value
    return data


_DELETE = object()

BAD_MAPS = [
    ("name", _DELETE, "name", "is required"),
    ("name", "Bad Name", "name", "lower-case"),
    ("function_code", 6, "function_code", "must be 3"),
    ("function_code", "4", "function_code", "whole number"),
    ("colour", "red", "colour", "unknown key"),
    ("word_order", "ACBD", "word_order", "not one of ABCD"),
    ("fields", {}, "fields", "is required"),
    ("fields.product_height.unit", "furlong", "fields.product_height.unit", "not one of"),
    ("fields.product_height.unit", "degC", "fields.product_height.unit", "needs length"),
    ("fields.product_height.type", "float16", "fields.product_height.type", "not one of"),
    ("fields.product_height.address", -1, "fields.product_height.address", "outside"),
    ("fields.product_height.address", True, "fields.product_height.address", "whole number"),
    ("fields.product_height.scale", 0, "fields.product_height.scale", "not be zero"),
    ("fields.product_height.scale", "ten", "fields.product_height.scale", "not a number"),
    ("fields.product_height.scale", "NaN", "fields.product_height.scale", "not a finite"),
    ("fields.product_height.plausible", [5, 1], "fields.product_height.plausible", "above"),
    ("fields.product_height.plausible", 5, "fields.product_height.plausible", r"\[lowest"),
    ("fields.product_height.word_order", "AB", "fields.product_height.word_order", "not one"),
    ("fields.product_height.adress", 3, "fields.product_height.adress", "unknown key"),
    ("fields.status.address", 1, "fields.status.address", "already used"),
    ("fields.Level", {}, "fields.Level", "lower-case"),
    ("fields.level", 3, "fields.level", "must be a table"),
    ("max_tanks", 4, "stride", "shorter than one tank"),
    ("status_bits", {"field": "nothing"}, "status_bits.field", "no field"),
    ("status_bits", {"field": "status", "on_fire": 2}, "status_bits.on_fire", "unknown status"),
    (
        "status_bits",
        {"field": "status", "delivery_in_progress": 40},
        "status_bits.delivery_in_progress",
        "bit",
    ),
    ("status_bits", {"field": "product_height"}, "status_bits.field", "unscaled integer"),
    ("alarm_bits", {"field": "status"}, "alarm_bits.names", "is required"),
    ("alarm_bits", {"field": "status", "names": {"x": "A"}}, "alarm_bits.names.x", "bit numbers"),
    ("alarm_bits", {"field": "status", "names": {"3": ""}}, "alarm_bits.names.3", "text"),
]


@pytest.mark.parametrize(
    ("path", "value", "key", "problem"), BAD_MAPS, ids=[b[0] for b in BAD_MAPS]
)
def test_a_bad_map_names_its_key(path: str, value: Any, key: str, problem: str) -> None:
    with pytest.raises(RegisterMapError, match=problem) as caught:
        parse_register_map(_set(path, value), source="probe.toml")
    assert caught.value.key == key
    assert str(caught.value).startswith(f"probe.toml: {key}: ")
    assert caught.value.code == "register_map"


def test_a_block_too_long_for_one_read_is_refused() -> None:
    data = _set("fields.status.address", 130)
    with pytest.raises(RegisterMapError, match="exceeds one read"):
        parse_register_map(data)


def test_map_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(RegisterMapError, match="cannot read"):
        load_register_map(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\nfunction_code = \n')
    with pytest.raises(RegisterMapError, match=r"broken\.toml: not valid TOML"):
        load_register_map(broken)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'name = "\xe9"\n')
    with pytest.raises(RegisterMapError, match="not UTF-8"):
        load_register_map(latin)


def test_a_toml_float_scale_is_taken_as_written(tmp_path: Path) -> None:
    path = tmp_path / "floaty.toml"
    path.write_text(
        'name = "floaty"\nfunction_code = 3\n'
        '[fields.ullage]\naddress = 0\ntype = "int32"\nunit = "L"\nscale = 0.1\n'
    )
    assert load_register_map(path).field("ullage").scale == Decimal("0.1")


# ---------------------------------------------------------------------- found by fuzzing
@pytest.mark.parametrize(
    "words",
    [
        [0xEFBC, 0x2091],  # -1.1646e29: quantizing it to an integer needed 30 digits
        [0x7F7F, 0xFFFF],  # the largest float32: 3.403e+38 is beyond it (OverflowError)
        [0xFF7F, 0xFFFF],
        [0x6E6D, 0x8C8D],
    ],
)
def test_a_huge_float32_from_a_probe_is_read_not_raised(words: list[int]) -> None:
    rmap = RegisterMap("probe", 4, (FieldSpec("ullage", 0, ValueType.FLOAT32, Unit.L),))
    decoded = decode_registers(rmap, words)["ullage"]
    assert struct.pack(">f", float(decoded)) == struct.pack(">HH", *words)


@pytest.mark.parametrize("words", [[], [1], [1, 2, 3], [0x10000, 0], [-1, 0], [10**4300, 0]])
def test_decode_field_refuses_registers_that_are_not_its_own(words: list[int]) -> None:
    with pytest.raises(FrameError):
        decode_field(spec(ValueType.FLOAT32), words)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00" * 5])
def test_float32_needs_four_bytes(data: bytes) -> None:
    with pytest.raises(FrameError, match="4 bytes"):
        float32_to_decimal(data)


def test_a_register_too_big_to_print_is_refused() -> None:
    rmap = load_register_map(MAPS / "generic_magnetostrictive.toml")
    with pytest.raises(FrameError, match="not a 16-bit value"):
        decode_registers(rmap, [10**4300] + [0] * 15)


FUZZED_MAPS = [
    # int('³') raised ValueError; '٣' was bit 3; 5000 digits raised ValueError (str limit)
    ("alarm_bits", {"field": "status", "names": {"³": "A"}}, "alarm_bits.names.³", "bit numbers"),
    ("alarm_bits", {"field": "status", "names": {"٣": "A"}}, "alarm_bits.names.٣", "bit numbers"),
    ("alarm_bits", {"field": "status", "names": {"9" * 5000: "A"}}, None, "bit numbers"),
    # a number too long for str(): ValueError from the message that showed it
    ("function_code", 10**5000, "function_code", "must be 3"),
    ("base", 10**5000, "base", "outside"),
    ("name", 10**5000, "name", "must be a string"),
    ("fields.product_height.scale", 10**5000, "fields.product_height.scale", "between"),
    # Decimal() reads digits of any script and the scale reached decoding: decimal.Overflow
    ("fields.product_height.scale", "١٠", "fields.product_height.scale", "not a number"),
    ("fields.product_height.scale", "1E+999999", "fields.product_height.scale", "between"),
    ("fields.product_height.scale", "1E-999999", "fields.product_height.scale", "between"),
    ("fields.product_height.plausible", ["٠", 5], "fields.product_height.plausible", "not a"),
    # `$` matches before a final newline
    ("name", "probe\n", "name", "lower-case"),
    ("fields.level\n", {}, "fields.level\n", "lower-case"),
]


@pytest.mark.parametrize(
    ("path", "value", "key", "problem"), FUZZED_MAPS, ids=[str(n) for n in range(len(FUZZED_MAPS))]
)
def test_fuzzed_maps_are_refused_by_key(
    path: str, value: Any, key: str | None, problem: str
) -> None:
    with pytest.raises(RegisterMapError, match=problem) as caught:
        parse_register_map(_set(path, value), source="probe.toml")
    if key is not None:
        assert caught.value.key == key


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"stride = " + b"1" * 5000, "not valid TOML"),  # tomllib: ValueError (str limit)
        (b"description = " + b"[" * 5000 + b"]" * 5000, "not valid TOML"),  # RecursionError
    ],
)
def test_map_files_tomllib_cannot_read(tmp_path: Path, line: bytes, problem: str) -> None:
    path = tmp_path / "odd.toml"
    path.write_bytes((MAPS / "generic_magnetostrictive.toml").read_bytes() + b"\n" + line + b"\n")
    with pytest.raises(RegisterMapError, match=problem):
        load_register_map(path)


@pytest.mark.parametrize("value", [Decimal("1E+39"), Decimal("-3.5E+38"), Decimal("8.3E+999999")])
def test_encode_field_refuses_what_a_float32_cannot_hold(value: Decimal) -> None:
    with pytest.raises(ValueError, match="outside float32"):  # was OverflowError from struct
        encode_field(spec(ValueType.FLOAT32), value)
    with pytest.raises(ValueError, match="outside float32"):  # was decimal.Overflow
        encode_field(spec(ValueType.FLOAT32, unit=Unit.GAL, scale="0.1"), value)


def test_encode_field_writes_not_a_number_as_probes_do() -> None:
    assert encode_field(spec(ValueType.FLOAT32), Decimal("NaN")) == [0x7FC0, 0]
    assert encode_field(spec(ValueType.FLOAT32), float("inf")) == [0x7F80, 0]


@pytest.mark.parametrize("value", [Decimal("Infinity"), Decimal("sNaN"), Decimal("1E+999999")])
@pytest.mark.parametrize("type_", [ValueType.INT32, ValueType.UINT16])
def test_encode_field_refuses_what_an_integer_register_cannot_hold(
    value: Decimal, type_: ValueType
) -> None:
    with pytest.raises(ValueError):
        encode_field(spec(type_, unit=Unit.DEG_C), value)
