"""A config that cannot be used is named as such by every command (issue 16 point 5): the
file and what is wrong with it (missing, or which key and why), exit status 1 as
`edgectl config check` gives, never "edgectl is not running"."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from edgectl.cli.main import build_parser, main
from tests.control.clikit import cli
from tests.stationkit import station_toml

# Every command that takes --config, with the arguments it needs to get that far.
COMMANDS: dict[str, tuple[str, ...]] = {
    "run": (),
    "simulate dart": (),
    "demo": (),
    "cloud authorize": ("--pump", "1", "--amount", "10", "--key", "/nope.key"),
    "cloud cancel": ("--order-id", "o-1", "--key", "/nope.key"),
    "cloud stop": ("--pump", "1", "--key", "/nope.key"),
    "cloud prices": ("--grade", "92=7.45", "--key", "/nope.key"),
    "cloud clear": ("--order-id", "o-1", "--key", "/nope.key"),
    "cloud follow": (),
    "status": (),
    "history": (),
    "metrics": (),
    "pumps": (),
    "tanks": (),
    "prices": (),
    "close": ("1",),
    "open": ("1",),
    "sales": (),
    "orders": (),
    "outbox": (),
    "alarms": (),
    "audit": (),
    "export sales": ("--csv", "/tmp/edgectl-never-written.csv"),
    "deliveries": (),
    "reconciliation": (),
    "totals": (),
    "report day": (),
    "report shift": (),
    "shift open": (),
    "shift close": (),
    "shift list": (),
    "authorize": ("1",),
    "stop": ("1",),
    "price": ("92", "7.45"),
    "watch": (),
    "sniff": ("l0",),
    "db backup": ("/tmp/edgectl-never-written.db",),
    "db restore": ("/tmp/edgectl-never-read.db",),
    "db backups": (),
    "db check": (),
}
# Its --config is the ingest worker's [backend] file, not a station's (tested below).
BACKEND_CONFIG = ("cloud ingest",)
# A monitoring plugin: it says UNKNOWN on stdout and exits 3 (tested below).
PLUGIN = ("health",)


def _commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*words, name))
            return
    if any("--config" in action.option_strings for action in parser._actions):
        yield " ".join(words)


def test_the_table_has_every_command_that_takes_a_config() -> None:
    assert sorted(_commands(build_parser())) == sorted([*COMMANDS, *BACKEND_CONFIG, *PLUGIN])


@pytest.fixture
def invalid(tmp_path: Path) -> Path:
    """A station whose second pump has the first one's address."""
    text = station_toml(tmp_path)
    assert text.count("address = 81") == 1
    path = tmp_path / "station.toml"
    path.write_text(text.replace("address = 81", "address = 80"))
    return path


def _run(capsys: pytest.CaptureFixture[str], command: str, config: Path) -> tuple[int, str, str]:
    code = main([*command.split(), *COMMANDS[command], "--config", str(config)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def _no_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGECTL_CONFIG", raising=False)


@pytest.fixture(autouse=True)
def _logging_kept() -> Iterator[None]:
    """Some commands set up logging on this test's captured stderr before they read the
    config (simulate, cloud ingest): later tests must not log to that closed stream."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_config_is_named(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    code, out, err = _run(capsys, command, missing)
    assert code == 1, err
    assert out == ""
    assert err.splitlines() == [err.rstrip("\n")]  # one line
    assert f"{missing}: config file not found" in err
    assert "not running" not in err


@pytest.mark.parametrize("command", COMMANDS)
def test_an_invalid_config_is_named_with_its_key(
    command: str, invalid: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, command, invalid)
    assert code == 1, err
    assert out == ""
    assert err.splitlines() == [err.rstrip("\n")]
    assert f"{invalid}: pumps[number=2].address: duplicate address 0x50 on line" in err
    assert "not running" not in err


@pytest.mark.parametrize("json_output", [False, True])
def test_health_with_an_unusable_config_is_unknown(
    json_output: bool, tmp_path: Path, invalid: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nagios plugin guidelines: a check that cannot be made is UNKNOWN (3), on stdout, one
    line, not a verdict on the station (0-2) and not "not running"."""
    for config, why in (
        (tmp_path / "nope.toml", "config file not found"),
        (invalid, "pumps[number=2].address: duplicate address 0x50 on line"),
    ):
        code = main(["health", "--config", str(config), *(["--json"] if json_output else [])])
        captured = capsys.readouterr()
        assert code == 3, captured
        assert captured.err == ""
        if json_output:
            verdict = json.loads(captured.out)
            assert (verdict["status"], verdict["code"]) == ("unknown", 3)
            line = verdict["line"]
        else:
            assert captured.out.count("\n") == 1
            line = captured.out.rstrip("\n")
        assert line.startswith("EDGECTL UNKNOWN - ")
        assert f"{config}: {why}" in line
        assert "not running" not in line


def test_status_from_a_shell(tmp_path: Path) -> None:
    """The issue's own words, through the installed entry point."""
    result = cli("status", "--config", str(tmp_path / "nope.toml"))
    assert (result.code, result.out) == (1, "")
    assert result.err == f"edgectl status: {tmp_path}/nope.toml: config file not found\n"


def test_the_default_config_missing_says_how_to_name_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgectl.cli import output

    monkeypatch.setattr(output, "DEFAULT_CONFIG", tmp_path / "station.toml")
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"edgectl status: {tmp_path}/station.toml: config file not found "
        "(give --config FILE, or set EDGECTL_CONFIG)\n"
    )


def test_the_ingest_workers_config_is_named(
    tmp_path: Path, invalid: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["cloud", "ingest", "--config", str(missing)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "not running" not in err
    assert main(["cloud", "ingest", "--config", str(invalid)]) == 1
    assert f"{invalid} has no [backend] section" in capsys.readouterr().err


def test_the_daemon_refuses_the_examples_placeholder_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = Path(__file__).resolve().parents[1] / "config" / "station.example.toml"
    assert main(["run", "--config", str(example)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'edgectl: {example}: cloud.command_keys[id="cloud-2026a"]: its ')
    assert "placeholder" in err and "edgectl cloud keygen --id cloud-2026a" in err
