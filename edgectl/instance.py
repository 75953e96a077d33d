"""One daemon per store: the flock a running daemon holds on `<store>.lock`, its pid inside.

Two daemons on one store would drive the same pumps. The daemon takes the lock before it
opens the store, a serial line or the cloud link, and keeps it until it has closed the store;
a second one finds it held and stops at once, naming the first by its pid. The kernel drops
an flock with its process, so a lock file left by a killed daemon stops nobody.
`edgectl db restore` takes the same lock (without writing a pid) while it replaces the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from edgectl.errors import EdgectlError
from edgectl.store.store import lock_path


class StoreInUseError(EdgectlError):
    """Another process holds the store's lock: a running daemon, or a restore."""

    code = "store_in_use"


class StoreLockError(EdgectlError):
    """The lock file cannot be made or opened, so nothing would keep a second daemon out."""

    code = "store_lock"


class InstanceLock:
    """The held lock of one store; `release()` it once the store is closed."""

    def __init__(self, path: Path | None, fd: int | None, problem: StoreLockError | None) -> None:
        self.path = path
        self._fd = fd
        self._problem = problem

    @classmethod
    def take(cls, store: Path) -> InstanceLock:
        """Lock `store` for this process or raise StoreInUseError naming who holds it.

        A lock file that cannot be opened at all is not refused here: the store's own
        checks, next, say better what is wrong with that directory (read-only, not ours).
        `require()` refuses it should the store open all the same.
        """
        if str(store) == ":memory:":
            return cls(None, None, None)  # nothing another process could share
        path = lock_path(store)
        try:
            fd = _open(path)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            problem = StoreLockError(
                f"cannot open the lock file {path} ({reason}): the daemon's user must be able "
                "to create it beside the store, so that no second daemon can run on it"
            )
            return cls(path, None, problem)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, daemon = holder(fd)
            os.close(fd)
            raise in_use_error(store, pid, daemon=daemon) from None
        except OSError as exc:
            os.close(fd)
            raise StoreLockError(f"cannot lock {path}: {exc.strerror or exc}") from None
        # Ours now. A full disk or a read-only file leaves the pid out: /proc/locks still
        # names us to whoever asks.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd, None)

    def require(self) -> None:
        """Raise the reason the lock could not be taken, if it could not."""
        if self._problem is not None:
            raise self._problem

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        # Empty again, so a restore that takes the lock next is not taken for this daemon.
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None

    def __del__(self) -> None:
        # A daemon whose wiring failed after the lock was taken (the store refused to open)
        # never runs, so never releases it: dropping it must, for the next one in-process.
        self.release()


def in_use_error(store: Path, pid: int | None, *, daemon: bool) -> StoreInUseError:
    if daemon and pid is not None:
        return StoreInUseError(
            f"the store {store} is in use by another edgectl daemon (pid {pid}); stop it first"
        )
    who = f"another process (pid {pid})" if pid is not None else "another process"
    return StoreInUseError(
        f"the store {store} is in use by {who}, an edgectl daemon or a restore "
        f"holding {lock_path(store)}; stop it or let it finish first"
    )


def holder(fd: int) -> tuple[int | None, bool]:
    """Who holds the lock on the lock file open as `fd`: (pid, whether it is the daemon that
    wrote its pid there). The kernel's own table (/proc/locks) names any holder, a restore
    too; a pid left in the file by a daemon that has died since is not believed."""
    written = _written_pid(fd)
    try:
        st = os.fstat(fd)
        owner = _flock_owner(st.st_dev, st.st_ino)
    except OSError:
        owner = None
    if written is not None and _alive(written) and owner in (None, written):
        return written, True
    return owner, False


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        # An existing lock file we may not write (made by root, a read-only mount): an
        # flock needs no write access, only the pid stays out.
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _written_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    return True


def _flock_owner(dev: int, ino: int) -> int | None:
    """The pid /proc/locks gives for the FLOCK on that file, if any."""
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    for row in table.splitlines():
        fields = row.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (a waiter's row: "1: -> FLOCK …")
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return int(fields[4]) if fields[4].isdigit() else None
    return None
