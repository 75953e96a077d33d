"""The application service: applies dispenser events and commands to the forecourt, durably."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from drivers.base import (
    DispenserEvent,
    DispenserLine,
    DispenserStatus,
    PumpOffline,
    PumpOnline,
)
from edgectl.cloud import contract
from edgectl.cloud.contract import ContractError
from edgectl.config import Config, PumpConfig
from edgectl.driver_errors import TranslatedLine
from edgectl.errors import (
    CommandError,
    DriverIOError,
    EdgectlError,
    StoreError,
    StoreUnwritableError,
)
from edgectl.forecourt.fuelling_point import FPState, FuellingPoint, Transition
from edgectl.forecourt.pump import (
    DISCOVERY_S,
    RESET_WAIT_S,
    RETRY_S,
    AutoAuthorize,
    BaselineTotals,
    Closure,
    Decision,
    EndAuthorization,
    EndLift,
    Expire,
    FinishSale,
    IllegalReport,
    LearnPosition,
    LogTransitions,
    MoveAuthorization,
    PriceSet,
    PumpDecider,
    PumpFill,
    PumpRules,
    RaisePumpAlarm,
    SendPrices,
    Withdraw,
    observed_state,
)
from edgectl.forecourt.sale import (
    Authorization,
    AuthorizationSource,
    AuthorizationState,
)
from edgectl.logs import get_logger
from edgectl.store import closures
from edgectl.store.store import (
    PRIORITY_TELEMETRY,
    OrderExists,
    Store,
    utc_now,
)

P = ParamSpec("P")
T = TypeVar("T")

# Kept here for the modules that import them from the station (the rules live in the domain).
__all__ = [
    "DISCOVERY_S",
    "RESET_WAIT_S",
    "RETRY_S",
    "OrderRequest",
    "PriceSet",
    "PumpFill",
    "PumpService",
    "PumpView",
    "Station",
    "observed_state",
]


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
    closed: bool = False  # closed by the site (`edgectl close`): `state` is CLOSED when idle


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
        self._prices = PriceSet(None, {g.id: g.unit_price for g in config.grades})
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

    @property
    def prices(self) -> PriceSet:
        """The grade prices in force; each pump's decider is told at once when they change."""
        return self._prices

    @prices.setter
    def prices(self, prices: PriceSet) -> None:
        self._prices = prices
        for service in self.points.values():
            service.decider.prices = prices

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
        service.decider.report_queued()
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
                or not service.decider.cancellable()
            ):
                raise CommandError(
                    f"order {order_id} is {order['status']} and can no longer be cancelled",
                    code="order_not_cancellable",
                )
            await self._send_stop(service, "cancel")
            await service._end_auth(service.decider.cancel())
            await service._publish_state()
        return f"order {order_id} cancelled, pump {order['pump']} de-authorized"

    async def stop_pump(self, pump: int) -> str:
        """Emergency stop: the pump stops at once whatever it is doing; its sale is kept."""
        service = self.service(pump)
        await self._send_stop(service, "stop")
        self.log.warning("emergency_stop", pump=pump)
        return f"pump {pump} stopped"

    async def close_pump(self, pump: int, *, by: str | None, reason: str | None = None) -> str:
        """The site closes a pump: from now on no source authorizes it (cloud orders are
        refused `pump_closed`, auto mode leaves its lifts alone, the CLI is refused), and its
        live state says CLOSED. Durable: a restart keeps it closed. A sale under way goes on."""
        return await self.service(pump).close(by=by, reason=reason)

    async def open_pump(self, pump: int, *, by: str | None) -> str:
        """The site opens a closed pump again."""
        return await self.service(pump).reopen(by=by)

    async def _send_stop(self, service: PumpService, why: str) -> None:
        """STOP to the pump, or a typed refusal the command's result carries: a pump that
        does not confirm its STOP is `pump_refused` (`pump_offline` if it was not answering
        its line before), never an exception out of the command handler, which would make
        the broker deliver the same command again on every reconnect."""
        was_online = service.online
        try:
            await service.line.stop(service.address)
        except DriverIOError as exc:
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

    # ------------------------------------------------------------------ the cloud's commands
    # What the cloud's command handler asks of the station, by intention (it reaches no store).
    async def stored_command(self, cmd_id: str) -> dict[str, Any] | None:
        """The inbox row of a command id (None: never seen). Read on the event loop (no
        store-thread hop); through the store's thread if that read fails."""
        try:
            return self.store.peek_command(cmd_id)
        except StoreError as exc:
            self.log.warning("inbox_peek_failed", cmd_id=cmd_id, error=str(exc), part="commands")
            return await self.db(self.store.command_result, cmd_id)

    async def record_command(self, cmd_id: str, type_: str, payload: str) -> None:
        """Persist a command before anything acts on it (an `authorize` is persisted with its
        order instead, in one commit)."""
        await self.db(self.store.receive_command, cmd_id, type_, payload)

    async def finish_command(
        self,
        cmd_id: str,
        result: dict[str, Any],
        *,
        topic: str | None,
        correlation: bytes | None,
        payload: str,
    ) -> None:
        """Keep a command's result with it and queue the result for the cloud (one commit)."""
        await self.db(
            self.store.finish_command,
            cmd_id,
            result,
            topic=topic,
            correlation=correlation,
            payload=payload,
        )

    async def answer_command(
        self, result: dict[str, Any], *, topic: str | None, correlation: bytes | None
    ) -> None:
        """Queue a result that changes nothing (a refusal, a repeated answer)."""
        await self.db(self.store.queue_result, result, topic=topic, correlation=correlation)

    async def order_status(self, order_id: str) -> str | None:
        """The status of a cloud order on record, None when there is none."""
        order = await self.db(self.store.order, order_id)
        return None if order is None else str(order["status"])

    async def clear_sale(self, *, order_id: str | None, sale_id: int | None) -> str:
        """The cloud's payment of a sale: ok, already_cleared, paid_elsewhere or unknown."""
        return await self.db(self.store.clear_sale, order_id=order_id, sale_id=sale_id)

    async def acknowledge(self, stream: str, seq: int) -> dict[str, int]:
        """The backend holds `stream` up to `seq`: what the outbox may let go."""
        return await self.db(self.store.outbox_ack, stream, seq)

    async def replay(self, stream: str, first: int, last: int) -> dict[str, int]:
        """Send `stream`'s messages `first`..`last` again, those still held."""
        return await self.db(self.store.outbox_replay, stream, first, last)

    async def forget_commands(self, before: str) -> int:
        """Forget answered commands received before `before`; how many."""
        return await self.db(self.store.purge_inbox, before)

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
    """One pump's task: takes its reports in order, asks the pump's `PumpDecider` what follows
    from each (forecourt/pump.py) and carries the decisions out: sends them to the driver,
    commits them to the store. The decisions themselves are the decider's."""

    def __init__(self, station: Station, pump: PumpConfig, line: DispenserLine) -> None:
        self.station = station
        self.pump = pump
        self.line: DispenserLine = TranslatedLine(line)  # its errors are edgectl's
        self.address = pump.address
        self.decider = PumpDecider(
            _rules(station.config, pump), station.prices, now=station.clock()
        )
        self.queue: asyncio.Queue[DispenserEvent | None] = asyncio.Queue()  # None: re-decide
        self.log = station.log.bind(pump=pump.number, line=pump.line)
        self.idle = asyncio.Event()
        self.idle.set()
        self.sales_recorded = 0
        self._published_state: tuple[object, ...] | None = None
        # Decisions about this pump (its events, authorizations, cancels) run one at a time.
        self.lock = asyncio.Lock()
        # Set (and replaced) after every step of the pump's task: what orders waiting on the
        # pump's situation wake on.
        self._stepped = asyncio.Event()

    # ------------------------------------------------------------------ what is known
    @property
    def fp(self) -> FuellingPoint:
        return self.decider.fp

    @property
    def online(self) -> bool:
        return self.decider.online

    @property
    def status(self) -> DispenserStatus | None:
        return self.decider.status

    @property
    def auth(self) -> Authorization | None:
        return self.decider.auth

    @property
    def offline_reason(self) -> str | None:
        return self.decider.offline_reason

    @property
    def price_set_id(self) -> str | None:
        return self.decider.price_set_id

    @property
    def closed(self) -> Closure | None:
        return self.decider.closed

    @property
    def stopping(self) -> bool:
        return self.decider.stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self.decider.stopping = value

    def prices_pending(self) -> bool:
        return self.decider.prices_pending()

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        started = self.station.clock()
        store = self.station.store
        auth = await self.station.db(store.open_authorization, self.pump.number)
        lift_served = await self.station.db(store.lift_served, self.pump.number)
        closed = await self.station.db(closures.closure, store, self.pump.number)
        self.decider.start(started, auth=auth, lift_served=lift_served, closed=closed)
        while True:
            timeout = self.decider.next_deadline(self.station.clock(), datetime.now(UTC))
            timed_out = False
            event: DispenserEvent | None = None
            try:
                async with asyncio.timeout(timeout):
                    event = await self.queue.get()
            except TimeoutError:
                timed_out = True
            if event is not None:
                self.decider.report_taken()
            self.idle.clear()
            try:
                async with self.lock:
                    if timed_out:
                        steps = self.decider.on_timer(self.station.clock(), datetime.now(UTC))
                    elif event is None:
                        steps = self.decider.on_wake()
                    else:
                        self._log_report(event)
                        steps = self.decider.on_report(event, self.station.clock())
                    await self._carry_out(steps)
                    await self._publish_state()
            except StoreUnwritableError:
                # The store logged the fault once and keeps its alarm; nothing was written,
                # so nothing was done to the pump (a sale stays held there, no release). The
                # station's store watch wakes this pump once the store writes again.
                pass
            except EdgectlError as exc:
                self.log.error("pump_step_failed", error=str(exc), code=exc.code)
            except Exception:
                # A bug must not stop this pump, let alone the station: log it loudly, go on.
                self.log.exception("pump_step_crashed")
            finally:
                if self.queue.empty() and self.decider.settled():
                    self.idle.set()
                self._stepped.set()
                self._stepped = asyncio.Event()

    async def settle(self, until: float) -> None:
        """Wait, until `until` at most, while an order could not be judged fairly: the pump
        not heard from since the station started (bounded by DISCOVERY_S from the start),
        or its sale committed and the pump only being reset (bounded by RESET_WAIT_S)."""
        asked = self.station.clock()
        while (limit := self.decider.worth_waiting(asked)) is not None:
            remaining = min(limit, until) - self.station.clock()
            if remaining <= 0:
                return
            stepped = self._stepped
            try:
                async with asyncio.timeout(remaining):
                    await stepped.wait()
            except TimeoutError:
                return

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
        self.decider.retry_now()
        self._published_state = None
        self.wake()

    def allowed_nozzles(self, nozzles: tuple[int, ...], grades: tuple[str, ...]) -> tuple[int, ...]:
        """The nozzles an order may use: those it names, narrowed to the grades it names."""
        return self.decider.allowed_nozzles(nozzles, grades)

    def _log_report(self, event: DispenserEvent) -> None:
        if isinstance(event, PumpOnline):
            self.log.info("pump_online")
        elif isinstance(event, PumpOffline):
            self.log.warning("pump_offline", reason=event.reason)

    # ------------------------------------------------------------------ carrying out
    async def _carry_out(self, steps: Iterator[Decision]) -> None:
        """Carry out a step's decisions in order; the decider makes the next one only once
        this one is done (a failure ends the step: the exception goes on up)."""
        for decision in steps:
            await self._do(decision)

    async def _do(self, decision: Decision) -> None:
        match decision:
            case LogTransitions(transitions):
                self._log_transitions(transitions)
            case IllegalReport():
                await self._illegal_report(decision)
            case LearnPosition():
                # Learn where the pump is: nozzle and last fill, then its status.
                info = await self.line.filling_info(self.address)
                self.decider.filling_info(info)
                await self.line.request_status(self.address)
            case EndLift():
                await self.station.db(self.station.store.lift_ended, self.pump.number)
            case RaisePumpAlarm(text, code):
                await self.station.db(
                    self.station.store.raise_alarm,
                    "pump_alarm",
                    text,
                    pump=self.pump.number,
                    detail={"code": code},
                )
            case FinishSale():
                await self._finish_sale()
            case Withdraw():
                await self._withdraw_authorization()
            case MoveAuthorization():
                await self._move_auth(decision)
            case EndAuthorization():
                await self._end_auth(decision)
            case Expire(end, authorization_id):
                self.log.info("authorization_expired", authorization_id=authorization_id)
                try:
                    await self.line.stop(self.address)
                except DriverIOError as exc:
                    # Still released, and nobody's now: withdrawn at the retry. A pump that
                    # reports only changes (IFSF) would never bring the station back to it.
                    self.log.warning("expired_stop_failed_will_retry", error=str(exc))
                    self.decider.retry_later(self.station.clock())
                finally:
                    await self._end_auth(end)
            case BaselineTotals(nozzles):
                await self._baseline_totals(nozzles)
            case SendPrices():
                await self._send_prices(decision)
            case AutoAuthorize(nozzles, preset_amount):
                await self._authorize(
                    AuthorizationSource.AUTO,
                    nozzles=nozzles,
                    preset_amount=preset_amount,
                    serves_lift=True,
                )

    async def _illegal_report(self, report: IllegalReport) -> None:
        exc = report.error
        self.log.error(
            "illegal_transition",
            state=str(exc.state),
            observed=str(exc.event),
            status=report.status.value if report.status else None,
            nozzle_out=report.nozzle_out,
        )
        if report.unauthorized_dispensing:
            await self.station.db(
                self.station.store.raise_alarm,
                "unauthorized_dispensing",
                f"pump {self.pump.number} is dispensing without an edgectl authorization",
                severity="critical",
                pump=self.pump.number,
            )

    def _log_transitions(self, transitions: Sequence[Transition]) -> None:
        for tr in transitions:
            self.log.info(
                "fp_state",
                old=tr.old.name,
                new=tr.new.name,
                trigger=tr.event.name if tr.event is not None else "RESYNC",
            )

    async def _withdraw_authorization(self) -> None:
        """The pump is released with no authorization on record: an AUTHORIZE it obeyed
        though its answers were lost, or a STOP that could not reach it. Anyone could fill
        unpaid, and no order could have the pump: take the release back."""
        self.log.warning("unrecorded_authorization_withdrawn")
        try:
            await self.line.stop(self.address)
        except DriverIOError as exc:
            self.log.warning("withdraw_failed_will_retry", error=str(exc))
            self.decider.retry_later(self.station.clock())

    # ------------------------------------------------------------------ authorizations
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
            self.decider.check_authorizable(nozzles, preset_amount, preset_volume)
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
        self.decider.authorization_recorded(auth)
        log = self.log.bind(authorization_id=auth.id, source=source.value)
        try:
            await self.line.authorize(
                self.address,
                nozzles=nozzles,
                preset_amount=preset_amount,
                preset_volume=preset_volume,
            )
        except DriverIOError as exc:
            await self._end_auth(self.decider.authorization_refused(str(exc)))
            log.error("authorize_failed", error=str(exc))
            raise CommandError(f"pump {self.pump.number}: {exc}", code="pump_refused") from exc
        confirmed = self.decider.authorization_confirmed()
        if order is not None and order.received_at is not None:
            self.station.on_order_confirmed(self.station.clock() - order.received_at)
        await self._move_auth(confirmed)
        log.info(
            "authorized",
            preset_amount=str(preset_amount) if preset_amount else None,
            preset_volume=str(preset_volume) if preset_volume else None,
            nozzles=nozzles,
        )
        return self.auth or auth

    async def _move_auth(self, move: MoveAuthorization) -> None:
        """Move the authorization on; the pump's live state goes in the same commit."""
        auth = self.decider.auth
        if auth is None:
            return
        moved = await self.station.db(
            self.station.store.update_authorization,
            auth.id,
            move.state,
            pump_state=self._state_change(),
        )
        self.decider.authorization_moved(moved)

    async def _end_auth(self, end: EndAuthorization) -> None:
        """End the authorization; its order (if any) ends with the decision's reason code."""
        if self.decider.auth is None:
            return
        auth = self.decider.release_authorization()
        try:
            await self.station.db(
                self.station.store.update_authorization,
                auth.id,
                end.state,
                end.reason,
                pump_state=self._state_change(),  # computed without the authorization
                order_reason=end.order_reason,
            )
        except StoreError:
            # Not on record: still open, in memory as in the store, ended on a later step.
            self.decider.restore_authorization(auth)
            self._published_state = None
            raise
        self.station.authorization_outcomes[auth.source.value, end.state.value] += 1
        self.log.info(
            "authorization_ended",
            authorization_id=auth.id,
            state=end.state.value,
            reason=end.reason,
        )

    # ------------------------------------------------------------------ closing
    async def close(self, *, by: str | None, reason: str | None = None) -> str:
        """The site closes the pump: durable first, then no source authorizes it, and its
        live state says CLOSED once nothing is under way on it."""
        number = self.pump.number
        async with self.lock:
            closed = self.decider.closed
            if closed is not None:
                return f"pump {number} was already closed (since {closed.at})"
            closure = Closure(at=utc_now(), by=by, reason=reason)
            await self.station.db(closures.close, self.station.store, number, closure)
            self.decider.close(closure)
            self.log.warning("pump_closed", by=by, reason=reason)
            await self._publish_state()
            message = f"pump {number} closed: no authorization until it is opened again"
            if self.decider.busy():
                message += (
                    "; the authorization or fill under way goes on to its end"
                    f" (edgectl stop {number} ends it now)"
                )
            return message

    async def reopen(self, *, by: str | None) -> str:
        """The site opens the pump again (durable first)."""
        number = self.pump.number
        async with self.lock:
            if self.decider.closed is None:
                return f"pump {number} was not closed"
            await self.station.db(closures.open_pump, self.station.store, number)
            self.decider.open()
            self.log.warning("pump_opened", by=by)
            await self._publish_state()
        self.wake()  # a customer already calling is served now (auto mode)
        return f"pump {number} open again"

    # ------------------------------------------------------------------ sales
    async def _finish_sale(self) -> None:
        """Read the fill from the pump, commit it, and only then reset the pump."""
        decider = self.decider
        try:
            info = await self.line.filling_info(self.address)
            decider.filling_info(info)
            nozzle = decider.fill_nozzle_of(info)
            if info.volume == 0:
                end = decider.zero_fill()
                if end is not None:
                    await self._end_auth(end)
                await self._reset_pump()
                return
            totals: tuple[Decimal, Decimal] | None = None
            try:
                totals = await self.line.totals(self.address, nozzle)
            except DriverIOError as exc:
                # The sale is still recorded (keyed by its authorization); only the check is lost.
                self.log.warning("totals_unavailable", nozzle=nozzle, error=str(exc))
            sale, unmapped = decider.sale_of(info, nozzle, totals, ended_at=utc_now())
            if unmapped:
                self.log.error("sale_on_unmapped_nozzle", nozzle=nozzle)
            recorded = await self.station.db(self.station.store.record_sale, sale)
        except (DriverIOError, StoreError) as exc:
            # The pump keeps the fill until it is reset, and it is not reset before the
            # sale is committed: trying again later loses nothing.
            if not isinstance(exc, StoreUnwritableError):  # that one the store logs, once
                self.log.warning("sale_not_committed_will_retry", error=str(exc))
            decider.retry_later(self.station.clock())
            return
        log = self.log.bind(sale_id=recorded.id, nozzle=sale.nozzle, grade=sale.grade)
        if recorded.conflict is not None:
            # Another sale holds this fill's identity: the fill is not on record, so the pump
            # keeps it (no reset) until a person looks; the alarm says what and where.
            if decider.fill_held().raise_alarm:
                log.error("sale_conflict_pump_held", detail=recorded.conflict)
                await self.station.db(
                    self.station.store.raise_alarm,
                    "sale_conflict",
                    f"pump {self.pump.number}: a fill could not be recorded, the pump is held"
                    f" with it: {recorded.conflict}",
                    severity="critical",
                    pump=self.pump.number,
                )
                decider.conflict_on_record()
            decider.hold_fill(self.station.clock())
            return
        # From here the fill is a sale: it leaves the fills in progress in the same step as
        # the sale reaches the tanks (no await in between), so it is never counted twice.
        # Its authorization was closed by record_sale in the same transaction.
        auth = decider.auth
        fill = decider.sold(sale)
        if recorded.created:
            self.sales_recorded += 1
            if auth is not None:
                outcome = (auth.source.value, AuthorizationState.COMPLETED.value)
                self.station.authorization_outcomes[outcome] += 1
            self.station.on_sold(fill)
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
        await self._reset_pump()

    async def _reset_pump(self) -> None:
        try:
            await self.line.reset(self.address)
        except DriverIOError as exc:
            self.log.warning("reset_failed_will_retry", error=str(exc))
            self.decider.retry_later(self.station.clock())
            return
        self.decider.reset_done()
        try:
            # Best effort: the next authorization of the pump says the same in its commit.
            await self.station.db_quiet(self.station.store.pump_reset, self.pump.number)
        except StoreError as exc:
            self.log.warning("reset_not_recorded", error=str(exc))

    async def _baseline_totals(self, nozzles: Sequence[int]) -> None:
        """Totals of every nozzle of an idle pump against the last known: catches unseen sales.
        A nozzle whose totals the pump does not give is not checked: the pump stays usable (it
        was held before, failing the step on every report it sent)."""
        for nozzle in nozzles:
            try:
                volume, amount = await self.line.totals(self.address, nozzle)
            except DriverIOError as exc:
                self.log.warning("totals_check_skipped", nozzle=nozzle, error=str(exc))
                continue
            problem = await self.station.db(
                self.station.store.check_totals, self.pump.number, nozzle, volume, amount
            )
            if problem:
                self.log.error("totals_moved_without_sale", nozzle=nozzle, detail=problem)
        self.decider.totals_checked()

    async def _send_prices(self, send: SendPrices) -> None:
        """Give an idle dispenser the station's prices; confirm a cloud price set per pump."""
        status, reason = "applied", None
        try:
            await self.line.set_prices(self.address, send.prices)
        except DriverIOError as exc:
            status, reason = "failed", f"pump_{exc.code}"
            self.decider.prices_failed(self.station.clock())
        else:
            self.decider.prices_applied(send.price_set_id)
            self.log.info("prices_applied", price_set_id=send.price_set_id)
        if send.price_set_id is not None:
            await self.station.db(
                self.station.store.confirm_prices,
                send.price_set_id,
                self.pump.number,
                status,
                reason,
                {grade: str(price) for grade, price in send.by_grade.items()},
                self.station.config.station.currency,
            )

    # ------------------------------------------------------------------ live state
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
        state = self.decider.live_state()
        if state == self._published_state:
            return None
        self._published_state = state
        decider = self.decider
        nozzle = decider.nozzle
        try:
            return contract.pump_state_data(
                self.pump.number,
                decider.shown_state,
                status=decider.status,
                nozzle=(nozzle or None) if decider.nozzle_out else None,
                nozzle_out=decider.nozzle_out,
                grade=self.pump.nozzles.get(nozzle) if nozzle else None,
                volume=decider.volume,
                amount=decider.amount,
                online=decider.online,
                order_id=decider.auth.order_id if decider.auth else None,
            )
        except ContractError as exc:
            # A figure the contract refuses (a driver's bad report) must not hold up the
            # commit it would ride with: the state is not sent, the next change is.
            self.log.error("pump_state_invalid", error=str(exc))
            return None

    def fill_in_progress(self) -> PumpFill | None:
        """The pump's fill not yet recorded as a sale, if one is flowing or just finished."""
        return self.decider.fill_in_progress()

    # ------------------------------------------------------------------ views
    def view(self) -> PumpView:
        decider = self.decider
        grade = self.pump.nozzles.get(decider.nozzle) if decider.nozzle else None
        return PumpView(
            number=self.pump.number,
            line=self.pump.line,
            address=self.address,
            online=decider.online,
            state=decider.shown_state,
            status=decider.status,
            nozzle=decider.nozzle,
            nozzle_out=decider.nozzle_out,
            grade=grade,
            unit_price=decider.unit_price,
            volume=decider.volume,
            amount=decider.amount,
            authorization_id=decider.auth.id if decider.auth else None,
            sales=self.sales_recorded,
            closed=decider.closed is not None,
        )


def _rules(config: Config, pump: PumpConfig) -> PumpRules:
    """The configuration's word on one pump, as the pump's decider takes it."""
    limits, authorization = config.limits, config.authorization
    return PumpRules(
        number=pump.number,
        nozzles=pump.nozzles,
        currency=config.station.currency,
        mode=authorization.mode,
        authorize_timeout_s=authorization.authorize_timeout_s,
        min_preset_amount=limits.min_preset_amount,
        max_preset_amount=limits.max_preset_amount,
        max_preset_volume=limits.max_preset_volume,
        auto_preset_amount=authorization.auto_preset_amount,
    )
