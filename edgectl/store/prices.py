"""Price sets: received, activated, confirmed by each dispenser, and the prices in force."""

from __future__ import annotations

import json
from decimal import Decimal

from edgectl.store.core import StoreCore
from edgectl.store.tx import PRIORITY_EVENT, PRIORITY_TELEMETRY


class Prices(StoreCore):
    """The price_sets and price_applied tables, and the prices messages."""

    def confirm_prices(
        self,
        price_set_id: str,
        pump: int,
        status: str,
        reason: str | None,
        prices: dict[str, str],
        currency: str,
    ) -> None:
        """Record that one dispenser took (or refused) a price set, and tell the cloud."""
        now = self._clock()
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO price_applied (price_set_id, pump, status, reason, applied_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (price_set_id, pump) DO UPDATE SET"
                " status = excluded.status, reason = excluded.reason,"
                " applied_at = excluded.applied_at",
                (price_set_id, pump, status, reason, now),
            )
            message = tx.messages.price(price_set_id, pump, status, reason, prices, currency)
            tx.outbox(message, PRIORITY_EVENT, now)

    def save_price_set(
        self, price_set_id: str, prices: dict[str, Decimal], effective_at: str | None
    ) -> None:
        with self.transaction() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO price_sets (price_set_id, prices, effective_at,"
                " received_at) VALUES (?, ?, ?, ?)",
                (price_set_id, _price_json(prices), effective_at, self._clock()),
            )

    def activate_price_set(
        self, price_set_id: str, prices_in_force: dict[str, Decimal], currency: str
    ) -> None:
        """Mark a price set active and queue the retained prices state for the cloud."""
        now = self._clock()
        with self.transaction() as tx:
            tx.execute(
                "UPDATE price_sets SET activated_at = ? WHERE price_set_id = ?",
                (now, price_set_id),
            )
            message = tx.messages.prices(price_set_id, prices_in_force, currency)
            tx.outbox(message, PRIORITY_TELEMETRY, now)

    def publish_prices(
        self, price_set_id: str | None, prices: dict[str, Decimal], currency: str
    ) -> None:
        """Queue the retained prices state (the newest replaces any not yet sent)."""
        with self.transaction() as tx:
            message = tx.messages.prices(price_set_id, prices, currency)
            tx.outbox(message, PRIORITY_TELEMETRY, self._clock())

    def price_sets(
        self,
    ) -> tuple[
        tuple[str, dict[str, Decimal]] | None, list[tuple[str, dict[str, Decimal], str | None]]
    ]:
        """The newest active price set, and those not yet active in effective order."""
        active_row = self._db.execute(
            "SELECT price_set_id, prices FROM price_sets WHERE activated_at IS NOT NULL"
            " ORDER BY activated_at DESC LIMIT 1"
        ).fetchone()
        active = None if active_row is None else (active_row[0], _price_dict(active_row[1]))
        pending = [
            (row[0], _price_dict(row[1]), row[2])
            for row in self._db.execute(
                "SELECT price_set_id, prices, effective_at FROM price_sets"
                " WHERE activated_at IS NULL ORDER BY COALESCE(effective_at, received_at)"
            )
        ]
        return active, pending


def _price_json(prices: dict[str, Decimal]) -> str:
    return json.dumps({grade: str(price) for grade, price in sorted(prices.items())})


def _price_dict(text: str) -> dict[str, Decimal]:
    return {grade: Decimal(price) for grade, price in json.loads(text).items()}
