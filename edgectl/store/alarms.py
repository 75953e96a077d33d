"""Alarms of the station, its pumps and its devices: raised once, cleared once."""

from __future__ import annotations

from typing import Any

from edgectl.store.core import StoreCore


class Alarms(StoreCore):
    """The alarms table (tank alarms are the tanks')."""

    def raise_alarm(
        self,
        kind: str,
        message: str,
        *,
        severity: str = "warning",
        pump: int | None = None,
        nozzle: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        with self.transaction() as tx:
            return tx.alarm(
                kind,
                severity,
                message,
                self._clock(),
                pump=pump,
                nozzle=nozzle,
                detail=detail or {},
            )

    def raise_alarm_once(
        self,
        kind: str,
        message: str,
        *,
        severity: str = "warning",
        pump: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int | None:
        """Raise `kind` (for `pump`, or station-wide) unless it is open already: a fault that
        lasts is one alarm, not one per try. The new alarm's id, or None when it was open."""
        with self.transaction() as tx:
            open_ = tx.execute(
                "SELECT id FROM alarms WHERE cleared_at IS NULL AND kind = ? AND pump IS ?",
                (kind, pump),
            ).fetchone()
            if open_ is not None:
                return None
            return tx.alarm(kind, severity, message, self._clock(), pump=pump, detail=detail or {})

    def clear_alarm(self, kind: str, *, pump: int | None = None) -> int:
        """Clear the open alarms of `kind` (for `pump`, or station-wide) and tell the cloud;
        the number cleared (0 when none was open, so a healthy tick writes nothing)."""
        rows = self._db.execute(
            "SELECT id FROM alarms WHERE cleared_at IS NULL AND kind = ? AND pump IS ?",
            (kind, pump),
        ).fetchall()
        if not rows:
            return 0
        now = self._clock()
        with self.transaction() as tx:
            for (alarm_id,) in rows:
                row = tx.execute("SELECT * FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
                tx.execute("UPDATE alarms SET cleared_at = ? WHERE id = ?", (now, alarm_id))
                tx.alarm_cleared(row, now)
        return len(rows)

    def alarms(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        """The alarms, oldest first; while the store cannot write, its own alarm (kept in
        memory until it can be recorded) comes last."""
        sql = "SELECT * FROM alarms"
        if active_only:
            sql += " WHERE cleared_at IS NULL"
        return self.query(sql + " ORDER BY id") + self._fault_alarms()

    def raise_device_alarm(
        self,
        kind: str,
        device: str,
        message: str,
        *,
        severity: str = "warning",
        pump: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int | None:
        """Raise `kind` for one device (`detail.device`: "line:l0", "pump:3", "gauge:tls")
        unless it is open already; the new alarm's id, or None when it was open."""
        with self.transaction() as tx:
            open_ = tx.execute(
                "SELECT id FROM alarms WHERE cleared_at IS NULL AND kind = ?"
                " AND json_extract(detail, '$.device') = ?",
                (kind, device),
            ).fetchone()
            if open_ is not None:
                return None
            return tx.alarm(
                kind,
                severity,
                message,
                self._clock(),
                pump=pump,
                detail={**(detail or {}), "device": device},
            )

    def clear_device_alarm(self, kind: str, device: str) -> int | None:
        """Clear a device's open alarm of `kind` and queue the cleared alarm event; its id, or
        None when none was open (nothing is written then)."""
        row = self._db.execute(
            "SELECT id FROM alarms WHERE cleared_at IS NULL AND kind = ?"
            " AND json_extract(detail, '$.device') = ?",
            (kind, device),
        ).fetchone()
        if row is None:
            return None
        with self.transaction() as tx:
            alarm = tx.execute("SELECT * FROM alarms WHERE id = ?", (row[0],)).fetchone()
            if alarm is None or alarm["cleared_at"] is not None:
                return None
            now = self._clock()
            tx.execute("UPDATE alarms SET cleared_at = ? WHERE id = ?", (now, alarm["id"]))
            tx.alarm_cleared(alarm, now)
            return int(alarm["id"])
