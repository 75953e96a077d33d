"""The store's files on disk (the database, its -wal, -shm and lock): who owns them, and a
mode that keeps the sales from other local users whatever umask the daemon was started with."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

# The store holds every sale: its owner (the daemon's user) reads and writes it, its group
# (technicians) may read it, nobody else. SQLite gives the -wal and -shm the main file's mode.
STORE_MODE = 0o640
# The bits a store file never keeps: any access for other users.
OTHERS = 0o007
SIDE_SUFFIXES = ("-wal", "-shm")


def side_files(db: Path) -> tuple[Path, ...]:
    """The -wal and -shm SQLite keeps beside `db`."""
    return tuple(db.with_name(db.name + suffix) for suffix in SIDE_SUFFIXES)


@dataclass(frozen=True, slots=True)
class Ownership:
    """The owner, group and permission bits one file has, or is to be given."""

    uid: int
    gid: int
    mode: int

    @classmethod
    def of(cls, path: Path) -> Ownership:
        st = path.stat()
        return cls(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))

    def describe(self) -> str:
        """e.g. "owner edgectl:edgectl mode 0640"."""
        return f"owner {user_name(self.uid)}:{group_name(self.gid)} mode {self.mode:04o}"

    def give(self, path: Path) -> None:
        """Make `path` this owner's with this mode (chown needs root for another user's)."""
        st = path.stat()
        if (st.st_uid, st.st_gid) != (self.uid, self.gid):
            os.chown(path, self.uid, self.gid)
        os.chmod(path, self.mode)  # after the chown, which may clear set-id bits


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def create_database(db: Path) -> None:
    """Create the empty file `db` with STORE_MODE (narrowed by the umask, never widened), for
    SQLite to open: SQLite would create it 0666 less the umask, 0644 under the usual 022."""
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, STORE_MODE))


def tighten(db: Path) -> list[tuple[Path, int, int]]:
    """Take other users' access away from the store's files (a store written under umask
    022 is 0644: anyone could copy every sale). Returns (file, old mode, new mode) for each
    file changed; raises OSError when this process may not change one (not its owner)."""
    changed = []
    for path in (db, *side_files(db)):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & OTHERS:
            os.chmod(path, mode & ~OTHERS)
            changed.append((path, mode, mode & ~OTHERS))
    return changed
