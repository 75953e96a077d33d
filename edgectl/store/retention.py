"""Retention: old records deleted, never one the cloud has not taken, the sales' totals kept."""

from __future__ import annotations

from decimal import Decimal

from edgectl.store.outbox import Outbox
from edgectl.store.reader import PURGED_SALES_KEY
from edgectl.store.tx import Tx


class Retention(Outbox):
    """What `purge_old_records` deletes and keeps."""

    def purge_old_records(self, before: str) -> dict[str, int]:
        """Delete sales, orders, closed authorizations, audit entries and cleared alarms last
        touched before `before` — but nothing the cloud has not acknowledged: the cut is moved
        back to the oldest message still in the outbox (every change queues its message in
        its own commit, so a record older than that has had all its messages taken)."""
        now = self._clock()
        oldest = self.outbox_oldest()
        cut = min(before, oldest) if oldest is not None else before
        cut = min(cut, now)
        removed: dict[str, int] = {}
        with self.transaction() as tx:
            _keep_purged_sales(tx, cut)
            for table, sql in (
                (
                    "orders",
                    "DELETE FROM orders WHERE updated_at < ? AND status NOT IN"
                    " ('accepted', 'authorized', 'fuelling')",
                ),
                (
                    "authorizations",
                    "DELETE FROM authorizations WHERE updated_at < ? AND state NOT IN"
                    " ('requested', 'authorized', 'fuelling')",
                ),
                ("sales", "DELETE FROM sales WHERE recorded_at < ?"),
                ("audit", "DELETE FROM audit WHERE requested_at < ? AND finished_at IS NOT NULL"),
                ("alarms", "DELETE FROM alarms WHERE cleared_at IS NOT NULL AND cleared_at < ?"),
            ):
                removed[table] = tx.execute(sql, (cut,)).rowcount
        return removed


def _keep_purged_sales(tx: Tx, cut: str) -> None:
    """Add the sales about to be deleted (recorded before `cut`) to their grade's purged
    totals, in the purge's own transaction (exact: the volumes are summed as decimals)."""
    sold: dict[str, tuple[int, Decimal]] = {}
    for grade, volume in tx.execute(
        "SELECT grade, volume FROM sales WHERE recorded_at < ?", (cut,)
    ).fetchall():
        count, litres = sold.get(str(grade), (0, Decimal(0)))
        sold[str(grade)] = (count + 1, litres + Decimal(volume))
    for grade, (count, litres) in sold.items():
        key = f"{PURGED_SALES_KEY}{grade}"
        row = tx.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is not None:
            before_count, before_litres = str(row[0]).split()
            count, litres = count + int(before_count), litres + Decimal(before_litres)
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, f"{count} {litres}")
        )
