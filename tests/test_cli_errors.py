"""Errors that say what to do (issue 16 point 5): typos get a suggestion, a closed pipe is
silent, a file the user named is named as given, with why; `edgectl --version`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import edgectl
from edgectl.cloud.messages import ContractMessages
from edgectl.store.store import Store
from tests.control.clikit import ROOT, _env, cli, control_config, short_dir


@pytest.fixture
def station() -> Iterator[Path]:
    """The config of a station whose daemon is not running, with an empty store."""
    with short_dir() as tmp:
        config = control_config(tmp, tmp / "control.sock")
        Store(tmp / "edgectl.db", messages=ContractMessages()).close()
        yield config


def test_version() -> None:
    result = cli("--version")
    assert result.code == 0 and result.out == f"edgectl {edgectl.__version__}\n"


@pytest.mark.parametrize(
    ("args", "typo", "meant"),
    [
        (("stauts",), "stauts", "status"),
        (("db", "bakup", "x.db"), "bakup", "backup"),
        (("simulate", "drat"), "drat", "dart"),
        (("decode", "tsl", "00"), "tsl", "tls"),
        (("probe", "/dev/null", "--protocol", "modbsu"), "modbsu", "modbus"),
    ],
)
def test_a_mistyped_command_gets_a_suggestion(args: tuple[str, ...], typo: str, meant: str) -> None:
    result = cli(*args)
    assert result.code == 2 and result.out == ""
    assert f"invalid choice: {typo!r} (did you mean {meant!r}?)" in result.err


def test_a_word_like_no_command_lists_them_all() -> None:
    result = cli("zzzz")
    assert result.code == 2 and "(choose from 'run', 'decode'" in result.err


def test_a_reader_that_leaves_early_gets_no_broken_pipe_message() -> None:
    # Far more than a pipe holds: the writer is still writing when `head` has gone.
    frames = " ".join(["50 20 FA"] * 20_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgectl", "decode", "dart"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(frames.encode())
    proc.stdin.close()
    assert proc.stdout.readline().startswith(b"[1] POLL")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 141  # as a process ended by SIGPIPE
    assert err == b""


def test_export_to_a_missing_folder_names_the_path_given(station: Path, tmp_path: Path) -> None:
    wanted = tmp_path / "nowhere" / "x.csv"
    result = cli("export", "sales", "--csv", str(wanted), "--config", str(station))
    assert result.code == 1
    assert result.err == (
        f"edgectl export sales: cannot write {wanted}: the folder {wanted.parent} does not exist\n"
    )
    assert ".partial" not in result.err


def test_export_to_a_folder_says_it_is_one(station: Path, tmp_path: Path) -> None:
    result = cli("export", "sales", "--csv", str(tmp_path), "--config", str(station))
    assert result.code == 1
    assert result.err.startswith(f"edgectl export sales: {tmp_path} is a folder: give a file")


def test_backup_to_a_missing_folder_names_the_path_given(station: Path, tmp_path: Path) -> None:
    wanted = tmp_path / "nowhere" / "b.db"
    result = cli("db", "backup", str(wanted), "--config", str(station))
    assert result.code == 1
    assert result.err == (
        f"edgectl db backup: cannot write {wanted}: the folder {wanted.parent} does not exist\n"
    )
    assert not list(tmp_path.iterdir())
