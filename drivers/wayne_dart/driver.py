"""Wayne DART line master: one task per RS-485 line polls its pumps and carries their commands."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from drivers.base import (
    BAD_CRC,
    LINK_ERROR,
    NAK,
    NO_ANSWER,
    AlarmReport,
    CommandRejected,
    DeviceFault,
    DeviceTimeout,
    DispenserEvent,
    DispenserStatus,
    FillingInfo,
    FillingReport,
    LineCounters,
    LinkHealth,
    NozzleReport,
    Progress,
    PumpOffline,
    PumpOnline,
    StatusReport,
    TotalsReport,
    TransportError,
)
from drivers.bus import Backoff, BusEngine, Job, Poll, ReplyDeadline
from drivers.transport import Transport
from drivers.wayne_dart import codec
from drivers.wayne_dart.codec import DCC, Frame, Malformed
from drivers.wayne_dart.link import Ack, Exchange, FrameReader, Liveness, PumpLink, Transact

STATUS_MAP: dict[int, DispenserStatus] = {
    codec.DartStatus.NOT_PROGRAMMED: DispenserStatus.NOT_PROGRAMMED,
    codec.DartStatus.RESET: DispenserStatus.RESET,
    codec.DartStatus.AUTHORIZED: DispenserStatus.AUTHORIZED,
    codec.DartStatus.FILLING: DispenserStatus.FILLING,
    codec.DartStatus.FILLING_COMPLETED: DispenserStatus.FILLING_COMPLETED,
    codec.DartStatus.MAX_REACHED: DispenserStatus.MAX_REACHED,
    codec.DartStatus.SWITCHED_OFF: DispenserStatus.SWITCHED_OFF,
    codec.DartStatus.SUSPENDED: DispenserStatus.SUSPENDED,
}
# Pumps in these states are polled more often: their volume runs and their sale ends.
_BUSY = {DispenserStatus.AUTHORIZED, DispenserStatus.FILLING, DispenserStatus.SUSPENDED}
# A pump lost in one of these has a sale open (authorized, under way, or done but not read).
_SALE_OPEN = _BUSY | {DispenserStatus.FILLING_COMPLETED, DispenserStatus.MAX_REACHED}

# A reply frame's length on the wire at most: several transactions of up to 255 bytes each,
# every byte possibly escaped. Used to bound how long bytes that keep coming hold one exchange.
_LONGEST_REPLY_CHARS = 1024

FrameTap = Callable[[str, bytes, "Frame | Malformed | None", float], None]
HealthListener = Callable[[LinkHealth], None]
_UNREPORTED = DeviceFault("", "")  # nothing said yet since the line (re)opened


@dataclass(frozen=True, slots=True)
class DartPumpSettings:
    address: int
    nozzles: tuple[int, ...]
    volume_decimals: int = 2
    amount_decimals: int = 2
    price_decimals: int = 2


@dataclass(frozen=True, slots=True)
class DartLineSettings:
    name: str
    baud: int = 9600
    bits_per_char: int = 11  # start + 8 data + parity + stop
    reply_timeout_s: float = 0.05
    retries: int = 3
    offline_after: int = 3
    poll_interval_s: float = 0.0
    idle_poll_s: float = 0.0  # an idle pump is polled at most this often; 0 = every round
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    # A pump lost with a sale open is tried again at least this often, whatever the backoff
    # says: its sale must be read and the pump reset while the customer is still there.
    busy_retry_s: float = 2.0
    # A pump that answered since the line opened and was then lost (a power cut, noise) is
    # tried again at least this often: it is usually back soon, and a customer waits there.
    # One never heard (configured, not installed) backs off to `backoff_max_s`.
    seen_retry_max_s: float = 5.0
    reopen_initial_s: float = 0.5
    reopen_max_s: float = 10.0


@dataclass
class _PumpLink:
    """Line-layer state of one pump: its data link (sequence numbers), liveness, backoff."""

    settings: DartPumpSettings
    link: PumpLink
    backoff: Backoff
    online: bool = False
    ever_seen: bool = False
    misses: int = 0
    next_try: float = 0.0  # offline pumps: when to try again
    lost_mid_sale: bool = False  # it went offline with a sale open (tried every busy_retry_s)
    next_poll: float = 0.0  # idle pumps: when a routine poll is due
    status: DispenserStatus | None = None
    # Health, for alarms and history: decided once the pump answered or missed enough since
    # the line opened; `fault` is why it is offline, `reported` what the listener was told.
    decided: bool = False
    fault: DeviceFault | None = None
    reported: DeviceFault | None = _UNREPORTED
    crc_since: int = 0  # damaged replies since its last good one
    nak_since: int = 0  # NAKs since its last good reply
    last_seen: float | None = None  # clock() of its last good reply
    errors: dict[str, int] = field(default_factory=lambda: {"timeouts": 0, "bad_crc": 0, "naks": 0})
    frames: dict[str, int] = field(default_factory=lambda: {"sent": 0, "received": 0})
    # Routine polls while online: when the last was sent, and the smoothed time between two.
    last_poll: float | None = None
    poll_period_s: float | None = None


class DartLine:
    """Master of one DART line, on the bus engine (drivers/bus.py): only `run()` touches the
    transport; everything else queues. Its data link is drivers/wayne_dart/link.py.

    Commands go ahead of routine polls; pumps that are authorized or filling get every other
    poll slot; a pump that stops answering is declared offline after `offline_after` misses
    and then only retried with jittered, capped backoff so it never slows the others.
    """

    def __init__(
        self,
        settings: DartLineSettings,
        pumps: Sequence[DartPumpSettings],
        transport: Transport,
        emit: Callable[[DispenserEvent], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._emit = emit
        self._clock = clock
        self.counters = LineCounters()
        self._rng = random.Random()
        self._pumps = {
            p.address: _PumpLink(
                p,
                PumpLink(p.address, self.counters, settings.retries),
                Backoff(settings.backoff_initial_s, settings.backoff_max_s, self._rng),
            )
            for p in pumps
        }
        self._order = [p.address for p in pumps]
        self._rr = 0
        self._busy_rr = 0
        self._slot = 0
        self._reader = FrameReader()
        self._awaited = 0  # the address whose reply `_transact` waits for
        self.progress = Progress(clock=clock)  # for the daemon's watchdog
        self._bus = BusEngine(
            settings.name,
            self,
            transport=transport,
            reopen=Backoff(settings.reopen_initial_s, settings.reopen_max_s, self._rng),
            clock=clock,
            progress=self.progress,
            # A line that failed is opened again at once: a vanished port fails its open.
            pause_after_loss=False,
            reset_reopen_on_open=True,
        )
        self.taps: list[FrameTap] = self._bus.taps
        # Told when the line or one of its pumps starts or stops working, and why (the
        # daemon's device monitor: alarms, logs, history). Called on the line's own task.
        self.on_health: HealthListener = _no_health
        self.fault: DeviceFault | None = None  # why the line is down; None: up or not known
        self._line_up = False  # a pump answered since the line opened
        self._line_reported: DeviceFault | None = _UNREPORTED
        self._char_s = settings.bits_per_char / settings.baud
        self._wire: dict[Frame, bytes] = {}

    # ------------------------------------------------------------------ public API
    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def transport(self) -> Transport:
        return self._bus.wire()

    @transport.setter
    def transport(self, transport: Transport) -> None:
        self._bus.transport = transport

    def is_online(self, address: int) -> bool:
        return self._pumps[address].online

    def last_status(self, address: int) -> DispenserStatus | None:
        return self._pumps[address].status

    @property
    def line_up(self) -> bool:
        return self._line_up

    def pump_fault(self, address: int) -> DeviceFault | None:
        """Why the pump is offline (None: online, or not decided yet since the line opened)."""
        return self._pumps[address].fault

    def pump_errors(self, address: int) -> dict[str, int]:
        """Errors seen talking to this pump since the line started, by kind."""
        return dict(self._pumps[address].errors)

    def last_seen(self, address: int) -> float | None:
        """clock() of the pump's last good reply, None if it never answered."""
        return self._pumps[address].last_seen

    def pump_frames(self, address: int) -> dict[str, int]:
        """Frames sent to this pump and valid frames received from it since the line started."""
        return dict(self._pumps[address].frames)

    def poll_period(self) -> float | None:
        """Seconds between two routine polls of one pump, smoothed, for the slowest pump
        online (what bounds how late a lifted nozzle is seen); None: no pump online yet."""
        periods = [
            link.poll_period_s
            for link in self._pumps.values()
            if link.online and link.poll_period_s is not None
        ]
        return max(periods) if periods else None

    async def request_status(self, address: int) -> DispenserStatus:
        reply = await self._submit(
            address, (codec.Command(DCC.RETURN_STATUS),), _is(codec.PumpStatus), "status"
        )
        return STATUS_MAP.get(reply.status, DispenserStatus.NOT_PROGRAMMED)

    async def reset(self, address: int) -> DispenserStatus:
        reply = await self._submit(
            address, (codec.Command(DCC.RESET),), _is(codec.PumpStatus), "reset"
        )
        status = STATUS_MAP.get(reply.status, DispenserStatus.NOT_PROGRAMMED)
        if status is not DispenserStatus.RESET:
            raise CommandRejected(
                f"reset refused, pump is {status.value}", device=self._dev(address)
            )
        return status

    async def authorize(
        self,
        address: int,
        *,
        nozzles: Sequence[int] = (),
        preset_volume: Decimal | None = None,
        preset_amount: Decimal | None = None,
    ) -> None:
        """Allowed nozzles, preset and AUTHORIZE in one data frame; confirmed by the pump's DC1."""
        pump = self._pumps[address].settings
        items: list[Any] = []
        if nozzles:
            items.append(codec.AllowedNozzles(tuple(nozzles)))
        if preset_volume is not None:
            items.append(
                codec.PresetVolume(codec.from_decimal(preset_volume, pump.volume_decimals))
            )
        if preset_amount is not None:
            items.append(
                codec.PresetAmount(codec.from_decimal(preset_amount, pump.amount_decimals))
            )
        items.append(codec.Command(DCC.AUTHORIZE))
        reply = await self._submit(address, tuple(items), _is(codec.PumpStatus), "authorize")
        status = STATUS_MAP.get(reply.status, DispenserStatus.NOT_PROGRAMMED)
        if status not in (DispenserStatus.AUTHORIZED, DispenserStatus.FILLING):
            raise CommandRejected(
                f"authorize refused, pump is {status.value}", device=self._dev(address)
            )

    async def stop(self, address: int) -> None:
        await self._submit(address, (codec.Command(DCC.STOP),), None, "stop")

    async def suspend(self, address: int) -> None:
        await self._submit(address, (codec.Command(DCC.SUSPEND),), None, "suspend")

    async def resume(self, address: int) -> None:
        await self._submit(address, (codec.Command(DCC.RESUME),), None, "resume")

    async def switch_off(self, address: int) -> None:
        await self._submit(address, (codec.Command(DCC.SWITCH_OFF),), None, "switch off")

    async def set_prices(self, address: int, prices: Sequence[Decimal]) -> None:
        """Unit prices in the pump's nozzle order (CD5)."""
        pump = self._pumps[address].settings
        raw = tuple(codec.from_decimal(p, pump.price_decimals) for p in prices)
        await self._submit(address, (codec.PriceUpdate(raw),), None, "price update")

    async def filling_info(self, address: int) -> FillingInfo:
        """Volume and amount of the current or last fill (DC2), with nozzle and price (DC3)."""
        replies = await self._submit(
            address,
            (codec.Command(DCC.RETURN_FILLING_INFORMATION),),
            _is(codec.FilledVolumeAmount),
            "filling information",
            whole_frame=True,
        )
        return fill_from_replies(replies, self._pumps[address].settings)

    async def totals(self, address: int, nozzle: int) -> tuple[Decimal, Decimal]:
        """Electronic volume and amount totals of one nozzle (DC101)."""
        reply = await self._submit(
            address,
            (codec.RequestTotals(nozzle),),
            lambda r: isinstance(r, codec.TotalCounters) and r.counter == nozzle,
            "totals",
        )
        pump = self._pumps[address].settings
        return (
            codec.to_decimal(reply.volume, pump.volume_decimals),
            codec.to_decimal(reply.amount1, pump.amount_decimals),
        )

    # ------------------------------------------------------------------ the line task
    async def run(self) -> None:
        """Owns the transport: opens it, schedules the pumps, reopens it when it vanishes."""
        await self._bus.run()

    # The bus engine's questions (drivers/bus.py).
    async def bus_open(self) -> None:
        await self.transport.open()

    def bus_close(self) -> None:
        self.transport.close()

    def bus_open_failed(self, exc: BaseException) -> None:
        assert isinstance(exc, TransportError)
        self._line_down(exc.fault or DeviceFault(LINK_ERROR, exc.args[0]))

    def bus_opened(self, first: bool) -> None:
        if not first:
            self.counters.reopens += 1
        self._reader.clear()
        for link in self._pumps.values():
            link.link.synced = False  # the adapter was gone: someone else may have talked
            # Each pump is decided afresh: it answers, or misses enough to be offline.
            link.decided, link.fault, link.reported = False, None, _UNREPORTED

    def bus_lost(self, exc: BaseException) -> None:
        assert isinstance(exc, TransportError)
        fault = exc.fault or DeviceFault(LINK_ERROR, exc.args[0])
        self._line_down(fault)
        for link in self._pumps.values():
            self._mark_offline(link, str(exc))
            link.next_try = 0.0
            link.decided, link.fault = True, fault
        self._report_health()

    def bus_abandoned(self, job: Job[Any], exc: BaseException) -> BaseException:
        why = "line stopped" if isinstance(exc, asyncio.CancelledError) else exc
        return DeviceTimeout(f"{job.label}: line unavailable ({why})", device=job.device)

    def bus_next(self) -> Poll | float:
        address = self._next_poll_target()
        if address is None:
            now = self._clock()
            return max(0.0, min(self._due(link) for link in self._pumps.values()) - now)
        return self._poll(address)

    def _next_poll_target(self) -> int | None:
        now = self._clock()
        self._slot += 1
        if self._slot % 2 == 0:
            busy = [
                a for a in self._order if self._pumps[a].online and self._pumps[a].status in _BUSY
            ]
            if busy:
                self._busy_rr = (self._busy_rr + 1) % len(busy)
                return busy[self._busy_rr]
        for _ in range(len(self._order)):
            address = self._order[self._rr]
            self._rr = (self._rr + 1) % len(self._order)
            link = self._pumps[address]
            if self._due(link) <= now:
                if link.online and link.status not in _BUSY:
                    link.next_poll = now + self.settings.idle_poll_s
                return address
        return None

    def _due(self, link: _PumpLink) -> float:
        """When this pump's next routine poll is due (busy pumps: always)."""
        if not link.online:
            return link.next_try
        if link.status in _BUSY:
            return 0.0
        return link.next_poll

    # ------------------------------------------------------------------ poll and commands
    async def _poll(self, address: int) -> None:
        link = self._pumps[address]
        now = self._clock()
        if link.online and link.last_poll is not None:
            gap = now - link.last_poll
            smoothed = link.poll_period_s
            link.poll_period_s = gap if smoothed is None else smoothed + (gap - smoothed) * 0.2
        # An offline pump is tried at its back-off: those gaps are not the poll period.
        link.last_poll = now if link.online else None
        await self._exchange(link, link.link.poll())
        if self.settings.poll_interval_s and self._rr == 0:
            await self._bus.idle(self.settings.poll_interval_s)

    async def _exchange(self, link: _PumpLink, exchange: Exchange) -> Any:
        """Carry out what the pump's link layer asks, until its exchange ends."""
        address = link.settings.address
        reply: Frame | None = None
        try:
            while True:
                output = exchange.send(reply)
                reply = None
                if isinstance(output, Transact):
                    reply = await self._transact(output.frame, address)
                elif isinstance(output, Liveness):
                    if output is Liveness.ANSWERED:
                        self._answered(link)
                    elif output is Liveness.MISSED:
                        self._missed(link)
                    else:
                        self._refused(link)
                elif isinstance(output, Ack):
                    await self._send(output.frame)
                else:
                    for item in output.items:
                        self._report(link, item)
        except StopIteration as done:
            return done.value
        finally:
            exchange.close()

    async def _submit(
        self,
        address: int,
        items: tuple[Any, ...],
        expect: Callable[[Any], bool] | None,
        label: str,
        *,
        whole_frame: bool = False,
    ) -> Any:
        link = self._pumps.get(address)
        if link is None:
            raise CommandRejected(f"no pump at address 0x{address:02X}", device=self.name)
        device = self._dev(address)

        def work() -> Awaitable[Any]:
            exchange = link.link.command(items, expect, label, device, whole_frame=whole_frame)
            return self._exchange(link, exchange)

        return await self._bus.submit(label, work, device=device)

    # ------------------------------------------------------------------ wire
    async def _send(self, frame: Frame, *, request: bool = False) -> bytes:
        # Routine frames (POLL, ACK) are the same bytes every time: encode them once.
        wire = self._wire.get(frame)
        if wire is None:
            wire = codec.encode(frame)
            if not frame.transactions:
                self._wire[frame] = wire
        if request:
            await self._bus.request(self._reader, wire, frame)
        else:
            await self._bus.send(wire, frame)
        self.counters.frames_sent += 1
        link = self._pumps.get(frame.address)
        if link is not None:
            link.frames["sent"] += 1
        return wire

    async def _transact(self, frame: Frame, address: int) -> Frame | None:
        """Send a frame and return the first valid frame from `address`, or None on timeout."""
        wire = await self._send(frame, request=True)
        # The request itself takes time on the wire before the pump can start answering.
        at = self._clock() + len(wire) * self._char_s + self.settings.reply_timeout_s
        # Bytes that keep coming (a babbling adapter, noise) extend the wait for the rest of
        # a frame, but never beyond the longest frame a pump can send.
        deadline = ReplyDeadline(
            at,
            extend_s=64 * self._char_s + 0.005,
            cap=at + _LONGEST_REPLY_CHARS * self._char_s + 0.05,
        )
        self._awaited = address
        reply = await self._bus.receive(self._reader, self._accept, deadline)
        if reply is None:
            self.counters.timeouts += 1
        return reply

    def _accept(self, item: Frame | Malformed | None) -> Frame | None:
        """A frame decoded while a reply from `_awaited` is awaited: that reply, or None."""
        if item is None:
            return None
        if isinstance(item, Malformed):
            self._count_bad(item, self._awaited)
            return None
        self.counters.frames_received += 1
        sender = self._pumps.get(item.address)
        if sender is not None:
            sender.frames["received"] += 1
        if item.address == self._awaited:
            return item
        self.counters.unexpected += 1
        return None

    def _count_bad(self, item: Malformed, address: int) -> None:
        if item.kind == "bad_crc":
            self.counters.bad_crc += 1
            link = self._pumps.get(address)
            if link is not None:  # the reply awaited was damaged on its way
                link.crc_since += 1
                link.errors["bad_crc"] += 1
        elif item.kind == "garbage":
            self.counters.garbage_bytes += len(item.raw)
        else:
            self.counters.malformed += 1

    # ------------------------------------------------------------------ pump liveness
    def _answered(self, link: _PumpLink) -> None:
        link.misses = 0
        link.backoff.reset()
        link.crc_since = link.nak_since = 0
        link.last_seen = self._clock()
        if not link.decided or link.fault is not None or not self._line_up:
            link.decided, link.fault = True, None
            if not self._line_up:
                self._line_up, self.fault = True, None
            self._report_health()
        if not link.online:
            link.online = True
            link.ever_seen = True
            link.lost_mid_sale = False
            link.link.restarted()  # it may reuse any sequence number, and know any of ours
            self._emit(PumpOnline(self.name, link.settings.address))

    def _refused(self, link: _PumpLink) -> None:
        link.nak_since += 1
        link.errors["naks"] += 1
        self._missed(link, timeout=False)

    def _missed(self, link: _PumpLink, *, timeout: bool = True) -> None:
        link.misses += 1
        if timeout:
            link.errors["timeouts"] += 1
        now = self._clock()
        if link.misses >= self.settings.offline_after and link.fault is None:
            self._pump_faulted(link, self._why_missed(link))
        if not link.online:
            delay = link.backoff.next()
            if link.lost_mid_sale:
                delay = min(delay, link.backoff.jitter(self.settings.busy_retry_s))
            elif link.ever_seen:
                delay = min(delay, link.backoff.jitter(self.settings.seen_retry_max_s))
            link.next_try = now + delay

    def _why_missed(self, link: _PumpLink) -> DeviceFault:
        """What was seen while the pump missed: NAKs, damaged replies, or nothing at all."""
        if link.nak_since:
            return DeviceFault(NAK, f"the pump answers NAK: {link.nak_since} frame(s) refused")
        if link.crc_since:
            return DeviceFault(
                BAD_CRC,
                f"CRC errors: {link.crc_since} damaged reply(ies) and no good one in "
                f"{link.misses} tries (noise, wiring or termination?)",
            )
        return DeviceFault(NO_ANSWER, f"no answer to {link.misses} requests in a row")

    def _pump_faulted(self, link: _PumpLink, fault: DeviceFault) -> None:
        link.decided, link.fault = True, fault
        if link.online:
            self._mark_offline(link, fault.reason)
        if all(p.fault is not None for p in self._pumps.values()):
            # Every pump has had its chance since the line opened and none works now.
            codes = {p.fault.code for p in self._pumps.values() if p.fault is not None}
            if codes == {BAD_CRC}:
                why = DeviceFault(
                    BAD_CRC,
                    "opened, but every reply arrives damaged (CRC errors: baud rate, parity,"
                    " wiring or noise?)",
                )
            elif codes == {NAK}:
                why = DeviceFault(NAK, "opened, but every pump answers NAK")
            else:
                why = DeviceFault(NO_ANSWER, "opened but no answer at any address")
            self._line_up, self.fault = False, why
        self._report_health()

    def _line_down(self, fault: DeviceFault) -> None:
        self._line_up, self.fault = False, fault
        self._report_health()

    def _report_health(self) -> None:
        """Tell the listener what changed: the line first, then its pumps, and the pumps only
        once the line's state is known (so that a line where nobody answers is one fault,
        the line's, rather than a pump's that happened to be asked first)."""
        line_state = None if self._line_up else self.fault
        if (self._line_up or self.fault is not None) and line_state != self._line_reported:
            self._line_reported = line_state
            self.on_health(LinkHealth(self.name, None, line_state))
        if not self._line_up and not all(p.decided for p in self._pumps.values()):
            return
        for link in self._pumps.values():
            if link.decided and link.fault != link.reported:
                link.reported = link.fault
                self.on_health(LinkHealth(self.name, link.settings.address, link.fault))

    def _mark_offline(self, link: _PumpLink, reason: str) -> None:
        if link.online:
            link.online = False
            link.lost_mid_sale = link.status in _SALE_OPEN
            link.status = None
            self._emit(PumpOffline(self.name, link.settings.address, reason))

    # ------------------------------------------------------------------ reports
    def _report(self, link: _PumpLink, item: Any) -> None:
        pump = link.settings
        address = pump.address
        if isinstance(item, codec.PumpStatus):
            status = STATUS_MAP.get(item.status, DispenserStatus.NOT_PROGRAMMED)
            link.status = status
            self._emit(StatusReport(self.name, address, status, item.status))
        elif isinstance(item, codec.NozzleStatus):
            self._emit(
                NozzleReport(
                    self.name,
                    address,
                    item.nozzle,
                    item.nozzle_out,
                    codec.to_decimal(item.price, pump.price_decimals),
                )
            )
        elif isinstance(item, codec.FilledVolumeAmount):
            self._emit(
                FillingReport(
                    self.name,
                    address,
                    codec.to_decimal(item.volume, pump.volume_decimals),
                    codec.to_decimal(item.amount, pump.amount_decimals),
                )
            )
        elif isinstance(item, codec.TotalCounters):
            self._emit(
                TotalsReport(
                    self.name,
                    address,
                    item.counter,
                    codec.to_decimal(item.volume, pump.volume_decimals),
                    codec.to_decimal(item.amount1, pump.amount_decimals),
                )
            )
        elif isinstance(item, codec.Alarm):
            self._emit(AlarmReport(self.name, address, item.code, f"pump alarm {item.code}"))

    def _dev(self, address: int) -> str:
        return f"{self.name}/0x{address:02X}"


def fill_from_replies(replies: Sequence[Any], pump: DartPumpSettings) -> FillingInfo:
    """The fill a pump's answer to RETURN FILLING INFORMATION describes: its last DC2 and the
    DC3 right after it (that fill's nozzle and price). Any other DC3 in the frame is the
    nozzle status of the moment — a next customer lifting another nozzle while this fill is
    read — and must not move the fill onto that nozzle; it is reported as a nozzle event."""
    info: FillingInfo | None = None
    after_dc2 = False
    for item in replies:
        if isinstance(item, codec.FilledVolumeAmount):
            info = FillingInfo(
                codec.to_decimal(item.volume, pump.volume_decimals),
                codec.to_decimal(item.amount, pump.amount_decimals),
            )
            after_dc2 = True
            continue
        if after_dc2 and info is not None and isinstance(item, codec.NozzleStatus) and item.nozzle:
            info = replace(
                info,
                nozzle=item.nozzle,
                unit_price=codec.to_decimal(item.price, pump.price_decimals),
            )
        after_dc2 = False  # only the transaction right after DC2 describes that fill
    return info if info is not None else FillingInfo(Decimal(0), Decimal(0))


def _no_health(event: LinkHealth) -> None:
    pass


def _is(kind: type) -> Callable[[Any], bool]:
    return lambda item: isinstance(item, kind)
