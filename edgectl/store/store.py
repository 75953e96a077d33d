"""The station's durable store: authorizations, sales, totals, alarms and the outbox in SQLite."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from edgectl.errors import (
    CommandError,
    StoreError,
    StoreMissingError,
    StoreNewerSchemaError,
    StoreUnwritableError,
)
from edgectl.forecourt.authorization import ORDER_REASON, ORDER_STATUS
from edgectl.forecourt.sale import (
    Authorization,
    AuthorizationSource,
    AuthorizationState,
    Sale,
)
from edgectl.logs import get_logger
from edgectl.store import faults, files, identity
from edgectl.store.faults import WriteFault
from edgectl.store.messages import Message, NoOutboxMessages, OutboxMessages
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


class OrderExists(StoreError):
    """A pay-at-pump order id that is taken already (by an order of another command)."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    stream: str
    priority: int
    payload: str
    created_at: str
    key: str | None
    topic: str | None
    retain: int
    correlation: bytes | None
    # Contract 1.1: the row's place in its guaranteed stream, or the version of its key of a
    # latest-value state (exactly one of the two is set).
    stream_seq: int | None = None
    version: int | None = None


# Over the disk quota in delivery = "backend", a row the broker took may be given up before the
# backend acknowledged it, except these (the records a station's money depends on).
NEVER_DROPPED = frozenset({"sale", "order", "result"})
_ROW_COLUMNS = (
    "seq, stream, priority, payload, created_at, key, topic, retain, correlation,"
    " stream_seq, version"
)


@dataclass(frozen=True, slots=True)
class RecordedSale:
    id: int
    created: bool  # False: this sale was already recorded (a re-read after restart)
    totals_alarm: str | None  # why the nozzle's totals disagree with the sale, if they do
    # Not created because a *different* sale holds this one's identity (same nozzle totals
    # or same authorization, other figures): this fill is not recorded, say why.
    conflict: str | None = None


class Store:
    """One SQLite connection in WAL mode with synchronous=FULL.

    Every method that changes state runs in one IMMEDIATE transaction, so a state change and
    the outbox rows describing it land together or not at all. Not thread-safe: the daemon
    calls it from a single worker thread.

    Opening checks first, read-only, that the store is this station's own and sound
    (`identity.inspect`), then proves it can write. Every failure is a typed StoreError
    (`faults`); while running, one that means the store cannot write (disk full, permissions,
    I/O) is kept as `write_fault`: logged once, writes refused without touching the disk
    until a jittered, capped back-off has passed, and recorded as a `store_unwritable` alarm
    (raised and cleared) in the first commit that succeeds again.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], str] = utc_now,
        outbox_max_rows: int | None = None,
        station_id: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        messages: OutboxMessages | None = None,
    ) -> None:
        """`station_id`: the config's `[station].id`. A store of another station is refused;
        a store that has none yet adopts it. `messages` shapes the outbox's messages (the
        daemon's: `edgectl.cloud.messages.ContractMessages`); without it, every write that
        would queue one is refused with `NoOutboxMessages` (a store for reading, or for the
        records that tell the cloud nothing)."""
        self.path = Path(path)
        self._messages = messages
        self._clock = clock
        self._monotonic = monotonic
        self.outbox_max_rows = outbox_max_rows
        self.station_id = station_id
        self.write_fault: WriteFault | None = None
        # Called (on the store's thread) when a write fault begins: the station's watch.
        self.on_unwritable: Callable[[], None] = lambda: None
        # Told (on the store's thread) the seconds of each committed write transaction,
        # BEGIN to durable COMMIT: the metrics' commit-time histogram.
        self.on_commit: Callable[[float], None] = lambda seconds: None
        self._opened = False
        self._store_id = 0
        self._touch = "PRAGMA application_id=0"
        self._undeleted: list[int] = []  # acknowledged outbox rows a failed write kept
        self._unsent: list[int] = []  # the same for rows to mark sent (delivery = "backend")
        self.log = get_logger(part="store", store=str(self.path))
        memory = str(path) == ":memory:"
        created = not memory and not self.path.exists()
        header_id = 0
        db: sqlite3.Connection | None = None
        try:
            if not memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                faults.check_writable(self.path)
                identity.inspect(self.path, station_id=station_id, schema_versions=len(MIGRATIONS))
                # Read before SQLite opens the file: closing a descriptor of it afterwards
                # would drop every POSIX lock this process holds on it, SQLite's too.
                header_id = 0 if created else identity.header_store_id(self.path)
                self._keep_private(created)
            db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db = db
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._set_store_id(int(self._db.execute("PRAGMA application_id").fetchone()[0]))
            self._migrate()
            self._ensure_identity(None if memory else header_id)
            self.probe()  # a write: a store that cannot take one is refused now, not mid-sale
            self._peek = self._db if memory else self._reader_connection()
        except BaseException as exc:
            if db is not None:
                db.close()
            if created:  # a new store that could not be made: leave no half-made file
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            if isinstance(exc, StoreError | sqlite3.Error | OSError):
                raise faults.translate(exc, self.path, doing="open") from exc
            raise
        self._opened = True

    def _keep_private(self, created: bool) -> None:
        """The store's files are 0640 whatever the umask (SQLite would make them 0644 under
        the usual 022): a new database file is created so before SQLite opens it, and a store
        others may read is tightened, once, with one log line."""
        if created:
            files.create_database(self.path)
            return
        try:
            changed = files.tighten(self.path)
        except OSError as exc:
            self.log.warning("store_mode_not_tightened", error=str(exc))
            return
        if changed:
            self.log.warning(
                "store_mode_tightened",
                files={str(path): f"{old:04o} -> {new:04o}" for path, old, new in changed},
            )

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        if self._peek is not self._db:
            self._peek.close()
        self._db.close()

    def _reader_connection(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=10.0)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA query_only=ON")
        return db

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreNewerSchemaError(
                f"{self.path} has schema version {version}, newer than this edgectl knows "
                f"({len(MIGRATIONS)}): upgrade edgectl, or restore a backup this version wrote",
                path=self.path,
            )
        for number in range(version, len(MIGRATIONS)):
            with self.transaction() as db:
                db.executescript_in_tx(MIGRATIONS[number])
                db.execute(f"PRAGMA user_version={number + 1}")

    def _set_store_id(self, value: int) -> None:
        self._store_id = value & 0xFFFFFFFF
        # Every write transaction rewrites page 1 with it: see `identity` for why.
        self._touch = f"PRAGMA application_id={identity.application_id(self._store_id)}"

    def _ensure_identity(self, header_id: int | None) -> None:
        """Give a store without identity (new, or written before there was one) its store id
        and this station's id; make sure the main file's header (`header_id` as read before
        opening; None in memory) carries the store id."""
        known = {
            str(key): str(value)
            for key, value in self._db.execute(
                "SELECT key, value FROM meta WHERE key IN ('store_id', 'station_id')"
            )
        }
        if self._store_id == 0:
            self._set_store_id(identity.mint_store_id())
        wanted = {"store_id": identity.store_id_text(self._store_id)}
        if self.station_id is not None and "station_id" not in known:
            wanted["station_id"] = self.station_id
        missing = {k: v for k, v in wanted.items() if known.get(k) != v}
        if missing:
            with self.transaction() as tx:
                for key, value in missing.items():
                    tx.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
                    )
        if self.station_id is None:
            self.station_id = known.get("station_id")
        if header_id is not None and header_id != self._store_id:
            # Into the main file now, before any -wal could be judged against its header.
            # (Busy readers can hold it back: the next start finds it in the -wal, judged by
            # the station id, and checkpoints again.)
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @property
    def store_id(self) -> str:
        """This store's random id (hex), in its header and in `meta`."""
        return identity.store_id_text(self._store_id)

    @property
    def epoch(self) -> str:
        """A random id taken when this store was created; part of every outgoing msg_id."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        return str(row[0])

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """One IMMEDIATE transaction; it also rewrites page 1 with the store id (`identity`).

        A failure is a typed StoreError and leaves no transaction open. While `write_fault`
        holds, writes are refused at once until its back-off has passed; the first commit
        that succeeds again carries the fault's alarm, raised before and cleared after the
        transaction's own rows.
        """
        fault = self.write_fault
        if fault is not None and self._monotonic() < fault.next_attempt:
            raise fault.refusal()
        tx = _Tx(self._db, self._messages, self.outbox_max_rows)
        alarm_id = 0
        began = time.perf_counter()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(self._touch)
            if fault is not None:
                alarm_id = tx.fault_raised(fault)
        except sqlite3.Error as exc:
            raise self._write_failed(exc) from exc
        except BaseException:
            self._rollback()
            raise
        try:
            yield tx
            if fault is not None:
                tx.fault_cleared(alarm_id, fault, self._clock())
        except sqlite3.Error as exc:
            raise self._write_failed(exc) from exc
        except BaseException:
            self._rollback()
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._write_failed(exc) from exc
        self.on_commit(time.perf_counter() - began)
        if fault is not None:
            self.write_fault = None
            self.log.info(
                "store_writable_again",
                code=fault.error.code,
                failed_writes=fault.failures,
                unwritable_s=round(self._monotonic() - fault.started, 1),
            )

    def probe(self) -> None:
        """A write that changes nothing but page 1: whether the store can write now."""
        with self.transaction():
            pass

    def next_write_in(self) -> float | None:
        """Seconds until a write may try the disk again; None while the store writes."""
        fault = self.write_fault
        return None if fault is None else max(0.0, fault.next_attempt - self._monotonic())

    def _rollback(self) -> None:
        # SQLite rolls a transaction back by itself after some errors (a full disk, I/O):
        # a ROLLBACK then would fail with "no transaction is active".
        if self._db.in_transaction:
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def _write_failed(self, exc: sqlite3.Error) -> StoreError:
        self._rollback()
        error = faults.translate(exc, self.path, doing="write")
        if not (self._opened and isinstance(error, StoreUnwritableError)):
            return error
        now = self._monotonic()
        fault = self.write_fault
        if fault is None:
            fault = self.write_fault = WriteFault(error, self._clock(), now)
            fault.failed(error, now)
            self.log.error(
                "store_unwritable",
                code=error.code,
                reason=str(error),
                detail=error.detail,
                hint="sales are held at the pumps and no pump is authorized until it can write",
            )
            self.on_unwritable()
        elif fault.failed(error, now):
            self.log.error("store_unwritable", code=error.code, reason=str(error))
        return error

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
        serves_lift: bool = False,
    ) -> Authorization:
        """The durable record of why a pump is about to be authorized; written before the act.

        `serves_lift`: this authorization serves the nozzle lift now in progress (auto mode),
        recorded in the same commit: that lift is never served again, even after a restart,
        until the nozzle is hung up (`lift_ended`).
        """
        now = self._clock()
        with self.transaction() as tx:
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

    # ------------------------------------------------------------------ cloud orders
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

    # ------------------------------------------------------------------ prices
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

    # ------------------------------------------------------------------ command inbox
    def command_result(self, cmd_id: str) -> dict[str, Any] | None:
        """The stored outcome of a command already received, or None if it is new."""
        rows = self.query("SELECT * FROM inbox WHERE cmd_id = ?", (cmd_id,))
        return rows[0] if rows else None

    def peek_command(self, cmd_id: str) -> dict[str, Any] | None:
        """`command_result` for the event-loop thread: its own read-only connection sees only
        committed rows and never waits for the store thread (WAL), so a new command costs no
        store-thread hop. The commands before it are committed: they are handled one at a
        time, and the `INSERT OR IGNORE` that persists one settles any race with a restart."""
        try:
            row = self._peek.execute("SELECT * FROM inbox WHERE cmd_id = ?", (cmd_id,)).fetchone()
        except sqlite3.Error as exc:
            raise faults.translate(exc, self.path, doing="read") from exc
        return None if row is None else dict(row)

    def receive_command(self, cmd_id: str, type_: str, payload: str) -> bool:
        """Persist a command before anything acts on it; False when the id was seen before."""
        with self.transaction() as tx:
            cur = tx.execute(
                "INSERT OR IGNORE INTO inbox (cmd_id, type, payload, received_at)"
                " VALUES (?, ?, ?, ?)",
                (cmd_id, type_, payload, self._clock()),
            )
            return cur.rowcount == 1

    def finish_command(
        self,
        cmd_id: str,
        result: dict[str, Any],
        *,
        topic: str | None = None,
        correlation: bytes | None = None,
        payload: str = "{}",
    ) -> None:
        """Store a command's result and queue it for the cloud, in one transaction.

        `payload` is the command, kept when it was not persisted before (refused before it
        acted): a repeat of it is then compared with it, as for any other command."""
        now = self._clock()
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO inbox (cmd_id, type, payload, received_at, status, code, message,"
                " result, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (cmd_id) DO UPDATE SET status = excluded.status,"
                " code = excluded.code, message = excluded.message, result = excluded.result,"
                " completed_at = excluded.completed_at",
                (
                    cmd_id,
                    result.get("type", ""),
                    payload,
                    now,
                    result.get("status"),
                    result.get("code"),
                    result.get("message"),
                    json.dumps(result, separators=(",", ":")),
                    now,
                ),
            )
            message = tx.messages.shaped("result", result)
            tx.outbox(message, PRIORITY_SALE, now, topic=topic, correlation=correlation)

    def queue_result(
        self, result: dict[str, Any], *, topic: str | None = None, correlation: bytes | None = None
    ) -> None:
        """Queue a result without storing it in the inbox (a command that could not be parsed)."""
        with self.transaction() as tx:
            message = tx.messages.shaped("result", result)
            tx.outbox(message, PRIORITY_SALE, self._clock(), topic=topic, correlation=correlation)

    def purge_inbox(self, before: str) -> int:
        """Forget answered commands received before `before`. Housekeeping: on a store that
        cannot write it purges nothing (0) and the next purge catches up."""
        try:
            with self.transaction() as tx:
                return tx.execute(
                    "DELETE FROM inbox WHERE received_at < ? AND completed_at IS NOT NULL",
                    (before,),
                ).rowcount
        except StoreUnwritableError:
            return 0

    def queue_event(
        self,
        stream: str,
        payload: dict[str, Any],
        *,
        priority: int = PRIORITY_EVENT,
        key: str | None = None,
        retain: bool = False,
    ) -> int:
        with self.transaction() as tx:
            message = tx.messages.shaped(stream, payload, key=key, retain=retain)
            return tx.outbox(message, priority, self._clock())

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
                "SELECT id, nozzle, volume, amount FROM sales WHERE uid = ? OR"
                " (authorization_id IS NOT NULL AND authorization_id = ?)",
                (sale.uid, sale.authorization_id),
            ).fetchone()
            if existing is not None:
                same = (int(existing[1]), Decimal(existing[2]), Decimal(existing[3])) == (
                    sale.nozzle,
                    sale.volume,
                    sale.amount,
                )
                conflict = None
                if not same:
                    conflict = (
                        f"sale {existing[0]} (nozzle {existing[1]}, {existing[2]} L,"
                        f" {existing[3]}) has the identity of this fill (nozzle {sale.nozzle},"
                        f" {sale.volume} L, {sale.amount})"
                    )
                return RecordedSale(
                    int(existing[0]), created=False, totals_alarm=None, conflict=conflict
                )
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

    # ------------------------------------------------------------------ tanks (issue 4)
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
        params = _column_values(values, cols)
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
        params = _column_values(values, cols)
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
        params = _column_values(values, cols)
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

    def alarms(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        """The alarms, oldest first; while the store cannot write, its own alarm (kept in
        memory until it can be recorded) comes last."""
        sql = "SELECT * FROM alarms"
        if active_only:
            sql += " WHERE cleared_at IS NULL"
        return self.query(sql + " ORDER BY id") + self._fault_alarms()

    def _fault_alarms(self) -> list[dict[str, Any]]:
        return [] if self.write_fault is None else [self.write_fault.alarm()]

    def outbox_depth(self) -> int:
        """Rows waiting to be sent (not those the broker took that wait for the backend)."""
        return int(
            self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
        )

    def outbox_oldest(self) -> str | None:
        row = self._db.execute("SELECT created_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def outbox_after(self, cursors: dict[int, int], limit: int) -> list[OutboxRow]:
        """The next rows of each priority class past its cursor, interleaved.

        Each class is read in seq order; the classes take turns, more important first, so a
        backlog of old events replays in order while newer live state still gets through.
        """
        per_class: list[list[OutboxRow]] = []
        for priority in (PRIORITY_SALE, PRIORITY_EVENT, PRIORITY_TELEMETRY):
            cur = self._db.execute(
                f"SELECT {_ROW_COLUMNS} FROM outbox WHERE priority = ? AND seq > ?"
                " AND sent_at IS NULL ORDER BY seq LIMIT ?",
                (priority, cursors.get(priority, 0), limit),
            )
            per_class.append([OutboxRow(*row) for row in cur.fetchall()])
        merged: list[OutboxRow] = []
        while len(merged) < limit and any(per_class):
            for rows in per_class:
                if rows and len(merged) < limit:
                    merged.append(rows.pop(0))
        return merged

    def outbox_delete(self, seqs: list[int]) -> None:
        """Delete rows the broker acknowledged. On a store that cannot write they are kept
        and deleted with the next acknowledged ones: the publisher can do nothing better with
        the error, and a row not deleted is at worst sent again, with its msg_id."""
        seqs = self._undeleted + list(seqs)
        if not seqs:
            return
        try:
            with self.transaction() as tx:
                for start in range(0, len(seqs), 500):
                    chunk = seqs[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    tx.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", tuple(chunk))
        except StoreUnwritableError:
            self._undeleted = sorted(set(seqs))
            return
        self._undeleted = []

    def outbox_sent(self, seqs: list[int]) -> None:
        """With delivery = "backend": rows the broker acknowledged. A guaranteed row is kept,
        marked sent, until the backend acknowledges its seq (`outbox_ack`); a latest-value row
        is done. Kept for the next call when the store cannot write, as `outbox_delete`."""
        seqs = self._unsent + list(seqs)
        if not seqs:
            return
        now = self._clock()
        try:
            with self.transaction() as tx:
                for start in range(0, len(seqs), 500):
                    chunk = tuple(seqs[start : start + 500])
                    marks = ",".join("?" * len(chunk))
                    tx.execute(
                        f"DELETE FROM outbox WHERE seq IN ({marks}) AND stream_seq IS NULL", chunk
                    )
                    tx.execute(
                        f"UPDATE outbox SET sent_at = ? WHERE seq IN ({marks})", (now, *chunk)
                    )
        except StoreUnwritableError:
            self._unsent = sorted(set(seqs))
            return
        self._unsent = []

    def outbox_forget_sent(self) -> int:
        """With delivery = "broker": rows kept for a backend's ack under delivery = "backend"
        are done (the broker took them); how many were deleted."""
        with self.transaction() as tx:
            return tx.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL").rowcount

    def outbox_ack(self, stream: str, seq: int) -> dict[str, int]:
        """The backend holds every message of `stream` up to `seq`: delete them, raise the
        stream's watermark. `last_seq`, `acked_seq` (after), `removed`; an ack past the
        stream's last seq changes nothing (`ahead`: 1) — the backend counts another store."""
        with self.transaction() as tx:
            row = tx.execute(
                "SELECT last_seq, acked_seq FROM outbox_streams WHERE stream = ? AND key = ''",
                (stream,),
            ).fetchone()
            last, acked = (0, 0) if row is None else (int(row[0]), int(row[1]))
            if seq > last:
                return {"last_seq": last, "acked_seq": acked, "removed": 0, "ahead": 1}
            removed = tx.execute(
                "DELETE FROM outbox WHERE stream = ? AND stream_seq <= ?", (stream, seq)
            ).rowcount
            if seq > acked:
                tx.execute(
                    "UPDATE outbox_streams SET acked_seq = ? WHERE stream = ? AND key = ''",
                    (seq, stream),
                )
                acked = seq
            return {"last_seq": last, "acked_seq": acked, "removed": removed, "ahead": 0}

    def outbox_replay(self, stream: str, first: int, last: int) -> dict[str, int]:
        """Send the held messages of `stream` from seq `first` to `last` again (they become
        waiting, with their msg_ids). `asked` (the range cut at the stream's last seq),
        `held` (how many of those are still here and now waiting again), `last_seq`."""
        with self.transaction() as tx:
            row = tx.execute(
                "SELECT last_seq FROM outbox_streams WHERE stream = ? AND key = ''", (stream,)
            ).fetchone()
            top = 0 if row is None else int(row[0])
            end = min(last, top)
            asked = max(0, end - first + 1)
            held = 0
            if asked:
                held = tx.execute(
                    "SELECT COUNT(*) FROM outbox WHERE stream = ? AND stream_seq BETWEEN ? AND ?",
                    (stream, first, end),
                ).fetchone()[0]
                tx.execute(
                    "UPDATE outbox SET sent_at = NULL WHERE stream = ?"
                    " AND stream_seq BETWEEN ? AND ? AND sent_at IS NOT NULL",
                    (stream, first, end),
                )
            return {"asked": asked, "held": int(held), "last_seq": top}

    # ------------------------------------------------------------------ audit and reads
    def audit_requested(
        self,
        action: str,
        args: Mapping[str, Any],
        *,
        client_user: str | None,
        peer_uid: int | None,
        peer_user: str | None,
        peer_pid: int | None,
    ) -> int:
        """Record a manual action before it is carried out; its outcome follows."""
        with self.transaction() as tx:
            cur = tx.execute(
                "INSERT INTO audit (action, args, client_user, peer_uid, peer_user, peer_pid,"
                " requested_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    action,
                    json.dumps(dict(args), sort_keys=True, default=str),
                    client_user,
                    peer_uid,
                    peer_user,
                    peer_pid,
                    self._clock(),
                ),
            )
            return int(cur.lastrowid or 0)

    def audit_finished(self, audit_id: int, outcome: str, message: str | None) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE audit SET outcome = ?, message = ?, finished_at = ? WHERE id = ?",
                (outcome, message, self._clock(), audit_id),
            )

    # ------------------------------------------------------------------ shifts (issue 16)
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

    # ------------------------------------------------------------------ devices (issue 11)
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

    def record_device_activity(
        self,
        states: Sequence[Mapping[str, Any]],
        events: Sequence[Mapping[str, Any]],
        counts: Sequence[tuple[str, str, str, int]],
        *,
        keep_events: int = 200,
        counts_since: str | None = None,
    ) -> None:
        """What the device monitor gathered since its last flush, in one commit: each
        device's state (upserted), its new events (the newest `keep_events` per device are
        kept), its error counts (device, 10-minute bucket, kind, n: added; buckets before
        `counts_since` deleted)."""
        now = self._clock()
        with self.transaction() as tx:
            for state in states:
                tx.execute(
                    "INSERT INTO device_state (device, kind, online, fault, reason, last_seen_at,"
                    " offline_since, online_since, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (device) DO UPDATE SET kind = excluded.kind,"
                    " online = excluded.online, fault = excluded.fault,"
                    " reason = excluded.reason,"
                    " last_seen_at = COALESCE(excluded.last_seen_at, last_seen_at),"
                    " offline_since = COALESCE(excluded.offline_since, offline_since),"
                    " online_since = COALESCE(excluded.online_since, online_since),"
                    " updated_at = excluded.updated_at",
                    (
                        state["device"],
                        state["kind"],
                        state.get("online"),
                        state.get("fault"),
                        state.get("reason"),
                        state.get("last_seen_at"),
                        state.get("offline_since"),
                        state.get("online_since"),
                        now,
                    ),
                )
            devices = set()
            for event in events:
                devices.add(event["device"])
                tx.execute(
                    "INSERT INTO device_events (device, at, event, kind, count, message)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        event["device"],
                        event["at"],
                        event["event"],
                        event.get("kind"),
                        event.get("count", 1),
                        event.get("message"),
                    ),
                )
            for device in sorted(devices):
                tx.execute(
                    "DELETE FROM device_events WHERE device = ? AND id <= (SELECT id FROM"
                    " device_events WHERE device = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (device, device, keep_events),
                )
            for device, bucket, kind, n in counts:
                tx.execute(
                    "INSERT INTO device_counts (device, bucket, kind, count) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (device, bucket, kind) DO UPDATE SET count = count + ?",
                    (device, bucket, kind, n, n),
                )
            if counts_since is not None:
                tx.execute("DELETE FROM device_counts WHERE bucket < ?", (counts_since,))

    @property
    def reader(self) -> StoreReader:
        """The read-only queries over this store's connection (call them on the store thread)."""
        return StoreReader(self._db, self._fault_alarms)


class StoreReader:
    """Read-only queries for the technician's screens, over any connection to a store.

    The daemon runs them on its own connection (through its store thread); the CLI runs them
    on a read-only connection of its own when the daemon is not running (`open_read_only`).
    Lists are capped by `limit` and come oldest first, the newest `limit` rows when capped.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        unrecorded_alarms: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        """`unrecorded_alarms`: alarms not in the table yet (the running store's own while
        it cannot write), listed as active alarms."""
        self._db = db
        self._unrecorded_alarms = unrecorded_alarms

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cur = self._db.execute(sql, params)
        names = [column[0] for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def sales(
        self, *, since: str | None = None, pump: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        where, params = _filters(("recorded_at >=", since), ("pump =", pump))
        return self._newest(f"SELECT * FROM sales{where}", params, "id", limit)

    def orders(
        self, *, status: str | None = None, since: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        where, params = _filters(("status =", status), ("created_at >=", since))
        return self._newest(f"SELECT * FROM orders{where}", params, "created_at", limit)

    def alarms(
        self, *, active_only: bool = False, limit: int | None = None
    ) -> list[dict[str, Any]]:
        where = " WHERE cleared_at IS NULL" if active_only else ""
        rows = self._newest(f"SELECT * FROM alarms{where}", (), "id", limit)
        rows += self._unrecorded_alarms()  # the newest, whatever the table holds
        return rows if limit is None else rows[-limit:]

    def audit(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        return self._newest("SELECT * FROM audit", (), "id", limit)

    def outbox(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The oldest rows held: waiting for the broker, or (sent_at set) for the backend's
        ack (payload size, not payload)."""
        sql = (
            "SELECT seq, stream, stream_seq, version, priority, created_at, sent_at, key, topic,"
            " retain, length(payload) AS bytes FROM outbox ORDER BY seq"
        )
        if limit is None:
            return self._rows(sql)
        return self._rows(sql + " LIMIT ?", (limit,))

    def outbox_summary(self) -> dict[str, Any]:
        """`depth` rows held, `waiting` of them not sent yet, the oldest row's time, rows per
        stream, and per guaranteed stream its sequence: `last_seq`, the backend's `acked_seq`,
        `unacked` rows held (sent or not) and the oldest one's time, `dropped` over quota."""
        depth, oldest = self._db.execute(
            "SELECT COUNT(*), (SELECT created_at FROM outbox ORDER BY seq LIMIT 1) FROM outbox"
        ).fetchone()
        waiting = self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()
        streams = {
            str(stream): int(count)
            for stream, count in self._db.execute(
                "SELECT stream, COUNT(*) FROM outbox GROUP BY stream ORDER BY stream"
            )
        }
        sequences: dict[str, dict[str, Any]] = {}
        for row in self._rows(
            "SELECT s.stream, s.last_seq, s.acked_seq, s.dropped,"
            " (SELECT COUNT(*) FROM outbox o WHERE o.stream = s.stream"
            " AND o.stream_seq IS NOT NULL) AS unacked,"
            " (SELECT COUNT(*) FROM outbox o WHERE o.stream = s.stream AND o.sent_at IS NOT NULL)"
            " AS sent,"
            " (SELECT MIN(created_at) FROM outbox o WHERE o.stream = s.stream"
            " AND o.stream_seq IS NOT NULL) AS oldest_unacked_at"
            " FROM outbox_streams s WHERE s.key = '' ORDER BY s.stream"
        ):
            sequences[str(row.pop("stream"))] = row
        return {
            "depth": int(depth),
            "waiting": int(waiting[0]),
            "oldest_at": oldest,
            "streams": streams,
            "sequences": sequences,
        }

    def metrics_figures(self, after_sale: int) -> dict[str, Any]:
        """What the metrics read from the store, in one short visit: the outbox's rows held
        and its oldest row's time, and the sales after id `after_sale` by grade (count,
        litres, highest id), so each scrape reads only the sales new since the last."""
        depth, oldest = self._db.execute(
            "SELECT COUNT(*), (SELECT created_at FROM outbox ORDER BY seq LIMIT 1) FROM outbox"
        ).fetchone()
        sales = [
            (str(grade), int(count), float(litres), int(last))
            for grade, count, litres, last in self._db.execute(
                "SELECT grade, COUNT(*), total(volume), MAX(id) FROM sales WHERE id > ?"
                " GROUP BY grade ORDER BY grade",
                (after_sale,),
            )
        ]
        return {"outbox_depth": int(depth), "outbox_oldest_at": oldest, "sales": sales}

    def purged_sales(self) -> dict[str, tuple[int, float]]:
        """Sales and litres per grade of the sales retention deleted (`purge_old_records`):
        with the sales still held, what the store has sold since it began."""
        found: dict[str, tuple[int, float]] = {}
        for key, value in self._db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?",
            (len(PURGED_SALES_KEY), PURGED_SALES_KEY),
        ):
            count, litres = str(value).split()
            found[str(key).removeprefix(PURGED_SALES_KEY)] = (int(count), float(litres))
        return found

    def newest_record_at(self) -> str | None:
        """When the newest sale, alarm or outbox message was written (for the clock check)."""
        row = self._db.execute(
            "SELECT MAX(t) FROM (SELECT MAX(recorded_at) AS t FROM sales"
            " UNION ALL SELECT MAX(raised_at) FROM alarms"
            " UNION ALL SELECT MAX(created_at) FROM outbox)"
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def device_history(
        self, *, now: datetime, device: str | None = None, last: int = 10
    ) -> list[dict[str, Any]]:
        """Each device's state, its error counts by kind over the hour and the day before
        `now` (10-minute buckets: a count may be up to 10 minutes older), and its `last`
        newest events, newest first; one device, or all in their order of appearance."""
        where, params = _filters(("device =", device))
        states = self._rows(f"SELECT * FROM device_state{where} ORDER BY rowid", params)
        hour = device_bucket(now - timedelta(hours=1))
        day = device_bucket(now - timedelta(days=1))
        for state in states:
            name = state["device"]
            for label, since in (("errors_last_hour", hour), ("errors_last_day", day)):
                state[label] = {
                    str(kind): int(n)
                    for kind, n in self._db.execute(
                        "SELECT kind, SUM(count) FROM device_counts WHERE device = ?"
                        " AND bucket >= ? GROUP BY kind ORDER BY kind",
                        (name, since),
                    )
                }
            state["events"] = self._rows(
                "SELECT at, event, kind, count, message FROM device_events WHERE device = ?"
                " ORDER BY id DESC LIMIT ?",
                (name, last),
            )
        return states

    # -- the records of issue 16: deliveries, reconciliations, totals, shifts, reports
    def deliveries(
        self, *, since: str | None = None, tank: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Deliveries that ended at or after `since` (any ISO time), oldest first."""
        rows = self._rows(
            "SELECT * FROM deliveries WHERE (? IS NULL OR tank = ?) ORDER BY end_at, id",
            (tank, tank),
        )
        if since is not None:
            cut = _moment(since)
            rows = [r for r in rows if _moment(r["end_at"]) >= cut]
        return rows if limit is None else rows[-limit:]

    def reconciliations(
        self, *, tank: int | None = None, since_day: str | None = None
    ) -> list[dict[str, Any]]:
        """The kept daily reconciliations from `since_day` (YYYY-MM-DD) on, by day and tank."""
        where, params = _filters(("tank =", tank), ("day >=", since_day))
        return self._rows(f"SELECT * FROM reconciliations{where} ORDER BY day, tank", params)

    def tank_latest(self) -> dict[int, dict[str, Any]]:
        """Each tank's last plausible reading kept by the daemon, by tank number."""
        return {int(r["tank"]): r for r in self._rows("SELECT * FROM tank_latest ORDER BY tank")}

    def nozzle_totals(self) -> list[dict[str, Any]]:
        """Each nozzle's electronic totals as last read (`updated_at`), with its last sale
        that carried totals and its last totals alarm (`totals_mismatch`: a sale that did not
        match them; `missed_sale`: totals that moved with no sale), by pump and nozzle."""
        totals = self._rows("SELECT * FROM nozzle_totals ORDER BY pump, nozzle")
        for row in totals:
            sale = self._rows(
                "SELECT id, ended_at, recorded_at, volume, amount, total_volume_before,"
                " total_volume_after, total_amount_before, total_amount_after FROM sales"
                " WHERE pump = ? AND nozzle = ? AND total_volume_after IS NOT NULL"
                " ORDER BY id DESC LIMIT 1",
                (row["pump"], row["nozzle"]),
            )
            alarm = self._rows(
                "SELECT id, kind, severity, message, raised_at, cleared_at FROM alarms"
                " WHERE pump = ? AND nozzle = ? AND kind IN ('totals_mismatch', 'missed_sale')"
                " ORDER BY id DESC LIMIT 1",
                (row["pump"], row["nozzle"]),
            )
            row["last_sale"] = sale[0] if sale else None
            row["last_alarm"] = alarm[0] if alarm else None
        return totals

    def shifts(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The shifts, oldest first (without their totals)."""
        return self._newest("SELECT * FROM shifts", (), "id", limit)

    def shift(self, shift_id: int | None = None) -> dict[str, Any] | None:
        """One shift with its nozzles' totals at opening and closing (`open_totals`,
        `close_totals`); without an id the open shift, else the last one; None if none."""
        if shift_id is None:
            found = self._rows(
                "SELECT * FROM shifts ORDER BY closed_at IS NULL DESC, id DESC LIMIT 1"
            )
        else:
            found = self._rows("SELECT * FROM shifts WHERE id = ?", (shift_id,))
        if not found:
            return None
        shift = found[0]
        for moment in ("open", "close"):
            shift[f"{moment}_totals"] = self._rows(
                "SELECT pump, nozzle, grade, volume, amount, source, read_at FROM shift_totals"
                " WHERE shift = ? AND moment = ? ORDER BY pump, nozzle",
                (shift["id"], moment),
            )
        return shift

    def period_rows(self, start: str, end: str) -> dict[str, list[dict[str, Any]]]:
        """What a report of the time from `start` to `end` (ISO) reads, coarsely: rows of the
        UTC dates around it (the caller cuts the period out by time). Sales carry the source
        of their authorization (`authorized_by`: auto, attendant, cloud; null without one);
        readings reach back one day for each tank's opening; alarms are those raised before
        the end and not cleared before the start; reconciliations are the kept days of the
        months the period touches, up to its last day."""
        first = (_moment(start) - timedelta(days=1)).date().isoformat()
        last = (_moment(end) + timedelta(days=1)).date().isoformat()
        span = (first, last)
        month = first[:8] + "01"
        return {
            "sales": self._rows(
                "SELECT s.*, a.source AS authorized_by FROM sales s LEFT JOIN authorizations a"
                " ON a.id = s.authorization_id WHERE substr(s.ended_at, 1, 10) BETWEEN ? AND ?"
                " ORDER BY s.id",
                span,
            ),
            "readings": self._rows(
                "SELECT tank, at, net_l, product_l, gross_l, fill_pct FROM tank_readings"
                " WHERE substr(at, 1, 10) BETWEEN ? AND ? ORDER BY tank, id",
                span,
            ),
            "deliveries": self._rows(
                "SELECT * FROM deliveries WHERE substr(end_at, 1, 10) BETWEEN ? AND ?"
                " ORDER BY end_at, id",
                span,
            ),
            "alarms": self._rows(
                "SELECT * FROM alarms WHERE substr(raised_at, 1, 10) <= ?"
                " AND (cleared_at IS NULL OR substr(cleared_at, 1, 10) >= ?) ORDER BY id",
                (last, first),
            ),
            "reconciliations": self._rows(
                "SELECT * FROM reconciliations WHERE day BETWEEN ? AND ? ORDER BY day, tank",
                (month, last),
            ),
        }

    def _newest(
        self, sql: str, params: tuple[Any, ...], order: str, limit: int | None
    ) -> list[dict[str, Any]]:
        if limit is None:
            return self._rows(f"{sql} ORDER BY {order}", params)
        rows = self._rows(f"{sql} ORDER BY {order} DESC LIMIT ?", (*params, limit))
        rows.reverse()
        return rows


def _moment(iso: str) -> datetime:
    """A stored ISO time (Z or an offset; a time without one is UTC) as an aware datetime."""
    moment = datetime.fromisoformat(iso)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _column_values(values: Mapping[str, Any], cols: tuple[str, ...]) -> tuple[Any, ...]:
    """`values` in column order, as stored: decimals as their text."""
    return tuple(str(values[c]) if isinstance(values[c], Decimal) else values[c] for c in cols)


def _filters(*conditions: tuple[str, object]) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause from (column and operator, value) pairs; None values are left out."""
    used = [(clause, value) for clause, value in conditions if value is not None]
    if not used:
        return "", ()
    where = " WHERE " + " AND ".join(f"{clause} ?" for clause, _ in used)
    return where, tuple(value for _, value in used)


# meta keys `sales_purged:<grade>` = "<sales> <litres>": what retention deleted, kept so that
# the sales and litres sold per grade since the store began never go down.
PURGED_SALES_KEY = "sales_purged:"


def _keep_purged_sales(tx: _Tx, cut: str) -> None:
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


def _shift_totals(tx: _Tx, shift_id: int, moment: str, totals: Sequence[Mapping[str, Any]]) -> None:
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


def device_bucket(moment: datetime) -> str:
    """The 10-minute bucket a moment falls in, as device_counts keys it (UTC)."""
    moment = moment.astimezone(UTC)
    start = moment.replace(minute=moment.minute - moment.minute % 10, second=0, microsecond=0)
    return start.isoformat(timespec="seconds").replace("+00:00", "Z")


def _lift_key(pump: int) -> str:
    return f"lift_served:{pump}"


def lock_path(store: Path) -> Path:
    """The lock file a running daemon holds beside its database (`edgectl db restore` checks)."""
    return store.with_name(store.name + ".lock")


def open_read_only(path: Path | str) -> sqlite3.Connection:
    """A read-only connection to a store file, for tools that must not change it.

    WAL lets it read while the daemon writes. A missing file is an error here, never a new
    empty database.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreMissingError(
            f"no database at {path}: check [store].path in the config", path=path
        )
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise faults.translate(exc, path, doing="read") from exc
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        db.close()
        raise faults.translate(exc, path, doing="read") from exc
    return db


class _Tx:
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
    def connection(self) -> sqlite3.Connection:
        return self._db

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
        return {**dict(row), "authorized_by": source}

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
        expires_at=row["expires_at"],
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


def _price_json(prices: dict[str, Decimal]) -> str:
    return json.dumps({grade: str(price) for grade, price in sorted(prices.items())})


def _price_dict(text: str) -> dict[str, Decimal]:
    return {grade: Decimal(price) for grade, price in json.loads(text).items()}
