"""`edgectl demo` as a person runs it: simulated station, real daemon, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from drivers.tank_sim import SimTank, TankFarm, TankSpec
from drivers.tank_sim import TankChart as SimChart
from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import Customer, normal_fill
from edgectl.cli.demo import _Plumbing
from edgectl.config import load_config
from tests.stationkit import count_when_ready, running_station, until, write_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def demo_copy(tmp_path: Path) -> Path:
    """config/demo.toml with its ptys and store moved into tmp_path."""
    text = (ROOT / "config" / "demo.toml").read_text()
    text = text.replace("/tmp/edgectl-demo/", f"{tmp_path}/tty-")
    text = text.replace('"../var/demo/edgectl.db"', f'"{tmp_path}/demo.db"')
    text = text.replace('"../var/demo/edgectl.prom"', f'"{tmp_path}/edgectl.prom"')
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


TANK_TOML = """
[[gauges]]
name = "tls"
protocol = "veeder_root"
port = "{port}"

[[tanks]]
number = 1
grade = "95"
capacity_l = 10000
height_mm = 2000
density_15 = "745.0"
gauge = "tls"
gauge_tank = 1
chart = [[0, 0], [2000, 10000]]
"""


async def test_pumps_drain_their_tanks_while_fuel_flows_and_a_tanker_refills_a_low_one(
    tmp_path: Path,
) -> None:
    """The demo's plumbing: meters move, the tank of the nozzle's grade loses that much during
    the fill (not at its end), and a tank below a quarter full gets a tanker."""
    path = write_config(tmp_path, extra=TANK_TOML.format(port=tmp_path / "no-gauge-here"))
    config = load_config(path)
    spec = TankSpec(1, SimChart.from_points([(0, 0), (2000, 10000)]), product="95", density15=745.0)
    tank = SimTank(spec, product_l=2520.0)
    farm = TankFarm([tank])
    async with running_station(path, flow_rate_lps=2.0) as st:
        await st.all_online()
        plumbing = _Plumbing(config, list(st.sims.values()), {"tls": (farm, None)})
        pump = st.pump(1)
        customer = asyncio.create_task(Customer(pump, normal_fill(2, Decimal("90.00"))).run())
        await until(lambda: pump.volume > 200, timeout=15, what="fuel flowing")  # 2.00 L
        plumbing.step()
        assert pump.status is DartStatus.FILLING
        assert 2520.0 - tank.volume_l == pytest.approx(pump.totals(2)[0] / 100 - 1000, abs=0.5)
        await customer
        plumbing.step()
        sold = pump.volume / 100
        assert tank.volume_l == pytest.approx(2520.0 - sold, abs=0.02)
        assert plumbing.deliveries == 0 and not tank.delivery_in_progress
        await Customer(pump, normal_fill(2, Decimal("90.00"))).run()
        plumbing.step()  # now below 2,500 L: a tanker is sent, once
        plumbing.step()
        assert plumbing.deliveries == 1 and tank.delivery_in_progress


def _started_demo(config: Path, cwd: Path) -> tuple[subprocess.Popen[str], str, str]:
    """A demo without its live view; (the process, its CLI config, its banner) once the
    banner said how to reach it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgectl", "demo", "--config", str(config), "--no-ui"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
    )
    assert proc.stdout is not None
    banner = ""
    for line in proc.stdout:
        banner += line
        found = re.search(r"EDGECTL_CONFIG=(\S+) \S+.* status$", line.strip())
        if found:
            return proc, found.group(1), banner
    proc.wait(10)
    raise AssertionError(f"no CLI command in the banner (exit {proc.returncode})")


def _status(cli_config: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "EDGECTL_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-m", "edgectl", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**env, "EDGECTL_CONFIG": cli_config},
    )
    assert done.returncode in (0, 1), done.stderr  # up; degraded while the lines come up
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def test_two_demos_at_once_each_reached_by_the_command_its_banner_gives(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    first, first_cli, _ = _started_demo(config, tmp_path)
    second: subprocess.Popen[str] | None = None
    try:
        second, second_cli, banner = _started_demo(config, tmp_path)
        assert first_cli != second_cli
        assert "another demo holds" in banner  # the second keeps its sales apart
        # Each CLI reaches its own demo's daemon (it runs inside the demo's process) ...
        assert _status(first_cli)["daemon"]["pid"] == first.pid
        assert _status(second_cli)["daemon"]["pid"] == second.pid
        # ... which reads its own pumps on its own ptys: neither took the other's links.
        for cli_config in (first_cli, second_cli):
            deadline = time.monotonic() + 30
            while not all(p["online"] for p in _status(cli_config)["pumps"]):
                assert time.monotonic() < deadline, f"pumps of {cli_config} never online"
                time.sleep(0.5)
        assert first.poll() is None and second.poll() is None
        runs = {Path(c).parent for c in (first_cli, second_cli)}
        assert all(run.is_dir() for run in runs)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        outs = [proc.communicate(timeout=30)[0] for proc in (first, second) if proc is not None]
    assert first.returncode == 0 and second is not None and second.returncode == 0, outs
    assert not any(run.exists() for run in runs)  # each removed its own run directory
