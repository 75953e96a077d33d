"""An in-memory Transport: a driver's wire to a device simulated in the same process, which can
split, delay, drop and corrupt what the device sends, for fast and repeatable link-layer tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from drivers.base import DeviceFault, TransportError

# The device's side: given the bytes the driver wrote, the bytes it answers (b"": silence).
Answer = Callable[[bytes], bytes]


def _silent(_data: bytes) -> bytes:
    return b""


class MemoryTransport:
    """The driver's end of an in-memory pipe (it implements drivers.transport.Transport).

    The far end is `answer`, called with each write; or a test calls `deliver()`. What the
    far end sends passes through the faults, in this order: `drop_next(n)` loses the next n
    sends whole, `corrupt_next(n, at=i)` flips byte i of the next n sends, `split` cuts every
    send into chunks of that many bytes, `gap_s` apart, and `delay_s` holds a send back that
    long, on the event loop's clock (nothing arrives within the write itself). `fail_open`
    makes the next opens fail, `hang_up()` ends an open pipe as an unplugged adapter does
    (the next read or write raises TransportError).
    """

    def __init__(self, name: str = "memory", answer: Answer = _silent) -> None:
        self.name = name
        self.answer = answer
        self.split: int | None = None
        self.gap_s = 0.001  # between two chunks of a split send
        self.delay_s = 0.0
        self.written: list[bytes] = []  # every write the driver made, in order
        self.opens = 0
        self._open = False
        self._error: TransportError | None = None
        self._open_fault: DeviceFault | None = None
        self._drops = 0
        self._corrupts = 0
        self._corrupt_at = -1
        self._rx = bytearray()
        self._generation = 0  # each open and hang-up starts one: later chunks are lost
        self._arrived = asyncio.Event()

    # ------------------------------------------------------------------ faults
    def drop_next(self, n: int = 1) -> None:
        self._drops += n

    def corrupt_next(self, n: int = 1, *, at: int = -1) -> None:
        """Flip the byte at index `at` of each of the next n sends (-1: the last)."""
        self._corrupts += n
        self._corrupt_at = at

    def fail_open(self, fault: DeviceFault | None) -> None:
        """Opens fail with `fault` until called with None."""
        self._open_fault = fault

    def hang_up(self, reason: str = "hung up") -> None:
        if self._open:
            self._error = TransportError(f"{self.name} {reason}", device=self.name)
            self._generation += 1
            self._arrived.set()

    # ------------------------------------------------------------------ the far end
    def deliver(self, data: bytes) -> None:
        """Send `data` from the device's side, through the faults."""
        if not data or not self._open:
            return
        if self._drops:
            self._drops -= 1
            return
        if self._corrupts:
            self._corrupts -= 1
            damaged = bytearray(data)
            damaged[self._corrupt_at] ^= 0xFF
            data = bytes(damaged)
        size = self.split or len(data)
        loop = asyncio.get_running_loop()
        for n, start in enumerate(range(0, len(data), size)):
            chunk = data[start : start + size]
            at = self.delay_s + n * self.gap_s
            if at > 0:
                loop.call_later(at, self._arrive, chunk, self._generation)
            else:
                # Never within the write: like a wire, the reader waits (and yields) for it.
                loop.call_soon(self._arrive, chunk, self._generation)

    def _arrive(self, chunk: bytes, generation: int) -> None:
        if generation == self._generation and self._open and self._error is None:
            self._rx += chunk
            self._arrived.set()

    # ------------------------------------------------------------------ Transport
    @property
    def is_open(self) -> bool:
        return self._open and self._error is None

    async def open(self) -> None:
        self.close()
        if self._open_fault is not None:
            raise TransportError(
                f"cannot open {self.name}: {self._open_fault.reason}",
                device=self.name,
                fault=self._open_fault,
            )
        self._open, self._error = True, None
        self._generation += 1
        self.opens += 1
        self._rx.clear()
        self._arrived = asyncio.Event()

    def close(self) -> None:
        self._error = None
        if self._open:
            self._open = False
            self._generation += 1
            self._rx.clear()
            self._arrived.set()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if not self._open:
            raise TransportError(f"{self.name} is not open", device=self.name)

    async def write(self, data: bytes) -> None:
        self._check()
        self.written.append(bytes(data))
        self.deliver(self.answer(bytes(data)))

    async def read_some(self, timeout: float) -> bytes:
        self._check()
        if not self._rx:
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                return b""
            self._check()
        out = bytes(self._rx)
        self._rx.clear()
        return out

    def discard_input(self) -> None:
        self._rx.clear()
