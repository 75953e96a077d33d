"""The technician CLI with the daemon down: a plain message, and the commands that can work from
the database alone (sales, orders, outbox, alarms, audit, export, db) still do, read-only;
`tanks` lists the configured tanks, without readings."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from edgectl.cli.main import build_parser
from edgectl.cloud.messages import ContractMessages
from edgectl.forecourt.sale import Sale
from edgectl.store.store import Store, lock_path
from tests.control.clikit import cli, control_config, short_dir


@dataclass
class Offline:
    config: Path
    socket: Path
    db: Path


@pytest.fixture
def offline() -> Iterator[Offline]:
    """A station whose daemon is not running, with a store holding one sale and one alarm."""
    with short_dir() as tmp:
        config = control_config(tmp, tmp / "control.sock")
        db = tmp / "edgectl.db"
        store = Store(db, messages=ContractMessages())
        store.record_sale(
            Sale(
                pump=2,
                nozzle=1,
                grade="92",
                volume=Decimal("10.00"),
                amount=Decimal("74.50"),
                unit_price=Decimal("7.45"),
                currency="CNY",
                ended_at="2026-11-24T08:00:00.000Z",
                total_volume_after=Decimal("1010.00"),
                total_amount_after=Decimal("7574.50"),
            )
        )
        store.raise_alarm("pump_alarm", "pump alarm 7", pump=2)
        store.close()
        yield Offline(config, tmp / "control.sock", db)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("pumps",),
        ("prices",),
        ("watch", "--count", "1"),
        ("sniff", "l0"),
        ("authorize", "1", "--amount", "10"),
        ("stop", "1"),
        ("price", "95", "7.99"),
    ],
)
def test_daemon_commands_say_plainly_that_it_is_not_running(
    offline: Offline, args: tuple[str, ...]
) -> None:
    result = cli(*args, "--config", str(offline.config))
    assert result.code == 1
    assert result.err == f"edgectl is not running (no daemon at {offline.socket})\n"
    assert result.out == ""


TANKS = """
[[gauges]]
name = "tls"
protocol = "veeder_root"
port = "/dev/ttyS7"

[[tanks]]
number = 2
name = "diesel west"
grade = "diesel"
capacity_l = 20000
height_mm = 2000
density_15 = "840.0"
gauge = "tls"
gauge_tank = 4

[[tanks]]
number = 1
name = "92 east"
grade = "92"
capacity_l = 30000
height_mm = 2500
density_15 = "737.0"
gauge = "tls"
gauge_tank = 1
"""


def test_tanks_from_the_config_without_readings(tmp_path: Path) -> None:
    with short_dir() as tmp:
        socket = tmp / "control.sock"
        config = control_config(tmp, socket, extra=TANKS)
        result = cli("tanks", "--json", "--config", str(config))
        assert result.code == 0, result.err
        assert result.err == (
            f"edgectl is not running (no daemon at {socket}); the tanks of {config}, "
            "without readings\n"
        )
        body = result.json()
        assert body["source"] == "config"
        one, two = body["tanks"]  # in tank-number order
        assert (one["tank"], one["name"], one["grade"], one["capacity_l"]) == (
            1,
            "92 east",
            "92",
            "30000",
        )
        assert (two["tank"], two["gauge"], two["gauge_tank"]) == (2, "tls", 4)
        # What only the running daemon knows is null, in the same shape as its answer.
        unknown = ("online", "reading_at", "height_mm", "net_l", "alarms", "implausible")
        assert all(one[key] is None for key in unknown)

        text = cli("tanks", "--config", str(config))
        assert text.code == 0 and "edgectl is not running" in text.err
        assert "capacity L" in text.out and "92 east" in text.out and "tls/4" in text.out
        assert "level mm" not in text.out  # no reading columns without readings

    broken = tmp_path / "station.toml"
    broken.write_text("[station]\n")
    result = cli("tanks", "--socket", str(tmp_path / "none.sock"), "--config", str(broken))
    assert result.code == 1 and result.out == ""
    assert result.err.startswith(f"edgectl is not running (no daemon at {tmp_path}/none.sock)")
    assert "cannot be read" in result.err and "Traceback" not in result.err
    assert len(result.err.splitlines()) == 1


def test_sales_from_the_database_read_only(offline: Offline) -> None:
    before = digest(offline.db)
    result = cli("sales", "--json", "--config", str(offline.config))
    assert result.code == 0, result.err
    assert result.err == (
        f"edgectl is not running (no daemon at {offline.socket}); reading {offline.db} read-only\n"
    )
    body = result.json()
    assert body["source"] == "database"
    [sale] = body["sales"]
    assert sale["pump"] == 2 and sale["amount"] == "74.50" and sale["uid"] == "P2-N1-T1010.00"
    assert digest(offline.db) == before  # not a byte changed

    text = cli("sales", "--pump", "2", "--config", str(offline.config))
    assert text.code == 0 and "74.50" in text.out and "1 sale(s)" in text.out
    none = cli("sales", "--pump", "3", "--json", "--config", str(offline.config))
    assert none.json()["sales"] == []


def test_other_records_from_the_database(offline: Offline) -> None:
    orders = cli("orders", "--json", "--config", str(offline.config))
    assert orders.code == 0 and orders.json() == {"source": "database", "orders": []}

    outbox = cli("outbox", "--json", "--config", str(offline.config)).json()
    assert outbox["source"] == "database"
    assert outbox["depth"] == 2 and outbox["streams"] == {"alarm": 1, "sale": 1}
    assert [r["stream"] for r in outbox["rows"]] == ["sale", "alarm"]
    assert outbox["oldest_at"] == outbox["rows"][0]["created_at"]
    # Contract 1.1: each guaranteed stream's sequence, nothing acknowledged by a backend yet.
    assert outbox["sequences"]["sale"] | {"oldest_unacked_at": None} == {
        "last_seq": 1,
        "acked_seq": 0,
        "unacked": 1,
        "sent": 0,
        "dropped": 0,
        "oldest_unacked_at": None,
    }

    alarms = cli("alarms", "--json", "--config", str(offline.config)).json()
    [alarm] = alarms["alarms"]
    assert alarm["kind"] == "pump_alarm" and alarm["pump"] == 2

    audit = cli("audit", "--json", "--config", str(offline.config)).json()
    assert audit == {"source": "database", "audit": []}

    text = cli("outbox", "--config", str(offline.config))
    assert text.code == 0 and "2 message(s) waiting" in text.out
    assert "oldest unacked" in text.out and "alarm" in text.out


def test_export_without_the_daemon(offline: Offline, tmp_path: Path) -> None:
    out = tmp_path / "sales.csv"
    result = cli("export", "sales", "--csv", str(out), "--config", str(offline.config))
    assert result.code == 0 and result.out == f"wrote 1 sale(s) to {out}\n"
    with out.open(newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["pump"] == "2" and row["volume"] == "10.00" and row["currency"] == "CNY"

    result = cli(
        "export", "sales", "--csv", "-", "--since", "2099-01-01", "--config", str(offline.config)
    )
    assert result.code == 0 and result.out.splitlines()[0].startswith("id,uid,recorded_at")
    assert len(result.out.splitlines()) == 1  # the header only


def test_nothing_to_read_without_daemon_or_config(tmp_path: Path) -> None:
    result = cli("sales", "--socket", str(tmp_path / "none.sock"), "--config", "/nonexistent.toml")
    assert result.code == 1
    assert result.err.startswith(f"edgectl is not running (no daemon at {tmp_path}/none.sock)")
    assert "config file not found" in result.err and "Traceback" not in result.err


def test_db_check_backup_and_restore(offline: Offline, tmp_path: Path) -> None:
    check = cli("db", "check", "--json", "--config", str(offline.config))
    assert check.code == 0 and check.json()["ok"] is True and check.json()["sales"] == 1

    backup = tmp_path / "backup.db"
    result = cli("db", "backup", str(backup), "--config", str(offline.config))
    assert result.code == 0 and "1 sale(s)" in result.out and "integrity ok" in result.out

    # A sale recorded after the backup goes away with the restore, and is kept aside.
    store = Store(offline.db, messages=ContractMessages())
    store.record_sale(
        Sale(
            pump=1,
            nozzle=2,
            grade="95",
            volume=Decimal("5.00"),
            amount=Decimal("39.65"),
            unit_price=Decimal("7.93"),
            currency="CNY",
            ended_at="2026-11-24T09:00:00.000Z",
        )
    )
    store.close()
    result = cli("db", "restore", str(backup), "--json", "--config", str(offline.config))
    assert result.code == 0, result.err
    body = result.json()
    assert body["restored"] == str(offline.db) and body["sales"] == 1
    kept = Path(body["previous"])
    assert kept.exists() and kept.name.startswith("edgectl.db.before-restore-")

    db = sqlite3.connect(offline.db)
    try:
        assert db.execute("SELECT COUNT(*) FROM sales").fetchone()[0] == 1
    finally:
        db.close()
    db = sqlite3.connect(kept)
    try:
        assert db.execute("SELECT COUNT(*) FROM sales").fetchone()[0] == 2
    finally:
        db.close()
    # The restored store opens as the daemon opens it.
    Store(offline.db, messages=ContractMessages()).close()


def test_restore_checks_its_source_first(offline: Offline, tmp_path: Path) -> None:
    before = digest(offline.db)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 100)
    result = cli("db", "restore", str(garbage), "--config", str(offline.config))
    assert result.code == 1 and "is not an SQLite database" in result.err
    assert "not restoring it" in result.err

    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.commit()
    db.close()
    result = cli("db", "restore", str(other), "--config", str(offline.config))
    assert result.code == 1 and "is not an edgectl database" in result.err

    result = cli("db", "restore", str(tmp_path / "missing.db"), "--config", str(offline.config))
    assert result.code == 1 and "no database at" in result.err
    assert digest(offline.db) == before


def test_restore_refused_while_the_store_is_locked(offline: Offline, tmp_path: Path) -> None:
    backup = tmp_path / "backup.db"
    assert cli("db", "backup", str(backup), "--config", str(offline.config)).code == 0
    with lock_path(offline.db).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # as a running daemon holds it
        result = cli("db", "restore", str(backup), "--config", str(offline.config))
    assert result.code == 1 and "the store is in use" in result.err


def test_db_check_finds_damage(offline: Offline) -> None:
    offline.db.unlink()
    db = sqlite3.connect(offline.db)
    db.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
    db.execute("CREATE INDEX tb ON t (b)")
    db.executemany("INSERT INTO t (b) VALUES (?)", [(f"value {i}" * 3,) for i in range(2000)])
    db.commit()
    db.close()
    with offline.db.open("r+b") as handle:
        handle.seek(4096 * 5 + 100)
        handle.write(b"\xff" * 200)
    result = cli("db", "check", "--config", str(offline.config))
    assert result.code == 1
    assert "DAMAGED" in result.out and "Restore the latest backup" in result.out
    result = cli("db", "check", "--json", "--config", str(offline.config))
    assert result.code == 1 and result.json()["ok"] is False and result.json()["problems"]


@pytest.mark.parametrize(
    "args",
    [
        ("authorize",),
        ("authorize", "1", "--amount", "10", "--volume", "5"),
        ("authorize", "one"),
        ("sales", "--since", "the day before"),
        ("sales", "--pump", "0"),
        ("sniff",),
        ("probe", "/dev/null"),
        ("price", "95", "-1"),
        ("export", "sales"),
        ("db",),
        ("frobnicate",),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.code == 2, result.err
    assert "usage:" in result.err and "Traceback" not in result.err


TECHNICIAN_COMMANDS = [
    ("status",),
    ("pumps",),
    ("tanks",),
    ("prices",),
    ("alarms",),
    ("sales",),
    ("orders",),
    ("outbox",),
    ("audit",),
    ("export", "sales"),
    ("watch",),
    ("authorize",),
    ("stop",),
    ("price",),
    ("sniff",),
    ("probe",),
    ("scan",),
    ("config", "check"),
    ("db", "backup"),
    ("db", "restore"),
    ("db", "check"),
]


@pytest.mark.parametrize("words", TECHNICIAN_COMMANDS)
def test_every_help_has_an_example(
    words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args([*words, "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text and f"edgectl {' '.join(words)}" in text
    assert "exit status" in text


def test_json_flag_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    for words in TECHNICIAN_COMMANDS:
        with pytest.raises(SystemExit):
            build_parser().parse_args([*words, "--help"])
        assert "--json" in capsys.readouterr().out, words


def test_json_outputs_are_json(offline: Offline) -> None:
    for args in (("sales",), ("orders",), ("outbox",), ("alarms",), ("audit",), ("db", "check")):
        result = cli(*args, "--json", "--config", str(offline.config))
        assert result.code == 0, (args, result.err)
        json.loads(result.out)
