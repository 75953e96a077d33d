"""The application service: applies dispenser events and commands to the forecourt, durably."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from drivers.base import (
    AlarmReport,
    DispenserEvent,
    DispenserLine,
    DispenserStatus,
    DriverError,
    FillingInfo,
    FillingReport,
    NozzleReport,
    PumpOffline,
    PumpOnline,
    StatusReport,
)
from edgectl.config import Config, PumpConfig
from edgectl.errors import (
    CommandError,
    EdgectlError,
    IllegalTransition,
    StoreError,
    StoreUnwritableError,
)
from edgectl.forecourt.fuelling_point import FPState, FuellingPoint, Transition
from edgectl.forecourt.sale import (
    Authorization,
    AuthorizationSource,
    AuthorizationState,
    Sale,
)
from edgectl.logs import get_logger
from edgectl.store.store import (
    ORDER_REASON_LIFTED_NO_FUEL,
    PRIORITY_TELEMETRY,
    OrderExists,
    Store,
    utc_now,
)

P = ParamSpec("P")
T = TypeVar("T")

_SALE_OVER = {DispenserStatus.FILLING_COMPLETED, DispenserStatus.MAX_REACHED}
_IN_SALE = {DispenserStatus.FILLING, DispenserStatus.SUSPENDED, *_SALE_OVER}
_NO_FLOW_AUTHORISED = {FPState.AUTHORISED, FPState.STARTED, FPState.SUSPENDED_STARTED}
RETRY_S = 2.0  # a sale that could not be read yet is tried again this often
# An order for a pump the station has not heard from since it started waits at most this
# long from the start: the line has tried the pump `offline_after` times by then (about 3 s
# with the DART defaults), so the pump answers, or is declared offline, or never will.
DISCOVERY_S = 5.0
# An order for a pump whose sale is committed and which is only being reset waits at most
# this long for the reset (one failed reset and its retry fit in it).
RESET_WAIT_S = 2 * RETRY_S + 1.0


def observed_state(status: DispenserStatus | None, nozzle_out: bool) -> FPState:
    """The fuelling-point state a dispenser's report stands for, used to resynchronise."""
    if status is None or status is DispenserStatus.NOT_PROGRAMMED:
        return FPState.INOPERATIVE
    if status is DispenserStatus.SWITCHED_OFF:
        return FPState.CLOSED
    if status is DispenserStatus.AUTHORIZED:
        return FPState.STARTED if nozzle_out else FPState.AUTHORISED
    if status is DispenserStatus.FILLING:
        return FPState.FUELLING
    if status is DispenserStatus.SUSPENDED:
        return FPState.SUSPENDED_FUELLING
    return FPState.CALLING if nozzle_out else FPState.IDLE


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A pay-at-pump order as the station needs it (parsed and verified by the cloud link)."""

    order_id: str
    cmd_id: str
    pump: int
    preset_type: str  # "amount" | "volume"
    preset_value: Decimal
    currency: str
    nozzles: tuple[int, ...] = ()
    grades: tuple[str, ...] = ()
    payment_method: str | None = None
    expires_at: str | None = None
    # The command as received: persisted in the inbox in the order's own transaction.
    command_payload: str | None = None
    # The station's clock() when the command was received: the order's latency runs from it
    # to the pump's confirmation of the authorization.
    received_at: float | None = None


@dataclass(frozen=True, slots=True)
class PriceSet:
    price_set_id: str | None  # None: the prices of the configuration file
    prices: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class PumpFill:
    """Litres one fill of one pump has given: running while the fill is in progress (not yet
    recorded as a sale), final once it is sold. `number` tells a pump's fills apart: it
    counts the fills the station has seen the pump start since it started."""

    pump: int
    number: int
    grade: str
    volume: Decimal


@dataclass(frozen=True, slots=True)
class PumpView:
    """A read-only snapshot of one pump for status screens."""

    number: int
    line: str
    address: int
    online: bool
    state: FPState
    status: DispenserStatus | None
    nozzle: int
    nozzle_out: bool
    grade: str | None
    unit_price: Decimal | None
    volume: Decimal
    amount: Decimal
    authorization_id: int | None
    sales: int


class Station:
    """Owns the fuelling points; one worker task per pump applies that pump's events in order."""

    def __init__(
        self,
        config: Config,
        store: Store,
        lines: Mapping[str, DispenserLine],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self.lines = lines
        self.clock = clock
        self.log = get_logger(station=config.station.id)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self.prices = PriceSet(None, {g.id: g.unit_price for g in config.grades})
        self.on_outbox: Callable[[], None] = lambda: None  # the cloud publisher's wake-up
        # Each sale recorded, for the tank service (wet stock); a no-op without gauges.
        self.on_sold: Callable[[PumpFill], None] = lambda fill: None
        # Seconds from a cloud order's command to its pump's confirmation (metrics).
        self.on_order_confirmed: Callable[[float], None] = lambda seconds: None
        # How each authorization asked for ended, by (source, outcome): "refused" (never
        # recorded: pump busy or offline, outside the limits…), else the state it ended in
        # (completed, no_sale, expired, cancelled, failed). Since the daemon started.
        self.authorization_outcomes: Counter[tuple[str, str]] = Counter()
        self._price_tasks: set[asyncio.Task[None]] = set()
        self.points: dict[int, PumpService] = {}
        self._by_address: dict[tuple[str, int], PumpService] = {}
        for pump in config.pumps:
            service = PumpService(self, pump, lines[pump.line])
            self.points[pump.number] = service
            self._by_address[(pump.line, pump.address)] = service

    async def db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store call on the store's own thread so the event loop never waits on disk."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        finally:
            self.on_outbox()  # most writes queue outbox rows: let the publisher look now

    async def db_quiet(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A store call that adds no outbox rows (the publisher's own reads and deletes):
        waking the publisher after it would make it spin."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def on_dispenser_event(self, event: DispenserEvent) -> None:
        """Driver callback: route the event to its pump's worker (never blocks the line)."""
        service = self._by_address.get((event.line, event.pump))
        if service is None:
            self.log.warning("event_from_unknown_pump", line=event.line, address=event.pump)
            return
        service.events_queued += 1
        service.queue.put_nowait(event)

    async def run(self) -> None:
        await self.restore_prices()
        async with asyncio.TaskGroup() as tg:
            for number, service in self.points.items():
                tg.create_task(service.run(), name=f"pump-{number}")
            tg.create_task(self._watch_store(), name="store-watch")

    async def _watch_store(self) -> None:
        """While the store cannot write (disk full, permissions, I/O), try it again each time
        its back-off allows, with a write that changes nothing; once it writes, wake every
        pump, so that what waited for it (a sale held at the pump) is done now. The store
        logs the fault once, keeps its alarm, and records it with its first commit."""
        loop = asyncio.get_running_loop()
        failing = asyncio.Event()

        def unwritable() -> None:  # called on the store's thread
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to watch
                loop.call_soon_threadsafe(failing.set)

        self.store.on_unwritable = unwritable
        while True:
            await failing.wait()
            failing.clear()
            while (wait := self.store.next_write_in()) is not None:
                await asyncio.sleep(wait)
                # Failing, it backs off further (the store said so once already).
                with contextlib.suppress(StoreUnwritableError):
                    await self.db(self.store.probe)
            for service in self.points.values():
                service.store_writable_again()

    async def drain(self, timeout: float) -> None:
        """Stop authorizing, and let sales being read and committed finish (up to `timeout`)."""
        for service in self.points.values():
            service.stopping = True
        waits = [service.idle.wait() for service in self.points.values()]
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*waits)
        except TimeoutError:
            self.log.error("shutdown_deadline_passed_with_sale_in_progress")

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def snapshot(self) -> list[PumpView]:
        return [service.view() for service in self.points.values()]

    def fills_in_progress(self) -> list[PumpFill]:
        """The fills flowing or finished but not yet recorded as sales, with the litres
        each pump reported last: what the tanks have given that no sale accounts for yet."""
        fills = (service.fill_in_progress() for service in self.points.values())
        return [fill for fill in fills if fill is not None]

    def service(self, pump: int) -> PumpService:
        service = self.points.get(pump)
        if service is None:
            raise CommandError(f"unknown pump {pump}", code="unknown_pump")
        return service

    async def authorize(
        self,
        pump: int,
        source: AuthorizationSource,
        *,
        nozzles: tuple[int, ...] = (),
        preset_amount: Decimal | None = None,
        preset_volume: Decimal | None = None,
        requested_by: str | None = None,
    ) -> Authorization:
        try:
            service = self.service(pump)
        except CommandError:
            self.authorization_outcomes[source.value, "refused"] += 1
            raise
        return await service.authorize(
            source,
            nozzles=nozzles,
            preset_amount=preset_amount,
            preset_volume=preset_volume,
            requested_by=requested_by,
        )

    async def settle_pump(self, pump: int, until: float) -> None:
        """Wait (until `until` on the station's clock at most) while an order for `pump`
        could not be judged fairly yet: the pump has not been heard from since the station
        started, or its sale is committed and it is only being reset. Returns at once
        otherwise, and for an unknown pump (refused by `start_order`)."""
        service = self.points.get(pump)
        if service is not None:
            await service.settle(until)

    def lift_deadline(self, expires_at: str | None) -> str:
        """The lift deadline of an order accepted now: its own `expires_at`, or
        `authorize_timeout_s` from now, whichever comes first."""
        timeout = self.config.authorization.authorize_timeout_s
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        if expires_at is not None and datetime.fromisoformat(expires_at) < deadline:
            return expires_at
        return _iso(deadline)

    async def start_order(self, order: OrderRequest) -> Authorization:
        """Check a pay-at-pump order against this station, persist it, authorize the pump.

        The order is persisted with the lift deadline in force (`lift_deadline`), which every
        step of the order reports and the pump's timer keeps, across restarts too."""
        try:
            service = self.service(order.pump)
            order = replace(order, expires_at=self.lift_deadline(order.expires_at))
            if order.currency != self.config.station.currency:
                raise CommandError(
                    f"currency {order.currency} is not the station's "
                    f"{self.config.station.currency}",
                    code="wrong_currency",
                )
            nozzles = service.allowed_nozzles(order.nozzles, order.grades)
        except CommandError:
            self.authorization_outcomes[AuthorizationSource.CLOUD.value, "refused"] += 1
            raise
        # An order id already taken is refused by the store, in the transaction that would
        # persist this one (one commit before the pump, and no read off the store thread).
        return await service.authorize(
            AuthorizationSource.CLOUD,
            nozzles=nozzles,
            preset_amount=order.preset_value if order.preset_type == "amount" else None,
            preset_volume=order.preset_value if order.preset_type == "volume" else None,
            requested_by="cloud",
            order=order,
        )

    async def cancel_order(self, order_id: str) -> str:
        """Withdraw an order whose fuel has not started flowing; returns a result message."""
        order = await self.db(self.store.order, order_id)
        if order is None:
            raise CommandError(f"no order {order_id}", code="unknown_order")
        if order["status"] == "cancelled":
            return f"order {order_id} was already cancelled"
        service = self.service(int(order["pump"]))
        async with service.lock:
            auth = service.auth
            if (
                auth is not None
                and auth.order_id == order_id
                and (not service.online or service.status is None)
            ):
                reason = service.offline_reason or (
                    "it has not reported its status since it came back"
                    if service.online
                    else "it does not answer its line"
                )
                raise CommandError(
                    f"pump {order['pump']} is offline ({reason}): order {order_id} stays"
                    " authorized until the pump answers; send the cancel again",
                    code="pump_offline",
                )
            if (
                order["status"] not in ("accepted", "authorized")
                or auth is None
                or auth.order_id != order_id
                or service.status not in (DispenserStatus.AUTHORIZED, DispenserStatus.RESET)
            ):
                raise CommandError(
                    f"order {order_id} is {order['status']} and can no longer be cancelled",
                    code="order_not_cancellable",
                )
            await self._send_stop(service, "cancel")
            await service._end_auth(AuthorizationState.CANCELLED, "cancelled by the cloud")
            await service._publish_state()
        return f"order {order_id} cancelled, pump {order['pump']} de-authorized"

    async def stop_pump(self, pump: int) -> str:
        """Emergency stop: the pump stops at once whatever it is doing; its sale is kept."""
        service = self.service(pump)
        await self._send_stop(service, "stop")
        self.log.warning("emergency_stop", pump=pump)
        return f"pump {pump} stopped"

    async def _send_stop(self, service: PumpService, why: str) -> None:
        """STOP to the pump, or a typed refusal the command's result carries: a pump that
        does not confirm its STOP is `pump_refused` (`pump_offline` if it was not answering
        its line before), never an exception out of the command handler, which would make
        the broker deliver the same command again on every reconnect."""
        was_online = service.online
        try:
            await service.line.stop(service.address)
        except DriverError as exc:
            number = service.pump.number
            self.log.error("stop_failed", pump=number, command=why, error=str(exc))
            if not was_online:
                reason = service.offline_reason or "no answer since the station started"
                raise CommandError(
                    f"pump {number} is offline ({reason}); the STOP was not confirmed: {exc}",
                    code="pump_offline",
                ) from exc
            raise CommandError(
                f"pump {number} did not confirm the STOP: {exc}", code="pump_refused"
            ) from exc

    async def set_prices(
        self,
        price_set_id: str,
        prices: Mapping[str, Decimal],
        *,
        effective_at: datetime | None = None,
    ) -> None:
        """New grade prices, now or at `effective_at`; kept in the store so a restart keeps them.

        Each dispenser takes them when it is idle and each confirmation goes to the cloud.
        """
        unknown = sorted(set(prices) - {g.id for g in self.config.grades})
        if unknown:
            raise CommandError(f"unknown grade(s): {', '.join(unknown)}", code="unknown_grade")
        when = _iso(effective_at) if effective_at is not None else None
        await self.db(self.store.save_price_set, price_set_id, dict(prices), when)
        self._schedule_prices(price_set_id, dict(prices), effective_at)

    def _schedule_prices(
        self, price_set_id: str, prices: dict[str, Decimal], effective_at: datetime | None
    ) -> None:
        delay = 0.0 if effective_at is None else (effective_at - datetime.now(UTC)).total_seconds()
        task = asyncio.get_running_loop().create_task(
            self._activate_prices(price_set_id, prices, max(0.0, delay)),
            name=f"prices-{price_set_id}",
        )
        self._price_tasks.add(task)
        task.add_done_callback(self._price_tasks.discard)

    async def _activate_prices(
        self, price_set_id: str, prices: dict[str, Decimal], delay: float
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        merged = {**self.prices.prices, **prices}
        self.prices = PriceSet(price_set_id, merged)
        await self.db(
            self.store.activate_price_set, price_set_id, merged, self.config.station.currency
        )
        self.log.info("price_set_active", price_set_id=price_set_id)
        for service in self.points.values():
            service.wake()

    async def republish_retained(self, session_present: bool = False) -> None:
        """On every new connection to the broker: queue again each pump's live state and the
        prices in force, the retained topics the broker may have lost (a broker restarted
        without its database, a session that expired, retained messages cleared by hand).
        The pumps queue theirs from their own task, in order with their changes."""
        for service in self.points.values():
            service.republish_state()
        await self.db(
            self.store.publish_prices,
            self.prices.price_set_id,
            dict(self.prices.prices),
            self.config.station.currency,
        )
        self.log.info("retained_state_queued", session_present=session_present)

    async def restore_prices(self) -> None:
        """At start: the last active price set, and the ones still waiting for their time."""
        active, pending = await self.db(self.store.price_sets)
        if active is not None:
            self.prices = PriceSet(active[0], {**self.prices.prices, **active[1]})
        # The retained prices state always says what is in force, from the first start on.
        await self.db(
            self.store.publish_prices,
            self.prices.price_set_id,
            dict(self.prices.prices),
            self.config.station.currency,
        )
        for price_set_id, prices, effective_at in pending:
            moment = datetime.fromisoformat(effective_at) if effective_at else None
            self._schedule_prices(price_set_id, prices, moment)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PumpService:
    """One pump: follows its reports, authorizes it, reads and commits its sales."""

    def __init__(self, station: Station, pump: PumpConfig, line: DispenserLine) -> None:
        self.station = station
        self.pump = pump
        self.line = line
        self.address = pump.address
        self.fp = FuellingPoint(pump.number, now=station.clock())
        self.queue: asyncio.Queue[DispenserEvent | None] = asyncio.Queue()  # None: re-decide
        self.log = station.log.bind(pump=pump.number, line=pump.line)
        self.online = False
        self.status: DispenserStatus | None = None
        self.nozzle = 0  # the nozzle selected now (lifted, or last lifted), from DC3 reports
        self.nozzle_out = False
        self.unit_price: Decimal | None = None
        # The nozzle and price of the current or last fill: learned when it starts and from
        # the pump's own description of it, never from a later lift of another nozzle.
        self.fill_nozzle: int | None = None
        self.fill_price: Decimal | None = None
        self.volume = Decimal(0)
        self.amount = Decimal(0)
        self.auth: Authorization | None = None
        self.stopping = False
        self.idle = asyncio.Event()
        self.idle.set()
        self.sales_recorded = 0
        self.fills = 0  # fills seen starting since the station started (PumpFill.number)
        self._fill_volume = Decimal(0)  # litres of the current fill, as last reported
        self._fill_sold = False  # the current fill is recorded (or ended without fuel)
        self._conflict_alarmed = False  # the current fill's sale conflict is on record
        self._known_status: DispenserStatus | None = None  # last status reported, kept offline
        self._resync = True
        # Auto mode authorizes each lift once: the lift in progress has had its release
        # (durable, so a restart with the nozzle still out does not release it again).
        self._lift_served = False
        self._retry_at: float | None = None
        self._check_totals = False
        self._reconcile_auth = True  # an authorization found at start must be checked on the pump
        self.price_set_id: str | None = None  # the price set the pump's prices came from
        self._prices_wanted: tuple[str | None, tuple[Decimal, ...]] | None = None
        self._published_state: tuple[object, ...] | None = None
        # Events handed to the queue and taken from it: reports the pump sent before it
        # confirmed the current authorization (the last sale's reset, say) are old news.
        self.events_queued = 0
        self._events_taken = 0
        self._confirmed_at = 0  # events_queued when the pump confirmed the authorization
        # Decisions about this pump (its events, authorizations, cancels) run one at a time.
        self.lock = asyncio.Lock()
        # Start-up: orders wait for the pump's first word (its status, or the line declaring
        # it offline) until this time at most; then what is known is what is said.
        self._discovery_until = station.clock() + DISCOVERY_S
        self._heard = False
        self.offline_reason: str | None = None  # why the line last said the pump is offline
        self._lifted_during: int | None = None  # an authorization under which a nozzle was out
        # Set (and replaced) after every step of the pump's task: what orders waiting on the
        # pump's situation wake on.
        self._stepped = asyncio.Event()

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        self._discovery_until = self.station.clock() + DISCOVERY_S
        self.auth = await self.station.db(self.station.store.open_authorization, self.pump.number)
        self._lift_served = await self.station.db(self.station.store.lift_served, self.pump.number)
        while True:
            timeout = self._next_deadline()
            timed_out = False
            event: DispenserEvent | None = None
            try:
                async with asyncio.timeout(timeout):
                    event = await self.queue.get()
            except TimeoutError:
                timed_out = True
            if event is not None:
                self._events_taken += 1
            self.idle.clear()
            try:
                async with self.lock:
                    if timed_out:
                        await self._on_timer()
                    elif event is None:
                        await self._act()
                    else:
                        await self._on_event(event)
                    await self._publish_state()
            except StoreUnwritableError:
                # The store logged the fault once and keeps its alarm; nothing was written,
                # so nothing was done to the pump (a sale stays held there, no release). The
                # station's store watch wakes this pump once the store writes again.
                pass
            except (EdgectlError, DriverError) as exc:
                self.log.error("pump_step_failed", error=str(exc), code=exc.code)
            except Exception:
                # A bug must not stop this pump, let alone the station: log it loudly, go on.
                self.log.exception("pump_step_crashed")
            finally:
                if self.queue.empty() and self._settled():
                    self.idle.set()
                self._stepped.set()
                self._stepped = asyncio.Event()

    async def settle(self, until: float) -> None:
        """Wait, until `until` at most, while an order could not be judged fairly: the pump
        not heard from since the station started (bounded by DISCOVERY_S from the start),
        or its sale committed and the pump only being reset (bounded by RESET_WAIT_S)."""
        asked = self.station.clock()
        while (limit := self._worth_waiting(asked)) is not None:
            remaining = min(limit, until) - self.station.clock()
            if remaining <= 0:
                return
            stepped = self._stepped
            try:
                async with asyncio.timeout(remaining):
                    await stepped.wait()
            except TimeoutError:
                return

    def _worth_waiting(self, asked: float) -> float | None:
        """Until when an order asked at `asked` should wait for the pump; None: decide now."""
        if self.stopping:
            return None
        if not self._heard:
            return self._discovery_until
        if self.online and self.auth is None and self._fill_sold and self.status in _SALE_OVER:
            return asked + RESET_WAIT_S
        return None

    def wake(self) -> None:
        """Ask the pump's task to look at its situation again (new prices, for example)."""
        self.queue.put_nowait(None)

    def republish_state(self) -> None:
        """Queue the pump's live state again, changed or not (see Station.republish_retained)."""
        self._published_state = None
        self.wake()

    def store_writable_again(self) -> None:
        """The store writes again: a sale held at the pump is committed now rather than at
        its next retry, and the live state is queued again (the one of the fault is lost)."""
        self._retry_at = None
        self._published_state = None
        self.wake()

    def allowed_nozzles(self, nozzles: tuple[int, ...], grades: tuple[str, ...]) -> tuple[int, ...]:
        """The nozzles an order may use: those it names, narrowed to the grades it names."""
        for nozzle in nozzles:
            if nozzle not in self.pump.nozzles:
                raise CommandError(
                    f"pump {self.pump.number} has no nozzle {nozzle}", code="unknown_nozzle"
                )
        on_pump = set(self.pump.nozzles.values())
        for grade in grades:
            if grade not in on_pump:
                raise CommandError(
                    f"pump {self.pump.number} does not sell grade {grade}", code="unknown_grade"
                )
        allowed = [
            n
            for n, g in sorted(self.pump.nozzles.items())
            if (not nozzles or n in nozzles) and (not grades or g in grades)
        ]
        if not allowed:
            raise CommandError(
                f"no nozzle of pump {self.pump.number} matches the order", code="unknown_nozzle"
            )
        return tuple(allowed)

    def _settled(self) -> bool:
        """No sale in flight: nothing flowing and nothing finished but not yet committed."""
        if not self.online or self.status is None:
            return True  # an unreachable pump's sale is recovered when it is back
        return self.status not in _IN_SALE

    def _next_deadline(self) -> float | None:
        deadlines: list[float] = []
        now = self.station.clock()
        if self._retry_at is not None:
            deadlines.append(self._retry_at)
        if self.auth is not None and self.fp.state in _NO_FLOW_AUTHORISED:
            deadlines.append(self._authorization_deadline())
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    async def _on_timer(self) -> None:
        now = self.station.clock()
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            await self._act()
        if (
            self.auth is not None
            and self.fp.state in _NO_FLOW_AUTHORISED
            and now >= self._authorization_deadline()
        ):
            await self._expire_authorization()

    def _authorization_deadline(self) -> float:
        """When an authorization not yet used lapses: the configured time, or the order's own."""
        deadline = self.fp.since + self.station.config.authorization.authorize_timeout_s
        if self.auth is not None and self.auth.expires_at:
            remaining = (
                datetime.fromisoformat(self.auth.expires_at) - datetime.now(UTC)
            ).total_seconds()
            deadline = min(deadline, self.station.clock() + remaining)
        return deadline

    # ------------------------------------------------------------------ events
    async def _on_event(self, event: DispenserEvent) -> None:
        if isinstance(event, PumpOnline):
            self.online = True
            self.offline_reason = None
            self._resync = True
            self._check_totals = True
            self._retry_at = None  # a pump back from an outage is looked at straight away
            self.log.info("pump_online")
            # Learn where the pump is: nozzle and last fill, then its status.
            info = await self.line.filling_info(self.address)
            self._apply_filling_info(info)
            await self.line.request_status(self.address)
        elif isinstance(event, PumpOffline):
            self._heard = True
            self.offline_reason = event.reason
            self.online = False
            self.status = None
            self.log.warning("pump_offline", reason=event.reason)
            await self._follow()
            self._resync = True
        elif isinstance(event, StatusReport):
            self._heard = True
            if event.status in _IN_SALE and self._known_status not in _IN_SALE:
                self._start_fill()
            self._known_status = event.status
            self.status = event.status
            await self._follow()
            await self._act()
        elif isinstance(event, NozzleReport):
            if (
                not event.nozzle_out
                and self.nozzle_out
                and event.nozzle
                and self.nozzle
                and event.nozzle != self.nozzle
            ):
                # "Nozzle 1 is in" while nozzle 2 is out (one nozzle of a pump is out at a
                # time): the DC3 describing the last fill, not a hang-up of the nozzle held.
                return
            self.nozzle_out = event.nozzle_out
            if event.nozzle:
                self.nozzle = event.nozzle
                self.unit_price = event.unit_price
            if not event.nozzle_out and self._lift_served:
                # Durable first: if the store cannot write, the lift stays "served" (no
                # release) and the next hang-up report tries again.
                await self.station.db(self.station.store.lift_ended, self.pump.number)
                self._lift_served = False
            if self.status is not None:
                await self._follow()
                await self._act()
        elif isinstance(event, FillingReport):
            self.volume, self.amount = event.volume, event.amount
            self._fill_volume = event.volume
        elif isinstance(event, AlarmReport):
            await self.station.db(
                self.station.store.raise_alarm,
                "pump_alarm",
                event.text,
                pump=self.pump.number,
                detail={"code": event.code},
            )

    def _apply_filling_info(self, info: FillingInfo) -> None:
        self.volume, self.amount = info.volume, info.amount
        self._fill_volume = info.volume
        if info.nozzle:
            self.fill_nozzle = info.nozzle
            self.fill_price = info.unit_price

    async def _follow(self) -> None:
        """Move the fuelling point to what the pump reports; an illegal report is resynced."""
        now = self.station.clock()
        if self.auth is not None and self.nozzle_out:
            self._lifted_during = self.auth.id
        if self._resync and self.status is not None:
            self._resync = False
            self._log_transitions(
                [self.fp.resync(observed_state(self.status, self.nozzle_out), now)]
            )
            return
        try:
            transitions = self.fp.follow(self.status, self.nozzle_out, now)
        except IllegalTransition as exc:
            self.log.error(
                "illegal_transition",
                state=str(exc.state),
                observed=str(exc.event),
                status=self.status.value if self.status else None,
                nozzle_out=self.nozzle_out,
            )
            if self.status is DispenserStatus.FILLING and self.auth is None:
                await self.station.db(
                    self.station.store.raise_alarm,
                    "unauthorized_dispensing",
                    f"pump {self.pump.number} is dispensing without an edgectl authorization",
                    severity="critical",
                    pump=self.pump.number,
                )
            resynced = self.fp.resync(observed_state(self.status, self.nozzle_out), now)
            transitions = [resynced] if resynced is not None else []
        self._log_transitions(transitions)

    def _log_transitions(self, transitions: Sequence[Transition | None]) -> None:
        for tr in transitions:
            if tr is not None:
                self.log.info(
                    "fp_state",
                    old=tr.old.name,
                    new=tr.new.name,
                    trigger=tr.event.name if tr.event is not None else "RESYNC",
                )

    # ------------------------------------------------------------------ decisions
    async def _act(self) -> None:
        if not self.online or self.status is None:
            return
        if self.auth is not None and self._events_taken <= self._confirmed_at:
            return  # the pump said this before it confirmed the authorization
        if self.status in _SALE_OVER:
            # After a failure, wait for the retry time instead of hammering the pump on
            # every status report it sends meanwhile.
            if self._retry_at is None:
                await self._finish_sale()
            return
        if self.status is DispenserStatus.AUTHORIZED and self.auth is None:
            if self._retry_at is None:
                await self._withdraw_authorization()
            return
        if self.auth is not None:
            await self._follow_authorization()
        if self.status is DispenserStatus.RESET:
            if self._check_totals:
                await self._baseline_totals()
            if self.auth is None and self._prices_pending():
                await self._send_prices()
            if (
                self.fp.state is FPState.CALLING
                and self.station.config.authorization.mode == "auto"
                and self.auth is None
                and not self._lift_served
                and not self.stopping
            ):
                await self._authorize_auto()

    async def _follow_authorization(self) -> None:
        assert self.auth is not None
        state = self.auth.state
        if self._reconcile_auth and state is AuthorizationState.REQUESTED:
            # Found after a restart: did the AUTHORIZE reach the pump before we stopped?
            if self.status in (DispenserStatus.AUTHORIZED, DispenserStatus.FILLING):
                await self._set_auth_state(AuthorizationState.AUTHORIZED)
                state = AuthorizationState.AUTHORIZED
            elif self.status is DispenserStatus.RESET:
                await self._end_auth(
                    AuthorizationState.FAILED, "the pump was not authorized before a restart"
                )
                return
        self._reconcile_auth = False
        if self.status is DispenserStatus.FILLING and state is not AuthorizationState.FUELLING:
            await self._set_auth_state(AuthorizationState.FUELLING)
        elif self.status is DispenserStatus.RESET and state is not AuthorizationState.REQUESTED:
            # The pump dropped the authorization without a sale (stopped, reset or restarted).
            await self._end_auth(AuthorizationState.NO_SALE, "pump returned to idle without fuel")

    async def _withdraw_authorization(self) -> None:
        """The pump is released with no authorization on record: an AUTHORIZE it obeyed
        though its answers were lost, or a STOP that could not reach it. Anyone could fill
        unpaid, and no order could have the pump: take the release back."""
        self.log.warning("unrecorded_authorization_withdrawn")
        try:
            await self.line.stop(self.address)
        except DriverError as exc:
            self.log.warning("withdraw_failed_will_retry", error=str(exc))
            self._retry_at = self.station.clock() + RETRY_S

    async def _authorize_auto(self) -> None:
        limits = self.station.config.limits
        preset = self.station.config.authorization.auto_preset_amount or limits.max_preset_amount
        nozzle = self.nozzle if self.nozzle in self.pump.nozzles else 0
        # Served from the moment it is asked: a refused or failed release is not retried
        # for the same lift either; the customer hangs up and lifts again.
        self._lift_served = True
        await self._authorize(
            AuthorizationSource.AUTO,
            nozzles=(nozzle,) if nozzle else tuple(self.pump.nozzles),
            preset_amount=preset,
            serves_lift=True,
        )

    async def authorize(
        self,
        source: AuthorizationSource,
        *,
        nozzles: tuple[int, ...] = (),
        preset_amount: Decimal | None = None,
        preset_volume: Decimal | None = None,
        requested_by: str | None = None,
        order: OrderRequest | None = None,
    ) -> Authorization:
        """Authorize on behalf of someone outside the pump's own task (CLI, cloud)."""
        async with self.lock:
            auth = await self._authorize(
                source,
                nozzles=nozzles,
                preset_amount=preset_amount,
                preset_volume=preset_volume,
                requested_by=requested_by,
                order=order,
            )
            await self._publish_state()
            return auth

    async def _authorize(
        self,
        source: AuthorizationSource,
        *,
        nozzles: tuple[int, ...] = (),
        preset_amount: Decimal | None = None,
        preset_volume: Decimal | None = None,
        requested_by: str | None = None,
        order: OrderRequest | None = None,
        serves_lift: bool = False,
    ) -> Authorization:
        """Record why, then authorize. The record is durable before the pump is touched."""
        try:
            self._check_authorizable(nozzles, preset_amount, preset_volume)
        except CommandError:
            self.station.authorization_outcomes[source.value, "refused"] += 1
            raise
        store = self.station.store
        if order is not None:
            try:
                auth = await self.station.db(
                    store.create_order,
                    order_id=order.order_id,
                    cmd_id=order.cmd_id,
                    pump=self.pump.number,
                    preset_type="amount" if preset_amount is not None else "volume",
                    preset_value=order.preset_value,
                    currency=order.currency,
                    nozzles=nozzles,
                    grades=order.grades,
                    payment_method=order.payment_method,
                    expires_at=order.expires_at,
                    command_payload=order.command_payload,
                )
            except OrderExists as exc:
                self.station.authorization_outcomes[source.value, "refused"] += 1
                raise CommandError(str(exc), code=exc.code) from exc
        else:
            auth = await self.station.db(
                store.create_authorization,
                self.pump.number,
                source,
                nozzles=nozzles,
                preset_amount=preset_amount,
                preset_volume=preset_volume,
                requested_by=requested_by,
                serves_lift=serves_lift,
            )
        self.auth = auth
        self._reconcile_auth = False
        log = self.log.bind(authorization_id=auth.id, source=source.value)
        try:
            await self.line.authorize(
                self.address,
                nozzles=nozzles,
                preset_amount=preset_amount,
                preset_volume=preset_volume,
            )
        except DriverError as exc:
            await self._end_auth(AuthorizationState.FAILED, str(exc))
            log.error("authorize_failed", error=str(exc))
            raise CommandError(f"pump {self.pump.number}: {exc}", code="pump_refused") from exc
        self._confirmed_at = self.events_queued
        if order is not None and order.received_at is not None:
            self.station.on_order_confirmed(self.station.clock() - order.received_at)
        await self._set_auth_state(AuthorizationState.AUTHORIZED)
        log.info(
            "authorized",
            preset_amount=str(preset_amount) if preset_amount else None,
            preset_volume=str(preset_volume) if preset_volume else None,
            nozzles=nozzles,
        )
        return self.auth or auth

    def _check_authorizable(
        self, nozzles: tuple[int, ...], preset_amount: Decimal | None, preset_volume: Decimal | None
    ) -> None:
        limits = self.station.config.limits
        if self.stopping:
            raise CommandError("the station is shutting down", code="shutting_down")
        if not self.online:
            why = self.offline_reason or "no answer since the station started"
            raise CommandError(f"pump {self.pump.number} is offline: {why}", code="pump_offline")
        if self.status is None:
            raise CommandError(
                f"pump {self.pump.number} is offline: it answers but has not reported its status",
                code="pump_offline",
            )
        if self.auth is not None:
            raise CommandError(f"pump {self.pump.number} is already authorized", code="pump_busy")
        if self.status is not DispenserStatus.RESET:
            state = self.status.value if self.status else "unknown"
            raise CommandError(f"pump {self.pump.number} is {state}", code="pump_busy")
        for nozzle in nozzles:
            if nozzle not in self.pump.nozzles:
                raise CommandError(
                    f"pump {self.pump.number} has no nozzle {nozzle}", code="unknown_nozzle"
                )
        if preset_amount is not None and not (
            limits.min_preset_amount <= preset_amount <= limits.max_preset_amount
        ):
            raise CommandError(
                f"preset amount {preset_amount} outside {limits.min_preset_amount}"
                f"..{limits.max_preset_amount}",
                code="preset_out_of_limits",
            )
        if preset_volume is not None and not (0 < preset_volume <= limits.max_preset_volume):
            raise CommandError(
                f"preset volume {preset_volume} outside 0..{limits.max_preset_volume}",
                code="preset_out_of_limits",
            )

    async def _expire_authorization(self) -> None:
        auth_id = self.auth.id if self.auth else None
        self.log.info("authorization_expired", authorization_id=auth_id)
        try:
            await self.line.stop(self.address)
        finally:
            if auth_id is not None and self._lifted_during == auth_id:
                # A nozzle was out, but no fuel flowed before the deadline.
                await self._end_auth(
                    AuthorizationState.EXPIRED,
                    "a nozzle was lifted but no fuel was drawn in time",
                    order_reason=ORDER_REASON_LIFTED_NO_FUEL,
                )
            else:
                await self._end_auth(AuthorizationState.EXPIRED, "no nozzle lifted in time")

    async def _set_auth_state(self, state: AuthorizationState) -> None:
        """Move the authorization on; the pump's live state goes in the same commit."""
        if self.auth is None:
            return
        self.auth = await self.station.db(
            self.station.store.update_authorization,
            self.auth.id,
            state,
            pump_state=self._state_change(),
        )

    async def _end_auth(
        self, state: AuthorizationState, reason: str, *, order_reason: str | None = None
    ) -> None:
        """End the authorization; its order (if any) ends with `order_reason`, else the
        reason code of `state` (store.ORDER_REASON)."""
        if self.auth is None:
            return
        auth, self.auth = self.auth, None
        auth_id = auth.id
        try:
            await self.station.db(
                self.station.store.update_authorization,
                auth_id,
                state,
                reason,
                pump_state=self._state_change(),  # computed without the authorization
                order_reason=order_reason,
            )
        except StoreError:
            # Not on record: still open, in memory as in the store, ended on a later step.
            self.auth = auth
            self._published_state = None
            raise
        self.station.authorization_outcomes[auth.source.value, state.value] += 1
        self.log.info(
            "authorization_ended", authorization_id=auth_id, state=state.value, reason=reason
        )

    # ------------------------------------------------------------------ sales
    async def _finish_sale(self) -> None:
        """Read the fill from the pump, commit it, and only then reset the pump."""
        try:
            info = await self.line.filling_info(self.address)
            self._apply_filling_info(info)
            # The fill's nozzle: the pump's description of this fill, else the nozzle lifted
            # when it started; the nozzle selected now may be the next customer's.
            nozzle = info.nozzle or self.fill_nozzle or self.nozzle
            if info.volume == 0:
                self._fill_sold = True
                await self._end_auth(AuthorizationState.NO_SALE, "nozzle hung up without fuel")
                await self._reset_pump()
                return
            totals: tuple[Decimal, Decimal] | None = None
            try:
                totals = await self.line.totals(self.address, nozzle)
            except DriverError as exc:
                # The sale is still recorded (keyed by its authorization); only the check is lost.
                self.log.warning("totals_unavailable", nozzle=nozzle, error=str(exc))
            grade_id = self.pump.nozzles.get(nozzle)
            unit_price = info.unit_price or self.fill_price or self.unit_price
            if grade_id is None or unit_price is None:
                grade_id = grade_id or "unknown"
                unit_price = unit_price or Decimal(0)
                self.log.error("sale_on_unmapped_nozzle", nozzle=nozzle)
            sale = Sale(
                pump=self.pump.number,
                nozzle=nozzle,
                grade=grade_id,
                volume=info.volume,
                amount=info.amount,
                unit_price=unit_price,
                currency=self.station.config.station.currency,
                ended_at=utc_now(),
                total_volume_after=totals[0] if totals else None,
                total_amount_after=totals[1] if totals else None,
                authorization_id=self.auth.id if self.auth else None,
                price_set_id=self.price_set_id,
            )
            recorded = await self.station.db(self.station.store.record_sale, sale)
        except (DriverError, StoreError) as exc:
            # The pump keeps the fill until it is reset, and it is not reset before the
            # sale is committed: trying again later loses nothing.
            if not isinstance(exc, StoreUnwritableError):  # that one the store logs, once
                self.log.warning("sale_not_committed_will_retry", error=str(exc))
            self._retry_at = self.station.clock() + RETRY_S
            return
        log = self.log.bind(sale_id=recorded.id, nozzle=sale.nozzle, grade=sale.grade)
        if recorded.conflict is not None:
            # Another sale holds this fill's identity: the fill is not on record, so the pump
            # keeps it (no reset) until a person looks; the alarm says what and where.
            if not self._conflict_alarmed:
                log.error("sale_conflict_pump_held", detail=recorded.conflict)
                await self.station.db(
                    self.station.store.raise_alarm,
                    "sale_conflict",
                    f"pump {self.pump.number}: a fill could not be recorded, the pump is held"
                    f" with it: {recorded.conflict}",
                    severity="critical",
                    pump=self.pump.number,
                )
                self._conflict_alarmed = True
            self._retry_at = self.station.clock() + RETRY_S * 15
            return
        # From here the fill is a sale: it leaves the fills in progress in the same step as
        # the sale reaches the tanks (no await in between), so it is never counted twice.
        self._fill_sold = True
        if recorded.created:
            self.sales_recorded += 1
            if self.auth is not None:
                outcome = (self.auth.source.value, AuthorizationState.COMPLETED.value)
                self.station.authorization_outcomes[outcome] += 1
            self.station.on_sold(PumpFill(self.pump.number, self.fills, sale.grade, sale.volume))
            log.info(
                "sale_recorded",
                volume=str(sale.volume),
                amount=str(sale.amount),
                unit_price=str(sale.unit_price),
                uid=sale.uid,
            )
        else:
            log.info("sale_already_recorded", uid=sale.uid)
        if recorded.totals_alarm:
            log.error("totals_mismatch", detail=recorded.totals_alarm)
        self.auth = None  # closed by record_sale in the same transaction
        await self._reset_pump()

    async def _reset_pump(self) -> None:
        try:
            await self.line.reset(self.address)
        except DriverError as exc:
            self.log.warning("reset_failed_will_retry", error=str(exc))
            self._retry_at = self.station.clock() + RETRY_S

    async def _baseline_totals(self) -> None:
        """Totals of every nozzle of an idle pump against the last known: catches unseen sales."""
        for nozzle in self.pump.nozzles:
            volume, amount = await self.line.totals(self.address, nozzle)
            problem = await self.station.db(
                self.station.store.check_totals, self.pump.number, nozzle, volume, amount
            )
            if problem:
                self.log.error("totals_moved_without_sale", nozzle=nozzle, detail=problem)
        self._check_totals = False

    def _prices_pending(self) -> bool:
        prices = self.station.prices
        wanted = tuple(prices.prices[self.pump.nozzles[n]] for n in sorted(self.pump.nozzles))
        return self._prices_wanted != (prices.price_set_id, wanted)

    async def _send_prices(self) -> None:
        """Give an idle dispenser the station's prices; confirm a cloud price set per pump."""
        prices = self.station.prices
        wanted = tuple(prices.prices[self.pump.nozzles[n]] for n in sorted(self.pump.nozzles))
        self._prices_wanted = (prices.price_set_id, wanted)
        status, reason = "applied", None
        try:
            await self.line.set_prices(self.address, wanted)
        except DriverError as exc:
            status, reason = "failed", f"pump_{exc.code}"
            self._retry_at = self.station.clock() + RETRY_S
            self._prices_wanted = None
        else:
            self.price_set_id = prices.price_set_id
            self.log.info("prices_applied", price_set_id=prices.price_set_id)
        if prices.price_set_id is not None:
            await self.station.db(
                self.station.store.confirm_prices,
                prices.price_set_id,
                self.pump.number,
                status,
                reason,
                {
                    self.pump.nozzles[n]: str(p)
                    for n, p in zip(sorted(self.pump.nozzles), wanted, strict=True)
                },
                self.station.config.station.currency,
            )

    async def _publish_state(self) -> None:
        """Queue the pump's live state for the cloud when it changed (retained, latest only)."""
        payload = self._state_change()
        if payload is None:
            return
        await self.station.db(
            self.station.store.queue_event,
            "pump_state",
            payload,
            priority=PRIORITY_TELEMETRY,
            key=str(self.pump.number),
            retain=True,
        )

    def _state_change(self) -> dict[str, Any] | None:
        """The pump's live-state message if it changed since the last one queued, else None.
        The caller queues it (alone, or in the commit of the change that caused it)."""
        state = (
            self.online,
            self.fp.state,
            self.status,
            self.nozzle if self.nozzle_out else 0,
            self.auth.order_id if self.auth else None,
        )
        if state == self._published_state:
            return None
        self._published_state = state
        grade = self.pump.nozzles.get(self.nozzle) if self.nozzle else None
        return {
            "pump": self.pump.number,
            "state": self.fp.state.name.lower(),
            "state_code": int(self.fp.state),
            "status": self.status.value if self.status else None,
            "online": self.online,
            "nozzle": self.nozzle if self.nozzle_out else None,
            "nozzle_out": self.nozzle_out,
            "grade": grade,
            "volume": str(self.volume),
            "amount": str(self.amount),
            "order_id": self.auth.order_id if self.auth else None,
        }

    def _start_fill(self) -> None:
        """A fill begins: the dispenser left idle for a fill status. The volume reported so
        far may still be the previous fill's, so the new one starts from nothing (the
        pump's next volume report gives its running figure)."""
        self.fills += 1
        self._fill_volume = Decimal(0)
        self._fill_sold = False
        self._conflict_alarmed = False
        self.fill_nozzle = self.nozzle or None
        self.fill_price = self.unit_price

    def fill_in_progress(self) -> PumpFill | None:
        """The pump's fill not yet recorded as a sale, if one is flowing or just finished."""
        if self.status not in _IN_SALE or self._fill_sold:
            return None
        grade = self.pump.nozzles.get(self.fill_nozzle or self.nozzle)
        if grade is None:
            return None
        return PumpFill(self.pump.number, self.fills, grade, self._fill_volume)

    # ------------------------------------------------------------------ views
    def view(self) -> PumpView:
        grade = self.pump.nozzles.get(self.nozzle) if self.nozzle else None
        return PumpView(
            number=self.pump.number,
            line=self.pump.line,
            address=self.address,
            online=self.online,
            state=self.fp.state,
            status=self.status,
            nozzle=self.nozzle,
            nozzle_out=self.nozzle_out,
            grade=grade,
            unit_price=self.unit_price,
            volume=self.volume,
            amount=self.amount,
            authorization_id=self.auth.id if self.auth else None,
            sales=self.sales_recorded,
        )
