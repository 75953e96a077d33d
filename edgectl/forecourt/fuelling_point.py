"""The fuelling-point state machine (IFSF states) and how dispenser observations drive it.

Pure domain: no I/O, no clock of its own (every time is passed in as `now`), no asyncio.

Two tables hold all the rules, so each can be read and tested row by row:

* `TRANSITIONS` maps (state, event) to the next state; a pair that is not in it is illegal and
  raises `IllegalTransition`, leaving the point unchanged.
* `OBSERVATIONS` maps what a driver reports — (current state, `DispenserStatus` or None when the
  pump is offline, nozzle out) — to the events that explain it. An observation that is not in it
  cannot be explained and raises `IllegalTransition` too; the station raises an alarm and may
  `resync` the point to what the pump says.

Decisions worth knowing (each is pinned by a test):

* TERMINATE in SUSPENDED_FUELLING (9→3) ends the sale like SALE_ENDED: product has flowed, so
  the partial sale is **payable**. `Transition.leaves_payable_sale` is true for 8/9→3 on
  SALE_ENDED and 9→3 on TERMINATE; `Transition.zero_delivery` is true when an authorisation ends
  without flow (5/6/7→3), so the cloud can release the payment.
* A FAULT while product flowed leaves neither flag: the sale is unknown until the station reads
  the filling information back from the pump after recovery.
* Wayne DART pumps keep status AUTHORIZED when a customer lifts and hangs the nozzle without
  flow; the authorisation is still live. So STARTED stays STARTED on (AUTHORIZED, nozzle in):
  recording a zero sale there would let the cloud release a payment for a pump that can still
  deliver. The zero sale is recorded when the pump itself drops the authorisation (it reports
  RESET or FILLING_COMPLETED → TERMINATE) or the station's timer fires (AUTH_TIMEOUT).
* Product flowing that the table cannot explain (FILLING seen in INOPERATIVE, CLOSED, IDLE or
  CALLING) is flow without our authorisation: the error's `event` is an `Observation` whose
  status is FILLING, and the station treats it as an unauthorised-dispensing alarm.
* `resync` forces the point to an observed state and returns a `Transition` whose `event` is
  None (`is_resync`); it never counts as a sale outcome. The station logs and alarms on it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from drivers.base import DispenserStatus
from edgectl.errors import IllegalTransition


class FPState(enum.IntEnum):
    """IFSF fuelling-point states; each value is the IFSF code."""

    INOPERATIVE = 1  # not usable: error, offline, not configured
    CLOSED = 2  # closed by the site, will not serve
    IDLE = 3  # ready, nozzle hung
    CALLING = 4  # nozzle lifted, waiting for authorisation
    AUTHORISED = 5  # released, nozzle not yet lifted
    STARTED = 6  # authorised and nozzle lifted, no flow yet
    SUSPENDED_STARTED = 7  # suspended before flow
    FUELLING = 8  # product flowing
    SUSPENDED_FUELLING = 9  # flow suspended by command

    def __str__(self) -> str:
        return self.name


class FPEvent(enum.Enum):
    """Something that happened to a fuelling point, in the forecourt's words."""

    OPEN = "open"  # the site opens the point for service
    CLOSE = "close"  # the site closes it
    NOZZLE_LIFTED = "nozzle_lifted"
    NOZZLE_HUNG = "nozzle_hung"
    AUTHORIZE = "authorize"  # released for one sale
    FLOW_STARTED = "flow_started"
    SUSPEND = "suspend"
    RESUME = "resume"
    SALE_ENDED = "sale_ended"  # flow is over: the sale is payable
    TERMINATE = "terminate"  # the authorisation is withdrawn (stop, pump reset)
    AUTH_TIMEOUT = "auth_timeout"  # nobody took fuel in time
    FAULT = "fault"  # offline, not programmed, error
    RECOVER = "recover"  # usable again after a fault or at start-up

    def __str__(self) -> str:
        return self.name


_S = FPState
_E = FPEvent

TRANSITIONS: Final[Mapping[tuple[FPState, FPEvent], FPState]] = MappingProxyType(
    {
        # Start-up and recovery.
        (_S.INOPERATIVE, _E.RECOVER): _S.CLOSED,
        # The site opens and closes the point; only while no sale is under way.
        (_S.CLOSED, _E.OPEN): _S.IDLE,
        (_S.IDLE, _E.CLOSE): _S.CLOSED,
        (_S.CALLING, _E.CLOSE): _S.CLOSED,
        # The customer calls and gives up.
        (_S.IDLE, _E.NOZZLE_LIFTED): _S.CALLING,
        (_S.CALLING, _E.NOZZLE_HUNG): _S.IDLE,
        # Authorisation: prepaid with the nozzle hung, or answering a call.
        (_S.IDLE, _E.AUTHORIZE): _S.AUTHORISED,
        (_S.CALLING, _E.AUTHORIZE): _S.STARTED,
        (_S.AUTHORISED, _E.NOZZLE_LIFTED): _S.STARTED,
        # Lifted and hung without flow: a zero sale.
        (_S.STARTED, _E.NOZZLE_HUNG): _S.IDLE,
        (_S.STARTED, _E.FLOW_STARTED): _S.FUELLING,
        # Suspend and resume, before and during flow.
        (_S.STARTED, _E.SUSPEND): _S.SUSPENDED_STARTED,
        (_S.SUSPENDED_STARTED, _E.RESUME): _S.STARTED,
        (_S.FUELLING, _E.SUSPEND): _S.SUSPENDED_FUELLING,
        (_S.SUSPENDED_FUELLING, _E.RESUME): _S.FUELLING,
        # End of a sale with product delivered: payable.
        (_S.FUELLING, _E.SALE_ENDED): _S.IDLE,
        (_S.SUSPENDED_FUELLING, _E.SALE_ENDED): _S.IDLE,
        # Stopped while suspended after flow: the partial sale is still payable.
        (_S.SUSPENDED_FUELLING, _E.TERMINATE): _S.IDLE,
        # Authorisation withdrawn or expired before any flow: zero delivery.
        (_S.AUTHORISED, _E.TERMINATE): _S.IDLE,
        (_S.STARTED, _E.TERMINATE): _S.IDLE,
        (_S.SUSPENDED_STARTED, _E.TERMINATE): _S.IDLE,
        (_S.AUTHORISED, _E.AUTH_TIMEOUT): _S.IDLE,
        (_S.STARTED, _E.AUTH_TIMEOUT): _S.IDLE,
        # Any usable point can fail.
        (_S.CLOSED, _E.FAULT): _S.INOPERATIVE,
        (_S.IDLE, _E.FAULT): _S.INOPERATIVE,
        (_S.CALLING, _E.FAULT): _S.INOPERATIVE,
        (_S.AUTHORISED, _E.FAULT): _S.INOPERATIVE,
        (_S.STARTED, _E.FAULT): _S.INOPERATIVE,
        (_S.SUSPENDED_STARTED, _E.FAULT): _S.INOPERATIVE,
        (_S.FUELLING, _E.FAULT): _S.INOPERATIVE,
        (_S.SUSPENDED_FUELLING, _E.FAULT): _S.INOPERATIVE,
    }
)

_FLOWED: Final = frozenset({_S.FUELLING, _S.SUSPENDED_FUELLING})
_AUTHORISED_WITHOUT_FLOW: Final = frozenset({_S.AUTHORISED, _S.STARTED, _S.SUSPENDED_STARTED})


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of one fuelling point. `event` is None for a resync."""

    pump: int
    old: FPState
    new: FPState
    event: FPEvent | None
    at: float

    @property
    def is_resync(self) -> bool:
        """Forced to an observed state, not explained by any event: log it and alarm."""
        return self.event is None

    @property
    def leaves_payable_sale(self) -> bool:
        """Product flowed and the sale is over: the pump holds a payable sale."""
        return self.event is not None and self.old in _FLOWED and self.new == _S.IDLE

    @property
    def zero_delivery(self) -> bool:
        """An authorisation ended without flow: the cloud may release the payment."""
        return (
            self.event is not None and self.old in _AUTHORISED_WITHOUT_FLOW and self.new == _S.IDLE
        )


@dataclass(frozen=True, slots=True)
class Observation:
    """What a driver saw; the `event` of an IllegalTransition raised for an unexplained one."""

    status: DispenserStatus | None  # None: the pump is offline
    nozzle_out: bool

    def __str__(self) -> str:
        status = "offline" if self.status is None else self.status.value
        return f"{status}, nozzle {'out' if self.nozzle_out else 'in'}"


# ---------------------------------------------------------------------------
# Observations. Rows are (state, status, nozzle positions the row covers, events); the table
# is expanded to one key per nozzle position. Absent keys cannot be explained.
# ---------------------------------------------------------------------------
_D = DispenserStatus
_IN: Final = (False,)
_OUT: Final = (True,)
_EITHER: Final = (False, True)  # the status alone decides; the nozzle report may be stale

_Row = tuple[FPState, DispenserStatus | None, tuple[bool, ...], tuple[FPEvent, ...]]


def _sale_over_rows(status: DispenserStatus) -> list[_Row]:
    """FILLING_COMPLETED and MAX_REACHED: the pump ended the sale and waits for a reset.

    The nozzle does not matter: the pump will not serve again until it is reset, and a new call
    shows up as RESET with the nozzle out. IDLE and CALLING mean the end was already seen (or
    happened before a restart); the station reads the sale from the pump either way.
    """
    return [
        (_S.INOPERATIVE, status, _EITHER, (_E.RECOVER, _E.OPEN)),
        (_S.CLOSED, status, _EITHER, (_E.OPEN,)),
        (_S.IDLE, status, _EITHER, ()),
        (_S.CALLING, status, _EITHER, ()),
        (_S.AUTHORISED, status, _EITHER, (_E.TERMINATE,)),
        (_S.STARTED, status, _EITHER, (_E.TERMINATE,)),
        (_S.SUSPENDED_STARTED, status, _EITHER, (_E.TERMINATE,)),
        (_S.FUELLING, status, _EITHER, (_E.SALE_ENDED,)),
        (_S.SUSPENDED_FUELLING, status, _EITHER, (_E.SALE_ENDED,)),
    ]


def _unusable_rows(status: DispenserStatus | None) -> list[_Row]:
    """Offline (None) or NOT_PROGRAMMED: every usable point faults."""
    return [
        (state, status, _EITHER, () if state == _S.INOPERATIVE else (_E.FAULT,))
        for state in FPState
    ]


_OBSERVATION_ROWS: Final[tuple[_Row, ...]] = (
    *_unusable_rows(None),
    *_unusable_rows(_D.NOT_PROGRAMMED),
    # SWITCHED_OFF: the point is closed; a sale under way ends first.
    (_S.INOPERATIVE, _D.SWITCHED_OFF, _EITHER, (_E.RECOVER,)),
    (_S.CLOSED, _D.SWITCHED_OFF, _EITHER, ()),
    (_S.IDLE, _D.SWITCHED_OFF, _EITHER, (_E.CLOSE,)),
    (_S.CALLING, _D.SWITCHED_OFF, _EITHER, (_E.CLOSE,)),
    (_S.AUTHORISED, _D.SWITCHED_OFF, _EITHER, (_E.TERMINATE, _E.CLOSE)),
    (_S.STARTED, _D.SWITCHED_OFF, _EITHER, (_E.TERMINATE, _E.CLOSE)),
    (_S.SUSPENDED_STARTED, _D.SWITCHED_OFF, _EITHER, (_E.TERMINATE, _E.CLOSE)),
    (_S.FUELLING, _D.SWITCHED_OFF, _EITHER, (_E.SALE_ENDED, _E.CLOSE)),
    (_S.SUSPENDED_FUELLING, _D.SWITCHED_OFF, _EITHER, (_E.SALE_ENDED, _E.CLOSE)),
    # RESET: ready and not authorised; the nozzle tells IDLE from CALLING.
    (_S.INOPERATIVE, _D.RESET, _IN, (_E.RECOVER, _E.OPEN)),
    (_S.INOPERATIVE, _D.RESET, _OUT, (_E.RECOVER, _E.OPEN, _E.NOZZLE_LIFTED)),
    (_S.CLOSED, _D.RESET, _IN, (_E.OPEN,)),
    (_S.CLOSED, _D.RESET, _OUT, (_E.OPEN, _E.NOZZLE_LIFTED)),
    (_S.IDLE, _D.RESET, _IN, ()),
    (_S.IDLE, _D.RESET, _OUT, (_E.NOZZLE_LIFTED,)),
    (_S.CALLING, _D.RESET, _IN, (_E.NOZZLE_HUNG,)),
    (_S.CALLING, _D.RESET, _OUT, ()),
    # ...an authorisation without flow was withdrawn,
    (_S.AUTHORISED, _D.RESET, _IN, (_E.TERMINATE,)),
    (_S.AUTHORISED, _D.RESET, _OUT, (_E.TERMINATE, _E.NOZZLE_LIFTED)),
    (_S.STARTED, _D.RESET, _IN, (_E.TERMINATE,)),
    (_S.STARTED, _D.RESET, _OUT, (_E.TERMINATE, _E.NOZZLE_LIFTED)),
    (_S.SUSPENDED_STARTED, _D.RESET, _IN, (_E.TERMINATE,)),
    (_S.SUSPENDED_STARTED, _D.RESET, _OUT, (_E.TERMINATE, _E.NOZZLE_LIFTED)),
    # ...or the end of a sale with flow was missed between polls; the pump keeps its last
    # filling until the next authorisation, so the sale is still read and payable.
    (_S.FUELLING, _D.RESET, _IN, (_E.SALE_ENDED,)),
    (_S.FUELLING, _D.RESET, _OUT, (_E.SALE_ENDED, _E.NOZZLE_LIFTED)),
    (_S.SUSPENDED_FUELLING, _D.RESET, _IN, (_E.SALE_ENDED,)),
    (_S.SUSPENDED_FUELLING, _D.RESET, _OUT, (_E.SALE_ENDED, _E.NOZZLE_LIFTED)),
    # AUTHORIZED: released, no flow yet. Not explainable from INOPERATIVE or CLOSED (we did not
    # release it) nor after flow (DART reports FILLING / SUSPENDED / COMPLETED from there).
    (_S.IDLE, _D.AUTHORIZED, _IN, (_E.AUTHORIZE,)),
    (_S.IDLE, _D.AUTHORIZED, _OUT, (_E.AUTHORIZE, _E.NOZZLE_LIFTED)),
    # Hung up after calling, then released: authorised with the nozzle hung.
    (_S.CALLING, _D.AUTHORIZED, _IN, (_E.NOZZLE_HUNG, _E.AUTHORIZE)),
    (_S.CALLING, _D.AUTHORIZED, _OUT, (_E.AUTHORIZE,)),
    (_S.AUTHORISED, _D.AUTHORIZED, _IN, ()),
    (_S.AUTHORISED, _D.AUTHORIZED, _OUT, (_E.NOZZLE_LIFTED,)),
    # Lifted and hung without flow: DART stays authorised, so the point stays STARTED.
    (_S.STARTED, _D.AUTHORIZED, _EITHER, ()),
    (_S.SUSPENDED_STARTED, _D.AUTHORIZED, _EITHER, (_E.RESUME,)),
    # FILLING: product flows. Absent from INOPERATIVE, CLOSED, IDLE and CALLING on purpose:
    # that is flow we did not authorise.
    (_S.AUTHORISED, _D.FILLING, _EITHER, (_E.NOZZLE_LIFTED, _E.FLOW_STARTED)),
    (_S.STARTED, _D.FILLING, _EITHER, (_E.FLOW_STARTED,)),
    (_S.SUSPENDED_STARTED, _D.FILLING, _EITHER, (_E.RESUME, _E.FLOW_STARTED)),
    (_S.FUELLING, _D.FILLING, _EITHER, ()),
    (_S.SUSPENDED_FUELLING, _D.FILLING, _EITHER, (_E.RESUME,)),
    *_sale_over_rows(_D.FILLING_COMPLETED),
    *_sale_over_rows(_D.MAX_REACHED),
    # SUSPENDED: only a started or fuelling sale can be suspended.
    (_S.AUTHORISED, _D.SUSPENDED, _OUT, (_E.NOZZLE_LIFTED, _E.SUSPEND)),
    (_S.STARTED, _D.SUSPENDED, _EITHER, (_E.SUSPEND,)),
    (_S.SUSPENDED_STARTED, _D.SUSPENDED, _EITHER, ()),
    (_S.FUELLING, _D.SUSPENDED, _EITHER, (_E.SUSPEND,)),
    (_S.SUSPENDED_FUELLING, _D.SUSPENDED, _EITHER, ()),
)


def _expand(
    rows: tuple[_Row, ...],
) -> Mapping[tuple[FPState, DispenserStatus | None, bool], tuple[FPEvent, ...]]:
    table: dict[tuple[FPState, DispenserStatus | None, bool], tuple[FPEvent, ...]] = {}
    for state, status, nozzle_positions, events in rows:
        for nozzle_out in nozzle_positions:
            key = (state, status, nozzle_out)
            if key in table:
                raise ValueError(f"observation row {key} is listed twice")
            table[key] = events
    return MappingProxyType(table)


OBSERVATIONS: Final = _expand(_OBSERVATION_ROWS)


def _explain(
    state: FPState, status: DispenserStatus | None, nozzle_out: bool, device: str | None
) -> tuple[FPEvent, ...]:
    events = OBSERVATIONS.get((state, status, nozzle_out))
    if events is None:
        raise IllegalTransition(state, Observation(status, nozzle_out), device=device)
    return events


def events_for(
    state: FPState, status: DispenserStatus | None, nozzle_out: bool
) -> tuple[FPEvent, ...]:
    """The events, in order, that take `state` to what the pump reports (status None: offline).

    Raises IllegalTransition (its `event` an `Observation`) when nothing explains the report.
    """
    return _explain(state, status, nozzle_out, None)


class FuellingPoint:
    """One fuelling point: its IFSF state and since when it has been in it."""

    __slots__ = ("_device", "_pump", "_since", "_state")

    def __init__(self, pump: int, state: FPState = FPState.INOPERATIVE, now: float = 0.0):
        self._pump = pump
        self._state = state
        self._since = now
        self._device = f"fp{pump}"

    def __repr__(self) -> str:
        return f"FuellingPoint(pump={self._pump}, state={self._state}, since={self._since})"

    @property
    def pump(self) -> int:
        return self._pump

    @property
    def state(self) -> FPState:
        return self._state

    @property
    def since(self) -> float:
        """When the point entered its current state (the injected clock's time)."""
        return self._since

    def can(self, event: FPEvent) -> bool:
        return (self._state, event) in TRANSITIONS

    def handle(self, event: FPEvent, now: float) -> Transition:
        """Apply one event; raises IllegalTransition and stays put if the table forbids it."""
        (transition,) = self._plan((event,), now)
        self._enter(transition.new, now)
        return transition

    def follow(
        self, status: DispenserStatus | None, nozzle_out: bool, now: float
    ) -> list[Transition]:
        """Catch up with what the pump reports; empty when the point already agrees.

        All or nothing: an observation that cannot be explained raises IllegalTransition and
        leaves the point as it was.
        """
        events = _explain(self._state, status, nozzle_out, self._device)
        transitions = self._plan(events, now)
        if transitions:
            self._enter(transitions[-1].new, now)
        return transitions

    def resync(self, state: FPState, now: float) -> Transition | None:
        """Force the point to an observed state; None when it is already there.

        The returned Transition has `event` None (`is_resync`) and is never a sale outcome.
        """
        if state == self._state:
            return None
        transition = Transition(self._pump, self._state, state, None, now)
        self._enter(state, now)
        return transition

    def _plan(self, events: tuple[FPEvent, ...], now: float) -> list[Transition]:
        # Walk the table before touching the point, so a failure leaves it unchanged.
        transitions: list[Transition] = []
        state = self._state
        for event in events:
            new = TRANSITIONS.get((state, event))
            if new is None:
                raise IllegalTransition(state, event, device=self._device)
            transitions.append(Transition(self._pump, state, new, event, now))
            state = new
        return transitions

    def _enter(self, state: FPState, now: float) -> None:
        self._state = state
        self._since = now
