"""The authorization/order lifecycle table: every legal pair, every illegal pair, every path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgectl.errors import EdgectlError, IllegalAuthorizationTransition
from edgectl.forecourt.authorization import (
    FINAL,
    ORDER_REASON,
    ORDER_STATUS,
    TRANSITIONS,
    AuthorizationEvent,
    advance,
    can,
)
from edgectl.forecourt.sale import AuthorizationState

S = AuthorizationState
E = AuthorizationEvent

# The lifecycle, written out independently of the module's table.
EXPECTED: dict[tuple[AuthorizationState, AuthorizationEvent], AuthorizationState] = {
    (S.REQUESTED, E.CONFIRMED): S.AUTHORIZED,
    (S.REQUESTED, E.REFUSED): S.FAILED,
    (S.REQUESTED, E.FLOW_STARTED): S.FUELLING,
    (S.AUTHORIZED, E.FLOW_STARTED): S.FUELLING,
    **{(state, E.SALE_RECORDED): S.COMPLETED for state in (S.REQUESTED, S.AUTHORIZED, S.FUELLING)},
    **{(state, E.ZERO_FILL): S.NO_SALE for state in (S.REQUESTED, S.AUTHORIZED, S.FUELLING)},
    (S.AUTHORIZED, E.PUMP_DROPPED): S.NO_SALE,
    (S.FUELLING, E.PUMP_DROPPED): S.NO_SALE,
    (S.REQUESTED, E.TIMED_OUT): S.EXPIRED,
    (S.AUTHORIZED, E.TIMED_OUT): S.EXPIRED,
    (S.REQUESTED, E.CANCELLED): S.CANCELLED,
    (S.AUTHORIZED, E.CANCELLED): S.CANCELLED,
}
OPEN = (S.REQUESTED, S.AUTHORIZED, S.FUELLING)

LEGAL = sorted(TRANSITIONS.items(), key=lambda item: (item[0][0].value, item[0][1].value))
ILLEGAL = [
    (s, e) for s in AuthorizationState for e in AuthorizationEvent if (s, e) not in TRANSITIONS
]


def _id(value: object) -> str:
    if isinstance(value, AuthorizationState | AuthorizationEvent):
        return value.name
    if isinstance(value, tuple):
        return "-".join(map(_id, value))
    return str(value)


def test_table_is_exactly_the_lifecycle() -> None:
    assert dict(TRANSITIONS) == EXPECTED
    assert len(ILLEGAL) == len(AuthorizationState) * len(AuthorizationEvent) - len(EXPECTED)


@pytest.mark.parametrize(("pair", "target"), LEGAL, ids=_id)
def test_legal_pair_reaches_its_target(
    pair: tuple[AuthorizationState, AuthorizationEvent], target: AuthorizationState
) -> None:
    state, event = pair
    assert can(state, event)
    assert advance(state, event, authorization=7) is target


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=_id)
def test_illegal_pair_raises_a_typed_error(
    state: AuthorizationState, event: AuthorizationEvent
) -> None:
    assert not can(state, event)
    with pytest.raises(IllegalAuthorizationTransition) as caught:
        advance(state, event, authorization=7)
    assert caught.value.state is state
    assert caught.value.event is event
    assert caught.value.device == "authorization 7"
    assert caught.value.code == "illegal_authorization_transition"
    assert isinstance(caught.value, EdgectlError)
    assert f"{event.name} is not allowed in state {state.name}" in str(caught.value)


def test_ended_states_are_final_and_open_ones_are_not() -> None:
    assert {s for s in AuthorizationState if s.is_open} == set(OPEN)
    assert set(AuthorizationState) - set(OPEN) == FINAL
    for state in FINAL:
        assert [e for e in AuthorizationEvent if can(state, e)] == []
    for state in OPEN:
        assert any(TRANSITIONS.get((state, e)) in FINAL for e in AuthorizationEvent)


def test_once_fuel_flows_it_ends_with_the_sale_or_without_fuel_only() -> None:
    """docs/mqtt.md: once fuel has flowed an order ends `completed`, or (the pump read back
    0 litres, or dropped it) released; never expired, cancelled or failed."""
    ends = {TRANSITIONS[(S.FUELLING, e)] for e in AuthorizationEvent if can(S.FUELLING, e)}
    assert ends == {S.COMPLETED, S.NO_SALE}
    for event in (E.TIMED_OUT, E.CANCELLED, E.REFUSED, E.CONFIRMED):
        assert not can(S.FUELLING, event)


def test_only_an_unconfirmed_authorization_is_refused_or_kept_when_the_pump_drops_it() -> None:
    assert [s for s in AuthorizationState if can(s, E.REFUSED)] == [S.REQUESTED]
    assert not can(S.REQUESTED, E.PUMP_DROPPED)


def _paths(state: AuthorizationState) -> list[list[tuple[AuthorizationEvent, AuthorizationState]]]:
    """Every legal walk from `state` to a final state (the table has no cycle)."""
    if state in FINAL:
        return [[]]
    walks = []
    for (source, event), target in TRANSITIONS.items():
        if source is state:
            walks += [[(event, target), *rest] for rest in _paths(target)]
    return walks


PATHS = _paths(S.REQUESTED)


def test_every_state_and_every_pair_lies_on_a_path_from_the_record() -> None:
    steps = {(s, e) for walk in PATHS for s, e in _pairs(walk)}
    assert steps == set(TRANSITIONS)
    assert len(PATHS) == 16  # REQUESTED: 5 ends, 3 through FUELLING, 8 through AUTHORIZED


def _pairs(
    walk: list[tuple[AuthorizationEvent, AuthorizationState]],
) -> list[tuple[AuthorizationState, AuthorizationEvent]]:
    state, pairs = S.REQUESTED, []
    for event, target in walk:
        pairs.append((state, event))
        state = target
    return pairs


@pytest.mark.parametrize("walk", PATHS, ids=lambda w: "-".join(e.name for e, _ in w))
def test_every_legal_path_ends_final_with_one_order_story(
    walk: list[tuple[AuthorizationEvent, AuthorizationState]],
) -> None:
    """Walked step by step: each step is legal, the walk ends in a final state, and the
    order steps it sends (evt/order) end with exactly one final status and its reason."""
    state = S.REQUESTED
    order_steps = ["accepted"]  # the order is recorded with its authorization
    for event, target in walk:
        state = advance(state, event)
        assert state is target
        # COMPLETED is sent by the sale's own commit, with the sale.
        order_steps.append(ORDER_STATUS.get(state, "completed"))
    assert state in FINAL
    final = order_steps[-1]
    assert final in ("completed", "expired", "cancelled", "failed")
    assert all(step in ("accepted", "authorized", "fuelling") for step in order_steps[:-1])
    assert (state in ORDER_REASON) == (state is not S.COMPLETED)


def test_order_tables_cover_the_states_that_send_a_step() -> None:
    assert set(ORDER_STATUS) == set(AuthorizationState) - {S.REQUESTED, S.COMPLETED}
    assert set(ORDER_REASON) == FINAL - {S.COMPLETED}


@given(st.lists(st.sampled_from(list(AuthorizationEvent)), max_size=12))
def test_any_event_sequence_either_follows_the_table_or_is_refused(
    events: list[AuthorizationEvent],
) -> None:
    state = S.REQUESTED
    for event in events:
        if (state, event) in TRANSITIONS:
            new = advance(state, event)
            assert new is TRANSITIONS[(state, event)]
            state = new
        else:
            with pytest.raises(IllegalAuthorizationTransition):
                advance(state, event)
        assert state.is_open or state in FINAL
    if state in FINAL:
        assert all(not can(state, e) for e in AuthorizationEvent)
