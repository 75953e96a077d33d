"""TcpTransport against a real asyncio server on 127.0.0.1: the same contract as SerialTransport."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from drivers.base import TransportError
from drivers.transport import TcpTransport, Transport


class Peer:
    """A server that accepts connections and lets the test talk on the newest one."""

    def __init__(self) -> None:
        self.connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.connected = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append((reader, writer))
        self.connected.set()

    async def newest(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await asyncio.wait_for(self.connected.wait(), 5)
        return self.connections[-1]

    async def send(self, data: bytes) -> None:
        _, writer = await self.newest()
        writer.write(data)
        await writer.drain()

    async def stop(self) -> None:
        for _, writer in self.connections:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    server = Peer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def transport(peer: Peer) -> AsyncIterator[TcpTransport]:
    tcp = TcpTransport("127.0.0.1", peer.port, "gauge")
    await tcp.open()
    yield tcp
    tcp.close()


async def _read_until(tcp: TcpTransport, size: int) -> bytes:
    got = b""
    while len(got) < size:
        got += await tcp.read_some(2.0)
    return got


def test_is_a_transport() -> None:
    tcp: Transport = TcpTransport("127.0.0.1", 1, "x")
    assert tcp.name == "x"
    assert TcpTransport("10.0.0.5", 10001).name == "10.0.0.5:10001"


async def test_write_and_read(peer: Peer, transport: TcpTransport) -> None:
    assert transport.is_open
    await transport.write(b"\x01i20100")
    reader, _ = await peer.newest()
    assert await asyncio.wait_for(reader.readexactly(7), 5) == b"\x01i20100"
    await peer.send(b"\x01reply\x03")
    assert await _read_until(transport, 7) == b"\x01reply\x03"


async def test_read_times_out_with_nothing(transport: TcpTransport) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await transport.read_some(0.05) == b""
    assert loop.time() - start >= 0.04


async def test_bytes_arriving_in_pieces_are_all_kept(peer: Peer, transport: TcpTransport) -> None:
    for piece in (b"\x01i2", b"01", b"00\x03"):
        await peer.send(piece)
        await asyncio.sleep(0.01)
    assert await _read_until(transport, 8) == b"\x01i20100\x03"


async def test_discard_input_drops_what_arrived(peer: Peer, transport: TcpTransport) -> None:
    await peer.send(b"stale")
    await asyncio.sleep(0.05)
    transport.discard_input()
    assert await transport.read_some(0.05) == b""


async def test_peer_close_is_a_transport_error(peer: Peer, transport: TcpTransport) -> None:
    await peer.send(b"last words")
    _, writer = await peer.newest()
    writer.close()
    # What arrived before the close is still handed over first.
    assert await _read_until(transport, 10) == b"last words"
    with pytest.raises(TransportError, match="closed by the peer") as caught:
        while True:
            await transport.read_some(1.0)
    assert caught.value.device == "gauge"
    assert not transport.is_open
    with pytest.raises(TransportError):
        await transport.write(b"x")


async def test_read_waiting_wakes_when_the_peer_goes(peer: Peer, transport: TcpTransport) -> None:
    read = asyncio.create_task(transport.read_some(5.0))
    await asyncio.sleep(0.02)
    _, writer = await peer.newest()
    writer.close()
    with pytest.raises(TransportError):
        await asyncio.wait_for(read, 2)


async def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tcp = TcpTransport("127.0.0.1", port, "gauge")
    with pytest.raises(TransportError, match="cannot connect") as caught:
        await tcp.open()
    assert caught.value.device == "gauge" and caught.value.code == "transport"
    assert not tcp.is_open


async def test_not_open_is_a_transport_error() -> None:
    tcp = TcpTransport("127.0.0.1", 1, "gauge")
    with pytest.raises(TransportError, match="not open"):
        await tcp.write(b"x")
    with pytest.raises(TransportError, match="not open"):
        await tcp.read_some(0.01)


async def test_reopen_gets_a_fresh_connection(peer: Peer, transport: TcpTransport) -> None:
    first = await peer.newest()
    peer.connected.clear()
    await transport.open()  # closes the old connection first
    second = await peer.newest()
    assert second is not first
    # The old connection's goodbye must not mark the new one as failed.
    await asyncio.sleep(0.05)
    assert transport.is_open
    await peer.send(b"fresh")
    assert await _read_until(transport, 5) == b"fresh"


async def test_close_twice_is_harmless(transport: TcpTransport) -> None:
    transport.close()
    transport.close()
    assert not transport.is_open
