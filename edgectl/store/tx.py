"""One write transaction's statements, shared by every concern of the store.

The outbox queue and its quota, and the rows several concerns write with their messages:
alarms, an order's step, a nozzle's totals."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from typing import Any

from edgectl.store import faults
from edgectl.store.faults import WriteFault
from edgectl.store.messages import Message, NoOutboxMessages, OutboxMessages

# Outbox priorities: lower is more important. Sales and command results are never dropped.
PRIORITY_SALE = 0
PRIORITY_EVENT = 1
PRIORITY_TELEMETRY = 2

# Over the disk quota in delivery = "backend", a row the broker took may be given up before the
# backend acknowledged it, except these (the records a station's money depends on).
NEVER_DROPPED = frozenset({"sale", "order", "result"})


class Tx:
    """The statements available inside one transaction."""

    def __init__(
        self,
        db: sqlite3.Connection,
        messages: OutboxMessages | None = None,
        outbox_max_rows: int | None = None,
    ) -> None:
        self._db = db
        self._messages = messages
        self._outbox_max_rows = outbox_max_rows

    @property
    def messages(self) -> OutboxMessages:
        """What shapes this store's messages; NoOutboxMessages when it was opened without."""
        if self._messages is None:
            raise NoOutboxMessages(
                "this store was opened without the cloud's message shapes: it cannot queue"
                " an outbox message (open it with messages=ContractMessages())"
            )
        return self._messages

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def executescript_in_tx(self, script: str) -> None:
        # executescript() would COMMIT first; run the statements one by one instead.
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)

    def fill_left_the_pump(self, pump: int) -> None:
        """The pump no longer holds the fill of its last sale: reset after it, or being
        authorized again (store/sales.py, `reset_pending`)."""
        self._db.execute(
            "UPDATE sales SET reset_pending = NULL WHERE pump = ? AND reset_pending IS NOT NULL",
            (pump,),
        )

    def set_totals(
        self, pump: int, nozzle: int, volume: Decimal, amount: Decimal, now: str
    ) -> None:
        self._db.execute(
            "INSERT INTO nozzle_totals (pump, nozzle, volume, amount, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (pump, nozzle) DO UPDATE SET"
            " volume = excluded.volume, amount = excluded.amount, updated_at = excluded.updated_at",
            (pump, nozzle, str(volume), str(amount), now),
        )

    def order_status(
        self, order_id: str, status: str, now: str, *, reason: str | None = None
    ) -> None:
        self._db.execute(
            "UPDATE orders SET status = ?, reason = COALESCE(?, reason), updated_at = ?"
            " WHERE order_id = ?",
            (status, reason, now, order_id),
        )
        self.order_event(order_id, now)

    def order_event(self, order_id: str, now: str) -> None:
        """Queue the order's current state (and its sale once there is one) for the cloud."""
        row = self._db.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        if row is None:
            return
        sale = None
        if row["sale_id"] is not None:
            sale_row = self._db.execute(
                "SELECT * FROM sales WHERE id = ?", (row["sale_id"],)
            ).fetchone()
            sale = None if sale_row is None else self.sale_values(sale_row)
        if row["status"] == "authorized":
            self._db.execute(
                "UPDATE orders SET authorized_at = ? WHERE order_id = ? AND authorized_at IS NULL",
                (now, order_id),
            )
        authorized_at = self._db.execute(
            "SELECT authorized_at FROM orders WHERE order_id = ?", (order_id,)
        ).fetchone()[0]
        self.outbox(self.messages.order(dict(row), sale, authorized_at), PRIORITY_SALE, now)

    def sale_values(self, row: sqlite3.Row) -> dict[str, Any]:
        """A `sales` row with `authorized_by`: its authorization's source (None without)."""
        source = None
        if row["authorization_id"] is not None:
            found = self._db.execute(
                "SELECT source FROM authorizations WHERE id = ?", (row["authorization_id"],)
            ).fetchone()
            source = None if found is None else found[0]
        values = dict(row)
        values["authorized_by"] = source
        return values

    def alarm(
        self,
        kind: str,
        severity: str,
        message: str,
        now: str,
        *,
        pump: int | None = None,
        nozzle: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        cur = self._db.execute(
            "INSERT INTO alarms (kind, severity, pump, nozzle, message, detail, raised_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, severity, pump, nozzle, message, json.dumps(detail or {}), now),
        )
        alarm_id = int(cur.lastrowid or 0)
        shaped = self.messages.alarm(
            alarm_id, kind, severity, message, raised_at=now, pump=pump, nozzle=nozzle
        )
        self.outbox(shaped, PRIORITY_EVENT, now)
        return alarm_id

    def fault_raised(self, fault: WriteFault) -> int:
        """The alarm of a write fault, as raised when it began; its id."""
        cur = self._db.execute(
            "INSERT INTO alarms (kind, severity, message, detail, raised_at)"
            " VALUES (?, 'critical', ?, ?, ?)",
            (faults.ALARM_KIND, fault.message(), json.dumps(fault.detail()), fault.since),
        )
        alarm_id = int(cur.lastrowid or 0)
        shaped = self.messages.alarm(
            alarm_id, faults.ALARM_KIND, "critical", fault.message(), raised_at=fault.since
        )
        self.outbox(shaped, PRIORITY_EVENT, fault.since)
        return alarm_id

    def fault_cleared(self, alarm_id: int, fault: WriteFault, now: str) -> None:
        """The same alarm cleared: the store writes again (this very commit proves it)."""
        self._db.execute("UPDATE alarms SET cleared_at = ? WHERE id = ?", (now, alarm_id))
        shaped = self.messages.alarm(
            alarm_id,
            faults.ALARM_KIND,
            "critical",
            fault.message(),
            raised_at=fault.since,
            cleared_at=now,
        )
        self.outbox(shaped, PRIORITY_EVENT, now)

    def alarm_cleared(self, row: sqlite3.Row, now: str) -> None:
        """Queue the cleared event of an alarm row whose `cleared_at` was just set (its
        message, as ever, names the pump but not the nozzle)."""
        shaped = self.messages.alarm(
            int(row["id"]),
            str(row["kind"]),
            str(row["severity"]),
            str(row["message"]),
            raised_at=str(row["raised_at"]),
            cleared_at=now,
            pump=row["pump"],
        )
        self.outbox(shaped, PRIORITY_EVENT, now)

    def outbox(
        self,
        message: Message,
        priority: int,
        now: str,
        *,
        topic: str | None = None,
        correlation: bytes | None = None,
    ) -> int:
        """Queue `message` (its data as it is) in this transaction; its outbox seq."""
        stream, key, latest = message.stream, message.key, message.latest
        if key is not None and priority == PRIORITY_TELEMETRY:
            # Telemetry is a state, not a history: only its newest value is worth sending.
            self._db.execute("DELETE FROM outbox WHERE stream = ? AND key = ?", (stream, key))
        # The stream's next seq (guaranteed) or the key's next version (latest value), counted
        # in this transaction: a row and its number commit together or not at all.
        number = int(
            self._db.execute(
                "INSERT INTO outbox_streams (stream, key, last_seq) VALUES (?, ?, 1)"
                " ON CONFLICT (stream, key) DO UPDATE SET last_seq = last_seq + 1"
                " RETURNING last_seq",
                (stream, (key or "") if latest else ""),
            ).fetchone()[0]
        )
        cur = self._db.execute(
            "INSERT INTO outbox (stream, priority, payload, created_at, key, topic, retain,"
            " correlation, stream_seq, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stream,
                priority,
                message.data,
                now,
                key,
                topic,
                int(message.retain),
                correlation,
                None if latest else number,
                number if latest else None,
            ),
        )
        seq = int(cur.lastrowid or 0)
        self._enforce_quota()
        return seq

    def _enforce_quota(self) -> None:
        if self._outbox_max_rows is None:
            return
        low, high = self._db.execute("SELECT MIN(seq), MAX(seq) FROM outbox").fetchone()
        if low is None or high - low + 1 <= self._outbox_max_rows:
            return  # the seq span bounds the row count: no need to count
        excess = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        excess -= self._outbox_max_rows
        if excess > 0:
            # Thin telemetry, oldest first; sales, orders, alarms and results are never dropped.
            excess -= self._db.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE priority >= ?"
                " ORDER BY seq LIMIT ?)",
                (PRIORITY_TELEMETRY, excess),
            ).rowcount
        if excess > 0:
            # delivery = "backend": then guaranteed rows the broker took but the backend has
            # not acknowledged, oldest first, never a sale, an order or a result. A replay of
            # them finds them gone; each stream counts what it gave up.
            kept = ",".join("?" * len(NEVER_DROPPED))
            dropped = self._db.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE sent_at IS NOT"
                f" NULL AND stream NOT IN ({kept}) ORDER BY seq LIMIT ?) RETURNING stream",
                (*sorted(NEVER_DROPPED), excess),
            ).fetchall()
            for (stream,) in dropped:
                self._db.execute(
                    "UPDATE outbox_streams SET dropped = dropped + 1 WHERE stream = ? AND key = ''",
                    (stream,),
                )
