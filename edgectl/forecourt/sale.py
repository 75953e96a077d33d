"""Sales and authorizations as the forecourt sees them: values only, no storage."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal


class AuthorizationSource(enum.Enum):
    AUTO = "auto"  # unattended local selling (auto mode)
    ATTENDANT = "attendant"  # a person on site (CLI)
    CLOUD = "cloud"  # a pay-at-pump order


class AuthorizationState(enum.Enum):
    REQUESTED = "requested"  # recorded, AUTHORIZE not yet confirmed by the pump
    AUTHORIZED = "authorized"
    FUELLING = "fuelling"
    COMPLETED = "completed"  # ended with a sale
    EXPIRED = "expired"  # no nozzle lifted in time, de-authorized
    CANCELLED = "cancelled"
    FAILED = "failed"  # pump refused or could not be reached
    NO_SALE = "no_sale"  # ended without fuel (walk away, zero fill)

    @property
    def is_open(self) -> bool:
        return self in _OPEN


_OPEN = {AuthorizationState.REQUESTED, AuthorizationState.AUTHORIZED, AuthorizationState.FUELLING}


@dataclass(frozen=True, slots=True)
class Authorization:
    id: int
    pump: int
    source: AuthorizationSource
    state: AuthorizationState
    nozzles: tuple[int, ...]
    preset_amount: Decimal | None
    preset_volume: Decimal | None
    order_id: str | None
    requested_by: str | None
    created_at: str
    expires_at: str | None = None  # a cloud order's own deadline for the nozzle lift


@dataclass(frozen=True, slots=True)
class Sale:
    """A finished fill as read back from the dispenser."""

    pump: int
    nozzle: int
    grade: str
    volume: Decimal
    amount: Decimal
    unit_price: Decimal
    currency: str
    ended_at: str
    total_volume_after: Decimal | None = None
    total_amount_after: Decimal | None = None
    authorization_id: int | None = None
    price_set_id: str | None = None
    # The dispenser's own number for the stored sale (FillingInfo.reference), if it has one.
    reference: str | None = None

    @property
    def uid(self) -> str:
        """Stable identity: the nozzle's totals after a sale name that sale for good.

        A pump re-read after a restart gives the same totals, so the same sale is never
        recorded twice. Without totals the authorization is the identity (one sale each).
        """
        if self.total_volume_after is not None:
            return f"P{self.pump}-N{self.nozzle}-T{self.total_volume_after}"
        return f"P{self.pump}-A{self.authorization_id}-E{self.ended_at}"


def amount_matches(volume: Decimal, unit_price: Decimal, amount: Decimal, decimals: int) -> bool:
    """The pump's amount is volume × price to its display precision (one unit of slack)."""
    expected = volume * unit_price
    return abs(expected - amount) <= Decimal(1).scaleb(-decimals)
