"""One log format (issue 11.5): with `format = "json"` every line the daemon writes is one JSON
object — the libraries' loggers (pymodbus, paho, asyncio) included — and a stop with `watch`
and `sniff` clients attached prints no traceback."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

from drivers.modbus_probe.registers import load_register_map
from drivers.modbus_probe.sim import ModbusProbeSimulator, sim_probe
from drivers.tank_sim import SimTank, TankChart, TankSpec
from edgectl.config import load_config
from edgectl.logs import configure, get_logger
from tests.control.clikit import ROOT, _env, control_config, short_dir
from tests.stationkit import DaemonProcess, start_simulators, until
from tests.test_tank_service import PROBE_TOML

MAP = ROOT / "config" / "modbus" / "generic_magnetostrictive.toml"


def test_library_records_are_json_lines_and_their_noise_is_debug() -> None:
    out = io.StringIO()
    configure("info", "json", stream=out)
    try:
        logging.getLogger("pymodbus.logging").error("recv: 0x1 0x3 extra data")
        logging.getLogger("mqtt").warning("Message queue is full")
        logging.getLogger("asyncio").error("Task was destroyed but it is pending!")
        get_logger(station="X").info("ours", n=1)
        configure("debug", "json", stream=out)
        logging.getLogger("pymodbus.logging").error("Repeating....")
    finally:
        configure("info", "json")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "Task was destroyed but it is pending!",  # asyncio keeps its level
        "ours",
        "Repeating....",  # pymodbus only shows at debug, marked with its own level
    ]
    assert lines[0]["level"] == "error" and lines[0]["logger"] == "asyncio"
    assert lines[2]["level"] == "debug" and lines[2]["library_level"] == "error"


async def test_a_daemon_with_a_faulty_modbus_gauge_writes_only_json(tmp_path: Path) -> None:
    spec = TankSpec(1, TankChart.from_points([(0, 0), (2500, 30000)]), "gasoline", 745.0)
    probe = ModbusProbeSimulator(
        [sim_probe(1, load_register_map(MAP), SimTank(spec, product_l=12000))]
    )
    _host, port = probe.serve_tcp()
    with short_dir() as tmp:
        path = control_config(
            tmp, tmp / "control.sock", extra=PROBE_TOML.format(port=port, map=MAP)
        )
        config = load_config(path)
        sims = start_simulators(config)
        daemon = DaemonProcess(path, tmp / "daemon.log")
        clients: list[subprocess.Popen[bytes]] = []
        try:
            daemon.start()
            await until(lambda: (tmp / "control.sock").exists(), timeout=20, what="socket")
            await asyncio.sleep(1.0)
            for args in (["watch"], ["sniff", "probes"], ["sniff", "l0"]):
                clients.append(
                    subprocess.Popen(  # noqa: ASYNC220 (clients left running beside the daemon)
                        [sys.executable, "-m", "edgectl", *args, "--config", str(path)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        env=_env(),
                        cwd=ROOT,
                    )
                )
            # The gauge misbehaves in every way pymodbus has something to say about.
            for fault in (
                lambda: probe.set_short_replies(1, 1),
                lambda: probe.set_short_replies(1, None),
                lambda: probe.set_exception(1, 2),
                lambda: probe.set_exception(1, None),
                lambda: probe.set_silent(1, True),
                lambda: probe.set_silent(1, False),
            ):
                fault()
                await asyncio.sleep(1.2)
            assert daemon.terminate() == 0
            for client in clients:
                client.wait(10)
        finally:
            for client in clients:
                if client.poll() is None:
                    client.kill()
            daemon.cleanup()
            for sim in sims.values():
                sim.stop()
            probe.stop()
        text = (tmp / "daemon.log").read_text()
    lines = text.splitlines()
    assert len(lines) > 10
    for line in lines:
        entry = json.loads(line)  # every line, or this fails naming it
        assert {"event", "level", "timestamp"} <= entry.keys(), line
    assert "Traceback" not in text, [line for line in lines if "Traceback" in line]
    events = [json.loads(line)["event"] for line in lines]
    assert "daemon_stopped" in events
