"""The bus engine: the one task that owns a line, carries its queued commands ahead of its
routine polls, waits for replies against their deadlines, reopens a line that failed with
jittered backoff, and hands every frame to the sniff taps. Every line driver (DART, TLS,
Modbus) runs on it; what is the protocol's own (framing, sequence numbers, what a reply
means, when a device is offline) stays in the driver and its sans-I/O link layer."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import structlog

from drivers.base import Progress, TransportError
from drivers.transport import Transport

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
# (direction "tx"/"rx", the bytes, what they are, monotonic clock)
Tap = Callable[[str, bytes, Any, float], None]
Poll = Coroutine[Any, Any, None]


class Backoff:
    """A doubling delay, capped, each one jittered by ±20 % so that lines and devices that
    failed together do not retry in step. The first delay after `reset()` is `initial_s`."""

    __slots__ = ("_rng", "current_s", "initial_s", "max_s")

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.current_s = 0.0  # the last delay before jitter; 0: none since reset
        self._rng = rng or random.Random()

    def next(self) -> float:
        self.current_s = min(max(self.current_s * 2, self.initial_s), self.max_s)
        return self.jitter(self.current_s)

    def reset(self) -> None:
        self.current_s = 0.0

    def jitter(self, seconds: float) -> float:
        return seconds * self._rng.uniform(0.8, 1.2)


class ReplyDeadline:
    """When the wait for a reply ends: `at`, pushed back to `extend_s` after the last byte
    while bytes keep coming (the rest of a frame is on its way), but never past `cap` (a
    babbling line must not hold the bus, and stop the watchdog's progress, for ever)."""

    __slots__ = ("at", "cap", "extend_s")

    def __init__(self, at: float, *, extend_s: float, cap: float) -> None:
        self.at = at
        self.extend_s = extend_s
        self.cap = cap

    def bytes_arrived(self, now: float) -> None:
        self.at = min(max(self.at, now + self.extend_s), self.cap)


class FrameReader(Protocol[R_co]):
    """A sans-I/O link layer's receiving side: bytes in, decoded items out."""

    def receive_data(self, data: bytes) -> None: ...

    def next_item(self) -> tuple[bytes, R_co] | None:
        """The next item decoded from the bytes held, with its bytes; None: need more."""
        ...

    def clear(self) -> None: ...


class DecodingReader(Generic[R]):
    """A FrameReader over a pure codec's `decode(buffer) -> (consumed, item | None)`, which
    returns (0, None) while the buffer does not finish an item."""

    __slots__ = ("_buffer", "_decode")

    def __init__(self, decode: Callable[[bytearray], tuple[int, R]]) -> None:
        self._buffer = bytearray()
        self._decode = decode

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_item(self) -> tuple[bytes, R] | None:
        if not self._buffer:
            return None
        used, item = self._decode(self._buffer)
        if used == 0:
            return None
        raw = bytes(self._buffer[:used])
        del self._buffer[:used]
        return raw, item

    def held(self) -> bytes:
        """The bytes that do not finish an item yet."""
        return bytes(self._buffer)

    def clear(self) -> None:
        self._buffer.clear()


class Line(Protocol):
    """What a driver tells the engine about its line: how to open and close it, what happens
    when that works or fails, which routine poll is next, and what a caller whose command
    the line dropped is told."""

    async def bus_open(self) -> None:
        """Open the line; raise one of the engine's `lost` exceptions when it will not."""
        ...

    def bus_close(self) -> None: ...

    def bus_open_failed(self, exc: BaseException) -> None: ...

    def bus_opened(self, first: bool) -> None: ...

    def bus_lost(self, exc: BaseException) -> None:
        """The open line failed (it is closed and the queue failed already)."""
        ...

    def bus_next(self) -> Poll | float:
        """The next routine poll to run, or how long nothing is due (a command wakes it)."""
        ...

    def bus_abandoned(self, job: Job[Any], exc: BaseException) -> BaseException:
        """The error for a command the line dropped: `exc` is the line's failure, the
        engine's `stopped` error, or the cancellation that stopped it mid-command."""
        ...


@dataclass(eq=False)
class Job(Generic[T]):
    """A command queued for the line: `work` runs on the line's task, ahead of polls."""

    label: str
    work: Callable[[], Awaitable[T]]
    future: asyncio.Future[T] = field(repr=False)
    device: str | None = None


class BusEngine:
    """The single task of one line. Only `run()` (and what it calls) touches the wire.

    `lost` are the exceptions that mean the line itself failed: the engine then closes it,
    fails what is queued, tells the driver and, unless `pause_after_loss` is off, waits a
    reopen backoff before opening it again. The reopen backoff is reset on every successful
    open when `reset_reopen_on_open`, else only when the driver resets it (`reopen.reset()`:
    when a device answers, say). Exceptions raised by a command's work that are not `lost`
    go to its caller, and the line goes on.
    """

    def __init__(
        self,
        name: str,
        line: Line,
        *,
        reopen: Backoff,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress: Progress | None = None,
        lost: tuple[type[BaseException], ...] = (TransportError,),
        stopped: str = "line stopped",
        pause_after_loss: bool = True,
        reset_reopen_on_open: bool = False,
    ) -> None:
        self.name = name
        self.transport = transport
        self.reopen = reopen
        self.progress = progress or Progress(clock=clock)
        self.taps: list[Tap] = []
        self.open_wait_s = 0.0  # the longest an open may take (the watchdog's allowance)
        self._line = line
        self._clock = clock
        self._lost = lost
        self._abandon: tuple[type[BaseException], ...] = (*lost, asyncio.CancelledError)
        self._stopped = stopped
        self._pause_after_loss = pause_after_loss
        self._reset_reopen_on_open = reset_reopen_on_open
        self._jobs: deque[Job[Any]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self.running = False
        self.connected = False  # opened, and not failed since

    # ------------------------------------------------------------------ commands
    @property
    def pending(self) -> int:
        return len(self._jobs)

    async def submit(
        self, label: str, work: Callable[[], Awaitable[T]], *, device: str | None = None
    ) -> T:
        """Run `work` on the line's task ahead of the routine polls and return its result.
        Called from the line's own task (a poll that sends a command), it runs at once."""
        if self._task is not None and asyncio.current_task() is self._task:
            return await work()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append(Job(label, work, future, device))
        self._wakeup.set()
        return await future

    async def _execute(self, job: Job[Any]) -> None:
        if job.future.done():  # cancelled by the caller while queued
            return
        try:
            result = await job.work()
        except self._abandon as exc:
            # The line failed (or stops) under this command: it is no longer queued, so
            # its caller (who may hold the device's lock while waiting) is told now.
            if not job.future.done():
                job.future.set_exception(self._line.bus_abandoned(job, exc))
            raise
        except Exception as exc:
            if not job.future.done():
                job.future.set_exception(exc)
            return
        if not job.future.done():
            job.future.set_result(result)

    def _fail_pending(self, exc: BaseException) -> None:
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(self._line.bus_abandoned(job, exc))

    # ------------------------------------------------------------------ the task
    async def run(self) -> None:
        """Own the line until cancelled: open, serve, and reopen it when it fails."""
        if self.running:
            raise RuntimeError(f"{self.name}: run() is already active")
        self.running = True
        self._task = asyncio.current_task()
        first = True
        try:
            while True:
                self.progress.tick(self.open_wait_s)
                try:
                    await self._line.bus_open()
                except self._lost as exc:
                    self._line.bus_open_failed(exc)
                    await self.pause(self.reopen.next())
                    continue
                self.connected = True
                if self._reset_reopen_on_open:
                    self.reopen.reset()
                self._line.bus_opened(first)
                first = False
                try:
                    await self._serve()
                except self._lost as exc:
                    self.connected = False
                    self._line.bus_close()
                    self._fail_pending(exc)
                    self._line.bus_lost(exc)
                    if self._pause_after_loss:
                        await self.pause(self.reopen.next())
        finally:
            self.running = self.connected = False
            self._task = None
            self._line.bus_close()
            self._fail_pending(TransportError(self._stopped, device=self.name))

    async def _serve(self) -> None:
        while True:
            self.progress.tick()
            if self._jobs:
                await self._execute(self._jobs.popleft())
                continue
            poll = self._line.bus_next()
            if isinstance(poll, (float, int)):  # a tuple: faster than a union type
                await self.idle(poll)
            else:
                await poll

    async def idle(self, seconds: float) -> None:
        """Wait, but wake at once when a command is queued."""
        self._wakeup.clear()
        if self._jobs:
            return
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        self.progress.tick(seconds)
        try:
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    async def pause(self, seconds: float) -> None:
        """Wait, commands or not (a backoff before reopening)."""
        self.progress.tick(seconds)
        await asyncio.sleep(seconds)

    # ------------------------------------------------------------------ bytes on the wire
    def wire(self) -> Transport:
        if self.transport is None:
            raise RuntimeError(f"{self.name}: this line has no byte transport")
        return self.transport

    async def send(self, wire: bytes, item: object) -> None:
        """Write one frame, and show it to the taps."""
        await self.wire().write(wire)
        if self.taps:
            self.tap("tx", wire, item)

    async def request(self, reader: FrameReader[Any], wire: bytes, item: object) -> None:
        """Write a request that awaits a reply: what came before it is dropped first (a late
        answer to an earlier request must not pass for this one's)."""
        transport = self.wire()
        reader.clear()
        transport.discard_input()
        await transport.write(wire)
        if self.taps:
            self.tap("tx", wire, item)

    async def receive(
        self,
        reader: FrameReader[R],
        accept: Callable[[R], T | None],
        deadline: ReplyDeadline,
    ) -> T | None:
        """Items decoded from the line, each shown to the taps and offered to `accept`,
        until it takes one (returned) or the deadline passes (None)."""
        transport = self.wire()
        clock = self._clock
        while True:
            while (decoded := reader.next_item()) is not None:
                raw, item = decoded
                if self.taps:
                    self.tap("rx", raw, item)
                reply = accept(item)
                if reply is not None:
                    return reply
            remaining = deadline.at - clock()
            if remaining <= 0:
                return None
            chunk = await transport.read_some(remaining)
            if chunk:
                reader.receive_data(chunk)
                deadline.bytes_arrived(clock())

    def tap(self, direction: str, wire: bytes, item: object) -> None:
        """Hand a frame to each tap; a failing tap is logged and never disturbs the line."""
        hand_to_taps(self.taps, direction, wire, item, self._clock(), self.name)


def hand_to_taps(
    taps: list[Callable[[str, bytes, Any, float], None]],
    direction: str,
    wire: bytes,
    item: object,
    at: float,
    line: str,
) -> None:
    """Hand a frame to each of a line's taps (the sniffers): a tap runs in the line's own
    task, so one that fails is logged and never disturbs the line or the taps after it."""
    for tap in tuple(taps):
        try:
            tap(direction, wire, item, at)
        except Exception:
            log.exception("bus_tap_failed", line=line)
