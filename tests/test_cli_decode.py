"""Tests of `edgectl decode dart`, run through the decode module's own argparse registration."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgectl.cli import decode

AUTHORIZE = "50 37 01 01 06 1E 2A 03 FA"  # CD1 AUTHORIZE to 0x50, from wayne-dart.md
POLL = "50 20 FA"
ACK = "50 C7 FA"
BAD_CRC = "50 37 01 01 06 1E 2B 03 FA"


def _parser() -> argparse.ArgumentParser:
    # edgectl.cli.main imports every command module; building our own parser keeps these
    # tests independent of the commands other people are still writing.
    parser = argparse.ArgumentParser(prog="edgectl")
    decode.register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def run(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    args = _parser().parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def run_json(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list[dict[str, Any]]]:
    code, out, _ = run([*argv, "--json"], capsys, monkeypatch)
    entries: list[dict[str, Any]] = json.loads(out)
    return code, entries


# --------------------------------------------------------------------------- input forms
@pytest.mark.parametrize(
    "words",
    [
        AUTHORIZE.split(),
        ["503701010", "61E2A03FA"],  # split in the middle of a byte, as pasted
        ["0x50370101061E2A03FA"],
        ["50370101061e2a03fa"],
    ],
)
def test_hex_forms(
    words: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(["decode", "dart", "--from", "controller", *words], capsys, monkeypatch)
    assert code == 0
    assert "CD1 command: AUTHORIZE (0x06)" in out
    assert "raw: 50 37 01 01 06 1E 2A 03 FA" in out
    assert err == ""


def test_several_frames_run_together(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(["decode", "dart", "503701010", "61E2A03FA", "5020FA"], capsys, monkeypatch)
    assert code == 0
    assert "[1] DATA  address 0x50  seq 7  CRC ok (0x2A1E)" in out
    assert "[2] POLL  address 0x50" in out
    assert out.rstrip().endswith("2 item(s), 2 valid frame(s)")


@pytest.mark.parametrize("argv", [["decode", "dart"], ["decode", "dart", "-"]])
def test_reads_stdin(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(argv, capsys, monkeypatch, stdin=f"{POLL}\n{AUTHORIZE}\n")
    assert code == 0
    assert "DC1 pump status: MAX_REACHED (6)" in out  # answers the POLL


# --------------------------------------------------------------------------- direction
def test_data_after_poll_is_from_the_pump(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, entries = run_json(["decode", "dart", POLL, AUTHORIZE], capsys, monkeypatch)
    assert code == 0
    assert entries[1]["from"] == "pump"
    assert entries[1]["from_note"] == "answers the POLL to 0x50"
    assert entries[1]["transactions"][0]["name"] == "DC1 pump status"


def test_data_after_ackpoll_is_from_the_pump(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, entries = run_json(["decode", "dart", "50 E3 FA", AUTHORIZE], capsys, monkeypatch)
    assert entries[1]["from"] == "pump"


def test_data_after_other_frames_is_from_the_controller(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # After an ACK, and after a POLL to another pump, only the controller may talk.
    _, entries = run_json(
        ["decode", "dart", ACK, AUTHORIZE, "51 20 FA", AUTHORIZE], capsys, monkeypatch
    )
    assert [e.get("from") for e in entries] == [None, "controller", None, "controller"]
    assert entries[1]["from_note"] == "a pump only sends when polled; the frame before is ACK"
    assert entries[3]["from_note"] == "the POLL before it went to another pump"
    assert entries[1]["transactions"][0]["text"] == "AUTHORIZE (0x06)"


def test_garbage_does_not_hide_the_poll(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, entries = run_json(["decode", "dart", POLL, "00 00", AUTHORIZE], capsys, monkeypatch)
    assert code == 1
    assert entries[2]["from"] == "pump"


def test_lone_data_frame_shows_both_readings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(["decode", "dart", AUTHORIZE], capsys, monkeypatch)
    assert code == 0
    assert "sender unknown (nothing before it tells who sent it); both readings:" in out
    assert "if sent by the controller:\n      CD1 command: AUTHORIZE (0x06)" in out
    assert "if sent by the pump:\n      DC1 pump status: MAX_REACHED (6)" in out


def test_data_after_a_broken_frame_shows_both_readings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, entries = run_json(["decode", "dart", BAD_CRC, AUTHORIZE], capsys, monkeypatch)
    assert entries[1]["from"] is None
    assert set(entries[1]["readings"]) == {"controller", "pump"}


@pytest.mark.parametrize("side", ["controller", "pump"])
def test_from_forces_the_reading(
    side: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, entries = run_json(["decode", "dart", "--from", side, POLL, AUTHORIZE], capsys, monkeypatch)
    assert entries[1]["from"] == side
    assert entries[1]["from_note"] == "given with --from"


def test_unknown_transaction_is_shown_raw(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # DATA from 0x52 holding TRANS 0x99 "10 FA", plus DC2 and DC5 (frames.py).
    wire = "52 31 02 08 00 00 00 10 00 00 00 10 05 01 10 FA 99 02 10 10 FA 1E 08 03 FA"
    code, out, _ = run(["decode", "dart", "--from", "pump", wire], capsys, monkeypatch)
    assert code == 0  # a valid frame whose content we cannot read is not a line fault
    assert "DC2 filled volume and amount: volume 10, amount 10 (raw)" in out
    assert "DC5 alarm: code 250 (0xFA)" in out
    assert "unreadable DC transaction 0x99: no DC transaction 0x99 [raw 99 02 10 FA]" in out


# --------------------------------------------------------------------------- faults
def test_bad_crc(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["decode", "dart", BAD_CRC], capsys, monkeypatch)
    assert code == 1
    assert "[1] BAD CRC  address 0x50  seq 7" in out
    assert "CRC mismatch: expected 0x2A1E, received 0x2B1E" in out
    assert out.rstrip().endswith("1 item(s), 0 valid frame(s), 1 not valid")


def test_truncated_then_good(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, entries = run_json(["decode", "dart", "50 37 01 01 06", POLL], capsys, monkeypatch)
    assert code == 1
    assert [e["type"] for e in entries] == ["MALFORMED", "POLL"]


def test_garbage_and_unterminated_tail(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(["decode", "dart", "00 11", POLL, "51 37 01"], capsys, monkeypatch)
    assert code == 1
    assert "[1] GARBAGE\n    2 byte(s) before a frame start\n    raw: 00 11" in out
    assert "[3] MALFORMED  address 0x51  seq 7\n    capture ends inside a frame (no SF)" in out


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["50", "2G", "FA"], "not hex: '2G' (bad character 'G')"),
        (["50:20:FA"], "not hex: '50:20:FA' (bad character ':')"),
        (["50", "2"], "3 hex digits: the last byte is missing a digit"),
        (["0x"], "nothing to decode"),
    ],
)
def test_bad_input_is_reported_without_traceback(
    words: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, err = run(["decode", "dart", *words], capsys, monkeypatch)
    assert code == 1
    assert out == ""
    assert err == f"edgectl decode dart: {message}\n"


def test_empty_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(["decode", "dart"], capsys, monkeypatch, stdin="  \n")
    assert code == 1
    assert "nothing to decode" in err


def test_unreadable_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = io.TextIOWrapper(io.BytesIO(b"\xff\xfe50"), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", binary)
    args = _parser().parse_args(["decode", "dart"])
    assert args.func(args) == 1
    assert "cannot read the input" in capsys.readouterr().err


@settings(database=None, deadline=None)
@given(st.text(max_size=80) | st.text("0123456789abcdefABCDEF \n", max_size=120))
def test_any_text_gives_a_status_not_a_traceback(text: str) -> None:
    args = _parser().parse_args(["decode", "dart", "--json", "-"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(text))
        patch.setattr("sys.stdout", io.StringIO())
        patch.setattr("sys.stderr", io.StringIO())
        assert args.func(args) in (0, 1)


# --------------------------------------------------------------------------- usage
@pytest.mark.parametrize(
    "argv",
    [
        ["decode"],
        ["decode", "nope"],
        ["decode", "dart", "--from", "both", POLL],
        ["decode", "dart", "--bogus"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["decode", "dart", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "edgectl decode dart 50 37 01 01 06 1E 2A 03 FA" in out
    assert "exit status" in out


def test_decode_lists_its_protocols(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["decode", "--help"])
    assert "dart" in capsys.readouterr().out


def test_json_is_a_list_with_raw_bytes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, entries = run_json(["decode", "dart", POLL, BAD_CRC], capsys, monkeypatch)
    assert code == 1
    assert [(e["type"], e["valid"], e["raw"]) for e in entries] == [
        ("POLL", True, POLL),
        ("BAD_CRC", False, BAD_CRC),
    ]


_OTHER_COMMANDS = ("edgectl.cli.run", "edgectl.cli.simulate", "edgectl.cli.demo")


@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in _OTHER_COMMANDS),
    reason="edgectl.cli.main needs every command module, and some are not written yet",
)
def test_through_the_edgectl_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    from edgectl.cli.main import main

    assert main(["decode", "dart", "--from", "controller", AUTHORIZE]) == 0
    assert "CD1 command: AUTHORIZE (0x06)" in capsys.readouterr().out


# =========================================================================== decode tls
# The manual example of veeder-root-tls.md (checksum EF20), in the forms people paste it.
TLS_BODY = "i20100960122150601100000745A6880045A928004592D8004243E1480000000042158F5C00000000&&EF20"
TLS_REFUSAL = "\\x019999FF1B\\x03"


def run_tls_json(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(["decode", "tls", *argv, "--json"], capsys, monkeypatch)
    result: dict[str, Any] = json.loads(out)
    return code, result


@pytest.mark.parametrize(
    "text",
    [
        f"\\x01{TLS_BODY}\\x03",
        f"^A{TLS_BODY}^C",
        f"<SOH>{TLS_BODY}<ETX>",
        f"<soh>{TLS_BODY}<etx>",
        f"\x01{TLS_BODY}\x03",
    ],
)
def test_tls_control_character_forms(
    text: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(["decode", "tls", text], capsys, monkeypatch)
    assert code == 0, out
    assert "[1] INVENTORY  i20100  checksum ok (EF20)" in out
    assert "console time 1996-01-22 15:06" in out
    assert "tank 1  product 1  status 0000" in out
    assert "volume 5329  tc_volume 5413  ullage 4699  height 48.97  water 0" in out
    assert "temperature 37.39" in out
    assert f"raw: <SOH>{TLS_BODY}<ETX>" in out
    assert "note:" not in out and err == ""


def test_tls_example_pasted_over_two_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the facts file prints it: split across lines and indented.
    pasted = f"\\x01{TLS_BODY[:25]}\n          {TLS_BODY[25:]}\\x03\n"
    code, out, _ = run(["decode", "tls"], capsys, monkeypatch, stdin=pasted)
    assert code == 0
    assert "note: line breaks and spaces inside computer-format replies removed" in out
    assert "checksum ok (EF20)" in out


def test_tls_without_soh_and_etx(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, result = run_tls_json([TLS_BODY], capsys, monkeypatch)
    assert code == 0
    assert result["notes"] == [
        "no SOH in the input: read as one reply",
        "no ETX at the end of the input: the last reply is closed there",
    ]
    assert result["replies"][0]["checksum"] == "EF20"


def test_tls_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, result = run_tls_json([f"<SOH>{TLS_BODY}<ETX>"], capsys, monkeypatch)
    assert code == 0
    (reply,) = result["replies"]
    assert reply["type"] == "INVENTORY" and reply["valid"] is True
    assert reply["checksum"] == "EF20" and reply["checksum_ok"] is True
    assert reply["at"] == "1996-01-22T15:06:00"
    tank = reply["tanks"][0]
    assert (tank["volume"], tank["height"], tank["temperature"]) == ("5329", "48.97", "37.39")
    assert tank["float_count"] == 7 and tank["delivery_in_progress"] is False


def test_tls_refusal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["decode", "tls", TLS_REFUSAL], capsys, monkeypatch)
    assert code == 0
    assert "[1] UNSUPPORTED  9999  checksum ok (FF1B)" in out
    assert "the console does not support (or refused) the command" in out


def test_tls_bad_checksum_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = f"<SOH>{TLS_BODY.replace('EF20', 'EF21')}<ETX>"
    code, out, _ = run(["decode", "tls", text], capsys, monkeypatch)
    assert code == 1
    assert "[1] BAD CHECKSUM  checksum BAD (EF21)" in out
    assert "checksum mismatch: computed EF20, received EF21" in out
    assert out.rstrip().endswith("1 item(s), 0 valid, 1 not valid")


def test_tls_malformed_and_junk_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = f"noise<SOH>i20100960122<ETX>{TLS_REFUSAL}"
    code, result = run_tls_json([text], capsys, monkeypatch)
    assert code == 1
    assert [(r["type"], r["valid"]) for r in result["replies"]] == [
        ("GARBAGE", False),
        ("MALFORMED", False),
        ("UNSUPPORTED", True),
    ]
    assert result["replies"][0]["raw"] == "noise"


def test_tls_several_replies_and_the_etx_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = f"<SOH>{TLS_BODY}\\x04<SOH>i501002401151230&&FC61\\x04"
    code, result = run_tls_json(["--etx", "04", text], capsys, monkeypatch)
    assert code == 0
    assert [r["type"] for r in result["replies"]] == ["INVENTORY", "CLOCK"]
    assert result["replies"][1]["at"] == "2024-01-15T12:30:00"


def test_tls_alarms_and_deliveries_text(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    alarms = "<SOH>i205002401151230010205110200030199&&F8DE<ETX>"
    code, out, _ = run(["decode", "tls", alarms], capsys, monkeypatch)
    assert code == 0
    assert "tank 1: 05 low product, 11 delivery needed" in out
    assert "tank 2: none" in out and "tank 3: 99 tank alarm 99" in out


def test_tls_display_report_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    report = (
        "<SOH>\r\nI20100\r\nJAN 15, 2024 12:30 PM\r\n\r\nIN-TANK INVENTORY\r\n\r\n"
        "TANK PRODUCT             VOLUME TC VOLUME   ULLAGE   HEIGHT    WATER     TEMP\r\n"
        "  1  UNLEADED             5329      5413     4699    48.97     0.00    37.39\r\n"
        "  2  DIESEL             PROBE OUT\r\n<ETX>"
    )
    code, out, _ = run(["decode", "tls", "-"], capsys, monkeypatch, stdin=report)
    assert code == 0
    assert "[1] DISPLAY  I20100" in out
    assert "in-tank inventory report; columns: VOLUME, TC VOLUME, ULLAGE, HEIGHT" in out
    assert "tank 1  product UNLEADED  status 0000" in out
    assert "height 48.97" in out
    assert "not read: 2  DIESEL             PROBE OUT" in out
    assert "checksum" not in out  # display format has none


@pytest.mark.parametrize("text", ["", "   "])
def test_tls_nothing_to_decode(
    text: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(["decode", "tls", text], capsys, monkeypatch)
    assert code == 1 and "nothing to decode" in err


def test_tls_text_that_is_not_latin1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(["decode", "tls", "i201€"], capsys, monkeypatch)
    assert code == 1 and "not a TLS reply" in err


def test_tls_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["decode", "--help"])
    assert "tls" in capsys.readouterr().out
