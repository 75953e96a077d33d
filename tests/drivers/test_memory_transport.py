"""The in-memory transport: what the far end sends arrives whole, split, late, lost or
damaged as the test asks, and a hung-up pipe fails as an unplugged adapter does."""

from __future__ import annotations

import asyncio

import pytest

from drivers.base import PORT_MISSING, DeviceFault, TransportError
from drivers.memory_transport import MemoryTransport


def echo(data: bytes) -> bytes:
    return data.upper()


async def test_the_far_end_answers_each_write() -> None:
    pipe = MemoryTransport("m", echo)
    await pipe.open()
    await pipe.write(b"abc")
    assert await pipe.read_some(0.1) == b"ABC"
    assert pipe.written == [b"abc"] and pipe.opens == 1


async def test_a_read_with_nothing_sent_times_out_empty() -> None:
    pipe = MemoryTransport()
    await pipe.open()
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await pipe.read_some(0.02) == b""
    assert loop.time() - start >= 0.015


async def test_split_sends_arrive_in_chunks_that_add_up() -> None:
    pipe = MemoryTransport("m", echo)
    pipe.split = 2
    pipe.gap_s = 0.05  # wide apart: a loaded machine still reads them one by one
    await pipe.open()
    await pipe.write(b"hello")
    chunks = []
    while sum(map(len, chunks)) < 5:
        chunk = await pipe.read_some(0.1)
        assert chunk
        chunks.append(chunk)
    assert b"".join(chunks) == b"HELLO"
    assert len(chunks) == 3  # each chunk arrives `gap_s` after the one before


async def test_a_delayed_answer_comes_after_its_delay() -> None:
    pipe = MemoryTransport("m", echo)
    pipe.delay_s = 0.03
    await pipe.open()
    await pipe.write(b"x")
    assert await pipe.read_some(0.01) == b""
    assert await pipe.read_some(0.1) == b"X"


async def test_dropped_and_corrupted_sends() -> None:
    pipe = MemoryTransport("m", echo)
    await pipe.open()
    pipe.drop_next()
    await pipe.write(b"lost")
    assert await pipe.read_some(0.01) == b""
    pipe.corrupt_next()
    await pipe.write(b"ab")
    assert await pipe.read_some(0.01) == bytes((ord("A"), ord("B") ^ 0xFF))
    await pipe.write(b"ok")
    assert await pipe.read_some(0.01) == b"OK"


async def test_discard_input_and_close_lose_what_waits() -> None:
    pipe = MemoryTransport("m", echo)
    await pipe.open()
    await pipe.write(b"old")
    await asyncio.sleep(0)  # arrived, and unread
    pipe.discard_input()
    assert await pipe.read_some(0.01) == b""
    pipe.delay_s = 0.01
    await pipe.write(b"late")
    await pipe.open()  # reopened before the late bytes land: they belong to the old pipe
    await asyncio.sleep(0.03)
    assert await pipe.read_some(0.01) == b""


async def test_open_failures_and_hang_ups_are_transport_errors() -> None:
    pipe = MemoryTransport("m", echo)
    fault = DeviceFault(PORT_MISSING, "the port m does not exist")
    pipe.fail_open(fault)
    with pytest.raises(TransportError) as refused:
        await pipe.open()
    assert refused.value.fault == fault and not pipe.is_open
    pipe.fail_open(None)
    await pipe.open()
    assert pipe.is_open
    reader = asyncio.create_task(pipe.read_some(1.0))
    await asyncio.sleep(0)
    pipe.hang_up()
    with pytest.raises(TransportError, match="hung up"):
        await reader
    with pytest.raises(TransportError):
        await pipe.write(b"x")
    pipe.close()
    with pytest.raises(TransportError, match="not open"):
        await pipe.read_some(0.01)
