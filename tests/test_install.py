"""make install staged into a temporary root (DESTDIR): every path with its owner and mode,
run twice, over an older install's files, and uninstalled; one run builds the real venv.

A staged root is a root file system: the installer creates the account in its own
etc/passwd and etc/group (systemd-sysusers --root) and gives files the numeric ids they have
there, which is what they will mean once the tree is the machine's. The tests read the
expected ids from the same files. Owners are only checked when the tests run as root
(the installer chowns nothing otherwise).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from edgectl.config import load_config
from tests.test_systemd_unit import ANALYZE, SYSTEM_UNITS, one, unit_settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "packaging" / "install.sh"
PREFIX = "/opt/edgectl"
MAPS = sorted(p.name for p in (ROOT / "config" / "modbus").glob("*.toml"))
# The account database systemd-sysusers writes into the staged root.
ACCOUNT_FILES = {"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow", "etc/.pwd.lock"}
OWNERS = os.geteuid() == 0 and shutil.which("systemd-sysusers") is not None

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the installer is bash")


class Entry(NamedTuple):
    mode: int
    owner: str = "root"
    group: str = "root"


DIR = Entry(0o755)
FILE = Entry(0o644)
CONFIG_DIR = Entry(0o750, "root", "edgectl")
CONFIG = Entry(0o640, "root", "edgectl")

# Every path a --no-venv install makes (the venv has its own test).
EXPECTED: dict[str, Entry] = {
    "etc": DIR,
    "etc/edgectl": CONFIG_DIR,
    "etc/edgectl/station.toml": CONFIG,
    "etc/edgectl/modbus": CONFIG_DIR,
    **{f"etc/edgectl/modbus/{name}": CONFIG for name in MAPS},
    "etc/edgectl/certs": CONFIG_DIR,
    "etc/edgectl/secrets": CONFIG_DIR,
    "etc/edgectl/keys": CONFIG_DIR,
    "etc/sysusers.d": DIR,
    "etc/sysusers.d/edgectl.conf": FILE,
    "etc/modules-load.d": DIR,
    "etc/modules-load.d/edgectl.conf": FILE,
    "etc/systemd": DIR,
    "etc/systemd/system": DIR,
    "etc/systemd/system/edgectl.service": FILE,
    "var": DIR,
    "var/lib": DIR,
    "var/lib/edgectl": Entry(0o750, "edgectl", "edgectl"),
    "opt": DIR,
    "opt/edgectl": DIR,
    "opt/edgectl/share": DIR,
    "opt/edgectl/share/README.md": FILE,
    "opt/edgectl/share/config": DIR,
    "opt/edgectl/share/config/station.example.toml": FILE,
    "opt/edgectl/share/config/modbus": DIR,
    **{f"opt/edgectl/share/config/modbus/{name}": FILE for name in MAPS},
    "usr": DIR,
    "usr/local": DIR,
    "usr/local/bin": DIR,
    "usr/local/bin/edgectl": Entry(0o777),  # a symlink
}


def install(
    destdir: Path, action: str = "install", *args: str, venv: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESTDIR": str(destdir), "EDGECTL_INSTALL_VENV": "1" if venv else "0"}
    result = subprocess.run(
        ["bash", str(SCRIPT), action, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def account_ids(root: Path, database: str) -> dict[str, int]:
    ids = {"root": 0}
    for line in (root / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        ids[fields[0]] = int(fields[2])
    return ids


def tree(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """relative path -> (mode, uid, gid, sha256 of a file's bytes or a link's target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel in ACCOUNT_FILES:
            continue
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            digest = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            digest = ""
        found[rel] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, digest)
    return found


def check(root: Path, rel: str, want: Entry) -> None:
    st = (root / rel).lstat()
    assert oct(stat.S_IMODE(st.st_mode)) == oct(want.mode), rel
    if OWNERS:
        users, groups = account_ids(root, "passwd"), account_ids(root, "group")
        assert (st.st_uid, st.st_gid) == (users[want.owner], groups[want.group]), rel


def test_staged_install_makes_every_path_with_its_owner_and_mode(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root)
    assert set(tree(root)) == set(EXPECTED)
    for rel, want in EXPECTED.items():
        check(root, rel, want)
    assert (root / "etc/edgectl/station.toml").read_bytes() == (
        ROOT / "config/station.example.toml"
    ).read_bytes()
    assert os.readlink(root / "usr/local/bin/edgectl") == f"{PREFIX}/venv/bin/edgectl"
    unit = root / "etc/systemd/system/edgectl.service"
    assert one(unit_settings(unit), "Service.ExecStart").split()[0] == f"{PREFIX}/venv/bin/edgectl"
    modules = (root / "etc/modules-load.d/edgectl.conf").read_text().split()
    assert {"usbserial", "cdc_acm"} <= set(modules)


@pytest.mark.skipif(not OWNERS, reason="the account is made only by root with systemd-sysusers")
def test_the_account_is_a_system_user_in_groups_edgectl_and_dialout(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root)
    user = next(
        line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
        if line.startswith("edgectl:")
    )
    _, _, uid, gid, _, home, shell = user
    assert int(uid) < 1000  # a system account
    assert int(gid) == account_ids(root, "group")["edgectl"]
    assert home == "/var/lib/edgectl" and shell.endswith("nologin")
    dialout = next(
        line.split(":")
        for line in (root / "etc/group").read_text().splitlines()
        if line.startswith("dialout:")
    )
    assert "edgectl" in dialout[3].split(",")


def test_install_again_changes_nothing_and_keeps_the_sites_edits(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root)
    station = root / "etc/edgectl/station.toml"
    station.write_text(station.read_text() + "# site: north island\n")
    probe_map = root / "etc/edgectl/modbus" / MAPS[0]
    probe_map.write_text(probe_map.read_text() + "# site: probe firmware 2.1\n")
    before = tree(root)
    users_before = (root / "etc/passwd").read_text()
    install(root)
    assert tree(root) == before
    assert (root / "etc/passwd").read_text() == users_before
    assert station.read_text().endswith("# site: north island\n")
    assert probe_map.read_text().endswith("# site: probe firmware 2.1\n")


def test_install_over_an_older_install_repairs_owners_and_modes(tmp_path: Path) -> None:
    """Files as the old manual steps and a root-run restore left them: the store 0644 and
    root's, a key and a password readable by anyone, a config only root can read."""
    root = tmp_path / "root"
    etc = root / "etc/edgectl"
    for rel, mode in {
        "var/lib/edgectl/edgectl.db": 0o644,
        "var/lib/edgectl/edgectl.db-wal": 0o644,
        "var/lib/edgectl/backups/edgectl-1.db": 0o644,
        "etc/edgectl/station.toml": 0o600,
        "etc/edgectl/certs/SH-PD-0017.key": 0o644,
        "etc/edgectl/certs/broker-ca.pem": 0o600,
        "etc/edgectl/secrets/mqtt-password": 0o644,
        "etc/edgectl/keys/cloud-2026b.pub": 0o666,
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{rel}\n")
        path.chmod(mode)
    (root / "var/lib/edgectl").chmod(0o755)
    install(root)
    daemons = Entry(0o640, "edgectl", "edgectl")
    for rel in ("edgectl.db", "edgectl.db-wal", "backups/edgectl-1.db"):
        check(root, f"var/lib/edgectl/{rel}", daemons)
    check(root, "var/lib/edgectl", Entry(0o750, "edgectl", "edgectl"))
    check(root, "var/lib/edgectl/backups", Entry(0o750, "edgectl", "edgectl"))
    secret = Entry(0o600, "edgectl", "edgectl")
    check(root, "etc/edgectl/certs/SH-PD-0017.key", secret)
    check(root, "etc/edgectl/secrets/mqtt-password", secret)
    check(root, "etc/edgectl/certs/broker-ca.pem", CONFIG)
    check(root, "etc/edgectl/keys/cloud-2026b.pub", CONFIG)
    check(root, "etc/edgectl/station.toml", CONFIG)
    assert (etc / "station.toml").read_text() == "etc/edgectl/station.toml\n"  # never replaced


def test_the_installed_config_finds_its_register_maps_beside_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root)
    config = load_config(root / "etc/edgectl/station.toml")
    maps = {g.name: g.register_map for g in config.gauges if g.register_map is not None}
    assert maps == {"probes": (root / "etc/edgectl/modbus/generic_magnetostrictive.toml")}
    assert all(path.is_file() for path in maps.values())
    # ...and uses the directories the unit gives the daemon.
    unit = unit_settings(root / "etc/systemd/system/edgectl.service")
    assert config.store.path.parent == Path("/var/lib") / one(unit, "Service.StateDirectory")
    assert config.control.socket.parent == Path("/run") / one(unit, "Service.RuntimeDirectory")


def test_uninstall_keeps_the_config_the_store_and_the_account(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(root)
    store = root / "var/lib/edgectl/edgectl.db"
    store.write_bytes(b"sales")
    users = (root / "etc/passwd").read_text() if OWNERS else ""
    install(root, "uninstall")
    for gone in (
        "etc/systemd/system/edgectl.service",
        "etc/sysusers.d/edgectl.conf",
        "etc/modules-load.d/edgectl.conf",
        "usr/local/bin/edgectl",
        "opt/edgectl",
    ):
        assert not (root / gone).exists() and not (root / gone).is_symlink(), gone
    assert store.read_bytes() == b"sales"
    assert (root / "etc/edgectl/station.toml").is_file()
    assert {p.name for p in (root / "etc/edgectl/modbus").iterdir()} == set(MAPS)
    if OWNERS:
        assert (root / "etc/passwd").read_text() == users


def test_make_install_and_uninstall_run_the_installer(tmp_path: Path) -> None:
    root = tmp_path / "root"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    for target in ("install", "uninstall"):
        result = subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT), target, f"DESTDIR={root}"],
            env={**env, "EDGECTL_INSTALL_VENV": "0"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "etc/edgectl/station.toml").is_file()
    assert not (root / "etc/systemd/system/edgectl.service").exists()


def test_a_checkout_where_the_install_goes_is_refused(tmp_path: Path) -> None:
    """The old README cloned the repository into /opt/edgectl itself."""
    root = tmp_path / "root"
    (root / "opt/edgectl/.git").mkdir(parents=True)
    result = subprocess.run(
        ["bash", str(SCRIPT), "install"],
        env={**os.environ, "DESTDIR": str(root), "EDGECTL_INSTALL_VENV": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "git checkout" in result.stderr
    assert not (root / "etc").exists()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_installer_passes_shellcheck() -> None:
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.mark.slow
@pytest.mark.timeout(300)  # pip on a loaded machine: 15 s idle, 30 s seen with other suites
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system Python at /usr/bin/python3")
def test_the_venv_is_built_on_the_system_python_and_readable_by_the_daemon(
    tmp_path: Path,
) -> None:
    """The whole install, pip included: edgectl from its wheel, not editable,
    in a venv whose scripts name its final path, every file readable by user edgectl."""
    root = tmp_path / "root"
    install(root, venv=True)
    venv = root / PREFIX.lstrip("/") / "venv"
    config = dict(line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines())
    assert Path(config["home"]) == SYSTEM_PYTHON.parent
    assert not config["home"].startswith("/root")
    script = venv / "bin" / "edgectl"
    assert script.read_text().splitlines()[0] == f"#!{PREFIX}/venv/bin/python3"
    for path in (venv / "bin").iterdir():
        if path.is_file() and not path.is_symlink():
            assert str(root) not in path.read_text(errors="replace"), path
    python = venv / "bin" / "python3"
    assert os.path.realpath(python).startswith("/usr/")
    where = subprocess.run(
        [str(python), "-c", "import edgectl, sys; print(edgectl.__file__); print(sys.prefix)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # not the checkout, whose edgectl/ would shadow the installed one
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert where.returncode == 0, where.stderr
    module, prefix = where.stdout.split()
    assert Path(module).is_relative_to(venv / "lib") and Path(prefix) == venv
    assert not list(venv.glob("lib/python3*/site-packages/__editable__*"))
    help_text = subprocess.run(
        [str(python), str(script), "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert help_text.returncode == 0 and "--config" in help_text.stdout, help_text.stderr
    if ANALYZE is not None and SYSTEM_UNITS is not None:
        # The unit as installed, against the real program: what verify checks on a station.
        shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
        verify = subprocess.run(
            [ANALYZE, "verify", "--man=no", f"--root={root}", "edgectl.service"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    for path in venv.rglob("*"):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        wanted = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
        assert mode & wanted == wanted, f"{path} is {oct(stat.S_IMODE(mode))}"
