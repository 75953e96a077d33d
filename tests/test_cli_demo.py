"""`edgectl demo` as a person runs it: simulated station, real daemon, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
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
from tests.mqttkit import MOSQUITTO
from tests.stationkit import count_when_ready, rows, running_station, until, write_config

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
    assert "6 pumps on 3 lines" in out and "demo ran" in out
    assert "Traceback" not in out
    assert (tmp_path / "edgectl.log").exists()


def _demo(tmp_path: Path, *options: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`edgectl demo --no-ui OPTIONS` on a copy of config/demo.toml, run in `tmp_path`."""
    config = demo_copy(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "edgectl", "demo", "--config", str(config), "--no-ui", *options],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "250"},  # the banner's lines unwrapped
    )


def test_demo_stops_by_itself_after_duration(tmp_path: Path) -> None:
    result = _demo(tmp_path, "--duration", "3", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo ran" in result.stdout


def _seeded_demo(tmp_path: Path, *extra: str, duration: int) -> str:
    """A bounded, seeded demo without its live view, on a copy of config/demo.toml; its
    output, once it exited 0 having stopped everything it started cleanly."""
    options = ("--seed", "3", "--customer-interval", "1", "--duration", str(duration), *extra)
    result = _demo(tmp_path, *options, timeout=duration + 90)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    # The IFSF nodes, their links and tasks stopped with the rest: nothing left pending.
    for sign in ("Traceback", "never awaited", "Task was destroyed", "Unclosed"):
        assert sign not in out, out
    assert "ifsf_node_stop_stuck" not in (tmp_path / "edgectl.log").read_text()
    found = re.search(r"run directory \(links, socket\): (\S+)", out)
    assert found and not Path(found.group(1)).exists(), out  # its links and socket are gone
    return out


def _sales_by_pump(tmp_path: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for sale in rows(tmp_path / "demo.db", "SELECT pump FROM sales"):
        counts[sale["pump"]] = counts.get(sale["pump"], 0) + 1
    return counts


DART_PUMPS, IFSF_PUMPS = {1, 2, 3, 4}, {5, 6}  # config/demo.toml: north, south; east


def test_a_seeded_demo_sells_on_the_dart_pumps_and_the_ifsf_dispenser(tmp_path: Path) -> None:
    out = _seeded_demo(tmp_path, duration=30)
    assert "6 pumps on 3 lines (wayne_dart: north, south; ifsf: east)" in out
    assert re.search(r"simulated line east: node 1\.1 at 127\.0\.0\.1:\d+", out), out
    sales = _sales_by_pump(tmp_path)
    assert set(sales) & DART_PUMPS and set(sales) & IFSF_PUMPS, sales
    dart = sum(n for pump, n in sales.items() if pump in DART_PUMPS)
    ifsf = sum(n for pump, n in sales.items() if pump in IFSF_PUMPS)
    assert f"this run: {dart + ifsf} sales (wayne_dart {dart}, ifsf {ifsf})" in out


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")
def test_with_a_broker_a_pay_at_pump_order_is_carried_out_on_the_ifsf_dispenser(
    tmp_path: Path,
) -> None:
    out = _seeded_demo(tmp_path, "--with-broker", "--order-every", "2", duration=40)
    # The last pump of each line is kept for the cloud's orders, the IFSF line's too.
    assert "on pump(s) 2, 4, 6 (walk-in customers use the others)" in out
    orders = rows(tmp_path / "demo.db", "SELECT * FROM orders WHERE status = 'completed'")
    on_ifsf = [o for o in orders if o["pump"] in IFSF_PUMPS]
    assert on_ifsf and {o["pump"] for o in on_ifsf} == {6}, orders
    (sale,) = rows(
        tmp_path / "demo.db", "SELECT * FROM sales WHERE id = ?", (on_ifsf[0]["sale_id"],)
    )
    assert sale["pump"] == 6 and sale["order_id"] == on_ifsf[0]["order_id"]
    # Walk-in customers never took pump 6: each of its sales was an order's.
    walk_ins = rows(tmp_path / "demo.db", "SELECT * FROM sales WHERE pump = 6 AND order_id IS NULL")
    assert walk_ins == []
    # The private mosquitto stopped with the demo.
    found = re.search(r"cloud: broker 127\.0\.0\.1:(\d+) \(private mosquitto\)", out)
    assert found, out
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", int(found.group(1))), 2):
        pass


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
        assert plumbing.drops_under_way() == 1  # the summary says so: no delivery recorded yet


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


def test_the_summary_says_how_many_deliveries_are_still_to_come(tmp_path: Path) -> None:
    """A short run: a tanker drop sent, no delivery recorded yet (it flows, then settles).
    The summary said "1 tanker drops sent; 0 deliveries recorded", which read as a fault."""
    from rich.console import Console

    from edgectl.cli.demo import _summary

    config = load_config(demo_copy(tmp_path))
    console = Console(record=True, width=200)
    _summary(console, config, 87.0, (2, 1), 0)
    text = console.export_text()
    assert "2 tanker drops sent; 0 deliveries recorded (2 to come: 1 still flowing" in text
