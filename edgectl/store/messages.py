"""What the store asks of whoever shapes its outbox rows: one method per kind of outcome.

The store keeps an outcome and the message describing it in one transaction, but it does not
know the cloud's message shapes: it hands its own rows to an `OutboxMessages` (the daemon's is
`edgectl.cloud.messages.ContractMessages`) and stores the `Message` it gets back as it is. A
store opened without one can read and write its tables, but refuses, with
`NoOutboxMessages`, any write that would queue a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from edgectl.errors import StoreError


@dataclass(frozen=True, slots=True)
class Message:
    """One outbox row's message: its stream, its data encoded once (sent as it is), the key of
    the state it is the newest value of (a topic key: pump, tank, "prices"), whether its stream
    is a latest-value state (numbered per key) rather than a guaranteed one (numbered per
    stream), and whether it is kept by the broker (retained)."""

    stream: str
    data: str
    key: str | None = None
    latest: bool = False
    retain: bool = False


class OutboxMessages(Protocol):
    """Turns the store's rows into the messages it queues with them."""

    def sale(self, sale: Mapping[str, Any]) -> Message:
        """A recorded sale: its `sales` row, with `authorized_by`, the source of its
        authorization (None without one)."""
        ...

    def order(
        self,
        order: Mapping[str, Any],
        sale: Mapping[str, Any] | None,
        authorized_at: str | None,
    ) -> Message:
        """An order's step: its `orders` row, its sale (as for `sale`) once it has one, and
        when it was authorized."""
        ...

    def alarm(
        self,
        alarm_id: int,
        kind: str,
        severity: str,
        message: str,
        *,
        raised_at: str,
        cleared_at: str | None = None,
        pump: int | None = None,
        nozzle: int | None = None,
    ) -> Message:
        """An alarm raised (no `cleared_at`) or cleared."""
        ...

    def price(
        self,
        price_set_id: str,
        pump: int,
        status: str,
        reason: str | None,
        prices: Mapping[str, Decimal | str],
        currency: str,
    ) -> Message:
        """One dispenser took (or refused) a price set."""
        ...

    def prices(
        self, price_set_id: str | None, prices: Mapping[str, Decimal], currency: str
    ) -> Message:
        """The prices in force (None: the config's)."""
        ...

    def delivery(self, delivery_id: int, values: Mapping[str, Any]) -> Message:
        """A recorded delivery: its `deliveries` columns."""
        ...

    def shaped(
        self, stream: str, data: Mapping[str, Any], *, key: str | None = None, retain: bool = False
    ) -> Message:
        """A message its caller shaped already (a pump's state, a tank's inventory, a day's
        reconciliation, a command's result), to be checked and encoded."""
        ...


class NoOutboxMessages(StoreError):
    """This store was opened without an `OutboxMessages`: it cannot queue a message."""

    code = "store_no_outbox"
