"""The TLS gauge client against the simulated console, over a real pty and over TCP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest

from drivers.base import (
    CommandRejected,
    DeviceTimeout,
    FrameError,
    GaugeDelivery,
    GaugeEvent,
    GaugeOffline,
    GaugeOnline,
    GaugeStatus,
    TankAlarms,
    TankGauge,
    TankGaugeReading,
    TankOffline,
    TransportError,
)
from drivers.transport import SerialTransport, TcpTransport, Transport
from drivers.veeder_root import codec
from drivers.veeder_root.driver import TlsGauge, TlsGaugeSettings
from drivers.veeder_root.sim import (
    DISPLAY_ONLY,
    REFUSE_INVENTORY,
    TlsConsole,
    TlsConsoleSimulator,
)
from tests.drivers.veeder_root.frames import (
    MANUAL_METRIC,
    MANUAL_US,
    FakeDelivery,
    FakeTank,
    FakeTanks,
)

Kind = Literal["pty", "tcp"]
KINDS: tuple[Kind, ...] = ("pty", "tcp")
POLL_S = 0.05


@dataclass
class Bench:
    tanks: FakeTanks
    sim: TlsConsoleSimulator
    gauge: TlsGauge
    events: list[GaugeEvent]
    task: asyncio.Task[None] | None = None

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async def wait() -> None:
            while not predicate():
                await asyncio.sleep(0.005)

        await asyncio.wait_for(wait(), timeout)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def start(self, poll_interval_s: float = 60.0) -> None:
        self.task = asyncio.create_task(self.gauge.run(poll_interval_s, self.events.append))
        await self.until(lambda: self.gauge.is_online)
        # A request runs after the poll round in progress: once it is answered, faults
        # armed by the test hit the test's own commands.
        await self.gauge.read_clock()


def _transport(sim: TlsConsoleSimulator, kind: Kind, tmp_path: Path) -> Transport:
    if kind == "pty":
        link = tmp_path / "tls"
        sim.serve_pty(link)
        return SerialTransport(str(link), parity="none", name="tls")
    host, port = sim.serve_tcp()
    return TcpTransport(host, port, "tls")


@contextlib.asynccontextmanager
async def bench(
    kind: Kind,
    tmp_path: Path,
    *,
    console: dict[str, Any] | None = None,
    sim: dict[str, Any] | None = None,
    tanks: FakeTanks | None = None,
    **settings: Any,
) -> AsyncIterator[Bench]:
    tanks = tanks or FakeTanks.two()
    simulator = TlsConsoleSimulator(TlsConsole(tanks, **(console or {})), **(sim or {}))
    transport = _transport(simulator, kind, tmp_path)
    options: dict[str, Any] = {
        "reply_timeout_s": 0.3,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "reopen_initial_s": 0.05,
        "reopen_max_s": 0.2,
        **settings,
    }
    gauge = TlsGauge(TlsGaugeSettings("tls", **options), transport)
    b = Bench(tanks, simulator, gauge, [])
    try:
        yield b
    finally:
        if b.task is not None:
            b.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await b.task
        simulator.stop()


# --------------------------------------------------------------------------- reads
@pytest.mark.parametrize("kind", KINDS)
async def test_every_read_over_a_real_line(kind: Kind, tmp_path: Path) -> None:
    async with bench(kind, tmp_path, console={"system_status": "0000"}) as b:
        await b.start()
        gauge: TankGauge = b.gauge  # the station's view of it
        one, two = await gauge.read_inventory()
        assert isinstance(one, TankGaugeReading) and one.gauge == "tls" and one.tank == 1
        assert (one.volume, one.tc_volume, one.ullage) == (
            Decimal(20000),
            Decimal("19850.5"),
            Decimal(9000),
        )
        assert (one.height, one.water, one.temperature) == (
            Decimal(1200),
            Decimal("12.5"),
            Decimal("18.25"),
        )
        assert one.water_volume == 40 and one.product_code == "1"
        assert one.status_bits is GaugeStatus.NONE
        assert one.at.tzinfo is not None and one.gauge_time is not None
        assert two.volume == 7500
        assert [r.tank for r in await b.gauge.read_inventory(2)] == [2]

        alarms = await b.gauge.read_alarms()
        assert [(a.tank, [(x.code, x.text) for x in a.alarms]) for a in alarms] == [
            (1, []),
            (2, [(5, "low product")]),
        ]
        status = await b.gauge.read_status()
        assert status.code == "i10100" and status.data == "0000"
        assert await b.gauge.read_deliveries() == []


@pytest.mark.parametrize("kind", KINDS)
async def test_clock_read_and_set(kind: Kind, tmp_path: Path) -> None:
    async with bench(kind, tmp_path) as b:
        await b.start()
        before = await b.gauge.read_clock()
        assert abs((before - datetime.now()).total_seconds()) < 120
        wanted = datetime(2030, 6, 1, 8, 15)
        assert await b.gauge.set_clock(wanted) == wanted
        assert await b.gauge.read_clock() in (wanted, datetime(2030, 6, 1, 8, 16))


@pytest.mark.parametrize("kind", KINDS)
async def test_partial_reads(kind: Kind, tmp_path: Path) -> None:
    # The console writes its replies a byte or three at a time.
    async with bench(kind, tmp_path, sim={"chunk_size": 3, "chunk_delay_s": 0.001}) as b:
        await b.start()
        readings = await b.gauge.read_inventory()
        assert [r.volume for r in readings] == [20000, 7500]
        assert b.gauge.counters.timeouts == 0


async def test_several_commands_on_one_connection(tmp_path: Path) -> None:
    async with bench("tcp", tmp_path) as b:
        await b.start()
        for _ in range(3):
            await b.gauge.read_inventory()
            await b.gauge.read_alarms()
            await b.gauge.read_clock()
        # Requests from several tasks at once are carried one at a time.
        results = await asyncio.gather(*(b.gauge.read_inventory(t) for t in (1, 2, 1, 2)))
        assert [r[0].tank for r in results] == [1, 2, 1, 2]
        assert b.sim.stats.connections == 1
        assert b.gauge.counters.unexpected == 0 and b.gauge.counters.timeouts == 0


# --------------------------------------------------------------------------- link settings
@pytest.mark.parametrize(
    ("terminator", "etx"), [(b"", 0x03), (b"\n", 0x03), (b"\r\n", 0x04), (b"\n", 0x1A)]
)
async def test_terminator_and_etx(terminator: bytes, etx: int, tmp_path: Path) -> None:
    async with bench(
        "pty", tmp_path, sim={"terminator": terminator, "etx": etx}, terminator=terminator, etx=etx
    ) as b:
        await b.start()
        assert len(await b.gauge.read_inventory()) == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_security_code(kind: Kind, tmp_path: Path) -> None:
    async with bench(
        kind, tmp_path, console={"security_code": "S3CRET"}, security_code="S3CRET"
    ) as b:
        await b.start()
        assert len(await b.gauge.read_inventory()) == 2


async def test_wrong_security_code_gets_no_answer(tmp_path: Path) -> None:
    async with bench(
        "tcp",
        tmp_path,
        console={"security_code": "S3CRET"},
        security_code="WRONG1",
        reply_timeout_s=0.05,
        offline_after=2,
        retries=0,
    ) as b:
        b.task = asyncio.create_task(b.gauge.run(60.0, b.events.append))
        await b.until(lambda: bool(b.of(GaugeOffline)))
        assert "no reply" in b.of(GaugeOffline)[0].reason
        assert b.sim.stats.wrong_security_code >= 2


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        TlsGaugeSettings("x", security_code="short")
    with pytest.raises(ValueError):
        TlsGaugeSettings("x", terminator=b"\r")
    with pytest.raises(ValueError):
        TlsGaugeSettings("x", etx=0x41)
    with pytest.raises(ValueError):
        TlsGaugeSettings("x", reply_timeout_s=5, max_reply_s=1)


# --------------------------------------------------------------------------- faults
@pytest.mark.parametrize("kind", KINDS)
async def test_timeout_without_etx(kind: Kind, tmp_path: Path) -> None:
    async with bench(kind, tmp_path, retries=0, reply_timeout_s=0.1) as b:
        await b.start()
        b.sim.withhold_etx()
        with pytest.raises(DeviceTimeout, match="inventory: no reply after 1 tries"):
            await b.gauge.read_inventory()
        assert b.gauge.counters.timeouts == 1
        await b.until(lambda: b.sim.stats.aborts == 1)  # ESC told the console to stop
        # The half reply is thrown away: the next command gets its own answer.
        assert len(await b.gauge.read_inventory()) == 2


async def test_a_lost_etx_is_retried(tmp_path: Path) -> None:
    async with bench("pty", tmp_path, retries=1, reply_timeout_s=0.1) as b:
        await b.start()
        b.sim.withhold_etx()
        assert len(await b.gauge.read_inventory()) == 2
        assert b.gauge.counters.retransmissions == 1


async def test_bad_checksum_is_retried_then_a_frame_error(tmp_path: Path) -> None:
    async with bench("tcp", tmp_path, retries=1) as b:
        await b.start()
        b.sim.corrupt_next_reply()
        assert len(await b.gauge.read_inventory()) == 2
        assert b.gauge.counters.bad_crc == 1
        b.sim.corrupt_next_reply()
        b.sim.corrupt_next_reply()
        with pytest.raises(FrameError, match="checksum mismatch"):
            await b.gauge.read_alarms()
        assert b.gauge.is_online  # it answers, just badly


async def test_junk_before_the_reply_is_skipped(tmp_path: Path) -> None:
    async with bench("pty", tmp_path) as b:
        await b.start()
        b.sim.inject_garbage(b"\x00\xff\r\nnoise")
        assert len(await b.gauge.read_inventory()) == 2
        assert b.gauge.counters.garbage_bytes == 9


async def test_a_late_reply_to_an_earlier_command_is_not_taken(tmp_path: Path) -> None:
    # The inventory times out at 0.4 s and comes at 0.6 s, inside the clock's 0.4-0.8 s.
    async with bench("tcp", tmp_path, retries=0, reply_timeout_s=0.4) as b:
        await b.start()
        b.sim.reply_delay_s = 0.6
        with pytest.raises(DeviceTimeout):
            await b.gauge.read_inventory()
        b.sim.reply_delay_s = 0.0
        # The inventory arrives while the clock is asked: it is skipped, the clock taken.
        assert isinstance(await b.gauge.read_clock(), datetime)
        assert b.gauge.counters.unexpected == 1


async def test_refusal_is_command_rejected(tmp_path: Path) -> None:
    async with bench("pty", tmp_path, console={"refuse": {"i202"}}) as b:
        await b.start()
        with pytest.raises(CommandRejected, match="9999FF1B") as caught:
            await b.gauge.read_deliveries()
        assert caught.value.code == "unsupported"
        assert b.gauge.is_online


@pytest.mark.parametrize("fmt", ["auto", "display"])
async def test_display_format_inventory(fmt: str, tmp_path: Path) -> None:
    refuse = {"i201"} if fmt == "auto" else set()
    async with bench(
        "tcp",
        tmp_path,
        console={"refuse": refuse, "products": {1: "UNLEADED"}},
        inventory_format=fmt,
    ) as b:
        await b.start()
        one, two = await b.gauge.read_inventory()
        assert one.product_code == "UNLEADED" and one.volume == 20000
        assert one.height == Decimal("1200.00") and one.temperature == Decimal("18.25")
        assert one.tc_volume == 19850  # printed without decimals
        assert one.gauge_time is not None and two.volume == 7500
        assert (b.sim.stats.refused == 1) is (fmt == "auto")


@pytest.mark.parametrize("fmt", ["computer", "display"])
async def test_a_console_in_us_units_is_read_in_litres_mm_and_celsius(
    fmt: str, tmp_path: Path
) -> None:
    us_tanks = FakeTanks([FakeTank(1, MANUAL_US)])
    us_tanks.tank(1).deliveries.append(
        FakeDelivery(
            1,
            datetime(2024, 1, 14, 8, 0),
            datetime(2024, 1, 14, 8, 40),
            start_volume_l=1000.0,
            end_volume_l=3500.0,
            start_tc_volume_l=990.0,
            end_tc_volume_l=3480.0,
            start_water_l=0.5,
            end_water_l=0.5,
            start_height_mm=12.5,
            end_height_mm=40.0,
            start_temperature_c=59.0,
            end_temperature_c=-40.0,
        )
    )
    async with bench("pty", tmp_path, tanks=us_tanks, units="us", inventory_format=fmt) as b:
        await b.start()
        (reading,) = await b.gauge.read_inventory()
        expected = dict(MANUAL_METRIC)
        if fmt == "display":
            expected["water_volume"] = None  # the printed report has no water volume column
        assert {name: getattr(reading, name) for name in expected} == expected
        if fmt == "computer":
            (delivery,) = await b.gauge.read_deliveries()
            assert (delivery.start_volume, delivery.end_volume) == (
                Decimal("3785.4118"),  # 1000 gal
                Decimal("13248.9412"),  # 3500 gal = 13248.941244 L
            )
            assert (delivery.start_tc_volume, delivery.end_tc_volume) == (
                Decimal("3747.5577"),  # 990 gal = 3747.557666 L
                Decimal("13173.2330"),  # 3480 gal = 13173.232978 L
            )
            assert (delivery.start_height, delivery.end_height) == (
                Decimal("317.5000"),
                Decimal("1016.0000"),
            )
            assert delivery.start_water == Decimal("12.7000")  # 0.5 in, a height like i201's
            # 59 °F is 15 °C; -40 is the same on both scales.
            assert (delivery.start_temperature, delivery.end_temperature) == (
                Decimal("15.0000"),
                Decimal("-40.0000"),
            )


async def test_a_metric_console_is_read_as_it_reports(tmp_path: Path) -> None:
    us_tanks = FakeTanks([FakeTank(1, MANUAL_US)])
    async with bench("tcp", tmp_path, tanks=us_tanks) as b:  # units default to metric
        await b.start()
        (reading,) = await b.gauge.read_inventory()
        assert (reading.volume, reading.height, reading.temperature) == (
            Decimal(5329),
            Decimal("48.97"),
            Decimal("37.39"),
        )


def test_units_are_checked() -> None:
    with pytest.raises(ValueError, match="units 'imperial' is not one of metric, us"):
        TlsGaugeSettings("tls", units="imperial")  # type: ignore[arg-type]


async def test_refused_inventory_without_fallback(tmp_path: Path) -> None:
    async with bench(
        "tcp", tmp_path, console={"refuse": {"i201"}}, inventory_format="computer"
    ) as b:
        b.task = asyncio.create_task(b.gauge.run(60.0, b.events.append))
        await b.until(lambda: bool(b.of(GaugeOffline)))  # the first poll was refused
        with pytest.raises(CommandRejected) as caught:
            await b.gauge.read_inventory()
        assert caught.value.code == "inventory_refused" and b.sim.stats.refused == 2


def test_the_inventory_format_is_auto_unless_set() -> None:
    assert TlsGaugeSettings("tls").inventory_format == "auto"
    with pytest.raises(ValueError, match="inventory_format 'printed' is not one of computer, "):
        TlsGaugeSettings("tls", inventory_format="printed")  # type: ignore[arg-type]


def _commands(frames: list[Tapped]) -> list[str]:
    """The function codes sent, in order (the ESC of a timeout left out)."""
    return [item.code for direction, _wire, item in frames if direction == "tx" and item]


@pytest.mark.parametrize(
    ("fmt", "refuse", "asked"),
    [
        ("computer", set(), {"i20100"}),
        ("display", set(), {"I20100"}),
        ("auto", set(), {"i20100"}),
        ("auto", {"i201"}, {"I20100"}),
    ],
)
async def test_the_inventory_format_decides_the_commands_polled(
    fmt: str, refuse: set[str], asked: set[str], tmp_path: Path
) -> None:
    async with bench("tcp", tmp_path, console={"refuse": refuse}, inventory_format=fmt) as b:
        frames: list[Tapped] = []
        b.gauge.taps.append(_tap_into(frames))
        await b.start(POLL_S)
        await b.until(lambda: len(b.of(TankGaugeReading)) >= 8)
        inventory = [c for c in _commands(frames) if c[1:4] == "201"]
        # auto asks i201 once on a console that refuses it, then the printed report only.
        assert set(inventory[1:]) == asked and len(inventory) >= 4
        assert b.sim.stats.refused <= 1 and not b.of(GaugeOffline)


async def test_auto_asks_the_computer_format_again_after_a_reopen(tmp_path: Path) -> None:
    async with bench("tcp", tmp_path, console={"refuse": DISPLAY_ONLY}) as b:
        frames: list[Tapped] = []
        b.gauge.taps.append(_tap_into(frames))
        await b.start(POLL_S)
        await b.until(lambda: len(b.of(TankGaugeReading)) >= 4)
        # The console is set up anew (or replaced) while the line is down.
        b.sim.console.set_refused(())
        b.sim.drop_connections()
        await b.until(lambda: bool(b.of(GaugeOffline)) and b.sim.stats.connections == 2)
        seen = len(frames)
        await b.until(lambda: "i20100" in _commands(frames[seen:]))
        await b.until(lambda: _commands(frames[seen:]).count("i20100") >= 3)
        assert "I20100" not in _commands(frames[seen:])


@pytest.mark.parametrize(
    ("fmt", "refuse", "words"),
    [
        ("auto", REFUSE_INVENTORY, "console refuses the inventory commands i201 and I201"),
        ("computer", DISPLAY_ONLY, "console refuses the inventory command i201"),
        ("display", {"I201"}, "console refuses the inventory command I201"),
    ],
)
async def test_a_console_refusing_inventory_is_offline_with_its_reason_until_it_reads(
    fmt: str, refuse: frozenset[str], words: str, tmp_path: Path
) -> None:
    async with bench("pty", tmp_path, console={"refuse": refuse}, inventory_format=fmt) as b:
        b.task = asyncio.create_task(b.gauge.run(POLL_S, b.events.append))
        await b.until(lambda: bool(b.of(GaugeOffline)))
        await b.until(lambda: b.sim.stats.refused >= 6)  # polled on, and still refused
        (offline,) = b.of(GaugeOffline)
        assert offline.code == "inventory_refused" and words in offline.reason
        assert "RS-232" in offline.reason and "security code" in offline.reason
        if fmt != "auto":
            assert 'inventory_format = "' in offline.reason  # the setting to look at
        assert not b.gauge.is_online and not b.of(GaugeOnline)  # never shown as working
        assert isinstance(await b.gauge.read_clock(), datetime)  # it answers the rest...
        assert not b.gauge.is_online  # ...and is not working for that
        b.sim.console.set_refused(())
        await b.until(lambda: bool(b.of(TankGaugeReading)))
        assert b.gauge.is_online
        kinds = [type(e).__name__ for e in b.events if isinstance(e, GaugeOnline | GaugeOffline)]
        assert kinds == ["GaugeOffline", "GaugeOnline"]


async def test_inventory_replies_that_never_read_are_reported(tmp_path: Path) -> None:
    async with bench("tcp", tmp_path, retries=0, offline_after=2) as b:
        await b.start(POLL_S)
        b.sim.corrupt_replies(10_000)
        await b.until(lambda: bool(b.of(GaugeOffline)))
        (offline,) = b.of(GaugeOffline)
        assert offline.code == "no_inventory" and "checksum mismatch" in offline.reason
        assert "2 polls in a row" in offline.reason and not b.gauge.is_online
        readings = len(b.of(TankGaugeReading))
        b.sim.corrupt_replies(0)
        await b.until(lambda: len(b.of(TankGaugeReading)) > readings)
        await b.until(lambda: b.gauge.is_online)


@pytest.mark.parametrize("configured", [(1, 2), ()])
async def test_a_tank_left_out_of_the_inventory_goes_offline_and_comes_back(
    configured: tuple[int, ...], tmp_path: Path
) -> None:
    async with bench("pty", tmp_path, offline_after=2, tank_numbers=configured) as b:
        await b.start(POLL_S)
        await b.until(lambda: any(r.tank == 2 for r in b.of(TankGaugeReading)))
        b.sim.console.set_probe_out(2)
        await b.until(lambda: bool(b.of(TankOffline)))
        await b.until(lambda: b.sim.stats.commands >= 20)
        (offline,) = b.of(TankOffline)
        assert offline.tank == 2 and offline.gauge == "tls"
        assert "the console reports no inventory for tank 2 (2 polls in a row)" in offline.reason
        assert b.gauge.is_online and not b.of(GaugeOffline)
        before = len(b.of(TankGaugeReading))
        b.sim.console.set_probe_out(2, False)
        await b.until(lambda: any(r.tank == 2 for r in b.of(TankGaugeReading)[before:]))
        assert len(b.of(TankOffline)) == 1


async def test_a_configured_tank_the_console_never_reports_goes_offline(tmp_path: Path) -> None:
    async with bench("tcp", tmp_path, offline_after=1, tank_numbers=(1, 2, 3)) as b:
        await b.start(POLL_S)
        await b.until(lambda: bool(b.of(TankOffline)))
        (offline,) = b.of(TankOffline)
        assert offline.tank == 3 and "no inventory for tank 3" in offline.reason


async def test_requests_need_the_connection_task(tmp_path: Path) -> None:
    async with bench("tcp", tmp_path) as b:
        with pytest.raises(TransportError, match="not running"):
            await b.gauge.read_inventory()


# --------------------------------------------------------------------------- polling
async def test_polling_emits_readings_alarm_changes_and_new_deliveries(tmp_path: Path) -> None:
    async with bench("pty", tmp_path, deliveries_interval_s=0.0) as b:
        delivery = FakeDelivery(2, datetime(2024, 1, 14, 8, 0), datetime(2024, 1, 14, 8, 40))
        b.tanks.tank(2).deliveries.append(delivery)
        b.tanks.tank(1).change(delivery_in_progress=True)
        await b.start(POLL_S)
        await b.until(lambda: len(b.of(TankGaugeReading)) >= 6)
        assert isinstance(b.events[0], GaugeOnline)
        reading = b.of(TankGaugeReading)[0]
        assert reading.tank == 1 and reading.status_bits & GaugeStatus.DELIVERY_IN_PROGRESS
        # Alarms: once per tank, then only on a change.
        assert [(a.tank, len(a.alarms)) for a in b.of(TankAlarms)] == [(1, 0), (2, 1)]
        b.tanks.tank(1).change(alarms=frozenset({"high_water", "overfill"}))
        await b.until(lambda: len(b.of(TankAlarms)) == 3)
        changed = b.of(TankAlarms)[2]
        assert changed.tank == 1 and [a.code for a in changed.alarms] == [3, 4]
        # Deliveries: each one once, however often the console lists it.
        (first,) = b.of(GaugeDelivery)
        assert first.tank == 2 and first.start == delivery.start and first.end == delivery.end
        assert first.end_volume == 15000 and first.start_height == 500
        later = FakeDelivery(1, datetime(2024, 1, 15, 9, 0), datetime(2024, 1, 15, 9, 30))
        b.tanks.tank(1).deliveries.append(later)
        await b.until(lambda: len(b.of(GaugeDelivery)) == 2)
        await asyncio.sleep(4 * POLL_S)
        assert [d.tank for d in b.of(GaugeDelivery)] == [2, 1]
        assert len(b.of(TankAlarms)) == 3


async def test_polling_stops_asking_what_the_console_refuses(tmp_path: Path) -> None:
    async with bench(
        "tcp", tmp_path, console={"refuse": {"i202", "i205"}}, deliveries_interval_s=0.0
    ) as b:
        await b.start(POLL_S)
        await b.until(lambda: len(b.of(TankGaugeReading)) >= 6)
        assert b.sim.stats.refused == 2  # asked once each, then left alone
        assert not b.of(TankAlarms) and not b.of(GaugeDelivery)


@pytest.mark.parametrize("kind", KINDS)
async def test_gauge_offline_then_back_online(kind: Kind, tmp_path: Path) -> None:
    async with bench(kind, tmp_path, reply_timeout_s=0.05, retries=0, offline_after=2) as b:
        await b.start(POLL_S)
        await b.until(lambda: bool(b.of(TankGaugeReading)))
        b.sim.set_online(False)
        await b.until(lambda: bool(b.of(GaugeOffline)))
        assert not b.gauge.is_online
        assert "no reply" in b.of(GaugeOffline)[0].reason
        with pytest.raises(DeviceTimeout):
            await b.gauge.read_clock()
        readings = len(b.of(TankGaugeReading))
        b.sim.set_online(True)
        await b.until(lambda: len(b.of(GaugeOnline)) == 2)
        await b.until(lambda: len(b.of(TankGaugeReading)) > readings)
        kinds = [type(e).__name__ for e in b.events if isinstance(e, GaugeOnline | GaugeOffline)]
        assert kinds == ["GaugeOnline", "GaugeOffline", "GaugeOnline"]
        # Alarms are reported afresh after an outage.
        await b.until(lambda: len(b.of(TankAlarms)) == 4)


async def test_tcp_connection_dropped_reconnects(tmp_path: Path) -> None:
    async with bench("tcp", tmp_path) as b:
        await b.start(POLL_S)
        b.sim.drop_connections()
        await b.until(lambda: bool(b.of(GaugeOffline)))
        await b.until(lambda: b.gauge.is_online and b.sim.stats.connections == 2)
        assert len(await b.gauge.read_inventory()) == 2


async def test_pty_unplugged_and_replugged(tmp_path: Path) -> None:
    async with bench("pty", tmp_path) as b:
        await b.start(POLL_S)
        b.sim.unplug()
        await b.until(lambda: bool(b.of(GaugeOffline)))
        with pytest.raises(TransportError):
            await b.gauge.read_inventory()
        b.sim.replug()
        await b.until(lambda: b.gauge.is_online)
        assert len(await b.gauge.read_inventory()) == 2


# --------------------------------------------------------------------------- taps
Tapped = tuple[str, bytes, Any]


def _tap_into(frames: list[Tapped]) -> Callable[[str, bytes, Any, float], None]:
    def tap(direction: str, wire: bytes, item: Any, at: float) -> None:
        frames.append((direction, wire, item))

    return tap


async def test_taps_see_each_command_and_the_exact_bytes_of_each_reply(tmp_path: Path) -> None:
    async with bench("pty", tmp_path, retries=1) as b:
        await b.start()
        frames: list[Tapped] = []
        b.gauge.taps.append(_tap_into(frames))
        b.sim.inject_garbage(b"\x00noise")
        b.sim.corrupt_next_reply()
        assert len(await b.gauge.read_inventory()) == 2
        sent = [(wire, item) for direction, wire, item in frames if direction == "tx"]
        received = [(wire, item) for direction, wire, item in frames if direction == "rx"]
        # Sent twice: the first reply's checksum failed.
        assert sent == [(b"\x01i20100", codec.Command("i20100"))] * 2
        (noise, garbage), (bad_wire, bad), (good_wire, good) = received
        assert noise == b"\x00noise" and isinstance(garbage, codec.Malformed)
        assert garbage.kind == "garbage"
        assert isinstance(bad, codec.Malformed) and bad.kind == "bad_checksum"
        assert isinstance(good, codec.Inventory) and good_wire.endswith(b"\x03")
        assert codec.decode(good_wire) == (len(good_wire), good)  # the exact reply, whole
        assert bad_wire.startswith(b"\x01i20100") and bad_wire.endswith(b"\x03")
        assert codec.checksum(bad_wire[:-5]) != int(bad_wire[-5:-1], 16)  # as sent, corrupt


async def test_taps_see_a_reply_without_etx_and_the_esc_that_aborts_it(tmp_path: Path) -> None:
    async with bench("pty", tmp_path, retries=0, reply_timeout_s=0.1) as b:
        await b.start()
        frames: list[Tapped] = []
        b.gauge.taps.append(_tap_into(frames))
        b.sim.withhold_etx()
        with pytest.raises(DeviceTimeout):
            await b.gauge.read_alarms()
        (d1, command, _), (d2, tail, cut), (d3, esc, nothing) = frames
        assert (d1, command) == ("tx", b"\x01i20500")
        assert d2 == "rx" and tail.startswith(b"\x01i20500") and not tail.endswith(b"\x03")
        assert isinstance(cut, codec.Malformed) and cut.kind == "truncated"
        assert (d3, esc, nothing) == ("tx", b"\x1b", None)


async def test_a_failing_tap_never_disturbs_the_gauge(tmp_path: Path) -> None:
    async with bench("pty", tmp_path) as b:
        await b.start()
        frames: list[Tapped] = []

        def broken(direction: str, wire: bytes, item: Any, at: float) -> None:
            raise RuntimeError("a broken tap")

        b.gauge.taps.extend([broken, _tap_into(frames)])
        assert len(await b.gauge.read_inventory()) == 2
        assert [direction for direction, _, _ in frames] == ["tx", "rx"]
        assert b.gauge.counters.bad_crc == 0
