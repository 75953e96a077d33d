"""The fuelling-point state machine: every legal pair, every illegal pair, every observation."""

from __future__ import annotations

import itertools

import pytest

from drivers.base import DispenserStatus
from edgectl.errors import EdgectlError, IllegalTransition
from edgectl.forecourt.fuelling_point import (
    OBSERVATIONS,
    TRANSITIONS,
    FPEvent,
    FPState,
    FuellingPoint,
    Observation,
    Transition,
    events_for,
)

S = FPState
E = FPEvent
D = DispenserStatus

# The IFSF typical transitions, written out independently of the module's table.
EXPECTED_TRANSITIONS: dict[tuple[FPState, FPEvent], FPState] = {
    (S.INOPERATIVE, E.RECOVER): S.CLOSED,
    (S.CLOSED, E.OPEN): S.IDLE,
    (S.IDLE, E.CLOSE): S.CLOSED,
    (S.CALLING, E.CLOSE): S.CLOSED,
    (S.IDLE, E.NOZZLE_LIFTED): S.CALLING,
    (S.CALLING, E.NOZZLE_HUNG): S.IDLE,
    (S.IDLE, E.AUTHORIZE): S.AUTHORISED,
    (S.CALLING, E.AUTHORIZE): S.STARTED,
    (S.AUTHORISED, E.NOZZLE_LIFTED): S.STARTED,
    (S.STARTED, E.NOZZLE_HUNG): S.IDLE,
    (S.STARTED, E.FLOW_STARTED): S.FUELLING,
    (S.STARTED, E.SUSPEND): S.SUSPENDED_STARTED,
    (S.FUELLING, E.SUSPEND): S.SUSPENDED_FUELLING,
    (S.SUSPENDED_STARTED, E.RESUME): S.STARTED,
    (S.SUSPENDED_FUELLING, E.RESUME): S.FUELLING,
    (S.FUELLING, E.SALE_ENDED): S.IDLE,
    (S.SUSPENDED_FUELLING, E.SALE_ENDED): S.IDLE,
    (S.AUTHORISED, E.TERMINATE): S.IDLE,
    (S.STARTED, E.TERMINATE): S.IDLE,
    (S.SUSPENDED_STARTED, E.TERMINATE): S.IDLE,
    (S.SUSPENDED_FUELLING, E.TERMINATE): S.IDLE,
    (S.AUTHORISED, E.AUTH_TIMEOUT): S.IDLE,
    (S.STARTED, E.AUTH_TIMEOUT): S.IDLE,
    **{(state, E.FAULT): S.INOPERATIVE for state in FPState if state != S.INOPERATIVE},
}

LEGAL = sorted(TRANSITIONS.items(), key=lambda item: (item[0][0], item[0][1].value))
ILLEGAL = [(s, e) for s in FPState for e in FPEvent if (s, e) not in TRANSITIONS]

PAYABLE = {
    (S.FUELLING, E.SALE_ENDED),
    (S.SUSPENDED_FUELLING, E.SALE_ENDED),
    (S.SUSPENDED_FUELLING, E.TERMINATE),
}
ZERO_DELIVERY = {
    (S.AUTHORISED, E.TERMINATE),
    (S.STARTED, E.TERMINATE),
    (S.SUSPENDED_STARTED, E.TERMINATE),
    (S.AUTHORISED, E.AUTH_TIMEOUT),
    (S.STARTED, E.AUTH_TIMEOUT),
    (S.STARTED, E.NOZZLE_HUNG),
}

STATUSES: list[DispenserStatus | None] = [None, *DispenserStatus]
ALL_OBSERVATIONS = list(itertools.product(FPState, STATUSES, (False, True)))


def _id(value: object) -> str:
    if isinstance(value, FPState | FPEvent | DispenserStatus):
        return value.name
    if value is None:
        return "offline"
    if isinstance(value, bool):
        return "out" if value else "in"
    if isinstance(value, tuple):
        return "-".join(map(_id, value))
    return str(value)


# ---------------------------------------------------------------------------
# The transition table
# ---------------------------------------------------------------------------
def test_table_is_exactly_the_ifsf_transitions() -> None:
    assert dict(TRANSITIONS) == EXPECTED_TRANSITIONS
    assert len(TRANSITIONS) == 31
    assert len(ILLEGAL) == len(FPState) * len(FPEvent) - 31


def test_ifsf_codes() -> None:
    assert [int(s) for s in FPState] == list(range(1, 10))
    assert FPState(8) is S.FUELLING


@pytest.mark.parametrize(("pair", "target"), LEGAL, ids=_id)
def test_legal_pair_reaches_table_target(pair: tuple[FPState, FPEvent], target: FPState) -> None:
    state, event = pair
    fp = FuellingPoint(7, state, now=10.0)
    assert fp.can(event)

    transition = fp.handle(event, 12.5)

    assert transition == Transition(pump=7, old=state, new=target, event=event, at=12.5)
    assert not transition.is_resync
    assert fp.state is target
    assert fp.since == 12.5


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=_id)
def test_illegal_pair_raises_and_leaves_point_unchanged(state: FPState, event: FPEvent) -> None:
    fp = FuellingPoint(3, state, now=10.0)
    assert not fp.can(event)

    with pytest.raises(IllegalTransition) as caught:
        fp.handle(event, 20.0)

    assert caught.value.state is state
    assert caught.value.event is event
    assert caught.value.device == "fp3"
    assert caught.value.code == "illegal_transition"
    assert isinstance(caught.value, EdgectlError)
    assert fp.state is state
    assert fp.since == 10.0


@pytest.mark.parametrize(("pair", "target"), LEGAL, ids=_id)
def test_sale_outcome_flags(pair: tuple[FPState, FPEvent], target: FPState) -> None:
    transition = FuellingPoint(1, pair[0]).handle(pair[1], 1.0)
    assert transition.leaves_payable_sale == (pair in PAYABLE)
    assert transition.zero_delivery == (pair in ZERO_DELIVERY)


def test_new_point_defaults_to_inoperative() -> None:
    fp = FuellingPoint(4)
    assert (fp.pump, fp.state, fp.since) == (4, S.INOPERATIVE, 0.0)
    assert "pump=4" in repr(fp)


def test_error_message_names_state_and_event() -> None:
    with pytest.raises(IllegalTransition, match="event FLOW_STARTED is not allowed in state IDLE"):
        FuellingPoint(1, S.IDLE).handle(E.FLOW_STARTED, 1.0)


# ---------------------------------------------------------------------------
# Legal paths, start to end
# ---------------------------------------------------------------------------
PATHS: dict[str, tuple[FPState, list[FPEvent], list[FPState]]] = {
    "start-up": (S.INOPERATIVE, [E.RECOVER, E.OPEN], [S.CLOSED, S.IDLE]),
    "prepay sale": (
        S.IDLE,
        [E.AUTHORIZE, E.NOZZLE_LIFTED, E.FLOW_STARTED, E.SALE_ENDED],
        [S.AUTHORISED, S.STARTED, S.FUELLING, S.IDLE],
    ),
    "call then authorize, suspend during flow": (
        S.IDLE,
        [E.NOZZLE_LIFTED, E.AUTHORIZE, E.FLOW_STARTED, E.SUSPEND, E.RESUME, E.SALE_ENDED],
        [S.CALLING, S.STARTED, S.FUELLING, S.SUSPENDED_FUELLING, S.FUELLING, S.IDLE],
    ),
    "walk-away": (S.IDLE, [E.AUTHORIZE, E.AUTH_TIMEOUT], [S.AUTHORISED, S.IDLE]),
    "lifted, no flow, timed out": (
        S.IDLE,
        [E.AUTHORIZE, E.NOZZLE_LIFTED, E.AUTH_TIMEOUT],
        [S.AUTHORISED, S.STARTED, S.IDLE],
    ),
    "lifted and hung without flow": (
        S.IDLE,
        [E.AUTHORIZE, E.NOZZLE_LIFTED, E.NOZZLE_HUNG],
        [S.AUTHORISED, S.STARTED, S.IDLE],
    ),
    "call and give up": (S.IDLE, [E.NOZZLE_LIFTED, E.NOZZLE_HUNG], [S.CALLING, S.IDLE]),
    "authorisation withdrawn": (S.IDLE, [E.AUTHORIZE, E.TERMINATE], [S.AUTHORISED, S.IDLE]),
    "suspend before flow, then fill": (
        S.IDLE,
        [E.AUTHORIZE, E.NOZZLE_LIFTED, E.SUSPEND, E.RESUME, E.FLOW_STARTED, E.SALE_ENDED],
        [S.AUTHORISED, S.STARTED, S.SUSPENDED_STARTED, S.STARTED, S.FUELLING, S.IDLE],
    ),
    "stopped while suspended before flow": (
        S.CALLING,
        [E.AUTHORIZE, E.SUSPEND, E.TERMINATE],
        [S.STARTED, S.SUSPENDED_STARTED, S.IDLE],
    ),
    "stopped while suspended after flow": (
        S.CALLING,
        [E.AUTHORIZE, E.FLOW_STARTED, E.SUSPEND, E.TERMINATE],
        [S.STARTED, S.FUELLING, S.SUSPENDED_FUELLING, S.IDLE],
    ),
    "sale ended while suspended": (
        S.STARTED,
        [E.FLOW_STARTED, E.SUSPEND, E.SALE_ENDED],
        [S.FUELLING, S.SUSPENDED_FUELLING, S.IDLE],
    ),
    "close and reopen": (S.IDLE, [E.CLOSE, E.OPEN], [S.CLOSED, S.IDLE]),
    "closed while calling": (S.IDLE, [E.NOZZLE_LIFTED, E.CLOSE], [S.CALLING, S.CLOSED]),
    "fault mid-sale and recovery": (
        S.FUELLING,
        [E.FAULT, E.RECOVER, E.OPEN],
        [S.INOPERATIVE, S.CLOSED, S.IDLE],
    ),
}


@pytest.mark.parametrize(("start", "events", "states"), PATHS.values(), ids=PATHS.keys())
def test_walk_legal_path(start: FPState, events: list[FPEvent], states: list[FPState]) -> None:
    fp = FuellingPoint(2, start)
    previous = start
    for tick, (event, expected) in enumerate(zip(events, states, strict=True), start=1):
        transition = fp.handle(event, float(tick))
        assert (transition.old, transition.event, transition.new) == (previous, event, expected)
        assert (fp.state, fp.since) == (expected, float(tick))
        previous = expected


def test_prepay_sale_outcome_is_payable_once() -> None:
    fp = FuellingPoint(1, S.IDLE)
    outcomes = [
        fp.handle(event, 1.0).leaves_payable_sale
        for event in (E.AUTHORIZE, E.NOZZLE_LIFTED, E.FLOW_STARTED, E.SALE_ENDED)
    ]
    assert outcomes == [False, False, False, True]


@pytest.mark.parametrize("state", [s for s in FPState if s != S.INOPERATIVE], ids=_id)
def test_fault_from_every_usable_state(state: FPState) -> None:
    fp = FuellingPoint(5, state, now=1.0)
    transition = fp.handle(E.FAULT, 2.0)
    assert (transition.old, transition.new) == (state, S.INOPERATIVE)
    # A fault is never a sale outcome: the station reads the pump after recovery.
    assert not transition.leaves_payable_sale
    assert not transition.zero_delivery
    assert fp.handle(E.RECOVER, 3.0).new is S.CLOSED


# ---------------------------------------------------------------------------
# Dispenser observations
# ---------------------------------------------------------------------------
# Rows written out by hand from the brief and the documented decisions.
OBSERVATION_ROWS: list[tuple[FPState, DispenserStatus | None, bool, tuple[FPEvent, ...]]] = [
    # offline / not programmed
    (S.INOPERATIVE, None, False, ()),
    (S.INOPERATIVE, D.NOT_PROGRAMMED, True, ()),
    (S.IDLE, None, False, (E.FAULT,)),
    (S.FUELLING, None, True, (E.FAULT,)),
    (S.CLOSED, D.NOT_PROGRAMMED, False, (E.FAULT,)),
    (S.SUSPENDED_STARTED, D.NOT_PROGRAMMED, True, (E.FAULT,)),
    # switched off
    (S.INOPERATIVE, D.SWITCHED_OFF, False, (E.RECOVER,)),
    (S.CLOSED, D.SWITCHED_OFF, True, ()),
    (S.IDLE, D.SWITCHED_OFF, False, (E.CLOSE,)),
    (S.CALLING, D.SWITCHED_OFF, True, (E.CLOSE,)),
    (S.AUTHORISED, D.SWITCHED_OFF, False, (E.TERMINATE, E.CLOSE)),
    (S.STARTED, D.SWITCHED_OFF, True, (E.TERMINATE, E.CLOSE)),
    (S.SUSPENDED_STARTED, D.SWITCHED_OFF, True, (E.TERMINATE, E.CLOSE)),
    (S.FUELLING, D.SWITCHED_OFF, True, (E.SALE_ENDED, E.CLOSE)),
    (S.SUSPENDED_FUELLING, D.SWITCHED_OFF, False, (E.SALE_ENDED, E.CLOSE)),
    # reset
    (S.INOPERATIVE, D.RESET, False, (E.RECOVER, E.OPEN)),
    (S.INOPERATIVE, D.RESET, True, (E.RECOVER, E.OPEN, E.NOZZLE_LIFTED)),
    (S.CLOSED, D.RESET, False, (E.OPEN,)),
    (S.CLOSED, D.RESET, True, (E.OPEN, E.NOZZLE_LIFTED)),
    (S.IDLE, D.RESET, False, ()),
    (S.IDLE, D.RESET, True, (E.NOZZLE_LIFTED,)),
    (S.CALLING, D.RESET, False, (E.NOZZLE_HUNG,)),
    (S.CALLING, D.RESET, True, ()),
    (S.AUTHORISED, D.RESET, False, (E.TERMINATE,)),
    (S.AUTHORISED, D.RESET, True, (E.TERMINATE, E.NOZZLE_LIFTED)),
    (S.STARTED, D.RESET, False, (E.TERMINATE,)),
    (S.STARTED, D.RESET, True, (E.TERMINATE, E.NOZZLE_LIFTED)),
    (S.SUSPENDED_STARTED, D.RESET, False, (E.TERMINATE,)),
    (S.SUSPENDED_STARTED, D.RESET, True, (E.TERMINATE, E.NOZZLE_LIFTED)),
    (S.FUELLING, D.RESET, False, (E.SALE_ENDED,)),
    (S.FUELLING, D.RESET, True, (E.SALE_ENDED, E.NOZZLE_LIFTED)),
    (S.SUSPENDED_FUELLING, D.RESET, False, (E.SALE_ENDED,)),
    (S.SUSPENDED_FUELLING, D.RESET, True, (E.SALE_ENDED, E.NOZZLE_LIFTED)),
    # authorized
    (S.IDLE, D.AUTHORIZED, False, (E.AUTHORIZE,)),
    (S.IDLE, D.AUTHORIZED, True, (E.AUTHORIZE, E.NOZZLE_LIFTED)),
    (S.CALLING, D.AUTHORIZED, True, (E.AUTHORIZE,)),
    (S.CALLING, D.AUTHORIZED, False, (E.NOZZLE_HUNG, E.AUTHORIZE)),
    (S.AUTHORISED, D.AUTHORIZED, False, ()),
    (S.AUTHORISED, D.AUTHORIZED, True, (E.NOZZLE_LIFTED,)),
    (S.STARTED, D.AUTHORIZED, True, ()),
    (S.STARTED, D.AUTHORIZED, False, ()),  # lifted and hung: DART stays authorised
    (S.SUSPENDED_STARTED, D.AUTHORIZED, True, (E.RESUME,)),
    (S.SUSPENDED_STARTED, D.AUTHORIZED, False, (E.RESUME,)),
    # filling
    (S.STARTED, D.FILLING, True, (E.FLOW_STARTED,)),
    (S.AUTHORISED, D.FILLING, True, (E.NOZZLE_LIFTED, E.FLOW_STARTED)),
    (S.AUTHORISED, D.FILLING, False, (E.NOZZLE_LIFTED, E.FLOW_STARTED)),  # stale nozzle report
    (S.SUSPENDED_FUELLING, D.FILLING, True, (E.RESUME,)),
    (S.SUSPENDED_STARTED, D.FILLING, True, (E.RESUME, E.FLOW_STARTED)),
    (S.FUELLING, D.FILLING, True, ()),
    # filling completed / max reached
    (S.FUELLING, D.FILLING_COMPLETED, False, (E.SALE_ENDED,)),
    (S.FUELLING, D.MAX_REACHED, True, (E.SALE_ENDED,)),
    (S.SUSPENDED_FUELLING, D.FILLING_COMPLETED, False, (E.SALE_ENDED,)),
    (S.SUSPENDED_FUELLING, D.MAX_REACHED, False, (E.SALE_ENDED,)),
    (S.AUTHORISED, D.FILLING_COMPLETED, False, (E.TERMINATE,)),
    (S.STARTED, D.FILLING_COMPLETED, False, (E.TERMINATE,)),
    (S.STARTED, D.MAX_REACHED, True, (E.TERMINATE,)),
    (S.SUSPENDED_STARTED, D.FILLING_COMPLETED, True, (E.TERMINATE,)),
    (S.IDLE, D.FILLING_COMPLETED, False, ()),
    (S.IDLE, D.FILLING_COMPLETED, True, ()),
    (S.CALLING, D.MAX_REACHED, True, ()),
    (S.CALLING, D.FILLING_COMPLETED, False, ()),
    (S.INOPERATIVE, D.FILLING_COMPLETED, False, (E.RECOVER, E.OPEN)),
    (S.CLOSED, D.MAX_REACHED, True, (E.OPEN,)),
    # suspended
    (S.FUELLING, D.SUSPENDED, True, (E.SUSPEND,)),
    (S.STARTED, D.SUSPENDED, True, (E.SUSPEND,)),
    (S.AUTHORISED, D.SUSPENDED, True, (E.NOZZLE_LIFTED, E.SUSPEND)),
    (S.SUSPENDED_STARTED, D.SUSPENDED, False, ()),
    (S.SUSPENDED_FUELLING, D.SUSPENDED, True, ()),
]

# Everything the table must refuse to explain.
UNEXPLAINED = {
    *itertools.product(
        (S.INOPERATIVE, S.CLOSED, S.FUELLING, S.SUSPENDED_FUELLING), (D.AUTHORIZED,), (False, True)
    ),
    # flow we did not authorise
    *itertools.product((S.INOPERATIVE, S.CLOSED, S.IDLE, S.CALLING), (D.FILLING,), (False, True)),
    *itertools.product((S.INOPERATIVE, S.CLOSED, S.IDLE, S.CALLING), (D.SUSPENDED,), (False, True)),
    (S.AUTHORISED, D.SUSPENDED, False),
}

# The states that agree with what the pump reports (status, nozzle out).
AGREES: dict[tuple[DispenserStatus | None, bool], set[FPState]] = {}
for _nozzle in (False, True):
    AGREES[None, _nozzle] = {S.INOPERATIVE}
    AGREES[D.NOT_PROGRAMMED, _nozzle] = {S.INOPERATIVE}
    AGREES[D.SWITCHED_OFF, _nozzle] = {S.CLOSED}
    AGREES[D.FILLING, _nozzle] = {S.FUELLING}
    AGREES[D.FILLING_COMPLETED, _nozzle] = {S.IDLE, S.CALLING}
    AGREES[D.MAX_REACHED, _nozzle] = {S.IDLE, S.CALLING}
    AGREES[D.SUSPENDED, _nozzle] = {S.SUSPENDED_STARTED, S.SUSPENDED_FUELLING}
AGREES[D.RESET, False] = {S.IDLE}
AGREES[D.RESET, True] = {S.CALLING}
AGREES[D.AUTHORIZED, False] = {S.AUTHORISED, S.STARTED}
AGREES[D.AUTHORIZED, True] = {S.STARTED}


@pytest.mark.parametrize(("state", "status", "nozzle_out", "events"), OBSERVATION_ROWS, ids=_id)
def test_events_for_row(
    state: FPState,
    status: DispenserStatus | None,
    nozzle_out: bool,
    events: tuple[FPEvent, ...],
) -> None:
    assert events_for(state, status, nozzle_out) == events


@pytest.mark.parametrize(("state", "status", "nozzle_out"), sorted(UNEXPLAINED, key=str), ids=_id)
def test_events_for_refuses_unexplained(
    state: FPState, status: DispenserStatus, nozzle_out: bool
) -> None:
    with pytest.raises(IllegalTransition) as caught:
        events_for(state, status, nozzle_out)
    assert caught.value.state is state
    assert caught.value.event == Observation(status, nozzle_out)


def test_observation_table_covers_everything_else() -> None:
    assert len(ALL_OBSERVATIONS) == 162
    assert set(OBSERVATIONS) == set(ALL_OBSERVATIONS) - UNEXPLAINED


@pytest.mark.parametrize(("state", "status", "nozzle_out"), ALL_OBSERVATIONS, ids=_id)
def test_follow_agrees_with_pump_and_is_idempotent(
    state: FPState, status: DispenserStatus | None, nozzle_out: bool
) -> None:
    fp = FuellingPoint(9, state, now=1.0)
    if (state, status, nozzle_out) in UNEXPLAINED:
        with pytest.raises(IllegalTransition):
            fp.follow(status, nozzle_out, 2.0)
        assert (fp.state, fp.since) == (state, 1.0)
        return

    transitions = fp.follow(status, nozzle_out, 2.0)

    assert [t.event for t in transitions] == list(events_for(state, status, nozzle_out))
    assert fp.state in AGREES[status, nozzle_out]
    assert all(t.at == 2.0 and t.pump == 9 for t in transitions)
    assert [t.old for t in transitions[1:]] == [t.new for t in transitions[:-1]]
    assert fp.since == (2.0 if transitions else 1.0)
    # A second identical report changes nothing.
    assert fp.follow(status, nozzle_out, 3.0) == []
    assert fp.since == (2.0 if transitions else 1.0)


@pytest.mark.parametrize("state", [S.IDLE, S.CALLING], ids=_id)
@pytest.mark.parametrize("nozzle_out", [False, True], ids=_id)
def test_unauthorised_flow_is_refused(state: FPState, nozzle_out: bool) -> None:
    fp = FuellingPoint(6, state, now=1.0)
    with pytest.raises(IllegalTransition) as caught:
        fp.follow(D.FILLING, nozzle_out, 2.0)
    observed = caught.value.event
    assert isinstance(observed, Observation)
    assert observed.status is D.FILLING
    assert caught.value.device == "fp6"
    assert "filling, nozzle" in str(caught.value)
    assert (fp.state, fp.since) == (state, 1.0)


def test_follow_missed_intermediate_status() -> None:
    fp = FuellingPoint(2, S.AUTHORISED, now=1.0)
    transitions = fp.follow(D.FILLING, True, 5.0)
    assert transitions == [
        Transition(2, S.AUTHORISED, S.STARTED, E.NOZZLE_LIFTED, 5.0),
        Transition(2, S.STARTED, S.FUELLING, E.FLOW_STARTED, 5.0),
    ]
    assert (fp.state, fp.since) == (S.FUELLING, 5.0)


def test_follow_offline_mid_sale_faults() -> None:
    fp = FuellingPoint(2, S.FUELLING)
    assert fp.follow(None, True, 1.0) == [Transition(2, S.FUELLING, S.INOPERATIVE, E.FAULT, 1.0)]
    assert fp.follow(None, False, 2.0) == []


def test_follow_lift_and_hang_without_flow_keeps_authorisation() -> None:
    fp = FuellingPoint(1, S.AUTHORISED)
    assert [t.new for t in fp.follow(D.AUTHORIZED, True, 1.0)] == [S.STARTED]
    assert fp.follow(D.AUTHORIZED, False, 2.0) == []
    assert fp.state is S.STARTED
    # The pump drops the authorisation itself: only now is it a zero delivery.
    (ended,) = fp.follow(D.FILLING_COMPLETED, False, 3.0)
    assert ended.event is E.TERMINATE and ended.zero_delivery


def test_follow_stopped_while_suspended_after_flow_is_payable() -> None:
    fp = FuellingPoint(1, S.SUSPENDED_FUELLING)
    (ended,) = fp.follow(D.FILLING_COMPLETED, True, 1.0)
    assert ended.event is E.SALE_ENDED and ended.leaves_payable_sale


def test_follow_a_dart_session() -> None:
    """Start-up, a call answered by the station, a suspension, the end and the next call."""
    fp = FuellingPoint(0x50)
    reports: list[tuple[DispenserStatus | None, bool]] = [
        (D.SWITCHED_OFF, False),
        (D.RESET, False),
        (D.RESET, False),
        (D.RESET, True),
        (D.AUTHORIZED, True),
        (D.FILLING, True),
        (D.SUSPENDED, True),
        (D.FILLING, True),
        (D.FILLING_COMPLETED, True),
        (D.FILLING_COMPLETED, False),
        (D.RESET, False),
        (D.RESET, True),
    ]
    seen: list[Transition] = []
    for tick, (status, nozzle_out) in enumerate(reports):
        seen += fp.follow(status, nozzle_out, float(tick))

    assert [(t.event, t.new) for t in seen] == [
        (E.RECOVER, S.CLOSED),
        (E.OPEN, S.IDLE),
        (E.NOZZLE_LIFTED, S.CALLING),
        (E.AUTHORIZE, S.STARTED),
        (E.FLOW_STARTED, S.FUELLING),
        (E.SUSPEND, S.SUSPENDED_FUELLING),
        (E.RESUME, S.FUELLING),
        (E.SALE_ENDED, S.IDLE),
        (E.NOZZLE_LIFTED, S.CALLING),
    ]
    assert [t.leaves_payable_sale for t in seen].count(True) == 1
    assert (fp.state, fp.since) == (S.CALLING, 11.0)


def test_observation_str() -> None:
    assert str(Observation(None, False)) == "offline, nozzle in"
    assert str(Observation(D.MAX_REACHED, True)) == "max_reached, nozzle out"


# ---------------------------------------------------------------------------
# Resync
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(("old", "new"), list(itertools.product(FPState, FPState)), ids=_id)
def test_resync(old: FPState, new: FPState) -> None:
    fp = FuellingPoint(8, old, now=1.0)

    transition = fp.resync(new, 4.0)

    if old is new:
        assert transition is None
        assert fp.since == 1.0
    else:
        assert transition == Transition(8, old, new, None, 4.0)
        assert transition.is_resync
        assert not transition.leaves_payable_sale
        assert not transition.zero_delivery
        assert fp.since == 4.0
    assert fp.state is new


def test_resync_after_unexplained_report_lets_the_point_follow_again() -> None:
    fp = FuellingPoint(1, S.IDLE)
    with pytest.raises(IllegalTransition):
        fp.follow(D.FILLING, True, 1.0)
    assert fp.resync(S.FUELLING, 1.0) is not None
    (ended,) = fp.follow(D.FILLING_COMPLETED, False, 2.0)
    assert ended.leaves_payable_sale
