"""`edgectl db backup|restore|check`: keep, bring back and verify the station's SQLite store."""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from edgectl.cli import output
from edgectl.cli.output import Subparsers
from edgectl.control.client import ControlClient, DaemonNotRunning
from edgectl.errors import (
    EdgectlError,
    StoreCorruptError,
    StoreError,
    StoreForeignError,
    StoreNewerSchemaError,
)
from edgectl.store import files, identity
from edgectl.store.backups import find_backup, list_backups
from edgectl.store.schema import MIGRATIONS
from edgectl.store.store import lock_path, open_read_only

BACKUP_EXAMPLE = """\
examples:
  edgectl db backup /media/usb/station-$(date +%F).db
  edgectl db backup /tmp/edgectl.db --force

Safe while the daemon runs: SQLite's online backup copies one consistent moment of the store
(every committed sale up to then), written beside DEST and moved into place once checked.
"""
RESTORE_EXAMPLE = """\
examples:
  systemctl stop edgectl
  edgectl db restore /media/usb/station-2026-11-24.db
  systemctl start edgectl

Refused while the daemon runs. SRC is checked first (integrity, an edgectl store, a schema
this edgectl knows, this station's); --force restores another station's backup or a newer
schema anyway, with a warning. The restored database gets the owner, group and mode of the one
it replaces (or, with none, the store directory's owner and group, mode 0640), so the daemon's
user can still write it when the restore runs as root; the replaced one is kept beside it as
<store>.before-restore-<time>.
"""
BACKUPS_EXAMPLE = """\
examples:
  edgectl db backups
  edgectl db restore edgectl-ST-0042-20261202T031500Z.db

The daemon takes one every [store] backup_interval_h (checked with integrity_check before it
is listed) and keeps the newest backup_keep; a failed backup raises a backup_failed alarm.
"""
CHECK_EXAMPLE = """\
examples:
  edgectl db check
  edgectl db check --json

Runs SQLite's full integrity check, read-only (safe while the daemon runs), and checks that
the store and the -wal beside it are this station's own (a -wal copied from another store is
refused before SQLite reads it).
"""
CHECK_EXITS = (
    "exit status: 0 the store is sound, 1 it is damaged, not this station's or cannot be"
    " read, 2 usage."
)

EDGECTL_TABLES = ("sales", "authorizations", "outbox", "alarms")


def register(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "db",
        help="back up, restore or check the station's database",
        description="Back up, restore or check the station's SQLite store.",
        epilog=BACKUP_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    backup = output.add_command(
        actions,
        "backup",
        label="db backup",
        help="copy the database, consistently, even while the daemon runs",
        description="Copy the station's database to DEST with SQLite's online backup.",
        example=BACKUP_EXAMPLE,
        func=run_backup,
        daemon=False,
    )
    backup.add_argument("dest", type=Path, help="the backup file to write")
    backup.add_argument("--force", action="store_true", help="replace DEST if it exists")
    restore = output.add_command(
        actions,
        "restore",
        label="db restore",
        help="replace the database with a backup (daemon stopped)",
        description="Replace the station's database with the backup SRC.",
        example=RESTORE_EXAMPLE,
        func=run_restore,
    )
    restore.add_argument(
        "src",
        type=Path,
        help="the backup file to restore, or the name of one listed by `edgectl db backups`",
    )
    restore.add_argument(
        "--force",
        action="store_true",
        help="restore a backup of another station or of a newer schema anyway (the daemon"
        " refuses it until [station].id or edgectl matches)",
    )
    output.add_command(
        actions,
        "backups",
        label="db backups",
        help="list the scheduled backups the daemon keeps",
        description="List the backups in [store] backup_dir, newest first.",
        example=BACKUPS_EXAMPLE,
        func=run_backups,
        daemon=False,
    )
    output.add_command(
        actions,
        "check",
        label="db check",
        help="check the database's integrity",
        description="Check the integrity of the station's database.",
        example=CHECK_EXAMPLE,
        func=run_check,
        daemon=False,
        exits=CHECK_EXITS,
    )


# --------------------------------------------------------------------------- backup


def run_backup(args: argparse.Namespace) -> int:
    source = output.target(args).require_config().store.path
    dest: Path = args.dest
    if dest.exists() and not args.force:
        return output.fail("db backup", f"{dest} exists already (use --force to replace it)")
    if dest.resolve() == source.resolve():
        return output.fail("db backup", "DEST is the live database itself")
    with output.replacing(dest) as partial:
        facts = _snapshot(source, partial)
    if args.json:
        output.print_json({"source": str(source), "backup": str(dest), **facts})
    else:
        print(
            f"backed up {source} to {dest}: {facts['sales']} sale(s), "
            f"{facts['bytes']} bytes, schema {facts['schema_version']}, integrity ok"
        )
    return output.EXIT_OK


# --------------------------------------------------------------------------- backups


def run_backups(args: argparse.Namespace) -> int:
    config = output.target(args).require_config()
    folder = config.store.backups
    found = [b for b in reversed(list_backups(folder)) if b.station == config.station.id]
    if args.json:
        output.print_json(
            {
                "folder": str(folder),
                "interval_h": config.store.backup_interval_h,
                "keep": config.store.backup_keep,
                "backups": [
                    {
                        "name": b.name,
                        "path": str(b.path),
                        "taken_at": b.taken_at.isoformat(),
                        "bytes": b.bytes,
                    }
                    for b in found
                ],
            }
        )
        return output.EXIT_OK
    if not found:
        print(f"no backups in {folder} yet")
        return output.EXIT_OK
    print(f"{len(found)} backup(s) in {folder}, newest first:")
    for b in found:
        taken = output.local_time(b.taken_at.isoformat())
        print(f"  {b.name}  {taken}  {b.bytes / 2**20:.1f} MB")
    return output.EXIT_OK


# --------------------------------------------------------------------------- restore


def run_restore(args: argparse.Namespace) -> int:
    station = output.target(args)
    store_path = station.require_config().store.path
    src: Path = args.src
    if not src.exists() and src.parent == Path("."):
        named = find_backup(station.require_config().store.backups, str(src))
        src = named if named is not None else src
    if src.resolve() == store_path.resolve():
        return output.fail("db restore", "SRC is the live database itself")
    try:
        with ControlClient(station.socket, timeout=2.0):
            pass
    except DaemonNotRunning:
        pass
    except EdgectlError:
        pass  # a socket that exists but does not answer us: the lock below decides
    else:
        return output.fail(
            "db restore",
            f"edgectl is running (it answers at {station.socket}): stop it first "
            "(systemctl stop edgectl)",
        )
    facts, warnings = _check_backup(src, station.require_config().station.id, force=args.force)
    for warning in warnings:
        output.note(f"warning: {warning}")
    with _store_lock(store_path) as lock_made:
        owner = _owner_for(store_path)
        kept = _keep_previous(store_path) if store_path.exists() else None
        incoming = store_path.with_name(f".{store_path.name}.restoring")
        try:
            _snapshot(src, incoming)
            _give(owner, incoming, kept, lock_path(store_path) if lock_made else None)
            # Nobody has the store open (daemon stopped, lock held): a WAL or shared-memory
            # file left by the old database must not be replayed onto the restored one.
            for side in files.side_files(store_path):
                side.unlink(missing_ok=True)
            os.replace(incoming, store_path)
        finally:
            incoming.unlink(missing_ok=True)
    if args.json:
        output.print_json(
            {
                "restored": str(store_path),
                "from": str(src),
                "previous": None if kept is None else str(kept),
                "owner": files.user_name(owner.uid),
                "group": files.group_name(owner.gid),
                "mode": f"{owner.mode:04o}",
                "warnings": warnings,
                **facts,
            }
        )
    else:
        print(
            f"restored {store_path} from {src}: {facts['sales']} sale(s), schema "
            f"{facts['schema_version']}, {owner.describe()}"
            + (f"; the previous database is kept at {kept}" if kept else "")
        )
    return output.EXIT_OK


def _owner_for(store_path: Path) -> files.Ownership:
    """What the restored database must be: the replaced one's owner, group and mode (the
    daemon's user must still write it when root restores), or with none the directory's."""
    if store_path.exists():
        return files.Ownership.of(store_path)
    folder = files.Ownership.of(store_path.parent)
    return files.Ownership(folder.uid, folder.gid, files.STORE_MODE)


def _give(owner: files.Ownership, incoming: Path, kept: Path | None, lock: Path | None) -> None:
    """Give the restored database, the previous one kept (and the -wal, -shm kept with a
    damaged one) and a lock file this restore made the store's owner, before the restored
    database takes the store's place."""
    given = [incoming, lock]
    if kept is not None:
        given += [kept, *files.side_files(kept)]
    for path in given:
        if path is None or not path.exists():
            continue
        try:
            owner.give(path)
        except PermissionError:
            raise EdgectlError(
                f"cannot give {path} the store's {owner.describe()} (only root may give a file"
                " to another user): run the restore as root (sudo), or as the store's owner;"
                " the store is unchanged"
            ) from None


def _check_backup(
    src: Path, station_id: str, *, force: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """Refuse a backup that is damaged, not an edgectl store, newer, or another station's;
    with `force` the last two are restored anyway. Returns its facts and what was forced."""
    try:
        if src.is_file():
            identity.check_wal(src)
        db = open_read_only(src)
    except StoreCorruptError:
        raise _unusable(src, "not an SQLite database (damaged, or another kind of file)") from None
    try:
        verdict = _integrity(db)
        if verdict != ["ok"]:
            raise _unusable(src, f"damaged ({verdict[0]})")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        missing = [t for t in EDGECTL_TABLES if t not in tables]
        if missing:
            raise StoreForeignError(
                f"{src} is not an edgectl database (it has no table {missing[0]}): restore a"
                " backup made by `edgectl db backup`",
                path=src,
            )
        facts = _facts(db)
        theirs = _station_of(db)
    except sqlite3.DatabaseError as exc:
        raise _unusable(src, f"damaged ({exc})") from exc
    finally:
        db.close()
    warnings = []
    version = facts["schema_version"]
    if version > len(MIGRATIONS):
        if not force:
            raise StoreNewerSchemaError(
                f"{src} has schema version {version}, newer than this edgectl"
                f" ({len(MIGRATIONS)}): upgrade edgectl first (or restore it with --force: the"
                " daemon refuses it until edgectl is upgraded)",
                path=src,
            )
        warnings.append(
            f"{src} has schema version {version}, newer than this edgectl ({len(MIGRATIONS)}):"
            " the daemon refuses it until edgectl is upgraded"
        )
    if theirs is not None and theirs != station_id:
        if not force:
            raise StoreForeignError(
                f"{src} is a database of station {theirs}, not of this station {station_id}"
                " ([station].id): restore this station's own backup (or restore it with"
                f" --force: the daemon refuses it until [station].id is {theirs})",
                path=src,
            )
        warnings.append(
            f"{src} is a database of station {theirs}, not of this station {station_id}:"
            f" the daemon refuses it until [station].id is {theirs}"
        )
    return facts, warnings


def _unusable(src: Path, why: str) -> StoreCorruptError:
    return StoreCorruptError(f"{src} is {why}: not restoring it, choose another backup", path=src)


def _station_of(db: sqlite3.Connection) -> str | None:
    """The station id a store keeps in `meta` (None: written before stores kept one)."""
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'station_id'").fetchone()
    except sqlite3.OperationalError:
        return None  # no meta table
    return None if row is None else str(row[0])


@contextmanager
def _store_lock(store_path: Path) -> Iterator[bool]:
    """Hold the lock a running daemon holds, so neither can start on the store meanwhile.
    Yields whether the lock file was made here (it is then root's when root restores)."""
    lock = lock_path(store_path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    made = not lock.exists()
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EdgectlError(
                f"the store is in use ({lock} is locked by a running edgectl daemon or "
                "another restore): stop the daemon first"
            ) from None
        yield made
    finally:
        os.close(fd)


def _keep_previous(store_path: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    kept = store_path.with_name(f"{store_path.name}.before-restore-{stamp}")
    try:
        _snapshot(store_path, kept)
    except (sqlite3.Error, StoreError):
        # Often the reason for a restore: a damaged store. Keep its files exactly as they are.
        kept.unlink(missing_ok=True)
        for suffix in ("", "-wal", "-shm"):
            current = Path(f"{store_path}{suffix}")
            if current.exists():
                shutil.copyfile(current, f"{kept}{suffix}")
    return kept


def _snapshot(source: Path, dest: Path) -> dict[str, Any]:
    """Copy `source` into the new file `dest` with SQLite's backup API and check the copy.

    One backup step copies the whole database inside one read transaction: a consistent
    moment of it even while the daemon writes (its WAL is read through SQLite, not copied).
    """
    dest.unlink(missing_ok=True)
    files.create_database(dest)  # 0640, not 0644 under umask 022: it holds every sale
    src = open_read_only(source)
    try:
        copy = sqlite3.connect(dest)
        try:
            src.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            verdict = _integrity(copy)
            facts = _facts(copy)
        finally:
            copy.close()
    finally:
        src.close()
    if verdict != ["ok"]:
        raise StoreError(f"the copy {dest} failed its integrity check: {verdict[0]}")
    return facts


# --------------------------------------------------------------------------- check


def run_check(args: argparse.Namespace) -> int:
    config = output.target(args).require_config()
    path = config.store.path
    try:
        if path.is_file():  # before SQLite reads it, which would replay a foreign -wal
            identity.check_wal(path)
    except StoreForeignError as exc:
        return _refused(args, path, exc)
    except StoreError:
        pass  # not even an SQLite header: the integrity check says how damaged it is
    db = open_read_only(path)
    facts: dict[str, Any] = {}
    verdict: list[str] = []
    theirs = None
    try:
        verdict = _integrity(db)
        facts = _facts(db)
        theirs = _station_of(db)
    except sqlite3.DatabaseError as exc:  # too damaged to even finish the check
        if verdict in ([], ["ok"]):
            verdict = [str(exc)]
    finally:
        db.close()
    if verdict == ["ok"] and theirs is not None and theirs != config.station.id:
        return _refused(args, path, identity.foreign_station(path, theirs, config.station.id))
    ok = verdict == ["ok"]
    if args.json:
        output.print_json(
            {"database": str(path), "ok": ok, "problems": [] if ok else verdict, **facts}
        )
    elif ok:
        print(
            f"{path}: integrity ok; schema {facts['schema_version']}, {facts['sales']} sale(s), "
            f"{facts['outbox']} outbox message(s), {facts['bytes']} bytes"
        )
    else:
        print(f"{path}: DAMAGED ({len(verdict)} problem(s)):")
        for problem in verdict[:20]:
            print(f"  {problem}")
        print("Restore the latest backup: edgectl db restore FILE (with the daemon stopped).")
    return output.EXIT_OK if ok else output.EXIT_FAILED


def _refused(args: argparse.Namespace, path: Path, error: StoreError) -> int:
    """A store that is sound, perhaps, but not this station's own: the sentence says what."""
    if args.json:
        output.print_json(
            {"database": str(path), "ok": False, "code": error.code, "problems": [str(error)]}
        )
    else:
        print(f"{path}: NOT THIS STATION'S STORE: {error}")
    return output.EXIT_FAILED


def _integrity(db: sqlite3.Connection) -> list[str]:
    """["ok"], or one line per problem found."""
    rows = db.execute("PRAGMA integrity_check").fetchall()
    lines = [line for row in rows for line in str(row[0]).splitlines()]
    return [line for line in lines if line and not line.startswith("*** in database")]


def _facts(db: sqlite3.Connection) -> dict[str, Any]:
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def count(table: str) -> int | None:
        if table not in tables:
            return None
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    return {
        "schema_version": int(db.execute("PRAGMA user_version").fetchone()[0]),
        "sales": count("sales"),
        "outbox": count("outbox"),
        "bytes": int(page_size) * int(pages),
    }
