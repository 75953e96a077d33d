"""Tests of the Veeder-Root TLS codec: golden replies, framing, fields, commands, reports."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.veeder_root import codec
from drivers.veeder_root.codec import (
    MAX_RESPONSE_BYTES,
    Command,
    DisplayInventory,
    DisplayReport,
    Inventory,
    Malformed,
    Reply,
    TankInventory,
    Unsupported,
)
from tests.drivers.veeder_root.frames import (
    ALARMS,
    CLOCK_READ,
    DELIVERIES,
    DISPLAY_GALLONS,
    DISPLAY_TLS350,
    GOLDEN,
    LABEL_WITH_AMPERSANDS,
    MANUAL_INVENTORY,
    MANUAL_REPLY,
    NN_5,
    NN_7_AND_9,
    REFUSAL,
    Golden,
)

# No example database: other work shares this tree, and the suite must not write into it.
quiet = settings(database=None, deadline=None, max_examples=60)


def _stream(chunks: list[bytes], etx: int = codec.ETX) -> list[Reply | Malformed]:
    """Decode as a driver does: append each chunk, take out every finished item."""
    items: list[Reply | Malformed] = []
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while True:
            used, item = codec.decode(buffer, etx=etx)
            if used == 0:
                break
            del buffer[:used]
            assert item is not None
            items.append(item)
    assert not buffer
    return items


def _oracle_checksum(data: bytes) -> int:
    total = 0
    for byte in data:
        total = (total + byte) % 65536
    return (65536 - total) % 65536


# --------------------------------------------------------------------------- golden replies
@pytest.mark.parametrize("golden", GOLDEN, ids=lambda g: g.name)
def test_golden_decodes(golden: Golden) -> None:
    assert codec.decode(golden.wire) == (len(golden.wire), golden.reply)


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda g: g.name)
def test_golden_encodes_byte_exact(golden: Golden) -> None:
    assert codec.encode_reply(golden.reply) == golden.wire


def test_manual_example_checksum() -> None:
    covered = MANUAL_INVENTORY[: MANUAL_INVENTORY.rindex(b"&&") + 2]
    assert sum(covered) == 0x10E0  # as the facts file says
    assert codec.checksum(covered) == 0xEF20 == _oracle_checksum(covered)
    assert MANUAL_INVENTORY.endswith(b"&&EF20\x03")


def test_manual_example_values() -> None:
    _, reply = codec.decode(MANUAL_INVENTORY)
    assert reply == MANUAL_REPLY
    assert isinstance(reply, Inventory)
    tank = reply.tanks[0]
    assert (tank.volume, tank.tc_volume, tank.ullage) == (
        Decimal(5329),
        Decimal(5413),
        Decimal(4699),
    )
    assert (tank.height, tank.temperature) == (Decimal("48.97"), Decimal("37.39"))
    assert not (tank.delivery_in_progress or tank.leak_test_in_progress or tank.invalid_height)


def test_refusal_checksum_and_reply() -> None:
    assert codec.checksum(b"\x019999") == 0xFF1B
    assert codec.decode(REFUSAL) == (len(REFUSAL), Unsupported())
    assert codec.encode_reply(Unsupported(), etx=0x04) == b"\x019999FF1B\x04"


def test_the_refusal_encodes_whatever_terminator_it_is_read_with() -> None:
    """Found by make chaos's fuzzing (seed 757346969): with the terminator set to 0x01, the
    byte that also starts a message, the refusal was read from the wire but the encoder
    refused to write it, taking its leading SOH for the terminator inside it. Only a
    terminator among its characters (a hex digit, say) makes it unsendable."""
    wire = b"\x019999FF1B\x01"
    assert codec.decode(wire, etx=0x01) == (len(wire), Unsupported())
    assert codec.encode_reply(Unsupported(), etx=0x01) == wire
    with pytest.raises(ValueError, match="would hold the terminator"):
        codec.encode_reply(Unsupported(), etx=ord("F"))


def test_refusal_with_a_bad_checksum_is_not_a_refusal() -> None:
    used, item = codec.decode(b"\x019999FF1C\x03")
    assert used == 10 and isinstance(item, Malformed) and item.kind == "bad_checksum"


# --------------------------------------------------------------------------- field rules
def test_nn_below_seven_leaves_the_rest_none() -> None:
    _, reply = codec.decode(NN_5)
    assert isinstance(reply, Inventory)
    tank = reply.tanks[0]
    assert tank.float_count == 5
    assert tank.water == Decimal("0.5")
    assert tank.temperature is None and tank.water_volume is None and tank.extra == ()


def test_nn_above_seven_keeps_the_extra_floats_and_the_next_tank_in_place() -> None:
    _, reply = codec.decode(NN_7_AND_9)
    assert isinstance(reply, Inventory)
    first, second = reply.tanks
    assert first.delivery_in_progress and not first.leak_test_in_progress
    assert second.product == "A" and second.status == 0x0007
    assert second.delivery_in_progress and second.leak_test_in_progress
    assert second.invalid_height
    assert second.float_count == 9
    assert second.extra == (Decimal(1), Decimal("-99.99"))


def test_deliveries_in_the_facts_order() -> None:
    _, reply = codec.decode(DELIVERIES)
    assert isinstance(reply, codec.DeliveryReport)
    first, second = reply.tanks[0].deliveries
    assert first.start == datetime(2024, 1, 14, 8, 0) and first.end == datetime(2024, 1, 14, 8, 30)
    assert (first.start_volume, first.end_volume) == (Decimal(1000), Decimal(7000))
    assert (first.start_height, first.end_height) == (Decimal("40.25"), Decimal(120))
    assert second.end_tc_volume == Decimal(5950)
    assert reply.tanks[1].deliveries == ()


def test_delivery_count_read_as_hex_when_decimal_does_not_fit() -> None:
    # Ten deliveries written as "0A": the decimal reading fails, the hex one fits.
    record = "2401140800" + "2401140830" + "01" + codec.encode_float(Decimal(1))
    body = "i20201" + "2401151230" + "01" + "1" + "0A" + record * 10
    reply = codec.decode(codec.encode_computer(body))[1]
    assert isinstance(reply, codec.DeliveryReport)
    assert len(reply.tanks[0].deliveries) == 10
    assert reply.tanks[0].deliveries[0].start_volume == Decimal(1)
    assert reply.tanks[0].deliveries[0].end_volume is None


def test_alarm_codes_and_names() -> None:
    _, reply = codec.decode(ALARMS)
    assert isinstance(reply, codec.AlarmStatus)
    assert reply.tanks[0].names == ("low product", "delivery needed")
    assert reply.tanks[1].codes == ()
    assert reply.tanks[2].names == ("tank alarm 99",)
    assert [codec.alarm_name(c) for c in (2, 3, 4, 6, 7, 25, 26)] == [
        "leak",
        "high water",
        "overfill",
        "sudden loss",
        "high product",
        "reconciliation warning",
        "reconciliation alarm",
    ]


def test_label_with_ampersands_finds_the_checksum_from_the_end() -> None:
    _, reply = codec.decode(LABEL_WITH_AMPERSANDS)
    assert reply == codec.UnknownReply("i60200", "240115123001PREM&&SUPER")


def test_system_status_without_a_date_keeps_the_text() -> None:
    wire = codec.encode_computer("i10100ALL OK")
    assert codec.decode(wire)[1] == codec.SystemStatus("i10100", None, "ALL OK")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3F800000", Decimal(1)),
        ("C2C7FAE1", Decimal("-99.99")),
        ("461C4000", Decimal(10000)),
        ("00000000", Decimal(0)),
        ("80000000", Decimal(0)),  # -0.0
        ("4243E148", Decimal("48.97")),
        ("3DCCCCCD", Decimal("0.1")),
        ("4B189680", Decimal(10_000_000)),
        ("38D1B717", Decimal("0.0001")),
        ("7F7FFFFF", Decimal("340282300000000000000000000000000000000")),
        ("7FC00000", None),  # NaN: a failed probe
        ("7F800000", None),  # infinity
    ],
)
def test_floats(text: str, value: Decimal | None) -> None:
    result = codec.decode_float(text)
    assert result == value
    assert result is None or isinstance(result, Decimal)


@given(st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6))
@quiet
def test_float_round_trip_is_within_single_precision(value: float) -> None:
    decoded = codec.decode_float(codec.encode_float(value))
    assert decoded is not None
    assert abs(float(decoded) - value) <= max(abs(value) * 1e-6, 5e-5)


@pytest.mark.parametrize("text", ["3F80000", "3F80000G", "3F8000000"])
def test_bad_float_text(text: str) -> None:
    with pytest.raises(ValueError):
        codec.decode_float(text)


def test_timestamps_pivot_at_70() -> None:
    assert codec.parse_timestamp("9601221506") == datetime(1996, 1, 22, 15, 6)
    assert codec.parse_timestamp("6912312359") == datetime(2069, 12, 31, 23, 59)
    assert codec.format_timestamp(datetime(2024, 1, 15, 12, 30, 59)) == "2401151230"
    with pytest.raises(ValueError):
        codec.parse_timestamp("2413011200")  # month 13
    with pytest.raises(ValueError):
        codec.format_timestamp(datetime(2070, 1, 1))


# --------------------------------------------------------------------------- framing
def test_bad_checksum() -> None:
    wire = MANUAL_INVENTORY.replace(b"&&EF20", b"&&EF21")
    used, item = codec.decode(wire)
    assert used == len(wire)
    assert isinstance(item, Malformed) and item.kind == "bad_checksum"
    assert item.reason == "checksum mismatch: computed EF20, received EF21"


def test_damaged_data_fails_the_checksum() -> None:
    wire = MANUAL_INVENTORY.replace(b"45A68800", b"45A68801")
    item = codec.decode(wire)[1]
    assert isinstance(item, Malformed) and item.kind == "bad_checksum"


def test_lower_case_checksum_digits_are_accepted() -> None:
    assert codec.decode(MANUAL_INVENTORY.replace(b"EF20", b"ef20"))[1] == MANUAL_REPLY


def test_junk_before_soh_is_reported_then_skipped() -> None:
    items = _stream([b"\r\n\x00noise" + MANUAL_INVENTORY])
    assert items[1] == MANUAL_REPLY
    junk = items[0]
    assert isinstance(junk, Malformed) and junk.kind == "garbage" and junk.raw == b"\r\n\x00noise"


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda g: g.name)
def test_split_at_every_byte(golden: Golden) -> None:
    wire = golden.wire
    for cut in range(1, len(wire)):
        assert _stream([wire[:cut], wire[cut:]]) == [golden.reply], cut


def test_byte_by_byte() -> None:
    wire = MANUAL_INVENTORY + REFUSAL + DELIVERIES
    items = _stream([wire[i : i + 1] for i in range(len(wire))])
    assert [type(item).__name__ for item in items] == ["Inventory", "Unsupported", "DeliveryReport"]


def test_several_replies_in_one_buffer() -> None:
    items = _stream([MANUAL_INVENTORY + REFUSAL + ALARMS + CLOCK_READ])
    assert [g.reply for g in GOLDEN if g.wire in (MANUAL_INVENTORY, REFUSAL)] == items[:2]
    assert isinstance(items[2], codec.AlarmStatus) and isinstance(items[3], codec.ClockReply)


def test_incomplete_reply_waits_for_more() -> None:
    assert codec.decode(MANUAL_INVENTORY[:-1]) == (0, None)
    assert codec.decode(b"") == (0, None)


def test_reply_cut_short_by_a_new_soh() -> None:
    wire = MANUAL_INVENTORY[:40] + REFUSAL
    items = _stream([wire])
    assert isinstance(items[0], Malformed) and items[0].kind == "truncated"
    assert items[0].raw == MANUAL_INVENTORY[:40]
    assert items[1] == Unsupported()


def test_no_etx_within_the_limit_is_malformed() -> None:
    wire = b"\x01" + b"I" * MAX_RESPONSE_BYTES
    used, item = codec.decode(wire)
    assert used == MAX_RESPONSE_BYTES and isinstance(item, Malformed)
    assert item.reason == f"no ETX within {MAX_RESPONSE_BYTES} bytes"


def test_configured_etx() -> None:
    wire = MANUAL_INVENTORY[:-1] + b"\x04"
    assert codec.decode(wire, etx=0x04) == (len(wire), MANUAL_REPLY)
    assert codec.decode(wire) == (0, None)  # 0x03 never comes
    assert codec.encode_reply(MANUAL_REPLY, etx=0x04) == wire


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x01\x03", "empty reply"),
        (b"\x01i20100960122\x03", "computer-format reply without a checksum (no &&)"),
        (b"\x01i20100&&EF\x03", "computer-format reply without a checksum ('EF' after"),
        (codec.encode_computer("i201"), "function code 'i201' cut short"),
        (codec.encode_computer("i2010096012215"), "i20100: date: the reply ends"),
        (codec.encode_computer("i201009613221506"), "i20100: date at character 6"),
        (codec.encode_computer("i2010096012215060110000"), "i20100: tank 1 float count NN"),
        (codec.encode_computer("i201009601221506011000001"), "i20100: tank 1 float 1: the"),
        (codec.encode_computer("i2010096012215060110000013F80000X"), "i20100: tank 1 float 1 at"),
        (codec.encode_computer("i20100960122150601100Z0100000000"), "i20100: tank 1 status bits"),
        (codec.encode_computer("i201XX9601221506"), "i201XX: tank number 'XX' in 'i201XX'"),
        (codec.encode_computer("i205009601221506010205"), "i20500: tank 1 alarm code"),
        (codec.encode_computer("i2020096012215060110Z"), "i20200: tank 1 delivery count"),
    ],
)
def test_malformed_replies(wire: bytes, reason: str) -> None:
    used, item = codec.decode(wire)
    assert used == len(wire)
    assert isinstance(item, Malformed) and item.kind == "malformed"
    assert item.reason.startswith(reason), item.reason


def test_decode_all_reports_a_tail_without_etx() -> None:
    pairs = codec.decode_all(REFUSAL + MANUAL_INVENTORY[:20])
    assert pairs[0] == (REFUSAL, Unsupported())
    raw, item = pairs[1]
    assert raw == MANUAL_INVENTORY[:20]
    assert isinstance(item, Malformed) and item.kind == "truncated"


@given(
    st.lists(
        st.tuples(
            st.integers(1, 99),
            st.sampled_from("123ABC&"),
            st.integers(0, 0xFFFF),
            st.lists(st.integers(-(10**6), 10**6).map(Decimal), max_size=12),
        ),
        max_size=5,
    ),
    st.integers(0, 99),
)
@quiet
def test_inventory_round_trip(
    tanks: list[tuple[int, str, int, list[Decimal]]], selected: int
) -> None:
    reply = Inventory(
        selected,
        datetime(2024, 2, 29, 23, 59),
        tuple(TankInventory.from_floats(n, p, s, tuple(f)) for n, p, s, f in tanks),
    )
    wire = codec.encode_reply(reply)
    assert codec.decode(wire) == (len(wire), reply)


AT = datetime(2024, 1, 15, 12, 30)
UNENCODABLE = {
    "tank 100": Inventory(0, AT, (TankInventory(100, "1"),)),
    "tank -1": Inventory(0, AT, (TankInventory(-1, "1"),)),
    "selector 100": Inventory(100, AT, ()),
    "status 0x10000": Inventory(0, AT, (TankInventory(1, "1", 0x10000),)),
    "status -1": Inventory(0, AT, (TankInventory(1, "1", -1),)),
    "no product code": Inventory(0, AT, (TankInventory(1, ""),)),
    "SOH as product": Inventory(0, AT, (TankInventory(1, "\x01"),)),
    "not latin-1": Inventory(0, AT, (TankInventory(1, "⛽"),)),
    "alarm code 100": codec.AlarmStatus(0, AT, (codec.TankAlarmCodes(1, (100,)),)),
    "100 alarms": codec.AlarmStatus(0, AT, (codec.TankAlarmCodes(1, (1,) * 100),)),
    "100 deliveries": codec.DeliveryReport(
        0, AT, (codec.TankDeliveries(1, "1", (codec.DeliveryRecord(AT, AT),) * 100),)
    ),
    "short code": codec.SystemStatus("i101", AT, ""),
    "status as clock": codec.SystemStatus("i50100", AT, ""),
    "data read as the date": codec.SystemStatus("i10100", None, "2401151230"),
    "ETX in data": codec.SystemStatus("i10100", AT, "a\x03b"),
    "an inventory's code": codec.UnknownReply("i20100", "zz"),
    "the refusal's code": codec.UnknownReply("9999FF", ""),
    "ETX in a report": DisplayReport(None, "a\x03b"),
    "a report read as checksummed": DisplayReport(None, "x&&ABCD"),
    "a report read as computer format": DisplayReport(None, "i20100 report"),
    "an empty report": DisplayReport(None, ""),
}


@pytest.mark.parametrize("item", UNENCODABLE.values(), ids=UNENCODABLE.keys())
def test_encode_reply_refuses_what_would_not_read_back(item: Reply) -> None:
    # Found by fuzzing the encoder: these were sent, and read back malformed or as another
    # reply (tank 100 shifted every field after it).
    with pytest.raises(ValueError):
        codec.encode_reply(item)


@pytest.mark.parametrize("value", [Decimal("Infinity"), Decimal("-1E+400"), float("inf"), 1e39])
def test_encode_float_refuses_what_would_read_back_as_no_value(value: Decimal | float) -> None:
    with pytest.raises(ValueError):  # an infinity was sent, and read back as None
        codec.encode_float(value)
    assert codec.decode_float(codec.encode_float(None)) is None


def test_encode_reply_refuses_the_configured_etx_inside() -> None:
    item = codec.SystemStatus("i10100", AT, "a\rb")
    assert codec.decode(codec.encode_reply(item)) == (len(codec.encode_reply(item)), item)
    with pytest.raises(ValueError, match="ETX"):
        codec.encode_reply(item, etx=0x0D)


# --------------------------------------------------------------------------- commands
@pytest.mark.parametrize(
    ("kwargs", "wire"),
    [
        ({}, b"\x01i20100"),
        ({"terminator": b"\n"}, b"\x01i20100\n"),
        ({"terminator": b"\r\n"}, b"\x01i20100\r\n"),
        ({"security_code": "SECRET"}, b"\x01SECRETi20100"),
        ({"security_code": "123456", "terminator": b"\r\n"}, b"\x01123456i20100\r\n"),
    ],
)
def test_encode_command(kwargs: dict[str, object], wire: bytes) -> None:
    assert codec.encode_command("i20100", **kwargs) == wire  # type: ignore[arg-type]


def test_encode_clock_set_with_data() -> None:
    wire = codec.encode_command("s50100", data="2401151230")
    assert wire == b"\x01s501002401151230"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"security_code": "12345"},
        {"security_code": "12 456"},
        {"terminator": b"\r"},
        {"data": "x" * 130},
    ],
)
def test_encode_command_refuses_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        codec.encode_command("i20100", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("security", [False, True])
@pytest.mark.parametrize("terminator", codec.TERMINATORS)
def test_command_round_trip_split_at_every_byte(security: bool, terminator: bytes) -> None:
    code = "SECRET" if security else None
    commands = [Command("i20100", "", code), Command("s50100", "2401151230", code)]
    wire = b"".join(
        codec.encode_command(c.code, data=c.data, security_code=code, terminator=terminator)
        for c in commands
    )
    for cut in range(1, len(wire)):
        got: list[Command | Malformed] = []
        buffer = bytearray()
        for chunk in (wire[:cut], wire[cut:]):
            buffer += chunk
            while True:
                used, item = codec.decode_command(buffer, security=security, terminator=terminator)
                if used == 0:
                    break
                del buffer[:used]
                assert item is not None
                got.append(item)
        assert got == commands, cut


def test_decode_command_skips_esc_and_stray_terminators() -> None:
    wire = b"\x1b\n" + codec.encode_command("i20500")
    used, item = codec.decode_command(wire)
    assert used == 2 and isinstance(item, Malformed) and item.kind == "garbage"
    assert codec.decode_command(wire[2:]) == (7, Command("i20500"))


def test_decode_command_cut_short() -> None:
    used, item = codec.decode_command(b"\x01i20\x01i20100", terminator=b"\n")
    assert used == 4 and isinstance(item, Malformed) and item.kind == "truncated"


def test_describe_command_with_a_superscript_in_the_tank_number() -> None:
    # Issue 9: '³' (0xB3 in latin-1) is a digit to str.isdigit() but not to int().
    wire = bytes.fromhex("01 69 32 30 32 30 b3")
    assert codec.decode_command(wire) == (7, Command("i2020³"))
    described = codec.describe_command(Command("i2020³"))
    json.dumps(described)
    assert described["code"] == "i2020³" and described["summary"] == "delivery report"


@pytest.mark.parametrize(
    ("code", "tank"),
    [
        ("i20100", 0),
        ("i20507", 7),
        ("I20199", 99),
        ("i2020³", None),
        ("i201٣٣", None),
        ("i201１２", None),
        ("i2011", None),
        ("i201 1", None),
        ("i201", None),
    ],
)
def test_tank_number_of_a_command(code: str, tank: int | None) -> None:
    assert codec.tank_number(code) == tank


# --------------------------------------------------------------------------- display format
def _display(text: str) -> DisplayInventory:
    parsed = codec.parse_display_inventory(text)
    assert isinstance(parsed, DisplayInventory), parsed
    return parsed


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_display_report_tls350_layout(line_end: str) -> None:
    report = _display(DISPLAY_TLS350.replace("\n", line_end))
    assert report.code == "I20100"
    assert report.printed_at == datetime(2024, 1, 15, 12, 30)
    assert [c.fills for c in report.columns] == [
        "volume",
        "tc_volume",
        "ullage",
        "height",
        "water",
        "temperature",
    ]
    one, two, three = report.tanks
    assert one.product == "UNLEADED 95"  # digits in a label stay in the label
    assert (one.volume, one.tc_volume, one.ullage) == (Decimal(5329), Decimal(5413), Decimal(4699))
    assert (one.height, one.water, one.temperature) == (
        Decimal("48.97"),
        Decimal(0),
        Decimal("37.39"),
    )
    assert one.water_volume is None
    assert two.product == "DIESEL & BIO" and two.water == Decimal("0.54")
    assert three.volume == Decimal(12450) and three.ullage == Decimal(1550)  # commas
    assert report.unparsed == ("4  KEROSENE           PROBE OUT",)


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_display_report_gallons_layout_with_a_blank_column(line_end: str) -> None:
    report = _display(DISPLAY_GALLONS.replace("\n", line_end))
    assert report.printed_at == datetime(2024, 1, 15, 12, 30)
    assert [c.name for c in report.columns] == ["GALLONS", "INCHES", "WATER", "DEG F", "ULLAGE"]
    regular, super_ = report.tanks
    assert regular.volume == Decimal(8123) and regular.tc_volume is None
    assert regular.height == Decimal("62.44") and regular.ullage == Decimal(3877)
    # Tank 2 prints no water: its numbers are placed by where their columns end.
    assert super_.water is None
    assert super_.temperature == Decimal("60.01") and super_.ullage == Decimal(5284)


def test_a_long_row_is_read_in_linear_time() -> None:
    # The row pattern's lazy label before `\s*$` backtracked over every space: one 64 KB
    # reply (a console's line full of blanks) held the daemon's event loop for 19 s.
    text = "TANK PRODUCT VOLUME ULLAGE\n1 x" + " " * (MAX_RESPONSE_BYTES - 40) + "y\n"
    started = time.perf_counter()
    report = _display(text)
    assert time.perf_counter() - started < 2.0
    assert report.tanks == () and len(report.unparsed) == 1


@pytest.mark.parametrize("line", ["X", "1", "TANK"])
def test_a_report_of_many_short_lines_is_read_quickly(line: str) -> None:
    # Each line before the header was tried against every date pattern with strptime:
    # 64 KB of one-character lines took 2.7 s.
    text = f"{line}\n" * (MAX_RESPONSE_BYTES // (len(line) + 1))
    started = time.perf_counter()
    codec.describe(DisplayReport("I20100", text))
    assert time.perf_counter() - started < 1.0


def test_a_wide_report_is_read_in_linear_time() -> None:
    # Each number was compared with every free heading: 12000 headings and a row of 6000
    # numbers took 6 s, a 64 KB reply about 20 s.
    headings = (MAX_RESPONSE_BYTES - 40) // 3
    text = "TANK VOLUME ULLAGE" + " X" * headings + "\n1 A" + " 1" * (headings // 2) + "\n"
    started = time.perf_counter()
    report = _display(text)
    assert time.perf_counter() - started < 2.0
    assert len(report.tanks) == 1


@quiet
@given(
    st.lists(st.integers(1, 400), min_size=1, max_size=30, unique=True).map(sorted),
    st.lists(st.integers(0, 420), min_size=1, max_size=30),
)
def test_numbers_go_under_the_nearest_heading_as_a_full_scan_puts_them(
    ends: list[int], number_ends: list[int]
) -> None:
    columns = tuple(codec.Column(f"C{end}", "volume", end) for end in ends)
    numbers = [re.match(r"(?s).*", " " * (end - 1) + "1") for end in number_ends[: len(ends)]]
    assert all(numbers)
    got = codec._align(columns, numbers)  # type: ignore[arg-type]
    first_free, wanted = 0, []
    for index, number in enumerate(numbers):
        last_allowed = len(columns) - (len(numbers) - index)
        choices = range(first_free, last_allowed + 1)
        best = min(choices, key=lambda c: abs(columns[c].end - number.end()))  # type: ignore[union-attr]
        wanted.append((columns[best], number))
        first_free = best + 1
    assert got == wanted


def _columns_one_pattern_at_a_time(header: str) -> list[tuple[str, str | None, int]]:
    """The header reading as first written: each known name tried in turn, longest first."""
    position = header.upper().find("TANK") + 4
    product = re.search(r"\bPRODUCT\b", header[position:], re.IGNORECASE)
    if product is not None:
        position += product.end()
    columns = []
    while True:
        while position < len(header) and header[position].isspace():
            position += 1
        if position >= len(header):
            return columns
        for pattern, fills in codec._COLUMN_PATTERNS:
            match = pattern.match(header, position)
            if match is not None:
                columns.append((" ".join(match.group(0).upper().split()), fills, match.end()))
                position = match.end()
                break
        else:
            end = position
            while end < len(header) and not header[end].isspace():
                end += 1
            columns.append((header[position:end].upper(), None, end))
            position = end


@quiet
@given(
    st.lists(
        st.one_of(
            st.sampled_from([name for name, _fills in codec._COLUMN_NAMES]),
            st.sampled_from(["TC", "VOL", "water", "90%", "Deg", "f", "X", "TEMPX", "MMM"]),
        ),
        max_size=12,
    ),
    st.lists(st.sampled_from([" ", "  ", "\t", " \u00a0"]), min_size=12, max_size=12),
)
def test_headings_are_read_as_one_pattern_at_a_time_reads_them(
    words: list[str], blanks: list[str]
) -> None:
    header = "TANK PRODUCT" + "".join(b + w for b, w in zip(blanks, words, strict=False))
    columns = codec._columns(header)
    wanted = _columns_one_pattern_at_a_time(header)
    if columns is not None:
        assert [(c.name, c.fills, c.end) for c in columns] == wanted
    else:
        assert len([c for c in wanted if c[1] is not None]) < 2


def test_a_header_of_many_words_is_read_quickly() -> None:
    # Each word was tried against the 24 known names in turn: a 64 KB header took 0.6 s.
    header = "TANK VOLUME ULLAGE" + " X" * ((MAX_RESPONSE_BYTES - 40) // 2)
    started = time.perf_counter()
    columns = codec._columns(header)
    assert time.perf_counter() - started < 0.5
    assert columns is not None and len(columns) > 30000


def test_display_report_without_a_header_is_malformed() -> None:
    parsed = codec.parse_display_inventory("I20100\r\nJAN 15, 2024 12:30 PM\r\nNO TANKS\r\n")
    assert isinstance(parsed, Malformed) and "no inventory header" in parsed.reason


def test_display_reply_framing() -> None:
    wire = b"\x01" + DISPLAY_TLS350.replace("\n", "\r\n").encode() + b"\x03"
    used, item = codec.decode(wire)
    assert used == len(wire)
    assert isinstance(item, DisplayReport) and item.code == "I20100"
    assert codec.encode_reply(item) == wire


def test_formatted_report_reads_back() -> None:
    assert isinstance(MANUAL_REPLY, Inventory)
    text = codec.format_display_inventory(
        MANUAL_REPLY.at, MANUAL_REPLY.tanks, header=("STATION",), line_end="\n"
    )
    report = _display(text)
    assert report.printed_at == MANUAL_REPLY.at
    tank = report.tanks[0]
    assert (tank.volume, tank.height, tank.temperature) == (
        Decimal(5329),
        Decimal("48.97"),
        Decimal("37.39"),
    )


# --------------------------------------------------------------------------- description
def test_describe_is_json_and_names_the_checksum() -> None:
    described = codec.describe(MANUAL_REPLY, MANUAL_INVENTORY)
    json.dumps(described)
    assert described["checksum"] == "EF20" and described["checksum_ok"] is True
    assert described["tanks"][0]["height"] == "48.97"
    assert described["raw"].startswith("<SOH>i20100") and described["raw"].endswith("<ETX>")
