"""The DART line master against simulated pumps over real pty pairs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.base import (
    CommandRejected,
    DispenserEvent,
    DispenserStatus,
    NozzleReport,
    PumpOffline,
    PumpOnline,
    StatusReport,
)
from drivers.transport import SerialTransport
from drivers.wayne_dart import codec
from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.driver import DartLine, DartLineSettings, DartPumpSettings
from drivers.wayne_dart.sim import DartLineSimulator, SimPump

PRICES = {1: 789, 2: 750}  # 7.89 and 7.50 with 2 price decimals


class Harness:
    def __init__(self, sim: DartLineSimulator, line: DartLine, events: list[DispenserEvent]):
        self.sim = sim
        self.line = line
        self.events = events

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async def wait() -> None:
            while not predicate():
                await asyncio.sleep(0.005)

        await asyncio.wait_for(wait(), timeout)

    def of(self, kind: type, address: int | None = None) -> list[DispenserEvent]:
        return [
            e for e in self.events if isinstance(e, kind) and (address is None or e.pump == address)
        ]


def make_line(
    port: Path, addresses: list[int], events: list[DispenserEvent], **kw: object
) -> DartLine:
    settings = DartLineSettings(
        name="test",
        reply_timeout_s=0.03,
        backoff_initial_s=0.2,
        backoff_max_s=0.5,
        reopen_initial_s=0.05,
        reopen_max_s=0.2,
        **kw,  # type: ignore[arg-type]
    )
    pumps = [DartPumpSettings(address=a, nozzles=(1, 2)) for a in addresses]
    return DartLine(settings, pumps, SerialTransport(str(port), name="test"), events.append)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    addresses = [0x50, 0x51, 0x52]
    sim = DartLineSimulator([SimPump(a, PRICES, flow_rate_lps=20.0) for a in addresses])
    link = tmp_path / "dart"
    sim.serve_pty(link)
    events: list[DispenserEvent] = []
    line = make_line(link, addresses, events)
    task = asyncio.create_task(line.run())
    h = Harness(sim, line, events)
    await h.until(lambda: all(line.is_online(a) for a in addresses))
    yield h
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sim.stop()


async def test_every_pump_comes_online_and_reports_status(harness: Harness) -> None:
    assert {e.pump for e in harness.of(PumpOnline)} == {0x50, 0x51, 0x52}
    assert await harness.line.request_status(0x51) is DispenserStatus.RESET
    assert harness.line.counters.frames_sent > 0 and harness.line.counters.timeouts == 0


async def test_preset_sale_runs_to_the_exact_amount(harness: Harness) -> None:
    line, pump = harness.line, harness.sim.pump(0x50)
    pump.lift(1)
    await line.authorize(0x50, nozzles=(1,), preset_amount=Decimal("20.00"))
    pump.squeeze()
    await harness.until(lambda: pump.status is DartStatus.MAX_REACHED)
    info = await line.filling_info(0x50)
    assert info.amount == Decimal("20.00")
    assert info.volume == Decimal("2.53")  # 20.00 / 7.89 rounded to the display
    assert info.nozzle == 1 and info.unit_price == Decimal("7.89")
    assert await line.totals(0x50, 1) == (Decimal("2.53"), Decimal("20.00"))
    assert await line.reset(0x50) is DispenserStatus.RESET
    statuses = [e.status for e in harness.of(StatusReport, 0x50)]
    assert DispenserStatus.AUTHORIZED in statuses and DispenserStatus.MAX_REACHED in statuses
    lifts = [e for e in harness.of(NozzleReport, 0x50) if e.nozzle_out]
    assert lifts and lifts[0].nozzle == 1


async def test_authorize_refused_when_pump_not_reset(harness: Harness) -> None:
    line, pump = harness.line, harness.sim.pump(0x52)
    pump.lift(2)
    await line.authorize(0x52, nozzles=(2,), preset_volume=Decimal("1.00"))
    pump.squeeze()
    await harness.until(lambda: pump.status is DartStatus.MAX_REACHED)
    with pytest.raises(CommandRejected, match="authorize refused"):
        await line.authorize(0x52, preset_amount=Decimal("5.00"))


async def test_price_update_reaches_the_pump(harness: Harness) -> None:
    await harness.line.set_prices(0x51, [Decimal("8.12"), Decimal("7.66")])
    pump = harness.sim.pump(0x51)
    assert pump.price(1) == 812 and pump.price(2) == 766


async def test_lost_replies_are_retransmitted(harness: Harness) -> None:
    harness.sim.drop_next_replies(0x50, 2)
    assert await harness.line.request_status(0x50) is DispenserStatus.RESET
    assert harness.line.counters.retransmissions >= 1
    assert harness.line.is_online(0x50)


async def test_bad_crc_and_garbage_are_counted_and_skipped(harness: Harness) -> None:
    line = harness.line
    harness.sim.corrupt_next_reply(0x51)
    # The status comes back in a data frame whose CRC is broken on the wire: it is counted,
    # not ACKed, and the pump sends it again on the next poll.
    assert await line.request_status(0x51) is DispenserStatus.RESET
    assert line.counters.bad_crc >= 1
    harness.sim.inject_garbage(b"\x00\x13\x37garbage")
    await harness.until(lambda: line.counters.garbage_bytes + line.counters.malformed >= 2)
    assert await line.request_status(0x51) is DispenserStatus.RESET
    assert all(line.is_online(a) for a in (0x50, 0x51, 0x52))


async def test_silent_pump_goes_offline_without_stalling_the_others(harness: Harness) -> None:
    harness.sim.set_online(0x51, False)
    await harness.until(lambda: bool(harness.of(PumpOffline, 0x51)))
    before = harness.sim.pump(0x52).counters.polls
    await asyncio.sleep(0.5)
    # Backoff: the dead pump costs at most a few timeouts while the live one keeps being polled.
    assert harness.sim.pump(0x52).counters.polls - before > 50
    harness.sim.set_online(0x51, True)
    await harness.until(lambda: len(harness.of(PumpOnline, 0x51)) >= 2)


async def test_unplugged_adapter_is_reopened_when_it_comes_back(harness: Harness) -> None:
    harness.sim.unplug()
    await harness.until(lambda: len(harness.of(PumpOffline)) >= 3)
    harness.sim.replug()
    await harness.until(lambda: harness.line.counters.reopens >= 1)
    await harness.until(lambda: all(harness.line.is_online(a) for a in (0x50, 0x51, 0x52)))
    assert await harness.line.request_status(0x50) is DispenserStatus.RESET


class AckDropper(SerialTransport):
    """A transport that loses the master's next ACK on the wire, like a noise burst would."""

    drop = 0

    async def write(self, data: bytes) -> None:
        _, frame = codec.decode(data)
        if self.drop and isinstance(frame, codec.Frame) and frame.kind is codec.FrameKind.ACK:
            self.drop -= 1
            return
        await super().write(data)


async def test_repeated_pump_frame_is_acked_but_dropped(tmp_path: Path) -> None:
    sim = DartLineSimulator([SimPump(0x50, PRICES)])
    sim.serve_pty(tmp_path / "dart")
    events: list[DispenserEvent] = []
    line = make_line(tmp_path / "dart", [0x50], events)
    transport = AckDropper(str(tmp_path / "dart"), name="test")
    line.transport = transport
    task = asyncio.create_task(line.run())
    try:
        h = Harness(sim, line, events)
        await h.until(lambda: line.is_online(0x50))
        await asyncio.sleep(0.05)
        transport.drop = 1
        sim.pump(0x50).lift(1)  # the pump reports the lift; our ACK of it is lost
        await h.until(lambda: line.counters.duplicates_dropped >= 1)
        assert len([e for e in events if isinstance(e, NozzleReport) and e.nozzle_out]) == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        sim.stop()


async def test_truncated_frame_on_the_line_is_counted_and_skipped(harness: Harness) -> None:
    line = harness.line
    good = codec.encode(codec.data(0x51, 3, codec.PumpStatus(1)))
    harness.sim.inject_garbage(good[:5])  # a data frame cut off mid-way, then the real reply
    await harness.until(lambda: line.counters.malformed + line.counters.bad_crc >= 1)
    assert await line.request_status(0x51) is DispenserStatus.RESET
    assert line.counters.duplicates_dropped == 0
