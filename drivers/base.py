"""Small interfaces, typed events and typed errors shared by every device driver."""

from __future__ import annotations

import asyncio
import enum
import errno as errnos
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol


# ---------------------------------------------------------------------------
# Errors. edgectl translates these into its own error tree at one boundary.
# ---------------------------------------------------------------------------
class DriverError(Exception):
    """Root of every driver error; carries the device and a short machine code."""

    code = "driver"

    def __init__(self, message: str, *, device: str | None = None, code: str | None = None):
        super().__init__(message)
        self.device = device
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.device}: {text}" if self.device else text


class TransportError(DriverError):
    """The line itself failed: port missing, unplugged, I/O error.

    `errno` is the system's error number when the system refused (an open: ENOENT, EACCES);
    `fault` says it in a technician's words when the transport knows them."""

    code = "transport"

    def __init__(
        self,
        message: str,
        *,
        device: str | None = None,
        code: str | None = None,
        errno: int | None = None,
        fault: DeviceFault | None = None,
    ):
        super().__init__(message, device=device, code=code)
        self.errno = errno
        self.fault = fault


class DeviceTimeout(DriverError):
    """A device did not answer within its reply timeout."""

    code = "timeout"


class FrameError(DriverError):
    """Bytes that are not a valid frame (bad CRC, bad length, bad framing)."""

    code = "frame"


class CommandRejected(DriverError):
    """The device refused a command (NAK after retries, refusal reply, wrong state)."""

    code = "rejected"


# ---------------------------------------------------------------------------
# Why a line or a device does not work, for alarms, logs, `edgectl status` and history.
# ---------------------------------------------------------------------------
PORT_MISSING = "port_missing"
PERMISSION_DENIED = "permission_denied"
LINK_ERROR = "link_error"  # the port opened once and then failed, or refused to be set up
UNREACHABLE = "unreachable"  # a TCP peer that refuses or does not answer the connection
NO_ANSWER = "no_answer"
# A device heard, but not at the address the config gives it (an IFSF node's `host`).
WRONG_ADDRESS = "wrong_address"
BAD_CRC = "bad_crc"
NAK = "nak"
# A tank gauge that answers but gives no inventory: it refuses every inventory command it is
# sent, or its inventory replies never read. Its tanks are as unread as if it were silent.
INVENTORY_REFUSED = "inventory_refused"
NO_INVENTORY = "no_inventory"


@dataclass(frozen=True, slots=True)
class DeviceFault:
    """Why a line or a device does not work: `code` names the kind (one of the constants
    above), `reason` says it in words a technician acts on."""

    code: str
    reason: str


def port_fault(port: str, error: int | None, detail: str) -> DeviceFault:
    """Why a serial port could not be opened, from the system's error number."""
    if error == errnos.ENOENT:
        return DeviceFault(PORT_MISSING, f"the port {port} does not exist (adapter unplugged?)")
    if error in (errnos.EACCES, errnos.EPERM):
        return DeviceFault(
            PERMISSION_DENIED,
            f"permission denied on {port} (is the daemon's user in group dialout?)",
        )
    if error == errnos.EBUSY:
        return DeviceFault(LINK_ERROR, f"the port {port} is in use by another program")
    return DeviceFault(LINK_ERROR, f"cannot open {port}: {detail}")


@dataclass(frozen=True, slots=True)
class LinkHealth:
    """A line's reachability, or one of its devices', changed: `address` None is the line
    itself; `fault` None means it works (again)."""

    line: str
    address: int | None
    fault: DeviceFault | None


# ---------------------------------------------------------------------------
# Dispenser vocabulary, protocol-neutral. Wayne DART's statuses are the reference
# model; other protocols map theirs onto it inside their own driver.
# ---------------------------------------------------------------------------
class DispenserStatus(enum.Enum):
    NOT_PROGRAMMED = "not_programmed"
    RESET = "reset"  # idle, ready to be authorized
    AUTHORIZED = "authorized"
    FILLING = "filling"
    FILLING_COMPLETED = "filling_completed"
    MAX_REACHED = "max_reached"  # preset amount / volume reached
    SWITCHED_OFF = "switched_off"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class DispenserEvent:
    """Something a dispenser reported. `pump` is the driver-level address."""

    line: str
    pump: int


@dataclass(frozen=True, slots=True)
class PumpOnline(DispenserEvent):
    pass


@dataclass(frozen=True, slots=True)
class PumpOffline(DispenserEvent):
    reason: str


@dataclass(frozen=True, slots=True)
class StatusReport(DispenserEvent):
    status: DispenserStatus
    raw: int


@dataclass(frozen=True, slots=True)
class NozzleReport(DispenserEvent):
    nozzle: int  # 0 = none selected
    nozzle_out: bool
    unit_price: Decimal


@dataclass(frozen=True, slots=True)
class FillingReport(DispenserEvent):
    volume: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class TotalsReport(DispenserEvent):
    nozzle: int
    volume: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class AlarmReport(DispenserEvent):
    code: int
    text: str


@dataclass(slots=True)
class LineCounters:
    """Mutable counters of one line, for status views and fault finding."""

    frames_sent: int = 0
    frames_received: int = 0
    timeouts: int = 0
    bad_crc: int = 0
    malformed: int = 0
    garbage_bytes: int = 0
    naks: int = 0
    retransmissions: int = 0
    duplicates_dropped: int = 0
    resyncs: int = 0  # data-link sequence numbers pinned again (start, pump back, clash)
    reopens: int = 0
    unexpected: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class Progress:
    """A device loop's sign of life, for a watchdog that must tell a quiet line from a stuck one.

    The loop ticks it every scheduling round, and again before each wait with the wait's
    length (an idle pause, a backoff, the longest one exchange may take); a tick promises the
    next one within that wait plus `round_s`, the most one round's own work may take. A loop
    past its promise (`overdue_s() > 0`) is stuck: an idle line still ticks, a wedged one does
    not. `started` is set by the first tick: the loop runs.
    """

    __slots__ = ("_clock", "_due", "round_s", "rounds", "started")

    def __init__(self, round_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.round_s = round_s
        self.rounds = 0
        self.started = asyncio.Event()
        self._clock = clock
        self._due = math.inf

    def tick(self, wait_s: float = 0.0) -> None:
        self.rounds += 1
        self._due = self._clock() + wait_s + self.round_s
        if self.rounds == 1:
            self.started.set()

    def overdue_s(self) -> float:
        """Seconds past the promised next tick (zero or less: on time, or not started)."""
        return self._clock() - self._due


@dataclass(frozen=True, slots=True)
class FillingInfo:
    """Volume and amount of the current or last fill, with the nozzle and price when known.

    `reference` is the dispenser's own number for a stored sale, where it keeps one (IFSF:
    the transaction's TR_Seq_Nb, "TR 0042"; an offline sale, "offline 0042"); part of the
    sale's identity, so the same stored sale read again is known whatever its totals."""

    volume: Decimal
    amount: Decimal
    nozzle: int | None = None
    unit_price: Decimal | None = None
    reference: str | None = None


class DispenserLine(Protocol):
    """What the station needs from a dispenser line driver, whatever its protocol."""

    @property
    def name(self) -> str: ...

    async def run(self) -> None: ...

    def is_online(self, address: int) -> bool: ...

    async def request_status(self, address: int) -> DispenserStatus: ...

    async def reset(self, address: int) -> DispenserStatus: ...

    async def authorize(
        self,
        address: int,
        *,
        nozzles: Sequence[int] = (),
        preset_volume: Decimal | None = None,
        preset_amount: Decimal | None = None,
    ) -> None: ...

    async def stop(self, address: int) -> None: ...

    async def suspend(self, address: int) -> None: ...

    async def resume(self, address: int) -> None: ...

    async def set_prices(self, address: int, prices: Sequence[Decimal]) -> None: ...

    async def filling_info(self, address: int) -> FillingInfo: ...

    async def totals(self, address: int, nozzle: int) -> tuple[Decimal, Decimal]: ...


# ---------------------------------------------------------------------------
# Tank gauge vocabulary, protocol-neutral. Veeder-Root TLS is the reference model
# (its i201 status bits, its delivery record); Modbus probes fill what they measure
# and leave the rest None. Units are the gauge's own (configured on the console /
# in the register map); the tank model converts.
# ---------------------------------------------------------------------------
class GaugeStatus(enum.IntFlag):
    """Per-tank status flags; bit values are TLS i201's, other protocols map onto them.

    Bits a gauge sets beyond these are kept (IntFlag keeps unknown bits), so nothing the
    gauge said is lost.
    """

    NONE = 0
    DELIVERY_IN_PROGRESS = 0x0001
    LEAK_TEST_IN_PROGRESS = 0x0002
    INVALID_HEIGHT = 0x0004


@dataclass(frozen=True, slots=True, kw_only=True)
class GaugeEvent:
    """Something a tank gauge reported. `gauge` is the driver's name for the connection."""

    gauge: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GaugeOnline(GaugeEvent):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class GaugeOffline(GaugeEvent):
    reason: str
    code: str = NO_ANSWER  # a DeviceFault code: why, for alarms and history


@dataclass(frozen=True, slots=True, kw_only=True)
class TankOffline(GaugeEvent):
    """One tank the gauge stopped reporting while the gauge itself answers (its probe failed,
    say); `tank` is numbered as in the gauge's readings. Its next reading brings it back."""

    tank: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TankGaugeReading(GaugeEvent):
    """One tank's measurement.

    `at` is when the driver took the reading (aware, UTC); `gauge_time` is the gauge's own
    clock when it reports one (naive: consoles keep local time). Measurements the gauge did
    not give are None; nothing here has been plausibility-checked yet.
    """

    tank: int
    at: datetime
    gauge_time: datetime | None = None
    product_code: str | None = None
    status_bits: GaugeStatus = GaugeStatus.NONE
    volume: Decimal | None = None
    tc_volume: Decimal | None = None
    ullage: Decimal | None = None
    height: Decimal | None = None
    water: Decimal | None = None  # water height
    temperature: Decimal | None = None
    water_volume: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GaugeDelivery(GaugeEvent):
    """A delivery as the gauge recorded it; times are the gauge's own clock (naive)."""

    tank: int
    product_code: str | None
    start: datetime
    end: datetime
    start_volume: Decimal | None = None
    start_tc_volume: Decimal | None = None
    start_water: Decimal | None = None
    start_temperature: Decimal | None = None
    end_volume: Decimal | None = None
    end_tc_volume: Decimal | None = None
    end_water: Decimal | None = None
    end_temperature: Decimal | None = None
    start_height: Decimal | None = None
    end_height: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GaugeAlarm(GaugeEvent):
    """One alarm active on a tank, in the gauge's own code and words."""

    tank: int
    code: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TankAlarms(GaugeEvent):
    """The complete set of alarms active on one tank at `at`; empty means all cleared."""

    tank: int
    at: datetime
    alarms: tuple[GaugeAlarm, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeOnline(GaugeEvent):
    """A device on a gauge bus (a Modbus probe line) answers (again): readings follow."""

    device_id: int
    tanks: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeOffline(GaugeEvent):
    """A device on a gauge bus stopped answering: no readings of its tanks until ProbeOnline."""

    device_id: int
    tanks: tuple[int, ...]
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TankReadRefused(GaugeEvent):
    """The device answered a tank's read with a refusal (a Modbus exception); the tank's
    next reading clears it. Emitted when it starts or its code changes, not on every poll."""

    tank: int
    device_id: int
    exception_code: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TankReadMalformed(GaugeEvent):
    """The device answered a tank's read with registers the map cannot decode (a short
    block). Like TankReadRefused: emitted when it starts, cleared by the tank's next reading."""

    tank: int
    device_id: int
    text: str


@dataclass(slots=True)
class BusCounters:
    """Counters of a request/reply gauge bus (Modbus), for status views and metrics."""

    requests: int = 0
    replies: int = 0
    exceptions: int = 0
    timeouts: int = 0
    malformed: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class TankGauge(Protocol):
    """What the station needs from a tank gauge connection, whatever its protocol."""

    @property
    def name(self) -> str: ...

    @property
    def is_online(self) -> bool: ...

    async def read_inventory(self, tank: int = 0) -> Sequence[TankGaugeReading]:
        """Readings of one tank, or of every tank for 0."""
        ...

    async def run(self, poll_interval_s: float, emit: Callable[[GaugeEvent], None]) -> None:
        """Poll until cancelled, emitting readings (and what else the gauge has) and
        GaugeOnline / GaugeOffline on changes of reachability."""
        ...
