"""systemd/edgectl.service: it verifies, its sandbox scores OK, and the daemon runs inside it."""

from __future__ import annotations

import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from drivers.wayne_dart.codec import DartStatus
from edgectl.config import load_config
from tests.stationkit import count_when_ready, rows, start_simulators, until, write_config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "edgectl.service"
ANALYZE = shutil.which("systemd-analyze")
# Where a systemd distribution keeps its own units (sysinit.target and the like).
SYSTEM_UNITS = next(
    (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()),
    None,
)
MAX_EXPOSURE = 2.5  # "OK" in systemd-analyze security's words

needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)"
)


def unit_settings(path: Path = UNIT) -> dict[str, list[str]]:
    """`Section.Key` -> every value given, in order (keys such as DeviceAllow= repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def one(settings: dict[str, list[str]], key: str) -> str:
    values = settings[key]
    assert len(values) == 1, f"{key} given {len(values)} times"
    return values[0]


def test_the_unit_supervises_and_confines_the_daemon() -> None:
    s = unit_settings()
    exec_start = one(s, "Service.ExecStart").split()
    assert exec_start == [
        "/opt/edgectl/venv/bin/edgectl",
        "run",
        "--config",
        "/etc/edgectl/station.toml",
    ]
    expected = {
        "Service.Type": "notify",
        "Service.NotifyAccess": "main",
        "Service.WatchdogSec": "30s",
        "Service.Restart": "on-failure",
        "Service.User": "edgectl",
        "Service.Group": "edgectl",
        "Service.SupplementaryGroups": "dialout",
        "Service.UMask": "0027",
        "Service.StateDirectory": "edgectl",
        "Service.StateDirectoryMode": "0750",
        "Service.RuntimeDirectory": "edgectl",
        "Service.RuntimeDirectoryMode": "0750",
        "Service.ConfigurationDirectory": "edgectl",
        "Service.DevicePolicy": "closed",
        "Service.ProtectSystem": "strict",
    }
    assert {key: one(s, key) for key in expected} == expected
    # Longer than a sale's commit on SIGTERM (15 s), so the daemon is never killed mid-commit.
    assert int(one(s, "Service.TimeoutStopSec").rstrip("s")) > 15
    assert int(one(s, "Service.RestartSec").rstrip("s")) >= 1
    assert set(s["Service.DeviceAllow"]) == {
        "char-ttyUSB rw",
        "char-ttyACM rw",
        "char-ttyS rw",
    }
    families = one(s, "Service.RestrictAddressFamilies").split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    # The control socket's group is set with chown: the syscall filter must leave it.
    assert s["Service.SystemCallFilter"][-1] == "@chown"


@needs_analyze
def test_security_exposure_is_ok() -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert found, result.stdout + result.stderr
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout


@needs_analyze
@pytest.mark.skipif(SYSTEM_UNITS is None, reason="no systemd unit directory on this machine")
def test_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` against a root holding the unit, the distribution's own
    units and an executable where ExecStart points (verify refuses a missing binary); this
    works offline, without systemd as PID 1."""
    assert ANALYZE is not None and SYSTEM_UNITS is not None
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    shutil.copy(UNIT, units / UNIT.name)
    binary = root / one(unit_settings(), "Service.ExecStart").split()[0].lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", f"--root={root}", UNIT.name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on an unknown or misspelt key, so its warnings count too.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# Run as a child process with the unit's UMask= and with the kernel's own
# MemoryDenyWriteExecute (prctl PR_SET_MDWE, inherited by everything it starts), then
# everything the daemon can load is imported (the cloud link's crypto and TLS included).
LAUNCHER = textwrap.dedent(
    """
    import ctypes, importlib, os, pkgutil, sys
    os.umask(int(sys.argv[1], 8))
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        sys.exit(77)
    import drivers, edgectl
    for package in (edgectl, drivers):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    import ssl
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    key.public_key().verify(key.sign(b"order"), b"order")
    ssl.create_default_context()
    from edgectl.cli.main import main
    sys.exit(main(["run", "--config", sys.argv[2]]))
    """
)


@pytest.mark.slow
async def test_daemon_runs_under_the_units_umask_and_memory_protection(tmp_path: Path) -> None:
    """A sale under UMask=0027 and MemoryDenyWriteExecute=yes: the store's files are 0640,
    and nothing the daemon loads needs writable+executable memory."""
    umask = one(unit_settings(), "Service.UMask")
    station = tmp_path / "station"
    station.mkdir()
    config_path = write_config(station, mode="auto")  # the store in station/, alone
    config = load_config(config_path)
    db = config.store.path
    sims = start_simulators(config)
    pump = sims["l0"].pump(0x50)
    log = tmp_path / "daemon.log"
    proc = launch(umask, config_path, log)
    try:
        try:
            await until(
                lambda: proc.poll() is not None or count_when_ready(db, "nozzle_totals") == 4,
                timeout=30,
                what="daemon online",
            )
        except AssertionError:
            raise AssertionError(log.read_text()) from None
        if proc.returncode == 77:
            pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 and later)")
        assert proc.returncode is None, log.read_text()
        pump.lift(1)
        await until(lambda: pump.status is DartStatus.AUTHORIZED, what="auto authorization")
        pump.squeeze()
        await until(lambda: pump.volume > 100, what="fuel flowing")
        pump.release()
        pump.hang_up()
        await until(lambda: len(rows(db, "SELECT * FROM sales")) == 1, timeout=20, what="sale")
        running = store_modes(db)  # with its -wal and -shm, which a clean stop removes
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for sim in sims.values():
            sim.stop()
    assert "Traceback" not in log.read_text()
    assert {f"{db.name}{suffix}" for suffix in ("", "-wal", "-shm")} <= set(running)
    assert running == dict.fromkeys(running, 0o640)
    stopped = store_modes(db)
    assert stopped == dict.fromkeys(stopped, 0o640)


def launch(umask: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, umask, str(config)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def store_modes(db: Path) -> dict[str, int]:
    """Mode of every file of the store: the database, its -wal, -shm and lock."""
    return {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in db.parent.iterdir()
        if p.name.startswith(db.name) and p.is_file()
    }
