"""Tanks through the technician CLI: the daemon (`edgectl run` as a child process) reads a
simulated Veeder-Root TLS console on a pty; `tanks`, `status`, `watch` and `sniff` show it."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from drivers.tank_sim import SimTank
from drivers.veeder_root import codec
from drivers.veeder_root.sim import TlsConsoleSimulator
from tests.control.clikit import ROOT, DaemonProcess, cli, control_config, daemon_process, short_dir
from tests.tankkit import console as tls_console

pytestmark = pytest.mark.slow

# Tank 1 is on the simulated console; the console has no tank 2, so the station never gets a
# reading of it although the gauge answers: tank 2 is offline with its reason (issue 11.6).
TANKS = """
[[gauges]]
name = "tls"
protocol = "veeder_root"
port = "{port}"
poll_interval_s = 0.5
reply_timeout_ms = 300
offline_after = 1

[[tanks]]
number = 1
name = "92 east"
grade = "92"
capacity_l = 30000
height_mm = 2500
density_15 = "737.0"
gauge = "tls"
gauge_tank = 1
chart = [[0, 0], [2500, 30000]]
low_product_l = 3000
sudden_loss_l = 20000

[[tanks]]
number = 2
name = "diesel west"
grade = "diesel"
capacity_l = 20000
height_mm = 2000
density_15 = "840.0"
gauge = "tls"
gauge_tank = 2
"""

TANK_KEYS = {
    "tank",
    "name",
    "grade",
    "product",
    "capacity_l",
    "gauge",
    "gauge_tank",
    "online",
    "reading_at",
    "reading_age_s",
    "height_mm",
    "water_mm",
    "temperature_c",
    "gross_l",
    "product_l",
    "net_l",
    "ullage_l",
    "fill_pct",
    "alarms",
    "implausible",
}
FIGURES = ("height_mm", "water_mm", "temperature_c", "gross_l", "product_l", "net_l", "ullage_l")


@dataclass
class Forecourt:
    daemon: DaemonProcess
    tank: SimTank
    console: TlsConsoleSimulator

    def tanks(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.daemon.call("tanks")
        return rows

    def tank_row(self, number: int = 1) -> dict[str, Any]:
        return next(row for row in self.tanks() if row["tank"] == number)


@pytest.fixture(scope="module")
def station() -> Iterator[Forecourt]:
    with short_dir() as tmp, tls_console(tmp, product_l=15000) as (tank, console):
        config = control_config(
            tmp, tmp / "control.sock", mode="attendant", extra=TANKS.format(port=tmp / "tls")
        )
        with daemon_process(config) as daemon:
            forecourt = Forecourt(daemon, tank, console)
            daemon.wait_for(
                lambda: forecourt.tank_row()["reading_at"] is not None, "a reading of tank 1"
            )
            daemon.wait_for(lambda: forecourt.tank_row(2)["online"] is False, "tank 2 offline")
            yield forecourt


def run(station: Forecourt, *args: str) -> Any:
    result = cli(*args, "--config", str(station.daemon.config_path), "--json")
    assert result.err == ""
    shown = result.json()
    # `status` exits with its health verdict (1: degraded by the tanks' alarms).
    assert result.code == (shown["health"]["code"] if args[0] == "status" else 0), result.err
    return shown


def test_tanks_json_shape(station: Forecourt) -> None:
    body = run(station, "tanks")
    assert body["source"] == "daemon"
    one, two = body["tanks"]
    assert set(one) == TANK_KEYS and set(two) == TANK_KEYS
    assert (one["tank"], one["name"], one["grade"], one["product"]) == (1, "92 east", "92", "92")
    assert (one["gauge"], one["gauge_tank"], one["capacity_l"]) == ("tls", 1, "30000")
    assert one["online"] is True and one["implausible"] is False and one["alarms"] == []
    assert one["reading_at"].endswith("Z") and 0 <= one["reading_age_s"] < 10
    assert all(isinstance(one[name], str) for name in FIGURES)  # decimals travel as strings
    # 15 000 L on a straight 30 000 L / 2500 mm chart, no water, at about 15 °C.
    assert abs(Decimal(one["height_mm"]) - 1250) < 2
    assert abs(Decimal(one["product_l"]) - 15000) < 20
    assert abs(Decimal(one["gross_l"]) + Decimal(one["ullage_l"]) - 30000) < Decimal("0.1")
    assert abs(Decimal(one["net_l"]) - Decimal(one["product_l"])) < 50  # near 15 °C
    assert Decimal(one["fill_pct"]) == Decimal("50.0")
    assert Decimal(one["water_mm"]) == 0 and abs(Decimal(one["temperature_c"]) - 15) < 1
    # The console answers but has no tank 2: never read, and offline for it, not silent.
    assert (two["tank"], two["grade"], two["gauge_tank"]) == (2, "diesel", 2)
    assert two["online"] is False and two["reading_at"] is None and two["reading_age_s"] is None
    assert all(two[name] is None for name in (*FIGURES, "fill_pct"))
    assert two["alarms"] == ["probe_offline"] and two["implausible"] is False


def test_tanks_read_for_people(station: Forecourt) -> None:
    result = cli("tanks", "--config", str(station.daemon.config_path))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    header = next(line for line in lines if line.split()[:1] == ["tank"])
    for column in ("level mm", "water mm", "temp °C", "gross L", "15 °C L", "ullage L", "fill"):
        assert column in header
    one = next(line for line in lines if "92 east" in line)
    assert "tls/1" in one and "online" in one and "50.0 %" in one
    assert "ago" in one and "none" in one
    two = next(line for line in lines if "diesel west" in line)
    assert "tls/2" in two and "%" not in two
    assert "implausible" not in result.out and "\x1b[" not in result.out


def test_a_tank_alarm_shows_and_clears(station: Forecourt) -> None:
    station.tank.set_state(product_l=2000)  # below the tank's low_product_l of 3000
    # The station's own alarm first, then the console's own (kept in the store only).
    station.daemon.wait_for(lambda: station.tank_row()["alarms"][:1] == ["low_product"], "alarm")
    station.daemon.wait_for(
        lambda: any(name.startswith("gauge_") for name in station.tank_row()["alarms"]),
        "the console's alarm",
    )
    status = cli("status", "--config", str(station.daemon.config_path))
    assert status.code == 1 and "alarm: low_product" in status.out  # degraded
    text = cli("tanks", "--config", str(station.daemon.config_path))
    assert "low_product" in text.out
    station.tank.set_state(product_l=15000)
    station.daemon.wait_for(lambda: station.tank_row()["alarms"] == [], "alarm cleared")


def test_an_implausible_reading_is_flagged_and_not_taken(station: Forecourt) -> None:
    before = station.tank_row()
    station.tank.set_state(temperature_c=80)  # outside -40..70 °C: cannot be a real product
    station.daemon.wait_for(lambda: station.tank_row()["implausible"] is True, "flagged")
    row = station.tank_row()
    assert row["alarms"] == ["invalid_reading"]
    assert abs(Decimal(row["temperature_c"]) - Decimal(before["temperature_c"])) < 1
    text = cli("tanks", "--config", str(station.daemon.config_path))
    assert text.code == 0 and "tank 1: the gauge's latest reading was implausible" in text.out
    station.tank.set_state(temperature_c=15)
    station.daemon.wait_for(lambda: station.tank_row()["implausible"] is False, "sound again")
    assert station.tank_row()["alarms"] == []


def test_status_has_the_gauge_line_and_the_tanks(station: Forecourt) -> None:
    daemon = station.daemon

    def gauge_line() -> dict[str, Any]:
        status: dict[str, Any] = daemon.call("status")
        return next(line for line in status["lines"] if line["line"] == "tls")

    daemon.wait_for(lambda: gauge_line()["per_minute"] is not None, "gauge line rates")
    status = run(station, "status")
    assert [line["line"] for line in status["lines"]] == ["l0", "tls"]
    assert status["lines"][0]["kind"] == "dispensers"
    line = status["lines"][1]
    assert (line["kind"], line["protocol"]) == ("gauge", "veeder_root")
    assert line["settings"] == "9600 8N1"
    assert line["gauge_online"] is True and (line["tanks"], line["online"]) == (2, 1)
    assert line["counters"]["frames_sent"] > 0 and line["per_minute"]["frames"] > 0
    assert [tank["tank"] for tank in status["tanks"]] == [1, 2]
    assert set(status["tanks"][0]) == TANK_KEYS

    text = cli("status", "--config", str(daemon.config_path))
    assert text.code in (0, 1)  # 1: degraded by a tank's alarm
    tls = next(row for row in text.out.splitlines() if row.split()[:1] == ["tls"])
    assert "veeder_root" in tls and "1/2" in tls  # tank 2 is never reported
    assert "tank 1" in text.out and "tls/1" in text.out and "50.0 % full" in text.out
    two = next(row for row in text.out.splitlines() if row.split()[:2] == ["tank", "2"])
    assert "OFFLINE" in two and "probe_offline" in two
    assert "no inventory for tank 2" in text.out.splitlines()[0]  # the verdict says why


def test_watch_has_a_tanks_panel(station: Forecourt) -> None:
    config = str(station.daemon.config_path)
    result = cli("watch", "--json", "--count", "2", "--interval", "0.1", "--config", config)
    assert result.code == 0, result.err
    updates = result.json_lines()
    assert len(updates) == 2
    for update in updates:
        assert [tank["tank"] for tank in update["tanks"]] == [1, 2]
        assert set(update["tanks"][0]) == TANK_KEYS and update["tanks"][0]["online"] is True

    text = cli("watch", "--count", "1", "--config", config)
    assert text.code == 0 and "tanks" in text.out and "15 °C L" in text.out
    assert "92 east" in text.out and "50.0 %" in text.out


def test_watch_updates_in_place_on_a_terminal(station: Forecourt) -> None:
    """On a terminal the view is redrawn over itself, not printed again below."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 200, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("EDGECTL_CONFIG", "COLUMNS")}
    env["TERM"] = "xterm-256color"
    config = str(station.daemon.config_path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgectl",
            "watch",
            "--count",
            "3",
            "--interval",
            "0.2",
            "-c",
            config,
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env=env,
    )
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child is gone and the pty closed
                break
            if not chunk:
                break
            screen += chunk
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = screen.decode(errors="replace")
    assert text.count("TEST-01 at") >= 3  # each update, and the last once more at the end
    assert "92 east" in text and "15 °C L" in text
    # rich's Live moves the cursor back up and erases the previous view before each redraw.
    assert "\x1b[2K" in text and "\x1b[1A" in text


SNIFF_KEYS = {
    "at",
    "gap_ms",
    "direction",
    "from",
    "hex",
    "text",
    "type",
    "valid",
    "address",
    "seq",
    "crc",
    "summary",
    "frame",
    "dropped",
}


def test_sniff_a_tls_console(station: Forecourt) -> None:
    config = str(station.daemon.config_path)
    result = cli("sniff", "tls", "--json", "--count", "8", "--config", config)
    assert result.code == 0, result.err
    assert result.err.startswith("sniffing line tls (veeder_root on ")
    frames = result.json_lines()
    assert len(frames) == 8
    for frame in frames:
        assert set(frame) == SNIFF_KEYS
        assert frame["address"] is None and frame["seq"] is None and frame["at"].endswith("Z")
        wire = bytes.fromhex(frame["hex"])
        assert wire[:1] == b"\x01" and frame["text"].startswith("<SOH>")
        if frame["direction"] == "tx":  # a poll: SOH + function code, nothing to check
            assert frame["from"] == "controller" and frame["crc"] == "none"
            assert frame["type"] in ("i20100", "i20500", "i20200")
            assert wire == b"\x01" + frame["type"].encode() and frame["text"][5:] == frame["type"]
        else:  # a computer-format reply, its checksum verified
            assert frame["from"] == "console" and frame["crc"] == "ok" and frame["valid"]
            assert wire[-1:] == b"\x03" and frame["text"].endswith("<ETX>")
            assert codec.checksum(wire[:-5]) == int(wire[-5:-1], 16)
            assert frame["frame"]["checksum"] == wire[-5:-1].decode()
    inventory = next(f for f in frames if f["type"] == "INVENTORY")
    assert inventory["summary"].startswith("i20100 at ")
    assert "tank 1 (" in inventory["summary"] and "volume 15" in inventory["summary"]
    assert inventory["frame"]["tanks"][0]["tank"] == 1
    alarms = next(f for f in frames if f["type"] == "ALARMS")
    assert alarms["summary"].startswith("i20500 at ") and "tank 1: " in alarms["summary"]


def test_sniff_shows_a_reply_with_a_bad_checksum(station: Forecourt) -> None:
    config = str(station.daemon.config_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgectl", "sniff", "tls", "--json", "--count", "40", "-c", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    frames: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stderr.readline().startswith("sniffing line tls")  # subscribed
        station.console.corrupt_next_reply()
        for line in proc.stdout:
            frames.append(json.loads(line))
            if len(frames) >= 2 and frames[-2]["crc"] == "bad":
                break
    finally:
        proc.kill()
        proc.wait()
    bad, again = frames[-2:]
    assert bad["direction"] == "rx" and bad["valid"] is False and bad["type"] == "BAD_CHECKSUM"
    assert bad["summary"].startswith("checksum mismatch: computed ")
    wire = bytes.fromhex(bad["hex"])
    assert codec.checksum(wire[:-5]) != int(wire[-5:-1], 16)  # the bytes as they came
    assert bad["frame"]["checksum_ok"] is False
    # The driver asks again (retries = 1): the same command goes out once more.
    asked = next(f for f in reversed(frames[:-2]) if f["direction"] == "tx")
    assert (again["direction"], again["hex"]) == ("tx", asked["hex"])


def test_sniff_a_tls_console_for_people(station: Forecourt) -> None:
    config = str(station.daemon.config_path)
    result = cli("sniff", "tls", "--count", "4", "--no-polls", "--config", config)
    assert result.code == 0, result.err
    assert "--no-polls applies to pump lines" in result.err
    lines = result.out.splitlines()
    assert len(lines) == 4
    sent = [line for line in lines if "ctl>" in line]
    received = [line for line in lines if "<tls" in line]
    assert sent and received and len(sent) + len(received) == 4
    assert all("<SOH>i20" in line for line in sent)
    assert all("sum ok" in line and line.endswith("<ETX>") for line in received)
    assert any("in-tank inventory, all tanks" in line for line in sent)
    result = cli("sniff", "tls", "--address", "3", "--config", config)
    assert result.code == 1 and "Veeder-Root console: its line has no addresses" in result.err
    assert "Traceback" not in result.err


def test_an_offline_gauge_shows_everywhere(station: Forecourt) -> None:
    daemon = station.daemon
    station.console.set_online(False)
    try:
        daemon.wait_for(lambda: station.tank_row()["online"] is False, "tank 1 offline", 20)
        row = station.tank_row()
        assert "probe_offline" in row["alarms"] and row["reading_at"] is not None
        status: dict[str, Any] = daemon.call("status")
        line = next(line for line in status["lines"] if line["line"] == "tls")
        assert line["gauge_online"] is False and line["online"] == 0
        assert line["per_minute"]["timeouts"] > 0
        text = cli("tanks", "--config", str(daemon.config_path))
        assert text.code == 0 and "OFFLINE" in text.out and "probe_offline" in text.out
    finally:
        station.console.set_online(True)
    daemon.wait_for(lambda: station.tank_row()["online"] is True, "tank 1 back", 30)
    assert station.tank_row()["alarms"] == []
    log = daemon.log.read_text()
    assert "Traceback" not in log and "control_request_failed" not in log
    assert json.loads(cli("tanks", "--json", "--config", str(daemon.config_path)).out)["tanks"]
