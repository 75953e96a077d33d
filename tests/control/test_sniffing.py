"""Sniffed TLS and Modbus frames as `sniff` events: the manual's frames, byte for byte."""

from __future__ import annotations

from drivers.modbus_probe import adu
from drivers.modbus_probe.sniff import describe_modbus
from drivers.veeder_root import codec as tls
from drivers.veeder_root.sniff import describe_tls

# The manual's worked example (veeder-root-tls.md), one line on the wire.
MANUAL_REPLY = (
    b"\x01i201009601221506011000007"
    b"45A6880045A928004592D8004243E1480000000042158F5C00000000&&EF20\x03"
)


def test_the_manuals_inventory_reply() -> None:
    [(raw, item)] = tls.decode_all(MANUAL_REPLY)
    event = describe_tls("rx", raw, item, 1000.5, 1000.25)
    assert (event["from"], event["type"], event["crc"], event["valid"]) == (
        "console",
        "INVENTORY",
        "ok",
        True,
    )
    assert event["gap_ms"] == 250.0 and event["address"] is None
    assert bytes.fromhex(event["hex"]) == MANUAL_REPLY
    assert event["text"] == "<SOH>" + MANUAL_REPLY[1:-1].decode() + "<ETX>"
    assert event["summary"] == (
        "i20100 at 1996-01-22 15:06: tank 1 (1) volume 5329, tc volume 5413, ullage 4699, "
        "height 48.97, water 0, temperature 37.39"
    )
    assert event["frame"]["checksum"] == "EF20" and "raw" not in event["frame"]


def test_a_bad_checksum_and_a_refusal() -> None:
    spoiled = MANUAL_REPLY[:-2] + b"1\x03"
    [(raw, item)] = tls.decode_all(spoiled)
    event = describe_tls("rx", raw, item, 1.0, None)
    assert (event["type"], event["crc"], event["valid"]) == ("BAD_CHECKSUM", "bad", False)
    assert event["summary"] == "checksum mismatch: computed EF20, received EF21"
    [(raw, item)] = tls.decode_all(b"\x019999FF1B\x03")
    event = describe_tls("rx", raw, item, 1.0, None)
    assert (event["type"], event["crc"]) == ("UNSUPPORTED", "ok")
    assert event["summary"].startswith("9999FF1B: the console does not support")


def test_commands_hide_the_security_code_and_esc_is_shown() -> None:
    command = tls.Command("i20503", security_code="SECRET")
    wire = tls.encode_command("i20503", security_code="SECRET", terminator=b"\r\n")
    event = describe_tls("tx", wire, command, 1.0, None)
    assert event["text"] == "<SOH>******i20503<CR><LF>" and b"SECRET" not in bytes.fromhex(
        event["hex"]
    )
    assert (event["type"], event["summary"], event["crc"]) == (
        "i20503",
        "tank alarms, tank 3",
        "none",
    )
    assert event["frame"]["security_code"] is True
    clock = tls.Command("s50100", data="2405011230")
    event = describe_tls("tx", tls.encode_command("s50100", data="2405011230"), clock, 1.0, None)
    assert event["summary"] == "set the clock to 2024-05-01 12:30"
    event = describe_tls("tx", b"\x1b", None, 1.0, None)
    assert (event["type"], event["text"], event["hex"]) == ("ESC", "<ESC>", "1B")


def test_a_reprogrammed_etx_is_named() -> None:
    reply = tls.encode_computer("i50100" + "2405011230", etx=0x04)
    [(raw, item)] = tls.decode_all(reply, etx=0x04)
    event = describe_tls("rx", raw, item, 1.0, None, etx=0x04)
    assert event["text"].endswith("<ETX>") and event["crc"] == "ok"


def test_a_modbus_reply() -> None:
    wire = adu.with_crc(bytes.fromhex("03 04 04 41 1E 00 00"))
    event = describe_modbus("rx", wire, adu.decode(wire, "rtu", request=False), 2.0, 1.0)
    assert (event["from"], event["address"], event["type"], event["crc"]) == (
        "device",
        3,
        "READ_INPUT",
        "ok",
    )
    assert event["summary"] == "2 input registers from 3" and event["gap_ms"] == 1000.0
    assert "text" not in event
