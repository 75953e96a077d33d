"""What a failed store operation means: SQLite's and the OS's errors as the typed store errors,
each one sentence naming the real cause (permissions, a full or read-only disk, damage, a lock)
and what to do. The store translates at this one boundary."""

from __future__ import annotations

import errno
import json
import os
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgectl.errors import (
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreIOError,
    StorePermissionError,
    StoreUnwritableError,
)
from edgectl.store import files

# SQLite's primary result codes (the low byte of an extended code).
SQLITE_PERM = 3
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_AUTH = 23
SQLITE_NOTADB = 26

# SQLite reports some writes that find no space as I/O errors (growing the -shm, say): with
# less than this left on the file system, such an error is a full disk.
FULL_BELOW_BYTES = 1 << 20

INTACT = "the store itself is intact"


def translate(exc: BaseException, path: Path, *, doing: str = "write") -> StoreError:
    """The typed error for `exc`, raised while `doing` ("open", "write", "read") the store at
    `path`. A StoreError is returned as it is."""
    if isinstance(exc, StoreError):
        return exc
    detail = _first_line(str(exc)) or type(exc).__name__
    if isinstance(exc, OSError):
        return _from_errno(exc.errno, path, doing, detail)
    if not isinstance(exc, sqlite3.Error):
        return StoreError(f"cannot {doing} the store {path}: {detail}", path=path, detail=detail)
    primary = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if primary in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return corrupt(path, detail, not_a_database=primary == SQLITE_NOTADB)
    if primary in (SQLITE_BUSY, SQLITE_LOCKED):
        return StoreBusyError(
            f"{path} is locked by another process (another edgectl daemon, or a tool holding"
            " it open): stop that process, " + INTACT,
            path=path,
            detail=detail,
        )
    if primary == SQLITE_FULL:
        return full(path, doing, detail)
    if primary in (SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_AUTH, SQLITE_IOERR):
        found = medium_problem(path, doing, detail)
        if found is not None:
            return found
        if primary == SQLITE_IOERR:
            return StoreIOError(
                f"the disk holding {path} failed to {doing} ({detail}): check the disk (dmesg,"
                " SMART), then the store with `edgectl db check`",
                path=path,
                detail=detail,
            )
        if primary == SQLITE_CANTOPEN:
            return StoreIOError(
                f"cannot open the store {path} ({detail}): check that its directory exists and"
                " is a directory on a mounted disk",
                path=path,
                detail=detail,
            )
    return StoreError(f"cannot {doing} the store {path}: {detail}", path=path, detail=detail)


def medium_problem(path: Path, doing: str, detail: str | None = None) -> StoreError | None:
    """Why the file system will not let this process use the store, if it will not: a read-only
    mount, missing permissions, no space. None when none of these is found."""
    folder = path.parent
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY and (doing != "read" or not _side(path, "-shm").exists()):
        return read_only_file_system(path, detail)
    denied = permission_problem(path, write=doing != "read")
    if denied is not None:
        return _permission(path, *denied, detail=detail)
    if stats.f_bavail * stats.f_frsize < FULL_BELOW_BYTES:
        return full(path, doing, detail)  # reading a WAL store writes its -shm
    return None


def permission_problem(path: Path, *, write: bool = True) -> tuple[str, Path] | None:
    """("read"|"write"|"reach", what) this process may not do for the store at `path`, with
    its effective ids; None when it may do all it needs. Writing needs the directory too:
    SQLite creates the -wal and -shm files beside the database."""
    folder = path.parent
    if not _may(folder, os.X_OK):
        return ("reach", folder)
    for file in (path, _side(path, "-wal"), _side(path, "-shm")):
        if file.exists() and not _may(file, os.R_OK | (os.W_OK if write else 0)):
            return ("read" if not _may(file, os.R_OK) else "write", file)
    # Even a reader of a WAL store creates the -shm when there is none.
    if (write or not _side(path, "-shm").exists()) and not _may(folder, os.W_OK):
        return ("write", folder)
    return None


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def check_writable(path: Path) -> None:
    """Raise the typed error when this process cannot write the store at `path`: no write
    access, a read-only mount, (next to) no space. Before SQLite tries, says something vaguer,
    and leaves a -wal behind."""
    problem = medium_problem(path, "open")
    if problem is not None:
        raise problem


def full(path: Path, doing: str, detail: str | None = None) -> StoreFullError:
    free = _free_bytes(path.parent)
    room = f" ({_size(free)} free)" if free is not None else ""
    return StoreFullError(
        f"the disk holding {path} is full{room}, so edgectl cannot {doing} its store: free"
        " space on it (old logs, backups, core dumps), " + INTACT,
        path=path,
        detail=detail,
    )


def corrupt(path: Path, detail: str, *, not_a_database: bool = False) -> StoreCorruptError:
    what = (
        "is not an SQLite database (damaged, or another kind of file)"
        if not_a_database
        else f"is damaged ({_first_line(detail)})"
    )
    return StoreCorruptError(
        f"{path} {what}: restore the latest backup with `edgectl db restore FILE` (daemon"
        " stopped), or move the file away to start with an empty store",
        path=path,
        detail=detail,
    )


def read_only_file_system(path: Path, detail: str | None = None) -> StorePermissionError:
    return StorePermissionError(
        f"edgectl cannot write its store {path}: {_mount_point(path.parent)} is a read-only"
        " file system; remount it read-write (the kernel makes a failing disk read-only:"
        " check dmesg first), " + INTACT,
        path=path,
        detail=detail,
    )


_NOT = {"read": "not readable", "write": "not writable", "reach": "not searchable"}


def _permission(path: Path, action: str, target: Path, *, detail: str | None) -> StoreError:
    """A permissions problem, in the words that fix it: whose the file is, whose it must be.
    (Left to SQLite, a root-owned store reads "attempt to write a readonly database".)"""
    user = files.user_name(os.geteuid())
    folder = target.is_dir()
    try:
        found = files.Ownership.of(target)
    except OSError:
        found = None
    if found is None:  # even its directory is closed to us: name what the daemon needs
        owned = f"{target} cannot be reached"
        fix = f"give {user} read and write access to {path.parent} and the store's files"
    else:
        owner = files.user_name(found.uid)
        owned = (
            f"{'the directory ' if folder else ''}{target} is owned by {owner}:"
            f"{files.group_name(found.gid)} (mode {found.mode:04o}) and {_NOT[action]} by"
            f" user {user}"
        )
        every = target if folder else f"{path}*"  # the -wal, -shm and lock beside it too
        if owner != user:
            fix = f"chown {user}: {every}"
        else:
            fix = f"chmod u+rw{'x' if folder else ''} {every}"
    return StorePermissionError(
        f"permission problem: {owned}, so edgectl cannot use its store {path}: {fix}, " + INTACT,
        path=path,
        detail=detail,
    )


def _from_errno(code: int | None, path: Path, doing: str, detail: str) -> StoreError:
    if code in (errno.ENOSPC, errno.EDQUOT):
        return full(path, doing, detail)
    if code == errno.EROFS:
        return read_only_file_system(path, detail)
    if code in (errno.EACCES, errno.EPERM):
        found = medium_problem(path, doing, detail)
        if found is not None:
            return found
        return _permission(path, "write" if doing != "read" else "read", path, detail=detail)
    return StoreIOError(
        f"cannot {doing} the store {path} ({detail}): check the disk and the path",
        path=path,
        detail=detail,
    )


def _may(path: Path, mode: int) -> bool:
    try:
        return os.access(path, mode, effective_ids=True)
    except OSError:
        return False


def _free_bytes(folder: Path) -> int | None:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _mount_point(folder: Path) -> Path:
    folder = folder.resolve()
    try:
        device = folder.stat().st_dev
        while folder.parent != folder and folder.parent.stat().st_dev == device:
            folder = folder.parent
    except OSError:
        pass
    return folder


def _size(n: int) -> str:
    value, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("*** in database")]
    return lines[0] if lines else ""


# ---------------------------------------------------------------------------- while running

WRITE_RETRY_FIRST_S = 0.5  # after a failed write the disk is tried again this soon,
WRITE_RETRY_MAX_S = 10.0  # then twice as late each time up to this, jittered (x 0.5..1)
ALARM_KIND = "store_unwritable"
ALARM_MESSAGE_MAX = 1000  # what the cloud contract takes in an alarm's message


@dataclass
class WriteFault:
    """The store cannot write: why, since when, and when the disk is to be tried again.

    Kept in memory (the store cannot take its alarm row meanwhile): the store records it as
    an alarm, raised and cleared, in the first commit that succeeds again."""

    error: StoreUnwritableError
    since: str  # wall-clock time of the first failure (ISO, UTC)
    started: float  # the same on the monotonic clock
    failures: int = 0
    delay_s: float = 0.0
    next_attempt: float = 0.0

    def failed(self, error: StoreUnwritableError, now: float) -> bool:
        """One more failed write: back off further. True when the cause changed."""
        changed = error.code != self.error.code
        self.error = error
        self.failures += 1
        self.delay_s = min(self.delay_s * 2, WRITE_RETRY_MAX_S) or WRITE_RETRY_FIRST_S
        self.next_attempt = now + self.delay_s * random.uniform(0.5, 1.0)
        return changed

    def refusal(self) -> StoreUnwritableError:
        """The error a write gets while the back-off runs (the disk is not touched)."""
        error = self.error
        return type(error)(str(error), path=error.path, detail=error.detail)

    def message(self) -> str:
        """The alarm's text: the error's sentence, cut to what an alarm message may hold (a
        long store path repeated in it must not make the alarm, and the commit, fail)."""
        text = str(self.error)
        return text if len(text) <= ALARM_MESSAGE_MAX else text[: ALARM_MESSAGE_MAX - 1] + "…"

    def detail(self) -> dict[str, Any]:
        return {"code": self.error.code, "failed_writes": self.failures, "why": self.error.detail}

    def alarm(self) -> dict[str, Any]:
        """The alarm as the store's alarm rows look, for reads while it cannot be written."""
        return {
            "id": None,
            "kind": ALARM_KIND,
            "severity": "critical",
            "pump": None,
            "nozzle": None,
            "message": self.message(),
            "detail": json.dumps(self.detail()),
            "raised_at": self.since,
            "cleared_at": None,
        }
