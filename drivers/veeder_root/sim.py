"""A simulated Veeder-Root TLS console on a pty or a TCP port, answering from a tank model.

The console does not own the tanks: it is given a `TankState` (the shared physics model of
`drivers.tank_sim`, whose `TankFarm` fits the protocol below, or any stand-in) and reads it
on every command, so levels fall as simulated pumps sell and rise as tankers deliver.
Commands are read and replies built with the driver's own codec. One background thread
serves the pty and every TCP client; faults are injected from any thread.

Units are the model's (litres, millimetres, °C): a metric console. The model records
delivery water as a volume, which is what the simulated i202 reports as start/end water.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Protocol

import structlog

from drivers.ptylink import PtyLink
from drivers.simthread import ThreadCalls
from drivers.veeder_root import codec
from drivers.veeder_root.codec import Command, Malformed, Reply

log = structlog.get_logger(__name__)


# ======================================================================================
# What the console reads from the tank model
# ======================================================================================
class TankView(Protocol):
    """One tank at one instant (tank_sim.TankSnapshot fits)."""

    @property
    def number(self) -> int: ...
    @property
    def height_mm(self) -> float: ...
    @property
    def volume_l(self) -> float: ...
    @property
    def tc_volume_l(self) -> float: ...
    @property
    def ullage_l(self) -> float: ...
    @property
    def water_mm(self) -> float: ...
    @property
    def water_l(self) -> float: ...
    @property
    def temperature_c(self) -> float: ...
    @property
    def delivery_in_progress(self) -> bool: ...
    @property
    def alarms(self) -> Collection[object]:
        """Alarm values the model raises; an enum member's `.value` (or the value itself)
        names it, mapped to a TLS code through ALARM_CODES."""
        ...


class DeliveryView(Protocol):
    """A finished delivery (tank_sim.DeliveryRecord fits); aware or console-local times."""

    @property
    def tank(self) -> int: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def start_volume_l(self) -> float: ...
    @property
    def end_volume_l(self) -> float: ...
    @property
    def start_tc_volume_l(self) -> float: ...
    @property
    def end_tc_volume_l(self) -> float: ...
    @property
    def start_water_l(self) -> float: ...
    @property
    def end_water_l(self) -> float: ...
    @property
    def start_height_mm(self) -> float: ...
    @property
    def end_height_mm(self) -> float: ...
    @property
    def start_temperature_c(self) -> float: ...
    @property
    def end_temperature_c(self) -> float: ...


class TankSource(Protocol):
    """One tank of the model (tank_sim.SimTank fits)."""

    @property
    def number(self) -> int: ...
    def snapshot(self) -> TankView: ...
    @property
    def deliveries(self) -> Sequence[DeliveryView]: ...


class TankState(Protocol):
    """The tanks a console is wired to (tank_sim.TankFarm fits)."""

    @property
    def tanks(self) -> Sequence[TankSource]: ...


# Alarm names of the model -> TLS tank alarm codes (codec.TANK_ALARMS).
ALARM_CODES: dict[str, int] = {
    "leak": 2,
    "high_water": 3,
    "overfill": 4,
    "low_product": 5,
    "sudden_loss": 6,
    "high_product": 7,
    "delivery_needed": 11,
}
DELIVERIES_KEPT = 10  # a console keeps the last few deliveries of each tank
# What `TlsConsole(refuse=...)` / `set_refused` take to play two kinds of console met on
# sites: one (or an emulator) that answers only the printed I201 report, and one that
# refuses every inventory command (its RS-232 port set up for another use, say).
DISPLAY_ONLY: frozenset[str] = frozenset({"i201"})
REFUSE_INVENTORY: frozenset[str] = frozenset({"i201", "I201"})


def _decimal(value: float) -> Decimal:
    return Decimal(format(value, ".4f"))


# ======================================================================================
# The console
# ======================================================================================
@dataclass(slots=True)
class ConsoleStats:
    """What the simulated console saw; read by tests."""

    commands: int = 0
    replies_sent: int = 0
    refused: int = 0
    wrong_security_code: int = 0
    garbage_bytes: int = 0
    aborts: int = 0  # ESC received
    malformed_commands: int = 0
    replies_dropped: int = 0
    replies_corrupted: int = 0
    connections: int = 0


@dataclass
class _Faults:
    drop: int = 0
    corrupt: int = 0
    no_etx: int = 0
    garbage: bytearray = field(default_factory=bytearray)


class TlsConsole:
    """The console's logic: a command in, a reply out. No I/O, safe from any thread."""

    def __init__(
        self,
        tanks: TankState,
        *,
        security_code: str | None = None,
        products: Mapping[int, str] | None = None,
        refuse: Collection[str] = (),
        system_status: str = "",
        header: Sequence[str] = ("EDGECTL TEST STATION",),
        display_line_end: str = "\r\n",
        wall: Callable[[], datetime] = datetime.now,
        timezone: tzinfo | None = None,
    ) -> None:
        if security_code is not None:
            codec.encode_command("i20100", security_code=security_code)  # ValueError now
        self.tanks = tanks
        self.security_code = security_code
        self.products = dict(products or {})
        self.refuse = set(refuse)  # function families answered with 9999FF1B ("i201", …)
        self.system_status = system_status
        self.header = tuple(header)
        self.display_line_end = display_line_end
        self._wall = wall
        self._timezone = timezone
        self._offset = timedelta(0)
        self._lock = threading.Lock()
        self._console_alarms: dict[int, tuple[int, ...]] = {}
        self._probes_out: set[int] = set()

    # ---------------------------------------------------------------- settings
    def now(self) -> datetime:
        """The console's clock: local, naive, moved by s501."""
        with self._lock:
            return self._wall().replace(tzinfo=None) + self._offset

    def _stamp(self) -> datetime:
        """The console's time as replies carry it: to the minute."""
        return self.now().replace(second=0, microsecond=0)

    def set_refused(self, families: Collection[str]) -> None:
        """From now on answer these function families ("i201", "I201", ...) with 9999FF1B
        (DISPLAY_ONLY, REFUSE_INVENTORY; empty: answer everything again)."""
        with self._lock:
            self.refuse = set(families)

    def set_probe_out(self, tank: int, out: bool = True) -> None:
        """Tank `tank`'s probe stops reporting (or reports again): the console leaves the
        tank out of its inventory (i201 and I201) and answers for the others as before."""
        with self._lock:
            if out:
                self._probes_out.add(tank)
            else:
                self._probes_out.discard(tank)

    def set_console_alarms(self, tank: int, codes: Sequence[int]) -> None:
        """Alarms the console raises on its own (beyond the model's), e.g. 11 or 25."""
        with self._lock:
            self._console_alarms[tank] = tuple(codes)

    # ---------------------------------------------------------------- commands
    def respond(self, command: Command) -> Reply | None:
        """The reply to one command; None when the console stays silent (bad security code)."""
        if self.security_code is not None and command.security_code != self.security_code:
            return None
        code = command.code
        family = code[:4]
        with self._lock:
            refused = family in self.refuse
        if refused:
            return codec.Unsupported()
        tank = codec.tank_number(code)
        match family:
            case "i201" if tank is not None:
                return codec.Inventory(tank, self._stamp(), self._inventories(tank))
            case "I201" if tank is not None:
                text = codec.format_display_inventory(
                    self._stamp(),
                    self._inventories(tank),
                    code=code,
                    header=self.header,
                    line_end=self.display_line_end,
                )
                return codec.DisplayReport(code, text)
            case "i202" if tank is not None:
                return codec.DeliveryReport(tank, self._stamp(), self._deliveries(tank))
            case "i205" if tank is not None:
                return codec.AlarmStatus(tank, self._stamp(), self._alarms(tank))
            case "i101":
                return codec.SystemStatus(code, self._stamp(), self.system_status)
            case "i501":
                return codec.ClockReply(code, self._stamp())
            case "s501":
                try:
                    wanted = codec.parse_timestamp(command.data)
                except ValueError:
                    return codec.Unsupported()
                with self._lock:
                    # Setting HH:mm starts the minute: seconds count from 0 again.
                    self._offset = wanted - self._wall().replace(tzinfo=None)
                return codec.ClockReply(code, self._stamp())
        return codec.Unsupported()

    def _sources(self, tank: int) -> Iterator[TankSource]:
        return (source for source in self.tanks.tanks if tank in (0, source.number))

    def _product(self, number: int) -> str:
        return self.products.get(number, str(number % 10))

    def _inventories(self, tank: int) -> tuple[codec.TankInventory, ...]:
        with self._lock:
            out = set(self._probes_out)
        inventories = []
        for source in self._sources(tank):
            if source.number in out:
                continue
            view = source.snapshot()
            status = codec.STATUS_DELIVERY_IN_PROGRESS if view.delivery_in_progress else 0
            inventories.append(
                codec.TankInventory(
                    view.number,
                    self._product(view.number),
                    status,
                    volume=_decimal(view.volume_l),
                    tc_volume=_decimal(view.tc_volume_l),
                    ullage=_decimal(view.ullage_l),
                    height=_decimal(view.height_mm),
                    water=_decimal(view.water_mm),
                    temperature=_decimal(view.temperature_c),
                    water_volume=_decimal(view.water_l),
                )
            )
        return tuple(inventories)

    def _local(self, at: datetime) -> datetime:
        if at.tzinfo is not None:
            at = at.astimezone(self._timezone).replace(tzinfo=None)
        return at + self._offset

    def _deliveries(self, tank: int) -> tuple[codec.TankDeliveries, ...]:
        blocks = []
        for source in self._sources(tank):
            records = tuple(
                codec.DeliveryRecord(
                    start=self._local(d.start),
                    end=self._local(d.end),
                    start_volume=_decimal(d.start_volume_l),
                    start_tc_volume=_decimal(d.start_tc_volume_l),
                    start_water=_decimal(d.start_water_l),
                    start_temperature=_decimal(d.start_temperature_c),
                    end_volume=_decimal(d.end_volume_l),
                    end_tc_volume=_decimal(d.end_tc_volume_l),
                    end_water=_decimal(d.end_water_l),
                    end_temperature=_decimal(d.end_temperature_c),
                    start_height=_decimal(d.start_height_mm),
                    end_height=_decimal(d.end_height_mm),
                )
                for d in list(source.deliveries)[-DELIVERIES_KEPT:]
            )
            blocks.append(
                codec.TankDeliveries(source.number, self._product(source.number), records)
            )
        return tuple(blocks)

    def _alarms(self, tank: int) -> tuple[codec.TankAlarmCodes, ...]:
        with self._lock:
            console = dict(self._console_alarms)
        blocks = []
        for source in self._sources(tank):
            view = source.snapshot()
            codes = {
                ALARM_CODES[name] for name in map(_alarm_name, view.alarms) if name in ALARM_CODES
            }
            codes.update(console.get(view.number, ()))
            blocks.append(codec.TankAlarmCodes(view.number, tuple(sorted(codes))))
        return tuple(blocks)


def _alarm_name(alarm: object) -> str:
    return str(getattr(alarm, "value", alarm))


# ======================================================================================
# The wire: a pty and / or a TCP port, served from one thread
# ======================================================================================
class _Endpoint:
    """One byte stream the console answers on: the pty master or one TCP client."""

    def __init__(self, fd: int, sock: socket.socket | None, label: str) -> None:
        self.fd = fd
        self.sock = sock
        self.label = label
        self.rx = bytearray()

    def read(self) -> bytes | None:
        """What arrived; b"" when the other end is gone, None when nothing came after all."""
        try:
            if self.sock is not None:
                return self.sock.recv(4096)
            return os.read(self.fd, 4096)
        except (BlockingIOError, TimeoutError):
            return None
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EBADF, errno.ECONNRESET):
                return b""
            raise

    def write(self, data: bytes) -> int:
        """Write everything; returns the bytes lost."""
        view = memoryview(data)
        try:
            while view:
                sent = self.sock.send if self.sock is not None else self._write_fd
                written = sent(view)
                view = view[written:]
        except BlockingIOError:
            pass  # nobody reads and the buffer is full: the rest is lost, as on a line
        except OSError as exc:
            log.warning("tls_sim_write_failed", endpoint=self.label, error=exc.strerror)
        return len(view)

    def _write_fd(self, data: memoryview) -> int:
        return os.write(self.fd, data)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()


class TlsConsoleSimulator:
    """A TLS console on a pty and / or a TCP port of 127.0.0.1.

    `terminator` and `etx` are the console's link settings; `chunk_size` and
    `chunk_delay_s` send each reply in pieces (partial reads); `reply_delay_s` is the
    console's think time.
    """

    def __init__(
        self,
        console: TlsConsole,
        *,
        terminator: bytes = b"",
        etx: int = codec.ETX,
        reply_delay_s: float = 0.0,
        chunk_size: int = 0,
        chunk_delay_s: float = 0.0,
        name: str = "tls-sim",
    ) -> None:
        if terminator not in codec.TERMINATORS:
            raise ValueError(f"terminator must be one of {codec.TERMINATORS}")
        self.console = console
        self.terminator = terminator
        self.etx = etx
        self.reply_delay_s = reply_delay_s
        self.chunk_size = chunk_size
        self.chunk_delay_s = chunk_delay_s
        self.name = name
        self._online = True
        self._faults = _Faults()
        self._stats = ConsoleStats()
        self._lock = threading.Lock()  # guards faults, stats and the online flag
        self._link: PtyLink | None = None
        self._pty: _Endpoint | None = None
        self._listener: socket.socket | None = None
        self._clients: dict[int, _Endpoint] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._calls = ThreadCalls(name)

    # ---------------------------------------------------------------- serving
    def serve_pty(self, link: Path | None = None) -> PtyLink:
        """Open a pty pair (symlinked at `link`); the driver opens its slave end."""
        pty = PtyLink(link).open()
        os.set_blocking(pty.master_fd, False)
        self._link = pty
        self._pty = _Endpoint(pty.master_fd, None, "pty")
        self._start()
        return pty

    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on `host` (a free port for 0); returns the address clients connect to."""
        listener = socket.create_server((host, port))
        listener.setblocking(False)
        self._listener = listener
        self._start()
        address: tuple[str, int] = listener.getsockname()[:2]
        return address

    def _start(self) -> None:
        if self._thread is not None:
            # Already serving: the thread picks the new endpoint up on its next turn.
            self._calls.wake()
            return
        self._stopping = False
        self._calls.open()
        self._thread = threading.Thread(target=self._serve, name=f"{self.name}-wire", daemon=True)
        self._calls.thread = self._thread
        self._thread.start()
        log.info("tls_sim_serving", console=self.name)

    def stop(self) -> None:
        """Stop the thread, close every endpoint, the listener and the pty."""
        thread = self._thread
        if thread is not None:
            self._stopping = True
            self._calls.wake()
            thread.join()
            self._thread = self._calls.thread = None
            self._calls.close()
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._link is not None:
            self._link.close()
            self._link = None
        self._pty = None

    def __enter__(self) -> TlsConsoleSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def link(self) -> PtyLink | None:
        return self._link

    @property
    def stats(self) -> ConsoleStats:
        with self._lock:
            return replace(self._stats)

    # ---------------------------------------------------------------- faults
    def set_online(self, online: bool) -> None:
        """Offline: the console reads commands but answers nothing (powered down CPU)."""
        with self._lock:
            self._online = online

    def drop_next_replies(self, n: int = 1) -> None:
        with self._lock:
            self._faults.drop += n

    def corrupt_next_reply(self) -> None:
        """Change one checksum digit of the next computer-format reply."""
        with self._lock:
            self._faults.corrupt += 1

    def corrupt_replies(self, n: int) -> None:
        """Change a checksum digit of each of the next `n` computer-format replies (0: stop
        corrupting them from now on)."""
        with self._lock:
            self._faults.corrupt = max(0, n)

    def withhold_etx(self, n: int = 1) -> None:
        """The next `n` replies are sent without their ETX."""
        with self._lock:
            self._faults.no_etx += n

    def inject_garbage(self, data: bytes) -> None:
        """Line noise sent just before the next reply."""
        with self._lock:
            self._faults.garbage += data

    def drop_connections(self) -> None:
        """Close every TCP client connection (the console rebooted its network card)."""
        self._calls.call(self._do_drop_connections)

    def unplug(self) -> None:
        """Pull the pty's adapter out (see PtyLink.unplug)."""
        self._calls.call(self._do_unplug)

    def replug(self) -> None:
        self._calls.call(self._do_replug)

    # ---------------------------------------------------------------- the thread
    def _serve(self) -> None:
        try:
            while not self._stopping:
                self._turn()
        except Exception:
            log.exception("tls_sim_failed", console=self.name)
            raise
        finally:
            self._calls.run_pending()

    def _turn(self) -> None:
        watched: dict[int, _Endpoint | None] = {self._calls.wake_fd: None}
        if self._listener is not None:
            watched[self._listener.fileno()] = None
        if self._pty is not None:
            watched[self._pty.fd] = self._pty
        watched.update(self._clients)
        readable, _, _ = select.select(list(watched), [], [])
        for fd in readable:
            if fd == self._calls.wake_fd:
                self._calls.drain()
                self._calls.run_pending()
            elif self._listener is not None and fd == self._listener.fileno():
                self._accept()
            else:
                endpoint = watched[fd]
                if endpoint is not None:
                    self._on_readable(endpoint)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            sock, peer = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(True)
        sock.settimeout(2.0)  # a client that never reads must not hang the console
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._clients[sock.fileno()] = _Endpoint(sock.fileno(), sock, f"tcp {peer}")
        with self._lock:
            self._stats.connections += 1

    def _on_readable(self, endpoint: _Endpoint) -> None:
        chunk = endpoint.read()
        if chunk is None:
            return
        if not chunk:
            if endpoint.sock is not None:
                self._clients.pop(endpoint.fd, None)
                endpoint.close()
            else:
                self._pty = None  # a foreign descriptor hung up; PtyLink keeps its own open
            return
        endpoint.rx += chunk
        while endpoint.rx:
            used, item = codec.decode_command(
                endpoint.rx,
                security=self.console.security_code is not None,
                terminator=self.terminator,
            )
            if used == 0:
                break
            del endpoint.rx[:used]
            if isinstance(item, Malformed):
                with self._lock:
                    if item.kind == "garbage":
                        self._stats.garbage_bytes += len(item.raw)
                        self._stats.aborts += item.raw.count(codec.ESC)
                    else:
                        self._stats.malformed_commands += 1
                continue
            if item is not None:
                self._on_command(endpoint, item)

    def _on_command(self, endpoint: _Endpoint, command: Command) -> None:
        with self._lock:
            self._stats.commands += 1
            if not self._online:
                return
        reply = self.console.respond(command)
        with self._lock:
            if reply is None:
                self._stats.wrong_security_code += 1
                return
            if isinstance(reply, codec.Unsupported):
                self._stats.refused += 1
            wire = self._apply_faults(codec.encode_reply(reply, etx=self.etx), reply)
        if wire is None:
            return
        if self.reply_delay_s:
            time.sleep(self.reply_delay_s)
        self._send(endpoint, wire)

    def _apply_faults(self, wire: bytes, reply: Reply) -> bytes | None:
        # Caller holds self._lock.
        faults = self._faults
        if faults.drop:
            faults.drop -= 1
            self._stats.replies_dropped += 1
            return None
        if faults.corrupt and not isinstance(reply, codec.DisplayReport):
            faults.corrupt -= 1
            self._stats.replies_corrupted += 1
            digit = wire[-2]
            wire = wire[:-2] + bytes((ord("0") if digit != ord("0") else ord("1"),)) + wire[-1:]
        if faults.no_etx:
            faults.no_etx -= 1
            wire = wire[:-1]
        if faults.garbage:
            wire = bytes(faults.garbage) + wire
            faults.garbage.clear()
        return wire

    def _send(self, endpoint: _Endpoint, wire: bytes) -> None:
        size = self.chunk_size or len(wire)
        lost = 0
        for start in range(0, len(wire), size):
            if start and self.chunk_delay_s:
                time.sleep(self.chunk_delay_s)
            lost += endpoint.write(wire[start : start + size])
        with self._lock:
            self._stats.replies_sent += 1 if not lost else 0

    def _do_drop_connections(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _do_unplug(self) -> None:
        if self._link is None:
            raise RuntimeError("only a console served with serve_pty() can be unplugged")
        self._link.unplug()
        self._pty = None

    def _do_replug(self) -> None:
        if self._link is None:
            raise RuntimeError("only a console served with serve_pty() can be replugged")
        self._link.replug()
        os.set_blocking(self._link.master_fd, False)
        self._pty = _Endpoint(self._link.master_fd, None, "pty")
