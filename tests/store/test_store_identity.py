"""A store knows its own identity (issue 9, point 5): a random store id in the main file's
header and in `meta`, the station id from the config, and every write transaction carrying
page 1 into the -wal. So a -wal from another store is refused before SQLite replays it, the
store's own -wal after a kill is replayed, and stores from before identity adopt one."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edgectl.cloud.messages import ContractMessages
from edgectl.errors import StoreForeignError
from edgectl.store import identity
from edgectl.store.schema import MIGRATIONS
from edgectl.store.store import Store
from tests.faultkit import digests, store_files
from tests.store.writes import WRITES, sale, seed, writes_here

STATION = "TEST-01"


def killed_copy(store: Store, where: Path) -> Path:
    """The store's files as a SIGKILL or a power cut leaves them: the -wal not checkpointed."""
    where.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{store.path}{suffix}", where / f"edgectl.db{suffix}")
    return where / "edgectl.db"


def test_a_new_store_has_its_identity_in_the_header_and_in_meta(tmp_path: Path) -> None:
    store = Store(tmp_path / "edgectl.db", station_id=STATION, messages=ContractMessages())
    store_id, path = store.store_id, store.path
    meta = dict((r["key"], r["value"]) for r in store.query("SELECT key, value FROM meta"))
    store.close()
    assert meta["store_id"] == store_id and meta["station_id"] == STATION
    assert identity.store_id_text(identity.header_store_id(path)) == store_id
    other = Store(tmp_path / "other.db", station_id=STATION, messages=ContractMessages())
    assert other.store_id != store_id  # random per store, not per station
    other.close()


@pytest.mark.parametrize("name", writes_here())
def test_every_write_transaction_puts_the_store_id_in_the_wal(name: str, tmp_path: Path) -> None:
    """The property the -wal check rests on: whatever a transaction changes, the -wal gets
    this store's page 1 in the same commit."""
    store = Store(tmp_path / "edgectl.db", station_id=STATION, messages=ContractMessages())
    try:
        seeded = seed(store)
        wal = identity.wal_file(store.path)
        busy, _, _ = store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0 and identity.read_wal(wal).committed_frames == 0
        WRITES[name](store, seeded)
        content = identity.read_wal(wal)
        assert content.committed_frames > 0
        assert content.store_id is not None
        assert identity.store_id_text(content.store_id) == store.store_id
    finally:
        store.close()


def test_the_issue_case_a_foreign_wal_is_refused_and_the_sales_survive(tmp_path: Path) -> None:
    """11 sales here, the -wal of another station's store (3 sales) beside them: refused,
    nothing changed; with the -wal moved away as the message says, the 11 sales are there."""
    mine = Store(tmp_path / "edgectl.db", station_id=STATION, messages=ContractMessages())
    for n in range(11):
        mine.record_sale(sale(n))
    mine.close()
    theirs = Store(
        tmp_path / "elsewhere" / "edgectl.db", station_id="OTHER-07", messages=ContractMessages()
    )
    for n in range(3):
        theirs.record_sale(sale(n, pump=2))
    foreign = killed_copy(theirs, tmp_path / "copied")
    theirs.close()
    db = tmp_path / "edgectl.db"
    shutil.copyfile(f"{foreign}-wal", f"{db}-wal")
    before = digests(*store_files(db))
    with pytest.raises(StoreForeignError) as refused:
        Store(db, station_id=STATION, messages=ContractMessages())
    assert digests(*store_files(db)) == before
    assert "move edgectl.db-wal away" in str(refused.value)
    Path(f"{db}-wal").rename(tmp_path / "foreign.wal")
    store = Store(db, station_id=STATION, messages=ContractMessages())
    try:
        assert [s["pump"] for s in store.sales()] == [1] * 11
    finally:
        store.close()


def test_the_stores_own_wal_after_a_kill_is_replayed(tmp_path: Path) -> None:
    store = Store(tmp_path / "live" / "edgectl.db", station_id=STATION, messages=ContractMessages())
    for n in range(5):
        store.record_sale(sale(n))
    copy = killed_copy(store, tmp_path / "after-kill")
    store.close()
    assert identity.read_wal(identity.wal_file(copy)).committed_frames > 0
    again = Store(copy, station_id=STATION, messages=ContractMessages())
    try:
        assert len(again.sales()) == 5
    finally:
        again.close()


def test_a_torn_last_frame_is_read_as_sqlite_reads_it(tmp_path: Path) -> None:
    """A power cut in the middle of writing a frame: SQLite ignores it (its checksum breaks
    the chain), and so does the -wal reader; the store opens with the commits before it."""
    store = Store(tmp_path / "live" / "edgectl.db", station_id=STATION, messages=ContractMessages())
    store.record_sale(sale(1))
    copy = killed_copy(store, tmp_path / "torn")
    store.close()
    wal = identity.wal_file(copy)
    whole = identity.read_wal(wal)
    data = bytearray(wal.read_bytes())
    data[-100:] = b"\xa5" * 100  # the last frame's page, half written
    wal.write_bytes(bytes(data))
    torn = identity.read_wal(wal)
    assert 0 < torn.committed_frames < whole.committed_frames
    again = Store(copy, station_id=STATION, messages=ContractMessages())
    again.close()


def test_a_wal_without_this_stores_page_one_is_refused(tmp_path: Path) -> None:
    """Changes written by something that is not this store's edgectl (no page 1 in the -wal)
    cannot be told apart from another store's: refused too."""
    store = Store(tmp_path / "edgectl.db", station_id=STATION, messages=ContractMessages())
    store.close()
    raw = sqlite3.connect(tmp_path / "edgectl.db")
    raw.execute("PRAGMA wal_autocheckpoint=0")
    raw.execute("INSERT INTO meta (key, value) VALUES ('hand', 'made')")
    raw.commit()
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{tmp_path / 'edgectl.db'}{suffix}", copy / f"edgectl.db{suffix}")
    raw.close()
    with pytest.raises(StoreForeignError, match="none of them carrying this store's id"):
        Store(copy / "edgectl.db", station_id=STATION, messages=ContractMessages())


def legacy_store(db: Path, sales: int) -> None:
    """A store as the previous edgectl wrote it: same schema, no identity."""
    raw = sqlite3.connect(db, isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    for number, script in enumerate(MIGRATIONS):
        raw.execute("BEGIN")
        for statement in script.split(";"):
            if statement.strip():
                raw.execute(statement)
        raw.execute(f"PRAGMA user_version={number + 1}")
        raw.execute("COMMIT")
    for n in range(sales):
        raw.execute(
            "INSERT INTO sales (uid, pump, nozzle, grade, volume, amount, unit_price, currency,"
            " ended_at, recorded_at) VALUES (?, 1, 1, '95', '10', '79.3', '7.93', 'CNY', ?, ?)",
            (f"P1-N1-T{n}", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        )
    raw.close()


def test_a_store_from_before_identity_adopts_one(tmp_path: Path) -> None:
    db = tmp_path / "edgectl.db"
    legacy_store(db, sales=4)
    assert identity.header_store_id(db) == 0
    store = Store(db, station_id=STATION, messages=ContractMessages())
    store_id = store.store_id
    store.close()
    assert identity.store_id_text(identity.header_store_id(db)) == store_id
    with pytest.raises(StoreForeignError, match="belongs to station TEST-01"):
        Store(db, station_id="OTHER-07", messages=ContractMessages())
    again = Store(db, station_id=STATION, messages=ContractMessages())
    try:
        assert again.store_id == store_id and len(again.sales()) == 4
    finally:
        again.close()


def test_a_legacy_wal_after_a_kill_is_still_replayed(tmp_path: Path) -> None:
    """The previous edgectl's -wal carries no identity; it cannot be checked, and is kept."""
    live = tmp_path / "live"
    live.mkdir()
    legacy_store(live / "edgectl.db", sales=0)
    raw = sqlite3.connect(live / "edgectl.db")
    raw.execute("PRAGMA wal_autocheckpoint=0")
    raw.execute(
        "INSERT INTO sales (uid, pump, nozzle, grade, volume, amount, unit_price, currency,"
        " ended_at, recorded_at) VALUES ('u', 1, 1, '95', '1', '7.93', '7.93', 'CNY', 'x', 'x')"
    )
    raw.commit()
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{live / 'edgectl.db'}{suffix}", copy / f"edgectl.db{suffix}")
    raw.close()
    store = Store(copy / "edgectl.db", station_id=STATION, messages=ContractMessages())
    try:
        assert len(store.sales()) == 1 and store.station_id == STATION
    finally:
        store.close()


def test_an_identity_not_yet_checkpointed_is_judged_by_its_station(tmp_path: Path) -> None:
    """Killed between giving a store its identity and checkpointing it: the header has none,
    the -wal has it. This station's: accepted; another station's: refused."""
    live = tmp_path / "live"
    live.mkdir()
    legacy_store(live / "edgectl.db", sales=2)
    raw = sqlite3.connect(live / "edgectl.db", isolation_level=None)
    raw.execute("PRAGMA wal_autocheckpoint=0")
    raw.execute("BEGIN IMMEDIATE")
    raw.execute("PRAGMA application_id=305419896")  # 0x12345678
    raw.execute("INSERT INTO meta (key, value) VALUES ('store_id', '12345678')")
    raw.execute("INSERT INTO meta (key, value) VALUES ('station_id', 'OTHER-07')")
    raw.execute("COMMIT")
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{live / 'edgectl.db'}{suffix}", copy / f"edgectl.db{suffix}")
    raw.close()
    assert identity.header_store_id(copy / "edgectl.db") == 0
    before = digests(*store_files(copy / "edgectl.db"))
    with pytest.raises(StoreForeignError, match="belongs to station OTHER-07"):
        Store(copy / "edgectl.db", station_id=STATION, messages=ContractMessages())
    assert digests(*store_files(copy / "edgectl.db")) == before
    store = Store(copy / "edgectl.db", station_id="OTHER-07", messages=ContractMessages())
    try:
        assert store.store_id == "12345678" and len(store.sales()) == 2
    finally:
        store.close()
    assert identity.header_store_id(copy / "edgectl.db") == 0x12345678


def test_opening_keeps_sqlites_locks_for_other_processes_to_see(tmp_path: Path) -> None:
    """The open reads the header itself; doing so after SQLite opened the file would drop the
    process's POSIX locks on it, and another process closing its connection would then think
    it was the last one and delete the running store's -wal (a bug found on the way)."""
    store = Store(tmp_path / "edgectl.db", station_id=STATION, messages=ContractMessages())
    try:
        store.record_sale(sale(1))
        code = (
            "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]);"
            " db.execute('SELECT COUNT(*) FROM sales').fetchone(); db.close()"
        )
        subprocess.run([sys.executable, "-c", code, str(store.path)], check=True)
        assert identity.wal_file(store.path).exists()
        store.record_sale(sale(2))
        reader = sqlite3.connect(store.path)
        assert reader.execute("SELECT COUNT(*) FROM sales").fetchone()[0] == 2
        reader.close()
    finally:
        store.close()
