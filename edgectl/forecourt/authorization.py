"""The life of an authorization and of the cloud order made for it, as one table.

Pure domain: no I/O, no clock. The states are `AuthorizationState` (forecourt/sale.py, the
values the store keeps); the events are what happens to an authorization once it is recorded:

* `TRANSITIONS` maps (state, event) to the next state; a pair that is not in it is illegal and
  `advance` raises `IllegalAuthorizationTransition` (an `EdgectlError`), changing nothing.
* `ORDER_STATUS` says which step a cloud order takes when its authorization reaches a state
  (`evt/order`), and `ORDER_REASON` the reason code an order ending without fuel carries
  (docs/mqtt.md lists them). An expiry after a nozzle was lifted without fuel carries
  `ORDER_REASON_LIFTED_NO_FUEL` instead of the state's own code.

Decisions worth knowing (each is pinned by a test):

* Only an authorization the pump has not confirmed yet (REQUESTED) can be refused: that is
  the pump refusing the AUTHORIZE, or, after a restart, the pump turning out never to have
  received it.
* Fuel flowing under an authorization still REQUESTED moves it to FUELLING directly (the pump
  obeyed an AUTHORIZE whose confirmation was not recorded); a sale, a zero fill and an expiry
  may end a REQUESTED one for the same reason (found open after a restart, or a store write
  that failed in between).
* The pump dropping the authorization by itself (back to idle) does not end a REQUESTED one:
  the AUTHORIZE may not have reached it yet.
* Once fuel flows (FUELLING) an authorization cannot expire nor be cancelled: it ends with its
  sale, or without one when the pump returns to idle or reads 0 litres back.
* The ended states (COMPLETED, EXPIRED, CANCELLED, FAILED, NO_SALE) are final: no event leaves
  them, so an order's final step is sent once.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from edgectl.errors import IllegalAuthorizationTransition
from edgectl.forecourt.sale import AuthorizationState


class AuthorizationEvent(enum.Enum):
    """Something that happened to a recorded authorization."""

    CONFIRMED = "confirmed"  # the pump confirmed the AUTHORIZE (or was found authorized)
    FLOW_STARTED = "flow_started"  # fuel flows under it
    SALE_RECORDED = "sale_recorded"  # its fill is committed as a sale
    ZERO_FILL = "zero_fill"  # the pump's fill read back is 0 litres
    PUMP_DROPPED = "pump_dropped"  # the pump returned to idle without fuel (stop, reset)
    TIMED_OUT = "timed_out"  # no fuel before the lift deadline: de-authorized
    CANCELLED = "cancelled"  # withdrawn by the cloud before fuel flowed
    REFUSED = "refused"  # the pump refused it, or never received it

    def __str__(self) -> str:
        return self.name


_S = AuthorizationState
_E = AuthorizationEvent

TRANSITIONS: Final[Mapping[tuple[AuthorizationState, AuthorizationEvent], AuthorizationState]] = (
    MappingProxyType(
        {
            # The pump confirms, or refuses.
            (_S.REQUESTED, _E.CONFIRMED): _S.AUTHORIZED,
            (_S.REQUESTED, _E.REFUSED): _S.FAILED,
            # Fuel flows.
            (_S.REQUESTED, _E.FLOW_STARTED): _S.FUELLING,
            (_S.AUTHORIZED, _E.FLOW_STARTED): _S.FUELLING,
            # A sale ends it.
            (_S.REQUESTED, _E.SALE_RECORDED): _S.COMPLETED,
            (_S.AUTHORIZED, _E.SALE_RECORDED): _S.COMPLETED,
            (_S.FUELLING, _E.SALE_RECORDED): _S.COMPLETED,
            # Ended without fuel: a fill of 0 litres, or the pump back at idle.
            (_S.REQUESTED, _E.ZERO_FILL): _S.NO_SALE,
            (_S.AUTHORIZED, _E.ZERO_FILL): _S.NO_SALE,
            (_S.FUELLING, _E.ZERO_FILL): _S.NO_SALE,
            (_S.AUTHORIZED, _E.PUMP_DROPPED): _S.NO_SALE,
            (_S.FUELLING, _E.PUMP_DROPPED): _S.NO_SALE,
            # Nobody drew fuel in time, or the cloud took it back, before any flow.
            (_S.REQUESTED, _E.TIMED_OUT): _S.EXPIRED,
            (_S.AUTHORIZED, _E.TIMED_OUT): _S.EXPIRED,
            (_S.REQUESTED, _E.CANCELLED): _S.CANCELLED,
            (_S.AUTHORIZED, _E.CANCELLED): _S.CANCELLED,
        }
    )
)

FINAL: Final = frozenset(
    {_S.COMPLETED, _S.EXPIRED, _S.CANCELLED, _S.FAILED, _S.NO_SALE},
)

# The step of `evt/order` an order takes when its authorization reaches a state (none for
# REQUESTED: the order is `accepted` when it is recorded; COMPLETED is sent with the sale).
ORDER_STATUS: Final[Mapping[AuthorizationState, str]] = MappingProxyType(
    {
        _S.AUTHORIZED: "authorized",
        _S.FUELLING: "fuelling",
        _S.EXPIRED: "expired",
        _S.CANCELLED: "cancelled",
        _S.FAILED: "failed",
        _S.NO_SALE: "cancelled",
    }
)
# The reason code an order ending without fuel carries (the payment can be released).
ORDER_REASON: Final[Mapping[AuthorizationState, str]] = MappingProxyType(
    {
        _S.EXPIRED: "no_nozzle_lifted",
        _S.CANCELLED: "cancelled_by_cloud",
        _S.FAILED: "pump_refused",
        _S.NO_SALE: "zero_delivery",
    }
)
# An order that expires after a nozzle was lifted without fuel flowing: not "no nozzle lifted".
ORDER_REASON_LIFTED_NO_FUEL: Final = "nozzle_lifted_no_fuel"


def can(state: AuthorizationState, event: AuthorizationEvent) -> bool:
    return (state, event) in TRANSITIONS


def advance(
    state: AuthorizationState, event: AuthorizationEvent, *, authorization: int | None = None
) -> AuthorizationState:
    """The state `event` takes an authorization in `state` to; raises
    IllegalAuthorizationTransition when the table does not allow it."""
    new = TRANSITIONS.get((state, event))
    if new is None:
        device = None if authorization is None else f"authorization {authorization}"
        raise IllegalAuthorizationTransition(state, event, device=device)
    return new
