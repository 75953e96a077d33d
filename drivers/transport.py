"""Byte transports a driver runs on: a serial port (or a pty) or a TCP connection, read through
the event loop."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import os
import socket
import termios
from typing import Protocol

import serial

from drivers.base import UNREACHABLE, DeviceFault, TransportError, port_fault

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


class _ReceiveBuffer(abc.ABC):
    """Bytes handed over by an I/O callback, waited for by the line's one task.

    Both transports fill `_rx` from the event loop and call `_wake`; `read_some` is the same.
    """

    def __init__(self) -> None:
        self._rx = bytearray()
        self._waiter: asyncio.Future[None] | None = None

    @abc.abstractmethod
    def _check(self) -> object:
        """Raise the TransportError that ended the connection, if any."""

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

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


class SerialTransport(_ReceiveBuffer):
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
        super().__init__()
        self._fd = -1
        self._error: TransportError | None = None
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
            # pyserial keeps the system's errno on its own exception.
            error = getattr(exc, "errno", None)
            raise TransportError(
                f"cannot open {self.port}: {exc}",
                device=self.name,
                errno=error,
                fault=port_fault(self.port, error, str(exc)),
            ) from exc

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


class _TcpReceiver(asyncio.Protocol):
    """Hands what the socket delivers to its TcpTransport; holds no state of its own."""

    def __init__(self, owner: TcpTransport) -> None:
        self._owner = owner

    def data_received(self, data: bytes) -> None:
        self._owner._on_data(self, data)

    def eof_received(self) -> bool:
        self._owner._on_lost(self, "closed by the peer")
        return False  # let asyncio close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._on_lost(self, f"connection lost: {exc}" if exc else "connection closed")


class TcpTransport(_ReceiveBuffer):
    """A TCP client connection (a gauge console's network port, a serial-to-IP converter)
    with the same interface and error behaviour as SerialTransport.

    Received bytes are buffered by the protocol callback, so a read that times out loses
    nothing; a peer that closes or resets shows up as TransportError on the next call.
    """

    def __init__(
        self,
        host: str,
        port: int,
        name: str | None = None,
        *,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.name = name or f"{host}:{port}"
        self._connect_timeout_s = connect_timeout_s
        self._transport: asyncio.Transport | None = None
        self._receiver: _TcpReceiver | None = None  # callbacks of older connections are stale
        super().__init__()
        self._error: TransportError | None = None

    @property
    def is_open(self) -> bool:
        return self._transport is not None and self._error is None

    async def open(self) -> None:
        self.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                transport, receiver = await loop.create_connection(
                    lambda: _TcpReceiver(self), self.host, self.port
                )
        except TimeoutError as exc:
            reason = (
                f"cannot connect to {self.host}:{self.port}: no answer within "
                f"{self._connect_timeout_s} s"
            )
            raise TransportError(
                reason, device=self.name, fault=DeviceFault(UNREACHABLE, reason)
            ) from exc
        except OSError as exc:
            reason = f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}"
            raise TransportError(
                reason,
                device=self.name,
                errno=exc.errno,
                fault=DeviceFault(UNREACHABLE, reason),
            ) from exc
        assert isinstance(transport, asyncio.Transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # A console that silently vanished (cable cut, power loss) is noticed even
            # when no request is in flight.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._transport = transport
        self._receiver = receiver
        self._error = None
        self._rx.clear()

    def close(self) -> None:
        transport = self._transport
        if transport is None:
            return
        self._transport = None
        self._receiver = None
        transport.abort()  # no lingering: a reconnect must not wait for old bytes to drain
        self._wake()

    def _on_data(self, receiver: _TcpReceiver, data: bytes) -> None:
        if receiver is self._receiver:
            self._rx += data
            self._wake()

    def _on_lost(self, receiver: _TcpReceiver, reason: str) -> None:
        if receiver is not self._receiver:
            return
        if self._error is None:
            self._error = TransportError(f"{self.host}:{self.port} {reason}", device=self.name)
        self._wake()

    def _check(self) -> asyncio.Transport:
        if self._error is not None:
            raise self._error
        if self._transport is None:
            raise TransportError(f"{self.host}:{self.port} is not open", device=self.name)
        return self._transport

    async def write(self, data: bytes) -> None:
        transport = self._check()
        if transport.is_closing():
            self._error = TransportError(f"{self.host}:{self.port} is closing", device=self.name)
            raise self._error
        transport.write(data)


def why_port_fails(port: str) -> DeviceFault | None:
    """Why the serial port at `port` cannot be opened (missing, permission), or None when
    it opens: for drivers whose library says only that it failed (pymodbus)."""
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        return port_fault(port, exc.errno, exc.strerror or str(exc))
    os.close(fd)
    return None
