"""The DART pump simulator over a real pty, driven by a tiny master built on the codec."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from drivers.wayne_dart import codec
from drivers.wayne_dart.codec import DCC, DartStatus, Frame, FrameKind, Malformed
from drivers.wayne_dart.sim import (
    Customer,
    DartLineSimulator,
    RandomCustomers,
    SimPump,
    hang_up_mid_fill,
    normal_fill,
    preset_fill,
    walk_away,
    wrong_nozzle,
)

PRICES = {1: 179, 2: 165}  # 1.79 and 1.65 with 2 price decimals
SILENCE_S = 0.1


class FakeClock:
    """The pumps' flow clock, moved by the test instead of by time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Master:
    """The controller end of the line: frames out, frames in, nothing else."""

    def __init__(self, port: Path | str) -> None:
        self.fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.rx = bytearray()
        self.seq: dict[int, int] = {}

    def close(self) -> None:
        os.close(self.fd)

    def send(self, frame: Frame) -> None:
        self.send_raw(codec.encode(frame))

    def send_raw(self, wire: bytes) -> None:
        os.write(self.fd, wire)

    def receive(self, timeout: float = 1.0) -> Frame | Malformed | None:
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            if self.rx:
                used, item = codec.decode(bytes(self.rx))
                if used:
                    del self.rx[:used]
                    if item is not None:
                        return item
                    continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if poller.poll(max(1, int(remaining * 1000))):
                self.rx += os.read(self.fd, 4096)

    def frame(self, timeout: float = 1.0) -> Frame:
        item = self.receive(timeout)
        assert isinstance(item, Frame), f"expected a frame, got {item!r}"
        return item

    def transact(self, request: Frame, timeout: float = 1.0) -> Frame | Malformed | None:
        self.send(request)
        return self.receive(timeout)

    def next_seq(self, address: int) -> int:
        self.seq[address] = (self.seq.get(address, 0) + 1) % 16
        return self.seq[address]

    def command(self, address: int, *items: Any) -> None:
        """Send one data frame and insist on its ACK."""
        seq = self.next_seq(address)
        self.send(codec.data(address, seq, *items))
        reply = self.frame()
        assert (reply.address, reply.kind, reply.seq) == (address, FrameKind.ACK, seq)

    def poll(self, address: int) -> list[Any]:
        """Poll once; ACK a data answer and return its typed replies ([] for EOT)."""
        reply = self.frame_from(codec.poll(address))
        assert reply.address == address
        if reply.kind is FrameKind.EOT:
            return []
        assert reply.kind is FrameKind.DATA, reply
        self.send(codec.ack(address, reply.seq))
        return [codec.parse_reply(tx) for tx in reply.transactions]

    def frame_from(self, request: Frame) -> Frame:
        self.send(request)
        return self.frame()

    def status(self, address: int) -> DartStatus:
        self.command(address, codec.Command(DCC.RETURN_STATUS))
        statuses = [r.status for r in self.poll(address) if isinstance(r, codec.PumpStatus)]
        assert len(statuses) == 1
        return DartStatus(statuses[0])

    def totals(self, address: int, nozzle: int) -> codec.TotalCounters:
        self.command(address, codec.RequestTotals(nozzle))
        (totals,) = [r for r in self.poll(address) if isinstance(r, codec.TotalCounters)]
        return totals

    def silent(self, request: Frame) -> bool:
        self.send(request)
        return self.receive(SILENCE_S) is None


def of(kind: type, replies: list[Any]) -> list[Any]:
    return [r for r in replies if isinstance(r, kind)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[DartLineSimulator]:
    pumps = [
        SimPump(0x50, PRICES, totals={1: (100_000, 179_000)}, clock=clock),
        SimPump(0x51, {1: 199}, clock=clock),
    ]
    with DartLineSimulator(pumps) as simulator:
        yield simulator


@pytest.fixture
def port(sim: DartLineSimulator, tmp_path: Path) -> Path:
    link = tmp_path / "dev" / "ttyDART"
    link.parent.mkdir()
    sim.serve_pty(link)
    return link


@pytest.fixture
def master(port: Path) -> Iterator[Master]:
    m = Master(port)
    yield m
    m.close()


def authorize(master: Master, address: int, *items: Any) -> None:
    master.command(address, *items, codec.Command(DCC.AUTHORIZE))
    assert of(codec.PumpStatus, master.poll(address)) == [codec.PumpStatus(DartStatus.AUTHORIZED)]


def release(master: Master, address: int, *items: Any) -> None:
    """Authorize for a customer who may already be squeezing (then the pump says FILLING)."""
    master.command(address, *items, codec.Command(DCC.AUTHORIZE))
    statuses = [r.status for r in of(codec.PumpStatus, master.poll(address))]
    assert statuses in ([DartStatus.AUTHORIZED], [DartStatus.AUTHORIZED, DartStatus.FILLING])


# ------------------------------------------------------------------ line layer
def test_poll_with_nothing_to_say_answers_eot(master: Master) -> None:
    reply = master.frame_from(codec.poll(0x50))
    assert (reply.address, reply.kind, reply.seq) == (0x50, FrameKind.EOT, 0)


def test_return_status_is_answered_with_dc1_on_the_next_poll(master: Master) -> None:
    master.command(0x50, codec.Command(DCC.RETURN_STATUS))
    reply = master.frame_from(codec.poll(0x50))
    assert reply.kind is FrameKind.DATA and reply.seq == 1
    assert [codec.parse_reply(tx) for tx in reply.transactions] == [
        codec.PumpStatus(DartStatus.RESET)
    ]
    master.send(codec.ack(0x50, reply.seq))
    eot = master.frame_from(codec.poll(0x50))
    assert (eot.kind, eot.seq) == (FrameKind.EOT, 1)


def test_unacked_data_frame_is_sent_again_with_the_same_seq(
    master: Master, sim: DartLineSimulator
) -> None:
    master.command(0x50, codec.Command(DCC.RETURN_STATUS))
    first = master.frame_from(codec.poll(0x50))
    again = master.frame_from(codec.poll(0x50))  # no ACK in between
    assert again == first
    # A lost answer counts as unacknowledged too.
    sim.drop_next_replies(0x50, 1)
    assert master.silent(codec.poll(0x50))
    assert master.frame_from(codec.poll(0x50)) == first
    # ACKPOLL acknowledges and polls in one: nothing left to say.
    eot = master.frame_from(codec.ackpoll(0x50, first.seq))
    assert (eot.kind, eot.seq) == (FrameKind.EOT, first.seq)
    assert sim.pump(0x50).counters.retransmissions == 3


def test_ack_with_another_seq_does_not_clear_the_pending_frame(master: Master) -> None:
    master.command(0x50, codec.Command(DCC.RETURN_STATUS))
    first = master.frame_from(codec.poll(0x50))
    master.send(codec.ack(0x50, (first.seq + 5) % 16))
    assert master.frame_from(codec.poll(0x50)) == first


def test_consecutive_data_frames_count_the_seq_up(master: Master) -> None:
    seqs = []
    for _ in range(17):
        master.command(0x50, codec.Command(DCC.RETURN_STATUS))
        reply = master.frame_from(codec.poll(0x50))
        master.send(codec.ack(0x50, reply.seq))
        seqs.append(reply.seq)
    assert seqs == [*range(1, 16), 0, 1]


def test_repeated_master_frame_is_acked_but_executed_once(
    master: Master, sim: DartLineSimulator
) -> None:
    frame = codec.data(0x50, 3, codec.RequestTotals(1))
    sim.drop_next_replies(0x50, 1)  # our ACK is lost, so the master sends the frame again
    assert master.silent(frame)
    reply = master.frame_from(frame)
    assert (reply.kind, reply.seq) == (FrameKind.ACK, 3)
    assert len(of(codec.TotalCounters, master.poll(0x50))) == 1
    counters = sim.pump(0x50).counters
    assert (counters.executed, counters.duplicates) == (1, 1)


def test_bad_crc_is_naked_and_not_executed(master: Master, sim: DartLineSimulator) -> None:
    frame = codec.data(0x50, 4, codec.Command(DCC.SWITCH_OFF))
    wire = bytearray(codec.encode(frame))
    wire[-4] ^= 0x01  # CRC high byte (no escape in this frame)
    master.send_raw(bytes(wire))
    reply = master.frame()
    assert (reply.address, reply.kind, reply.seq) == (0x50, FrameKind.NAK, 4)
    assert sim.pump(0x50).status is DartStatus.RESET
    # The retransmission with the same seq is new to the pump: it is executed.
    assert master.frame_from(frame).kind is FrameKind.ACK
    assert sim.pump(0x50).status is DartStatus.SWITCHED_OFF


def test_corrupted_reply_fails_its_crc_and_comes_again_intact(
    master: Master, sim: DartLineSimulator
) -> None:
    master.command(0x50, codec.Command(DCC.RETURN_STATUS))
    sim.corrupt_next_reply(0x50)
    master.send(codec.poll(0x50))
    bad = master.receive()
    assert isinstance(bad, Malformed) and bad.kind == "bad_crc"
    good = master.frame_from(codec.poll(0x50))
    assert good.kind is FrameKind.DATA and good.seq == bad.seq
    assert sim.stats.replies_corrupted == 1


def test_injected_garbage_precedes_the_next_reply(master: Master, sim: DartLineSimulator) -> None:
    sim.inject_garbage(b"\x00\x13\x37noise")
    master.send(codec.poll(0x51))
    items: list[Frame | Malformed | None] = [master.receive()]
    while isinstance(items[-1], Malformed):
        items.append(master.receive())
    first, last = items[0], items[-1]
    assert isinstance(first, Malformed) and first.kind == "garbage"
    assert isinstance(last, Frame) and (last.address, last.kind) == (0x51, FrameKind.EOT)
    assert b"".join(i.raw for i in items if isinstance(i, Malformed)) == b"\x00\x13\x37noise"


def test_pumps_answer_only_their_own_address(master: Master, sim: DartLineSimulator) -> None:
    assert master.frame_from(codec.poll(0x51)).address == 0x51
    assert master.frame_from(codec.poll(0x50)).address == 0x50
    assert master.silent(codec.poll(0x52))
    master.command(0x51, codec.Command(DCC.SWITCH_OFF))
    assert sim.pump(0x51).status is DartStatus.SWITCHED_OFF
    assert sim.pump(0x50).status is DartStatus.RESET
    assert master.poll(0x50) == []


def test_offline_pump_is_silent_and_others_still_answer(
    master: Master, sim: DartLineSimulator
) -> None:
    sim.set_online(0x50, False)
    assert master.silent(codec.poll(0x50))
    assert master.silent(codec.data(0x50, 1, codec.Command(DCC.SWITCH_OFF)))
    assert master.frame_from(codec.poll(0x51)).kind is FrameKind.EOT
    sim.set_online(0x50, True)
    assert sim.pump(0x50).status is DartStatus.RESET  # it heard nothing while offline
    assert master.frame_from(codec.poll(0x50)).kind is FrameKind.EOT


def test_unplug_and_replug_the_line(master: Master, sim: DartLineSimulator, port: Path) -> None:
    master.command(0x50, codec.Command(DCC.SWITCH_OFF))
    sim.unplug()
    assert not port.is_symlink()
    with contextlib.suppress(OSError):  # EIO is the other way a hung-up tty says it
        assert os.read(master.fd, 16) == b""
    sim.replug()
    fresh = Master(port)
    try:
        assert fresh.frame_from(codec.poll(0x51)).kind is FrameKind.EOT
        assert fresh.status(0x50) is DartStatus.SWITCHED_OFF  # the pump itself kept its state
    finally:
        fresh.close()


def test_line_timing_never_delivers_a_reply_before_its_floor(tmp_path: Path) -> None:
    baud, delay = 9600, 0.004
    with DartLineSimulator([SimPump(0x50, PRICES)], baud=baud, reply_delay_s=delay) as sim:
        sim.serve_pty(tmp_path / "dart")
        master = Master(tmp_path / "dart")
        try:
            for _ in range(5):
                started = time.perf_counter()
                reply = master.frame_from(codec.poll(0x50))
                floor = (3 + 3) * 11 / baud + delay  # POLL and EOT are 3 bytes each, 8O1
                assert time.perf_counter() - started >= floor
                assert reply.kind is FrameKind.EOT
        finally:
            master.close()


# ------------------------------------------------------------------ application layer
def test_full_fill_stops_exactly_at_the_preset_amount(
    master: Master, sim: DartLineSimulator, clock: FakeClock
) -> None:
    pump = sim.pump(0x50)
    before = master.totals(0x50, 1)
    assert (before.volume, before.amount1, before.amount2) == (100_000, 179_000, 0)
    master.command(0x50, codec.Command(DCC.RESET))
    assert of(codec.PumpStatus, master.poll(0x50)) == [codec.PumpStatus(DartStatus.RESET)]
    authorize(master, 0x50, codec.AllowedNozzles((1,)), codec.PresetAmount(1000))

    pump.lift(1)
    assert master.poll(0x50) == [codec.NozzleStatus(179, 1, True)]
    pump.squeeze()
    assert of(codec.PumpStatus, master.poll(0x50)) == [codec.PumpStatus(DartStatus.FILLING)]

    clock.advance(1.0)
    clock.advance(1.0)  # two steps, one poll: only the fresh DC2 is sent
    replies = master.poll(0x50)
    assert of(codec.FilledVolumeAmount, replies) == [codec.FilledVolumeAmount(120, 215)]

    clock.advance(60.0)  # far beyond the preset: the pump stops exactly at it
    replies = master.poll(0x50)
    # 10.00 / 1.79 = 5.5866 L, shown as 5.59
    assert of(codec.FilledVolumeAmount, replies) == [codec.FilledVolumeAmount(559, 1000)]
    assert of(codec.PumpStatus, replies) == [codec.PumpStatus(DartStatus.MAX_REACHED)]
    assert (pump.volume, pump.amount) == (559, 1000)

    master.command(0x50, codec.Command(DCC.RETURN_FILLING_INFORMATION))
    replies = master.poll(0x50)
    assert of(codec.FilledVolumeAmount, replies) == [codec.FilledVolumeAmount(559, 1000)]
    assert of(codec.NozzleStatus, replies) == [codec.NozzleStatus(179, 1, True)]

    after = master.totals(0x50, 1)
    assert (after.volume - before.volume, after.amount1 - before.amount1) == (559, 1000)
    assert master.totals(0x50, 2).volume == 0

    pump.hang_up()
    assert master.poll(0x50) == [codec.NozzleStatus(179, 1, False)]
    assert master.status(0x50) is DartStatus.MAX_REACHED
    # After RESET the last sale stays readable until the next AUTHORIZE.
    master.command(0x50, codec.Command(DCC.RESET), codec.Command(DCC.RETURN_FILLING_INFORMATION))
    replies = master.poll(0x50)
    assert of(codec.PumpStatus, replies) == [codec.PumpStatus(DartStatus.RESET)]
    assert of(codec.FilledVolumeAmount, replies) == [codec.FilledVolumeAmount(559, 1000)]
    authorize(master, 0x50)
    assert (pump.volume, pump.amount) == (0, 0)


def test_filling_information_names_the_nozzle_of_the_fill(
    master: Master, sim: DartLineSimulator, clock: FakeClock
) -> None:
    pump = sim.pump(0x50)
    authorize(master, 0x50)
    pump.lift(2)
    pump.squeeze()
    clock.advance(1.0)
    pump.hang_up()
    pump.lift(1)  # the next customer, before the controller asked about the sale
    master.poll(0x50)
    master.command(0x50, codec.Command(DCC.RETURN_FILLING_INFORMATION))
    replies = master.poll(0x50)
    assert of(codec.FilledVolumeAmount, replies) == [codec.FilledVolumeAmount(60, 99)]
    assert of(codec.NozzleStatus, replies) == [codec.NozzleStatus(165, 2, False)]


def test_volume_preset_stops_exactly_at_the_volume(
    master: Master, sim: DartLineSimulator, clock: FakeClock
) -> None:
    pump = sim.pump(0x50)
    authorize(master, 0x50, codec.PresetVolume(500))
    pump.lift(2)
    pump.squeeze()
    clock.advance(30.0)
    assert pump.status is DartStatus.MAX_REACHED
    assert (pump.volume, pump.amount) == (500, 825)  # 5.00 L x 1.65
    assert pump.totals(2) == (500, 825)
    clock.advance(30.0)
    assert pump.totals(2) == (500, 825)  # no flow after the preset, trigger or not


def test_preset_is_used_by_one_authorization_only(
    master: Master, sim: DartLineSimulator, clock: FakeClock
) -> None:
    pump = sim.pump(0x51)
    authorize(master, 0x51, codec.PresetVolume(100))
    pump.lift(1)
    pump.squeeze()
    clock.advance(10.0)
    pump.hang_up()
    # Both changes happened between two polls; both are reported, in order.
    statuses = [r.status for r in of(codec.PumpStatus, master.poll(0x51))]
    assert statuses == [DartStatus.FILLING, DartStatus.MAX_REACHED]
    master.command(0x51, codec.Command(DCC.RESET))
    assert of(codec.PumpStatus, master.poll(0x51)) == [codec.PumpStatus(DartStatus.RESET)]
    authorize(master, 0x51)
    pump.lift(1)
    pump.squeeze()
    clock.advance(10.0)
    assert (pump.status, pump.volume) == (DartStatus.FILLING, 600)


def test_hang_up_mid_fill_completes_the_fill(
    master: Master, sim: DartLineSimulator, clock: FakeClock
) -> None:
    pump = sim.pump(0x51)
    authorize(master, 0x51)  # no CD2: any nozzle will do
    pump.lift(1)
    pump.squeeze()
    clock.advance(2.5)
    pump.hang_up()
    replies = master.poll(0x51)
    assert codec.PumpStatus(DartStatus.FILLING_COMPLETED) in replies
    assert of(codec.FilledVolumeAmount, replies) == [codec.FilledVolumeAmount(150, 299)]
    assert pump.totals(1) == (150, 299)
    clock.advance(5.0)
    assert pump.totals(1) == (150, 299)


def test_released_trigger_stops_the_flow_but_not_the_fill(
    master: Master, sim: DartLineSimulator, clock: FakeClock
) -> None:
    pump = sim.pump(0x51)
    authorize(master, 0x51)
    pump.lift(1)
    pump.squeeze()
    clock.advance(1.0)
    pump.release()
    clock.advance(10.0)
    assert (pump.status, pump.volume) == (DartStatus.FILLING, 60)
    pump.squeeze()
    clock.advance(1.0)
    assert pump.volume == 120


def test_the_hand_lets_go_exactly_at_its_mark_and_the_fill_goes_on(
    master: Master, sim: DartLineSimulator, clock: FakeClock
) -> None:
    pump = sim.pump(0x50)
    authorize(master, 0x50)
    pump.lift(1)
    pump.squeeze(stop_amount=1000)  # 10.00 at 1.79: 5.59 L, however coarse the clock
    assert pump.seconds_until() == pytest.approx(5.59 / 0.6)
    clock.advance(60.0)
    assert not pump.squeezed
    assert (pump.status, pump.volume, pump.amount) == (DartStatus.FILLING, 559, 1000)
    assert pump.totals(1) == (100_000 + 559, 179_000 + 1000)
    pump.squeeze(stop_volume=600)  # on with the same fill, to a volume this time
    clock.advance(60.0)
    assert (pump.squeezed, pump.volume, pump.amount) == (False, 600, 1074)
    pump.hang_up()
    assert pump.status is DartStatus.FILLING_COMPLETED


def test_a_preset_before_the_hand_ends_the_fill_there(
    master: Master, sim: DartLineSimulator, clock: FakeClock
) -> None:
    pump = sim.pump(0x50)
    authorize(master, 0x50, codec.PresetVolume(200))
    pump.lift(2)
    pump.squeeze(stop_volume=300)
    clock.advance(60.0)
    assert (pump.status, pump.volume) == (DartStatus.MAX_REACHED, 200)
    pump.set_flow_rate(2.0)  # a faster pump from now on
    assert pump.flow_rate_lps == 2.0
    with pytest.raises(ValueError):
        pump.set_flow_rate(0.0)


def test_wrong_nozzle_gives_no_fuel(
    master: Master, sim: DartLineSimulator, clock: FakeClock
) -> None:
    pump = sim.pump(0x50)
    authorize(master, 0x50, codec.AllowedNozzles((2,)))
    pump.lift(1)
    pump.squeeze()
    clock.advance(10.0)
    assert (pump.status, pump.volume) == (DartStatus.AUTHORIZED, 0)
    assert pump.totals(1) == (100_000, 179_000)
    pump.hang_up()
    assert pump.status is DartStatus.AUTHORIZED  # the controller times the authorization out
    master.command(0x50, codec.Command(DCC.STOP))
    assert of(codec.PumpStatus, master.poll(0x50))[-1] == codec.PumpStatus(DartStatus.RESET)


def test_authorize_is_refused_unless_reset(
    master: Master, sim: DartLineSimulator, clock: FakeClock
) -> None:
    pump = sim.pump(0x51)
    authorize(master, 0x51)
    pump.lift(1)
    pump.squeeze()
    clock.advance(1.0)
    pump.hang_up()
    master.poll(0x51)
    master.command(0x51, codec.Command(DCC.AUTHORIZE))
    assert of(codec.PumpStatus, master.poll(0x51)) == [
        codec.PumpStatus(DartStatus.FILLING_COMPLETED)
    ]
    pump.lift(1)
    pump.squeeze()
    clock.advance(1.0)
    assert (pump.status, pump.volume) == (DartStatus.FILLING_COMPLETED, 60)
    pump.hang_up()
    master.command(0x51, codec.Command(DCC.SWITCH_OFF), codec.Command(DCC.AUTHORIZE))
    assert of(codec.PumpStatus, master.poll(0x51)) == [codec.PumpStatus(DartStatus.SWITCHED_OFF)]


def test_suspend_resume_and_stop(master: Master, sim: DartLineSimulator, clock: FakeClock) -> None:
    pump = sim.pump(0x51)
    authorize(master, 0x51)
    pump.lift(1)
    pump.squeeze()
    clock.advance(1.0)
    master.command(0x51, codec.Command(DCC.SUSPEND))
    clock.advance(5.0)
    assert (pump.status, pump.volume) == (DartStatus.SUSPENDED, 60)
    master.command(0x51, codec.Command(DCC.RESUME))
    clock.advance(1.0)
    assert (pump.status, pump.volume) == (DartStatus.FILLING, 120)
    master.command(0x51, codec.Command(DCC.STOP))
    assert pump.status is DartStatus.FILLING_COMPLETED
    assert pump.totals(1) == (120, 239)


def test_prices_change_only_outside_a_fill(
    master: Master, sim: DartLineSimulator, clock: FakeClock
) -> None:
    pump = sim.pump(0x50)
    master.command(0x50, codec.PriceUpdate((189, 175)))
    assert (pump.price(1), pump.price(2)) == (189, 175)
    authorize(master, 0x50)
    pump.lift(2)
    pump.squeeze()
    master.command(0x50, codec.PriceUpdate((100, 100)))
    clock.advance(1.0)
    assert (pump.price(2), pump.amount) == (175, 105)


def test_identity_and_parameters_are_reported(master: Master) -> None:
    master.command(
        0x50,
        codec.Command(DCC.RETURN_PUMP_IDENTITY),
        codec.Command(DCC.RETURN_PUMP_PARAMETERS),
    )
    replies = master.poll(0x50)
    assert len(of(codec.PumpIdentity, replies)) == 1
    assert len(of(codec.PumpParameters, replies)) == 1


# ------------------------------------------------------------------ customers
FAST = 50.0  # litres per second, so scripted customers finish in milliseconds


@pytest.fixture
def fast_sim(tmp_path: Path) -> Iterator[tuple[DartLineSimulator, Master]]:
    pumps = [SimPump(0x50, PRICES, flow_rate_lps=FAST)]
    with DartLineSimulator(pumps) as simulator:
        simulator.serve_pty(tmp_path / "dart")
        m = Master(tmp_path / "dart")
        yield simulator, m
        m.close()


async def _wait_lifted(pump: SimPump) -> None:
    """A scripted customer lifts before its first await: one turn of the loop is enough."""
    await asyncio.sleep(0)
    assert pump.nozzle_out is not None


async def test_customer_fills_to_an_amount(fast_sim: tuple[DartLineSimulator, Master]) -> None:
    sim, master = fast_sim
    pump = sim.pump(0x50)
    visit = asyncio.create_task(Customer(pump, normal_fill(1, Decimal("50.00"), react_s=0)).run())
    await _wait_lifted(pump)
    await asyncio.to_thread(release, master, 0x50)
    result = await visit
    assert result.authorized and result.status is DartStatus.FILLING_COMPLETED
    assert result.amount >= 5000
    assert pump.nozzle_out is None


async def test_customer_fills_until_the_preset_stops_it(
    fast_sim: tuple[DartLineSimulator, Master],
) -> None:
    sim, master = fast_sim
    pump = sim.pump(0x50)
    visit = asyncio.create_task(Customer(pump, preset_fill(2, react_s=0)).run())
    await _wait_lifted(pump)
    await asyncio.to_thread(release, master, 0x50, codec.PresetAmount(3000))
    result = await visit
    assert (result.status, result.amount, result.volume) == (DartStatus.MAX_REACHED, 3000, 1818)


async def test_customer_walking_away_takes_no_fuel(
    fast_sim: tuple[DartLineSimulator, Master],
) -> None:
    sim, master = fast_sim
    pump = sim.pump(0x50)
    visit = asyncio.create_task(Customer(pump, walk_away(1, linger_s=0.01)).run())
    await _wait_lifted(pump)
    await asyncio.to_thread(release, master, 0x50)
    result = await visit
    assert (result.authorized, result.status, result.volume) == (True, DartStatus.AUTHORIZED, 0)


async def test_customer_with_the_wrong_nozzle_takes_no_fuel(
    fast_sim: tuple[DartLineSimulator, Master],
) -> None:
    sim, master = fast_sim
    pump = sim.pump(0x50)
    visit = asyncio.create_task(Customer(pump, wrong_nozzle(1, react_s=0, linger_s=0.02)).run())
    await _wait_lifted(pump)
    await asyncio.to_thread(release, master, 0x50, codec.AllowedNozzles((2,)))
    result = await visit
    assert (result.status, result.volume) == (DartStatus.AUTHORIZED, 0)
    assert pump.totals(1) == (0, 0)


async def test_customer_hanging_up_mid_fill(fast_sim: tuple[DartLineSimulator, Master]) -> None:
    sim, master = fast_sim
    pump = sim.pump(0x50)
    visit = asyncio.create_task(Customer(pump, hang_up_mid_fill(1, 0.05, react_s=0)).run())
    await _wait_lifted(pump)
    await asyncio.to_thread(release, master, 0x50)
    result = await visit
    assert result.status is DartStatus.FILLING_COMPLETED and result.volume > 0
    assert pump.totals(1) == (result.volume, result.amount)


async def test_customer_never_released_gives_up_and_hangs_up(
    fast_sim: tuple[DartLineSimulator, Master],
) -> None:
    sim, _ = fast_sim
    pump = sim.pump(0x50)
    result = await Customer(pump, normal_fill(1, Decimal("10"), wait_s=0.05)).run()
    assert (result.authorized, result.status, result.volume) == (False, DartStatus.RESET, 0)
    assert pump.nozzle_out is None


async def test_random_customers_come_and_leave_cleanly(
    fast_sim: tuple[DartLineSimulator, Master],
) -> None:
    sim, _ = fast_sim
    pump = sim.pump(0x50)
    customers = asyncio.create_task(RandomCustomers(sim, mean_interval_s=0.005, seed=7).run())
    async with asyncio.timeout(2.0):
        # A lift is no status change, so there is no event to wait on: look now and then.
        while pump.nozzle_out is None:
            await asyncio.sleep(0.001)
    customers.cancel()
    with pytest.raises(asyncio.CancelledError):
        await customers
    assert pump.nozzle_out is None  # a cancelled customer still puts the nozzle back


def test_faults_pending_counts_what_has_not_struck_yet(
    master: Master, sim: DartLineSimulator
) -> None:
    """The chaos harness asks before adding noise at a pump (tests/soakkit.py line_faults)."""
    assert sim.faults_pending(0x50) == 0
    sim.drop_next_replies(0x50, 2)
    sim.corrupt_next_reply(0x50)
    assert sim.faults_pending(0x50) == 3 and sim.faults_pending(0x51) == 0
    assert master.silent(codec.poll(0x50))
    assert sim.faults_pending(0x50) == 2
    assert master.silent(codec.poll(0x50))
    assert sim.faults_pending(0x50) == 1  # the corruption waits for a data reply


def test_faults_not_struck_yet_are_withdrawn_when_the_noise_ends(
    master: Master, sim: DartLineSimulator
) -> None:
    """The harness's line noise ends with `withdraw_faults`: answers still to be lost would
    keep a pump polled at its retry pace away long after the noise (make chaos, seed
    1042514703: an idle pump was still away when the next customer came)."""
    sim.drop_next_replies(0x50, 3)
    sim.corrupt_next_reply(0x51)
    assert sim.withdraw_faults() == 4
    assert sim.faults_pending(0x50) == sim.faults_pending(0x51) == 0
    assert not master.silent(codec.poll(0x50))  # answered again at once
    assert sim.withdraw_faults() == 0
