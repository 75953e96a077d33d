"""The store's files are 0640 whatever umask the daemon was started with: the unit's UMask=0027
is not what keeps the sales from other users. A daemon started by hand under umask 022 creates
its database 0640 (and SQLite its -wal and -shm with the same mode), and a store others could
read is tightened at start, with one log line."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from structlog.testing import capture_logs

from edgectl.cloud.messages import ContractMessages
from edgectl.store import files
from edgectl.store.store import Store
from tests.control.clikit import cli, control_config, short_dir

STATION = "TEST-01"  # the station id of stationkit's config


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def the_files(db: Path) -> list[Path]:
    return [db, *files.side_files(db)]


def test_a_new_store_is_0640_under_umask_022(tmp_path: Path) -> None:
    db = tmp_path / "edgectl.db"
    with umask(0o022):
        store = Store(db, station_id=STATION, messages=ContractMessages())
        try:
            store.raise_alarm("pump_alarm", "pump alarm 7", pump=1)  # the -wal, -shm in use
            assert {f.name: mode(f) for f in the_files(db)} == {
                f.name: 0o640 for f in the_files(db)
            }
        finally:
            store.close()


def test_a_stricter_umask_is_kept(tmp_path: Path) -> None:
    db = tmp_path / "edgectl.db"
    with umask(0o077):
        Store(db, station_id=STATION, messages=ContractMessages()).close()
    assert mode(db) == 0o600


def test_a_store_others_can_read_is_tightened_once_at_start(tmp_path: Path) -> None:
    db = tmp_path / "edgectl.db"
    with umask(0o022):
        Store(db, station_id=STATION, messages=ContractMessages()).close()
        for file in the_files(db):  # as a store made before 0640 was the store's own
            file.touch()
            file.chmod(0o644)
        with capture_logs() as logs:
            store = Store(db, station_id=STATION, messages=ContractMessages())
            assert [mode(f) for f in the_files(db)] == [0o640] * 3
            store.close()
        with capture_logs() as again:
            Store(db, station_id=STATION, messages=ContractMessages()).close()
    (tightened,) = [e for e in logs if e["event"] == "store_mode_tightened"]
    assert tightened["files"] == {str(f): "0644 -> 0640" for f in the_files(db)}
    assert tightened["log_level"] == "warning"
    assert not [e for e in again if e["event"].startswith("store_mode")]


def test_a_backup_is_0640_under_umask_022(tmp_path: Path) -> None:
    with short_dir() as tmp:
        config = control_config(tmp, tmp / "control.sock")
        Store(tmp / "edgectl.db", station_id=STATION, messages=ContractMessages()).close()
        with umask(0o022):
            result = cli("db", "backup", str(tmp / "copy.db"), "--config", str(config))
        assert result.code == 0, result.err
        assert mode(tmp / "copy.db") == 0o640
