"""Modbus tank-probe bus master: one task per bus polls its probes, one request at a time.

A bus is one RS-485 line (Modbus RTU) or one TCP connection (a console or a gateway). The
probes on it are device ids; each serves one tank (a probe) or several (a console). The
bus runs on the bus engine (drivers/bus.py): only its one task talks to the pymodbus
client, one request at a time, so a half-duplex line never carries two requests at once
(pymodbus does the framing). A device that stops
answering is declared offline after `offline_after` misses and then only retried with
jittered, capped backoff, so it never slows the others down; a Modbus exception is the
device's answer (it is online) and is reported per tank, without disturbing the bus.

Readings leave in mm, °C and L (the register map converts). Tank charts and temperature
compensation are not done here: the station's tank model does them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, TypeAlias

import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers.base import (
    LINK_ERROR,
    NO_ANSWER,
    UNREACHABLE,
    CommandRejected,
    DeviceFault,
    DeviceTimeout,
    DriverError,
    FrameError,
    GaugeAlarm,
    GaugeEvent,
    GaugeOffline,
    GaugeOnline,
    GaugeStatus,
    Progress,
    TankAlarms,
    TankGaugeReading,
    TransportError,
)
from drivers.base import BusCounters as BusCounters  # moved to base: the station reads them
from drivers.base import ProbeOffline as ProbeOffline
from drivers.base import ProbeOnline as ProbeOnline
from drivers.base import TankReadMalformed as TankReadMalformed
from drivers.base import TankReadRefused as TankReadRefused
from drivers.bus import Backoff, BusEngine, Job, Poll
from drivers.modbus_probe import adu
from drivers.modbus_probe.adu import Adu, Framing
from drivers.modbus_probe.registers import RegisterMap, decode_registers, implausible
from drivers.transport import why_port_fails

log = structlog.get_logger(__name__)

ModbusClient: TypeAlias = AsyncModbusSerialClient | AsyncModbusTcpClient
Emit: TypeAlias = Callable[[GaugeEvent], None]
# pymodbus's hook on the bytes it writes (True) and receives (False); returns the bytes.
PacketTrace: TypeAlias = Callable[[bool, bytes], bytes]
# (direction "tx"/"rx", the ADU's bytes, the ADU read from them, monotonic clock).
FrameTap: TypeAlias = Callable[[str, bytes, Adu, float], None]

_STATUS_FLAGS = {
    "delivery_in_progress": GaugeStatus.DELIVERY_IN_PROGRESS,
    "leak_test_in_progress": GaugeStatus.LEAK_TEST_IN_PROGRESS,
    "invalid_height": GaugeStatus.INVALID_HEIGHT,
}
_HEIGHTS = ("product_height", "water_height")


# ======================================================================================
# Settings
# ======================================================================================
@dataclass(frozen=True, slots=True)
class SerialLine:
    """An RS-485 line through a serial port (Modbus RTU). Probes are typically 9600 8N1."""

    port: str
    baud: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    bytesize: int = 8
    stopbits: int = 1


@dataclass(frozen=True, slots=True)
class TcpLink:
    """A Modbus TCP device or gateway; `framer="rtu"` for RTU frames over a TCP socket."""

    host: str
    port: int = 502
    framer: Literal["socket", "rtu"] = "socket"


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """One device id on the bus.

    `tanks` maps the station's tank numbers (what readings carry) to the device's own
    tank numbers: {3: 1} for a probe in tank 3; {1: 1, 2: 2, 3: 3} for a console.
    """

    device_id: int
    register_map: RegisterMap
    tanks: Mapping[int, int]
    timeout_s: float | None = None  # None: the bus's request_timeout_s

    def __post_init__(self) -> None:
        if not 1 <= self.device_id <= 247:
            raise ValueError(f"Modbus device id {self.device_id} is outside 1-247")
        if not self.tanks:
            raise ValueError(f"device {self.device_id} serves no tank")
        for device_tank in self.tanks.values():
            self.register_map.tank_address(device_tank)  # ValueError: the map lacks it


@dataclass(frozen=True, slots=True)
class ModbusBusSettings:
    name: str
    link: SerialLine | TcpLink
    request_timeout_s: float = 1.0  # probes answer within ~500 ms
    offline_after: int = 3
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 60.0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 30.0
    # Silence kept after every exchange before the next request. None: 3.5 characters at
    # the line's baud rate (the RTU inter-frame gap, at least 1.75 ms), 0 over TCP.
    turnaround_s: float | None = None

    def __post_init__(self) -> None:
        if self.request_timeout_s <= 0:
            raise ValueError(f"bus {self.name}: request_timeout_s must be positive")
        if self.offline_after < 1:
            raise ValueError(f"bus {self.name}: offline_after must be at least 1")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError(f"bus {self.name}: need 0 < backoff_initial_s <= backoff_max_s")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            raise ValueError(f"bus {self.name}: need 0 < reconnect_initial_s <= reconnect_max_s")

    @property
    def gap_s(self) -> float:
        if self.turnaround_s is not None:
            return self.turnaround_s
        if isinstance(self.link, TcpLink):
            return 0.0
        return max(3.5 * 11 / self.link.baud, 0.00175)


# ======================================================================================
# Events and errors of this driver (beyond the shared gauge vocabulary)
# ======================================================================================
@dataclass(frozen=True, slots=True)
class ModbusExceptionReply:
    """A device's refusal: a Modbus exception response, as a typed reply."""

    device_id: int
    function_code: int
    exception_code: int

    @property
    def text(self) -> str:
        return adu.exception_text(self.exception_code)


class ProbeRefused(CommandRejected):
    """A read was answered with a Modbus exception."""

    code = "modbus_exception"

    def __init__(self, reply: ModbusExceptionReply, *, device: str) -> None:
        super().__init__(reply.text, device=device)
        self.reply = reply
        self.exception_code = reply.exception_code


# ======================================================================================
# Pure helpers
# ======================================================================================
def reading_from_values(
    gauge: str,
    tank: int,
    at: datetime,
    register_map: RegisterMap,
    values: Mapping[str, Decimal],
) -> TankGaugeReading:
    """A tank reading from decoded register values (mm, °C, L).

    Status bits come from the map's status field; a level outside the map's plausible
    range also sets INVALID_HEIGHT (the value is still passed on, flagged).
    """
    status = GaugeStatus.NONE
    if register_map.status_bits is not None:
        word = values.get(register_map.status_bits.field)
        if word is not None:
            for _bit, meaning in register_map.status_bits.active(int(word)):
                status |= _STATUS_FLAGS[meaning]
    if any(name in _HEIGHTS for name in implausible(register_map, values)):
        status |= GaugeStatus.INVALID_HEIGHT
    return TankGaugeReading(
        gauge=gauge,
        tank=tank,
        at=at,
        status_bits=status,
        volume=values.get("gross_volume"),
        tc_volume=values.get("net_volume"),
        ullage=values.get("ullage"),
        height=values.get("product_height"),
        water=values.get("water_height"),
        temperature=values.get("temperature"),
        water_volume=values.get("water_volume"),
    )


def alarms_from_values(
    register_map: RegisterMap, values: Mapping[str, Decimal]
) -> tuple[tuple[int, str], ...] | None:
    """Active (bit, text) alarms of a tank, or None when the map has no alarm field."""
    table = register_map.alarm_bits
    if table is None or table.field not in values:
        return None
    return table.active(int(values[table.field]))


# ======================================================================================
# The bus
# ======================================================================================
@dataclass
class _Probe:
    """Bus-side state of one device: liveness, backoff, what was last reported."""

    settings: ProbeSettings
    backoff: Backoff
    state: Literal["unknown", "online", "offline"] = "unknown"
    misses: int = 0
    next_try: float = 0.0  # offline: when to try again
    next_poll: float = 0.0  # online: when the next routine poll is due
    refused: dict[int, int] = field(default_factory=dict)  # tank → exception code
    malformed: set[int] = field(default_factory=set)  # tanks whose last reply did not decode
    alarms: dict[int, tuple[tuple[int, str], ...]] = field(default_factory=dict)

    @property
    def device_id(self) -> int:
        return self.settings.device_id

    @property
    def tanks(self) -> tuple[int, ...]:
        return tuple(self.settings.tanks)

    @property
    def online(self) -> bool:
        return self.state == "online"


class _LinkLost(Exception):
    pass


class ModbusProbeBus:
    """Master of one Modbus bus of tank probes; a TankGauge whose tanks are the station's.

    Only `run()` touches the client; `read_inventory()` queues ahead of routine polls.
    """

    def __init__(
        self,
        settings: ModbusBusSettings,
        probes: Sequence[ProbeSettings],
        *,
        client_factory: Callable[[ModbusBusSettings, float, PacketTrace], ModbusClient]
        | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        ids = [p.device_id for p in probes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"bus {settings.name}: two probes share a device id")
        self.settings = settings
        self._rng = random.Random()
        self._probes = [
            _Probe(p, Backoff(settings.backoff_initial_s, settings.backoff_max_s, self._rng))
            for p in probes
        ]
        self._by_tank: dict[int, _Probe] = {}
        for probe in self._probes:
            for tank in probe.tanks:
                if tank in self._by_tank:
                    raise ValueError(f"bus {settings.name}: tank {tank} is on two devices")
                self._by_tank[tank] = probe
        self._client_factory = client_factory or make_client
        self._clock = clock
        self._now = now
        self._client: ModbusClient | None = None
        self._connecting: ModbusClient | None = None
        self._emit: Emit = _discard
        self._poll_interval_s = 10.0
        self._gauge_online: bool | None = None  # None: not known yet
        self._link_useful = False  # something answered since the link was (re)opened
        self.counters = BusCounters()
        self.progress = Progress(clock=clock)  # for the daemon's watchdog
        # A link on which nothing answered is reconnected ever more slowly: the backoff is
        # reset only when a link that served is lost.
        self._bus = BusEngine(
            settings.name,
            self,
            reopen=Backoff(settings.reconnect_initial_s, settings.reconnect_max_s, self._rng),
            clock=clock,
            progress=self.progress,
            lost=(_LinkLost,),
            stopped="bus stopped",
        )
        self.taps: list[FrameTap] = self._bus.taps
        link = settings.link
        self._framing: Framing = (
            "rtu" if isinstance(link, SerialLine) or link.framer == "rtu" else "socket"
        )
        self._rx_shown = b""  # the receive buffer pymodbus last showed us
        self._rx_pending = bytearray()  # received bytes not yet handed to the taps

    # ------------------------------------------------------------------ public API
    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def is_online(self) -> bool:
        """True while at least one device on the bus answers."""
        return any(p.online for p in self._probes)

    @property
    def tanks(self) -> tuple[int, ...]:
        return tuple(sorted(self._by_tank))

    def probe_online(self, device_id: int) -> bool:
        return self._probe_by_id(device_id).online

    async def read_inventory(self, tank: int = 0) -> list[TankGaugeReading]:
        """Read one tank now (or every tank for 0), ahead of the routine polls.

        For one tank a refusal or a timeout raises (ProbeRefused, DeviceTimeout); for all
        tanks the readings that could be taken are returned, and the first error is raised
        only when none could.
        """
        if tank and tank not in self._by_tank:
            raise CommandRejected(f"no tank {tank} on this bus", device=self.name)
        if self._client is None:
            raise TransportError("the bus is not connected", device=self.name)
        tanks = (tank,) if tank else self.tanks
        return await self._bus.submit("inventory", lambda: self._read_tanks(tanks))

    async def run(self, poll_interval_s: float, emit: Emit) -> None:
        """Own the client: connect, poll every device each `poll_interval_s`, reconnect."""
        self._emit = emit
        self._poll_interval_s = poll_interval_s
        self._bus.open_wait_s = self._client_timeout()  # a connect may take that long
        await self._bus.run()

    # The bus engine's questions (drivers/bus.py).
    async def bus_open(self) -> None:
        # pymodbus clients bind to the running loop: build a fresh one for each attempt.
        client = self._client_factory(self.settings, self._client_timeout(), self._trace_packet)
        try:
            connected = await client.connect()
        except (ModbusException, OSError) as exc:
            log.debug("modbus_connect_failed", bus=self.name, error=str(exc))
            connected = False
        finally:
            _resume_cancellation(client)
        if not connected:
            client.close()
            raise _LinkLost("no connection")
        self._connecting = client

    def bus_open_failed(self, exc: BaseException) -> None:
        why = self._why_no_link()
        self._all_offline(why.reason, why.code)

    def bus_opened(self, first: bool) -> None:
        if not first:
            self.counters.reconnects += 1
        self._client, self._connecting = self._connecting, None
        self._link_useful = False

    def bus_close(self) -> None:
        client, self._client = self._client, None  # from here on, read_inventory() fails
        if client is not None:
            client.close()

    def bus_lost(self, exc: BaseException) -> None:
        lost = str(exc)
        log.warning("modbus_link_lost", bus=self.name, reason=lost)
        self._all_offline(lost)
        if self._link_useful:
            self._bus.reopen.reset()

    def bus_abandoned(self, job: Job[Any], exc: BaseException) -> BaseException:
        if isinstance(exc, _LinkLost):
            return TransportError(f"link lost: {exc}", device=self.name)
        if isinstance(exc, DriverError):
            return exc
        return TransportError("bus stopped", device=self.name)

    def _why_no_link(self) -> DeviceFault:
        """What pymodbus does not say: why the serial port would not open."""
        link = self.settings.link
        if isinstance(link, SerialLine):
            fault = why_port_fails(link.port)
            return fault or DeviceFault(LINK_ERROR, f"cannot open {link.port}")
        return DeviceFault(UNREACHABLE, f"cannot connect to {link.host}:{link.port}")

    # ------------------------------------------------------------------ scheduling
    def bus_next(self) -> Poll | float:
        probe = self._next_due()
        if probe is None:
            return min(self._due(p) for p in self._probes) - self._clock()
        return self._poll(probe)

    def _next_due(self) -> _Probe | None:
        now = self._clock()
        due = [p for p in self._probes if self._due(p) <= now]
        return min(due, key=self._due) if due else None

    def _due(self, probe: _Probe) -> float:
        return probe.next_poll if probe.online else probe.next_try

    async def _poll(self, probe: _Probe) -> None:
        probe.next_poll = self._clock() + self._poll_interval_s
        for tank in probe.tanks:
            try:
                reading = await self._read_tank(probe, tank)
            except DeviceTimeout:
                return  # the rest of this device's tanks wait for its next turn
            except (ProbeRefused, FrameError):
                continue
            self._emit(reading)

    async def _read_tanks(self, tanks: tuple[int, ...]) -> list[TankGaugeReading]:
        """A caller's read: what could be read, or the first error when nothing could."""
        readings: list[TankGaugeReading] = []
        first_error: DriverError | None = None
        for tank in tanks:
            try:
                readings.append(await self._read_tank(self._by_tank[tank], tank))
            except DriverError as exc:
                first_error = first_error or exc
                if len(tanks) == 1:
                    break
        if first_error is not None and not readings:
            raise first_error
        return readings

    # ------------------------------------------------------------------ one tank
    async def _read_tank(self, probe: _Probe, tank: int) -> TankGaugeReading:
        """Read one tank's block; update liveness; raise DeviceTimeout / ProbeRefused."""
        rmap = probe.settings.register_map
        device = self._device_name(probe)
        reply = await self._transact(probe, probe.settings.tanks[tank])
        if reply is None:
            self._missed(probe)
            raise DeviceTimeout(f"no reply reading tank {tank}", device=device)
        self._answered(probe)
        if isinstance(reply, ModbusExceptionReply):
            self._refused(probe, tank, reply)
            raise ProbeRefused(reply, device=device)
        try:
            values = decode_registers(rmap, reply)
        except FrameError as exc:
            self.counters.malformed += 1
            self._undecodable(probe, tank, str(exc))
            raise FrameError(f"tank {tank}: {exc}", device=device) from exc
        probe.refused.pop(tank, None)
        probe.malformed.discard(tank)
        at = self._now()
        self._report_alarms(probe, tank, at, alarms_from_values(rmap, values))
        return reading_from_values(self.name, tank, at, rmap, values)

    async def _transact(
        self, probe: _Probe, device_tank: int
    ) -> list[int] | ModbusExceptionReply | None:
        """One read request on the bus: registers, a typed refusal, or None (no answer)."""
        client = self._client
        if client is None:
            raise _LinkLost("not connected")
        rmap = probe.settings.register_map
        address = rmap.tank_address(device_tank)
        count = rmap.block_length
        timeout = probe.settings.timeout_s or self.settings.request_timeout_s
        read = (
            client.read_holding_registers
            if rmap.function_code == 3
            else client.read_input_registers
        )
        self.progress.tick(timeout + self.settings.gap_s)
        self.counters.requests += 1
        try:
            async with asyncio.timeout(timeout):
                response: ModbusPDU = await read(address, count=count, device_id=probe.device_id)
            _resume_cancellation(None)
        except TimeoutError:
            self.counters.timeouts += 1
            self._flush_rx()
            return None
        except ConnectionException as exc:
            raise _LinkLost("the link closed") from exc
        except ModbusException:
            # pymodbus's own "no response" (or a reply from the wrong device id).
            self.counters.timeouts += 1
            self._flush_rx()
            return None
        finally:
            if self.settings.gap_s:
                await asyncio.sleep(self.settings.gap_s)
        self.counters.replies += 1
        if response.isError():
            self.counters.exceptions += 1
            return ModbusExceptionReply(
                probe.device_id, rmap.function_code, int(getattr(response, "exception_code", 0))
            )
        return list(response.registers)

    def _client_timeout(self) -> float:
        # Our own per-request timeout is the one that counts; pymodbus's (also its connect
        # timeout) sits above the longest of them so it never fires first.
        longest = max(
            [p.settings.timeout_s or self.settings.request_timeout_s for p in self._probes]
        )
        return longest + 0.5

    # ------------------------------------------------------------------ taps
    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus's packet hook: cut the bytes into ADUs for the taps; `data` goes on as is.

        pymodbus shows what it sends as one ADU, but what it receives as its whole receive
        buffer each time bytes arrive (what it kept of earlier chunks, then the new ones), so
        only the bytes past what it showed last are new.
        """
        if not self.taps:
            self._rx_shown, self._rx_pending = b"", bytearray()
            return data
        try:
            if sending:
                self._flush_rx()
                self._rx_shown = b""
                self._tap("tx", data, adu.decode(data, self._framing, request=True))
                return data
            fresh = data
            if self._rx_shown and data.startswith(self._rx_shown):
                fresh = data[len(self._rx_shown) :]
            self._rx_shown = data
            self._rx_pending += fresh
            while self._rx_pending:
                length = adu.frame_length(self._rx_pending, self._framing, request=False)
                if length is None:
                    break
                raw = bytes(self._rx_pending[:length])
                del self._rx_pending[:length]
                self._tap("rx", raw, adu.decode(raw, self._framing, request=False))
        except Exception:
            log.exception("modbus_trace_failed", bus=self.name)
        return data

    def _flush_rx(self) -> None:
        """Bytes of a reply that never completed go to the taps as they are."""
        if self._rx_pending and self.taps:
            raw = bytes(self._rx_pending)
            self._tap("rx", raw, adu.decode(raw, self._framing, request=False, complete=False))
        self._rx_pending = bytearray()

    def _tap(self, direction: str, wire: bytes, item: Adu) -> None:
        self._bus.tap(direction, wire, item)

    # ------------------------------------------------------------------ liveness
    def _answered(self, probe: _Probe) -> None:
        probe.misses = 0
        probe.backoff.reset()
        self._link_useful = True
        if probe.online:
            return
        probe.state = "online"
        probe.next_poll = self._clock() + self._poll_interval_s
        log.info("modbus_probe_online", bus=self.name, device=probe.device_id)
        self._emit(ProbeOnline(gauge=self.name, device_id=probe.device_id, tanks=probe.tanks))
        self._update_gauge("")

    def _missed(self, probe: _Probe) -> None:
        probe.misses += 1
        now = self._clock()
        if probe.state != "offline" and probe.misses >= self.settings.offline_after:
            self._mark_offline(probe, f"no reply to {probe.misses} requests")
        if probe.state == "offline":
            probe.next_try = now + probe.backoff.next()
            if isinstance(self.settings.link, TcpLink) and all(
                p.state == "offline" for p in self._probes
            ):
                # Nobody answers over this connection: it may be half-open; start afresh.
                raise _LinkLost("no device answers")
        else:
            # Not offline yet: ask again soon rather than a whole poll interval later.
            retry = now + min(self._poll_interval_s, self.settings.backoff_initial_s)
            probe.next_try = probe.next_poll = retry

    def _mark_offline(self, probe: _Probe, reason: str, code: str = NO_ANSWER) -> None:
        if probe.state == "offline":
            return
        probe.state = "offline"
        probe.refused.clear()
        probe.malformed.clear()
        probe.alarms.clear()
        log.warning("modbus_probe_offline", bus=self.name, device=probe.device_id, reason=reason)
        self._emit(
            ProbeOffline(
                gauge=self.name, device_id=probe.device_id, tanks=probe.tanks, reason=reason
            )
        )
        self._update_gauge(reason, code)

    def _update_gauge(self, reason: str, code: str = NO_ANSWER) -> None:
        """GaugeOnline when a first device answers, GaugeOffline when every one is offline."""
        if self.is_online:
            if self._gauge_online is not True:
                self._gauge_online = True
                self._emit(GaugeOnline(gauge=self.name))
        elif all(p.state == "offline" for p in self._probes) and self._gauge_online is not False:
            self._gauge_online = False
            self._emit(GaugeOffline(gauge=self.name, reason=reason, code=code))

    def _all_offline(self, reason: str, code: str = LINK_ERROR) -> None:
        for probe in self._probes:
            self._mark_offline(probe, reason, code)
            probe.next_try = 0.0  # a fresh link: try everyone at once
            probe.misses = 0

    def _refused(self, probe: _Probe, tank: int, reply: ModbusExceptionReply) -> None:
        if probe.refused.get(tank) == reply.exception_code:
            return
        probe.refused[tank] = reply.exception_code
        log.warning(
            "modbus_read_refused",
            bus=self.name,
            device=probe.device_id,
            tank=tank,
            exception_code=reply.exception_code,
        )
        self._emit(
            TankReadRefused(
                gauge=self.name,
                tank=tank,
                device_id=probe.device_id,
                exception_code=reply.exception_code,
                text=reply.text,
            )
        )

    def _undecodable(self, probe: _Probe, tank: int, text: str) -> None:
        if tank in probe.malformed:
            return
        probe.malformed.add(tank)
        log.warning(
            "modbus_read_malformed", bus=self.name, device=probe.device_id, tank=tank, why=text
        )
        self._emit(
            TankReadMalformed(gauge=self.name, tank=tank, device_id=probe.device_id, text=text)
        )

    def _report_alarms(
        self, probe: _Probe, tank: int, at: datetime, active: tuple[tuple[int, str], ...] | None
    ) -> None:
        if active is None or probe.alarms.get(tank) == active:
            return
        probe.alarms[tank] = active
        alarms = tuple(
            GaugeAlarm(gauge=self.name, tank=tank, code=bit, text=text) for bit, text in active
        )
        self._emit(TankAlarms(gauge=self.name, tank=tank, at=at, alarms=alarms))

    # ------------------------------------------------------------------ small things
    def _probe_by_id(self, device_id: int) -> _Probe:
        for probe in self._probes:
            if probe.device_id == device_id:
                return probe
        raise KeyError(f"no device {device_id} on bus {self.name}")

    def _device_name(self, probe: _Probe) -> str:
        return f"{self.name}/{probe.device_id}"


def _resume_cancellation(client: Any) -> None:
    """Raise the CancelledError pymodbus swallowed. Its requests and connect run under
    `asyncio.wait_for`, which on Python 3.11 returns the inner result when the cancellation
    lands as that completes (gh-86296): the bus task would then never stop, and a daemon
    asked to stop would hang. The task still counts the request (`cancelling()`)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        if client is not None:
            client.close()
        raise asyncio.CancelledError


def make_client(
    settings: ModbusBusSettings, timeout_s: float, trace_packet: PacketTrace | None = None
) -> ModbusClient:
    """A pymodbus client for the bus's link; call it inside the running loop.

    pymodbus's own retries and reconnection are off: the bus retries on its schedule and
    reconnects with its own backoff. `trace_packet` sees every packet (the bus's taps).
    """
    link = settings.link
    client: ModbusClient
    if isinstance(link, SerialLine):
        client = AsyncModbusSerialClient(
            link.port,
            framer=FramerType.RTU,
            baudrate=link.baud,
            parity=link.parity,
            bytesize=link.bytesize,
            stopbits=link.stopbits,
            timeout=timeout_s,
            retries=0,
            reconnect_delay=0,
            name=settings.name,
            trace_packet=trace_packet,
        )
    else:
        client = AsyncModbusTcpClient(
            link.host,
            port=link.port,
            framer=FramerType(link.framer),
            timeout=timeout_s,
            retries=0,
            reconnect_delay=0,
            name=settings.name,
            trace_packet=trace_packet,
        )
    # Without this, pymodbus drops a TCP connection after a few unanswered requests, even
    # when only one device behind a gateway is silent; the bus decides that itself.
    client.set_max_no_responses(1_000_000)
    return client


def _discard(_event: GaugeEvent) -> None:
    pass
