"""The bad-uplink proxy (chaos/netproxy.py) does what the fleet run relies on: it forwards,
delays in order, drops, refuses, and stalls without closing, holding the bytes meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chaos.netproxy import FaultProxy, Schedule


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    """An echo server upstream: what goes up comes back down."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def read_exactly(reader: asyncio.StreamReader, n: int, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), timeout)


async def test_forwards_in_order_with_jitter(echo: int) -> None:
    async with FaultProxy(echo, latency_s=0.002, jitter_s=0.01, seed=3) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        chunks = [bytes([i]) * (i + 1) for i in range(40)]
        for chunk in chunks:  # separate writes, each given its own random delay
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)
        expected = b"".join(chunks)
        assert await read_exactly(reader, len(expected)) == expected  # jitter never reorders
        assert proxy.stats.connections == 1
        assert proxy.stats.bytes_up == proxy.stats.bytes_down == len(expected)
        writer.close()


async def test_drop_closes_both_sides_and_refuse_closes_new_ones(echo: int) -> None:
    async with FaultProxy(echo) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        assert await read_exactly(reader, 4) == b"ping"
        assert proxy.drop() == 1
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the client sees the end
        proxy.refuse(True)
        reader2, _ = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader2.read(), 5) == b""
        assert proxy.stats.refused == 1
        proxy.refuse(False)
        reader3, writer3 = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer3.write(b"back")
        assert await read_exactly(reader3, 4) == b"back"
        writer3.close()


async def test_blackhole_stalls_without_closing_and_delivers_later(echo: int) -> None:
    async with FaultProxy(echo) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.blackhole(True)
        writer.write(b"held")
        await writer.drain()
        with pytest.raises(TimeoutError):  # nothing comes back, and nothing is closed
            await asyncio.wait_for(reader.read(1), 0.3)
        assert proxy.connections == 1 and not reader.at_eof()
        # A connection opened during the stall reaches nothing until it lifts.
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer2.write(b"new")
        proxy.blackhole(False)
        assert await read_exactly(reader, 4) == b"held"  # as TCP's retransmissions would
        assert await read_exactly(reader2, 3) == b"new"
        assert proxy.stats.blackholes == 1
        writer.close()
        writer2.close()


async def test_a_seeded_schedule_repeats_itself(echo: int) -> None:
    schedule = Schedule(mean_gap_s=0.05, fault_s=(0.01, 0.02))

    def plan(seed: int) -> list[tuple[float, str, float]]:
        return FaultProxy(echo, seed=seed).plan(schedule, 2.0)

    first = plan(7)
    assert first and first == plan(7) and first != plan(8)
    assert all(0 < at < 2.0 and length > 0 for at, _, length in first)
    assert {kind for _, kind, _ in first} <= {"drop", "blackhole", "refuse"}
    # Carried out, every fault of the plan begins and ends (nothing stays stalled).
    async with FaultProxy(echo, seed=9) as proxy:
        expected = FaultProxy(echo, seed=9).plan(schedule, 0.5)
        await proxy.run_schedule(schedule, 0.5)
        assert not proxy.blackholed
        begun = [w for _, w in proxy.events if w in ("blackhole on", "refuse on")]
        assert len(begun) == len(expected)  # a drop is refused coverage for its length
