"""Simulated Modbus tank probes and consoles, answered by pymodbus's own server from a thread.

Register values are computed on every read from `drivers.tank_sim` tanks through the same
register map the driver decodes with, so a map file drives both ends. Several device ids
may share one line (a multi-drop RS-485 bus) and one device may serve several tanks (a
Franklin-style console). Faults: a device answers every read with a Modbus exception, goes
silent, the whole line is unplugged; and the simulator counts requests that arrive while
another is still being answered, which a correctly scheduled master never causes.

RTU runs over a pty: the driver opens the pty's path, pymodbus's serial server opens a
second pty, and the simulator's thread copies bytes between the two masters (a null modem),
which is also where the line is unplugged. TCP listens on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.modbus_probe.registers import RegisterMap, encode_registers
from drivers.ptylink import PtyLink
from drivers.tank_sim import SimTank, TankAlarm, TankSnapshot

log = structlog.get_logger(__name__)

_START_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class SimProbe:
    """One device id on the line: its register map and the tanks it measures.

    `tanks` maps the device's own tank numbers (1 for a single probe; 1…N on a console) to
    simulated tanks. `alarm_bits` says which bit of the map's alarm field each tank alarm
    sets, for maps that have one.
    """

    device_id: int
    register_map: RegisterMap
    tanks: Mapping[int, SimTank]
    alarm_bits: Mapping[TankAlarm, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.device_id <= 247:
            raise ValueError(f"Modbus device id {self.device_id} is outside 1-247")
        if not self.tanks:
            raise ValueError(f"device {self.device_id} measures no tank")
        for number in self.tanks:
            self.register_map.tank_address(number)  # ValueError for a tank the map lacks


@dataclass(slots=True)
class SimStats:
    """What the simulated line saw. `overlaps` counts requests that arrived while an earlier
    one was still being answered: a correctly scheduled bus master keeps it at zero."""

    requests: int = 0
    replies: int = 0
    exceptions: int = 0
    unanswered: int = 0  # silent devices and unknown ids
    overlaps: int = 0
    max_in_flight: int = 0


def tank_values(
    snapshot: TankSnapshot, register_map: RegisterMap, alarm_bits: Mapping[TankAlarm, int]
) -> dict[str, float]:
    """What a device shows for a tank, per field of `register_map`, in canonical units."""
    fill = 100.0 * snapshot.gross_l / snapshot.capacity_l if snapshot.capacity_l else 0.0
    known: dict[str, float] = {
        "product_height": snapshot.height_mm,
        "water_height": snapshot.water_mm,
        "temperature": snapshot.temperature_c,
        "gross_volume": snapshot.volume_l,
        "net_volume": snapshot.tc_volume_l,
        "water_volume": snapshot.water_l,
        "ullage": snapshot.ullage_l,
        "fill_percent": fill,
    }
    bits: dict[str, int] = {}
    if register_map.status_bits is not None:
        flags = {"delivery_in_progress": snapshot.delivery_in_progress}
        word = 0
        for bit, meaning in register_map.status_bits.bits:
            if flags.get(meaning):
                word |= 1 << bit
        bits[register_map.status_bits.field] = word
    if register_map.alarm_bits is not None and alarm_bits:
        word = bits.get(register_map.alarm_bits.field, 0)
        for alarm in snapshot.alarms:
            if alarm in alarm_bits:
                word |= 1 << alarm_bits[alarm]
        bits[register_map.alarm_bits.field] = word
    values: dict[str, float] = {}
    for name in register_map.field_names:
        if name in bits:
            values[name] = bits[name]
        elif name in known:
            values[name] = known[name]
        elif name.startswith("temperature_"):
            values[name] = snapshot.temperature_c  # point temperatures: a well-mixed tank
    return values


class ModbusProbeSimulator:
    """Probes on one simulated line, served from a background thread with its own loop."""

    def __init__(
        self,
        probes: Sequence[SimProbe],
        *,
        reply_delay_s: float = 0.0,
        name: str = "modbus-sim",
    ) -> None:
        ids = [p.device_id for p in probes]
        if len(set(ids)) != len(ids):
            raise ValueError("two simulated probes share a device id")
        if not probes:
            raise ValueError("a simulated line needs at least one probe")
        self.name = name
        self.reply_delay_s = reply_delay_s
        self._probes = {p.device_id: p for p in probes}
        self._lock = threading.Lock()  # guards faults, overrides and stats
        self._stats = SimStats()
        self._in_flight = 0
        self._unanswered_pending: dict[int, int] = {}
        self._swallow_next = False
        self._corrupt = 0  # replies still to be sent with their last byte changed
        self._silent: set[int] = set()
        self._exceptions: dict[int, int] = {}
        self._short: dict[int, int] = {}  # device id → registers its replies are cut to
        self._overrides: dict[tuple[int, int, str], Decimal | float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: ModbusSerialServer | ModbusTcpServer | None = None
        self._line: PtyLink | None = None  # the driver's end
        self._server_pty: PtyLink | None = None  # the pymodbus server's end
        self._address: tuple[str, int] | None = None

    # ---------------------------------------------------------------- serving
    def serve_pty(
        self, link: Path | None = None, *, baud: int = 9600, parity: str = "N"
    ) -> PtyLink:
        """Answer Modbus RTU on a pty; the driver opens `link` (or the returned pty's slave)."""
        self._start_thread()
        line = PtyLink(link).open()
        server_pty = PtyLink().open()
        self._line, self._server_pty = line, server_pty
        try:
            self._call(self._start_rtu(server_pty.slave_name, baud, parity))
        except BaseException:
            self.stop()
            raise
        log.info(
            "modbus_sim_serving", line=self.name, pty=line.slave_name, devices=list(self._probes)
        )
        return line

    def serve_tcp(
        self, host: str = "127.0.0.1", port: int = 0, *, framer: Literal["socket", "rtu"] = "socket"
    ) -> tuple[str, int]:
        """Answer Modbus TCP (or RTU framing over TCP) on `host`; port 0 picks a free one."""
        self._start_thread()
        try:
            self._address = self._call(self._start_tcp(host, port, FramerType(framer)))
        except BaseException:
            self.stop()
            raise
        log.info(
            "modbus_sim_serving", line=self.name, address=self._address, devices=list(self._probes)
        )
        return self._address

    @property
    def address(self) -> tuple[str, int] | None:
        return self._address

    @property
    def link(self) -> PtyLink | None:
        return self._line

    def stop(self) -> None:
        """Stop serving, close the ptys and end the thread; stopping twice is harmless."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(_START_TIMEOUT_S)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_START_TIMEOUT_S)
        if loop is not None and not loop.is_running():
            loop.close()
        self._loop = self._thread = None
        for pty in (self._line, self._server_pty):
            if pty is not None:
                pty.close()
        self._line = self._server_pty = None
        self._server = None

    def __enter__(self) -> ModbusProbeSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- faults
    def set_silent(self, device_id: int, silent: bool = True) -> None:
        """The device stops answering (or answers again); requests still reach the line."""
        self._probe(device_id)
        with self._lock:
            if silent:
                self._silent.add(device_id)
            else:
                self._silent.discard(device_id)

    def set_exception(self, device_id: int, code: int | None) -> None:
        """Answer every read of the device with Modbus exception `code` (None: stop)."""
        self._probe(device_id)
        with self._lock:
            if code is None:
                self._exceptions.pop(device_id, None)
            else:
                self._exceptions[device_id] = int(ExcCodes(code))

    def set_short_replies(self, device_id: int, registers: int | None) -> None:
        """Cut every read reply of the device to its first `registers` registers (a faulty
        probe or gateway); None: whole replies again."""
        self._probe(device_id)
        with self._lock:
            if registers is None:
                self._short.pop(device_id, None)
            else:
                self._short[device_id] = max(0, int(registers))

    def corrupt_next_reply(self, n: int = 1) -> None:
        """Change the last byte of the next `n` replies: over RTU the CRC no longer checks
        (the master drops the reply and times out); over TCP the data is wrong."""
        with self._lock:
            self._corrupt += n

    def override(
        self, device_id: int, tank: int, field_name: str, value: Decimal | float | None
    ) -> None:
        """Show `value` (canonical units) for one field instead of the tank's (None: stop)."""
        probe = self._probe(device_id)
        if field_name not in probe.register_map.field_names:
            raise KeyError(f"map {probe.register_map.name} has no field {field_name!r}")
        with self._lock:
            if value is None:
                self._overrides.pop((device_id, tank, field_name), None)
            else:
                self._overrides[(device_id, tank, field_name)] = value

    def unplug(self) -> None:
        """Pull the line's adapter out: the driver's port hangs up and its path disappears."""
        line = self._line
        if line is None:
            raise RuntimeError("only a line served with serve_pty() can be unplugged")
        self._call(self._detach_line())
        line.unplug()

    def replug(self) -> None:
        """Plug a fresh adapter in at the same path."""
        line = self._line
        if line is None:
            raise RuntimeError("only a line served with serve_pty() can be replugged")
        line.replug()
        self._call(self._attach_line())

    @property
    def stats(self) -> SimStats:
        with self._lock:
            return replace(self._stats)

    # ---------------------------------------------------------------- the thread
    def _start_thread(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the simulator is already serving")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"{self.name}-loop", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run `coro` on the simulator's loop and wait for its result."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("the simulator is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(_START_TIMEOUT_S)

    async def _start_rtu(self, port: str, baud: int, parity: str) -> None:
        server = ModbusSerialServer(
            self._devices(),
            framer=FramerType.RTU,
            port=port,
            baudrate=baud,
            parity=parity,
            trace_packet=self._trace_packet,
            trace_pdu=self._trace_pdu,
        )
        await server.serve_forever(background=True)
        self._server = server
        await self._attach_line()

    async def _start_tcp(self, host: str, port: int, framer: FramerType) -> tuple[str, int]:
        server = ModbusTcpServer(
            self._devices(),
            framer=framer,
            address=(host, port),
            trace_packet=self._trace_packet,
            trace_pdu=self._trace_pdu,
        )
        await server.serve_forever(background=True)
        self._server = server
        listener: Any = server.transport  # an asyncio.Server for TCP
        bound = listener.sockets[0].getsockname()
        return (str(bound[0]), int(bound[1]))

    async def _shutdown(self) -> None:
        await self._detach_line()
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]

    # -- the null modem between the driver's pty and the server's pty
    async def _attach_line(self) -> None:
        line, server_pty = self._line, self._server_pty
        assert line is not None and server_pty is not None
        loop = asyncio.get_running_loop()
        for pty in (line, server_pty):
            os.set_blocking(pty.master_fd, False)
        loop.add_reader(line.master_fd, self._copy, line.master_fd, server_pty.master_fd)
        loop.add_reader(server_pty.master_fd, self._copy, server_pty.master_fd, line.master_fd)

    async def _detach_line(self) -> None:
        loop = asyncio.get_running_loop()
        for pty in (self._line, self._server_pty):
            if pty is not None and pty.is_open:
                loop.remove_reader(pty.master_fd)

    def _copy(self, source: int, target: int) -> None:
        try:
            chunk = os.read(source, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EBADF):
                raise
            return
        with contextlib.suppress(BlockingIOError, OSError):
            # Nobody reading the other end: a real line loses the bytes too.
            os.write(target, chunk)

    # -- devices
    def _devices(self) -> list[SimDevice]:
        devices = []
        for probe in self._probes.values():
            rmap = probe.register_map
            first = min(rmap.tank_address(n) for n in probe.tanks)
            last = max(rmap.tank_address(n) for n in probe.tanks) + rmap.block_length
            served = [
                SimData(address=first, count=last - first, values=0, datatype=DataType.REGISTERS)
            ]
            # The other register table exists but every address in it is illegal.
            unused = [SimData(address=0, count=1, datatype=DataType.INVALID)]
            bits = [SimData(address=0, count=16, values=False, datatype=DataType.BITS)]
            holding, inputs = (served, unused) if rmap.function_code == 3 else (unused, served)
            devices.append(
                SimDevice(
                    id=probe.device_id,
                    simdata=(bits, list(bits), holding, inputs),
                    action=self._action_for(probe),
                )
            )
        # Device id 0 stands for "any other id": it exists so that pymodbus finds a device
        # for a request to an id nobody has (every address illegal); the reply is dropped.
        nobody = [SimData(address=0, count=1, datatype=DataType.INVALID)]
        bits = [SimData(address=0, count=16, values=False, datatype=DataType.BITS)]
        devices.append(SimDevice(id=0, simdata=(bits, list(bits), nobody, list(nobody))))
        return devices

    def _action_for(self, probe: SimProbe) -> Any:
        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            return await self._answer(probe, start_address, registers, set_values)

        return action

    async def _answer(
        self,
        probe: SimProbe,
        start_address: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        device_id = probe.device_id
        with self._lock:
            code = self._exceptions.get(device_id)
            silent = device_id in self._silent
            overrides = {
                (tank, name): value
                for (dev, tank, name), value in self._overrides.items()
                if dev == device_id
            }
        if not silent and self.reply_delay_s:
            await asyncio.sleep(self.reply_delay_s)  # the probe's own think time
        if code is not None:
            return ExcCodes(code)
        if set_values is not None:
            return ExcCodes.ILLEGAL_FUNCTION  # probes are read-only here
        rmap = probe.register_map
        for number, tank in probe.tanks.items():
            values: dict[str, Decimal | float] = dict(
                tank_values(tank.snapshot(), rmap, probe.alarm_bits)
            )
            for (tank_number, name), value in overrides.items():
                if tank_number == number:
                    values[name] = value
            offset = rmap.tank_address(number) - start_address
            registers[offset : offset + rmap.block_length] = encode_registers(rmap, values)
        return None

    def _probe(self, device_id: int) -> SimProbe:
        try:
            return self._probes[device_id]
        except KeyError:
            raise KeyError(f"no simulated device {device_id}") from None

    # -- accounting and silence, from pymodbus's trace hooks (run on the loop thread)
    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        device_id = pdu.dev_id
        with self._lock:
            stats = self._stats
            if not sending:
                stats.requests += 1
                if device_id in self._silent or device_id not in self._probes:
                    # Never answered, so never in flight: the master's timeout ends it.
                    self._unanswered_pending[device_id] = (
                        self._unanswered_pending.get(device_id, 0) + 1
                    )
                    return pdu
                if self._in_flight:
                    stats.overlaps += 1
                self._in_flight += 1
                stats.max_in_flight = max(stats.max_in_flight, self._in_flight)
                return pdu
            pending = self._unanswered_pending.get(device_id, 0)
            if pending:
                self._unanswered_pending[device_id] = pending - 1
                self._swallow_next = True
                stats.unanswered += 1
                return pdu
            self._in_flight = max(0, self._in_flight - 1)
            stats.replies += 1
            if pdu.isError():
                stats.exceptions += 1
            elif device_id in self._short:
                pdu.registers = list(pdu.registers[: self._short[device_id]])
        return pdu

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending:
            with self._lock:
                if self._swallow_next:
                    self._swallow_next = False
                    return b""
                if self._corrupt and data:
                    self._corrupt -= 1
                    return data[:-1] + bytes((data[-1] ^ 0xFF,))
        return data


def sim_probe(
    device_id: int,
    register_map: RegisterMap,
    tanks: Mapping[int, SimTank] | SimTank,
    *,
    alarm_bits: Mapping[TankAlarm, int] | None = None,
) -> SimProbe:
    """A SimProbe; a single tank is the device's tank 1."""
    mapping = {1: tanks} if isinstance(tanks, SimTank) else dict(tanks)
    return SimProbe(device_id, register_map, mapping, dict(alarm_bits or {}))
