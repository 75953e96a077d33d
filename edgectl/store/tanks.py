"""Tanks: inventory readings, deliveries, daily reconciliations and tank alarms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgectl.store.core import StoreCore
from edgectl.store.rows import column_values
from edgectl.store.tx import PRIORITY_EVENT, PRIORITY_TELEMETRY


class Tanks(StoreCore):
    """The tank_latest, tank_readings, deliveries and reconciliations tables."""

    def open_tank_alarms(self, tank: int) -> list[str]:
        """The kinds (``tank_<alarm>``) of a tank's alarms not cleared yet."""
        rows = self._db.execute(
            "SELECT kind FROM alarms WHERE cleared_at IS NULL AND kind LIKE 'tank\\_%' ESCAPE '\\'"
            " AND json_extract(detail, '$.tank') = ?",
            (tank,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def raise_tank_alarm(
        self,
        tank: int,
        kind: str,
        message: str,
        *,
        severity: str = "warning",
        detail: dict[str, Any] | None = None,
    ) -> int | None:
        """Raise a tank alarm unless the same one is open already; its id, or None."""
        with self.transaction() as tx:
            open_ = tx.execute(
                "SELECT id FROM alarms WHERE cleared_at IS NULL AND kind = ?"
                " AND json_extract(detail, '$.tank') = ?",
                (kind, tank),
            ).fetchone()
            if open_ is not None:
                return None
            return tx.alarm(
                kind, severity, message, self._clock(), detail={**(detail or {}), "tank": tank}
            )

    def clear_tank_alarm(self, tank: int, kind: str) -> int | None:
        """Set `cleared_at` on a tank's open alarm of `kind` and queue the cleared alarm event;
        the alarm's id, or None when none was open."""
        with self.transaction() as tx:
            row = tx.execute(
                "SELECT * FROM alarms WHERE cleared_at IS NULL AND kind = ?"
                " AND json_extract(detail, '$.tank') = ?",
                (kind, tank),
            ).fetchone()
            if row is None:
                return None
            now = self._clock()
            tx.execute("UPDATE alarms SET cleared_at = ? WHERE id = ?", (now, row["id"]))
            tx.alarm_cleared(row, now)
            return int(row["id"])

    def record_tank_reading(
        self,
        values: Mapping[str, Any],
        *,
        history: bool,
        report: dict[str, Any] | None = None,
    ) -> None:
        """Keep a tank's latest inventory; with `history`, add it to the history too; with
        `report` (the cloud's inventory data), queue it as the tank's inventory telemetry.
        `values` has the columns of ``tank_latest`` (Decimals as text or Decimal)."""
        cols = (
            "tank",
            "at",
            "height_mm",
            "water_mm",
            "temperature_c",
            "gross_l",
            "water_l",
            "product_l",
            "net_l",
            "ullage_l",
            "fill_pct",
        )
        params = column_values(values, cols)
        marks = ",".join("?" * len(cols))
        with self.transaction() as tx:
            tx.execute(
                f"INSERT OR REPLACE INTO tank_latest ({','.join(cols)}) VALUES ({marks})", params
            )
            if history:
                tx.execute(f"INSERT INTO tank_readings ({','.join(cols)}) VALUES ({marks})", params)
            if report is not None:
                message = tx.messages.shaped("inventory", report, key=f"tank/{values['tank']}")
                tx.outbox(message, PRIORITY_TELEMETRY, self._clock())

    def record_delivery(self, gauge: str, values: Mapping[str, Any]) -> int | None:
        """Record a delivery once per gauge, tank and start; its id, or None if already kept."""
        cols = (
            "tank",
            "source",
            "start_at",
            "end_at",
            "start_volume",
            "end_volume",
            "start_volume_tc",
            "end_volume_tc",
            "dispensed_during",
            "dispensed_during_tc",
            "delivered",
            "delivered_tc",
        )
        params = column_values(values, cols)
        with self.transaction() as tx:
            cur = tx.execute(
                f"INSERT OR IGNORE INTO deliveries (gauge, {','.join(cols)}, recorded_at)"
                f" VALUES (?, {','.join('?' * len(cols))}, ?)",
                (gauge, *params, now := self._clock()),
            )
            if not cur.rowcount:
                return None
            delivery_id = int(cur.lastrowid or 0)
            tx.outbox(tx.messages.delivery(delivery_id, values), PRIORITY_EVENT, now)
            return delivery_id

    def first_tank_reading(self, tank: int) -> str | None:
        """When the oldest stored reading of a tank was taken (ISO UTC), or None."""
        row = self._db.execute(
            "SELECT MIN(at) FROM tank_readings WHERE tank = ?", (tank,)
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def tank_day_inputs(
        self, tank: int, grade: str, first_day: str, last_day: str
    ) -> dict[str, list[dict[str, Any]]]:
        """Rows a reconciliation needs, coarsely by UTC date (`first_day`..`last_day`,
        YYYY-MM-DD); the caller cuts the local day out of them."""
        span = (first_day, last_day)
        return {
            "readings": self.query(
                "SELECT at, net_l, product_l FROM tank_readings WHERE tank = ?"
                " AND substr(at, 1, 10) BETWEEN ? AND ? ORDER BY id",
                (tank, *span),
            ),
            "deliveries": self.query(
                "SELECT end_at, delivered_tc FROM deliveries WHERE tank = ?"
                " AND substr(end_at, 1, 10) BETWEEN ? AND ?",
                (tank, *span),
            ),
            "sales": self.query(
                "SELECT ended_at, volume FROM sales WHERE grade = ?"
                " AND substr(ended_at, 1, 10) BETWEEN ? AND ?",
                (grade, *span),
            ),
        }

    def last_reconciliation(self, tank: int, before: str) -> dict[str, Any] | None:
        rows = self.query(
            "SELECT * FROM reconciliations WHERE tank = ? AND day < ? ORDER BY day DESC LIMIT 1",
            (tank, before),
        )
        return rows[0] if rows else None

    def record_reconciliation(self, values: Mapping[str, Any], report: dict[str, Any]) -> bool:
        """Keep one tank's day once (False when that day is kept already) and queue it."""
        cols = (
            "tank",
            "day",
            "opening",
            "deliveries",
            "sales",
            "closing",
            "variance",
            "cumulative_variance",
            "period_throughput",
            "flagged",
        )
        params = column_values(values, cols)
        with self.transaction() as tx:
            cur = tx.execute(
                f"INSERT OR IGNORE INTO reconciliations ({','.join(cols)}, recorded_at)"
                f" VALUES ({','.join('?' * len(cols))}, ?)",
                (*params, now := self._clock()),
            )
            if not cur.rowcount:
                return False
            tx.outbox(tx.messages.shaped("reconciliation", report), PRIORITY_EVENT, now)
            return True

    def last_gauge_delivery_end(self, gauge: str, tank: int) -> str | None:
        row = self._db.execute(
            "SELECT MAX(end_at) FROM deliveries WHERE gauge = ? AND tank = ? AND source = 'gauge'",
            (gauge, tank),
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])
