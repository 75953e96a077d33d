"""Every way the store can fail to open names its real cause and what to do (issue 9, point 7):
a damaged file, a newer schema, a directory the daemon's user may not write, a read-only file
system, a full disk, a store or a -wal from elsewhere. Nothing on disk is changed by a refusal,
and the daemon exits non-zero with the same sentence."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from edgectl.cloud.messages import ContractMessages
from edgectl.errors import (
    StoreCorruptError,
    StoreError,
    StoreForeignError,
    StoreFullError,
    StoreNewerSchemaError,
    StorePermissionError,
)
from edgectl.forecourt.sale import Sale
from edgectl.store.schema import MIGRATIONS
from edgectl.store.store import Store
from tests.control.clikit import cli, control_config, short_dir
from tests.faultkit import (
    as_other_user,
    digests,
    fill,
    give_to_other_user,
    remount_read_only,
    store_files,
    tmpfs,
    world_readable_dir,
)
from tests.stationkit import write_config

STATION = "TEST-01"  # the station id of stationkit's config


def sale(n: int, pump: int = 1) -> Sale:
    return Sale(
        pump=pump,
        nozzle=1,
        grade="95",
        volume=Decimal("10.00"),
        amount=Decimal("79.30"),
        unit_price=Decimal("7.93"),
        currency="CNY",
        ended_at="2026-11-24T10:00:00.000Z",
        total_volume_after=Decimal(1000 + 10 * n),
        total_amount_after=Decimal(7930 + 80 * n),
    )


def make_store(db: Path, *, station: str | None = STATION, sales: int = 2, pump: int = 1) -> None:
    messages = ContractMessages()
    store = (
        Store(db, station_id=station, messages=messages)
        if station is not None
        else Store(db, messages=messages)
    )
    for n in range(sales):
        store.record_sale(sale(n, pump))
    store.close()


def wal_of_running_store(where: Path, *, station: str, sales: int, pump: int) -> bytes:
    """The -wal of another store as it is while that store's daemon runs (or was killed)."""
    where.mkdir(parents=True, exist_ok=True)
    store = Store(where / "other.db", station_id=station, messages=ContractMessages())
    try:
        for n in range(sales):
            store.record_sale(sale(n, pump))
        return (where / "other.db-wal").read_bytes()
    finally:
        store.close()


# ---------------------------------------------------------------------------- the situations


@dataclass(frozen=True)
class OpenFault:
    """A store that cannot be opened, built in a directory; what the refusal must say."""

    name: str
    error: type[StoreError]
    code: str
    words: tuple[str, ...]  # the sentence names the cause and what to do
    make: Callable[[Path], contextlib.AbstractContextManager[Path]]  # yields the store's path
    corrupt: bool = False  # only a damaged file may be called damaged


@contextlib.contextmanager
def garbage(base: Path) -> Iterator[Path]:
    db = base / "edgectl.db"
    db.write_bytes(b"this is not a database" * 200)
    yield db


@contextlib.contextmanager
def damaged_page(base: Path) -> Iterator[Path]:
    db = base / "edgectl.db"
    make_store(db, sales=0)
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE filler (a INTEGER PRIMARY KEY, b TEXT)")
    raw.execute("CREATE INDEX filler_b ON filler (b)")
    raw.executemany("INSERT INTO filler (b) VALUES (?)", [(f"v{i}" * 20,) for i in range(3000)])
    raw.commit()
    raw.close()
    pages = db.stat().st_size // 4096
    with db.open("r+b") as handle:
        handle.seek(4096 * (pages - 3) + 100)
        handle.write(b"\xff" * 300)
    yield db


@contextlib.contextmanager
def newer_schema(base: Path) -> Iterator[Path]:
    db = base / "edgectl.db"
    make_store(db)
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version={len(MIGRATIONS) + 3}")
    raw.close()
    yield db


@contextlib.contextmanager
def read_only_directory(base: Path) -> Iterator[Path]:
    with world_readable_dir() as shared:
        folder = shared / "store"
        folder.mkdir()
        db = folder / "edgectl.db"
        make_store(db)
        give_to_other_user(db)  # the store is the user's own, its directory is not
        folder.chmod(0o555)
        with as_other_user():
            yield db


@contextlib.contextmanager
def read_only_file_system(base: Path) -> Iterator[Path]:
    with tmpfs(base / "disk") as disk:
        db = disk / "edgectl.db"
        make_store(db)
        remount_read_only(disk)
        yield db


@contextlib.contextmanager
def full_disk(base: Path) -> Iterator[Path]:
    with tmpfs(base / "disk", size="2m") as disk:
        db = disk / "edgectl.db"
        make_store(db)
        fill(disk)
        yield db


@contextlib.contextmanager
def full_disk_new_store(base: Path) -> Iterator[Path]:
    with tmpfs(base / "disk", size="2m") as disk:
        fill(disk)
        yield disk / "edgectl.db"


@contextlib.contextmanager
def foreign_wal(base: Path) -> Iterator[Path]:
    """The issue's case: a good store with 11 sales, and beside it the -wal of another
    station's store with 3 (copied with a backup of the wrong machine, say)."""
    db = base / "edgectl.db"
    make_store(db, sales=11)
    wal = wal_of_running_store(base / "elsewhere", station="OTHER-07", sales=3, pump=2)
    (base / "edgectl.db-wal").write_bytes(wal)
    yield db


@contextlib.contextmanager
def foreign_wal_same_station(base: Path) -> Iterator[Path]:
    """A -wal of another store of this same station (an old disk, a second install)."""
    db = base / "edgectl.db"
    make_store(db, sales=11)
    wal = wal_of_running_store(base / "elsewhere", station=STATION, sales=3, pump=2)
    (base / "edgectl.db-wal").write_bytes(wal)
    yield db


@contextlib.contextmanager
def foreign_station(base: Path) -> Iterator[Path]:
    db = base / "edgectl.db"
    make_store(db, station="OTHER-07")
    yield db


OPEN_FAULTS = [
    OpenFault(
        "garbage",
        StoreCorruptError,
        "store_corrupt",
        ("not an sqlite database", "restore"),
        garbage,
        corrupt=True,
    ),
    OpenFault(
        "damaged_page",
        StoreCorruptError,
        "store_corrupt",
        ("damaged", "edgectl db restore"),
        damaged_page,
        corrupt=True,
    ),
    OpenFault(
        "newer_schema",
        StoreNewerSchemaError,
        "store_newer_schema",
        ("newer", "upgrade edgectl"),
        newer_schema,
    ),
    OpenFault(
        "read_only_directory",
        StorePermissionError,
        "store_permission",
        ("permission problem", "the directory", "not writable by user", "chown"),
        read_only_directory,
    ),
    OpenFault(
        "read_only_file_system",
        StorePermissionError,
        "store_permission",
        ("read-only file system", "remount"),
        read_only_file_system,
    ),
    OpenFault("full_disk", StoreFullError, "store_full", ("full", "free space"), full_disk),
    OpenFault(
        "full_disk_new_store",
        StoreFullError,
        "store_full",
        ("full", "free space"),
        full_disk_new_store,
    ),
    OpenFault(
        "foreign_wal",
        StoreForeignError,
        "store_foreign",
        ("-wal", "another store", "move", "away"),
        foreign_wal,
    ),
    OpenFault(
        "foreign_wal_same_station",
        StoreForeignError,
        "store_foreign",
        ("-wal", "another store", "move", "away"),
        foreign_wal_same_station,
    ),
    OpenFault(
        "foreign_station",
        StoreForeignError,
        "store_foreign",
        ("station other-07", "test-01", "backup"),
        foreign_station,
    ),
]


def assert_names_its_cause(fault: OpenFault, error: BaseException) -> None:
    assert type(error) is fault.error, f"{type(error).__name__}: {error}"
    assert isinstance(error, StoreError) and error.code == fault.code
    sentence = str(error)
    for word in fault.words:
        assert word in sentence.lower(), f"{word!r} not in {sentence!r}"
    assert "\n" not in sentence and sentence.strip() == sentence
    if not fault.corrupt:
        assert "corrupt" not in sentence.lower() and "damaged" not in sentence.lower()


@pytest.mark.parametrize("fault", OPEN_FAULTS, ids=lambda f: f.name)
def test_every_open_failure_names_its_cause_and_changes_nothing(
    fault: OpenFault, tmp_path: Path
) -> None:
    with fault.make(tmp_path) as db:
        before = digests(*store_files(db))
        with pytest.raises(StoreError) as refused:
            Store(db, station_id=STATION, messages=ContractMessages())
        after = digests(*store_files(db))
    assert_names_its_cause(fault, refused.value)
    assert after == before


# The daemon at start: the same refusal, one sentence on stderr, exit status 1. (The directory
# case needs the daemon as another user; its file-system twin covers it here.)
DAEMON_FAULTS = [f for f in OPEN_FAULTS if f.name != "read_only_directory"]


@pytest.mark.parametrize("fault", DAEMON_FAULTS, ids=lambda f: f.name)
def test_the_daemon_refuses_to_start_with_that_sentence(fault: OpenFault, tmp_path: Path) -> None:
    with fault.make(tmp_path) as db:
        config = write_config(tmp_path)
        text = config.read_text().replace(str(tmp_path / "edgectl.db"), str(db))
        config.write_text(text)
        before = digests(*store_files(db))
        result = cli("run", "--config", str(config), timeout=30)
        after = digests(*store_files(db))
    assert result.code == 1, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgectl: "), result.err
    assert_names_its_cause(fault, fault.error(lines[0].removeprefix("edgectl: ")))
    assert after == before


def test_a_store_that_is_fine_opens(tmp_path: Path) -> None:
    """The control case: none of the checks refuses a sound store of this station."""
    db = tmp_path / "edgectl.db"
    make_store(db, sales=3)
    store = Store(db, station_id=STATION, messages=ContractMessages())
    try:
        assert len(store.sales()) == 3
    finally:
        store.close()


def test_db_check_names_a_foreign_wal(tmp_path: Path) -> None:
    """`edgectl db check` says what the daemon would: the -wal is another store's."""
    with foreign_wal(tmp_path) as db:
        config = write_config(tmp_path)
        before = digests(*store_files(db))
        result = cli("db", "check", "--config", str(config))
        after = digests(*store_files(db))
    assert result.code == 1
    assert "another store" in result.out and "move" in result.out
    assert after == before


def test_db_restore_refuses_another_stations_backup(tmp_path: Path) -> None:
    with short_dir() as sockets:
        config = control_config(tmp_path, sockets / "control.sock")
        refuses_another_stations_backup(tmp_path, config)


def refuses_another_stations_backup(tmp_path: Path, config: Path) -> None:
    make_store(tmp_path / "edgectl.db", sales=1)
    backup = tmp_path / "other-station.db"
    make_store(backup, station="OTHER-07", sales=4)
    before = digests(*store_files(tmp_path / "edgectl.db"))
    result = cli("db", "restore", str(backup), "--config", str(config))
    assert result.code == 1
    assert "station OTHER-07" in result.err and "TEST-01" in result.err
    assert digests(*store_files(tmp_path / "edgectl.db")) == before


def test_a_store_the_user_may_not_read_says_permission(tmp_path: Path) -> None:
    with world_readable_dir() as shared:
        db = shared / "edgectl.db"
        make_store(db)
        db.chmod(0o600)  # root's alone
        before = digests(*store_files(db))
        with as_other_user() as user, pytest.raises(StorePermissionError) as refused:
            Store(db, station_id=STATION, messages=ContractMessages())
        assert digests(*store_files(db)) == before
    sentence = str(refused.value)
    assert sentence.startswith(f"permission problem: {db} is owned by root:root (mode 0600)")
    assert "not readable by user" in sentence and f"chown {user}: {db}*" in sentence
    assert "corrupt" not in sentence
