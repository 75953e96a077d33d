"""Authorizations: why a pump is released, recorded before the act, and how each one moves on."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from typing import Any

from edgectl.forecourt.authorization import ORDER_REASON, ORDER_STATUS
from edgectl.forecourt.sale import (
    Authorization,
    AuthorizationSource,
    AuthorizationState,
)
from edgectl.store.core import StoreCore
from edgectl.store.rows import decimal_or_none, text_or_none
from edgectl.store.tx import PRIORITY_TELEMETRY


class Authorizations(StoreCore):
    """The authorizations table and the nozzle lift each one serves."""

    def create_authorization(
        self,
        pump: int,
        source: AuthorizationSource,
        *,
        nozzles: tuple[int, ...] = (),
        preset_amount: Decimal | None = None,
        preset_volume: Decimal | None = None,
        order_id: str | None = None,
        requested_by: str | None = None,
        serves_lift: bool = False,
    ) -> Authorization:
        """The durable record of why a pump is about to be authorized; written before the act.

        `serves_lift`: this authorization serves the nozzle lift now in progress (auto mode),
        recorded in the same commit: that lift is never served again, even after a restart,
        until the nozzle is hung up (`lift_ended`).
        """
        now = self._clock()
        with self.transaction() as tx:
            tx.fill_left_the_pump(pump)
            if serves_lift:
                tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (_lift_key(pump), now),
                )
            cur = tx.execute(
                "INSERT INTO authorizations (pump, source, state, nozzles, preset_amount,"
                " preset_volume, order_id, requested_by, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pump,
                    source.value,
                    AuthorizationState.REQUESTED.value,
                    json.dumps(list(nozzles)),
                    text_or_none(preset_amount),
                    text_or_none(preset_volume),
                    order_id,
                    requested_by,
                    now,
                    now,
                ),
            )
            auth_id = int(cur.lastrowid or 0)
        auth = self.authorization(auth_id)
        assert auth is not None
        return auth

    def lift_served(self, pump: int) -> bool:
        """Whether the pump's nozzle lift in progress has had its authorization already."""
        row = self._db.execute("SELECT 1 FROM meta WHERE key = ?", (_lift_key(pump),)).fetchone()
        return row is not None

    def lift_ended(self, pump: int) -> None:
        """The nozzle went back into its holster: the next lift may be served."""
        with self.transaction() as tx:
            tx.execute("DELETE FROM meta WHERE key = ?", (_lift_key(pump),))

    def update_authorization(
        self,
        auth_id: int,
        state: AuthorizationState,
        reason: str | None = None,
        *,
        pump_state: dict[str, Any] | None = None,
        order_reason: str | None = None,
    ) -> Authorization | None:
        """Move an authorization on; a cloud order follows it and its event is queued with it,
        and so is the pump's live state when given (one commit for the three). The order's
        reason code is `order_reason`, else the one of `state` (ORDER_REASON). Returns the
        authorization as it is now."""
        now = self._clock()
        with self.transaction() as tx:
            tx.execute(
                "UPDATE authorizations SET state = ?, reason = COALESCE(?, reason),"
                " updated_at = ? WHERE id = ?",
                (state.value, reason, now, auth_id),
            )
            row = tx.execute(
                "SELECT order_id FROM authorizations WHERE id = ?", (auth_id,)
            ).fetchone()
            order_status = ORDER_STATUS.get(state)
            if row is not None and row[0] is not None and order_status is not None:
                tx.order_status(
                    row[0], order_status, now, reason=order_reason or ORDER_REASON.get(state)
                )
            if pump_state is not None:
                message = tx.messages.shaped(
                    "pump_state", pump_state, key=str(pump_state["pump"]), retain=True
                )
                tx.outbox(message, PRIORITY_TELEMETRY, now)
        return self.authorization(auth_id)

    def authorization(self, auth_id: int) -> Authorization | None:
        row = self._db.execute("SELECT * FROM authorizations WHERE id = ?", (auth_id,)).fetchone()
        return None if row is None else _authorization(row)

    def open_authorization(self, pump: int) -> Authorization | None:
        """The newest authorization of a pump that has not ended yet."""
        row = self._db.execute(
            "SELECT * FROM authorizations WHERE pump = ? AND state IN"
            " ('requested', 'authorized', 'fuelling') ORDER BY id DESC LIMIT 1",
            (pump,),
        ).fetchone()
        return None if row is None else _authorization(row)


def _authorization(row: sqlite3.Row) -> Authorization:
    return Authorization(
        id=row["id"],
        pump=row["pump"],
        source=AuthorizationSource(row["source"]),
        state=AuthorizationState(row["state"]),
        nozzles=tuple(json.loads(row["nozzles"])),
        preset_amount=decimal_or_none(row["preset_amount"]),
        preset_volume=decimal_or_none(row["preset_volume"]),
        order_id=row["order_id"],
        requested_by=row["requested_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


def _lift_key(pump: int) -> str:
    return f"lift_served:{pump}"
