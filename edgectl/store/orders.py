"""Pay-at-pump orders: recorded with their authorization, followed step by step, cleared."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from edgectl.errors import StoreError
from edgectl.forecourt.sale import (
    Authorization,
    AuthorizationSource,
)
from edgectl.store.authorizations import Authorizations


class OrderExists(StoreError):
    """A pay-at-pump order id that is taken already (by an order of another command)."""


class Orders(Authorizations):
    """Pay-at-pump orders: each one with its authorization, its steps and its payment cleared."""

    def create_order(
        self,
        *,
        order_id: str,
        cmd_id: str,
        pump: int,
        preset_type: str,
        preset_value: Decimal,
        currency: str,
        nozzles: tuple[int, ...],
        grades: tuple[str, ...],
        payment_method: str | None,
        expires_at: str | None,
        command_payload: str | None = None,
    ) -> Authorization:
        """Persist a pay-at-pump order and its authorization record together, before acting.

        With `command_payload`, the command that asked for it goes into the inbox in the same
        transaction: one commit (one fsync) between the cloud's message and the pump. Raises
        `OrderExists` (nothing written) when the order id is taken.
        """
        now = self._clock()
        with self.transaction() as tx:
            if tx.execute("SELECT 1 FROM orders WHERE order_id = ?", (order_id,)).fetchone():
                raise OrderExists(f"order {order_id} exists already", code="invalid")
            tx.fill_left_the_pump(pump)
            if command_payload is not None:
                tx.execute(
                    "INSERT OR IGNORE INTO inbox (cmd_id, type, payload, received_at)"
                    " VALUES (?, 'authorize', ?, ?)",
                    (cmd_id, command_payload, now),
                )
            cur = tx.execute(
                "INSERT INTO authorizations (pump, source, state, nozzles, preset_amount,"
                " preset_volume, order_id, requested_by, expires_at, created_at, updated_at)"
                " VALUES (?, 'cloud', 'requested', ?, ?, ?, ?, 'cloud', ?, ?, ?)",
                (
                    pump,
                    json.dumps(list(nozzles)),
                    str(preset_value) if preset_type == "amount" else None,
                    str(preset_value) if preset_type == "volume" else None,
                    order_id,
                    expires_at,
                    now,
                    now,
                ),
            )
            auth_id = int(cur.lastrowid or 0)
            tx.execute(
                "INSERT INTO orders (order_id, cmd_id, pump, status, preset_type, preset_value,"
                " currency, grades, nozzles, payment_method, expires_at, authorization_id,"
                " created_at, updated_at) VALUES (?, ?, ?, 'accepted', ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?)",
                (
                    order_id,
                    cmd_id,
                    pump,
                    preset_type,
                    str(preset_value),
                    currency,
                    json.dumps(list(grades)),
                    json.dumps(list(nozzles)),
                    payment_method,
                    expires_at,
                    auth_id,
                    now,
                    now,
                ),
            )
            tx.order_event(order_id, now)
        auth = self.authorization(auth_id)
        assert auth is not None
        return auth

    def order(self, order_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM orders WHERE order_id = ?", (order_id,))
        return rows[0] if rows else None

    def set_order_status(self, order_id: str, status: str, reason: str | None = None) -> None:
        with self.transaction() as tx:
            tx.order_status(order_id, status, self._clock(), reason=reason)

    def clear_sale(self, *, order_id: str | None = None, sale_id: int | None = None) -> str:
        """Acknowledge payment of a sale: ok, already_cleared, paid_elsewhere or unknown."""
        now = self._clock()
        with self.transaction() as tx:
            if order_id is not None:
                row = tx.execute(
                    "SELECT sale_id FROM orders WHERE order_id = ?", (order_id,)
                ).fetchone()
                if row is None or row[0] is None:
                    return "unknown"
                sale_id = int(row[0])
            sale = tx.execute(
                "SELECT s.cleared_at, a.source FROM sales s LEFT JOIN authorizations a"
                " ON a.id = s.authorization_id WHERE s.id = ?",
                (sale_id,),
            ).fetchone()
            if sale is None:
                return "unknown"
            if sale[0] is not None:
                return "already_cleared"
            if sale[1] != AuthorizationSource.CLOUD.value:
                return "paid_elsewhere"
            tx.execute(
                "UPDATE sales SET state = 'cleared', cleared_at = ? WHERE id = ?", (now, sale_id)
            )
            tx.execute("UPDATE orders SET cleared_at = ? WHERE sale_id = ?", (now, sale_id))
            return "ok"
