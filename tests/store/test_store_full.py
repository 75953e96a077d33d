"""A store that cannot write while running (issue 9, point 4): on a real full disk every write
path raises the typed error and leaves no transaction open (SQLite rolls back by itself after a
failed COMMIT; a ROLLBACK then used to fail raw), writes are refused without touching the disk
while a jittered, capped back-off runs, the fault is logged once and its recovery once, and
the first commit that succeeds again records its alarm, raised and cleared."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edgectl.cloud import contract
from edgectl.cloud.messages import ContractMessages
from edgectl.errors import StoreFullError, StoreUnwritableError
from edgectl.store import faults
from edgectl.store.faults import WriteFault
from edgectl.store.messages import NoOutboxMessages
from edgectl.store.store import Store
from tests.faultkit import fill, tmpfs
from tests.store.writes import HOUSEKEEPING, WRITES, Seeded, seed, write_methods, writes_here

STATION = "TEST-01"


@dataclass
class Clock:
    """The store's monotonic clock, moved by hand: the back-off without waiting for it."""

    now: float = 1000.0
    calls: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FullStore:
    store: Store
    seeded: Seeded
    clock: Clock
    filler: Path

    def free_space(self) -> None:
        self.filler.unlink()

    def counts(self) -> dict[str, int]:
        tables = [
            r["name"] for r in self.store.query("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        return {t: self.store.query(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"] for t in tables}


@pytest.fixture
def full(tmp_path: Path) -> Iterator[FullStore]:
    """A seeded store on a small real file system that is then filled to the last byte, its
    -wal checkpointed away first: any write must now grow a file, and cannot."""
    with tmpfs(tmp_path / "disk", size="4m") as disk:
        clock = Clock()
        store = Store(
            disk / "edgectl.db", station_id=STATION, monotonic=clock, messages=ContractMessages()
        )
        try:
            seeded = seed(store)
            other = sqlite3.connect(disk / "edgectl.db")
            busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            other.close()
            assert busy == 0 and (disk / "edgectl.db-wal").stat().st_size == 0
            yield FullStore(store, seeded, clock, fill(disk))
        finally:
            store.close()


def test_the_list_of_write_paths_is_complete() -> None:
    """A new write path joins WRITES, so every test of the class below covers it."""
    assert write_methods() - set(WRITES) == set()


@pytest.mark.parametrize("name", writes_here())
def test_every_write_path_says_disk_full_and_the_store_heals(name: str, full: FullStore) -> None:
    store, write = full.store, WRITES[name]
    before = full.counts()
    if name in HOUSEKEEPING:
        write(store, full.seeded)  # retried later: never fails its caller
    else:
        with pytest.raises(StoreFullError) as refused:
            write(store, full.seeded)
        assert refused.value.code == "store_full"
        assert "full" in str(refused.value) and "free space" in str(refused.value)
        assert "corrupt" not in str(refused.value)
    assert not store._db.in_transaction  # nothing left half-open for the next write
    assert full.counts() == before
    assert store.write_fault is not None
    # While the back-off runs a write is refused at once, without touching the disk.
    with pytest.raises(StoreFullError):
        store.probe()
    assert store.write_fault.failures == 1
    # The alarm cannot be written yet: it is kept, and listed, in memory.
    active = store.alarms(active_only=True)
    assert active[-1]["kind"] == "store_unwritable" and active[-1]["id"] is None
    assert store.reader.alarms(active_only=True)[-1]["kind"] == "store_unwritable"

    full.free_space()
    full.clock.advance(faults.WRITE_RETRY_MAX_S)
    write(store, full.seeded)
    assert store.write_fault is None
    if name in HOUSEKEEPING:
        store.outbox_delete([])  # what was kept is deleted with the next acknowledgements
    alarms = store.query("SELECT * FROM alarms WHERE kind = 'store_unwritable'")
    assert len(alarms) == 1
    alarm = alarms[0]
    assert alarm["cleared_at"] is not None and alarm["raised_at"] <= alarm["cleared_at"]
    assert "full" in alarm["message"] and alarm["severity"] == "critical"
    assert json.loads(alarm["detail"])["code"] == "store_full"
    events = [
        json.loads(r["payload"])
        for r in store.query("SELECT payload FROM outbox WHERE stream = 'alarm' ORDER BY seq")
    ]
    events = [e for e in events if e["kind"] == "store_unwritable"]
    assert [e["cleared_at"] is None for e in events] == [True, False]  # raised, then cleared
    if name == "outbox_delete":
        kept = ",".join(map(str, full.seeded.outbox_seqs))
        assert store.query(f"SELECT seq FROM outbox WHERE seq IN ({kept})") == []


def test_the_fault_is_logged_once_and_its_recovery_once(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", size="4m") as disk, capture_logs() as logs:
        clock = Clock()
        store = Store(
            disk / "edgectl.db", station_id=STATION, monotonic=clock, messages=ContractMessages()
        )
        try:
            seeded = seed(store)
            sqlite3.connect(disk / "edgectl.db").execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = fill(disk)
            for _ in range(20):  # each one reaches the disk: the back-off has passed
                clock.advance(faults.WRITE_RETRY_MAX_S)
                with pytest.raises(StoreFullError):
                    WRITES["raise_alarm"](store, seeded)
            for _ in range(50):  # and these are refused by the back-off
                with pytest.raises(StoreFullError):
                    WRITES["queue_event"](store, seeded)
            assert store.write_fault is not None and store.write_fault.failures == 20
            filler.unlink()
            clock.advance(faults.WRITE_RETRY_MAX_S)
            WRITES["raise_alarm"](store, seeded)
        finally:
            store.close()
    events = [e["event"] for e in logs if e["event"].startswith("store_")]
    assert events == ["store_unwritable", "store_writable_again"]
    assert logs[[e["event"] for e in logs].index("store_writable_again")]["failed_writes"] == 20


def test_a_full_database_mid_statement_is_typed_too(tmp_path: Path) -> None:
    """SQLite's own limit on the file's size (`max_page_count`) fails a statement, not the
    COMMIT, with the same SQLITE_FULL (and rolls back by itself too): runs as any user."""
    clock = Clock()
    store = Store(tmp_path / "edgectl.db", monotonic=clock, messages=ContractMessages())
    try:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages}")
        with pytest.raises(StoreFullError):
            store.queue_event("big", {"blob": "x" * 100_000})
        assert not store._db.in_transaction
        assert store.outbox_depth() == 0
        store._db.execute("PRAGMA max_page_count=1073741823")
        clock.advance(faults.WRITE_RETRY_MAX_S)
        store.queue_event("big", {"blob": "x" * 100_000})
        assert [a["kind"] for a in store.alarms()] == ["store_unwritable"]
    finally:
        store.close()


def test_a_store_without_message_shapes_cannot_record_its_fault_and_says_so(
    tmp_path: Path,
) -> None:
    """The fault's alarm goes to the cloud too: a store opened without message shapes refuses
    the first write after a fault with NoOutboxMessages, and leaves no transaction open."""
    clock = Clock()
    store = Store(tmp_path / "edgectl.db", monotonic=clock)
    try:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages}")
        big = {"note": "x" * 100_000}
        ask = {"client_user": None, "peer_uid": None, "peer_user": None, "peer_pid": None}
        with pytest.raises(StoreFullError):
            store.audit_requested("close", big, **ask)
        store._db.execute("PRAGMA max_page_count=1073741823")
        clock.advance(faults.WRITE_RETRY_MAX_S)
        with pytest.raises(NoOutboxMessages):
            store.audit_requested("close", {}, **ask)
        assert not store._db.in_transaction
        assert store.query("SELECT COUNT(*) AS n FROM alarms") == [{"n": 0}]
        assert store.query("SELECT COUNT(*) AS n FROM audit") == [{"n": 0}]
    finally:
        store.close()


def test_the_back_off_is_jittered_and_capped() -> None:
    error = StoreFullError("the disk is full")
    fault = WriteFault(error, "2026-11-24T10:00:00.000Z", 0.0)
    delays = []
    for _ in range(12):
        fault.failed(error, 0.0)
        delays.append(fault.next_attempt)
    nominal = [min(faults.WRITE_RETRY_FIRST_S * 2**i, faults.WRITE_RETRY_MAX_S) for i in range(12)]
    for delay, ceiling in zip(delays, nominal, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= faults.WRITE_RETRY_MAX_S
    assert len({round(d, 6) for d in delays[-5:]}) > 1  # jittered: not all the same
    assert isinstance(fault.refusal(), StoreUnwritableError)
    assert fault.refusal() is not fault.refusal()  # a fresh exception each time


def test_an_alarm_fits_the_contract_however_long_the_store_path(tmp_path: Path) -> None:
    """The sentences name the store's path, some more than once (permissions: the file, the
    directory and the store): a long path must not make the alarm too long for the cloud
    contract, or the commit that heals would fail, and every one after it."""
    db = Path("/var/lib/" + "/".join(["a-rather-long-directory-name"] * 16)) / "edgectl.db"
    error = faults.translate(PermissionError(13, "Permission denied", str(db)), db, doing="write")
    assert len(str(error)) > 1000
    assert isinstance(error, StoreUnwritableError)
    fault = WriteFault(error, "2026-11-24T10:00:00.000Z", 0.0)
    message = fault.message()
    assert len(message) <= faults.ALARM_MESSAGE_MAX and message.endswith("…")
    contract.alarm_data(1, faults.ALARM_KIND, "critical", message, raised_at=fault.since)
