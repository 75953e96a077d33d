"""Byte transports a driver runs on: a real serial port (or a pty) read through the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios
from typing import Protocol

import serial

from drivers.base import TransportError

_PARITY = {"none": serial.PARITY_NONE, "odd": serial.PARITY_ODD, "even": serial.PARITY_EVEN}


class Transport(Protocol):
    """What a line driver needs from the wire. All methods belong to the line's one task."""

    name: str

    @property
    def is_open(self) -> bool: ...

    async def open(self) -> None: ...

    def close(self) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def read_some(self, timeout: float) -> bytes:
        """Bytes that arrived, waiting up to `timeout` s for at least one; b"" on timeout."""
        ...

    def discard_input(self) -> None: ...


class SerialTransport:
    """A serial device opened with pyserial and read without threads via loop.add_reader.

    pyserial configures the line (baud, parity…); reads and writes go straight to the
    file descriptor so that a vanished device (unplugged USB adapter, closed pty) shows
    up as an error on the next read instead of a silent hang.
    """

    def __init__(
        self,
        port: str,
        *,
        baud: int = 9600,
        parity: str = "odd",
        bytesize: int = 8,
        stopbits: int = 1,
        name: str | None = None,
    ) -> None:
        self.port = port
        self.name = name or port
        self._baud = baud
        self._parity = _PARITY[parity]
        self._bytesize = bytesize
        self._stopbits = stopbits
        self._serial: serial.Serial | None = None
        self.parity_ignored = False  # the device (a pty) would not take the parity setting
        self._fd = -1
        self._rx = bytearray()
        self._error: TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._error is None

    async def open(self) -> None:
        self.close()
        try:
            ser = self._open_serial(self._parity)
        except termios.error as exc:
            # A pty stores the parity flag cleared and then refuses to be given it again
            # (EINVAL on the second open). Real UARTs keep it; a pty ignores it anyway.
            if self._parity == serial.PARITY_NONE or exc.args[0] != errno.EINVAL:
                raise TransportError(
                    f"cannot configure {self.port}: {exc}", device=self.name
                ) from exc
            ser = self._open_serial(serial.PARITY_NONE)
            self.parity_ignored = True
        self._serial = ser
        self._fd = ser.fileno()
        self._error = None
        self._rx.clear()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._on_readable)

    def _open_serial(self, parity: str) -> serial.Serial:
        try:
            return serial.Serial(
                port=self.port,
                baudrate=self._baud,
                parity=parity,
                bytesize=self._bytesize,
                stopbits=self._stopbits,
                timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportError(f"cannot open {self.port}: {exc}", device=self.name) from exc

    def close(self) -> None:
        if self._serial is None:
            return
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
        # Already gone: closing a vanished device is allowed to fail.
        with contextlib.suppress(serial.SerialException, OSError):
            self._serial.close()
        self._serial = None
        self._fd = -1
        self._wake()

    def _fail(self, reason: str) -> None:
        self._error = TransportError(reason, device=self.name)
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"read failed on {self.port}: {os.strerror(exc.errno or errno.EIO)}")
            return
        if not chunk:
            self._fail(f"{self.port} hung up")
            return
        self._rx += chunk
        self._wake()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._serial is None:
            raise TransportError(f"{self.port} is not open", device=self.name)

    async def write(self, data: bytes) -> None:
        self._check()
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                await asyncio.sleep(0.001)  # output buffer full: rare for frames this small
                continue
            except OSError as exc:
                self._fail(f"write failed on {self.port}: {os.strerror(exc.errno or errno.EIO)}")
                raise self._error from exc  # type: ignore[misc]
            view = view[written:]

    async def read_some(self, timeout: float) -> bytes:
        if not self._rx:
            self._check()
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            try:
                # asyncio.timeout, unlike wait_for on 3.11, never swallows a cancellation.
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                return b""
            finally:
                self._waiter = None
        if self._rx:
            out = bytes(self._rx)
            self._rx.clear()
            return out
        self._check()
        return b""

    def discard_input(self) -> None:
        self._rx.clear()
