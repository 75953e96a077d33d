"""Scheduled backups and retention (issue 10.6): verified copies, kept `backup_keep` deep,
alarmed when they fail, listed and restorable by name; old rows go, unacknowledged ones stay."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from edgectl.cloud.messages import ContractMessages
from edgectl.config import load_config
from edgectl.store import backups
from edgectl.store.backups import BackupError, list_backups, make_backup
from edgectl.store.store import Store
from tests.control.clikit import cli, control_config, short_dir
from tests.stationkit import rows, running_station, until, write_config
from tests.store.test_store import make_sale

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def with_store_keys(config: Path, **keys: object) -> Path:
    """The test station's config with extra [store] keys."""
    text = config.read_text()
    lines = "".join(
        f'{k} = "{v}"\n' if isinstance(v, str | Path) else f"{k} = {v}\n" for k, v in keys.items()
    )
    head, sep, tail = text.partition("[store]\n")
    first, nl, rest = tail.partition("\n")
    config.write_text(head + sep + first + nl + lines + rest)
    return config


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    path = tmp_path / "edgectl.db"
    store = Store(path, messages=ContractMessages())
    store.record_sale(make_sale())
    store.close()
    return path


def test_a_backup_is_a_checked_private_copy_named_by_station_and_time(
    store_file: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "backups"
    taken = make_backup(store_file, folder, "ST-1", T0, keep=3)
    assert taken.path == folder / "edgectl-ST-1-20261201T030000Z.db"
    assert stat.S_IMODE(taken.path.stat().st_mode) == 0o640
    assert [p.name for p in folder.iterdir()] == [taken.name]  # no partial file left
    copy = sqlite3.connect(taken.path)
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT COUNT(*) FROM sales").fetchone()[0] == 1
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    copy.close()


def test_only_the_newest_backups_of_this_station_are_kept(store_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a backup")
    (folder / "edgectl-OTHER-20200101T000000Z.db").write_bytes(b"")
    for hour in range(5):
        make_backup(store_file, folder, "ST-1", T0 + timedelta(hours=hour), keep=2)
    ours = [b for b in list_backups(folder) if b.station == "ST-1"]
    assert [b.taken_at.hour for b in ours] == [6, 7]
    assert (folder / "notes.txt").exists() and (
        folder / "edgectl-OTHER-20200101T000000Z.db"
    ).exists()


def test_a_short_disk_is_refused_before_anything_is_written(
    store_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backups, "SPARE_BYTES", 2**62)
    with pytest.raises(BackupError) as err:
        make_backup(store_file, tmp_path / "b", "ST-1", T0, keep=2)
    assert err.value.code == "backup_disk_short" and "MB free" in str(err.value)
    assert list((tmp_path / "b").iterdir()) == []


def test_a_damaged_store_gives_no_backup(tmp_path: Path) -> None:
    bad = tmp_path / "edgectl.db"
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    with pytest.raises(BackupError):
        make_backup(bad, tmp_path / "b", "ST-1", T0, keep=2)
    assert list_backups(tmp_path / "b") == []


async def test_the_daemon_backs_up_on_schedule_and_alarms_once_when_it_cannot(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "backups"
    config = with_store_keys(
        write_config(tmp_path), backup_interval_h=0.0004, backup_keep=2, backup_dir=folder
    )
    async with running_station(config) as st:
        await until(lambda: len(list_backups(folder)) >= 1, timeout=15, what="first backup")
        await until(
            lambda: any(
                b.taken_at.second != list_backups(folder)[0].taken_at.second
                for b in list_backups(folder)
            ),
            timeout=15,
            what="second backup",
        )
        await asyncio.sleep(3.5)
        assert len(list_backups(folder)) == 2  # backup_keep
        maintenance = st.daemon.maintenance
        # The folder's disk goes away: one alarm, however many tries.
        for b in list_backups(folder):
            b.path.unlink()
        folder.rmdir()
        folder.write_text("a file where the folder was")
        assert not await maintenance.backup_now()
        assert not await maintenance.backup_now()
        alarms = st.rows("SELECT * FROM alarms WHERE kind = 'backup_failed'")
        assert len(alarms) == 1 and alarms[0]["cleared_at"] is None
        assert "backup folder" in alarms[0]["message"]
        folder.unlink()
        assert await maintenance.backup_now()
        alarms = st.rows("SELECT * FROM alarms WHERE kind = 'backup_failed'")
        assert alarms[0]["cleared_at"] is not None
        streams = [r["stream"] for r in st.rows("SELECT stream FROM outbox")]
        assert streams.count("alarm") == 2  # raised, then cleared, for the cloud


def test_backups_are_listed_and_restored_by_name() -> None:
    with short_dir() as tmp:
        config = control_config(tmp, tmp / "control.sock")
        cfg = load_config(config)
        store = Store(cfg.store.path, station_id=cfg.station.id, messages=ContractMessages())
        store.record_sale(make_sale())
        store.close()
        taken = make_backup(cfg.store.path, cfg.store.backups, cfg.station.id, T0, keep=3)
        store = Store(cfg.store.path, station_id=cfg.station.id, messages=ContractMessages())
        store.record_sale(make_sale(total_volume_after=Decimal("1020.00")))
        store.close()

        listed = cli("db", "backups", "--config", str(config), "--json").json()
        assert [b["name"] for b in listed["backups"]] == [taken.name]
        assert cli("db", "backups", "--config", str(config)).out.count(taken.name) == 1

        done = cli("db", "restore", taken.name, "--config", str(config))
        assert done.code == 0, done.err
        assert len(rows(cfg.store.path, "SELECT * FROM sales")) == 1


def test_retention_keeps_what_the_cloud_has_not_acknowledged(tmp_path: Path) -> None:
    clock = ["2026-01-01T00:00:00.000Z"]
    store = Store(tmp_path / "edgectl.db", clock=lambda: clock[0], messages=ContractMessages())
    store.record_sale(make_sale(total_volume_after=Decimal("1010.00")))  # old, acknowledged
    store.outbox_delete([r.seq for r in store.outbox_after({}, 100)])
    clock[0] = "2026-01-05T00:00:00.000Z"
    store.record_sale(make_sale(total_volume_after=Decimal("1020.00")))  # old, still queued
    clock[0] = "2026-06-01T00:00:00.000Z"
    store.record_sale(make_sale(total_volume_after=Decimal("1030.00")))  # recent
    removed = store.purge_old_records("2026-05-01T00:00:00.000Z")
    assert removed["sales"] == 1
    left = [r["total_volume_after"] for r in store.sales()]
    assert left == ["1020.00", "1030.00"]
    store.outbox_delete([r.seq for r in store.outbox_after({}, 100)])  # the cloud took them
    assert store.purge_old_records("2026-05-01T00:00:00.000Z")["sales"] == 1
    assert [r["total_volume_after"] for r in store.sales()] == ["1030.00"]
    store.close()
