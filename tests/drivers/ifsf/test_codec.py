"""The IFSF message codec: golden messages both ways, what they say, refusals, round trips."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import FrameError
from drivers.ifsf import codec
from drivers.ifsf import databases as db
from drivers.ifsf.codec import DataItem, Message, Read, Write
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import decode_heartbeat, describe_heartbeat, encode_heartbeat
from tests.drivers.ifsf.frames import CD, FP1, GOLDEN, HEARTBEAT, HEARTBEAT_WIRE, Golden, h
from tests.drivers.ifsf.strategies import addresses, messages


@pytest.mark.parametrize("golden", GOLDEN, ids=[g.name for g in GOLDEN])
def test_golden_decodes(golden: Golden) -> None:
    assert codec.decode_message(golden.wire) == golden.message
    assert codec.decode(golden.wire) == (len(golden.wire), golden.message)


@pytest.mark.parametrize("golden", GOLDEN, ids=[g.name for g in GOLDEN])
def test_golden_encodes(golden: Golden) -> None:
    assert codec.encode(golden.message) == golden.wire


@pytest.mark.parametrize("golden", GOLDEN, ids=[g.name for g in GOLDEN])
def test_golden_describes_every_item_it_knows(golden: Golden) -> None:
    described = codec.describe(golden.message)
    json.dumps(described, allow_nan=False)
    assert described["valid"] and described["raw"] == golden.wire.hex(" ").upper()
    for entry in described.get("items", []):
        assert entry["known"], entry


def test_e3_authorise_in_words() -> None:
    described = codec.describe(codec.decode_message(GOLDEN[3].wire))
    assert described["type"] == "WRITE" and described["m_st"] == "0x59"
    assert described["recipient"] == {"lna": "1.11", "role": "dispenser"}
    assert described["originator"] == {"lna": "2.1", "role": "controller device"}
    assert described["token"] == 25 and described["m_lg"] == 18
    assert described["database"] == {"db_ad": "21", "database": "FP", "name": "FP 1", "fp": 1}
    readings = [(i["name"], i["encoding"], i["value"]) for i in described["items"]]
    assert readings == [
        ("Remote_Amount_Prepay", "bin8+bcd8", "9900.00"),
        ("Log_Noz_Mask", "bin8 nozzle bits", {"mask": 1, "nozzles": [1]}),
        ("Release_Contr_Id", "LNA", "2.1"),
        ("Release_FP", "command", None),
    ]


def test_e3_refusal_names_the_refused_command() -> None:
    described = codec.describe(codec.decode_message(GOLDEN[6].wire))
    assert described["ms_ack"]["code"] == 5 and "refused" in described["ms_ack"]["meaning"]
    refused = [a for a in described["data_acks"] if a["code"]]
    assert refused == [
        {
            "id": "0x3E",
            "name": "Release_FP",
            "code": 3,
            "meaning": "command refused in this state",
        }
    ]


def test_e4_and_e7_unsolicited_reports_in_words() -> None:
    status = codec.describe(codec.decode_message(GOLDEN[7].wire))
    assert status["type"] == "UNSOLICITED" and status["token"] == 0
    texts = {i["name"]: i["text"] for i in status["items"]}
    assert texts["FP_Status_Message"] == "container"
    assert texts["FP_State"] == "6 Started"
    assert texts["Log_Noz_State"] == "nozzle(s) 1"
    error = codec.describe(codec.decode_message(GOLDEN[10].wire))
    assert error["database"]["name"] == "FP 1, error 99h (price change successful)"
    assert [i["text"] for i in error["items"]][1:] == ["99h price change successful", "2 Closed"]


def test_e9_message_code_2_is_kept() -> None:
    described = codec.describe(codec.decode_message(GOLDEN[11].wire))
    assert described["mc"] == 2 and described["mc_name"] == "communication service"


def test_heartbeat_e1() -> None:
    assert decode_heartbeat(HEARTBEAT_WIRE) == HEARTBEAT
    assert encode_heartbeat(HEARTBEAT) == HEARTBEAT_WIRE
    described = describe_heartbeat(HEARTBEAT)
    assert (described["ip"], described["port"], described["lna"]) == ("192.168.0.104", 4368, "2.1")
    assert described["status_flags"] == []


def test_heartbeat_status_bits_are_named() -> None:
    heartbeat = decode_heartbeat(h("C0 A8 00 0B 13 88 01 0B 01 81"))
    assert heartbeat.flags == ["configuration needed", "software refresh required"]


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("C0 A8 00 68 11 10 02 01 01", "10 bytes, not 9"),
        ("C0 A8 00 68 11 10 02 01 01 00 00", "10 bytes, not 11"),
        ("C0 A8 00 68 11 10 02 01 00 00", "is not 0x01"),
    ],
)
def test_not_a_heartbeat(wire: str, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_heartbeat(h(wire))


@given(st.binary(min_size=10, max_size=10))
def test_heartbeat_round_trip(wire: bytes) -> None:
    wire = wire[:8] + b"\x01" + wire[9:]
    assert encode_heartbeat(decode_heartbeat(wire)) == wire


# ------------------------------------------------------------------------- addresses
@pytest.mark.parametrize(
    ("wire", "address"),
    [
        ("00", db.COM_SV),
        ("01", db.C_DAT),
        ("A1", db.SW_DAT),
        ("20", db.FuellingPoint(0)),
        ("24", db.FuellingPoint(4)),
        ("21 10", db.LogicalNozzle(1, 0)),
        ("22 18", db.LogicalNozzle(2, 8)),
        ("21 21 99 99", db.TransactionBuffer(1, 9999)),
        ("21 20 00 00", db.TransactionBuffer(1, 0, every=True)),  # ZSY's "no more" form
        ("20 21 00 00", db.TransactionBuffer(0, 0)),  # SINOPEC's
        ("23 41 24", db.ErrorEntry(3, 0x24)),
        ("40", db.Product(0)),
        ("48", db.Product(8)),
        ("61 12 34 56 78 10", db.ProductPerMode(12345678, 0)),
        ("80", db.Meter(0)),
        ("90", db.Meter(16)),
    ],
)
def test_every_database_address(wire: str, address: db.Address) -> None:
    assert db.parse_address(h(wire)) == address
    assert address.wire == h(wire)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("25", "no database 25h"),
        ("21 19", "no FP sub-database 19h"),
        ("21 21 00", "4 bytes, not 3"),
        ("21 21 00 4A", "not BCD"),
        ("21 41", "3 bytes, not 2"),
        ("49", "no database 49h"),
        ("91", "no database 91h"),
        ("61 00 00 00 08", "6 bytes, not 5"),
        ("61 00 00 0A 08 11", "not BCD"),
        ("61 00 00 00 08 19", "outside 10h-18h"),
        ("00 00", "no database 00h in 2"),
    ],
)
def test_unknown_addresses_are_kept_raw(wire: str, reason: str) -> None:
    address = db.parse_address(h(wire))
    assert isinstance(address, db.UnknownDatabase) and reason in address.reason
    assert address.wire == h(wire)


@given(addresses)
def test_address_round_trip(address: db.Address) -> None:
    assert db.parse_address(address.wire) == address


@pytest.mark.parametrize(
    "build",
    [
        lambda: db.FuellingPoint(5),
        lambda: db.LogicalNozzle(1, 9),
        lambda: db.TransactionBuffer(1, 10000),
        lambda: db.ErrorEntry(1, 256),
        lambda: db.Product(9),
        lambda: db.ProductPerMode(100_000_000, 1),
        lambda: db.Meter(17),
        lambda: db.UnknownDatabase(b""),
        lambda: db.nozzle_mask([9]),
    ],
)
def test_addresses_out_of_range_are_refused(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


# ------------------------------------------------------------------------- items and values
def test_values_by_name_and_encoding() -> None:
    assert codec.item(FP1, 0x1B, Decimal("9900.00")) == DataItem(0x1B, h("06 00 99 00 00"))
    assert db.decode_value(FP1, 0x14, b"\x08") == 8
    assert db.nozzles_of(0b101) == [1, 3] and db.nozzle_mask([1, 3]) == 0b101
    with pytest.raises(ValueError, match="no data id"):
        codec.item(FP1, 0x99, 1)
    with pytest.raises(ValueError):
        codec.item(FP1, 0x3E, 1)  # a command carries no value
    with pytest.raises(FrameError, match="no data id"):
        db.decode_value(FP1, 0x99, b"")


def test_an_unreadable_value_is_shown_raw_with_why() -> None:
    described = db.describe_value(FP1, 0x1B, h("06 00 9A 00 00"))
    assert not described["known"] and described["value"] == "06 00 9A 00 00"
    assert "not packed BCD" in described["reason"]
    unknown = db.describe_value(FP1, 0xE0, h("01"))
    assert unknown["name"] == "manufacturer data E0h" and not unknown["known"]


def test_recipient_as_lna_or_heartbeat_record() -> None:
    assert db.decode_value(db.COM_SV, 0x0B, h("02 01")) == CD
    assert db.decode_value(db.COM_SV, 0x0B, HEARTBEAT_WIRE) == HEARTBEAT
    with pytest.raises(FrameError):
        db.decode_value(db.COM_SV, 0x0B, h("02 01 00"))


def test_long_data_is_read_and_written() -> None:
    table = bytes(range(256)) * 2  # 512 bytes: an LNA table of 256 entries
    wire = codec.encode(Message(CD, Lna(1, 3), 1, db.COM_SV, codec.Answer((DataItem(3, table),))))
    assert wire[9:14] == h("00 03 FF 02 00")
    decoded = codec.decode_message(wire)
    assert isinstance(decoded.body, codec.Answer) and decoded.body.items[0].data == table
    # The long form for short data is read, and written back the same way.
    short = h("01 03 02 01 00 21 00 07 01 00 04 FF 00 01 0A")
    again = codec.decode_message(short)
    assert again.body == codec.Answer((DataItem(4, b"\x0a", long_form=True),))
    assert db.describe_value(db.COM_SV, 4, b"\x0a")["text"] == "10"
    assert codec.encode(again) == short


def test_data_acks_after_any_ms_ack_are_kept() -> None:
    wire = h("02 01 01 03 00 E1 00 05 01 21 07 3E 03")
    decoded = codec.decode_message(wire)
    assert decoded.body == codec.Ack(7, (codec.DataAck(0x3E, 3),))
    assert codec.encode(decoded) == wire


# ------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("01 03 02 01 00 1E 00", "shorter than the 8-byte header"),
        ("01 03 02 01 00 1E 00 04 01 21 14", "M_Lg 4, but 3 byte(s) follow"),
        ("01 03 02 01 00 1E 00 01 01", "no room for DB_Ad_Lg"),
        ("01 03 02 01 00 BE 00 03 01 21 14", "type 101 is not defined"),
        ("01 03 02 01 00 DE 00 03 01 21 14", "type 110 is not defined"),
        ("01 03 02 01 00 1E 00 03 00 21 14", "DB_Ad_Lg 0"),
        ("01 03 02 01 00 1E 00 03 09 21 14", "DB_Ad_Lg 9"),
        ("01 03 02 01 00 1E 00 03 04 21 14", "runs past"),
        ("02 01 01 03 00 EC 00 02 01 21", "without MS_ACK"),
        ("02 01 01 03 00 EC 00 04 01 21 05 1B", "not pairs"),
        ("02 01 01 03 00 3E 00 03 01 21 14", "has no Data_Lg"),
        ("02 01 01 03 00 3E 00 05 01 21 14 02 02", "declares 2 byte(s), 1 remain"),
        ("02 01 01 03 00 3E 00 05 01 21 14 FF 00", "long length cut short"),
    ],
)
def test_malformed_messages_raise_frame_error(wire: str, reason: str) -> None:
    with pytest.raises(FrameError, match=re.escape(reason)):
        codec.decode_message(h(wire))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Message(CD, CD, 32, FP1, Read()),
        lambda: Message(CD, CD, 1, FP1, Read(), mc=256),
        lambda: Read((256,)),
        lambda: DataItem(0x100),
        lambda: DataItem(1, bytes(0x10000)),
        lambda: codec.Ack(256),
        lambda: codec.DataAck(1, 256),
        lambda: Write((b"\x01",)),  # type: ignore[arg-type]
        lambda: Message(CD, CD, 1, FP1, Write((DataItem(1, bytes(0xFFFF)),))),
    ],
)
def test_what_the_wire_cannot_carry_is_refused(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


# ------------------------------------------------------------------------- round trips
@given(messages())
def test_message_round_trip(message: Message) -> None:
    wire = codec.encode(message)
    assert codec.decode_message(wire) == message
    assert codec.decode(wire, max_length=codec.M_LG_LIMIT) == (len(wire), message)
    json.dumps(codec.describe(message), allow_nan=False)


@given(st.binary(max_size=80))
def test_any_bytes_decode_to_a_message_that_encodes_back_or_raise_frame_error(
    wire: bytes,
) -> None:
    # A header with a matching M_Lg most of the time, so the body gets read.
    if len(wire) >= 8:
        wire = wire[:6] + (len(wire) - 8).to_bytes(2, "big") + wire[8:]
    try:
        message = codec.decode_message(wire)
    except FrameError:
        return
    assert codec.encode(message) == wire
