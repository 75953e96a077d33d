"""One daemon per store (issue 10.2): a second `edgectl run` or `edgectl demo` on the store of a
running daemon exits at once, status 1, one sentence naming the first by its pid, having
opened no serial line and no cloud link; a lock left by a killed daemon stops nobody; the
read-only CLI still works while the daemon runs."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.wayne_dart.sim import DartLineSimulator
from edgectl.config import load_config
from edgectl.daemon import Daemon
from edgectl.instance import InstanceLock, StoreInUseError, StoreLockError
from edgectl.store.store import lock_path
from tests.cloudkit import cloud_section
from tests.control.clikit import ROOT, cli, control_config, short_dir
from tests.stationkit import DaemonProcess, count_when_ready, start_simulators, until


@dataclass
class Site:
    tmp: Path
    config: Path
    db: Path
    sims: dict[str, DartLineSimulator]
    daemon: DaemonProcess


@pytest.fixture
def site() -> Iterator[Site]:
    """A station's config, its simulated line, and its daemon as a process (not started)."""
    with short_dir() as tmp:
        config = control_config(tmp, tmp / "control.sock")
        sims = start_simulators(load_config(config))
        daemon = DaemonProcess(config, tmp / "daemon.log")
        try:
            yield Site(tmp, config, tmp / "edgectl.db", sims, daemon)
        finally:
            daemon.cleanup()
            for sim in sims.values():
                sim.stop()


async def started(site: Site, daemon: DaemonProcess | None = None) -> None:
    daemon = daemon or site.daemon
    daemon.start()
    # Every pump online has its totals stored: the daemon holds the store and drives the line.
    await until(
        lambda: count_when_ready(site.db, "nozzle_totals") == 4 or daemon.exit_status is not None,
        timeout=30,
        what="the daemon online",
    )
    assert daemon.exit_status is None, site.daemon.log.read_text()[-2000:]


def run_edgectl(*args: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "edgectl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    return done, time.monotonic() - began


def in_use(db: Path, pid: int) -> str:
    return (
        f"edgectl: the store {db} is in use by another edgectl daemon (pid {pid}); stop it first\n"
    )


@pytest.mark.slow
async def test_a_second_daemon_exits_at_once_naming_the_first_and_opens_nothing(
    site: Site,
) -> None:
    await started(site)
    assert site.daemon.proc is not None
    first = site.daemon.proc.pid
    assert lock_path(site.db).read_text() == f"{first}\n"
    # The second station has a line of its own and a cloud link, both watched: were it to
    # open either, its simulator would see a frame or the listener a connection.
    other_line = DartLineSimulator([], name="other")
    other_line.serve_pty(site.tmp / "other-line")
    broker = socket.create_server(("127.0.0.1", 0))
    broker.setblocking(False)
    text = site.config.read_text()
    text = text.replace(f'port = "{site.tmp / "l0"}"', f'port = "{site.tmp / "other-line"}"')
    text = text.replace(str(site.tmp / "control.sock"), str(site.tmp / "other.sock"))
    second = site.tmp / "second.toml"
    second.write_text(text + cloud_section(broker.getsockname()[1], Ed25519PrivateKey.generate()))
    polled = site.sims["l0"].stats.frames_received
    try:
        done, took = run_edgectl("run", "--config", str(second))
        assert done.returncode == 1, done.stderr
        assert done.stderr == in_use(site.db, first)
        assert took < 15  # at once: the interpreter's start is most of it
        await asyncio.sleep(0.5)  # what the second could still have sent would have arrived
        assert other_line.stats.frames_received == 0
        with pytest.raises(BlockingIOError):
            broker.accept()
        assert not (site.tmp / "other.sock").exists()
    finally:
        other_line.stop()
        broker.close()
    # The first is untouched: still running, still polling, still the lock's holder.
    assert site.daemon.exit_status is None
    await until(lambda: site.sims["l0"].stats.frames_received > polled + 10, what="polling")
    assert lock_path(site.db).read_text() == f"{first}\n"
    assert site.daemon.terminate() == 0
    assert lock_path(site.db).read_text() == ""  # a clean stop leaves no pid behind


@pytest.mark.slow
async def test_a_demo_on_the_store_of_a_running_daemon_is_refused_before_its_simulators(
    site: Site,
) -> None:
    await started(site)
    assert site.daemon.proc is not None
    port = site.tmp / "l0"
    pty_before = os.readlink(port)
    done, _ = run_edgectl("demo", "--config", str(site.config), "--no-ui", "--duration", "5")
    assert done.returncode == 1, done.stderr
    assert done.stderr == in_use(site.db, site.daemon.proc.pid)
    assert done.stdout == ""
    # The demo's own simulators would have taken the line's pty name for theirs.
    assert os.readlink(port) == pty_before
    assert not (site.tmp / "edgectl.log").exists()  # the demo's log: it never got that far
    assert site.daemon.exit_status is None


@pytest.mark.slow
async def test_a_lock_left_by_a_killed_daemon_stops_nobody(site: Site) -> None:
    await started(site)
    assert site.daemon.proc is not None
    killed = site.daemon.proc.pid
    site.daemon.kill()
    assert lock_path(site.db).read_text() == f"{killed}\n"  # the file stays, its flock does not
    again = DaemonProcess(site.config, site.tmp / "again.log")
    try:
        again.start()
        assert again.proc is not None
        await until(
            lambda: lock_path(site.db).read_text() == f"{again.proc.pid}\n"
            or again.exit_status is not None,
            timeout=30,
            what="the new daemon holding the lock",
        )
        polled = site.sims["l0"].stats.frames_received
        await until(lambda: site.sims["l0"].stats.frames_received > polled + 10, what="polling")
        assert again.exit_status is None
        assert again.terminate() == 0
    finally:
        again.cleanup()


@pytest.mark.slow
async def test_read_only_commands_work_while_the_daemon_runs(site: Site) -> None:
    await started(site)
    for args in (("status",), ("pumps",), ("sales",), ("alarms",), ("db", "check")):
        result = cli(*args, "--config", str(site.config))
        assert result.code == 0, (args, result.err)
    # Restore is the one store command that waits for the daemon to stop.
    backup = site.tmp / "backup.db"
    assert cli("db", "backup", str(backup), "--config", str(site.config)).code == 0
    result = cli("db", "restore", str(backup), "--config", str(site.config))
    assert result.code == 1 and "stop it first" in result.err
    assert site.daemon.exit_status is None


# ---------------------------------------------------------------------- the lock itself
def test_the_lock_is_one_holder_at_a_time_and_free_once_released(tmp_path: Path) -> None:
    db = tmp_path / "edgectl.db"
    lock = InstanceLock.take(db)
    assert lock.held and lock_path(db).read_text() == f"{os.getpid()}\n"
    with pytest.raises(StoreInUseError) as refused:
        InstanceLock.take(db)  # a second open file of it conflicts, in this process too
    assert str(refused.value) == in_use(db, os.getpid()).removeprefix("edgectl: ").rstrip()
    assert refused.value.code == "store_in_use"
    lock.release()
    assert lock_path(db).read_text() == ""
    InstanceLock.take(db).release()


def test_a_holder_that_wrote_no_pid_is_named_from_the_kernels_table(tmp_path: Path) -> None:
    """`edgectl db restore` holds the lock without writing its pid, and a daemon that died
    left its own in the file: the message names the real holder, not the dead daemon."""
    db = tmp_path / "edgectl.db"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    lock_path(db).write_text(dead.stdout)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"f = open({str(lock_path(db))!r}, 'r+')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(StoreInUseError) as refused:
            InstanceLock.take(db)
        message = str(refused.value)
        assert f"another process (pid {holder.pid})" in message, message
        assert dead.stdout.strip() not in message
        assert "restore" in message
    finally:
        holder.kill()
        holder.wait()
    InstanceLock.take(db).release()  # the holder's death freed it


def test_a_lock_file_that_cannot_be_made_is_refused_once_the_store_has_had_its_say() -> None:
    lock = InstanceLock.take(Path("/proc/edgectl-test.db"))  # nobody may create files there
    assert not lock.held
    with pytest.raises(StoreLockError, match="cannot open the lock file"):
        lock.require()


def test_a_lock_file_only_readable_still_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock file we may not write (left by root, on a read-only mount) is flocked through a
    read-only descriptor: the lock holds, only the pid is missing. (Refused writes are made
    up here: the tests run as root, whom modes do not stop.)"""
    db = tmp_path / "edgectl.db"
    lock_path(db).write_text("")
    real_open = os.open

    def no_writing(path: object, flags: int, *args: object) -> int:
        if flags & (os.O_RDWR | os.O_WRONLY):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_writing)
    lock = InstanceLock.take(db)
    try:
        assert lock.held
        with pytest.raises(StoreInUseError, match=f"another process \\(pid {os.getpid()}\\)"):
            InstanceLock.take(db)
    finally:
        lock.release()
    assert lock_path(db).read_text() == ""


def test_a_daemon_on_a_held_store_does_not_touch_the_store(tmp_path: Path) -> None:
    with short_dir() as tmp:
        config = load_config(control_config(tmp, tmp / "control.sock"))
        lock = InstanceLock.take(config.store.path)
        try:
            with pytest.raises(StoreInUseError):
                Daemon(config)
            assert not config.store.path.exists()  # refused before the store was opened
        finally:
            lock.release()
