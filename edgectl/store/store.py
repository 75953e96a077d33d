"""The station's durable store: authorizations, sales, totals, alarms and the outbox in SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from edgectl.errors import StoreError
from edgectl.forecourt.sale import (
    Authorization,
    AuthorizationSource,
    AuthorizationState,
    Sale,
)
from edgectl.store.schema import MIGRATIONS

# Outbox priorities: lower is more important. Sales and command results are never dropped.
PRIORITY_SALE = 0
PRIORITY_EVENT = 1
PRIORITY_TELEMETRY = 2


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class RecordedSale:
    id: int
    created: bool  # False: this sale was already recorded (a re-read after restart)
    totals_alarm: str | None  # why the nozzle's totals disagree with the sale, if they do


class Store:
    """One SQLite connection in WAL mode with synchronous=FULL.

    Every method that changes state runs in one IMMEDIATE transaction, so a state change and
    the outbox rows describing it land together or not at all. Not thread-safe: the daemon
    calls it from a single worker thread.
    """

    def __init__(self, path: Path | str, *, clock: Callable[[], str] = utc_now) -> None:
        self.path = Path(path)
        self._clock = clock
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._check_integrity()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open the store {self.path}: {exc}. The file may be corrupt: "
                "check it with `edgectl db check` or restore a backup",
                code="store_open",
            ) from exc

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        self._db.close()

    def _check_integrity(self) -> None:
        row = self._db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {row[0] if row else '?'}")

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this edgectl "
                f"({len(MIGRATIONS)}): upgrade edgectl",
                code="store_version",
            )
        for number in range(version, len(MIGRATIONS)):
            with self.transaction() as db:
                db.executescript_in_tx(MIGRATIONS[number])
                db.execute(f"PRAGMA user_version={number + 1}")

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot start a transaction: {exc}") from exc
        try:
            yield _Tx(self._db)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise StoreError(f"commit failed: {exc}") from exc

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self._db.execute(sql, params).fetchall()]

    # ------------------------------------------------------------------ authorizations
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
    ) -> Authorization:
        """The durable record of why a pump is about to be authorized; written before the act."""
        now = self._clock()
        with self.transaction() as tx:
            cur = tx.execute(
                "INSERT INTO authorizations (pump, source, state, nozzles, preset_amount,"
                " preset_volume, order_id, requested_by, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    pump,
                    source.value,
                    AuthorizationState.REQUESTED.value,
                    json.dumps(list(nozzles)),
                    _text(preset_amount),
                    _text(preset_volume),
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

    def update_authorization(
        self, auth_id: int, state: AuthorizationState, reason: str | None = None
    ) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE authorizations SET state = ?, reason = COALESCE(?, reason),"
                " updated_at = ? WHERE id = ?",
                (state.value, reason, self._clock(), auth_id),
            )

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

    # ------------------------------------------------------------------ sales
    def record_sale(self, sale: Sale) -> RecordedSale:
        """Commit a sale, close its authorization, move the nozzle's totals, queue its event.

        Idempotent: the same sale (same nozzle totals, or same authorization) read again
        after a restart returns the existing row and changes nothing.
        """
        now = self._clock()
        with self.transaction() as tx:
            existing = tx.execute(
                "SELECT id FROM sales WHERE uid = ? OR (authorization_id IS NOT NULL"
                " AND authorization_id = ?)",
                (sale.uid, sale.authorization_id),
            ).fetchone()
            if existing is not None:
                return RecordedSale(int(existing[0]), created=False, totals_alarm=None)
            before = tx.execute(
                "SELECT volume, amount FROM nozzle_totals WHERE pump = ? AND nozzle = ?",
                (sale.pump, sale.nozzle),
            ).fetchone()
            before_volume = _dec(before[0]) if before else None
            before_amount = _dec(before[1]) if before else None
            cur = tx.execute(
                "INSERT INTO sales (uid, pump, nozzle, grade, volume, amount, unit_price,"
                " currency, authorization_id, price_set_id, total_volume_before,"
                " total_volume_after, total_amount_before, total_amount_after, ended_at,"
                " recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    _text(before_volume),
                    _text(sale.total_volume_after),
                    _text(before_amount),
                    _text(sale.total_amount_after),
                    sale.ended_at,
                    now,
                ),
            )
            sale_id = int(cur.lastrowid or 0)
            if sale.authorization_id is not None:
                tx.execute(
                    "UPDATE authorizations SET state = 'completed', sale_id = ?, updated_at = ?"
                    " WHERE id = ?",
                    (sale_id, now, sale.authorization_id),
                )
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
            tx.outbox("sale", PRIORITY_SALE, _sale_event(sale_id, sale), now)
        return RecordedSale(sale_id, created=True, totals_alarm=alarm)

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

    # ------------------------------------------------------------------ totals
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

    # ------------------------------------------------------------------ alarms and outbox
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

    def alarms(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT * FROM alarms"
        if active_only:
            sql += " WHERE cleared_at IS NULL"
        return self.query(sql + " ORDER BY id")

    def outbox_depth(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


class _Tx:
    """The statements available inside one transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def executescript_in_tx(self, script: str) -> None:
        # executescript() would COMMIT first; run the statements one by one instead.
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)

    def set_totals(
        self, pump: int, nozzle: int, volume: Decimal, amount: Decimal, now: str
    ) -> None:
        self._db.execute(
            "INSERT INTO nozzle_totals (pump, nozzle, volume, amount, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (pump, nozzle) DO UPDATE SET"
            " volume = excluded.volume, amount = excluded.amount, updated_at = excluded.updated_at",
            (pump, nozzle, str(volume), str(amount), now),
        )

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
        self.outbox(
            "alarm",
            PRIORITY_EVENT,
            {
                "alarm_id": alarm_id,
                "kind": kind,
                "severity": severity,
                "pump": pump,
                "nozzle": nozzle,
                "message": message,
                "raised_at": now,
            },
            now,
        )
        return alarm_id

    def outbox(self, stream: str, priority: int, payload: dict[str, Any], now: str) -> int:
        cur = self._db.execute(
            "INSERT INTO outbox (stream, priority, payload, created_at) VALUES (?, ?, ?, ?)",
            (stream, priority, json.dumps(payload, separators=(",", ":")), now),
        )
        return int(cur.lastrowid or 0)


def _authorization(row: sqlite3.Row) -> Authorization:
    return Authorization(
        id=row["id"],
        pump=row["pump"],
        source=AuthorizationSource(row["source"]),
        state=AuthorizationState(row["state"]),
        nozzles=tuple(json.loads(row["nozzles"])),
        preset_amount=_dec(row["preset_amount"]),
        preset_volume=_dec(row["preset_volume"]),
        order_id=row["order_id"],
        requested_by=row["requested_by"],
        created_at=row["created_at"],
    )


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


def _sale_event(sale_id: int, sale: Sale) -> dict[str, Any]:
    return {
        "sale_id": sale_id,
        "uid": sale.uid,
        "pump": sale.pump,
        "nozzle": sale.nozzle,
        "grade": sale.grade,
        "volume": str(sale.volume),
        "amount": str(sale.amount),
        "unit_price": str(sale.unit_price),
        "currency": sale.currency,
        "authorization_id": sale.authorization_id,
        "price_set_id": sale.price_set_id,
        "total_volume_after": _text(sale.total_volume_after),
        "total_amount_after": _text(sale.total_amount_after),
        "ended_at": sale.ended_at,
    }
