"""The pump's decisions as plain code: reports and clock values in, typed decisions out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import (
    DispenserEvent,
    DispenserStatus,
    FillingInfo,
    NozzleReport,
    PumpOffline,
    PumpOnline,
    StatusReport,
)
from edgectl.errors import CommandError
from edgectl.forecourt.authorization import AuthorizationEvent
from edgectl.forecourt.fuelling_point import FPState
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
    SendPrices,
    Step,
    Withdraw,
)
from edgectl.forecourt.sale import Authorization, AuthorizationSource, AuthorizationState, Sale

D = DispenserStatus
A = AuthorizationState
WALL = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PRICES = PriceSet(None, {"92": Decimal("7.45"), "95": Decimal("7.93")})
CLOSURE = Closure(at="2026-11-24T09:00:00.000Z", by="cli:tech", reason="leak")


def rules(mode: str = "auto", **kw: object) -> PumpRules:
    values: dict[str, object] = {
        "number": 3,
        "nozzles": {1: "92", 2: "95"},
        "currency": "CNY",
        "mode": mode,
        "authorize_timeout_s": 60.0,
        "min_preset_amount": Decimal("1.00"),
        "max_preset_amount": Decimal("2000.00"),
        "max_preset_volume": Decimal("300.00"),
        "auto_preset_amount": Decimal("100.00"),
        **kw,
    }
    return PumpRules(**values)  # type: ignore[arg-type]


def authorization(state: AuthorizationState = A.AUTHORIZED, **kw: object) -> Authorization:
    values: dict[str, object] = {
        "id": 7,
        "pump": 3,
        "source": AuthorizationSource.CLOUD,
        "state": state,
        "nozzles": (),
        "preset_amount": Decimal("200.00"),
        "preset_volume": None,
        "order_id": "o-1",
        "requested_by": "cloud",
        "created_at": "2026-11-24T10:00:00.000Z",
        **kw,
    }
    return Authorization(**values)  # type: ignore[arg-type]


class Pump:
    """A decider with a make-believe station around it: each report is queued and taken, and
    each decision carried out at once, successfully (what the pump task does)."""

    def __init__(self, mode: str = "auto", *, auth: Authorization | None = None, **kw: object):
        self.decider = PumpDecider(rules(mode, **kw), PRICES, now=0.0)
        self.decider.start(0.0, auth=auth, lift_served=False, closed=None)
        self.now = 0.0

    def report(self, event: DispenserEvent) -> list[Decision]:
        self.decider.report_queued()
        self.decider.report_taken()
        return self.carry_out(self.decider.on_report(event, self.now))

    def status(self, status: DispenserStatus) -> list[Decision]:
        return self.report(StatusReport("l0", 0x50, status, 0))

    def nozzle(self, nozzle: int, out: bool) -> list[Decision]:
        return self.report(NozzleReport("l0", 0x50, nozzle, out, Decimal("7.93")))

    def timer(self, at: float, wall: datetime = WALL) -> list[Decision]:
        self.now = at
        return self.carry_out(self.decider.on_timer(at, wall))

    def at_rest(self) -> None:
        """Online, idle, totals checked and prices given: nothing left to do."""
        self.report(PumpOnline("l0", 0x50))
        self.status(D.RESET)
        assert self.decider.fp.state is FPState.IDLE

    def carry_out(self, step: Step) -> list[Decision]:
        done: list[Decision] = []
        decider = self.decider
        for decision in step:
            done.append(decision)
            match decision:
                case MoveAuthorization(state=state):
                    assert decider.auth is not None
                    decider.authorization_moved(replace(decider.auth, state=state))
                case EndAuthorization():
                    decider.release_authorization()
                case Expire():
                    decider.release_authorization()
                case LearnPosition():
                    decider.filling_info(FillingInfo(Decimal(0), Decimal(0)))
                case BaselineTotals():
                    decider.totals_checked()
                case SendPrices(price_set_id=price_set_id):
                    decider.prices_applied(price_set_id)
                case AutoAuthorize():
                    decider.authorization_recorded(
                        authorization(A.REQUESTED, source=AuthorizationSource.AUTO, order_id=None)
                    )
                    move = decider.authorization_confirmed()
                    decider.authorization_moved(replace(decider.auth, state=move.state))  # type: ignore[arg-type]
        return done


def kinds(decisions: list[Decision]) -> list[type]:
    return [type(d) for d in decisions if not isinstance(d, LogTransitions)]


# ---------------------------------------------------------------------------
# Start-up and rest
# ---------------------------------------------------------------------------
def test_nothing_is_decided_for_a_pump_not_heard_from() -> None:
    pump = Pump()
    assert pump.carry_out(pump.decider.on_wake()) == []
    assert pump.report(PumpOnline("l0", 0x50)) == [LearnPosition()]
    assert pump.carry_out(pump.decider.on_wake()) == []  # online, no status yet


def test_a_pump_coming_online_is_resynced_checked_and_given_its_prices() -> None:
    pump = Pump()
    pump.report(PumpOnline("l0", 0x50))
    decisions = pump.status(D.RESET)
    (log, totals, prices) = decisions
    assert isinstance(log, LogTransitions) and log.transitions[0].is_resync
    assert totals == BaselineTotals((1, 2))
    assert prices == SendPrices(
        None, (Decimal("7.45"), Decimal("7.93")), {"92": Decimal("7.45"), "95": Decimal("7.93")}
    )
    assert pump.status(D.RESET) == []  # done once
    pump.decider.prices = PriceSet("ps-1", {"92": Decimal("7.50"), "95": Decimal("7.93")})
    assert kinds(pump.carry_out(pump.decider.on_wake())) == [SendPrices]


def test_failed_prices_are_tried_again_at_the_retry_time() -> None:
    pump = Pump()
    pump.report(PumpOnline("l0", 0x50))
    pump.decider.stopping = True  # keep auto mode out of it
    decider = pump.decider
    step = decider.on_report(StatusReport("l0", 0x50, D.RESET, 1), 0.0)
    decisions = []
    for decision in step:  # carried out: the totals are read, the prices fail
        decisions.append(decision)
        if isinstance(decision, BaselineTotals):
            decider.totals_checked()
    assert kinds(decisions) == [BaselineTotals, SendPrices]
    decider.prices_failed(10.0)
    assert decider.prices_pending()
    assert decider.next_deadline(10.0, WALL) == RETRY_S
    assert kinds(pump.timer(10.0 + RETRY_S)) == [SendPrices]


def test_an_order_waits_for_discovery_then_for_the_reset_only() -> None:
    pump = Pump()
    assert pump.decider.worth_waiting(1.0) == DISCOVERY_S
    pump.at_rest()
    assert pump.decider.worth_waiting(1.0) is None


# ---------------------------------------------------------------------------
# Auto mode
# ---------------------------------------------------------------------------
def test_auto_mode_serves_each_lift_once_on_the_nozzle_lifted() -> None:
    pump = Pump("auto")
    pump.at_rest()
    decisions = pump.nozzle(2, True)
    assert kinds(decisions) == [AutoAuthorize]
    assert decisions[-1] == AutoAuthorize((2,), Decimal("100.00"))
    assert pump.decider.lift_served
    # The pump's own reports while the lift lasts do not release it again.
    pump.decider.release_authorization()
    assert kinds(pump.status(D.RESET)) == []
    assert kinds(pump.nozzle(2, False)) == [EndLift]
    assert not pump.decider.lift_served
    assert kinds(pump.nozzle(1, True)) == [AutoAuthorize]


@pytest.mark.parametrize("mode", ["cloud", "attendant"])
def test_other_modes_never_authorize_on_their_own(mode: str) -> None:
    pump = Pump(mode)
    pump.at_rest()
    assert kinds(pump.nozzle(2, True)) == []
    assert pump.decider.fp.state is FPState.CALLING


def test_a_stopping_station_serves_no_lift() -> None:
    pump = Pump("auto")
    pump.at_rest()
    pump.decider.stopping = True
    assert kinds(pump.nozzle(2, True)) == []
    with pytest.raises(CommandError) as caught:
        pump.decider.check_authorizable((), None, None)
    assert caught.value.code == "shutting_down"


# ---------------------------------------------------------------------------
# Closed pumps
# ---------------------------------------------------------------------------
def test_a_closed_pump_is_authorized_by_no_one_and_shown_closed() -> None:
    pump = Pump("auto")
    pump.at_rest()
    assert pump.decider.close(CLOSURE)
    assert not pump.decider.close(CLOSURE)  # already closed: the first closure stays
    assert pump.decider.shown_state is FPState.CLOSED
    assert kinds(pump.nozzle(2, True)) == []  # auto mode leaves the lift alone
    assert pump.decider.fp.state is FPState.CALLING
    assert pump.decider.shown_state is FPState.CLOSED
    assert not pump.decider.lift_served
    with pytest.raises(CommandError) as caught:
        pump.decider.check_authorizable((), Decimal("50"), None)
    assert caught.value.code == "pump_closed"
    assert "pump 3 is closed" in str(caught.value)
    assert pump.decider.worth_waiting(0.0) is None  # an order for it is answered at once

    assert pump.decider.open()
    assert not pump.decider.open()
    assert pump.decider.shown_state is FPState.CALLING
    assert kinds(pump.carry_out(pump.decider.on_wake())) == [AutoAuthorize]


def test_closed_wins_over_offline_and_busy() -> None:
    """The cloud learns the lasting reason: a closed pump is not worth retrying."""
    pump = Pump("cloud")
    pump.decider.close(CLOSURE)
    with pytest.raises(CommandError) as caught:
        pump.decider.check_authorizable((), None, None)
    assert caught.value.code == "pump_closed"
    assert pump.decider.shown_state is FPState.INOPERATIVE  # offline shows as offline


def test_a_sale_under_way_when_closed_goes_on_and_shows_its_states() -> None:
    pump = Pump("cloud", auth=None)
    pump.at_rest()
    pump.decider.authorization_recorded(authorization(A.REQUESTED))
    pump.decider.authorization_confirmed()
    pump.decider.authorization_moved(authorization(A.AUTHORIZED))
    pump.status(D.AUTHORIZED)
    pump.decider.close(CLOSURE)
    assert pump.decider.busy()
    assert pump.decider.shown_state is FPState.AUTHORISED
    assert kinds(pump.status(D.FILLING)) == [MoveAuthorization]
    assert pump.decider.shown_state is FPState.FUELLING
    assert kinds(pump.status(D.FILLING_COMPLETED)) == [FinishSale]


@given(
    st.lists(
        st.one_of(
            st.sampled_from(list(D)).map(lambda s: ("status", s)),
            st.tuples(st.integers(0, 2), st.booleans()).map(lambda n: ("nozzle", n)),
            st.just(("offline", None)),
            st.just(("online", None)),
        ),
        max_size=25,
    )
)
def test_whatever_the_pump_reports_a_closed_pump_is_never_released(
    reports: list[tuple[str, object]],
) -> None:
    pump = Pump("auto")
    pump.decider.close(CLOSURE)
    for kind, value in reports:
        if kind == "status":
            assert isinstance(value, DispenserStatus)
            decisions = pump.status(value)
        elif kind == "nozzle":
            assert isinstance(value, tuple)
            decisions = pump.nozzle(*value)
        elif kind == "offline":
            decisions = pump.report(PumpOffline("l0", 0x50, "no answer"))
        else:
            decisions = pump.report(PumpOnline("l0", 0x50))
        assert not any(isinstance(d, AutoAuthorize) for d in decisions)
        with pytest.raises(CommandError) as caught:
            pump.decider.check_authorizable((), None, None)
        assert caught.value.code == "pump_closed"
        if pump.decider.fp.state in (FPState.IDLE, FPState.CALLING):
            assert pump.decider.shown_state is FPState.CLOSED


# ---------------------------------------------------------------------------
# Authorizations
# ---------------------------------------------------------------------------
def test_authorizable_checks_in_order() -> None:
    pump = Pump("attendant")
    with pytest.raises(CommandError, match="offline: no answer since the station started"):
        pump.decider.check_authorizable((), None, None)
    pump.report(PumpOnline("l0", 0x50))
    with pytest.raises(CommandError, match="has not reported its status"):
        pump.decider.check_authorizable((), None, None)
    pump.status(D.RESET)
    codes = []
    for nozzles, amount, volume in [
        ((9,), None, None),
        ((), Decimal("0.50"), None),
        ((), Decimal("2000.01"), None),
        ((), None, Decimal("300.01")),
        ((), None, Decimal("0")),
    ]:
        with pytest.raises(CommandError) as caught:
            pump.decider.check_authorizable(nozzles, amount, volume)
        codes.append(caught.value.code)
    assert codes == ["unknown_nozzle"] + ["preset_out_of_limits"] * 4
    pump.decider.check_authorizable((1,), Decimal("1.00"), None)
    pump.decider.authorization_recorded(authorization(A.REQUESTED))
    with pytest.raises(CommandError, match="already authorized"):
        pump.decider.check_authorizable((), None, None)


def test_allowed_nozzles_narrow_by_nozzle_and_grade() -> None:
    decider = Pump().decider
    assert decider.allowed_nozzles((), ()) == (1, 2)
    assert decider.allowed_nozzles((), ("95",)) == (2,)
    assert decider.allowed_nozzles((1, 2), ("92",)) == (1,)
    for nozzles, grades, code in [((5,), (), "unknown_nozzle"), ((), ("98",), "unknown_grade")]:
        with pytest.raises(CommandError) as caught:
            decider.allowed_nozzles(nozzles, grades)
        assert caught.value.code == code
    with pytest.raises(CommandError, match="no nozzle of pump 3 matches"):
        decider.allowed_nozzles((1,), ("95",))


def test_the_authorization_follows_the_pump_through_the_table() -> None:
    pump = Pump("cloud")
    pump.at_rest()
    decider = pump.decider
    decider.authorization_recorded(authorization(A.REQUESTED))
    move = decider.authorization_confirmed()
    assert move == MoveAuthorization(AuthorizationEvent.CONFIRMED, A.AUTHORIZED)
    decider.authorization_moved(authorization(A.AUTHORIZED))
    assert kinds(pump.status(D.AUTHORIZED)) == []
    assert [d for d in pump.status(D.FILLING) if not isinstance(d, LogTransitions)] == [
        MoveAuthorization(AuthorizationEvent.FLOW_STARTED, A.FUELLING)
    ]
    assert kinds(pump.status(D.FILLING)) == []


def test_reports_sent_before_the_confirmation_are_old_news() -> None:
    pump = Pump("cloud")
    pump.at_rest()
    decider = pump.decider
    decider.report_queued()  # the last sale's RESET, still queued
    decider.authorization_recorded(authorization(A.REQUESTED))
    decider.authorization_confirmed()
    decider.authorization_moved(authorization(A.AUTHORIZED))
    decider.report_taken()
    assert kinds(pump.carry_out(decider.on_report(StatusReport("l0", 0x50, D.RESET, 1), 0))) == []
    assert decider.auth is not None
    decisions = pump.status(D.RESET)  # said after the confirmation: the pump dropped it
    assert decisions == [
        EndAuthorization(
            AuthorizationEvent.PUMP_DROPPED,
            A.NO_SALE,
            "pump returned to idle without fuel",
            "zero_delivery",
        )
    ]


_FLOWED = MoveAuthorization(AuthorizationEvent.FLOW_STARTED, A.FUELLING)


@pytest.mark.parametrize(
    ("reports", "expected"),
    [
        ((D.AUTHORIZED, D.FILLING), [_FLOWED]),
        ((D.AUTHORIZED, D.FILLING, D.FILLING_COMPLETED), [_FLOWED, FinishSale()]),
        ((D.AUTHORIZED, D.FILLING, D.MAX_REACHED), [_FLOWED, FinishSale()]),
        ((D.RESET, D.AUTHORIZED, D.FILLING), [_FLOWED]),
    ],
)
def test_fuel_reported_before_the_confirmation_is_not_old_news(
    reports: tuple[DispenserStatus, ...], expected: list[Decision]
) -> None:
    """A pump that starts the flow at once (trigger already held): its AUTHORIZED and FILLING
    are queued before the station takes its confirmation. A pump at rest said before it
    may predate the AUTHORIZE; fuel cannot, and it is never said again (the pump reports
    changes only), so skipping it left the authorization AUTHORIZED through the whole fill:
    no `fuelling` step for the order, and its store record wrong (the flaky station test
    `test_a_fill_that_ended_unseen_at_the_pump_is_read_and_recorded` caught it)."""
    pump = Pump("cloud")
    pump.at_rest()
    decider = pump.decider
    decider.authorization_recorded(authorization(A.REQUESTED))
    for _ in reports:
        decider.report_queued()
    confirmed = decider.authorization_confirmed()
    decider.authorization_moved(authorization(confirmed.state))
    decisions: list[Decision] = []
    for status in reports:
        decider.report_taken()
        decisions += pump.carry_out(decider.on_report(StatusReport("l0", 0x50, status, 1), 0))
    assert [d for d in decisions if not isinstance(d, LogTransitions)] == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (D.AUTHORIZED, [MoveAuthorization(AuthorizationEvent.CONFIRMED, A.AUTHORIZED)]),
        (
            D.FILLING,
            [
                MoveAuthorization(AuthorizationEvent.CONFIRMED, A.AUTHORIZED),
                MoveAuthorization(AuthorizationEvent.FLOW_STARTED, A.FUELLING),
            ],
        ),
        (
            D.RESET,
            [
                EndAuthorization(
                    AuthorizationEvent.REFUSED,
                    A.FAILED,
                    "the pump was not authorized before a restart",
                    "pump_refused",
                )
            ],
        ),
    ],
)
def test_an_authorization_found_at_start_is_reconciled_with_the_pump(
    status: DispenserStatus, expected: list[Decision]
) -> None:
    pump = Pump("cloud", auth=authorization(A.REQUESTED))
    pump.report(PumpOnline("l0", 0x50))
    decisions = [
        d for d in pump.status(status) if not isinstance(d, LogTransitions | BaselineTotals)
    ]
    assert decisions[: len(expected)] == expected


def test_a_release_with_no_authorization_on_record_is_withdrawn() -> None:
    pump = Pump("cloud")
    pump.at_rest()
    assert kinds(pump.status(D.AUTHORIZED)) == [Withdraw]
    pump.decider.retry_later(0.0)
    assert kinds(pump.status(D.AUTHORIZED)) == []  # waits for the retry time
    assert kinds(pump.timer(RETRY_S)) == [Withdraw]


def _authorized(pump: Pump, **kw: object) -> None:
    pump.at_rest()
    decider = pump.decider
    decider.authorization_recorded(authorization(A.REQUESTED, **kw))
    decider.authorization_confirmed()
    decider.authorization_moved(authorization(A.AUTHORIZED, **kw))
    pump.now = 5.0
    pump.status(D.AUTHORIZED)
    assert decider.fp.state is FPState.AUTHORISED


def test_an_authorization_not_used_in_time_expires() -> None:
    pump = Pump("cloud")
    _authorized(pump)
    assert pump.decider.next_deadline(5.0, WALL) == 60.0
    assert pump.timer(64.9) == []
    (expire,) = pump.timer(65.0)
    assert expire == Expire(
        EndAuthorization(
            AuthorizationEvent.TIMED_OUT, A.EXPIRED, "no nozzle lifted in time", "no_nozzle_lifted"
        ),
        7,
    )


def test_an_expiry_after_a_lift_without_fuel_says_so() -> None:
    pump = Pump("cloud")
    _authorized(pump)
    pump.nozzle(1, True)
    pump.nozzle(1, False)
    (expire,) = pump.timer(100.0)
    assert isinstance(expire, Expire)
    assert expire.end.order_reason == "nozzle_lifted_no_fuel"


def test_the_orders_own_deadline_comes_first_when_earlier() -> None:
    pump = Pump("cloud")
    _authorized(pump, expires_at=(WALL + timedelta(seconds=10)).isoformat())
    assert pump.decider.next_deadline(5.0, WALL) == pytest.approx(10.0)
    assert kinds(pump.timer(15.0, WALL + timedelta(seconds=10))) == [Expire]


def test_an_authorization_under_which_fuel_flowed_never_expires() -> None:
    """Only the pump ends it (the table refuses TIMED_OUT once fuelling), even if the point
    were resynced back to a no-flow state."""
    pump = Pump("cloud")
    _authorized(pump)
    pump.decider.authorization_moved(authorization(A.FUELLING))
    assert pump.decider.next_deadline(5.0, WALL) is None
    assert pump.timer(1000.0) == []


def test_cancel_goes_through_the_table() -> None:
    pump = Pump("cloud")
    _authorized(pump)
    assert pump.decider.cancellable()
    assert pump.decider.cancel().state is A.CANCELLED
    pump.decider.authorization_moved(authorization(A.FUELLING))
    assert not pump.decider.cancellable()


# ---------------------------------------------------------------------------
# Sales
# ---------------------------------------------------------------------------
def _sale_over(pump: Pump) -> None:
    _authorized(pump)
    pump.nozzle(2, True)
    pump.status(D.FILLING)
    pump.nozzle(2, False)


def test_a_fill_over_is_finished_once_and_its_reset_is_not_read_twice() -> None:
    pump = Pump("cloud")
    _sale_over(pump)
    decider = pump.decider
    assert kinds(pump.status(D.FILLING_COMPLETED)) == [FinishSale]
    info = FillingInfo(Decimal("3.79"), Decimal("30.05"), nozzle=2, unit_price=Decimal("7.93"))
    decider.filling_info(info)
    sale, unmapped = decider.sale_of(
        info, decider.fill_nozzle_of(info), (Decimal("1003.79"), Decimal("7530.05")), ended_at="t"
    )
    assert not unmapped
    assert (sale.pump, sale.nozzle, sale.grade, sale.authorization_id) == (3, 2, "95", 7)
    assert decider.fill_in_progress() == PumpFill(3, 1, "95", Decimal("3.79"))
    assert decider.sold(sale) == PumpFill(3, 1, "95", Decimal("3.79"))
    assert decider.auth is None and decider.fill_in_progress() is None
    decider.report_queued()  # the nozzle's DC3, read with the fill, queued before the reset
    decider.reset_done()
    assert decider.worth_waiting(0.0) == RESET_WAIT_S
    # The stale report: the sale is on record and the pump confirmed its reset.
    decider.report_taken()
    step = decider.on_report(NozzleReport("l0", 0x50, 2, False, Decimal("7.93")), 0.0)
    assert kinds(pump.carry_out(step)) == []
    # A report after the reset still saying the fill is over: read it again.
    assert kinds(pump.status(D.FILLING_COMPLETED)) == [FinishSale]


def test_a_fill_that_ended_unseen_is_read_not_dropped() -> None:
    """Fuel flowed, and the next report says RESET (the pump was reset at its keypad between
    two polls or while the line was down): the fill is read, not ended as "without fuel"."""
    pump = Pump("cloud")
    pump.at_rest()
    decider = pump.decider
    decider.authorization_recorded(authorization(A.REQUESTED))
    decider.authorization_confirmed()
    decider.authorization_moved(authorization(A.AUTHORIZED))
    pump.status(D.FILLING)
    decider.authorization_moved(authorization(A.FUELLING))
    assert kinds(pump.status(D.RESET)) == [FinishSale]
    decider.retry_later(5.0)  # the read failed: wait for the retry time, as for any fill
    assert kinds(pump.status(D.RESET)) == []
    assert kinds(pump.timer(5.0 + RETRY_S)) == [FinishSale]


def test_a_failed_read_waits_for_the_retry_time() -> None:
    pump = Pump("cloud")
    _sale_over(pump)
    pump.status(D.FILLING_COMPLETED)
    pump.decider.retry_later(20.0)
    assert kinds(pump.status(D.FILLING_COMPLETED)) == []
    assert kinds(pump.timer(20.0 + RETRY_S)) == [FinishSale]


def test_a_fill_held_by_another_sales_identity_alarms_once() -> None:
    pump = Pump("cloud")
    _sale_over(pump)
    decider = pump.decider
    assert decider.fill_held().raise_alarm
    decider.conflict_on_record()
    decider.hold_fill(30.0)
    assert not decider.fill_held().raise_alarm
    assert decider.next_deadline(30.0, WALL) == RETRY_S * 15


def test_a_zero_fill_ends_the_authorization_without_a_sale() -> None:
    pump = Pump("cloud")
    _sale_over(pump)
    end = pump.decider.zero_fill()
    assert end == EndAuthorization(
        AuthorizationEvent.ZERO_FILL, A.NO_SALE, "nozzle hung up without fuel", "zero_delivery"
    )
    assert pump.decider.fill_in_progress() is None


def test_a_sale_on_an_unmapped_nozzle_is_kept_as_unknown() -> None:
    decider = Pump().decider
    info = FillingInfo(Decimal("1"), Decimal("7"), nozzle=5)
    sale, unmapped = decider.sale_of(info, 5, None, ended_at="t")
    assert unmapped
    assert (sale.grade, sale.unit_price, sale.total_volume_after) == ("unknown", Decimal(0), None)
    assert isinstance(sale, Sale)


def test_a_flow_nobody_authorized_is_an_alarm_and_the_point_resyncs() -> None:
    pump = Pump("cloud")
    pump.at_rest()
    decisions = pump.status(D.FILLING)
    illegal = [d for d in decisions if isinstance(d, IllegalReport)]
    assert len(illegal) == 1 and illegal[0].unauthorized_dispensing
    assert pump.decider.fp.state is FPState.FUELLING
    assert pump.decider.fills == 1
