"""Veeder-Root TLS gauge client: one task per console connection polls it and carries requests.

Figures leave the driver in mm, °C and litres whatever the console's unit setup (`units`).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Any, Final, Literal, TypeVar

import structlog

from drivers.base import (
    INVENTORY_REFUSED,
    LINK_ERROR,
    NO_ANSWER,
    NO_INVENTORY,
    CommandRejected,
    DeviceFault,
    DeviceTimeout,
    FrameError,
    GaugeAlarm,
    GaugeDelivery,
    GaugeEvent,
    GaugeOffline,
    GaugeOnline,
    GaugeStatus,
    LineCounters,
    Progress,
    TankAlarms,
    TankGaugeReading,
    TankOffline,
    TransportError,
)
from drivers.bus import Backoff, BusEngine, DecodingReader, Job, Poll, ReplyDeadline
from drivers.transport import Transport
from drivers.veeder_root import codec
from drivers.veeder_root.codec import Malformed, Reply

log = structlog.get_logger(__name__)

InventoryFormat = Literal["computer", "display", "auto"]
Units = Literal["metric", "us"]
Emit = Callable[[GaugeEvent], None]
# (direction "tx"/"rx", the bytes, what they are, monotonic clock): every command written,
# the ESC sent on a timeout (item None), and every item decoded from the console's bytes.
FrameTap = Callable[[str, bytes, "codec.Command | Reply | Malformed | None", float], None]
_R = TypeVar("_R")

UNITS: Final[tuple[Units, ...]] = ("metric", "us")
INVENTORY_FORMATS: Final[tuple[InventoryFormat, ...]] = ("computer", "display", "auto")
# What a technician checks when a console refuses its inventory commands: the console
# answers, so the line works, but the port is not set up to take them.
_REFUSAL_HINT: Final = (
    "check the console's RS-232 port settings (the port must be set up for serial "
    "computer commands) and its serial security code"
)
# Exact by definition (US gallon of 231 in³; inch of 25.4 mm).
US_GALLON_L: Final = Decimal("3.785411784")
INCH_MM: Final = Decimal("25.4")
# A converted figure keeps as many places as the codec gives (a float32 carries ~7 digits),
# in a context wide enough for any float32 (up to 39 integer digits), as the codec decodes.
_CONVERTED: Final = Decimal(1).scaleb(-codec.DECIMAL_PLACES)
_WIDE: Final = Context(prec=60)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _ignore(_event: GaugeEvent) -> None:
    pass


@dataclass(frozen=True, slots=True)
class TlsGaugeSettings:
    """Site settings of one console connection.

    `reply_timeout_s` is how long the console may stay silent, before its first byte or
    between two, without having sent ETX; `max_reply_s` caps a reply that keeps trickling.
    `inventory_format` "computer" asks only i201, "display" only the printed I201 report,
    "auto" (the default) i201 and, when the console refuses it, I201 from then on until the
    line is reopened (the console may have been set up anew meanwhile). `units` is the
    console's own unit setup: "metric" (mm, °C, litres) or "us" (inches, °F, US gallons); the
    driver always gives mm, °C and litres. `tank_numbers` are the console's tanks the station
    reads: one left out of `offline_after` inventories in a row is reported (TankOffline);
    empty, the tanks the console has reported since the driver started are watched.
    """

    name: str
    security_code: str | None = None
    terminator: bytes = b""
    etx: int = codec.ETX
    reply_timeout_s: float = 5.0
    max_reply_s: float = 60.0
    retries: int = 1
    offline_after: int = 2
    inventory_format: InventoryFormat = "auto"
    units: Units = "metric"
    tank_numbers: tuple[int, ...] = ()
    deliveries_interval_s: float = 600.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    reopen_initial_s: float = 0.5
    reopen_max_s: float = 10.0

    def __post_init__(self) -> None:
        # Encoding a command checks the security code and terminator the same way.
        codec.encode_command("i20100", security_code=self.security_code, terminator=self.terminator)
        if not 0 <= self.etx <= 0xFF or self.etx == codec.SOH or 0x20 <= self.etx < 0x7F:
            raise ValueError(f"ETX 0x{self.etx:02X} must be a control character other than SOH")
        if self.reply_timeout_s <= 0 or self.max_reply_s < self.reply_timeout_s:
            raise ValueError("reply_timeout_s must be positive and at most max_reply_s")
        if self.retries < 0 or self.offline_after < 1:
            raise ValueError("retries must be >= 0 and offline_after >= 1")
        if self.units not in UNITS:
            raise ValueError(f"units {self.units!r} is not one of {', '.join(UNITS)}")
        if self.inventory_format not in INVENTORY_FORMATS:
            raise ValueError(
                f"inventory_format {self.inventory_format!r} is not one of "
                f"{', '.join(INVENTORY_FORMATS)}"
            )
        if not all(1 <= tank <= 99 for tank in self.tank_numbers):
            raise ValueError(f"tank numbers {self.tank_numbers} must be within 1-99")


class InventoryRefused(CommandRejected):
    """The console answered every inventory command it was sent with 9999FF1B; `reason` says
    which and what to check."""

    code = INVENTORY_REFUSED

    def __init__(self, reason: str, *, device: str) -> None:
        super().__init__(reason, device=device)
        self.reason = reason


class TlsGauge:
    """Client of one TLS console, on the bus engine (drivers/bus.py): only `run()` touches
    the transport; requests queue.

    Every exchange is one command and one reply: the line is never shared by racing
    coroutines. A console that stops answering is declared offline after `offline_after`
    failed exchanges and then only probed with jittered, capped backoff.
    """

    def __init__(
        self,
        settings: TlsGaugeSettings,
        transport: Transport,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.settings = settings
        self.transport = transport
        self.counters = LineCounters()
        self.progress = Progress(clock=clock)  # for the daemon's watchdog
        self._clock = clock
        self._now = now
        self._emit: Emit = _ignore
        self._reader = DecodingReader(functools.partial(codec.decode, etx=settings.etx))
        self._rng = random.Random()
        # The reopen backoff is reset when the console answers, not when the port opens: a
        # line that opens and then says nothing is retried ever more slowly.
        self._bus = BusEngine(
            settings.name,
            self,
            transport=transport,
            reopen=Backoff(settings.reopen_initial_s, settings.reopen_max_s, self._rng),
            clock=clock,
            progress=self.progress,
            stopped="gauge connection stopped",
        )
        self.taps: list[FrameTap] = self._bus.taps
        self._poll_interval_s = 60.0
        self._next_poll = 0.0
        self._awaited = ""  # the command whose reply `_transact` waits for
        self._online: bool | None = None  # None until the console first answers or fails
        self._offline_code = ""  # why it is offline (a DeviceFault code), as reported
        self._misses = 0
        self._backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s, self._rng)
        self._display = settings.inventory_format == "display"
        # Why the console, though it answers, gives no inventory (None: it does): the gauge
        # is offline for it until a reading comes.
        self._inventory_fault: DeviceFault | None = None
        self._unread_polls = 0  # polls in a row answered with inventory that did not read
        self._tanks_seen: set[int] = set()
        self._tank_misses: dict[int, int] = {}  # tank -> inventories in a row without it
        self._unsupported: set[str] = set()
        self._alarms_seen: dict[int, tuple[int, ...]] = {}
        self._deliveries_seen: set[tuple[int, datetime, datetime]] = set()
        self._deliveries_due = 0.0

    # ------------------------------------------------------------------ public API
    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def is_online(self) -> bool:
        return self._online is True

    async def read_inventory(self, tank: int = 0) -> list[TankGaugeReading]:
        """Inventory of one tank, or of every tank for 0 (i201, or the I201 report, as
        `inventory_format` says); InventoryRefused when the console refuses what was asked."""
        fmt = self.settings.inventory_format
        if not self._display:
            reply = await self._submit("i201", tank, "", "inventory")
            if not isinstance(reply, codec.Unsupported):
                inventory = self._expect(reply, codec.Inventory, "inventory")
                self._inventory_read()
                return [self._reading(t, inventory.at) for t in inventory.tanks]
            if fmt != "auto":
                raise self._refused_inventory()
            if self._inventory_fault is None:
                log.warning("tls_inventory_display_fallback", gauge=self.name)
            self._display = True
        reply = await self._submit("I201", tank, "", "inventory report")
        if isinstance(reply, codec.Unsupported):
            if fmt == "auto":
                self._display = False  # neither answers: both are asked again next time
            raise self._refused_inventory()
        report = self._expect(reply, codec.DisplayReport, "inventory report")
        parsed = codec.parse_display_inventory(report.text)
        if isinstance(parsed, Malformed):
            self.counters.malformed += 1
            raise FrameError(f"inventory report: {parsed.reason}", device=self.name)
        self._inventory_read()
        return [self._reading(t, parsed.printed_at) for t in parsed.tanks]

    def _refused_inventory(self) -> InventoryRefused:
        fmt = self.settings.inventory_format
        if fmt == "auto":
            what = "the inventory commands i201 and I201"
            other = ""
        elif fmt == "computer":
            what = "the inventory command i201"
            other = ', or set inventory_format = "display" if it answers only the printed report'
        else:
            what = "the inventory command I201"
            other = ', or set inventory_format = "computer" (or "auto")'
        reason = f"the console refuses {what} (9999FF1B): {_REFUSAL_HINT}{other}"
        return InventoryRefused(reason, device=self.name)

    def _inventory_read(self) -> None:
        """The console gave its inventory: a fault that kept it offline is over."""
        self._unread_polls = 0
        if self._inventory_fault is not None:
            log.info("tls_inventory_read_again", gauge=self.name, was=self._inventory_fault.code)
            self._inventory_fault = None
            self._set_online()

    async def read_deliveries(self, tank: int = 0) -> list[GaugeDelivery]:
        """The deliveries the console has on record (i202), oldest first per tank."""
        reply = await self._submit("i202", tank, "", "deliveries")
        report = self._expect(reply, codec.DeliveryReport, "deliveries")
        volume, length, temperature = self._converters()
        return [
            GaugeDelivery(
                gauge=self.name,
                tank=tank_deliveries.tank,
                product_code=tank_deliveries.product,
                start=record.start,
                end=record.end,
                start_volume=volume(record.start_volume),
                start_tc_volume=volume(record.start_tc_volume),
                # i202's water, like i201's, is taken as the water height.
                start_water=length(record.start_water),
                start_temperature=temperature(record.start_temperature),
                end_volume=volume(record.end_volume),
                end_tc_volume=volume(record.end_tc_volume),
                end_water=length(record.end_water),
                end_temperature=temperature(record.end_temperature),
                start_height=length(record.start_height),
                end_height=length(record.end_height),
            )
            for tank_deliveries in report.tanks
            for record in sorted(tank_deliveries.deliveries, key=lambda r: r.start)
        ]

    async def read_alarms(self, tank: int = 0) -> list[TankAlarms]:
        """The complete set of active alarms of each tank (i205)."""
        reply = await self._submit("i205", tank, "", "alarms")
        status = self._expect(reply, codec.AlarmStatus, "alarms")
        at = self._now()
        return [
            TankAlarms(
                gauge=self.name,
                tank=codes.tank,
                at=at,
                alarms=tuple(
                    GaugeAlarm(gauge=self.name, tank=codes.tank, code=code, text=name)
                    for code, name in zip(codes.codes, codes.names, strict=True)
                ),
            )
            for codes in status.tanks
        ]

    async def read_status(self) -> codec.SystemStatus:
        """The i101 system status report (date read, the rest kept as text)."""
        reply = await self._submit("i101", 0, "", "system status")
        return self._expect(reply, codec.SystemStatus, "system status")

    async def read_clock(self) -> datetime:
        """The console's clock (naive: consoles keep local time)."""
        reply = await self._submit("i501", 0, "", "clock")
        return self._expect(reply, codec.ClockReply, "clock").at

    async def set_clock(self, at: datetime) -> datetime:
        """Set the console's clock to `at` as it reads (minutes); returns what the console says."""
        reply = await self._submit("s501", 0, codec.format_timestamp(at), "clock set")
        return self._expect(reply, codec.ClockReply, "clock set").at

    # ------------------------------------------------------------------ the connection task
    async def run(self, poll_interval_s: float, emit: Emit) -> None:
        """Own the connection until cancelled: poll inventory and alarms every
        `poll_interval_s`, deliveries every `deliveries_interval_s`, carry queued requests,
        reopen the transport when it fails."""
        if self._bus.running:
            raise RuntimeError(f"{self.name}: run() is already active")
        self._emit = emit
        self._poll_interval_s = poll_interval_s
        try:
            await self._bus.run()
        finally:
            self._emit = _ignore

    # The bus engine's questions (drivers/bus.py).
    async def bus_open(self) -> None:
        await self.transport.open()

    def bus_close(self) -> None:
        self.transport.close()

    def bus_open_failed(self, exc: BaseException) -> None:
        fault = exc.fault if isinstance(exc, TransportError) else None
        if fault is None:
            self._mark_offline(str(exc), LINK_ERROR)
        else:
            self._mark_offline(fault.reason, fault.code)

    def bus_opened(self, first: bool) -> None:
        self._reader.clear()
        # "auto" asks i201 first again on every connection: the console may have
        # been set up anew, or replaced, while the line was down.
        self._display = self.settings.inventory_format == "display"
        self._next_poll = self._clock()

    def bus_lost(self, exc: BaseException) -> None:
        self._mark_offline(str(exc), LINK_ERROR)

    def bus_abandoned(self, job: Job[Any], exc: BaseException) -> BaseException:
        if isinstance(exc, asyncio.CancelledError):
            exc = TransportError("gauge connection stopped", device=self.name)
        return TransportError(f"{job.label}: {exc}", device=self.name)

    def bus_next(self) -> Poll | float:
        now = self._clock()
        if now >= self._next_poll:
            return self._poll_round()
        return self._next_poll - now

    async def _poll_round(self) -> None:
        await self._poll()
        self._next_poll = self._clock() + self._pause(self._poll_interval_s)

    def _pause(self, poll_interval_s: float) -> float:
        """Until the next poll: the interval while the console answers, else backoff."""
        if self._online is True or self._misses == 0:
            self._backoff.reset()
            return poll_interval_s
        return self._backoff.next()

    async def _poll(self) -> None:
        """One round: inventory, then (while the console answers) alarms and deliveries."""
        try:
            readings = await self.read_inventory()
        except InventoryRefused as exc:
            self._no_inventory(exc.reason, INVENTORY_REFUSED)
            return
        except FrameError as exc:
            # It answers, but with nothing that reads: as useless as silence, once it lasts.
            self._unread_polls += 1
            if self._unread_polls >= self.settings.offline_after:
                detail = exc.args[0] if exc.args else str(exc)
                self._no_inventory(
                    f"the console answers, but its inventory cannot be read ({detail}), "
                    f"{_polls(self._unread_polls)} in a row: check the line's settings (baud, "
                    "parity, data bits) and the console's ETX setting",
                    NO_INVENTORY,
                )
            return
        except (DeviceTimeout, CommandRejected):
            return  # counted, and reported through GaugeOffline when it persists
        for reading in readings:
            self._emit(reading)
        self._watch_tanks(readings)
        if "alarms" not in self._unsupported:
            await self._poll_alarms()
        if "deliveries" not in self._unsupported and self._clock() >= self._deliveries_due:
            await self._poll_deliveries()

    async def _poll_alarms(self) -> None:
        try:
            sets = await self.read_alarms()
        except CommandRejected:
            self._give_up("alarms")
            return
        except (DeviceTimeout, FrameError):
            return
        for alarms in sets:
            codes = tuple(alarm.code for alarm in alarms.alarms)
            if self._alarms_seen.get(alarms.tank) != codes:
                self._alarms_seen[alarms.tank] = codes
                self._emit(alarms)

    async def _poll_deliveries(self) -> None:
        try:
            deliveries = await self.read_deliveries()
        except CommandRejected:
            self._give_up("deliveries")
            return
        except (DeviceTimeout, FrameError):
            return
        self._deliveries_due = self._clock() + self.settings.deliveries_interval_s
        # The console keeps its last few deliveries per tank; report each one once per
        # run (the station keeps them durably, keyed by gauge, tank and start).
        current = {(d.tank, d.start, d.end) for d in deliveries}
        for delivery in deliveries:
            if (delivery.tank, delivery.start, delivery.end) not in self._deliveries_seen:
                self._emit(delivery)
        self._deliveries_seen = current

    def _no_inventory(self, reason: str, code: str) -> None:
        """The console answers but gives no inventory: offline, with why, until it does."""
        self._inventory_fault = DeviceFault(code, reason)
        self._mark_offline(reason, code)

    def _watch_tanks(self, readings: list[TankGaugeReading]) -> None:
        """A tank missing from `offline_after` inventories in a row is reported once (its
        probe out, say: the console answers for the others); its next reading ends that."""
        reported = {reading.tank for reading in readings}
        self._tanks_seen |= reported
        expected = set(self.settings.tank_numbers) or self._tanks_seen
        for tank in sorted(reported):
            if self._tank_misses.pop(tank, 0) >= self.settings.offline_after:
                log.info("tls_tank_reported_again", gauge=self.name, tank=tank)
        for tank in sorted(expected - reported):
            misses = self._tank_misses[tank] = self._tank_misses.get(tank, 0) + 1
            if misses == self.settings.offline_after:
                reason = (
                    f"the console reports no inventory for tank {tank} ({_polls(misses)} in a "
                    "row): its probe may be out or its cable cut, or the tank is not set up "
                    "on the console"
                )
                log.warning("tls_tank_not_reported", gauge=self.name, tank=tank, reason=reason)
                self._emit(TankOffline(gauge=self.name, tank=tank, reason=reason))

    def _give_up(self, what: str) -> None:
        self._unsupported.add(what)
        log.warning("tls_command_unsupported", gauge=self.name, what=what)

    # ------------------------------------------------------------------ requests
    async def _submit(self, function: str, tank: int, data: str, label: str) -> Reply:
        code = f"{function}{tank:02d}"
        if not 0 <= tank <= 99:
            raise ValueError(f"tank {tank} is outside 0-99")
        if not self._bus.running:
            raise TransportError(f"{label}: the gauge connection is not running", device=self.name)
        if not self._bus.connected:
            raise TransportError(f"{label}: the gauge connection is down", device=self.name)
        # run()'s own polls go at once (they are the line's task); others queue.
        return await self._bus.submit(label, lambda: self._exchange(code, data, label))

    def _expect(self, reply: Reply, kind: type[_R], label: str) -> _R:
        if isinstance(reply, kind):
            return reply
        if isinstance(reply, codec.Unsupported):
            raise CommandRejected(
                f"{label}: the console refused the command (9999FF1B)",
                device=self.name,
                code="unsupported",
            )
        self.counters.unexpected += 1
        raise FrameError(f"{label}: unexpected {type(reply).__name__} reply", device=self.name)

    # ------------------------------------------------------------------ wire
    async def _exchange(self, code: str, data: str, label: str) -> Reply:
        """Send one command and return its reply; retries on silence or a damaged reply."""
        settings = self.settings
        command = codec.Command(code, data, settings.security_code)
        wire = codec.encode_command(
            code, data=data, security_code=settings.security_code, terminator=settings.terminator
        )
        failure = ""
        for attempt in range(settings.retries + 1):
            if attempt:
                self.counters.retransmissions += 1
            item = await self._transact(wire, command)
            if item is None:
                failure = "no reply"
                self._missed(f"{label}: no reply within {settings.reply_timeout_s} s")
                continue
            self._answered(refusal=isinstance(item, codec.Unsupported))
            if isinstance(item, Malformed):
                failure = item.reason
                continue
            return item
        tries = settings.retries + 1
        if failure == "no reply":
            raise DeviceTimeout(f"{label}: no reply after {tries} tries", device=self.name)
        raise FrameError(f"{label}: {failure} (after {tries} tries)", device=self.name)

    async def _transact(self, wire: bytes, command: codec.Command) -> Reply | Malformed | None:
        """Send a command; the first reply to it (or a damaged one), or None on timeout."""
        settings = self.settings
        self.progress.tick(settings.max_reply_s)  # a reply may trickle in for that long
        await self._bus.request(self._reader, wire, command)
        self.counters.frames_sent += 1
        start = self._clock()
        # Silence for `reply_timeout_s`, before the first byte or between two, ends the wait;
        # so does `max_reply_s` of a reply that keeps trickling.
        deadline = ReplyDeadline(
            start + settings.reply_timeout_s,
            extend_s=settings.reply_timeout_s,
            cap=start + settings.max_reply_s,
        )
        self._awaited = command.code
        item: Reply | Malformed | None = await self._bus.receive(
            self._reader, self._accept, deadline
        )
        if item is not None:
            return item
        self.counters.timeouts += 1
        tail = self._reader.held()
        if self.taps and tail:
            # What came of a reply that never ended: shown, though never decoded.
            reason = f"no ETX within {settings.reply_timeout_s} s ({len(tail)} byte(s))"
            self._bus.tap("rx", tail, Malformed(tail, reason, "truncated"))
        # ESC makes the console drop what it may still be sending, so those
        # bytes cannot run into the next reply.
        await self._bus.send(bytes((codec.ESC,)), None)
        return None

    def _accept(self, item: Reply | Malformed | None) -> Reply | Malformed | None:
        """An item decoded while the reply to `_awaited` is awaited: that reply (or a
        damaged one), or None to wait on."""
        if isinstance(item, Malformed):
            self._count_bad(item)
            if item.kind in ("garbage", "truncated"):
                return None  # junk, or the rest of an abandoned reply: ours may follow
            return item
        if item is None:
            return None
        self.counters.frames_received += 1
        if _answers(item, self._awaited):
            return item
        self.counters.unexpected += 1  # a late reply to an earlier command
        return None

    def _count_bad(self, item: Malformed) -> None:
        if item.kind == "bad_checksum":
            self.counters.bad_crc += 1
        elif item.kind == "garbage":
            self.counters.garbage_bytes += len(item.raw)
        else:
            self.counters.malformed += 1

    # ------------------------------------------------------------------ liveness
    def _answered(self, *, refusal: bool = False) -> None:
        """The console answered. It is back online unless that answer was a refusal (the
        console lives, but that says nothing of its working) or it gives no inventory."""
        self._misses = 0
        self._bus.reopen.reset()
        if not refusal and self._inventory_fault is None:
            self._set_online()

    def _set_online(self) -> None:
        if self._online is not True:
            self._online = True
            log.info("tls_gauge_online", gauge=self.name)
            self._emit(GaugeOnline(gauge=self.name))

    def _missed(self, reason: str) -> None:
        self._misses += 1
        if self._misses >= self.settings.offline_after:
            self._mark_offline(f"{reason} ({self._misses} in a row)")

    def _mark_offline(self, reason: str, code: str = NO_ANSWER) -> None:
        # Reported again when the cause changes (the port came back, the console is silent).
        if self._online is not False or code != self._offline_code:
            self._online = False
            self._offline_code = code
            self._alarms_seen.clear()  # report the full picture again when it returns
            self._tank_misses.clear()  # and each tank it then leaves out, afresh
            log.warning("tls_gauge_offline", gauge=self.name, reason=reason, code=code)
            self._emit(GaugeOffline(gauge=self.name, reason=reason, code=code))

    # ------------------------------------------------------------------ conversion
    def _reading(self, tank: codec.TankInventory, gauge_time: datetime | None) -> TankGaugeReading:
        volume, length, temperature = self._converters()
        return TankGaugeReading(
            gauge=self.name,
            tank=tank.tank,
            at=self._now(),
            gauge_time=gauge_time,
            product_code=tank.product,
            status_bits=GaugeStatus(tank.status),
            volume=volume(tank.volume),
            tc_volume=volume(tank.tc_volume),
            ullage=volume(tank.ullage),
            height=length(tank.height),
            water=length(tank.water),
            temperature=temperature(tank.temperature),
            water_volume=volume(tank.water_volume),
        )

    def _converters(self) -> tuple[_Convert, _Convert, _Convert]:
        """Volume, length and temperature as the console gives them -> litres, mm, °C."""
        if self.settings.units == "us":
            return us_gallons_to_litres, inches_to_mm, fahrenheit_to_celsius
        return _same, _same, _same


_Convert = Callable[[Decimal | None], Decimal | None]


def _same(value: Decimal | None) -> Decimal | None:
    return value


def us_gallons_to_litres(value: Decimal | None) -> Decimal | None:
    return (
        None
        if value is None
        else _WIDE.multiply(value, US_GALLON_L).quantize(_CONVERTED, context=_WIDE)
    )


def inches_to_mm(value: Decimal | None) -> Decimal | None:
    return (
        None
        if value is None
        else _WIDE.multiply(value, INCH_MM).quantize(_CONVERTED, context=_WIDE)
    )


def fahrenheit_to_celsius(value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    celsius = _WIDE.divide(_WIDE.multiply(_WIDE.subtract(value, 32), 5), 9)
    return celsius.quantize(_CONVERTED, context=_WIDE)


def _polls(n: int) -> str:
    return "1 poll" if n == 1 else f"{n} polls"


def _answers(item: Reply, code: str) -> bool:
    """Whether `item` is the reply to command `code` (a refusal answers anything)."""
    match item:
        case codec.Unsupported():
            return True
        case codec.DisplayReport():
            return code[:1].isupper() and item.code in (None, code)
        case codec.Inventory():
            return code == f"i201{item.tank:02d}"
        case codec.DeliveryReport():
            return code == f"i202{item.tank:02d}"
        case codec.AlarmStatus():
            return code == f"i205{item.tank:02d}"
        case codec.SystemStatus() | codec.ClockReply() | codec.UnknownReply():
            return code == item.code
