"""`edgectl probe` and `edgectl scan` on a free line: simulated DART pumps on a pty, no daemon."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from drivers.modbus_probe.adu import crc16 as modbus_crc
from drivers.modbus_probe.probe import reply as modbus_reply
from drivers.modbus_probe.probe import request as modbus_request
from drivers.modbus_probe.registers import load_register_map
from drivers.modbus_probe.sim import ModbusProbeSimulator, sim_probe
from drivers.ptylink import PtyLink
from drivers.tank_sim import SimTank, TankChart, TankFarm, TankSpec
from drivers.veeder_root.sim import TlsConsole, TlsConsoleSimulator
from drivers.wayne_dart.sim import DartLineSimulator, SimPump
from tests.control.clikit import ROOT, cli

pytestmark = pytest.mark.slow


@pytest.fixture
def line(tmp_path: Path) -> Iterator[DartLineSimulator]:
    """Two pumps at 0x50 and 0x52 (a gap between them) behind tmp/dart."""
    pumps = [SimPump(0x50, {1: 745, 2: 793}), SimPump(0x52, {1: 710})]
    sim = DartLineSimulator(pumps, name="probe")
    sim.serve_pty(tmp_path / "dart")
    try:
        yield sim
    finally:
        sim.stop()


def port(sim: DartLineSimulator) -> str:
    assert sim.link is not None and sim.link.link is not None
    return str(sim.link.link)


def test_probe_finds_the_pumps_at_one_setting(line: DartLineSimulator) -> None:
    result = cli(
        "probe", port(line), "--protocol", "dart", "--baud", "9600", "--parity", "odd", "--json"
    )
    assert result.code == 0, result.err
    body = result.json()
    assert body["port"] == port(line) and body["pty"] is True
    assert body["tried"] == [{"protocol": "dart", "baud": 9600, "parity": "odd", "bytesize": 8}]
    assert [f["address"] for f in body["found"]] == ["0x50", "0x52"]
    for found in body["found"]:
        assert found["protocol"] == "dart"
        assert found["settings"] == [{"baud": 9600, "parity": "odd", "bytesize": 8}]
        assert found["reply"].startswith(("EOT", "DATA"))


def test_probe_only_polls(line: DartLineSimulator) -> None:
    pump = line.pump(0x50)
    pump.lift(2)  # the pump has something to say: its nozzle status
    result = cli(
        "probe",
        port(line),
        "--protocol",
        "dart",
        "--baud",
        "9600",
        "--parity",
        "even",
        "--address",
        "0x50",
        "0x51",
        "--json",
    )
    assert result.code == 0, result.err
    [found] = result.json()["found"]
    assert found["address"] == "0x50"
    assert found["reply"].startswith("DATA DC3 nozzle status") and "nozzle 2 out" in found["reply"]
    assert pump.counters.polls >= 1
    assert pump.counters.data_frames == 0  # no command reached the pump


def test_scan_tries_every_setting(line: DartLineSimulator) -> None:
    result = cli("scan", port(line), "--timeout-ms", "10")
    assert result.code == 0, result.err
    assert "2 DART pump(s) answer on" in result.out and "0x50, 0x52" in result.out
    # A pty ignores line settings, so every one of them answers; the output says why.
    for setting in ("9600 8O1", "9600 8E1", "9600 8N1", "19200 8O1", "19200 8E1", "19200 8N1"):
        assert setting in result.out
    assert "pseudo-terminal" in result.out
    assert "probing" in result.err  # what it is doing, on stderr


def test_probe_shows_a_progress_bar_on_a_terminal(line: DartLineSimulator) -> None:
    """The bar goes to stderr, and only on a terminal; the result still goes to stdout."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("EDGECTL_CONFIG", "COLUMNS")}
    env["TERM"] = "xterm-256color"
    args = ["probe", port(line), "--protocol", "dart", "--baud", "9600", "--parity", "odd"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgectl", *args, "--timeout-ms", "20"],
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=ROOT,
        env=env,
    )
    os.close(slave)
    screen = bytearray()
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child is gone and the pty closed
                break
            if not chunk:
                break
            screen += chunk
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 0
    text = screen.decode(errors="replace")
    # Only the bar's line says this: what it probes, and steps done of 32 (0x50..0x6F).
    assert "probing dart" in text and "/32" in text
    assert b"0x50" in out and b"0x52" in out and b"probing" not in out


def test_scan_first_stops_at_the_first_setting(line: DartLineSimulator) -> None:
    result = cli("scan", port(line), "--first", "--timeout-ms", "20", "--json")
    assert result.code == 0, result.err
    found = result.json()["found"]
    assert [f["settings"] for f in found] == [[{"baud": 9600, "parity": "odd", "bytesize": 8}]] * 2


def test_nothing_answers(tmp_path: Path) -> None:
    with PtyLink(tmp_path / "silent"):
        result = cli(
            "probe",
            str(tmp_path / "silent"),
            "--protocol",
            "dart",
            "--baud",
            "19200",
            "--parity",
            "none",
            "--address",
            "0x50",
            "0x51",
        )
    assert result.code == 1
    assert result.err.splitlines()[-1] == (
        f"no DART pump answered on {tmp_path / 'silent'} (2 address(es) at 19200 8N1)"
    )


def test_probe_refuses_a_port_in_use(line: DartLineSimulator) -> None:
    holder = serial.Serial(port(line), exclusive=True)  # as the daemon opens its lines
    try:
        result = cli("probe", port(line), "--protocol", "dart")
    finally:
        holder.close()
    assert result.code == 1
    assert "is in use by another process" in result.err and "Traceback" not in result.err


def test_probe_refuses_a_missing_port(tmp_path: Path) -> None:
    result = cli("scan", str(tmp_path / "ttyUSB9"))
    assert result.code == 1
    assert result.err.strip() == f"edgectl scan: {tmp_path / 'ttyUSB9'} does not exist"


# --------------------------------------------------------------------------- tank gauges


def test_modbus_crc_matches_the_worked_frame() -> None:
    # /work/shared/protocols/modbus-tank-probes.md: 01 04 00 00 00 02 71 CB.
    assert modbus_request(1, 4, 0, 2) == bytes.fromhex("01 04 00 00 00 02 71 CB")
    reply = bytes.fromhex("01 04 04 41 1E 00 00 8F BE")
    echo = modbus_request(1, 4, 0, 2)
    assert modbus_reply(echo + reply, 1, 4) == "FC04 reply: 2 register(s) = 41 1E 00 00"
    assert modbus_reply(reply[:-1], 1, 4) is None  # not all there yet
    assert modbus_reply(reply[:-1] + b"\x00", 1, 4) is None  # bad CRC
    exception = bytes((1, 0x84, 2))
    exception += modbus_crc(exception).to_bytes(2, "little")
    assert (
        modbus_reply(exception, 1, 4) == "exception 02 (illegal data address): the device is there"
    )


def test_probe_finds_a_tls_console(tmp_path: Path) -> None:
    chart = TankChart.horizontal_cylinder(2400, 7000)
    farm = TankFarm([SimTank(TankSpec(1, chart), product_l=5000), SimTank(TankSpec(2, chart))])
    sim = TlsConsoleSimulator(TlsConsole(farm))
    sim.serve_pty(tmp_path / "tls")
    try:
        result = cli(
            "probe", str(tmp_path / "tls"), "--protocol", "tls", "--baud", "9600", "--json"
        )
    finally:
        sim.stop()
    assert result.code == 0, result.err
    [found] = result.json()["found"]
    assert found["protocol"] == "tls" and found["address"] is None
    assert found["reply"] == "i201 inventory of 2 tank(s)"
    # A pty refuses some 7-bit settings (they are skipped) and ignores the others.
    assert found["settings"][0] == {"baud": 9600, "parity": "none", "bytesize": 8}
    assert {s["baud"] for s in found["settings"]} == {9600}


def test_probe_finds_modbus_probes(tmp_path: Path) -> None:
    generic = load_register_map(ROOT / "config" / "modbus" / "generic_magnetostrictive.toml")
    chart = TankChart.horizontal_cylinder(2400, 7000)
    sim = ModbusProbeSimulator(
        [
            sim_probe(3, generic, SimTank(TankSpec(1, chart), product_l=4000)),
            sim_probe(5, generic, SimTank(TankSpec(2, chart), product_l=8000)),
        ]
    )
    sim.serve_pty(tmp_path / "rs485")
    try:
        result = cli(
            "probe",
            str(tmp_path / "rs485"),
            "--protocol",
            "modbus",
            "--address",
            "1-6",
            "--baud",
            "9600",
            "--parity",
            "none",
            "--timeout-ms",
            "300",
        )
    finally:
        sim.stop()
    assert result.code == 0, result.err
    assert "2 Modbus device(s) answer on" in result.out and ": 3, 5 at 9600 8N1" in result.out


def test_scan_stops_at_the_protocol_that_answers(line: DartLineSimulator) -> None:
    result = cli("scan", port(line), "--first", "--timeout-ms", "10", "--json")
    tried = {entry["protocol"] for entry in result.json()["tried"]}
    assert tried == {"dart", "tls", "modbus"}  # the plan
    assert {f["protocol"] for f in result.json()["found"]} == {"dart"}


def test_probe_address_out_of_range(line: DartLineSimulator) -> None:
    result = cli("probe", port(line), "--protocol", "dart", "--address", "0x20")
    assert result.code == 1 and "0x20 is not a dart address (0x50-0x6F)" in result.err
    result = cli("probe", port(line), "--protocol", "tls", "--address", "1")
    assert result.code == 1 and "tls devices have no address" in result.err
