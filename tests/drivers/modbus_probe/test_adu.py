"""Modbus ADUs read off the wire for `sniff`: golden frames, framing of split input, CRC."""

from __future__ import annotations

import pytest

from drivers.modbus_probe import adu

# The facts' worked frame (CRC verified): read 2 input registers from device 1, and a reply
# carrying 41 1E 00 00 (9.875 as float32 ABCD).
REQUEST = bytes.fromhex("01 04 00 00 00 02 71 CB")
REPLY = bytes.fromhex("01 04 04 41 1E 00 00 8F BE")


def test_crc16_of_the_worked_frames() -> None:
    assert adu.crc16(REQUEST[:-2]) == 0xCB71
    assert adu.with_crc(REPLY[:-2]) == REPLY


@pytest.mark.parametrize(
    ("wire", "is_request", "summary", "kind"),
    [
        (REQUEST, True, "read input registers 0..1 from 1", "READ_INPUT"),
        (REPLY, False, "2 input registers from 1", "READ_INPUT"),
        (
            adu.with_crc(bytes.fromhex("03 03 00 C8 00 24")),
            True,
            "read holding registers 200..235 from 3",
            "READ_HOLDING",
        ),
        (
            adu.with_crc(bytes.fromhex("02 84 02")),
            False,
            "2 refused read input registers: Modbus exception 2 (illegal data address)",
            "EXCEPTION",
        ),
        (
            adu.with_crc(bytes.fromhex("05 06 00 01 00 2A")),
            True,
            "write single register 1 = 42 on 5",
            "WRITE_REGISTER",
        ),
    ],
)
def test_golden_rtu_frames(wire: bytes, is_request: bool, summary: str, kind: str) -> None:
    assert adu.frame_length(wire, "rtu", request=is_request) == len(wire)
    described = adu.describe(adu.decode(wire, "rtu", request=is_request))
    assert (described["summary"], described["type"]) == (summary, kind)
    assert described["valid"] is True and described["crc"] == "ok"
    assert described["crc_value"] == wire[-2:].hex(" ").upper()


def test_a_bad_crc_is_a_verdict_not_an_error() -> None:
    wire = REPLY[:-1] + b"\x00"
    item = adu.decode(wire, "rtu", request=False)
    described = adu.describe(item)
    assert (item.crc, described["valid"]) == ("bad", False)
    assert described["summary"] == "CRC mismatch: computed 8F BE, received 8F 00"


def test_a_reply_is_framed_from_its_header_however_it_arrives() -> None:
    both = REPLY + adu.with_crc(bytes.fromhex("02 84 02"))
    for cut in range(len(REPLY)):
        assert adu.frame_length(REPLY[:cut], "rtu", request=False) is None
    assert adu.frame_length(both, "rtu", request=False) == len(REPLY)
    assert adu.frame_length(both[len(REPLY) :], "rtu", request=False) == 5
    # An unknown function code: all there is, as one frame.
    assert adu.frame_length(b"\x01\x41\x00\x00\x00", "rtu", request=False) == 5


def test_cut_short_and_modbus_tcp() -> None:
    cut = adu.decode(REPLY[:3], "rtu", request=False, complete=False)
    described = adu.describe(cut)
    assert described["valid"] is False and cut.crc == "none"
    assert described["summary"] == "cut short: 3 byte(s), never a whole frame"
    mbap = bytes.fromhex("00 2A 00 00 00 06 09 04 00 C8 00 24")
    assert adu.frame_length(mbap[:11], "socket", request=True) is None
    assert adu.frame_length(mbap + b"\x00", "socket", request=True) == len(mbap)
    item = adu.decode(mbap, "socket", request=True)
    assert (item.transaction_id, item.device_id, item.function_code, item.crc) == (42, 9, 4, "none")
    assert adu.describe(item)["summary"] == "read input registers 200..235 from 9"
