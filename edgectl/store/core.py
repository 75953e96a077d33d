"""The store's connection: opening, one IMMEDIATE transaction per change, write faults."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from edgectl.errors import (
    StoreError,
    StoreNewerSchemaError,
    StoreUnwritableError,
)
from edgectl.logs import get_logger
from edgectl.store import faults, files, identity
from edgectl.store.faults import WriteFault
from edgectl.store.messages import OutboxMessages
from edgectl.store.reader import StoreReader
from edgectl.store.rows import utc_now
from edgectl.store.schema import MIGRATIONS
from edgectl.store.tx import Tx


class StoreCore:
    """The store's one SQLite connection, in WAL mode with synchronous=FULL.

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
    def transaction(self) -> Iterator[Tx]:
        """One IMMEDIATE transaction; it also rewrites page 1 with the store id (`identity`).

        A failure is a typed StoreError and leaves no transaction open. While `write_fault`
        holds, writes are refused at once until its back-off has passed; the first commit
        that succeeds again carries the fault's alarm, raised before and cleared after the
        transaction's own rows.
        """
        fault = self.write_fault
        if fault is not None and self._monotonic() < fault.next_attempt:
            raise fault.refusal()
        tx = Tx(self._db, self._messages, self.outbox_max_rows)
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

    def _fault_alarms(self) -> list[dict[str, Any]]:
        return [] if self.write_fault is None else [self.write_fault.alarm()]

    @property
    def reader(self) -> StoreReader:
        """The read-only queries over this store's connection (call them on the store thread)."""
        return StoreReader(self._db, self._fault_alarms)


def lock_path(store: Path) -> Path:
    """The lock file a running daemon holds beside its database (`edgectl db restore` checks)."""
    return store.with_name(store.name + ".lock")
