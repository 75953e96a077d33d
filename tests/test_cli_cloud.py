"""`edgectl cloud`: keygen writes a usable pair and the config block; errors and usage."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgectl.cli.main import main
from edgectl.cloud.signing import load_private_key, sign_command, verify_command
from edgectl.config import parse_config


def test_keygen_writes_pair_and_prints_config_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keys"
    assert main(["cloud", "keygen", "--id", "cloud-2026a", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    private_path = out / "cloud-2026a.key"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert str(private_path) in stdout

    # The printed block pastes into a station config as it is.
    block = stdout[stdout.index("[[cloud.command_keys]]") :]
    station = {
        "station": {"id": "S-1"},
        "store": {"path": "/tmp/x.db"},
        "grades": [{"id": "92", "name": "92", "unit_price": "7.45"}],
        "lines": [{"name": "a", "port": "/dev/x", "protocol": "wayne_dart"}],
        "pumps": [{"number": 1, "line": "a", "address": 0x50, "nozzles": {"1": "92"}}],
        "cloud": {"host": "broker", **tomllib.loads(block)["cloud"]},
    }
    config = parse_config(station, source=tmp_path / "station.toml")
    assert config.cloud is not None
    [key] = config.cloud.command_keys
    assert key.id == "cloud-2026a"

    # ... and the station verifies what the private key signs.
    signed = sign_command({"cmd_id": "c1"}, load_private_key(private_path), "cloud-2026a")
    ring = {key.id: Ed25519PublicKey.from_public_bytes(key.public_key)}
    assert verify_command(signed, ring) == "cloud-2026a"


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cloud", "keygen", "--id", "k1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["cloud", "keygen", "--id", "k1", "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("edgectl cloud keygen: ")
    assert "already exists" in captured.err


def test_keygen_unwritable_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["cloud", "keygen", "--id", "k1", "--out", str(blocker / "sub")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgectl cloud keygen: cannot write the key pair")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["cloud"],
        ["cloud", "keygen"],
        ["cloud", "keygen", "--id", "bad id"],
        ["cloud", "frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: edgectl cloud" in capsys.readouterr().err


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["cloud", "--help"], ["cloud", "keygen", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        assert "edgectl cloud keygen --id cloud-2026a" in capsys.readouterr().out
