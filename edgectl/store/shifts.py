"""Shifts: opened and closed with each nozzle's totals at that moment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgectl.errors import CommandError
from edgectl.store.core import StoreCore
from edgectl.store.tx import Tx


class Shifts(StoreCore):
    """The shifts and shift_totals tables."""

    def open_shift(
        self, opened_by: str | None, totals: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Open a shift with each nozzle's totals at this moment (`shift_totals` rows: pump,
        nozzle, grade, volume, amount, source, read_at); refused while a shift is open. The
        shift as `StoreReader.shift` gives it."""
        now = self._clock()
        with self.transaction() as tx:
            open_ = tx.execute("SELECT id FROM shifts WHERE closed_at IS NULL").fetchone()
            if open_ is not None:
                raise CommandError(
                    f"shift {open_[0]} is still open: close it first (edgectl shift close)",
                    code="shift_open",
                )
            cur = tx.execute(
                "INSERT INTO shifts (opened_at, opened_by) VALUES (?, ?)", (now, opened_by)
            )
            shift_id = int(cur.lastrowid or 0)
            _shift_totals(tx, shift_id, "open", totals)
        return self.reader.shift(shift_id) or {}

    def close_shift(
        self, closed_by: str | None, totals: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Close the open shift with each nozzle's totals at this moment; refused when no
        shift is open. The shift as `StoreReader.shift` gives it."""
        now = self._clock()
        with self.transaction() as tx:
            open_ = tx.execute("SELECT id FROM shifts WHERE closed_at IS NULL").fetchone()
            if open_ is None:
                raise CommandError(
                    "no shift is open (edgectl shift open starts one)", code="no_open_shift"
                )
            shift_id = int(open_[0])
            tx.execute(
                "UPDATE shifts SET closed_at = ?, closed_by = ? WHERE id = ?",
                (now, closed_by, shift_id),
            )
            _shift_totals(tx, shift_id, "close", totals)
        return self.reader.shift(shift_id) or {}


def _shift_totals(tx: Tx, shift_id: int, moment: str, totals: Sequence[Mapping[str, Any]]) -> None:
    for t in totals:
        tx.execute(
            "INSERT INTO shift_totals (shift, moment, pump, nozzle, grade, volume, amount,"
            " source, read_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                shift_id,
                moment,
                int(t["pump"]),
                int(t["nozzle"]),
                t.get("grade"),
                None if t.get("volume") is None else str(t["volume"]),
                None if t.get("amount") is None else str(t["amount"]),
                str(t["source"]),
                t.get("read_at"),
            ),
        )
