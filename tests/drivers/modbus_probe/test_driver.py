"""The Modbus probe bus master against the simulator: RTU over a pty, and TCP."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from drivers.base import (
    CommandRejected,
    DeviceTimeout,
    FrameError,
    GaugeEvent,
    GaugeOffline,
    GaugeOnline,
    GaugeStatus,
    TankAlarms,
    TankGauge,
    TankGaugeReading,
    TransportError,
)
from drivers.modbus_probe import adu
from drivers.modbus_probe.adu import Adu
from drivers.modbus_probe.driver import (
    ModbusBusSettings,
    ModbusProbeBus,
    ProbeOffline,
    ProbeOnline,
    ProbeRefused,
    ProbeSettings,
    SerialLine,
    TankReadMalformed,
    TankReadRefused,
    TcpLink,
)
from drivers.modbus_probe.registers import load_register_map
from drivers.modbus_probe.sim import ModbusProbeSimulator, SimProbe, sim_probe
from drivers.tank_sim import SimTank, TankAlarm, TankChart, TankSpec

MAPS = Path(__file__).resolve().parents[3] / "config" / "modbus"
CHART = TankChart.horizontal_cylinder(2400, 7000)
GENERIC = load_register_map(MAPS / "generic_magnetostrictive.toml")
FRANKLIN = load_register_map(MAPS / "franklin_ts550evo.toml")
PNEUMERCATOR = load_register_map(MAPS / "pneumercator_tms.toml")
POLL_S = 0.05


def bus_settings(link: SerialLine | TcpLink, **overrides: Any) -> ModbusBusSettings:
    values: dict[str, Any] = {
        "request_timeout_s": 0.15,
        "offline_after": 2,
        "backoff_initial_s": 0.2,
        "backoff_max_s": 0.4,
        "reconnect_initial_s": 0.05,
        "reconnect_max_s": 0.2,
    }
    values.update(overrides)
    return ModbusBusSettings("tg", link, **values)


class Harness:
    """A bus running against a simulator, with the events it emitted."""

    def __init__(self, sim: ModbusProbeSimulator, bus: ModbusProbeBus, tanks: dict[int, SimTank]):
        self.sim = sim
        self.bus = bus
        self.tanks = tanks
        self.events: list[GaugeEvent] = []
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.bus.run(POLL_S, self.events.append))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self.task

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async def wait() -> None:
            while not predicate():
                await asyncio.sleep(0.01)

        await asyncio.wait_for(wait(), timeout)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def readings(self, tank: int) -> list[TankGaugeReading]:
        return [e for e in self.of(TankGaugeReading) if e.tank == tank]


def three_tanks() -> dict[int, SimTank]:
    return {
        n: SimTank(TankSpec(n, CHART), product_l=4000.0 * (n - 10), water_l=60.0 * (n - 10))
        for n in (11, 12, 13)
    }


async def start_rtu(
    tmp_path: Path,
    probes: Sequence[SimProbe],
    settings: Sequence[ProbeSettings],
    tanks: dict[int, SimTank],
    *,
    reply_delay_s: float = 0.0,
    **bus: Any,
) -> Harness:
    sim = ModbusProbeSimulator(probes, reply_delay_s=reply_delay_s)
    link = tmp_path / "probes"
    sim.serve_pty(link)
    harness = Harness(
        sim, ModbusProbeBus(bus_settings(SerialLine(str(link)), **bus), settings), tanks
    )
    harness.start()
    return harness


@pytest.fixture
async def line(tmp_path: Path) -> AsyncIterator[Harness]:
    """Three single-tank probes (ids 1-3) on one RS-485 line, for station tanks 11-13."""
    tanks = three_tanks()
    probes = [sim_probe(i, GENERIC, tanks[10 + i]) for i in (1, 2, 3)]
    settings = [ProbeSettings(i, GENERIC, {10 + i: 1}) for i in (1, 2, 3)]
    harness = await start_rtu(tmp_path, probes, settings, tanks, reply_delay_s=0.005)
    await harness.until(lambda: all(harness.bus.probe_online(i) for i in (1, 2, 3)))
    yield harness
    await harness.stop()
    harness.sim.stop()


# ---------------------------------------------------------------------- a line of probes
async def test_three_probes_on_one_line_read_their_tanks(line: Harness) -> None:
    assert sorted(e.device_id for e in line.of(ProbeOnline)) == [1, 2, 3]
    assert len(line.of(GaugeOnline)) == 1 and line.bus.is_online
    await line.until(lambda: all(line.readings(t) for t in (11, 12, 13)))
    for number, tank in line.tanks.items():
        reading = line.readings(number)[-1]
        snap = tank.snapshot()
        assert reading.gauge == "tg"
        assert reading.height is not None and reading.water is not None
        assert float(reading.height) == pytest.approx(snap.height_mm, abs=0.01)
        assert float(reading.water) == pytest.approx(snap.water_mm, abs=0.01)
        assert reading.temperature is not None
        assert float(reading.temperature) == pytest.approx(snap.temperature_c, abs=0.01)
        assert reading.volume is None  # this probe family gives no volume: the tank model does
        assert reading.status_bits == GaugeStatus.NONE
        assert reading.at.tzinfo is not None


async def test_requests_on_one_line_never_overlap(line: Harness) -> None:
    """Routine polls plus many concurrent reads from other tasks: one request at a time."""
    bursts = [line.bus.read_inventory(tank) for tank in (11, 12, 13, 0) * 5]
    results = await asyncio.gather(*bursts)
    assert [len(r) for r in results] == [1, 1, 1, 3] * 5
    assert [r.tank for r in results[3]] == [11, 12, 13]
    stats = line.sim.stats
    assert stats.overlaps == 0 and stats.max_in_flight == 1
    assert stats.requests >= 30 and line.bus.counters.timeouts == 0


async def test_reads_waiting_when_the_bus_stops_are_failed_not_left_hanging(
    line: Harness,
) -> None:
    reads = [asyncio.ensure_future(line.bus.read_inventory(0)) for _ in range(4)]
    await asyncio.sleep(0)  # all queued behind the poll in progress
    await line.stop()
    results = await asyncio.wait_for(asyncio.gather(*reads, return_exceptions=True), 2.0)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert failed and all(isinstance(r, TransportError) for r in failed)
    assert all("bus stopped" in str(r) for r in failed)


async def test_levels_follow_the_tank(line: Harness) -> None:
    tank = line.tanks[12]
    (before,) = await line.bus.read_inventory(12)
    tank.draw(1500)
    (after,) = await line.bus.read_inventory(12)
    assert before.height is not None and after.height is not None
    assert float(before.height - after.height) == pytest.approx(
        CHART.height_at(8120) - CHART.height_at(6620), abs=0.01
    )


# ---------------------------------------------------------------------- refusals
async def test_an_exception_reply_is_typed_per_device_and_the_bus_goes_on(line: Harness) -> None:
    line.sim.set_exception(2, 4)
    with pytest.raises(ProbeRefused) as caught:
        await line.bus.read_inventory(12)
    assert caught.value.exception_code == 4
    assert caught.value.device == "tg/2"
    assert "device failure" in str(caught.value)
    assert isinstance(caught.value, CommandRejected)

    # The others keep reading; device 2 answered, so it stays online; one event, not one a poll.
    count = len(line.readings(13))
    await line.until(lambda: len(line.readings(13)) >= count + 5)
    assert line.bus.probe_online(2)
    (refused,) = line.of(TankReadRefused)
    assert (refused.tank, refused.device_id, refused.exception_code) == (12, 2, 4)

    line.sim.set_exception(2, None)
    count = len(line.readings(12))
    await line.until(lambda: len(line.readings(12)) > count)
    assert not line.of(ProbeOffline)
    assert len(await line.bus.read_inventory(0)) == 3


async def test_a_reply_too_short_for_the_map_is_typed_once_and_clears(line: Harness) -> None:
    line.sim.set_short_replies(3, 2)  # the generic map needs 16 registers per tank
    with pytest.raises(FrameError, match="needs 16 registers, got 2"):
        await line.bus.read_inventory(13)
    count = len(line.readings(11))
    await line.until(lambda: len(line.readings(11)) >= count + 5)
    (malformed,) = line.of(TankReadMalformed)
    assert (malformed.tank, malformed.device_id) == (13, 3)
    assert "got 2" in malformed.text
    assert line.bus.probe_online(3) and line.bus.counters.malformed >= 2

    line.sim.set_short_replies(3, None)
    count = len(line.readings(13))
    await line.until(lambda: len(line.readings(13)) > count)
    line.sim.set_short_replies(3, 0)  # a fresh fault after recovery is reported again
    await line.until(lambda: len(line.of(TankReadMalformed)) == 2)
    assert not line.of(ProbeOffline) and not line.of(TankReadRefused)


async def test_a_wrong_map_gets_illegal_address_typed(tmp_path: Path) -> None:
    """A probe configured as a Franklin console is asked for registers it does not have."""
    tanks = three_tanks()
    probes = [sim_probe(1, GENERIC, tanks[11]), sim_probe(2, GENERIC, tanks[12])]
    settings = [ProbeSettings(1, GENERIC, {11: 1}), ProbeSettings(2, FRANKLIN, {12: 1})]
    harness = await start_rtu(tmp_path, probes, settings, tanks)
    try:
        await harness.until(lambda: bool(harness.of(TankReadRefused)))
        with pytest.raises(ProbeRefused) as caught:
            await harness.bus.read_inventory(12)
        assert caught.value.exception_code == 2
        assert "illegal data address" in str(caught.value)
        (reading,) = await harness.bus.read_inventory(11)
        assert reading.height is not None
    finally:
        await harness.stop()
        harness.sim.stop()


# ---------------------------------------------------------------------- silence
async def test_a_probe_times_out_goes_offline_and_comes_back(line: Harness) -> None:
    line.sim.set_silent(2)
    with pytest.raises(DeviceTimeout, match="tg/2"):
        await line.bus.read_inventory(12)
    await line.until(lambda: bool(line.of(ProbeOffline)))
    (offline,) = line.of(ProbeOffline)
    assert (offline.device_id, offline.tanks) == (2, (12,))
    assert "no reply" in offline.reason
    assert not line.bus.probe_online(2) and line.bus.is_online
    assert not line.of(GaugeOffline)

    # The silent probe is backed off: the others are polled many times meanwhile.
    count = len(line.readings(11))
    await line.until(lambda: len(line.readings(11)) >= count + 8)
    assert line.bus.counters.timeouts < 8

    line.sim.set_silent(2, False)
    await line.until(lambda: line.bus.probe_online(2))
    assert [e.device_id for e in line.of(ProbeOnline)].count(2) == 2
    count = len(line.readings(12))
    await line.until(lambda: len(line.readings(12)) > count)
    assert line.sim.stats.overlaps == 0


async def test_every_probe_silent_takes_the_gauge_offline(line: Harness) -> None:
    for device in (1, 2, 3):
        line.sim.set_silent(device)
    await line.until(lambda: bool(line.of(GaugeOffline)))
    assert not line.bus.is_online
    for device in (1, 2, 3):
        line.sim.set_silent(device, False)
    await line.until(lambda: len(line.of(GaugeOnline)) == 2)
    await line.until(lambda: all(line.bus.probe_online(i) for i in (1, 2, 3)))


async def test_the_line_unplugged_and_plugged_back(line: Harness) -> None:
    line.sim.unplug()
    await line.until(lambda: bool(line.of(GaugeOffline)))
    assert sorted(e.device_id for e in line.of(ProbeOffline)) == [1, 2, 3]
    with pytest.raises((TransportError, DeviceTimeout)):
        await line.bus.read_inventory(11)
    line.sim.replug()
    await line.until(lambda: all(line.bus.probe_online(i) for i in (1, 2, 3)))
    assert line.bus.counters.reconnects >= 1
    assert len(await line.bus.read_inventory(0)) == 3


async def test_a_missing_port_is_retried_without_crashing(tmp_path: Path) -> None:
    bus = ModbusProbeBus(
        bus_settings(SerialLine(str(tmp_path / "nothing-here"))),
        [ProbeSettings(1, GENERIC, {1: 1})],
    )
    events: list[GaugeEvent] = []
    task = asyncio.create_task(bus.run(POLL_S, events.append))
    await asyncio.sleep(0.3)
    assert not task.done()
    assert [type(e) for e in events] == [ProbeOffline, GaugeOffline]
    with pytest.raises(TransportError, match="not connected"):
        await bus.read_inventory(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ---------------------------------------------------------------------- consoles over TCP
async def test_a_console_over_tcp_reports_alarms_and_deliveries() -> None:
    tanks = three_tanks()
    tanks[12].deliver(2000, duration_s=3600)
    for tank in tanks.values():
        tank.set_state(water_l=0)
    tanks[13].add_water(600)  # well above the 50 mm high-water mark
    sim = ModbusProbeSimulator(
        [
            SimProbe(
                4,
                PNEUMERCATOR,
                {1: tanks[11], 2: tanks[12], 3: tanks[13]},
                {TankAlarm.HIGH_WATER: 11},
            )
        ]
    )
    host, port = sim.serve_tcp()
    harness = Harness(
        sim,
        ModbusProbeBus(
            bus_settings(TcpLink(host, port)),
            [ProbeSettings(4, PNEUMERCATOR, {11: 1, 12: 2, 13: 3})],
        ),
        tanks,
    )
    harness.start()
    try:
        await harness.until(lambda: all(harness.readings(t) for t in (11, 12, 13)))
        delivering = harness.readings(12)[-1]
        assert delivering.status_bits & GaugeStatus.DELIVERY_IN_PROGRESS
        assert not harness.readings(11)[-1].status_bits
        reading = harness.readings(11)[-1]
        assert reading.volume is not None and reading.ullage is not None
        assert float(reading.volume) == pytest.approx(tanks[11].volume_l, abs=3.8)  # 1 gal
        assert reading.tc_volume is not None

        alarms = {e.tank: e for e in harness.of(TankAlarms)}
        assert alarms[11].alarms == () and alarms[12].alarms == ()
        (water,) = alarms[13].alarms
        assert (water.code, water.text) == (11, "Water setpoint alarm (high)")
        count = len(harness.of(TankAlarms))
        tanks[13].set_state(water_l=0)
        await harness.until(lambda: len(harness.of(TankAlarms)) > count)
        assert harness.of(TankAlarms)[-1].alarms == ()  # cleared, reported once
    finally:
        await harness.stop()
        sim.stop()


async def test_a_silent_tcp_device_reconnects_and_returns() -> None:
    tanks = three_tanks()
    sim = ModbusProbeSimulator([sim_probe(1, GENERIC, tanks[11])])
    host, port = sim.serve_tcp()
    harness = Harness(
        sim,
        ModbusProbeBus(bus_settings(TcpLink(host, port)), [ProbeSettings(1, GENERIC, {11: 1})]),
        tanks,
    )
    harness.start()
    try:
        await harness.until(lambda: harness.bus.probe_online(1))
        sim.set_silent(1)
        await harness.until(lambda: bool(harness.of(GaugeOffline)))
        await harness.until(lambda: harness.bus.counters.reconnects >= 1)
        sim.set_silent(1, False)
        await harness.until(lambda: harness.bus.probe_online(1))
        assert len(harness.of(GaugeOnline)) == 2
    finally:
        await harness.stop()
        sim.stop()


async def test_the_overlap_counter_sees_two_racing_masters() -> None:
    """The control for the no-overlap test: two clients that do not share a bus do overlap."""
    tank = SimTank(TankSpec(1, CHART), product_l=5000)
    with ModbusProbeSimulator([sim_probe(1, GENERIC, tank)], reply_delay_s=0.05) as sim:
        host, port = sim.serve_tcp()
        clients = [AsyncModbusTcpClient(host, port=port, timeout=1, retries=0) for _ in range(2)]
        for client in clients:
            assert await client.connect()
        try:
            await asyncio.gather(
                *(c.read_input_registers(0, count=16, device_id=1) for c in clients)
            )
        finally:
            for client in clients:
                client.close()
        assert sim.stats.overlaps == 1 and sim.stats.max_in_flight == 2


# ---------------------------------------------------------------------- plausibility, set-up
async def test_an_implausible_level_is_flagged_not_dropped(line: Harness) -> None:
    line.sim.override(1, 1, "product_height", Decimal(9000))
    (reading,) = await line.bus.read_inventory(11)
    assert reading.height == 9000
    assert reading.status_bits & GaugeStatus.INVALID_HEIGHT


async def test_reading_an_unknown_tank_is_refused(line: Harness) -> None:
    with pytest.raises(CommandRejected, match="no tank 14"):
        await line.bus.read_inventory(14)


def test_bus_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="share a device id"):
        ModbusProbeBus(
            bus_settings(SerialLine("/dev/null")),
            [ProbeSettings(1, GENERIC, {1: 1}), ProbeSettings(1, GENERIC, {2: 1})],
        )
    with pytest.raises(ValueError, match="tank 1 is on two devices"):
        ModbusProbeBus(
            bus_settings(SerialLine("/dev/null")),
            [ProbeSettings(1, GENERIC, {1: 1}), ProbeSettings(2, GENERIC, {1: 1})],
        )
    with pytest.raises(ValueError, match="tanks 1-1"):
        ProbeSettings(1, GENERIC, {1: 2})
    with pytest.raises(ValueError, match="outside 1-247"):
        ProbeSettings(248, GENERIC, {1: 1})
    with pytest.raises(ValueError, match="request_timeout_s"):
        bus_settings(SerialLine("/dev/null"), request_timeout_s=0)
    with pytest.raises(ValueError, match="backoff"):
        bus_settings(SerialLine("/dev/null"), backoff_initial_s=5, backoff_max_s=1)
    assert bus_settings(SerialLine("/dev/x", baud=9600)).gap_s == pytest.approx(0.004010416)
    assert bus_settings(TcpLink("h")).gap_s == 0


def test_a_bus_is_a_tank_gauge() -> None:
    gauge: TankGauge = ModbusProbeBus(
        bus_settings(SerialLine("/dev/null")), [ProbeSettings(1, GENERIC, {1: 1})]
    )
    assert gauge.name == "tg" and not gauge.is_online


# ---------------------------------------------------------------------- taps
Tapped = tuple[str, bytes, Adu]


def _tap_into(frames: list[Tapped]) -> Callable[[str, bytes, Adu, float], None]:
    def tap(direction: str, wire: bytes, item: Adu, at: float) -> None:
        frames.append((direction, wire, item))

    return tap


async def test_taps_see_each_rtu_adu_with_its_crc_verdict(line: Harness) -> None:
    frames: list[Tapped] = []
    line.bus.taps.append(_tap_into(frames))
    await line.until(lambda: sum(1 for d, _, _ in frames if d == "rx") >= 6)
    line.sim.corrupt_next_reply()
    await line.until(lambda: any(item.crc == "bad" for _, _, item in frames))
    line.sim.set_exception(2, 2)
    await line.until(lambda: any(item.function_code == 0x84 for _, _, item in frames))
    line.sim.set_exception(2, None)
    line.bus.taps.clear()

    start = GENERIC.tank_address(1)
    for direction, wire, item in frames:
        assert item.raw == wire and item.framing == "rtu" and item.complete
        assert item.device_id in (1, 2, 3)
        assert item.request is (direction == "tx")
        if item.crc == "ok":
            assert adu.with_crc(wire[:-2]) == wire
        if direction == "tx":  # every request: read the tank's block
            assert wire[:2] == bytes((item.device_id, GENERIC.function_code))
            assert int.from_bytes(wire[2:4], "big") == start and item.crc == "ok"
            assert int.from_bytes(wire[4:6], "big") == GENERIC.block_length
    replies = [item for direction, _, item in frames if direction == "rx" and item.crc == "ok"]
    assert all(len(r.raw) == 5 + 2 * GENERIC.block_length for r in replies if r.function_code == 4)
    # Each reply follows its request, from the device asked.
    for (d1, _, asked), (d2, _, answer) in itertools.pairwise(frames):
        if d1 == "tx" and d2 == "rx":
            assert answer.device_id == asked.device_id
    (bad,) = [item for _, _, item in frames if item.crc == "bad"]
    assert adu.crc16(bad.raw[:-2]) != int.from_bytes(bad.raw[-2:], "little")
    assert adu.describe(bad)["valid"] is False
    refusal = next(item for _, _, item in frames if item.function_code == 0x84)
    described = adu.describe(refusal)
    assert (described["type"], described["exception_code"], refusal.device_id) == (
        "EXCEPTION",
        2,
        2,
    )
    assert described["summary"] == (
        "2 refused read input registers: Modbus exception 2 (illegal data address)"
    )


async def test_taps_see_modbus_tcp_adus_without_a_crc() -> None:
    tank = SimTank(TankSpec(1, CHART), product_l=3000.0)
    sim = ModbusProbeSimulator([sim_probe(7, GENERIC, tank)])
    host, port = sim.serve_tcp()
    bus = ModbusProbeBus(bus_settings(TcpLink(host, port)), [ProbeSettings(7, GENERIC, {1: 1})])
    harness = Harness(sim, bus, {1: tank})
    frames: list[Tapped] = []

    def broken(direction: str, wire: bytes, item: Adu, at: float) -> None:
        raise RuntimeError("a broken tap")

    bus.taps.extend([broken, _tap_into(frames)])
    harness.start()
    try:
        await harness.until(lambda: len(harness.readings(1)) >= 2 and len(frames) >= 4)
    finally:
        await harness.stop()
        sim.stop()
    tx, rx = frames[0][2], frames[1][2]
    assert (frames[0][0], frames[1][0]) == ("tx", "rx")
    assert tx.framing == rx.framing == "socket" and tx.crc == rx.crc == "none"
    assert (tx.device_id, rx.device_id, rx.function_code) == (7, 7, 4)
    assert tx.transaction_id == rx.transaction_id
    assert len(rx.raw) == 6 + int.from_bytes(rx.raw[4:6], "big")
    assert adu.describe(tx)["summary"] == (
        f"read input registers {GENERIC.tank_address(1)}.."
        f"{GENERIC.tank_address(1) + GENERIC.block_length - 1} from 7"
    )


class _SwallowsCancellation:
    """The real pymodbus client, but a cancellation that lands while a request or the
    connect is under way is swallowed and the call completes — what `asyncio.wait_for`
    inside pymodbus does on Python 3.11 when the two race (gh-86296). Timing cannot make
    that race happen on demand; this makes it happen every time."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.swallow = True
        self.swallowed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def _through(self, call: Callable[[], Any]) -> Any:
        try:
            return await call()
        except asyncio.CancelledError:
            if not self.swallow:
                raise
            self.swallowed += 1
            return await call()

    async def connect(self) -> bool:
        return bool(await self._through(self.real.connect))

    async def read_input_registers(self, *args: Any, **kw: Any) -> Any:
        return await self._through(lambda: self.real.read_input_registers(*args, **kw))

    async def read_holding_registers(self, *args: Any, **kw: Any) -> Any:
        return await self._through(lambda: self.real.read_holding_registers(*args, **kw))


async def test_the_bus_stops_when_cancelled_even_if_pymodbus_swallows_it(tmp_path: Path) -> None:
    """A bus task that did not stop when cancelled hung the daemon's shutdown (and a test's
    teardown, seen under load): the bus raises the cancellation pymodbus swallowed."""
    from drivers.modbus_probe.driver import make_client

    tank = SimTank(TankSpec(1, CHART), product_l=3000.0)
    sim = ModbusProbeSimulator([sim_probe(1, GENERIC, tank)], reply_delay_s=0.05)
    sim.serve_pty(tmp_path / "probes")
    clients: list[_SwallowsCancellation] = []

    def factory(*args: Any) -> Any:
        clients.append(_SwallowsCancellation(make_client(*args)))
        return clients[-1]

    bus = ModbusProbeBus(
        bus_settings(SerialLine(str(tmp_path / "probes"))),
        [ProbeSettings(1, GENERIC, {1: 1})],
        client_factory=factory,
    )
    events: list[GaugeEvent] = []
    task = asyncio.create_task(bus.run(POLL_S, events.append))
    try:
        while not any(type(e).__name__ == "TankGaugeReading" for e in events):
            await asyncio.sleep(0.01)
        for _ in range(20):  # cancel while a request (50 ms reply delay) is in flight
            await asyncio.sleep(0.013)
            if bus.counters.requests > bus.counters.replies:
                break
        task.cancel()
        done, _pending = await asyncio.wait({task}, timeout=3)
        assert task in done, "the bus went on after it was cancelled"
        assert task.cancelled()
    finally:
        for client in clients:
            client.swallow = False
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1)
        sim.stop()
