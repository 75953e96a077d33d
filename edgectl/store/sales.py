"""Sales and each nozzle's electronic totals.

A fill is recorded once, with its authorization closed, its order completed and its totals
checked, in one commit."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from edgectl.forecourt.sale import Sale
from edgectl.store.core import StoreCore
from edgectl.store.rows import decimal_or_none, text_or_none
from edgectl.store.tx import PRIORITY_SALE, Tx

# A sale read again is looked for by the dispenser's number among the pump's last this many
# sales: a dispenser holds a few unpaid sales, and its number (IFSF TR_Seq_Nb, 0001-9999)
# does not go round in so few.
REFERENCE_WINDOW = 32


@dataclass(frozen=True, slots=True)
class RecordedSale:
    id: int
    created: bool  # False: this sale was already recorded (a re-read after restart)
    totals_alarm: str | None  # why the nozzle's totals disagree with the sale, if they do
    # Not created because a *different* sale holds this one's identity (same nozzle totals
    # or same authorization, other figures): this fill is not recorded, say why.
    conflict: str | None = None


_ROW = "SELECT id, nozzle, volume, amount, dispenser_ref FROM sales"
_SAME_FIGURES = "pump = ? AND nozzle = ? AND volume = ? AND amount = ?"


def _recorded_as(tx: Tx, sale: Sale) -> Any:
    """The recorded sale that is this fill read again, if any: the one of its identity (its
    nozzle's totals, or its authorization); else one of the same figures that the dispenser
    numbered alike (IFSF TR_Seq_Nb) among the pump's last REFERENCE_WINDOW sales, whatever
    the totals came out as this time; else, for a fill with neither totals nor an open
    authorization to name it (closed by its commit, as after a restart), the pump's last
    sale of the same figures while the pump may still hold it (`reset_pending`)."""
    found = tx.execute(
        f"{_ROW} WHERE uid = ? OR (authorization_id IS NOT NULL AND authorization_id = ?)",
        (sale.uid, sale.authorization_id),
    ).fetchone()
    figures = (sale.pump, sale.nozzle, str(sale.volume), str(sale.amount))
    if found is None and sale.reference is not None:
        found = tx.execute(
            f"{_ROW} WHERE {_SAME_FIGURES} AND dispenser_ref = ? AND id IN"
            " (SELECT id FROM sales WHERE pump = ? ORDER BY id DESC LIMIT ?)",
            (*figures, sale.reference, sale.pump, REFERENCE_WINDOW),
        ).fetchone()
    if found is None and sale.total_volume_after is None and sale.authorization_id is None:
        found = tx.execute(
            f"{_ROW} WHERE {_SAME_FIGURES} AND reset_pending IS NOT NULL"
            " AND id = (SELECT MAX(id) FROM sales WHERE pump = ?)",
            (*figures, sale.pump),
        ).fetchone()
    return found


class Sales(StoreCore):
    """The sales and nozzle_totals tables."""

    def record_sale(self, sale: Sale) -> RecordedSale:
        """Commit a sale, close its authorization, move the nozzle's totals, queue its event.

        Idempotent: the same sale read again after a restart (`_recorded_as`) returns the
        existing row and changes nothing.
        """
        now = self._clock()
        with self.transaction() as tx:
            existing = _recorded_as(tx, sale)
            if existing is not None:
                same = (int(existing[1]), Decimal(existing[2]), Decimal(existing[3])) == (
                    sale.nozzle,
                    sale.volume,
                    sale.amount,
                ) and (existing[4] is None or sale.reference in (None, existing[4]))
                conflict = None
                if not same:
                    theirs = f", {existing[4]}" if existing[4] else ""
                    ours = f", {sale.reference}" if sale.reference else ""
                    conflict = (
                        f"sale {existing[0]} (nozzle {existing[1]}, {existing[2]} L,"
                        f" {existing[3]}{theirs}) has the identity of this fill (nozzle"
                        f" {sale.nozzle}, {sale.volume} L, {sale.amount}{ours})"
                    )
                return RecordedSale(
                    int(existing[0]), created=False, totals_alarm=None, conflict=conflict
                )
            before = tx.execute(
                "SELECT volume, amount FROM nozzle_totals WHERE pump = ? AND nozzle = ?",
                (sale.pump, sale.nozzle),
            ).fetchone()
            before_volume = decimal_or_none(before[0]) if before else None
            before_amount = decimal_or_none(before[1]) if before else None
            cur = tx.execute(
                "INSERT INTO sales (uid, pump, nozzle, grade, volume, amount, unit_price,"
                " currency, authorization_id, price_set_id, total_volume_before,"
                " total_volume_after, total_amount_before, total_amount_after, ended_at,"
                " recorded_at, dispenser_ref, reset_pending)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (
                    sale.uid,
                    sale.pump,
                    sale.nozzle,
                    sale.grade,
                    str(sale.volume),
                    str(sale.amount),
                    str(sale.unit_price),
                    sale.currency,
                    sale.authorization_id,
                    sale.price_set_id,
                    text_or_none(before_volume),
                    text_or_none(sale.total_volume_after),
                    text_or_none(before_amount),
                    text_or_none(sale.total_amount_after),
                    sale.ended_at,
                    now,
                    sale.reference,
                ),
            )
            sale_id = int(cur.lastrowid or 0)
            if sale.authorization_id is not None:
                tx.execute(
                    "UPDATE authorizations SET state = 'completed', sale_id = ?, updated_at = ?"
                    " WHERE id = ?",
                    (sale_id, now, sale.authorization_id),
                )
                order = tx.execute(
                    "SELECT order_id FROM authorizations WHERE id = ?", (sale.authorization_id,)
                ).fetchone()
                if order is not None and order[0] is not None:
                    tx.execute("UPDATE sales SET order_id = ? WHERE id = ?", (order[0], sale_id))
                    tx.execute(
                        "UPDATE orders SET sale_id = ? WHERE order_id = ?", (sale_id, order[0])
                    )
                    tx.order_status(order[0], "completed", now)
            alarm = None
            if sale.total_volume_after is not None and sale.total_amount_after is not None:
                alarm = _totals_disagreement(sale, before_volume, before_amount)
                tx.set_totals(
                    sale.pump, sale.nozzle, sale.total_volume_after, sale.total_amount_after, now
                )
            if alarm is not None:
                tx.alarm(
                    "totals_mismatch",
                    "critical",
                    alarm,
                    now,
                    pump=sale.pump,
                    nozzle=sale.nozzle,
                    detail={"sale_id": sale_id},
                )
            row = tx.execute("SELECT * FROM sales WHERE id = ?", (sale_id,)).fetchone()
            tx.outbox(tx.messages.sale(tx.sale_values(row)), PRIORITY_SALE, now)
        return RecordedSale(sale_id, created=True, totals_alarm=alarm)

    def pump_reset(self, pump: int) -> None:
        """The pump confirmed its reset after a sale: it holds that fill no more."""
        with self.transaction() as tx:
            tx.fill_left_the_pump(pump)

    def sales(
        self, *, since: str | None = None, pump: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        sql = "SELECT * FROM sales WHERE 1 = 1"
        params: list[Any] = []
        if since is not None:
            sql += " AND recorded_at >= ?"
            params.append(since)
        if pump is not None:
            sql += " AND pump = ?"
            params.append(pump)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self.query(sql, tuple(params))

    def nozzle_totals(self, pump: int, nozzle: int) -> tuple[Decimal, Decimal] | None:
        row = self._db.execute(
            "SELECT volume, amount FROM nozzle_totals WHERE pump = ? AND nozzle = ?",
            (pump, nozzle),
        ).fetchone()
        return None if row is None else (Decimal(row[0]), Decimal(row[1]))

    def check_totals(self, pump: int, nozzle: int, volume: Decimal, amount: Decimal) -> str | None:
        """Compare totals read from an idle pump with the last known; store them as the new base.

        Totals that moved while no sale was recorded mean fuel left the pump unseen: a sale
        made while edgectl was not watching, or tampering. That raises an alarm.
        """
        now = self._clock()
        with self.transaction() as tx:
            row = tx.execute(
                "SELECT volume, amount FROM nozzle_totals WHERE pump = ? AND nozzle = ?",
                (pump, nozzle),
            ).fetchone()
            message = None
            if row is not None:
                old_volume, old_amount = Decimal(row[0]), Decimal(row[1])
                if volume < old_volume or amount < old_amount:
                    message = (
                        f"totals went backwards on pump {pump} nozzle {nozzle}: "
                        f"volume {old_volume} -> {volume}, amount {old_amount} -> {amount}"
                    )
                elif volume != old_volume or amount != old_amount:
                    message = (
                        f"unrecorded dispensing on pump {pump} nozzle {nozzle}: totals grew by "
                        f"{volume - old_volume} volume / {amount - old_amount} amount "
                        "with no sale recorded"
                    )
            if message is not None:
                tx.alarm(
                    "missed_sale",
                    "critical",
                    message,
                    now,
                    pump=pump,
                    nozzle=nozzle,
                    detail={"volume": str(volume), "amount": str(amount)},
                )
            tx.set_totals(pump, nozzle, volume, amount, now)
        return message


def _totals_disagreement(
    sale: Sale, before_volume: Decimal | None, before_amount: Decimal | None
) -> str | None:
    if before_volume is None or before_amount is None:
        return None  # first sale seen on this nozzle: nothing to compare with
    assert sale.total_volume_after is not None and sale.total_amount_after is not None
    moved_volume = sale.total_volume_after - before_volume
    moved_amount = sale.total_amount_after - before_amount
    if moved_volume == sale.volume and moved_amount == sale.amount:
        return None
    return (
        f"pump {sale.pump} nozzle {sale.nozzle}: totals moved by {moved_volume} volume / "
        f"{moved_amount} amount but the sale is {sale.volume} / {sale.amount} "
        "(missed or tampered sale)"
    )
