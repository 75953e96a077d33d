"""`edgectl demo` as a person runs it: simulated station, real daemon, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.stationkit import count_when_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def demo_copy(tmp_path: Path) -> Path:
    """config/demo.toml with its ptys and store moved into tmp_path."""
    text = (ROOT / "config" / "demo.toml").read_text()
    text = text.replace("/tmp/edgectl-demo/", f"{tmp_path}/tty-")
    text = text.replace('"../var/demo/edgectl.db"', f'"{tmp_path}/demo.db"')
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return path


def test_demo_runs_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgectl",
            "demo",
            "--config",
            str(config),
            "--no-ui",
            "--seed",
            "1",
            "--customer-interval",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 30
        while count_when_ready(tmp_path / "demo.db", "nozzle_totals") < 10:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the daemon never read the pumps' totals"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "4 pumps on 2 lines" in out and "demo ran" in out
    assert "Traceback" not in out
    assert (tmp_path / "edgectl.log").exists()


def test_demo_stops_by_itself_after_duration(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgectl",
            "demo",
            "--config",
            str(config),
            "--no-ui",
            "--duration",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo ran" in result.stdout
