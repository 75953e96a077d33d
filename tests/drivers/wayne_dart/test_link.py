"""The DART link layer without a wire: exchanges driven by hand against a simulated pump's
own line logic (SimPump.handle), then the whole line master over the in-memory transport
with replies split, lost and damaged. No pty, no sleeps: each test takes milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from drivers.base import (
    DeviceTimeout,
    DispenserEvent,
    DispenserStatus,
    LineCounters,
    NozzleReport,
    PumpOnline,
)
from drivers.memory_transport import MemoryTransport
from drivers.wayne_dart import codec
from drivers.wayne_dart.codec import DCC, DartStatus, Frame, FrameKind
from drivers.wayne_dart.driver import DartLine, DartLineSettings, DartPumpSettings
from drivers.wayne_dart.link import (
    Ack,
    Exchange,
    FrameReader,
    Liveness,
    PumpLink,
    Report,
    Transact,
)
from drivers.wayne_dart.sim import SimPump

PRICES = {1: 789, 2: 750}
Answer = Callable[[Frame], "Frame | None"]


def drive(exchange: Exchange, answer: Answer) -> tuple[list[object], Any]:
    """Run an exchange to its end: each Transact is answered by `answer`, each Ack is
    handed to it too (a pump hears it); the outputs, and the exchange's result."""
    outputs: list[object] = []
    reply: Frame | None = None
    try:
        while True:
            output = exchange.send(reply)
            reply = None
            outputs.append(output)
            if isinstance(output, Transact):
                reply = answer(output.frame)
            elif isinstance(output, Ack):
                answer(output.frame)
    except StopIteration as done:
        return outputs, done.value


def pump_answer(pump: SimPump) -> Answer:
    def answer(frame: Frame) -> Frame | None:
        return pump.handle(frame)

    return answer


def sent(outputs: list[object]) -> list[Frame]:
    return [o.frame for o in outputs if isinstance(o, Transact)]


def test_the_reader_cuts_bytes_into_frames_however_they_arrive() -> None:
    frames = [codec.eot(0x50, 3), codec.ack(0x51, 4)]
    wire = b"\x00\x01" + b"".join(codec.encode(f) for f in frames)
    reader = FrameReader()
    items = []
    for byte in wire:  # one byte at a time
        reader.receive_data(bytes((byte,)))
        while (decoded := reader.next_item()) is not None:
            items.append(decoded[1])
    garbage = [i for i in items if isinstance(i, codec.Malformed)]
    assert all(g.kind == "garbage" for g in garbage) and sum(len(g.raw) for g in garbage) == 2
    assert [i for i in items if isinstance(i, Frame)] == frames


def test_a_poll_answered_with_eot_or_silence() -> None:
    link = PumpLink(0x50, LineCounters(), retries=3)
    outputs, _ = drive(link.poll(), pump_answer(SimPump(0x50, PRICES)))
    assert outputs == [Transact(codec.poll(0x50)), Liveness.ANSWERED]
    outputs, _ = drive(link.poll(), lambda frame: None)
    assert outputs == [Transact(codec.poll(0x50)), Liveness.MISSED]


def test_a_data_frame_is_acked_and_reported_once_even_when_repeated() -> None:
    counters = LineCounters()
    link = PumpLink(0x50, counters, retries=3)
    pump = SimPump(0x50, PRICES)
    pump.lift(1)
    first = pump.handle(codec.poll(0x50))
    assert first is not None and first.kind is FrameKind.DATA
    again = pump.handle(codec.poll(0x50))  # our ACK was lost: the pump sends it again
    assert again == first
    outputs, _ = drive(link.poll(), lambda frame: first)
    reports = [o for o in outputs if isinstance(o, Report)]
    assert len(reports) == 1 and any(isinstance(i, codec.NozzleStatus) for i in reports[0].items)
    outputs, _ = drive(link.poll(), lambda frame: again)
    assert Ack(codec.ack(0x50, first.seq)) in outputs
    assert not [o for o in outputs if isinstance(o, Report)]
    assert counters.duplicates_dropped == 1


def test_the_first_command_pins_the_sequence_numbers_first() -> None:
    counters = LineCounters()
    link = PumpLink(0x50, counters, retries=3)
    pump = SimPump(0x50, PRICES)
    items = (codec.Command(DCC.STOP),)
    outputs, result = drive(link.command(items, None, "stop", "l/0x50"), pump_answer(pump))
    frames = sent(outputs)
    assert [f.seq for f in frames] == [1, 2]
    assert codec.parse_command(frames[0].transactions[0]) == codec.Command(DCC.RETURN_STATUS)
    assert link.synced and counters.resyncs == 1 and result is None
    # Synced: the next command goes straight out under the next number.
    outputs, _ = drive(link.command(items, None, "stop", "l/0x50"), pump_answer(pump))
    assert [f.seq for f in sent(outputs)] == [3]


def test_a_pump_holding_our_next_number_is_resynced_past_it() -> None:
    """A pump that silently drops a frame whose TX# equals its last: after a restart of ours
    it may hold 1, the very number we start with. The silence, and the POLL it still
    answers, make the link take another number; that one is acknowledged."""
    counters = LineCounters()
    link = PumpLink(0x50, counters, retries=3)
    pump = SimPump(0x50, PRICES, duplicates="silent")
    pump.remember_master_seq(1)
    outputs, _ = drive(
        link.command((codec.Command(DCC.STOP),), None, "stop", "d"), pump_answer(pump)
    )
    kinds = [(f.kind, f.seq) for f in sent(outputs)]
    assert kinds == [
        (FrameKind.DATA, 1),  # dropped as a repeat, without a word
        (FrameKind.POLL, 0),  # it answers a POLL: it is there
        (FrameKind.DATA, 2),  # a fresh number: acknowledged, synced
        (FrameKind.DATA, 3),  # the command itself
    ]
    assert link.synced and pump.counters.duplicates == 1


def test_a_command_whose_ack_was_lost_is_resent_and_not_carried_out_twice() -> None:
    counters = LineCounters()
    link = PumpLink(0x50, counters, retries=3)
    pump = SimPump(0x50, PRICES)
    link.synced = True
    lost = []

    def answer(frame: Frame) -> Frame | None:
        reply = pump.handle(frame)
        if frame.kind is FrameKind.DATA and not lost:
            lost.append(reply)  # the pump executed it; its ACK never reached us
            return None
        return reply

    outputs, _ = drive(link.command((codec.Command(DCC.STOP),), None, "stop", "d"), answer)
    assert [f.seq for f in sent(outputs)] == [1, 1]  # the same TX#: a repeat to the pump
    assert Liveness.MISSED in outputs and counters.retransmissions == 1
    assert pump.counters.executed == 1 and pump.counters.duplicates == 1


def test_nak_and_silence_are_retried_then_given_up() -> None:
    counters = LineCounters()
    link = PumpLink(0x50, counters, retries=2)
    link.synced = True
    naks = iter([codec.nak(0x50, 1), None, codec.nak(0x50, 1)])
    exchange = link.command((codec.Command(DCC.STOP),), None, "stop", "l/0x50")
    with pytest.raises(DeviceTimeout, match="stop: no acknowledgement after 3 tries"):
        drive(exchange, lambda frame: next(naks))
    assert counters.naks == 2 and counters.retransmissions == 2


def test_an_expected_answer_is_polled_for_and_the_newest_wins() -> None:
    counters = LineCounters()
    link = PumpLink(0x50, counters, retries=3)
    pump = SimPump(0x50, PRICES)
    link.synced = True
    pump.remember_master_seq(0)
    exchange = link.command(
        (codec.Command(DCC.RETURN_STATUS),),
        lambda item: isinstance(item, codec.PumpStatus),
        "status",
        "l/0x50",
    )
    _, result = drive(exchange, pump_answer(pump))
    assert result == codec.PumpStatus(DartStatus.RESET)


def test_an_acknowledged_command_never_answered_unsyncs_the_link() -> None:
    link = PumpLink(0x50, LineCounters(), retries=1)
    link.synced = True

    def answer(frame: Frame) -> Frame | None:
        return codec.ack(0x50, frame.seq) if frame.kind is FrameKind.DATA else codec.eot(0x50, 0)

    exchange = link.command(
        (codec.Command(DCC.RETURN_STATUS),), lambda item: True, "status", "l/0x50"
    )
    with pytest.raises(DeviceTimeout, match="the pump sent no answer"):
        drive(exchange, answer)
    assert not link.synced


# ----------------------------------------------------------------------- over the memory pipe
def pumps_on_a_pipe(*pumps: SimPump) -> MemoryTransport:
    """The line's far end: every frame the master writes is heard by every pump."""
    reader = FrameReader()
    by_address = {pump.address: pump for pump in pumps}

    def answer(data: bytes) -> bytes:
        reader.receive_data(data)
        out = b""
        while (decoded := reader.next_item()) is not None:
            item = decoded[1]
            if isinstance(item, Frame) and item.address in by_address:
                reply = by_address[item.address].handle(item)
                if reply is not None:
                    out += codec.encode(reply)
        return out

    return MemoryTransport("pipe", answer)


def memory_line(
    pipe: MemoryTransport, addresses: list[int], events: list[DispenserEvent]
) -> DartLine:
    settings = DartLineSettings(
        name="mem", reply_timeout_s=0.01, backoff_initial_s=0.05, backoff_max_s=0.1
    )
    pumps = [DartPumpSettings(address=a, nozzles=(1, 2)) for a in addresses]
    return DartLine(settings, pumps, pipe, events.append)


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


async def test_the_line_master_runs_over_the_memory_pipe_with_split_replies() -> None:
    pumps = [SimPump(0x50, PRICES), SimPump(0x51, PRICES)]
    pipe = pumps_on_a_pipe(*pumps)
    pipe.split = 2  # every reply arrives two bytes at a time
    events: list[DispenserEvent] = []
    line = memory_line(pipe, [0x50, 0x51], events)
    task = asyncio.create_task(line.run())
    try:
        await until(lambda: line.is_online(0x50) and line.is_online(0x51))
        assert await line.request_status(0x51) is DispenserStatus.RESET
        pumps[0].lift(1)
        await line.authorize(0x50, nozzles=(1,), preset_amount=Decimal("5.00"))
        assert pumps[0].status is DartStatus.AUTHORIZED
        await until(lambda: any(isinstance(e, NozzleReport) and e.nozzle_out for e in events))
        assert line.counters.timeouts == 0 and line.counters.bad_crc == 0
        assert {e.pump for e in events if isinstance(e, PumpOnline)} == {0x50, 0x51}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_lost_and_damaged_replies_are_retried_over_the_memory_pipe() -> None:
    pump = SimPump(0x50, PRICES)
    pipe = pumps_on_a_pipe(pump)
    events: list[DispenserEvent] = []
    line = memory_line(pipe, [0x50], events)
    task = asyncio.create_task(line.run())
    try:
        await until(lambda: line.is_online(0x50))
        pipe.drop_next()
        pipe.corrupt_next(at=-3)  # a CRC byte (before ETX and SF)
        await line.stop(0x50)
        # Both count as timeouts: neither brought a valid reply in time.
        assert line.counters.timeouts == 2 and line.counters.bad_crc == 1
        assert line.is_online(0x50)  # two misses are not `offline_after` (3)
        pipe.hang_up()
        await until(lambda: line.counters.reopens == 1 and line.is_online(0x50))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
