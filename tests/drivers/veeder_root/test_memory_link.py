"""The TLS client over the in-memory transport: the console's own logic (TlsConsole) answers
each command, and the pipe splits, loses and damages its replies. No pty, no TCP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import pytest

from drivers.base import GaugeEvent, TankGaugeReading, TransportError
from drivers.memory_transport import MemoryTransport
from drivers.veeder_root import codec
from drivers.veeder_root.driver import TlsGauge, TlsGaugeSettings
from drivers.veeder_root.sim import TlsConsole
from tests.drivers.veeder_root.frames import FakeTanks


def console_on_a_pipe(console: TlsConsole) -> MemoryTransport:
    held = bytearray()

    def answer(data: bytes) -> bytes:
        held.extend(data)
        out = b""
        while held:
            used, command = codec.decode_command(held)
            if used == 0:
                break
            del held[:used]
            if isinstance(command, codec.Command):
                reply = console.respond(command)
                if reply is not None:
                    out += codec.encode_reply(reply)
        return out

    return MemoryTransport("tls-pipe", answer)


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


async def test_inventory_over_a_pipe_that_splits_loses_and_damages_replies() -> None:
    pipe = console_on_a_pipe(TlsConsole(FakeTanks.two()))
    pipe.split = 7  # every reply in 7-byte pieces
    settings = TlsGaugeSettings("tls", reply_timeout_s=0.02, retries=1, offline_after=3)
    gauge = TlsGauge(settings, pipe)
    events: list[GaugeEvent] = []
    task = asyncio.create_task(gauge.run(60.0, events.append))
    try:
        await until(lambda: gauge.is_online)
        one, two = await gauge.read_inventory()
        assert (one.tank, one.volume, two.tank) == (1, Decimal(20000), 2)
        pipe.drop_next()
        assert len(await gauge.read_inventory()) == 2  # the retry got it
        assert gauge.counters.timeouts == 1 and gauge.counters.retransmissions == 1
        assert pipe.written[-2:] == [bytes((codec.ESC,)), pipe.written[-3]]  # ESC, then again
        pipe.corrupt_next(at=-2)  # a checksum character, no longer hex: unreadable
        assert len(await gauge.read_inventory()) == 2
        assert gauge.counters.malformed == 1 and gauge.counters.retransmissions == 2
        assert [e.tank for e in events if isinstance(e, TankGaugeReading)] == [1, 2]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_pipe_that_hangs_up_is_reopened() -> None:
    pipe = console_on_a_pipe(TlsConsole(FakeTanks.two()))
    settings = TlsGaugeSettings(
        "tls", reply_timeout_s=0.02, reopen_initial_s=0.01, reopen_max_s=0.02
    )
    gauge = TlsGauge(settings, pipe)
    task = asyncio.create_task(gauge.run(60.0, lambda event: None))
    try:
        await until(lambda: gauge.is_online)
        pipe.hang_up()  # noticed by the next exchange: the gauge is idle between polls
        with pytest.raises(TransportError, match=r"inventory: .*hung up"):
            await gauge.read_inventory()
        await until(lambda: pipe.opens == 2 and gauge.is_online)
        assert len(await gauge.read_inventory()) == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_request_running_when_the_connection_stops_is_failed_not_left_hanging() -> None:
    """Bug fixed with the bus engine: a request taken off the queue and waiting for its reply
    when run() was cancelled (the daemon stopping) used to leave its caller waiting for ever."""
    pipe = console_on_a_pipe(TlsConsole(FakeTanks.two()))
    gauge = TlsGauge(TlsGaugeSettings("tls", reply_timeout_s=1.0), pipe)
    task = asyncio.create_task(gauge.run(60.0, lambda event: None))
    await until(lambda: gauge.is_online)
    pipe.delay_s = 0.5  # the console takes its time: the request is on the wire
    read = asyncio.ensure_future(gauge.read_clock())
    await until(lambda: len(pipe.written) == 4)  # i201, i205, i202 of the first poll, i501
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(TransportError, match="gauge connection stopped"):
        await asyncio.wait_for(read, 1.0)
