"""`edgectl config check`: a valid file is summarised, a wrong one explained, exit 0 / 1."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgectl.cli.main import main
from tests.control.clikit import ROOT
from tests.stationkit import station_toml


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["config", "check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "station.toml"
    path.write_text(station_toml(tmp_path, lines=2))
    code, out, err = check(capsys, str(path))
    assert code == 0 and err == ""
    assert out.startswith(f"{path} is valid.\n")
    assert "station TEST-01, currency CNY, authorization mode auto" in out
    assert "line l0:" in out and "pumps 1, 2" in out and "line l1:" in out
    assert "cloud: none" in out and "control socket /run/edgectl/control.sock" in out
    # The ptys of the file do not exist here: worth a note, not a failure.
    assert f"note: lines.l0.port: {tmp_path / 'l0'} does not exist on this machine" in out


def test_a_valid_file_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "station.toml"
    path.write_text(
        station_toml(tmp_path, extra='[control]\nsocket = "run/ctl.sock"\ngroup = "nosuchgroup"\n')
    )
    code, out, _ = check(capsys, str(path), "--json")
    body = json.loads(out)
    assert code == 0 and body["valid"] is True and body["problems"] == []
    assert body["summary"]["control"] == {
        "socket": str(tmp_path / "run" / "ctl.sock"),  # relative to the config file
        "group": "nosuchgroup",
    }
    assert any("no group 'nosuchgroup'" in note for note in body["notes"])
    assert [line["name"] for line in body["summary"]["lines"]] == ["l0"]


def example_with_own_key(tmp_path: Path) -> Path:
    """config/ copied (the example's relative files with it), the example's placeholder
    command key replaced by a station's own, as the technician is told to."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    path = tmp_path / "config" / "station.example.toml"
    text = path.read_text()
    assert text.count(PLACEHOLDER) == 1
    path.write_text(text.replace(PLACEHOLDER, OWN_KEY))
    return path


PLACEHOLDER = "Zzdxg8iCoKZFERZbvA8BHfQ2FlkrFWX8sTvKxaUN1NE="
OWN_KEY = base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes_raw()).decode()


def test_the_shipped_examples_are_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(capsys, str(ROOT / "config" / "demo.toml"))
    assert code == 0, err or out
    # The example is valid once it has the station's own command key (issue 16 point 5).
    code, out, err = check(capsys, str(example_with_own_key(tmp_path)))
    assert code == 0, err or out


def test_the_examples_placeholder_key_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A station copied from the example would verify no command: its key is refused with
    what to do, by `config check` as by the daemon's start (tests/test_config.py)."""
    path = ROOT / "config" / "station.example.toml"
    code, out, _ = check(capsys, str(path))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{path} is not valid:"
    assert lines[1].startswith('  cloud.command_keys[id="cloud-2026a"]: its public key is the ')
    assert "placeholder of config/station.example.toml" in lines[1]
    assert "edgectl cloud keygen --id cloud-2026a" in lines[1]
    assert lines[2].lstrip().startswith("[cloud] is the MQTT link")


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (("address = 81", "address = 80"), "pumps[number=2].address", "duplicate address 0x50"),
        (('mode = "auto"', 'mode = "self-service"'), "authorization.mode", "expected one of"),
        (('unit_price = "7.45"', "unit_price = 7.45"), 'grades[id="92"].unit_price', "TOML float"),
        (("reply_timeout_ms", "reply_timout_ms"), 'lines[name="l0"]', "did you mean"),
    ],
)
def test_a_wrong_file_is_explained(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    key: str,
    words: str,
) -> None:
    text = station_toml(tmp_path)
    assert change[0] in text
    path = tmp_path / "station.toml"
    path.write_text(text.replace(change[0], change[1], 1))
    code, out, _ = check(capsys, str(path))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{path} is not valid:"
    assert lines[1].startswith(f"  {key}: ") and words in lines[1]
    section = key.split(".")[0].split("[")[0]
    assert lines[2].lstrip().startswith(("[" + section, "each [[" + section))
    assert "station.example.toml" in out


def test_a_wrong_file_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "station.toml"
    path.write_text(station_toml(tmp_path, extra='[control]\nsocket = ""\n'))
    code, out, _ = check(capsys, str(path), "--json")
    body = json.loads(out)
    assert code == 1 and body["valid"] is False
    [problem] = body["problems"]
    assert problem["key"] == "control.socket" and problem["message"] == "must not be empty"
    assert "Unix socket" in problem["explanation"]


def test_a_socket_path_too_long(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "station.toml"
    path.write_text(station_toml(tmp_path, extra=f'[control]\nsocket = "/{"x" * 120}.sock"\n'))
    code, out, _ = check(capsys, str(path))
    assert code == 1 and "control.socket" in out and "at most 107" in out


def test_not_toml_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "station.toml"
    path.write_text("[station\nid = 1\n")
    code, out, _ = check(capsys, str(path))
    assert code == 1 and "invalid TOML" in out and "line 1" in out
    code, out, _ = check(capsys, str(tmp_path / "missing.toml"))
    assert code == 1 and "config file not found" in out


def test_gauges_and_tanks_summarised_and_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = check(capsys, str(example_with_own_key(tmp_path)), "--json")
    body = json.loads(out)
    assert code == 0
    assert [(g["name"], g["protocol"], g["tanks"]) for g in body["summary"]["gauges"]] == [
        ("tls", "veeder_root", [1, 2, 3, 4]),
        ("probes", "modbus_probe", [5]),
    ]
    assert "gauges.tls.port: /dev/ttyUSB2 does not exist on this machine" in body["notes"]

    tank = (
        '[[gauges]]\nname = "tls"\nprotocol = "veeder_root"\nport = "/dev/ttyS9"\n'
        '[[tanks]]\nnumber = 1\ngrade = "jet"\ncapacity_l = 20000\nheight_mm = 2000\n'
        'density_15 = "800.0"\ngauge = "tls"\ngauge_tank = 1\n'
    )
    path = tmp_path / "station.toml"
    path.write_text(station_toml(tmp_path, extra=tank))
    code, out, _ = check(capsys, str(path))
    assert code == 1
    lines = out.splitlines()
    assert lines[1].startswith('  tanks[number=1].grade: grade "jet" is not defined')
    assert lines[2].lstrip().startswith("each [[tanks]] has a unique number, its grade")

    path.write_text(station_toml(tmp_path, extra=tank.replace('"jet"', '"92"')))
    code, out, _ = check(capsys, str(path))
    assert code == 0 and "gauge tls: /dev/ttyS9 veeder_root 9600 8N1, tanks 1" in out


def test_the_metrics_textfile_is_summarised_and_a_missing_directory_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "station.toml"
    path.write_text(station_toml(tmp_path))
    code, out, _ = check(capsys, str(path))
    assert code == 0 and "metrics: no textfile (edgectl metrics shows them)" in out

    path.write_text(
        station_toml(tmp_path, extra='[metrics]\ntextfile = "prom/edgectl.prom"\ninterval_s = 30\n')
    )
    code, out, _ = check(capsys, str(path))
    assert code == 0
    assert f"metrics textfile {tmp_path / 'prom' / 'edgectl.prom'} every 30 s" in out
    assert f"note: metrics.textfile: {tmp_path / 'prom'} does not exist" in out
    (tmp_path / "prom").mkdir()
    code, out, _ = check(capsys, str(path), "--json")
    body = json.loads(out)
    assert body["summary"]["metrics"] == {
        "textfile": str(tmp_path / "prom" / "edgectl.prom"),
        "interval_s": 30.0,
    }
    assert not [n for n in body["notes"] if n.startswith("metrics.")]
