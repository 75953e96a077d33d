"""Scheduled online backups of the store: one consistent copy, checked, kept `backup_keep` deep."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edgectl.errors import StoreError
from edgectl.store.store import open_read_only

# edgectl-<station>-<UTC stamp>.db: the name sorts by time and says whose it is.
_NAME = re.compile(r"^edgectl-(?P<station>.+)-(?P<stamp>\d{8}T\d{6}Z)\.db$")
_STAMP = "%Y%m%dT%H%M%SZ"
# Free space wanted beyond the copy itself before a backup is started: a station whose
# disk is this short is told so (an alarm) instead of finding the store full later.
SPARE_BYTES = 64 * 1024 * 1024


class BackupError(StoreError):
    """A scheduled backup could not be made; the message says why and what to do."""

    code = "backup_failed"


@dataclass(frozen=True, slots=True)
class Backup:
    """One backup file in the backup folder."""

    path: Path
    station: str
    taken_at: datetime
    bytes: int

    @property
    def name(self) -> str:
        return self.path.name


def backup_name(station: str, at: datetime) -> str:
    return f"edgectl-{station}-{at.astimezone(UTC).strftime(_STAMP)}.db"


def list_backups(folder: Path) -> list[Backup]:
    """The backups in `folder`, oldest first (files of another name are not ours)."""
    found: list[Backup] = []
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        match = _NAME.match(entry.name)
        if match is None or not entry.is_file():
            continue
        taken = datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=UTC)
        found.append(Backup(entry, match["station"], taken, entry.stat().st_size))
    return sorted(found, key=lambda b: b.taken_at)


def snapshot(source: Path, dest: Path) -> str:
    """Copy the store `source` into the new file `dest` with SQLite's online backup and
    check the copy; returns the copy's integrity verdict ("ok" or the first problem).

    One backup step copies the whole database inside one read transaction: a consistent
    moment of it even while the daemon writes (its WAL is read through SQLite, not copied).
    """
    dest.unlink(missing_ok=True)
    src = open_read_only(source)
    try:
        copy = sqlite3.connect(dest)
        try:
            src.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            verdict = [str(r[0]) for r in copy.execute("PRAGMA integrity_check").fetchall()]
        finally:
            copy.close()
    finally:
        src.close()
    return verdict[0] if verdict else "no verdict"


def make_backup(source: Path, folder: Path, station: str, now: datetime, keep: int) -> Backup:
    """Take one verified backup of `source` into `folder` and keep only the newest `keep`.

    The copy is written under a temporary name, checked with `integrity_check`, flushed to
    disk and only then renamed, so a half-written or damaged copy is never listed.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise BackupError(f"cannot create the backup folder {folder}: {exc.strerror}") from exc
    need = _store_bytes(source) + SPARE_BYTES
    free = shutil.disk_usage(folder).free
    if free < need:
        raise BackupError(
            f"the disk holding {folder} is short: {free // 2**20} MB free, a backup needs"
            f" {need // 2**20} MB; free space or point [store] backup_dir elsewhere",
            code="backup_disk_short",
        )
    final = folder / backup_name(station, now)
    partial = final.with_name(f".{final.name}.partial")
    try:
        verdict = snapshot(source, partial)
        if verdict != "ok":
            raise BackupError(
                f"the backup copy failed its integrity check ({verdict}): the store itself"
                " may be damaged; run `edgectl db check`"
            )
        os.chmod(partial, 0o640)
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, final)
        _fsync_dir(folder)
    except BackupError:
        raise
    except (OSError, sqlite3.Error, StoreError) as exc:
        raise BackupError(f"the backup into {folder} failed: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    prune(folder, keep, station)
    return Backup(final, station, now, final.stat().st_size)


def prune(folder: Path, keep: int, station: str) -> list[Path]:
    """Delete this station's oldest backups beyond the newest `keep`; returns the deleted."""
    ours = [b for b in list_backups(folder) if b.station == station]
    gone = [b.path for b in ours[: max(0, len(ours) - keep)]]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def find_backup(folder: Path, name: str) -> Path | None:
    """A backup named by its file name (or a unique prefix of its time stamp)."""
    backups = list_backups(folder)
    for backup in backups:
        if backup.name == name:
            return backup.path
    hits = [b for b in backups if name and name in b.name]
    return hits[0].path if len(hits) == 1 else None


def _store_bytes(source: Path) -> int:
    size = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            size += Path(f"{source}{suffix}").stat().st_size
    return size


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
