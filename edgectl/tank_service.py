"""The tank gauges in the running station: one driver task per `[[gauges]]` entry, their
readings turned into inventory, alarms and deliveries kept in the store.

Units: everything here is mm, °C and litres. A Veeder-Root console set up in US units
(`[[gauges]].units = "us"`) is converted by its driver; a Modbus register map says each
field's unit and the driver converts.

Each gauge's driver emits into one queue; one worker takes the events in order, so a tank's
readings, alarms and deliveries are handled one at a time. What the pumps give is shared among
the grade's tanks (`wetstock.allocate`) and handed to the tank's next reading as "dispensed
since the last": the running litres of fills in progress (`Station.fills_in_progress`, read at
each reading) and, when a fill is recorded as a sale (`on_sold`), what its running figure had
not counted yet. A long fill thus lowers the level with the litres accounted for as they go,
and no litre is counted twice.

A tank the gauge stops reporting while it answers for the others (a TLS console leaving it out
of its inventory, a probe on a Modbus line gone silent) is `tank_probe_offline` on its own,
cleared by its next reading; a console that answers but gives no inventory at all is its
gauge's `gauge_offline` (the device monitor's), with every tank on it offline.

The gauge's own alarms (TLS i205, a probe map's alarm bits) are kept as tank alarms
`tank_gauge_<name>`, raised and cleared as the gauge reports them. A probe that answers a read
with a refusal (a Modbus exception, registers that do not decode) raises `tank_probe_fault`
once, cleared by the tank's next reading.

Inventory goes to the outbox (telemetry, newest per tank) on a product change of
`[[tanks]].inventory_threshold_l` and at least every `inventory_interval_s`; deliveries and
alarms as events; each tank's reconciliation of the previous local day after local midnight
(by the service's wall clock, injectable for tests; days missed while the station was down are
caught up, each day kept once). Each gauge's driver is built by its protocol's entry in
drivers.registry (a Modbus probe line's register map converts to mm, °C, L); what a protocol
does differently (its own delivery reports, station tank numbers) is asked of the entry's
capabilities.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final, Protocol

from drivers import registry
from drivers.base import (
    GaugeAlarm,
    GaugeEvent,
    GaugeOffline,
    GaugeOnline,
    ProbeOffline,
    TankAlarms,
    TankGauge,
    TankGaugeReading,
    TankOffline,
    TankReadMalformed,
    TankReadRefused,
)
from drivers.base import GaugeDelivery as DriverDelivery
from edgectl.cloud import contract
from edgectl.config import Config, GaugeConfig
from edgectl.errors import ConfigError
from edgectl.forecourt.tanks import (
    AlarmChange,
    AlarmTracker,
    ImplausibleReading,
    Tank,
    TankAlarm,
    TankInventory,
    TankReading,
    litres,
)
from edgectl.forecourt.wetstock import (
    Delivery,
    DeliveryDetector,
    GaugeDelivery,
    Reconciliation,
    allocate,
    reconcile,
)
from edgectl.logs import get_logger
from edgectl.station import PumpFill, Station

HISTORY_EVERY = timedelta(minutes=1)  # one history row per tank per minute ...
HISTORY_CHANGE_L = Decimal(50)  # ... or sooner on a net change this big
MINUTE = timedelta(minutes=1)
DELIVERIES_INTERVAL_S = 120.0  # how often a console's delivery list is asked for
_CRITICAL = {TankAlarm.OVERFILL, TankAlarm.SUDDEN_LOSS}
# The daily reconciliation: the wall clock is looked at again at least this often (it may be
# set at boot, or jump), and at most this many days missed are reconciled after a restart.
CHECK_EVERY_S: Final = 600.0
CATCH_UP_DAYS: Final = 7
GAUGE_ALARM_PREFIX: Final = "tank_gauge_"
# Words in a gauge alarm's name that make it critical (product leaving or about to spill).
_CRITICAL_WORDS: Final = ("leak", "overfill", "sudden_loss", "high_high")
_NOT_CODE: Final = re.compile(r"[^a-z0-9]+")


class WallClock(Protocol):
    """The service's time of day: when local midnight comes, and what time alarms carry."""

    def now(self) -> datetime:
        """Now, timezone-aware."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The host's clock and asyncio's sleep."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class ProbeFault:
    """A probe that answers a tank's read, but not with figures: since `since`, why."""

    device_id: int
    reason: str
    since: datetime


@dataclass(slots=True)
class _Counted:
    """Litres of one pump's running fill already handed to the tanks."""

    number: int  # PumpFill.number
    volume: Decimal


def build_gauge(gauge: GaugeConfig, config: Config | None = None) -> TankGauge | None:
    """The driver of one configured gauge, built by its protocol's registry entry; None for
    a protocol with no gauge driver. `config` gives the tanks the gauge reads."""
    try:
        entry = registry.lookup(gauge.protocol, "gauge")
    except registry.UnknownProtocol:
        return None
    tanks = config.tanks_on(gauge.name) if config is not None else ()
    try:
        return entry.build_gauge(gauge, tanks, deliveries_interval_s=DELIVERIES_INTERVAL_S)
    except registry.GaugeSetupError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class _TankState:
    tank: Tank
    gauge: str
    alarms: AlarmTracker
    deliveries: DeliveryDetector
    dispensed: Decimal = Decimal(0)  # gross litres sold since the last plausible reading
    last: TankInventory | None = None
    reported: TankInventory | None = None  # the last inventory queued for the cloud
    report_threshold_l: Decimal = Decimal(50)
    report_interval: timedelta = timedelta(minutes=5)
    # Readings where the gauge's delivery flag rose (the reading before) and fell.
    flag_rises: list[datetime] = field(default_factory=list)
    flag_falls: list[datetime] = field(default_factory=list)
    history_at: datetime | None = None
    history_net: Decimal | None = None
    fault: ProbeFault | None = None  # the probe refuses the tank's read (tank_probe_fault)


class TankService:
    """Gauges → tanks → store. Build with `TankService.from_config`; None when no gauges."""

    def __init__(self, config: Config, station: Station, *, clock: WallClock | None = None) -> None:
        self.config = config
        self.station = station
        self.store = station.store
        self.clock: WallClock = clock or SystemClock()
        self.log = get_logger(station=config.station.id, component="tanks")
        self.gauges: dict[str, TankGauge] = {}
        for gauge in config.gauges:
            driver = build_gauge(gauge, config)
            if driver is None:
                self.log.warning(
                    "gauge_not_wired_yet",
                    gauge=gauge.name,
                    protocol=gauge.protocol,
                    detail="this protocol's tanks are not read by the station yet",
                )
                continue
            self.gauges[gauge.name] = driver
        self.tanks: dict[int, _TankState] = {}
        self._by_gauge: dict[tuple[str, int], int] = {}
        self._queue: asyncio.Queue[GaugeEvent] = asyncio.Queue()
        self.events_handled = 0
        # Every gauge event as it comes, before the tanks' queue (the device monitor).
        self.on_gauge_event: Callable[[GaugeEvent], None] = lambda event: None
        # Per pump: the running litres of its current fill already handed to the tanks.
        self._counted: dict[int, _Counted] = {}

    @classmethod
    def from_config(
        cls, config: Config, station: Station, *, clock: WallClock | None = None
    ) -> TankService | None:
        return cls(config, station, clock=clock) if config.gauges else None

    # ------------------------------------------------------------------ inputs
    def emit(self, event: GaugeEvent) -> None:
        self.on_gauge_event(event)
        self._queue.put_nowait(event)

    def on_sold(self, fill: PumpFill) -> None:
        """A fill recorded as a sale: what its running figure had not yet handed to the
        grade's tanks is shared among them by their product volumes. Called from the pump's
        sale path: it never raises (a failure here must not hold up a pump)."""
        try:
            self._sold(fill)
        except Exception as exc:
            self.log.error(
                "tank_sale_not_counted",
                pump=fill.pump,
                grade=fill.grade,
                litres=str(fill.volume),
                error=repr(exc),
            )

    def _sold(self, fill: PumpFill) -> None:
        counted = self._counted.pop(fill.pump, None)
        already = counted.volume if counted is not None and counted.number == fill.number else 0
        # Negative when the last running figure was above the metered sale: taken back.
        self._share(fill.grade, fill.volume - already)

    def _count_running(self) -> None:
        """Hand the tanks what the fills in progress gave since they were last looked at."""
        for fill in self.station.fills_in_progress():
            counted = self._counted.get(fill.pump)
            if counted is None or counted.number != fill.number:
                # A new fill; an older one that ended without a new sale (recorded before a
                # restart, or no fuel) stays counted as it was: its litres did leave.
                counted = self._counted[fill.pump] = _Counted(fill.number, Decimal(0))
            more = fill.volume - counted.volume
            if more > 0:
                self._share(fill.grade, more)
                counted.volume = fill.volume

    def _share(self, grade: str, litres: Decimal) -> None:
        tanks = [
            self.tanks[t.number]
            for t in self.config.tanks_for_grade(grade)
            if t.number in self.tanks
        ]
        if not tanks or not litres:
            return
        product = {
            s.tank.number: (s.last.product_l if s.last is not None else Decimal(0)) for s in tanks
        }
        for number, share in allocate(litres, product).items():
            self.tanks[number].dispensed += share

    # ------------------------------------------------------------------ running
    async def run(self) -> None:
        await self.prepare()
        self.log.info("tank_service_started", gauges=sorted(self.gauges), tanks=len(self.tanks))
        async with asyncio.TaskGroup() as tg:
            for name, gauge in self.gauges.items():
                poll = self.config.gauge(name).poll_interval_s
                tg.create_task(gauge.run(poll, self.emit), name=f"gauge-{name}")
            tg.create_task(self._work(), name="tank-worker")
            tg.create_task(self._daily(), name="tank-reconciliation")

    async def prepare(self) -> None:
        """The tanks' state from the config and the store (open alarms, deliveries kept)."""
        for cfg in self.config.tanks:
            if cfg.gauge not in self.gauges:
                continue
            model = cfg.model()
            open_kinds = await self.station.db(self.store.open_tank_alarms, cfg.number)
            active = [a for a in TankAlarm if f"tank_{a}" in open_kinds]
            after = await self.station.db(self.store.last_gauge_delivery_end, cfg.gauge, cfg.number)
            self.tanks[cfg.number] = _TankState(
                tank=model,
                gauge=cfg.gauge,
                alarms=AlarmTracker(model, active),
                deliveries=DeliveryDetector(
                    model,
                    # TLS consoles report their deliveries (i202); probes do not.
                    gauge_reports=self._entry(cfg.gauge).has(registry.Capability.GAUGE_DELIVERIES),
                    reports_after=None if after is None else datetime.fromisoformat(after),
                ),
                report_threshold_l=cfg.inventory_threshold_l,
                report_interval=timedelta(seconds=cfg.inventory_interval_s),
            )
            # A TLS console numbers its tanks itself; a probe bus reports station numbers.
            on_gauge = cfg.number if self._station_numbered(cfg.gauge) else cfg.gauge_tank
            self._by_gauge[(cfg.gauge, on_gauge)] = cfg.number
        self.station.on_sold = self.on_sold

    # ------------------------------------------------------------------ reconciliation
    async def _daily(self) -> None:
        """Reconcile the days before today after each local midnight, and at start (days
        missed while the station was down). The clock is looked at again at least every
        `CHECK_EVERY_S`, so a clock set late (at boot) or moved does not delay a day; a
        failed round is tried again then. A day is kept once (the store refuses another)."""
        reconciled_before: date | None = None  # every day before this one is done
        while True:
            today = self._today()
            if today != reconciled_before:
                try:
                    await self.catch_up(today)
                    reconciled_before = today
                except Exception as exc:
                    self.log.error("reconciliation_failed", error=repr(exc))
            midnight = _local_midnight(today + timedelta(days=1))
            wait = (midnight - self.clock.now()).total_seconds() + 1
            await self.clock.sleep(min(max(wait, 1.0), CHECK_EVERY_S))

    def _today(self) -> date:
        return self.clock.now().astimezone().date()

    async def catch_up(self, today: date) -> list[Reconciliation]:
        """Reconcile each tank's days from the one after its last kept day up to yesterday,
        oldest first (at most `CATCH_UP_DAYS`); a tank never reconciled starts yesterday, or
        not at all before the day of its first reading (a new station, a tank just added)."""
        yesterday = today - timedelta(days=1)
        earliest = yesterday - timedelta(days=CATCH_UP_DAYS - 1)
        first: dict[int, date] = {}
        for number in self.tanks:
            row = await self.station.db(self.store.last_reconciliation, number, today.isoformat())
            if row is not None:
                kept = date.fromisoformat(row["day"])
                first[number] = max(kept + timedelta(days=1), earliest)
                continue
            oldest = await self.station.db(self.store.first_tank_reading, number)
            if oldest is not None:
                first[number] = max(yesterday, datetime.fromisoformat(oldest).astimezone().date())
        done: list[Reconciliation] = []
        day = min(first.values(), default=today)
        while day <= yesterday:
            due = {number for number, start in first.items() if start <= day}
            done += await self.reconcile_day(day, only=due)
            day += timedelta(days=1)
        return done

    async def reconcile_day(
        self, day: date, *, only: Collection[int] | None = None
    ) -> list[Reconciliation]:
        """Reconcile every gauged tank (or those in `only`) for one local day from the
        stored readings, deliveries and sales; returns the reconciliations made now (a day
        already kept, or a tank without readings that day, gives none)."""
        start, end = _local_midnight(day), _local_midnight(day + timedelta(days=1))
        span = ((day - timedelta(days=1)).isoformat(), (day + timedelta(days=1)).isoformat())
        done: list[Reconciliation] = []
        for number, state in sorted(self.tanks.items()):
            if only is not None and number not in only:
                continue
            tank = state.tank
            rows = await self.station.db(self.store.tank_day_inputs, number, tank.grade, *span)
            readings = [(datetime.fromisoformat(r["at"]), r) for r in rows["readings"]]
            before = [r for at, r in readings if at <= start]
            within = [r for at, r in readings if start < at <= end]
            if not within and not before:
                self.log.warning("reconciliation_no_readings", tank=number, day=str(day))
                continue
            opening_row = before[-1] if before else within[0]
            closing_row = within[-1] if within else before[-1]
            delivered = sum(
                (
                    Decimal(r["delivered_tc"])
                    for r in rows["deliveries"]
                    if start < datetime.fromisoformat(r["end_at"]) <= end
                ),
                Decimal(0),
            )
            sold = sum(
                (
                    Decimal(r["volume"])
                    for r in rows["sales"]
                    if start < datetime.fromisoformat(r["ended_at"]) <= end
                ),
                Decimal(0),
            )
            share = self._tank_share(number, sold)
            # Sales are metered at product temperature: to 15 °C with the closing factor.
            product = Decimal(closing_row["product_l"])
            vcf = Decimal(closing_row["net_l"]) / product if product > 0 else Decimal(1)
            previous_row = await self.station.db(
                self.store.last_reconciliation, number, day.isoformat()
            )
            rec = reconcile(
                number,
                day,
                opening=Decimal(opening_row["net_l"]),
                closing=Decimal(closing_row["net_l"]),
                deliveries=max(delivered, Decimal(0)),
                sales=litres(share * vcf),
                allowance=tank.reconciliation_allowance_l,
                previous=None if previous_row is None else _previous(previous_row),
            )
            values = {
                "tank": number,
                "day": day.isoformat(),
                "opening": rec.opening,
                "deliveries": rec.deliveries,
                "sales": rec.sales,
                "closing": rec.closing,
                "variance": rec.variance,
                "cumulative_variance": rec.cumulative_variance,
                "period_throughput": rec.period_throughput,
                "flagged": int(rec.flagged),
            }
            report = contract.reconciliation_data(
                number,
                day.isoformat(),
                opening=rec.opening,
                deliveries=rec.deliveries,
                sales=rec.sales,
                closing=rec.closing,
                variance=rec.variance,
                cumulative_variance=rec.cumulative_variance,
                limit=rec.limit,
                flagged=rec.flagged,
                day_flagged=rec.day_flagged,
            )
            if await self.station.db(self.store.record_reconciliation, values, report):
                self.log.info(
                    "tank_reconciled",
                    tank=number,
                    day=str(day),
                    variance=str(rec.variance),
                    flagged=rec.flagged,
                )
                done.append(rec)
        return done

    def _tank_share(self, number: int, sold: Decimal) -> Decimal:
        """A tank's share of its grade's sales: by product volume among manifolded tanks."""
        grade = self.tanks[number].tank.grade
        mates = {
            n: (s.last.product_l if s.last is not None else Decimal(0))
            for n, s in self.tanks.items()
            if s.tank.grade == grade
        }
        return allocate(sold, mates)[number] if sold else Decimal(0)

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._handle(event)
            except Exception as exc:  # one bad event must not stop the tanks
                self.log.error("tank_event_failed", gauge=event.gauge, error=repr(exc))
            self.events_handled += 1

    async def _handle(self, event: GaugeEvent) -> None:
        if isinstance(event, TankGaugeReading):
            await self._reading(event)
        elif isinstance(event, GaugeOffline):
            self.log.warning("gauge_offline", gauge=event.gauge, reason=event.reason)
            now = self.clock.now()
            for state in self._tanks_of(event.gauge):
                await self._alarms(state, state.alarms.offline(now, event.reason))
        elif isinstance(event, ProbeOffline):
            self.log.warning("probe_offline", gauge=event.gauge, device=event.device_id)
            now = self.clock.now()
            for number in event.tanks:
                if number in self.tanks:
                    tracker = self.tanks[number]
                    await self._alarms(tracker, tracker.alarms.offline(now, event.reason))
        elif isinstance(event, TankOffline):
            # The gauge answers for its other tanks: this one alone is offline, until its
            # next reading.
            alone = self._state(event.gauge, event.tank)
            if alone is not None:
                self.log.warning(
                    "tank_offline", gauge=event.gauge, tank=alone.tank.number, reason=event.reason
                )
                await self._alarms(alone, alone.alarms.offline(self.clock.now(), event.reason))
        elif isinstance(event, TankReadRefused | TankReadMalformed):
            await self._probe_fault(event)
        elif isinstance(event, GaugeOnline):
            self.log.info("gauge_online", gauge=event.gauge)
        elif isinstance(event, DriverDelivery):
            await self._gauge_delivery(event)
        elif isinstance(event, TankAlarms):
            await self._gauge_alarms(event)

    async def _probe_fault(self, event: TankReadRefused | TankReadMalformed) -> None:
        """The probe answered the tank's read without figures: a probe fault, logged and
        raised once (the driver reports it when it starts or changes, not on every poll)."""
        state = self._state(event.gauge, event.tank)
        if state is None:
            return
        now = self.clock.now()
        if isinstance(event, TankReadRefused):
            kind, why = "refused", f"{event.text} (code {event.exception_code})"
        else:
            kind, why = "malformed", event.text
        reason = f"device {event.device_id}: {why}"
        if state.fault is None:
            state.fault = ProbeFault(event.device_id, reason, now)
        else:
            state.fault = ProbeFault(event.device_id, reason, state.fault.since)
        self.log.warning(
            "probe_read_failed",
            gauge=event.gauge,
            tank=state.tank.number,
            device=event.device_id,
            failure=kind,
            why=why,
        )
        await self._alarms(state, state.alarms.fault(now, reason))

    async def _gauge_alarms(self, event: TankAlarms) -> None:
        """The complete set of the gauge's own alarms on a tank: each kept as an alarm of
        the station, raised when the gauge starts reporting it and cleared when it stops.
        The store says what is open, so a restart neither repeats nor forgets one."""
        state = self._state(event.gauge, event.tank)
        if state is None:
            return
        number = state.tank.number
        wanted = {gauge_alarm_kind(alarm): alarm for alarm in event.alarms}
        open_kinds = await self.station.db(self.store.open_tank_alarms, number)
        is_open = {kind for kind in open_kinds if kind.startswith(GAUGE_ALARM_PREFIX)}
        for kind in sorted(wanted.keys() - is_open):
            alarm = wanted[kind]
            message = f"tank {number}: gauge {event.gauge} reports {alarm.text} (code {alarm.code})"
            await self.station.db(
                self.store.raise_tank_alarm,
                number,
                kind,
                message[:200],
                severity="critical" if any(w in kind for w in _CRITICAL_WORDS) else "warning",
                detail={"gauge": event.gauge, "code": alarm.code},
            )
            self.log.warning("tank_gauge_alarm", tank=number, alarm=kind, raised=True)
        for kind in sorted(is_open - wanted.keys()):
            await self.station.db(self.store.clear_tank_alarm, number, kind)
            self.log.info("tank_gauge_alarm", tank=number, alarm=kind, raised=False)

    def _entry(self, gauge: str) -> registry.Entry:
        return registry.lookup(self.config.gauge(gauge).protocol, "gauge")

    def _station_numbered(self, gauge: str) -> bool:
        return gauge in self.gauges and self._entry(gauge).has(
            registry.Capability.STATION_TANK_NUMBERS
        )

    def _tanks_of(self, gauge: str) -> list[_TankState]:
        return [s for s in self.tanks.values() if s.gauge == gauge]

    def _state(self, gauge: str, gauge_tank: int) -> _TankState | None:
        number = self._by_gauge.get((gauge, gauge_tank))
        return None if number is None else self.tanks[number]

    async def _reading(self, event: TankGaugeReading) -> None:
        state = self._state(event.gauge, event.tank)
        if state is None:
            return  # a tank on the console the station does not sell from
        if event.height is None or event.temperature is None:
            self.log.warning("gauge_reading_incomplete", gauge=event.gauge, tank=event.tank)
            return
        reading = TankReading(
            tank=state.tank.number,
            at=event.at,
            height_mm=event.height,
            temperature_c=event.temperature,
            water_mm=event.water or Decimal(0),
            volume_l=event.volume,
            tc_volume_l=event.tc_volume,
            water_volume_l=event.water_volume,
            gauge_delivery=bool(event.status_bits & 0x0001),
        )
        if state.last is not None and reading.at <= state.last.at:
            return  # out of order: the detector needs readings in time order
        measured = state.tank.measure(reading)
        if state.fault is not None:
            # The probe gave the tank's figures again: its fault alarm clears with them.
            self.log.info(
                "probe_read_recovered",
                gauge=event.gauge,
                tank=state.tank.number,
                device=state.fault.device_id,
                since=state.fault.since.isoformat(),
            )
            state.fault = None
        if isinstance(measured, ImplausibleReading):
            self.log.warning("tank_reading_implausible", tank=reading.tank, why=measured.reasons)
            await self._alarms(state, state.alarms.reject(measured))
            return
        inv = measured
        self._count_running()
        # A sale metered below its last running figure leaves a negative rest: it is taken
        # off what the next readings bring, never given as a negative amount.
        dispensed = max(state.dispensed, Decimal(0))
        state.dispensed -= dispensed
        changes = state.alarms.observe(inv, dispensed)
        found = state.deliveries.observe(inv, dispensed)
        previous, state.last = state.last, inv
        if previous is not None and inv.gauge_delivery != previous.gauge_delivery:
            flags = state.flag_rises if inv.gauge_delivery else state.flag_falls
            flags.append(previous.at if inv.gauge_delivery else inv.at)
            del flags[:-20]
        history = (
            state.history_at is None
            or inv.at - state.history_at >= HISTORY_EVERY
            or state.history_net is None
            or abs(inv.net_l - state.history_net) >= HISTORY_CHANGE_L
        )
        if history:
            state.history_at, state.history_net = inv.at, inv.net_l
        report = None
        sent = state.reported
        if (
            sent is None
            or inv.at - sent.at >= state.report_interval
            or abs(inv.product_l - sent.product_l) >= state.report_threshold_l
        ):
            state.reported = inv
            report = _inventory_report(inv, state.tank.grade)
        await self.station.db(
            self.store.record_tank_reading, _inventory_row(inv), history=history, report=report
        )
        await self._alarms(state, changes)
        for delivery in found:
            await self._delivery(state, delivery)

    async def _gauge_delivery(self, event: DriverDelivery) -> None:
        state = self._state(event.gauge, event.tank)
        if state is None:
            return
        volumes = (event.start_volume, event.end_volume)
        if volumes[0] is None or volumes[1] is None:
            return
        # Consoles keep local time (taken as the station's time zone), to the minute. The
        # station's own readings carry the console's "delivery in progress" flag: a flag
        # rising or falling within the reported minute gives the start or end to the reading,
        # so that the sales added back are those made during the delivery.
        start_at, end_at = event.start.astimezone(UTC), event.end.astimezone(UTC)
        start_at = _within_minute(start_at, state.flag_rises, start_at)
        end_at = _within_minute(end_at, state.flag_falls, end_at)
        report = GaugeDelivery(
            tank=state.tank.number,
            start_at=start_at,
            end_at=end_at,
            start_volume=volumes[0],
            end_volume=volumes[1],
            start_volume_tc=event.start_tc_volume or volumes[0],
            end_volume_tc=event.end_tc_volume or volumes[1],
        )
        delivery = state.deliveries.report(report)
        if delivery is not None:
            await self._delivery(state, delivery)

    async def _delivery(self, state: _TankState, delivery: Delivery) -> None:
        row = {
            "tank": delivery.tank,
            "source": str(delivery.source),
            "start_at": delivery.start_at.isoformat(),
            "end_at": delivery.end_at.isoformat(),
            "start_volume": delivery.start_volume,
            "end_volume": delivery.end_volume,
            "start_volume_tc": delivery.start_volume_tc,
            "end_volume_tc": delivery.end_volume_tc,
            "dispensed_during": _opt(delivery.dispensed_during),
            "dispensed_during_tc": _opt(delivery.dispensed_during_tc),
            "delivered": delivery.delivered,
            "delivered_tc": delivery.delivered_tc,
        }
        delivery_id = await self.station.db(self.store.record_delivery, state.gauge, row)
        if delivery_id is not None:
            self.log.info(
                "tank_delivery",
                tank=delivery.tank,
                source=str(delivery.source),
                delivered=str(delivery.delivered),
                dispensed_during=_opt(delivery.dispensed_during),
            )

    async def _alarms(self, state: _TankState, changes: tuple[AlarmChange, ...]) -> None:
        for change in changes:
            kind = f"tank_{change.alarm}"
            if change.raised:
                message = f"tank {change.tank}: {str(change.alarm).replace('_', ' ')}"
                if change.value is not None:
                    message += f" ({change.value}, limit {change.limit})"
                if change.detail:
                    message += f": {change.detail}"
                await self.station.db(
                    self.store.raise_tank_alarm,
                    change.tank,
                    kind,
                    message[:200],
                    severity="critical" if change.alarm in _CRITICAL else "warning",
                    detail={"value": _opt(change.value), "limit": _opt(change.limit)},
                )
            else:
                await self.station.db(self.store.clear_tank_alarm, change.tank, kind)
            self.log.info("tank_alarm", tank=change.tank, alarm=kind, raised=change.raised)

    # ------------------------------------------------------------------ views
    def snapshot(self) -> list[TankView]:
        """Every tank the service reads, as it stands now, in tank-number order (for the
        control socket: `edgectl tanks`, `watch`, `status`). Never raises, never waits.

        The figures are those of the last plausible reading (None before the first);
        `implausible` says the gauge's latest reading of the tank was refused since. A tank
        is online while its gauge answers and its own probe has not been reported offline.
        """
        products = {grade.id: grade.name for grade in self.config.grades}
        views: list[TankView] = []
        for number, state in sorted(self.tanks.items()):
            tank, inv, active = state.tank, state.last, state.alarms.active
            gauge = self.gauges.get(state.gauge)
            views.append(
                TankView(
                    number=number,
                    name=tank.name,
                    grade=tank.grade,
                    product=products.get(tank.grade, tank.grade),
                    capacity_l=tank.capacity_l,
                    gauge=state.gauge,
                    online=(
                        gauge is not None
                        and gauge.is_online
                        and TankAlarm.PROBE_OFFLINE not in active
                    ),
                    reading_at=None if inv is None else inv.at,
                    height_mm=None if inv is None else inv.height_mm,
                    water_mm=None if inv is None else inv.water_mm,
                    temperature_c=None if inv is None else inv.temperature_c,
                    gross_l=None if inv is None else inv.gross_l,
                    water_l=None if inv is None else inv.water_l,
                    product_l=None if inv is None else inv.product_l,
                    net_l=None if inv is None else inv.net_l,
                    ullage_l=None if inv is None else inv.ullage_l,
                    fill_pct=None if inv is None else inv.fill_pct,
                    alarms=tuple(str(alarm) for alarm in TankAlarm if alarm in active),
                    implausible=TankAlarm.INVALID_READING in active,
                )
            )
        return views


@dataclass(frozen=True, slots=True)
class TankView:
    """One tank as the station knows it at one instant (`TankService.snapshot`).

    Heights in mm, temperature in °C, volumes in litres: `gross_l` is all liquid (product and
    water), `water_l` the water under it, `product_l` the product at its own temperature,
    `net_l` the product at 15 °C, `ullage_l` the room left to capacity, `fill_pct` gross over
    capacity. `alarms` are the active alarms the service tracks itself, by name, in
    `TankAlarm` order; the gauge's own alarms (`tank_gauge_*`) are kept in the store only.
    """

    number: int
    name: str
    grade: str
    product: str  # the grade's name
    capacity_l: Decimal
    gauge: str
    online: bool
    reading_at: datetime | None
    height_mm: Decimal | None
    water_mm: Decimal | None
    temperature_c: Decimal | None
    gross_l: Decimal | None
    water_l: Decimal | None
    product_l: Decimal | None
    net_l: Decimal | None
    ullage_l: Decimal | None
    fill_pct: Decimal | None
    alarms: tuple[str, ...]
    implausible: bool


def gauge_alarm_kind(alarm: GaugeAlarm) -> str:
    """The station's alarm kind for one of a gauge's own alarms: `tank_gauge_` and the
    gauge's name for it in snake case (TLS i205 "sudden loss" -> tank_gauge_sudden_loss;
    a code without a name -> tank_gauge_alarm_31)."""
    name = _NOT_CODE.sub("_", alarm.text.lower()).strip("_").removeprefix("tank_")
    if not name or not name[0].isalpha():
        name = f"alarm_{alarm.code:02d}"
    return (GAUGE_ALARM_PREFIX + name)[:64].rstrip("_")


def _local_midnight(day: date) -> datetime:
    return datetime.combine(day, time()).astimezone().astimezone(UTC)


def _previous(row: dict[str, Any]) -> Reconciliation:
    """A kept day as `reconcile` carries it on: only its month's running sums matter."""
    return Reconciliation(
        tank=int(row["tank"]),
        day=date.fromisoformat(row["day"]),
        opening=Decimal(0),
        deliveries=Decimal(0),
        sales=Decimal(0),
        closing=Decimal(0),
        period_throughput_before=Decimal(row["period_throughput"]),
        cumulative_variance_before=Decimal(row["cumulative_variance"]),
    )


def _within_minute(at: datetime, candidates: list[datetime], default: datetime) -> datetime:
    """The last candidate within the minute starting at `at`, else `default`."""
    inside = [c for c in candidates if at <= c < at + MINUTE]
    return inside[-1] if inside else default


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _inventory_report(inv: TankInventory, grade: str) -> dict[str, Any]:
    return contract.inventory_data(
        inv.tank,
        grade,
        measured_at=contract.timestamp(inv.at),
        height_mm=inv.height_mm,
        water_mm=inv.water_mm,
        temperature_c=inv.temperature_c,
        product_l=max(inv.product_l, Decimal(0)),
        net_l=max(inv.net_l, Decimal(0)),
        water_l=inv.water_l,
        ullage_l=inv.ullage_l,
        fill_pct=max(inv.fill_pct, Decimal(0)),
    )


def _inventory_row(inv: TankInventory) -> dict[str, Any]:
    return {
        "tank": inv.tank,
        "at": inv.at.isoformat(),
        "height_mm": inv.height_mm,
        "water_mm": inv.water_mm,
        "temperature_c": inv.temperature_c,
        "gross_l": inv.gross_l,
        "water_l": inv.water_l,
        "product_l": inv.product_l,
        "net_l": inv.net_l,
        "ullage_l": inv.ullage_l,
        "fill_pct": inv.fill_pct,
    }
