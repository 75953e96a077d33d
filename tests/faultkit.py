"""Test kit for store faults: a small real file system that fills up (tmpfs), a directory the
daemon's user may not write, a read-only mount, and file digests to prove nothing changed."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

OTHER_USER = "nobody"


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "4m") -> Iterator[Path]:
    """A real, small file system at `where` (a tmpfs): it fills up like a disk does."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs a tmpfs, and mounting one needs root")
    done = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def remount_read_only(where: Path) -> None:
    """Make a tmpfs from `tmpfs` read-only, as the kernel does with a failing disk."""
    done = _mount("-o", "remount,ro", str(where))
    if done.returncode != 0:
        pytest.skip(f"remounting read-only is not permitted here: {done.stderr.strip()}")


def remount_read_write(where: Path) -> None:
    _mount("-o", "remount,rw", str(where))


def fill(where: Path) -> Path:
    """Take every free byte of the file system holding `where`; delete the file to free it."""
    filler = where / "filler"
    with open(filler, "wb", buffering=0) as out:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * chunk
            try:
                while True:
                    out.write(block)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
    return filler


def digests(*paths: Path) -> dict[str, str | None]:
    """Each file's SHA-256 (None when absent): compare before and after to prove no change."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths
    }


def store_files(db: Path) -> tuple[Path, Path]:
    return db, db.with_name(db.name + "-wal")


@contextlib.contextmanager
def world_readable_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's own temp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ec-store-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for inner in path.rglob("*"):
            if inner.is_dir():
                inner.chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)


def give_to_other_user(path: Path) -> None:
    """As root: make `path` the file of the user `as_other_user` becomes (else: it is ours)."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam(OTHER_USER)
    except KeyError:
        pytest.skip(f"no user {OTHER_USER!r} to run as")
    os.chown(path, user.pw_uid, user.pw_gid)


@contextlib.contextmanager
def as_other_user() -> Iterator[str]:
    """Run the body as a user without root's override of permission bits.

    As root: the effective uid and gid become `nobody`'s for the body (permission checks follow
    the effective ids), then root's again. Not root: already such a user. Yields the user name.
    """
    if os.geteuid() != 0:
        yield pwd.getpwuid(os.geteuid()).pw_name
        return
    try:
        user = pwd.getpwnam(OTHER_USER)
    except KeyError:
        pytest.skip(f"no user {OTHER_USER!r} to run as")
    groups = os.getgroups()
    os.setgroups([])
    os.setegid(user.pw_gid)
    os.seteuid(user.pw_uid)
    try:
        yield user.pw_name
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)
