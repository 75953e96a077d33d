"""The Modbus probe simulator, read by a plain pymodbus client over a pty (RTU) and TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerType

from drivers.modbus_probe.registers import RegisterMap, decode_registers, load_register_map
from drivers.modbus_probe.sim import ModbusProbeSimulator, SimProbe, sim_probe, tank_values
from drivers.tank_sim import SimTank, TankAlarm, TankChart, TankSpec

MAPS = Path(__file__).resolve().parents[3] / "config" / "modbus"
CHART = TankChart.horizontal_cylinder(2400, 7000)


@pytest.fixture(scope="module")
def franklin() -> RegisterMap:
    return load_register_map(MAPS / "franklin_ts550evo.toml")


@pytest.fixture(scope="module")
def pneumercator() -> RegisterMap:
    return load_register_map(MAPS / "pneumercator_tms.toml")


@pytest.fixture(scope="module")
def generic() -> RegisterMap:
    return load_register_map(MAPS / "generic_magnetostrictive.toml")


def make_tanks() -> dict[int, SimTank]:
    return {
        n: SimTank(TankSpec(n, CHART, high_water_mm=40), product_l=6000.0 * n, water_l=150.0)
        for n in (1, 2, 3)
    }


@pytest.fixture
def tanks() -> dict[int, SimTank]:
    return make_tanks()


@pytest.fixture
def console(
    franklin: RegisterMap, generic: RegisterMap, tanks: dict[int, SimTank]
) -> Iterator[ModbusProbeSimulator]:
    """A Franklin console (id 5, three tanks) and a lone probe (id 9) on one line."""
    sim = ModbusProbeSimulator(
        [
            SimProbe(5, franklin, tanks, {TankAlarm.HIGH_WATER: 2}),
            sim_probe(9, generic, SimTank(TankSpec(4, CHART), product_l=9000)),
        ]
    )
    yield sim
    sim.stop()


@pytest.fixture
async def rtu(console: ModbusProbeSimulator) -> AsyncIterator[AsyncModbusSerialClient]:
    line = console.serve_pty()
    client = AsyncModbusSerialClient(
        line.slave_name, framer=FramerType.RTU, timeout=0.3, retries=0, reconnect_delay=0
    )
    assert await client.connect()
    yield client
    client.close()


async def test_console_tanks_read_through_the_same_map(
    tanks: dict[int, SimTank], rtu: AsyncModbusSerialClient, franklin: RegisterMap
) -> None:
    for number in (1, 2, 3):
        response = await rtu.read_input_registers(
            franklin.tank_address(number), count=franklin.block_length, device_id=5
        )
        assert not response.isError()
        values = decode_registers(franklin, response.registers)
        snap = tanks[number].snapshot()
        assert float(values["product_height"]) == pytest.approx(snap.height_mm, abs=0.26)
        assert float(values["gross_volume"]) == pytest.approx(snap.volume_l, abs=0.4)
        assert float(values["temperature"]) == pytest.approx(snap.temperature_c, abs=0.01)
        assert values["alarms"] == 4  # bit 2: high water (150 L is above 40 mm here)


async def test_illegal_addresses_and_function_codes_are_exceptions(
    rtu: AsyncModbusSerialClient, franklin: RegisterMap
) -> None:
    wrong_table = await rtu.read_holding_registers(200, count=18, device_id=5)
    assert wrong_table.isError() and wrong_table.exception_code == 2
    no_tank_4 = await rtu.read_input_registers(franklin.tank_address(4), count=18, device_id=5)
    assert no_tank_4.isError() and no_tank_4.exception_code == 2
    fine = await rtu.read_input_registers(0, count=16, device_id=9)
    assert not fine.isError()


async def test_injected_exceptions_and_silence(
    console: ModbusProbeSimulator, rtu: AsyncModbusSerialClient
) -> None:
    console.set_exception(9, 4)
    refused = await rtu.read_input_registers(0, count=16, device_id=9)
    assert refused.isError() and refused.exception_code == 4
    console.set_exception(9, None)
    assert not (await rtu.read_input_registers(0, count=16, device_id=9)).isError()

    console.set_silent(9)
    with pytest.raises(ModbusIOException):
        await rtu.read_input_registers(0, count=16, device_id=9)
    with pytest.raises(ModbusIOException):  # nobody has id 17
        await rtu.read_input_registers(0, count=16, device_id=17)
    console.set_silent(9, False)
    assert not (await rtu.read_input_registers(0, count=16, device_id=9)).isError()

    stats = console.stats
    assert stats.unanswered == 2 and stats.exceptions == 1 and stats.overlaps == 0
    assert stats.requests == stats.replies + stats.unanswered


async def test_override_shows_a_chosen_value(
    console: ModbusProbeSimulator, rtu: AsyncModbusSerialClient, generic: RegisterMap
) -> None:
    console.override(9, 1, "product_height", Decimal("7777.5"))
    response = await rtu.read_input_registers(0, count=16, device_id=9)
    assert decode_registers(generic, response.registers)["product_height"] == Decimal("7777.5")
    console.override(9, 1, "product_height", None)
    response = await rtu.read_input_registers(0, count=16, device_id=9)
    assert decode_registers(generic, response.registers)["product_height"] != Decimal("7777.5")
    with pytest.raises(KeyError):
        console.override(9, 1, "colour", 1)


async def test_a_pneumercator_console_over_tcp(pneumercator: RegisterMap) -> None:
    tanks = make_tanks()
    tanks[2].deliver(3000, duration_s=3600)
    with ModbusProbeSimulator([SimProbe(1, pneumercator, tanks)]) as sim:
        host, port = sim.serve_tcp()
        assert sim.address == (host, port) and port > 0
        client = AsyncModbusTcpClient(host, port=port, timeout=0.5, retries=0, reconnect_delay=0)
        assert await client.connect()
        try:
            idle = await client.read_holding_registers(1, count=16, device_id=1)
            busy = await client.read_holding_registers(17, count=16, device_id=1)
        finally:
            client.close()
    assert decode_registers(pneumercator, idle.registers)["status"] == 0
    values = decode_registers(pneumercator, busy.registers)
    assert values["status"] == 1  # bit 0: delivery in progress
    assert float(values["gross_volume"]) == pytest.approx(tanks[2].volume_l, abs=2.0)


def test_tank_values_cover_every_known_field(pneumercator: RegisterMap) -> None:
    tank = SimTank(TankSpec(1, CHART, ullage_fraction=0.9), product_l=10_000, water_l=100)
    snap = tank.snapshot()
    values = tank_values(snap, pneumercator, {})
    assert values["product_height"] == snap.height_mm
    assert values["gross_volume"] == snap.volume_l
    assert values["net_volume"] == snap.tc_volume_l
    assert values["ullage"] == snap.ullage_l
    assert values["fill_percent"] == pytest.approx(100 * 10_100 / CHART.capacity_l)
    assert values["status"] == 0


def test_simulator_settings_are_checked(generic: RegisterMap, franklin: RegisterMap) -> None:
    tank = SimTank(TankSpec(1, CHART))
    with pytest.raises(ValueError, match="share a device id"):
        ModbusProbeSimulator([sim_probe(1, generic, tank), sim_probe(1, generic, tank)])
    with pytest.raises(ValueError, match="outside 1-247"):
        sim_probe(0, generic, tank)
    with pytest.raises(ValueError, match="tanks 1-1"):
        SimProbe(1, generic, {2: tank})
    with pytest.raises(ValueError, match="no tank"):
        SimProbe(1, franklin, {})
    sim = ModbusProbeSimulator([sim_probe(1, generic, tank)])
    with pytest.raises(RuntimeError):
        sim.unplug()
    sim.stop()
    sim.stop()
