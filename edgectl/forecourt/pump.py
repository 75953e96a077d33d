"""One pump's decisions as pure code: the pump's reports and the clock in, decisions out.

Pure domain: no I/O, no asyncio, no store, no clock of its own (every time is passed in:
`now` on the station's monotonic clock, `wall` for the deadlines the cloud states in UTC).

`PumpDecider` holds what the station knows of one pump (its reports, its fuelling point, its
open authorization, its fill) and says what to do about it. Each report, timer or wake-up is a
*step*: a generator of typed decisions. The station's pump task carries each decision out
(sends it to the driver, commits it to the store) and only then asks for the next one, so a
decision sees what the one before it changed; a decision that fails ends the step (the
generator is dropped), as an exception ended it before. What a decision's outcome teaches the
decider (the record the store returned, a failure to try again later) is told back through its
methods (`authorization_recorded`, `retry_later`, `prices_failed`, …).

The rules, in `_act`, in the order they are applied:

1. Nothing is decided for a pump that is offline or has not reported its status, nor on a
   report the pump sent before it confirmed the current authorization (old news).
2. A fill over (FILLING_COMPLETED, MAX_REACHED): finish the sale — read it, commit it, and only
   then reset the pump; after a failure, wait for the retry time. Once the sale is committed
   and the pump confirmed its reset, what it reported before the reset is old news too (the
   fill is not read a second time).
3. Released (AUTHORIZED) with no authorization on record: withdraw the release.
4. An open authorization follows the pump (confirmed, fuelling, dropped; after a restart the
   pump says whether the AUTHORIZE reached it), through the lifecycle table
   (forecourt/authorization.py).
5. At rest (RESET): check the totals once after the pump came (back) online, send the
   station's prices when they changed and no authorization is open, and in auto mode
   authorize a calling pump once per lift — unless the station is stopping or the pump is
   closed.

A pump closed by the site (`close`) takes no authorization from anyone and is shown CLOSED
(IFSF state 2) while it is idle or calling; a sale under way when it is closed goes on to its end.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Final

from drivers.base import (
    AlarmReport,
    DispenserEvent,
    DispenserStatus,
    FillingInfo,
    FillingReport,
    NozzleReport,
    PumpOffline,
    PumpOnline,
    StatusReport,
)
from edgectl.errors import CommandError, IllegalTransition
from edgectl.forecourt import authorization as lifecycle
from edgectl.forecourt.authorization import AuthorizationEvent
from edgectl.forecourt.fuelling_point import FPState, FuellingPoint, Transition
from edgectl.forecourt.sale import Authorization, AuthorizationState, Sale

RETRY_S: Final = 2.0  # a sale (prices, reset…) that could not be done yet is tried again this often
# A fill another sale's identity holds is tried again this much later (a person must look).
CONFLICT_RETRY_S: Final = RETRY_S * 15
# An order for a pump the station has not heard from since it started waits at most this
# long from the start: the line has tried the pump `offline_after` times by then (about 3 s
# with the DART defaults), so the pump answers, or is declared offline, or never will.
DISCOVERY_S: Final = 5.0
# An order for a pump whose sale is committed and which is only being reset waits at most
# this long for the reset (one failed reset and its retry fit in it).
RESET_WAIT_S: Final = 2 * RETRY_S + 1.0

SALE_OVER: Final = frozenset({DispenserStatus.FILLING_COMPLETED, DispenserStatus.MAX_REACHED})
IN_SALE: Final = frozenset({DispenserStatus.FILLING, DispenserStatus.SUSPENDED, *SALE_OVER})
NO_FLOW_AUTHORISED: Final = frozenset(
    {FPState.AUTHORISED, FPState.STARTED, FPState.SUSPENDED_STARTED}
)
# The states a closed pump is shown CLOSED in: at rest, nothing under way.
_SHOWN_CLOSED: Final = frozenset({FPState.IDLE, FPState.CALLING})


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


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class PumpRules:
    """What the configuration says about one pump and how it may be authorized."""

    number: int
    nozzles: Mapping[int, str]  # nozzle number → grade id
    currency: str
    mode: str  # "cloud" | "auto" | "attendant"
    authorize_timeout_s: float
    min_preset_amount: Decimal
    max_preset_amount: Decimal
    max_preset_volume: Decimal
    auto_preset_amount: Decimal | None = None


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
class Closure:
    """The site closed the pump: since when, by whom, and why (as the person said)."""

    at: str
    by: str | None = None
    reason: str | None = None


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class LogTransitions:
    """The fuelling point moved: say so (nothing to send, nothing to commit)."""

    transitions: tuple[Transition, ...]


@dataclass(frozen=True, slots=True)
class IllegalReport:
    """A report the fuelling-point table cannot explain; the point is resynced after it.
    `unauthorized_dispensing`: fuel flows without an authorization: a critical alarm."""

    error: IllegalTransition
    status: DispenserStatus | None
    nozzle_out: bool
    unauthorized_dispensing: bool


@dataclass(frozen=True, slots=True)
class LearnPosition:
    """The pump came (back) online: read its last fill (`filling_info`), ask its status."""


@dataclass(frozen=True, slots=True)
class EndLift:
    """The nozzle went back: record (durably) that the next lift may be served."""


@dataclass(frozen=True, slots=True)
class RaisePumpAlarm:
    """The pump reported an alarm of its own."""

    text: str
    code: int


@dataclass(frozen=True, slots=True)
class FinishSale:
    """Read the fill from the pump, commit it as a sale, and only then reset the pump."""


@dataclass(frozen=True, slots=True)
class Withdraw:
    """The pump is released with no authorization on record: take the release back (STOP)."""


@dataclass(frozen=True, slots=True)
class MoveAuthorization:
    """Commit the open authorization's next state (it stays open)."""

    event: AuthorizationEvent
    state: AuthorizationState


@dataclass(frozen=True, slots=True)
class EndAuthorization:
    """Commit the end of the open authorization; its order (if any) ends with `order_reason`
    (forecourt/authorization.py's ORDER_REASON of `state`, unless a rule said otherwise)."""

    event: AuthorizationEvent
    state: AuthorizationState
    reason: str
    order_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Expire:
    """The lift deadline passed with no fuel: STOP the pump, then end the authorization."""

    end: EndAuthorization
    authorization_id: int


@dataclass(frozen=True, slots=True)
class BaselineTotals:
    """Read every nozzle's totals and check them against the last known ones."""

    nozzles: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SendPrices:
    """Give the idle dispenser the station's prices (one per nozzle, in nozzle order)."""

    price_set_id: str | None
    prices: tuple[Decimal, ...]
    by_grade: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class AutoAuthorize:
    """Auto mode: release the calling pump for the lift in progress (served once)."""

    nozzles: tuple[int, ...]
    preset_amount: Decimal


Decision = (
    LogTransitions
    | IllegalReport
    | LearnPosition
    | EndLift
    | RaisePumpAlarm
    | FinishSale
    | Withdraw
    | MoveAuthorization
    | EndAuthorization
    | Expire
    | BaselineTotals
    | SendPrices
    | AutoAuthorize
)
Step = Iterator[Decision]


@dataclass(frozen=True, slots=True)
class HeldFill:
    """A fill another sale's identity holds: the pump keeps it (no reset) until a person
    looks; `raise_alarm` once per fill."""

    raise_alarm: bool


# --------------------------------------------------------------------------- the decider


class PumpDecider:
    """What the station knows of one pump, and what it decides about it."""

    def __init__(self, rules: PumpRules, prices: PriceSet, *, now: float) -> None:
        self.rules = rules
        self.fp = FuellingPoint(rules.number, now=now)
        self.online = False
        self.status: DispenserStatus | None = None
        self.nozzle = 0  # the nozzle selected now (lifted, or last lifted)
        self.nozzle_out = False
        self.unit_price: Decimal | None = None
        # The nozzle and price of the current or last fill: learned when it starts and from
        # the pump's own description of it, never from a later lift of another nozzle.
        self.fill_nozzle: int | None = None
        self.fill_price: Decimal | None = None
        self.volume = Decimal(0)
        self.amount = Decimal(0)
        self.auth: Authorization | None = None
        self.closed: Closure | None = None
        self.stopping = False
        self.fills = 0  # fills seen starting since the station started (PumpFill.number)
        self.fill_volume = Decimal(0)  # litres of the current fill, as last reported
        self.fill_sold = False  # the current fill is recorded (or ended without fuel)
        self.conflict_alarmed = False  # the current fill's sale conflict is on record
        self.known_status: DispenserStatus | None = None  # last status reported, kept offline
        self.resync = True
        # Auto mode authorizes each lift once: the lift in progress has had its release
        # (durable, so a restart with the nozzle still out does not release it again).
        self.lift_served = False
        self.retry_at: float | None = None
        self.check_totals = False
        self.reconcile_auth = True  # an authorization found at start must be checked on the pump
        self.prices = prices  # the station's prices in force (the station keeps it current)
        self.price_set_id: str | None = None  # the price set the pump's prices came from
        self.prices_wanted: tuple[str | None, tuple[Decimal, ...]] | None = None
        # Reports handed to the pump's queue and taken from it: reports the pump sent before
        # it confirmed the current authorization (the last sale's reset, say) are old news.
        self.events_queued = 0
        self.events_taken = 0
        self.confirmed_at = 0  # events_queued when the pump confirmed the authorization
        self.reset_at = 0  # events_queued when the pump confirmed the reset after a sale
        # Start-up: orders wait for the pump's first word (its status, or the line declaring
        # it offline) until this time at most; then what is known is what is said.
        self.discovery_until = now + DISCOVERY_S
        self.heard = False
        self.offline_reason: str | None = None  # why the line last said the pump is offline
        self.lifted_during: int | None = None  # an authorization under which a nozzle was out

    @property
    def number(self) -> int:
        return self.rules.number

    # ------------------------------------------------------------------ start
    def start(
        self,
        now: float,
        *,
        auth: Authorization | None,
        lift_served: bool,
        closed: Closure | None,
    ) -> None:
        """What the store kept for the pump: its open authorization, whether the lift in
        progress was served, whether the site closed it."""
        self.discovery_until = now + DISCOVERY_S
        self.auth = auth
        self.lift_served = lift_served
        self.closed = closed

    # ------------------------------------------------------------------ reports in
    def report_queued(self) -> None:
        self.events_queued += 1

    def report_taken(self) -> None:
        self.events_taken += 1

    def on_report(self, event: DispenserEvent, now: float) -> Step:
        """One report from the pump's driver: what follows from it."""
        if isinstance(event, PumpOnline):
            yield from self._came_online()
        elif isinstance(event, PumpOffline):
            yield from self._went_offline(event.reason, now)
        elif isinstance(event, StatusReport):
            self.heard = True
            if event.status in IN_SALE and self.known_status not in IN_SALE:
                self._start_fill()
            self.known_status = event.status
            self.status = event.status
            yield from self._follow(now)
            yield from self._act()
        elif isinstance(event, NozzleReport):
            yield from self._nozzle(event, now)
        elif isinstance(event, FillingReport):
            self.volume, self.amount = event.volume, event.amount
            self.fill_volume = event.volume
        elif isinstance(event, AlarmReport):
            yield RaisePumpAlarm(event.text, event.code)

    def on_wake(self) -> Step:
        """Look at the situation again (new prices, the store writing again…)."""
        yield from self._act()

    def on_timer(self, now: float, wall: datetime) -> Step:
        """A deadline of `next_deadline` came: a retry, or an authorization's lift deadline."""
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            yield from self._act()
        if self._lift_deadline_runs() and now >= self.authorization_deadline(now, wall):
            auth = self.auth
            assert auth is not None
            if self.lifted_during == auth.id:
                # A nozzle was out, but no fuel flowed before the deadline.
                end = self._end(
                    AuthorizationEvent.TIMED_OUT,
                    "a nozzle was lifted but no fuel was drawn in time",
                    order_reason=lifecycle.ORDER_REASON_LIFTED_NO_FUEL,
                )
            else:
                end = self._end(AuthorizationEvent.TIMED_OUT, "no nozzle lifted in time")
            yield Expire(end, auth.id)

    def _came_online(self) -> Step:
        self.online = True
        self.offline_reason = None
        self.resync = True
        self.check_totals = True
        self.retry_at = None  # a pump back from an outage is looked at straight away
        yield LearnPosition()

    def _went_offline(self, reason: str, now: float) -> Step:
        self.heard = True
        self.offline_reason = reason
        self.online = False
        self.status = None
        yield from self._follow(now)
        self.resync = True

    def _nozzle(self, event: NozzleReport, now: float) -> Step:
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
        if not event.nozzle_out and self.lift_served:
            # Durable first: if the store cannot write, the lift stays "served" (no
            # release) and the next hang-up report tries again.
            yield EndLift()
            self.lift_served = False
        if self.status is not None:
            yield from self._follow(now)
            yield from self._act()

    def filling_info(self, info: FillingInfo) -> None:
        """The pump's description of its current or last fill."""
        self.volume, self.amount = info.volume, info.amount
        self.fill_volume = info.volume
        if info.nozzle:
            self.fill_nozzle = info.nozzle
            self.fill_price = info.unit_price

    def _start_fill(self) -> None:
        """A fill begins: the dispenser left idle for a fill status. The volume reported so
        far may still be the previous fill's, so the new one starts from nothing (the
        pump's next volume report gives its running figure)."""
        self.fills += 1
        self.fill_volume = Decimal(0)
        self.fill_sold = False
        self.conflict_alarmed = False
        self.fill_nozzle = self.nozzle or None
        self.fill_price = self.unit_price

    # ------------------------------------------------------------------ the fuelling point
    def _follow(self, now: float) -> Step:
        """Move the fuelling point to what the pump reports; an illegal report is resynced."""
        if self.auth is not None and self.nozzle_out:
            self.lifted_during = self.auth.id
        if self.resync and self.status is not None:
            self.resync = False
            resynced = self.fp.resync(observed_state(self.status, self.nozzle_out), now)
            if resynced is not None:
                yield LogTransitions((resynced,))
            return
        try:
            transitions = self.fp.follow(self.status, self.nozzle_out, now)
        except IllegalTransition as exc:
            yield IllegalReport(
                exc,
                self.status,
                self.nozzle_out,
                unauthorized_dispensing=(
                    self.status is DispenserStatus.FILLING and self.auth is None
                ),
            )
            resynced = self.fp.resync(observed_state(self.status, self.nozzle_out), now)
            transitions = [resynced] if resynced is not None else []
        if transitions:
            yield LogTransitions(tuple(transitions))

    # ------------------------------------------------------------------ decisions
    def _act(self) -> Step:
        if not self.online or self.status is None:
            return
        if (
            self.auth is not None
            and self.events_taken <= self.confirmed_at
            and self.status not in IN_SALE
        ):
            # Said before the pump confirmed the authorization: a pump at rest may predate
            # the AUTHORIZE. Fuel cannot, and a pump reports changes only, so a fill is
            # followed whenever its report is taken.
            return
        if self.status in SALE_OVER:
            if self.fill_sold and self.events_taken <= self.reset_at:
                # The sale is committed and the pump confirmed its reset: this report (the
                # nozzle's hang-up, read with the fill) was sent before the reset, and the
                # pump's RESET is queued behind it. Reading the fill again would only find
                # the same sale on record.
                return
            # After a failure, wait for the retry time instead of hammering the pump on
            # every status report it sends meanwhile.
            if self.retry_at is None:
                yield FinishSale()
            return
        if self.status is DispenserStatus.AUTHORIZED and self.auth is None:
            if self.retry_at is None:
                yield Withdraw()
            return
        if self.auth is not None:
            yield from self._follow_authorization()
        if self.status is DispenserStatus.RESET:
            if self.check_totals:
                yield BaselineTotals(tuple(self.rules.nozzles))
            if self.auth is None and self.prices_pending():
                prices = self.prices
                wanted = self._wanted(prices)
                self.prices_wanted = (prices.price_set_id, wanted)
                nozzles = sorted(self.rules.nozzles)
                by_grade = {self.rules.nozzles[n]: p for n, p in zip(nozzles, wanted, strict=True)}
                yield SendPrices(prices.price_set_id, wanted, by_grade)
            if (
                self.fp.state is FPState.CALLING
                and self.rules.mode == "auto"
                and self.auth is None
                and not self.lift_served
                and not self.stopping
                and self.closed is None
            ):
                yield self._auto_authorize()

    def _follow_authorization(self) -> Step:
        assert self.auth is not None
        state = self.auth.state
        if self.reconcile_auth and state is AuthorizationState.REQUESTED:
            # Found after a restart: did the AUTHORIZE reach the pump before we stopped?
            if self.status in (DispenserStatus.AUTHORIZED, DispenserStatus.FILLING):
                yield self._move(AuthorizationEvent.CONFIRMED)
                if not self._has_auth():  # the record was not found again
                    return
                state = AuthorizationState.AUTHORIZED
            elif self.status is DispenserStatus.RESET:
                yield self._end(
                    AuthorizationEvent.REFUSED, "the pump was not authorized before a restart"
                )
                return
        self.reconcile_auth = False
        if self.status is DispenserStatus.FILLING and state is not AuthorizationState.FUELLING:
            yield self._move(AuthorizationEvent.FLOW_STARTED)
        elif self.status is DispenserStatus.RESET and state is AuthorizationState.FUELLING:
            # Fuel flowed, and the pump is at rest without the station having seen the fill
            # end (reset at its keypad or by another controller while the line was down or
            # between two polls): the pump keeps its last fill, so it is read and recorded
            # like any other; a fill of nothing ends the authorization as no sale.
            if self.retry_at is None:
                yield FinishSale()
        elif self.status is DispenserStatus.RESET and state is not AuthorizationState.REQUESTED:
            # The pump dropped the authorization without a sale (stopped, reset or restarted).
            yield self._end(AuthorizationEvent.PUMP_DROPPED, "pump returned to idle without fuel")

    def _has_auth(self) -> bool:
        return self.auth is not None

    def _auto_authorize(self) -> AutoAuthorize:
        preset = self.rules.auto_preset_amount or self.rules.max_preset_amount
        nozzle = self.nozzle if self.nozzle in self.rules.nozzles else 0
        # Served from the moment it is asked: a refused or failed release is not retried
        # for the same lift either; the customer hangs up and lifts again.
        self.lift_served = True
        return AutoAuthorize((nozzle,) if nozzle else tuple(self.rules.nozzles), preset)

    def _move(self, event: AuthorizationEvent) -> MoveAuthorization:
        assert self.auth is not None
        return MoveAuthorization(event, self._next_state(event))

    def _end(
        self, event: AuthorizationEvent, reason: str, *, order_reason: str | None = None
    ) -> EndAuthorization:
        assert self.auth is not None
        state = self._next_state(event)
        return EndAuthorization(
            event, state, reason, order_reason or lifecycle.ORDER_REASON.get(state)
        )

    def _next_state(self, event: AuthorizationEvent) -> AuthorizationState:
        assert self.auth is not None
        return lifecycle.advance(self.auth.state, event, authorization=self.auth.id)

    # ------------------------------------------------------------------ authorizations
    def check_authorizable(
        self, nozzles: tuple[int, ...], preset_amount: Decimal | None, preset_volume: Decimal | None
    ) -> None:
        """Whether the pump may be authorized now, whoever asks; CommandError says why not."""
        number, rules = self.number, self.rules
        if self.stopping:
            raise CommandError("the station is shutting down", code="shutting_down")
        if self.closed is not None:
            raise CommandError(
                f"pump {number} is closed (since {self.closed.at}): it takes no authorization"
                " until it is opened again",
                code="pump_closed",
            )
        if not self.online:
            why = self.offline_reason or "no answer since the station started"
            raise CommandError(f"pump {number} is offline: {why}", code="pump_offline")
        if self.status is None:
            raise CommandError(
                f"pump {number} is offline: it answers but has not reported its status",
                code="pump_offline",
            )
        if self.auth is not None:
            raise CommandError(f"pump {number} is already authorized", code="pump_busy")
        if self.status is not DispenserStatus.RESET:
            raise CommandError(f"pump {number} is {self.status.value}", code="pump_busy")
        for nozzle in nozzles:
            if nozzle not in rules.nozzles:
                raise CommandError(f"pump {number} has no nozzle {nozzle}", code="unknown_nozzle")
        if preset_amount is not None and not (
            rules.min_preset_amount <= preset_amount <= rules.max_preset_amount
        ):
            raise CommandError(
                f"preset amount {preset_amount} outside {rules.min_preset_amount}"
                f"..{rules.max_preset_amount}",
                code="preset_out_of_limits",
            )
        if preset_volume is not None and not (0 < preset_volume <= rules.max_preset_volume):
            raise CommandError(
                f"preset volume {preset_volume} outside 0..{rules.max_preset_volume}",
                code="preset_out_of_limits",
            )

    def allowed_nozzles(self, nozzles: tuple[int, ...], grades: tuple[str, ...]) -> tuple[int, ...]:
        """The nozzles an order may use: those it names, narrowed to the grades it names."""
        number, on_pump = self.number, self.rules.nozzles
        for nozzle in nozzles:
            if nozzle not in on_pump:
                raise CommandError(f"pump {number} has no nozzle {nozzle}", code="unknown_nozzle")
        sold = set(on_pump.values())
        for grade in grades:
            if grade not in sold:
                raise CommandError(
                    f"pump {number} does not sell grade {grade}", code="unknown_grade"
                )
        allowed = [
            n
            for n, g in sorted(on_pump.items())
            if (not nozzles or n in nozzles) and (not grades or g in grades)
        ]
        if not allowed:
            raise CommandError(
                f"no nozzle of pump {number} matches the order", code="unknown_nozzle"
            )
        return tuple(allowed)

    def authorization_recorded(self, auth: Authorization) -> None:
        """The authorization is on record (REQUESTED), before the pump is asked."""
        self.auth = auth
        self.reconcile_auth = False

    def authorization_confirmed(self) -> MoveAuthorization:
        """The pump confirmed the AUTHORIZE: what it reported before is old news."""
        self.confirmed_at = self.events_queued
        return self._move(AuthorizationEvent.CONFIRMED)

    def authorization_refused(self, reason: str) -> EndAuthorization:
        return self._end(AuthorizationEvent.REFUSED, reason)

    def cancel(self) -> EndAuthorization:
        """The cloud withdraws the authorization (the station checked it may)."""
        return self._end(AuthorizationEvent.CANCELLED, "cancelled by the cloud")

    def cancellable(self) -> bool:
        return self.auth is not None and lifecycle.can(
            self.auth.state, AuthorizationEvent.CANCELLED
        )

    def authorization_moved(self, auth: Authorization | None) -> None:
        self.auth = auth

    def release_authorization(self) -> Authorization:
        """The open authorization is being ended: the pump is without one from now on
        (its live state is computed so). `restore_authorization` if the end is not on record."""
        assert self.auth is not None
        auth, self.auth = self.auth, None
        return auth

    def restore_authorization(self, auth: Authorization) -> None:
        self.auth = auth

    def authorization_deadline(self, now: float, wall: datetime) -> float:
        """When an authorization not yet used lapses: the configured time, or the order's own."""
        deadline = self.fp.since + self.rules.authorize_timeout_s
        if self.auth is not None and self.auth.expires_at:
            remaining = (datetime.fromisoformat(self.auth.expires_at) - wall).total_seconds()
            deadline = min(deadline, now + remaining)
        return deadline

    def _lift_deadline_runs(self) -> bool:
        """An authorization waits for fuel: the pump released, no flow yet (an authorization
        under which fuel flowed never expires: it ends with its sale)."""
        return (
            self.auth is not None
            and self.fp.state in NO_FLOW_AUTHORISED
            and lifecycle.can(self.auth.state, AuthorizationEvent.TIMED_OUT)
        )

    def next_deadline(self, now: float, wall: datetime) -> float | None:
        """Seconds until `on_timer` is due (a retry, a lift deadline); None: nothing timed."""
        deadlines: list[float] = []
        if self.retry_at is not None:
            deadlines.append(self.retry_at)
        if self._lift_deadline_runs():
            deadlines.append(self.authorization_deadline(now, wall))
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    # ------------------------------------------------------------------ sales
    def retry_later(self, now: float, after: float = RETRY_S) -> None:
        self.retry_at = now + after

    def retry_now(self) -> None:
        self.retry_at = None

    def reset_done(self) -> None:
        """The pump confirmed the reset that follows a sale."""
        self.reset_at = self.events_queued

    def fill_nozzle_of(self, info: FillingInfo) -> int:
        """The fill's nozzle: the pump's description of this fill, else the nozzle lifted
        when it started; the nozzle selected now may be the next customer's."""
        return info.nozzle or self.fill_nozzle or self.nozzle

    def zero_fill(self) -> EndAuthorization | None:
        """The fill read back is 0 litres: no sale; the authorization (if any) ends."""
        self.fill_sold = True
        if self.auth is None:
            return None
        return self._end(AuthorizationEvent.ZERO_FILL, "nozzle hung up without fuel")

    def sale_of(
        self,
        info: FillingInfo,
        nozzle: int,
        totals: tuple[Decimal, Decimal] | None,
        *,
        ended_at: str,
    ) -> tuple[Sale, bool]:
        """The sale a fill read back makes, and whether its nozzle has no grade or price
        (recorded as grade "unknown" at 0: a person must look)."""
        grade_id = self.rules.nozzles.get(nozzle)
        unit_price = info.unit_price or self.fill_price or self.unit_price
        unmapped = grade_id is None or unit_price is None
        sale = Sale(
            pump=self.number,
            nozzle=nozzle,
            grade=grade_id or "unknown",
            volume=info.volume,
            amount=info.amount,
            unit_price=unit_price or Decimal(0),
            currency=self.rules.currency,
            ended_at=ended_at,
            total_volume_after=totals[0] if totals else None,
            total_amount_after=totals[1] if totals else None,
            authorization_id=self.auth.id if self.auth else None,
            price_set_id=self.price_set_id,
            reference=info.reference,
        )
        return sale, unmapped

    def fill_held(self) -> HeldFill:
        """Another sale holds this fill's identity: keep it at the pump (no reset), and say
        so once per fill (`conflict_on_record`), then `hold_fill`."""
        return HeldFill(raise_alarm=not self.conflict_alarmed)

    def conflict_on_record(self) -> None:
        self.conflict_alarmed = True

    def hold_fill(self, now: float) -> None:
        """Try the held fill again much later: a person must look first."""
        self.retry_later(now, CONFLICT_RETRY_S)

    def sold(self, sale: Sale) -> PumpFill:
        """The fill is a sale (recorded now or before): it leaves the fills in progress, and
        the authorization it was drawn under is closed (by the same commit)."""
        self.fill_sold = True
        if self.auth is not None:
            lifecycle.advance(
                self.auth.state, AuthorizationEvent.SALE_RECORDED, authorization=self.auth.id
            )
            self.auth = None
        return PumpFill(self.number, self.fills, sale.grade, sale.volume)

    def fill_in_progress(self) -> PumpFill | None:
        """The pump's fill not yet recorded as a sale, if one is flowing or just finished."""
        if self.status not in IN_SALE or self.fill_sold:
            return None
        grade = self.rules.nozzles.get(self.fill_nozzle or self.nozzle)
        if grade is None:
            return None
        return PumpFill(self.number, self.fills, grade, self.fill_volume)

    # ------------------------------------------------------------------ prices and totals
    def _wanted(self, prices: PriceSet) -> tuple[Decimal, ...]:
        return tuple(prices.prices[self.rules.nozzles[n]] for n in sorted(self.rules.nozzles))

    def prices_pending(self) -> bool:
        """The pump has not been given the prices in force (nor is being given them)."""
        return self.prices_wanted != (self.prices.price_set_id, self._wanted(self.prices))

    def prices_applied(self, price_set_id: str | None) -> None:
        self.price_set_id = price_set_id

    def prices_failed(self, now: float) -> None:
        self.retry_later(now)
        self.prices_wanted = None

    def totals_checked(self) -> None:
        self.check_totals = False

    # ------------------------------------------------------------------ closing
    def close(self, closure: Closure) -> bool:
        """The site closes the pump; False if it was closed already (the first closure stays)."""
        if self.closed is not None:
            return False
        self.closed = closure
        return True

    def open(self) -> bool:
        """The site opens the pump again; False if it was not closed."""
        if self.closed is None:
            return False
        self.closed = None
        return True

    def busy(self) -> bool:
        """An authorization or a fill is under way (a closure lets it end on its own)."""
        return self.auth is not None or (self.status in IN_SALE and not self.fill_sold)

    # ------------------------------------------------------------------ views
    @property
    def shown_state(self) -> FPState:
        """The state the pump is shown in: the fuelling point's, or CLOSED for a pump the
        site closed while nothing is under way on it."""
        if self.closed is not None and self.fp.state in _SHOWN_CLOSED and self.auth is None:
            return FPState.CLOSED
        return self.fp.state

    def live_state(self) -> tuple[object, ...]:
        """What the pump's live-state message says, to tell whether it changed."""
        return (
            self.online,
            self.shown_state,
            self.status,
            self.nozzle if self.nozzle_out else 0,
            self.auth.order_id if self.auth else None,
        )

    def settled(self) -> bool:
        """No sale in flight: nothing flowing and nothing finished but not yet committed."""
        if not self.online or self.status is None:
            return True  # an unreachable pump's sale is recovered when it is back
        return self.status not in IN_SALE

    def worth_waiting(self, asked: float) -> float | None:
        """Until when an order asked at `asked` should wait for the pump; None: decide now."""
        if self.stopping or self.closed is not None:
            return None
        if not self.heard:
            return self.discovery_until
        if self.online and self.auth is None and self.fill_sold and self.status in SALE_OVER:
            return asked + RESET_WAIT_S
        return None
