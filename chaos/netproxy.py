"""A bad uplink on loopback: an asyncio TCP proxy that delays, drops and stalls a link.

This kernel has no `netem`, so the 4G uplink of a station is emulated in user space, between
the station's MQTT client and the broker. One `FaultProxy` listens on a free port of
127.0.0.1 and forwards every connection to its upstream; what it can do to them:

- **latency and jitter**: each chunk is held `latency_s` plus a uniform jitter of up to
  `jitter_s` before it is passed on, per direction, in order (a chunk never overtakes the one
  before it, as on one TCP stream);
- **drop** (`drop()`): close every connection now, both sides, as when the radio re-attaches;
- **refuse** (`refuse(True)`): new connections are closed at once (no coverage);
- **blackhole** (`blackhole(True)`): nothing passes in either direction and nothing is closed:
  a stalled link, which only the MQTT keepalive can notice. Bytes written meanwhile are held
  and delivered in order when the blackhole lifts, as TCP's retransmissions would deliver
  them; connections opened meanwhile reach the upstream only then;
- **a seeded random schedule** of the above (`run_schedule`), for the fleet run.

The proxy counts connections, bytes and faults (`stats`). It is test tooling: nothing of the
daemon imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["FaultProxy", "ProxyStats", "Schedule"]

_CHUNK = 65536


@dataclass
class ProxyStats:
    connections: int = 0  # accepted from clients
    refused: int = 0  # closed at once while refusing
    drops: int = 0  # drop() calls that closed at least one connection
    blackholes: int = 0  # blackhole periods begun
    bytes_up: int = 0  # client → upstream
    bytes_down: int = 0  # upstream → client
    upstream_failures: int = 0  # the upstream refused or vanished


@dataclass(frozen=True)
class Schedule:
    """A random fault schedule: after each quiet spell (exponential, mean `mean_gap_s`) one
    fault, chosen with these weights, lasting `fault_s` (uniform in the range)."""

    mean_gap_s: float = 20.0
    fault_s: tuple[float, float] = (1.0, 8.0)
    weights: dict[str, float] = field(
        default_factory=lambda: {"drop": 0.4, "blackhole": 0.4, "refuse": 0.2}
    )


class _Pipe:
    """One direction of one connection: chunks are delivered in order, each after its delay,
    and not at all while the proxy is blackholed (they wait)."""

    def __init__(self, proxy: FaultProxy, writer: asyncio.StreamWriter, up: bool) -> None:
        self.proxy = proxy
        self.writer = writer
        self.up = up
        self.queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._deliver())
        self._last_due = 0.0

    def push(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        delay = self.proxy.latency_s + self.proxy.rng.uniform(0.0, self.proxy.jitter_s)
        due = max(loop.time() + delay, self._last_due)  # in order, as on one TCP stream
        self._last_due = due
        self.queue.put_nowait((due, data))

    def close(self) -> None:
        self.queue.put_nowait(None)

    async def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (item := await self.queue.get()) is not None:
                due, data = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                await self.proxy._open.wait()  # held while blackholed
                self.writer.write(data)
                await self.writer.drain()
                if self.up:
                    self.proxy.stats.bytes_up += len(data)
                else:
                    self.proxy.stats.bytes_down += len(data)
            await self.proxy._open.wait()  # not even the close passes a stalled link
        except (ConnectionError, OSError):
            pass
        finally:
            self.writer.close()


class FaultProxy:
    """`async with FaultProxy(upstream_port) as proxy:` — point the client at `proxy.port`."""

    def __init__(
        self,
        upstream_port: int,
        upstream_host: str = "127.0.0.1",
        *,
        latency_s: float = 0.0,
        jitter_s: float = 0.0,
        seed: int = 0,
        name: str = "proxy",
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self.rng = random.Random(seed)
        self.name = name
        self.stats = ProxyStats()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open = asyncio.Event()
        self._open.set()
        self._refusing = False
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.events: list[tuple[float, str]] = []  # (loop time, what) of every fault

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._open.set()
        for link in list(self._links):
            link.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ the faults
    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._links)

    def drop(self) -> int:
        """Close every connection now; returns how many."""
        links = list(self._links)
        for link in links:
            link.close()
        if links:
            self.stats.drops += 1
        self._event(f"drop {len(links)}")
        return len(links)

    def refuse(self, on: bool) -> None:
        self._refusing = on
        self._event(f"refuse {'on' if on else 'off'}")

    def blackhole(self, on: bool) -> None:
        if on and self._open.is_set():
            self.stats.blackholes += 1
            self._open.clear()
        elif not on:
            self._open.set()
        self._event(f"blackhole {'on' if on else 'off'}")

    @property
    def blackholed(self) -> bool:
        return not self._open.is_set()

    @property
    def faulted(self) -> bool:
        """A fault is on now (stalled or refusing)."""
        return self.blackholed or self._refusing

    async def fault(self, kind: str, seconds: float) -> None:
        """One fault for `seconds`: "drop" (then no coverage for that long), "blackhole" or
        "refuse"."""
        if kind == "drop":
            self.refuse(True)
            self.drop()
        elif kind == "blackhole":
            self.blackhole(True)
        elif kind == "refuse":
            self.refuse(True)
        else:
            raise ValueError(f"unknown fault {kind!r}")
        try:
            await asyncio.sleep(seconds)
        finally:
            self.blackhole(False)
            self.refuse(False)

    def plan(self, schedule: Schedule, duration_s: float) -> list[tuple[float, str, float]]:
        """The faults of `schedule` over `duration_s`, drawn from the proxy's seed and nothing
        else: (start offset, kind, length), the same list for the same seed on any machine."""
        kinds = sorted(schedule.weights)
        weights = [schedule.weights[k] for k in kinds]
        faults: list[tuple[float, str, float]] = []
        at = 0.0
        while True:
            at += self.rng.expovariate(1.0 / schedule.mean_gap_s)
            if at >= duration_s:
                return faults
            kind = self.rng.choices(kinds, weights)[0]
            length = min(self.rng.uniform(*schedule.fault_s), duration_s - at)
            faults.append((at, kind, length))
            at += length

    async def run_schedule(self, schedule: Schedule, duration_s: float) -> None:
        """Carry out `plan(schedule, duration_s)` from now: each fault at its offset."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for offset, kind, length in self.plan(schedule, duration_s):
            if (wait := start + offset - loop.time()) > 0:
                await asyncio.sleep(wait)
            await self.fault(kind, length)
        if (rest := start + duration_s - loop.time()) > 0:
            await asyncio.sleep(rest)

    def _event(self, what: str) -> None:
        with contextlib.suppress(RuntimeError):
            self.events.append((asyncio.get_running_loop().time(), what))

    # ------------------------------------------------------------------ forwarding
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.stats.refused += 1
            writer.close()
            return
        self.stats.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass  # the proxy is closing: the connection ends with it, quietly
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # While blackholed, a new connection is accepted but reaches nothing: its bytes wait.
        link = _Link(reader, writer)
        self._links.add(link)
        try:
            await self._open.wait()
            if link.closed:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                self.stats.upstream_failures += 1
                return
            link.attach(self, up_reader, up_writer)
            await link.run()
        finally:
            self._links.discard(link)
            link.close()


class _Link:
    """A client connection and, once attached, its upstream connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False
        self._pipes: list[_Pipe] = []
        self._readers: list[asyncio.Task[None]] = []
        self._up_writer: asyncio.StreamWriter | None = None

    def attach(
        self, proxy: FaultProxy, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
    ) -> None:
        self._up_writer = up_writer
        to_upstream = _Pipe(proxy, up_writer, up=True)
        to_client = _Pipe(proxy, self.writer, up=False)
        self._pipes = [to_upstream, to_client]
        self._readers = [
            asyncio.create_task(self._pump(self.reader, to_upstream)),
            asyncio.create_task(self._pump(up_reader, to_client)),
        ]

    async def _pump(self, reader: asyncio.StreamReader, pipe: _Pipe) -> None:
        try:
            while data := await reader.read(_CHUNK):
                pipe.push(data)
        except (ConnectionError, OSError):
            pass
        finally:
            pipe.close()  # what was read still goes, then the other side sees the end

    async def run(self) -> None:
        try:
            await asyncio.gather(*self._readers, *(p.task for p in self._pipes))
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for task in self._readers:
            task.cancel()
        for pipe in self._pipes:
            pipe.task.cancel()
        for w in (self.writer, self._up_writer):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.transport.abort()


@contextlib.asynccontextmanager
async def proxied(upstream_port: int, **options: object) -> AsyncIterator[FaultProxy]:
    """`async with proxied(broker.port, latency_s=0.05) as proxy:` — the same as the class."""
    async with FaultProxy(upstream_port, **options) as proxy:  # type: ignore[arg-type]
        yield proxy
