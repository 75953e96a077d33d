"""Tank gauge faults in the running daemon (issue 11.6): a console that only answers the display
format, one that refuses every inventory command, one tank's probe that stops reporting while
the gauge answers, and a Modbus probe line gone silent. Each over a pty with the simulators."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.modbus_probe.registers import load_register_map
from drivers.modbus_probe.sim import ModbusProbeSimulator, sim_probe
from drivers.tank_sim import SimTank, TankChart, TankFarm, TankSpec
from drivers.veeder_root.sim import DISPLAY_ONLY, REFUSE_INVENTORY, TlsConsole, TlsConsoleSimulator
from tests.stationkit import RunningStation, running_station, until, write_config

MAP = Path(__file__).parent.parent / "config" / "modbus" / "generic_magnetostrictive.toml"
CHART = TankChart.from_points([(0, 0), (2500, 30000)])

TLS_TOML = """
[[gauges]]
name = "tls"
protocol = "veeder_root"
port = "{port}"
poll_interval_s = 0.5
reply_timeout_ms = 1000  # a loaded machine is not a silent console
offline_after = 2
{extra}
"""

PROBES_TOML = """
[[gauges]]
name = "probes"
protocol = "modbus_probe"
port = "{port}"
register_map = "{map}"
poll_interval_s = 0.5
reply_timeout_ms = 500
offline_after = 2
"""

TANK_TOML = """
[[tanks]]
number = {number}
grade = "92"
capacity_l = 30000
height_mm = 2500
density_15 = "737.0"
gauge = "{gauge}"
gauge_tank = {gauge_tank}
{device}
chart = [[0, 0], [2500, 30000]]
sudden_loss_l = 20000
"""


def tls_config(tmp: Path, *, extra: str = "") -> Path:
    tanks = "".join(
        TANK_TOML.format(number=n, gauge="tls", gauge_tank=n, device="") for n in (1, 2)
    )
    return write_config(tmp, extra=TLS_TOML.format(port=tmp / "tls", extra=extra) + tanks)


def probes_config(tmp: Path) -> Path:
    tanks = "".join(
        TANK_TOML.format(number=n, gauge="probes", gauge_tank=1, device=f"device_id = {n}")
        for n in (1, 2)
    )
    return write_config(tmp, extra=PROBES_TOML.format(port=tmp / "probes", map=MAP) + tanks)


@pytest.fixture
def farm() -> TankFarm:
    return TankFarm(
        SimTank(TankSpec(n, CHART, "gasoline", 737.0), product_l=litres)
        for n, litres in ((1, 15000), (2, 9000))
    )


@pytest.fixture
def console(tmp_path: Path, farm: TankFarm) -> Iterator[TlsConsoleSimulator]:
    sim = TlsConsoleSimulator(TlsConsole(farm))
    sim.serve_pty(tmp_path / "tls")
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def probes(tmp_path: Path, farm: TankFarm) -> Iterator[ModbusProbeSimulator]:
    register_map = load_register_map(MAP)
    sim = ModbusProbeSimulator([sim_probe(n, register_map, farm.tank(n)) for n in (1, 2)])
    sim.serve_pty(tmp_path / "probes")
    try:
        yield sim
    finally:
        sim.stop()


def readings(st: RunningStation, tank: int) -> int:
    return len(st.rows("SELECT * FROM tank_readings WHERE tank = ?", (tank,)))


def alarms(st: RunningStation, kind: str) -> list[dict[str, Any]]:
    return st.rows("SELECT * FROM alarms WHERE kind = ? ORDER BY id", (kind,))


def open_alarms(st: RunningStation, kind: str) -> list[dict[str, Any]]:
    return [a for a in alarms(st, kind) if a["cleared_at"] is None]


def sent(st: RunningStation, kind: str) -> list[tuple[int, bool]]:
    """The alarm messages of `kind` queued for the cloud: (alarm id, raised)."""
    found = []
    for row in st.rows("SELECT payload FROM outbox WHERE stream = 'alarm' ORDER BY seq"):
        data = json.loads(row["payload"])
        if data["kind"] == kind:
            found.append((data["alarm_id"], data["cleared_at"] is None))
    return found


def tank_online(st: RunningStation, number: int) -> bool:
    assert st.daemon.tanks is not None
    return next(v for v in st.daemon.tanks.snapshot() if v.number == number).online


# --------------------------------------------------------------------------- formats
async def test_a_display_only_console_is_read_by_default(
    tmp_path: Path, console: TlsConsoleSimulator
) -> None:
    console.console.set_refused(DISPLAY_ONLY)
    async with running_station(tls_config(tmp_path)) as st:  # inventory_format: auto
        await until(lambda: readings(st, 1) >= 1 and readings(st, 2) >= 1, 15, "readings")
        assert alarms(st, "gauge_offline") == []
        assert st.daemon.devices.view("gauge:tls")["online"] is True


async def test_a_console_set_to_the_computer_format_only_alarms_a_display_only_console(
    tmp_path: Path, console: TlsConsoleSimulator
) -> None:
    console.console.set_refused(DISPLAY_ONLY)
    config = tls_config(tmp_path, extra='inventory_format = "computer"')
    async with running_station(config) as st:
        await until(lambda: bool(alarms(st, "gauge_offline")), 15, "gauge alarm")
        (alarm,) = alarms(st, "gauge_offline")
        assert "refuses the inventory command i201" in alarm["message"]
        assert 'inventory_format = "display"' in alarm["message"]
        assert readings(st, 1) == 0
        console.console.set_refused(())
        await until(lambda: readings(st, 1) >= 1, 15, "readings once i201 is answered")
        await until(lambda: not open_alarms(st, "gauge_offline"), 15, "cleared")


# --------------------------------------------------------------------------- refusals
async def test_a_console_refusing_every_inventory_command_is_one_alarm_cleared_by_readings(
    tmp_path: Path, console: TlsConsoleSimulator
) -> None:
    console.console.set_refused(REFUSE_INVENTORY)
    async with running_station(tls_config(tmp_path)) as st:
        await until(lambda: bool(alarms(st, "gauge_offline")), 15, "gauge alarm")
        await until(lambda: console.stats.refused >= 8, 15, "a few more polls refused")
        (alarm,) = alarms(st, "gauge_offline")
        message = alarm["message"]
        assert message.startswith("gauge tls (")
        assert "console refuses the inventory commands i201 and I201" in message
        assert "RS-232" in message and "security code" in message
        assert json.loads(alarm["detail"])["code"] == "inventory_refused"
        view = st.daemon.devices.view("gauge:tls")
        assert view["online"] is False and view["alarm"] == "gauge_offline"
        assert "refuses the inventory commands" in view["reason"]
        assert not tank_online(st, 1) and not tank_online(st, 2)
        assert readings(st, 1) == 0

        console.console.set_refused(())
        await until(lambda: not open_alarms(st, "gauge_offline"), 15, "cleared")
        await until(lambda: tank_online(st, 1) and tank_online(st, 2), 15, "tanks online")
        (alarm,) = alarms(st, "gauge_offline")
        assert sent(st, "gauge_offline") == [(alarm["id"], True), (alarm["id"], False)]
        assert st.daemon.devices.view("gauge:tls")["online"] is True


# --------------------------------------------------------------------------- one tank
async def test_a_tls_tank_whose_probe_stops_reporting_goes_offline_and_comes_back(
    tmp_path: Path, console: TlsConsoleSimulator
) -> None:
    async with running_station(tls_config(tmp_path)) as st:
        await until(lambda: readings(st, 2) >= 1, 15, "tank 2 read")
        console.console.set_probe_out(2)
        await until(lambda: bool(open_alarms(st, "tank_probe_offline")), 15, "tank 2 offline")
        (alarm,) = alarms(st, "tank_probe_offline")
        assert alarm["message"].startswith("tank 2: probe offline")
        assert "no inventory for tank 2" in alarm["message"]
        assert not tank_online(st, 2) and tank_online(st, 1)
        assert st.daemon.devices.view("gauge:tls")["online"] is True  # the console answers
        assert alarms(st, "gauge_offline") == []

        console.console.set_probe_out(2, False)
        await until(lambda: not open_alarms(st, "tank_probe_offline"), 15, "tank 2 back")
        await until(lambda: tank_online(st, 2), 15, "tank 2 shown online")
        assert len(alarms(st, "tank_probe_offline")) == 1


async def test_a_modbus_probe_gone_silent_takes_its_tank_offline_and_back(
    tmp_path: Path, probes: ModbusProbeSimulator
) -> None:
    async with running_station(probes_config(tmp_path)) as st:
        await until(lambda: readings(st, 1) >= 1 and readings(st, 2) >= 1, 15, "both read")
        probes.set_silent(2)
        await until(lambda: bool(open_alarms(st, "tank_probe_offline")), 15, "tank 2 offline")
        (alarm,) = alarms(st, "tank_probe_offline")
        assert alarm["message"].startswith("tank 2: probe offline")
        assert not tank_online(st, 2) and tank_online(st, 1)
        assert alarms(st, "gauge_offline") == []

        probes.set_silent(2, False)
        await until(lambda: not open_alarms(st, "tank_probe_offline"), 30, "tank 2 back")
        await until(lambda: tank_online(st, 2), 15, "tank 2 shown online")
        assert len(alarms(st, "tank_probe_offline")) == 1


# --------------------------------------------------------------------------- whole gauge
async def test_a_modbus_probe_line_gone_silent_is_one_gauge_alarm_cleared_when_it_answers(
    tmp_path: Path, probes: ModbusProbeSimulator
) -> None:
    async with running_station(probes_config(tmp_path)) as st:
        await until(lambda: readings(st, 1) >= 1 and readings(st, 2) >= 1, 15, "both read")
        probes.set_silent(1)
        probes.set_silent(2)
        await until(lambda: bool(alarms(st, "gauge_offline")), 20, "gauge alarm")
        (alarm,) = alarms(st, "gauge_offline")
        assert alarm["message"].startswith(f"gauge probes ({tmp_path / 'probes'}): ")
        assert "no reply" in alarm["message"]
        assert json.loads(alarm["detail"])["code"] == "no_answer"
        assert st.daemon.devices.view("gauge:probes")["online"] is False

        probes.set_silent(1, False)
        probes.set_silent(2, False)
        await until(lambda: not open_alarms(st, "gauge_offline"), 30, "cleared")
        (alarm,) = alarms(st, "gauge_offline")
        assert sent(st, "gauge_offline") == [(alarm["id"], True), (alarm["id"], False)]
        view = st.daemon.devices.view("gauge:probes")
        assert view["online"] is True and view["reason"] is None
