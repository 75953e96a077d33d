"""Tests of `edgectl decode ifsf`, through the decode module's own argparse registration."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.drivers.ifsf.frames import GOLDEN, HEARTBEAT_WIRE
from tests.test_cli_decode import _parser, run, run_json

AUTHORISE = GOLDEN[3].wire.hex(" ").upper()  # E3
REFUSED = GOLDEN[6].wire.hex(" ").upper()  # E3, MS_ACK 5
STATUS = GOLDEN[7].wire.hex(" ").upper()  # E4
READ = GOLDEN[0].wire.hex(" ").upper()  # E2


def test_text_names_every_field(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(["decode", "ifsf", AUTHORISE, REFUSED], capsys, monkeypatch)
    assert code == 0 and err == ""
    assert (
        "[1] WRITE  to 1.11 (dispenser) from 2.1 (controller device)  token 25  M_St 0x59"
        "  MC 0 (application)  M_Lg 18"
    ) in out
    assert "    database: FP 1 (DB_Ad 21)" in out
    assert "    1B Remote_Amount_Prepay: 9900.00" in out
    assert "    19 Log_Noz_Mask: nozzle(s) 1" in out
    assert "    1E Release_Contr_Id: 2.1 (controller device)" in out
    assert "    3E Release_FP: command" in out
    assert "    MS_ACK 5: message refused: some data not acceptable (data acks follow)" in out
    assert "    data ack 3E Release_FP: 3 command refused in this state" in out
    assert f"    raw: {AUTHORISE}" in out
    assert out.rstrip().endswith("2 item(s), 2 valid")


def test_hex_forms_and_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    packed = READ.replace(" ", "")
    code, out, _ = run(["decode", "ifsf", packed[:5], "0x" + packed[5:]], capsys, monkeypatch)
    assert code == 0 and "    read 14 FP_State" in out
    code, out, _ = run(["decode", "ifsf"], capsys, monkeypatch, stdin=READ + "\n" + STATUS)
    assert code == 0
    assert "[2] UNSOLICITED  to 2.1 (controller device) from 1.3 (dispenser)  token 0" in out
    assert "    14 FP_State: 6 Started" in out


def test_json_shapes(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, entries = run_json(["decode", "ifsf", AUTHORISE, REFUSED], capsys, monkeypatch)
    assert code == 0
    write, ack = entries
    assert write["type"] == "WRITE" and write["valid"] is True
    assert write["recipient"] == {"lna": "1.11", "role": "dispenser"}
    assert write["token"] == 25 and write["m_st"] == "0x59" and write["mc"] == 0
    assert write["database"] == {"db_ad": "21", "database": "FP", "name": "FP 1", "fp": 1}
    assert write["items"][0] == {
        "id": "0x1B",
        "name": "Remote_Amount_Prepay",
        "encoding": "bin8+bcd8",
        "text": "9900.00",
        "value": "9900.00",
        "known": True,
        "length": 5,
        "raw": "1B 05 06 00 99 00 00",
    }
    assert ack["ms_ack"]["code"] == 5
    assert ack["data_acks"][3] == {
        "id": "0x3E",
        "name": "Release_FP",
        "code": 3,
        "meaning": "command refused in this state",
    }


def test_heartbeat(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(["decode", "ifsf", HEARTBEAT_WIRE.hex()], capsys, monkeypatch)
    assert code == 0
    assert (
        "[1] HEARTBEAT  192.168.0.104:4368  LNA 2.1 (controller device)  status 0 (normal)" in out
    )
    code, entries = run_json(
        ["decode", "ifsf", "--as", "heartbeat", HEARTBEAT_WIRE.hex() * 2], capsys, monkeypatch
    )
    assert code == 0 and [e["port"] for e in entries] == [4368, 4368]


def test_as_message_overrides_the_heartbeat_guess(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, entries = run_json(
        ["decode", "ifsf", "--as", "message", HEARTBEAT_WIRE.hex()], capsys, monkeypatch
    )
    assert code == 1 and entries[0]["type"] == "TRUNCATED"


def test_unknown_data_is_shown_raw_and_is_not_a_fault(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # FP_State with 2 bytes, and a manufacturer's data id.
    wire = "02 01 01 03 00 3E 00 09 01 21 14 02 00 06 E0 01 7F"
    code, out, _ = run(["decode", "ifsf", wire], capsys, monkeypatch)
    assert code == 0
    assert "    14 FP_State: 00 06 [not read: bin8 is 1 byte(s), not 2]" in out
    assert "    E0 manufacturer data E0h: 7F [not read: unknown data id]" in out


@pytest.mark.parametrize(
    ("wire", "kind", "reason"),
    [
        ("01 03 02 01 00 BE 00 03 01 21 14", "MALFORMED", "type 101 is not defined"),
        ("01 03 02 01 00 1E 00 05 01 21 14", "TRUNCATED", "the capture ends 3 byte(s) in"),
        ("47 45 54 20 2F 20 48 54 54 50", "UNFRAMEABLE", "M_Lg 18516 is above"),
        ("02 01 01 03 00 EC 00 04 01 21 05 1B", "MALFORMED", "not pairs"),
        ("C0 A8 00 68 11 10 02 01 02 00", "TRUNCATED", "M_Lg 513"),
    ],
)
def test_malformed_input_exits_1_with_why(
    wire: str,
    kind: str,
    reason: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, err = run(["decode", "ifsf", READ, wire], capsys, monkeypatch)
    assert code == 1 and err == ""
    assert f"[2] {kind}\n" in out and reason in out
    assert out.rstrip().endswith("2 item(s), 1 valid, 1 not valid")
    code, entries = run_json(["decode", "ifsf", wire], capsys, monkeypatch)
    assert code == 1 and entries[0]["valid"] is False and reason in entries[0]["reason"]


def test_a_bad_heartbeat_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(
        ["decode", "ifsf", "--as", "heartbeat", "C0A80068111002010100 01"], capsys, monkeypatch
    )
    assert code == 1
    assert "[2] MALFORMED\n    a heartbeat is 10 bytes, not 1" in out


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["01", "0G"], "not hex: '0G' (bad character 'G')"),
        (["010"], "3 hex digits: the last byte is missing a digit"),
        (["0x"], "nothing to decode"),
    ],
)
def test_bad_input_is_reported_without_traceback(
    words: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, out, err = run(["decode", "ifsf", *words], capsys, monkeypatch)
    assert (code, out, err) == (1, "", f"edgectl decode ifsf: {message}\n")


def test_max_length(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    long = "01 03 02 01 00 21 13 8E 01 00 03 FF 13 88" + " 02 01" * 2500
    code, entries = run_json(["decode", "ifsf", long], capsys, monkeypatch)
    assert code == 1 and entries[0]["type"] == "UNFRAMEABLE"
    code, entries = run_json(["decode", "ifsf", "--max-length", "65535", long], capsys, monkeypatch)
    assert code == 0 and entries[0]["items"][0]["long_form"] is True
    with pytest.raises(SystemExit):
        _parser().parse_args(["decode", "ifsf", "--max-length", "1", long])


def test_help_and_listing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["decode", "ifsf", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "edgectl decode ifsf 01 03 02 01 00 1E 00 03 01 21 14" in out and "exit status" in out
    with pytest.raises(SystemExit):
        _parser().parse_args(["decode", "--help"])
    assert "ifsf" in capsys.readouterr().out


@settings(database=None, deadline=None)
@given(st.text(max_size=80) | st.text("0123456789abcdefABCDEF \n", max_size=160))
def test_any_text_gives_a_status_not_a_traceback(text: str) -> None:
    for kind in ("auto", "heartbeat"):
        args = _parser().parse_args(["decode", "ifsf", "--json", "--as", kind, "-"])
        out = io.StringIO()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.stdin", io.StringIO(text))
            patch.setattr("sys.stdout", out)
            patch.setattr("sys.stderr", io.StringIO())
            assert args.func(args) in (0, 1)
        if out.getvalue():
            assert isinstance(json.loads(out.getvalue()), list)
