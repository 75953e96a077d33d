"""A restore that cannot break the service (issue 10, point 5): `edgectl db restore` run as root
gives the restored database the owner, group and mode of the one it replaces (or the store
directory's, 0640), so the daemon then starts as its own user; another station's database or a
newer schema is refused unless --force; the one line says what was done; a store the daemon's
user may not write is named as a permissions problem with the owner it has and the one it
needs."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from edgectl.cloud.messages import ContractMessages
from edgectl.config import load_config
from edgectl.forecourt.sale import Sale
from edgectl.store.schema import MIGRATIONS
from edgectl.store.store import Store, lock_path
from tests.control.clikit import ROOT, cli, control_config
from tests.faultkit import digests, store_files
from tests.stationkit import count_when_ready, start_simulators, until

STATION = "TEST-01"  # the station id of stationkit's config
USER = "nobody"  # the daemon's user in these tests: not root, owns no files of its own


def sale(n: int) -> Sale:
    return Sale(
        pump=1,
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


def make_store(db: Path, *, station: str = STATION, sales: int = 1) -> None:
    store = Store(db, station_id=station, messages=ContractMessages())
    for n in range(sales):
        store.record_sale(sale(n))
    store.close()


def sales_in(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM sales").fetchone()[0])
    finally:
        conn.close()


@dataclass
class Site:
    dir: Path  # the store's directory, with the config and the control socket
    config: Path
    db: Path


@contextlib.contextmanager
def site() -> Iterator[Site]:
    """A station directory other users can reach (pytest's are root's alone), short enough
    for the control socket's path."""
    path = Path(tempfile.mkdtemp(prefix="ec-", dir="/tmp"))
    path.chmod(0o755)
    try:
        config = control_config(path, path / "control.sock")
        yield Site(path, config, path / "edgectl.db")
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def daemons_user() -> pwd.struct_passwd:
    """The user the daemon runs as here; the test needs root to give files to it."""
    if os.geteuid() != 0:
        pytest.skip("giving a store to another user and restoring over it as root needs root")
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"no user {USER!r} to own the store")


def as_user(user: pwd.struct_passwd) -> list[str]:
    """The command prefix that runs a program as `user` (its uid, gid and no other groups),
    or a skip saying why it cannot be done here."""
    if shutil.which("setpriv") is None:
        pytest.skip(
            "setpriv (util-linux) is not installed: cannot start the daemon as another user"
        )
    prefix = [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--clear-groups",
    ]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import edgectl.daemon"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(
            f"user {user.pw_name} cannot run this Python and edgectl: {probe.stderr[-300:]}"
        )
    return prefix


def start_daemon(prefix: list[str], config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`edgectl run` as a child process, through `prefix` (as_user's)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", "edgectl", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def owner_of(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def names(user: pwd.struct_passwd) -> str:
    return f"{user.pw_name}:{grp.getgrgid(user.pw_gid).gr_name}"


# ---------------------------------------------------------------------------- owner and mode


async def test_restore_as_root_keeps_the_owner_and_the_daemon_starts_as_that_user() -> None:
    """The issue's case: the service's user owns the store, root restores a backup over it.
    The restored file is still that user's, with the same mode, and the daemon started as
    that user (as systemd starts it) opens it, takes its lock and writes to it."""
    user = daemons_user()
    with site() as s:
        prefix = as_user(user)
        make_store(s.db, sales=2)
        backup = s.dir / "backup.db"
        make_store(backup, sales=5)
        os.chown(s.dir, user.pw_uid, user.pw_gid)
        os.chown(s.db, user.pw_uid, user.pw_gid)
        s.db.chmod(0o600)  # not the default: the mode is the replaced file's, not a rule
        with umask(0o022):
            result = cli("db", "restore", str(backup), "--config", str(s.config))
        assert result.code == 0, result.err
        assert owner_of(s.db) == (user.pw_uid, user.pw_gid, 0o600)
        assert sales_in(s.db) == 5
        # The lock this restore made is the daemon's user's too; no -wal or -shm is left.
        assert owner_of(lock_path(s.db))[:2] == (user.pw_uid, user.pw_gid)
        assert not any(side.exists() for side in store_files(s.db)[1:])
        kept = next(s.dir.glob("edgectl.db.before-restore-*"))
        assert owner_of(kept) == (user.pw_uid, user.pw_gid, 0o600) and sales_in(kept) == 2
        (line,) = result.out.splitlines()
        assert line == (
            f"restored {s.db} from {backup}: 5 sale(s), schema {len(MIGRATIONS)}, owner"
            f" {names(user)} mode 0600; the previous database is kept at {kept}"
        )

        config = load_config(s.config)
        sims = start_simulators(config)
        log = s.dir / "daemon.log"
        try:
            for line_ in config.lines:  # the line's pty (through its link), as udev gives a
                os.chown(line_.port, user.pw_uid, user.pw_gid)  # serial port to dialout
            daemon = start_daemon(prefix, s.config, log)
            try:
                await until(
                    lambda: (
                        count_when_ready(s.db, "nozzle_totals") == 4 or daemon.poll() is not None
                    ),
                    timeout=60,
                    what="the daemon, as its user, online on the restored store",
                )
                assert daemon.poll() is None, log.read_text()[-2000:]
                assert lock_path(s.db).read_text() == f"{daemon.pid}\n"
                for file in store_files(s.db):  # SQLite made the -wal as the daemon's user
                    assert owner_of(file) == (user.pw_uid, user.pw_gid, 0o600)
            finally:
                daemon.terminate()
                assert daemon.wait(30) == 0, log.read_text()[-2000:]
        finally:
            for sim in sims.values():
                sim.stop()
        assert sales_in(s.db) == 5


def test_restore_without_a_store_gives_it_the_directorys_owner_and_0640() -> None:
    user = daemons_user()
    with site() as s:
        backup = s.dir / "backup.db"
        make_store(backup, sales=3)
        os.chown(s.dir, user.pw_uid, user.pw_gid)
        with umask(0o022):
            result = cli("db", "restore", str(backup), "--json", "--config", str(s.config))
        assert result.code == 0, result.err
        assert owner_of(s.db) == (user.pw_uid, user.pw_gid, 0o640)
        body = result.json()
        assert body["previous"] is None and body["sales"] == 3
        assert (body["owner"], body["group"], body["mode"]) == (
            user.pw_name,
            grp.getgrgid(user.pw_gid).gr_name,
            "0640",
        )


# ---------------------------------------------------------------------------- refused, forced


def newer_schema_backup(path: Path) -> Path:
    make_store(path, sales=4)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 2}")
    conn.close()
    return path


@pytest.mark.parametrize("case", ["newer_schema", "other_station"])
def test_refused_without_force_and_restored_with_it(case: str) -> None:
    with site() as s:
        make_store(s.db, sales=1)
        if case == "newer_schema":
            backup = newer_schema_backup(s.dir / "newer.db")
            refusal = (f"schema version {len(MIGRATIONS) + 2}", "newer", "upgrade", "--force")
            warning = ("newer than this edgectl", "the daemon refuses it until edgectl")
        else:
            backup = s.dir / "other.db"
            make_store(backup, station="OTHER-07", sales=4)
            refusal = ("station OTHER-07", STATION, "--force")
            warning = ("station OTHER-07", "until [station].id is OTHER-07")
        before = digests(*store_files(s.db))
        refused = cli("db", "restore", str(backup), "--config", str(s.config))
        assert refused.code == 1 and refused.out == ""
        assert all(word in refused.err for word in refusal), refused.err
        assert digests(*store_files(s.db)) == before
        assert not list(s.dir.glob("edgectl.db.before-restore-*"))

        forced = cli("db", "restore", str(backup), "--force", "--config", str(s.config))
        assert forced.code == 0, forced.err
        (line,) = forced.err.splitlines()
        assert line.startswith("warning: ") and all(word in line for word in warning), line
        assert forced.out.startswith(f"restored {s.db} from {backup}: 4 sale(s)")
        assert sales_in(s.db) == 4
        # ... and the daemon refuses it, as the warning said.
        started = cli("run", "--config", str(s.config), timeout=30)
        assert started.code == 1 and ("newer" in started.err or "OTHER-07" in started.err)


# ---------------------------------------------------------------------------- the daemon's error


def test_a_store_root_owns_stops_the_daemon_naming_both_owners() -> None:
    """What a restore run as root used to leave: the daemon, as its user, exits at once with
    a permissions sentence that names the file's owner, its own user and the chown to run."""
    user = daemons_user()
    with site() as s:
        prefix = as_user(user)
        make_store(s.db, sales=1)
        s.db.chmod(0o644)  # root's, as a restore run as root under umask 022 left it
        os.chown(s.dir, user.pw_uid, user.pw_gid)
        before = digests(*store_files(s.db))
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "edgectl", "run", "--config", str(s.config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
        assert digests(*store_files(s.db)) == before
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("edgectl: permission problem: "), line
    assert f"{s.db} is owned by root:root (mode 0644)" in line
    assert f"not writable by user {user.pw_name}" in line
    assert f"chown {user.pw_name}: {s.db}*" in line
    assert "corrupt" not in line and "damaged" not in line and "readonly" not in line
