"""The records and reports through the CLI (issue 16.1, 16.2): `deliveries`, `reconciliation`,
`totals`, `tanks` with the daemon down, `report day|shift` as a table, JSON, CSV and HTML,
and `shift open|close|list`, recorded by the running daemon (asking the pumps) or by the CLI
itself with the store's last totals; every table within 80 columns."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from drivers.wayne_dart.codec import DartStatus
from edgectl.cloud.messages import ContractMessages
from edgectl.forecourt.sale import Sale
from edgectl.store.store import Store
from tests import reportkit
from tests.control import clikit
from tests.control.clikit import (
    DaemonProcess,
    Result,
    cli,
    control_config,
    daemon_process,
    short_dir,
)
from tests.store.writes import DELIVERY, TANK_READING

WIDTH = 80


def fits(result: Result) -> None:
    """Every line of a table for people within an 80-column terminal."""
    assert result.code == 0, result.err
    long = [line for line in result.out.splitlines() if len(line.rstrip()) > WIDTH]
    assert long == [], "\n".join(long)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Books:
    config: Path
    db: Path
    socket: Path


TANKS = """
[[gauges]]
name = "tls"
protocol = "veeder_root"
port = "/dev/ttyS7"

[[tanks]]
number = 1
name = "92 east"
grade = "92"
capacity_l = 30000
height_mm = 2500
density_15 = "737.0"
gauge = "tls"
gauge_tank = 1
reconciliation_limit_l = 400
"""


@pytest.fixture
def books() -> Iterator[Books]:
    """A station whose daemon is not running; its store holds deliveries, reconciliations of
    the last days, a reading kept two hours ago, and sales whose totals match, disagree, or
    moved with no sale."""
    with short_dir() as tmp:
        socket = tmp / "control.sock"
        config = control_config(tmp, socket, extra=TANKS)
        db = tmp / "edgectl.db"
        now = datetime.now(UTC)
        store = Store(db, messages=ContractMessages())
        try:
            store.record_tank_reading(
                {**TANK_READING, "at": iso(now - timedelta(hours=2))}, history=True
            )
            store.record_delivery("tls", DELIVERY)
            recent = {
                **DELIVERY,
                "start_at": iso(now - timedelta(days=1, minutes=40)),
                "end_at": iso(now - timedelta(days=1)),
            }
            store.record_delivery("tls", recent)
            cumulative = Decimal(0)
            for back in range(10, 0, -1):
                day = (now.astimezone() - timedelta(days=back)).date()
                cumulative += Decimal("-150.25")
                store.record_reconciliation(
                    {
                        "tank": 1,
                        "day": day.isoformat(),
                        "opening": "20000.00",
                        "deliveries": "0.00",
                        "sales": "1200.00",
                        "closing": "18649.75",
                        "variance": "-150.25",
                        "cumulative_variance": str(cumulative),
                        "period_throughput": str(1200 * (11 - back)),
                        "flagged": int(abs(cumulative) > 400 + 12 * (11 - back)),
                    },
                    {"tank": 1},
                )
            for pump, nozzle, after, amount_after in (
                (1, 1, "1010.00", "7524.50"),  # matches (before 1000.00 / 7450.00)
                (2, 1, "1012.00", "7539.40"),  # moved 12 L for a 10 L sale
            ):
                store.check_totals(pump, nozzle, Decimal("1000.00"), Decimal("7450.00"))
                store.record_sale(
                    Sale(
                        pump=pump,
                        nozzle=nozzle,
                        grade="92",
                        volume=Decimal("10.00"),
                        amount=Decimal("74.50"),
                        unit_price=Decimal("7.45"),
                        currency="CNY",
                        ended_at=iso(now - timedelta(hours=1)),
                        total_volume_after=Decimal(after),
                        total_amount_after=Decimal(amount_after),
                    )
                )
            store.check_totals(2, 2, Decimal("500.00"), Decimal("3965.00"))
            store.check_totals(2, 2, Decimal("505.00"), Decimal("4004.65"))  # no sale
        finally:
            store.close()
        yield Books(config, db, socket)


def run_json(books: Books, *args: str) -> Any:
    result = cli(*args, "--json", "--config", str(books.config))
    assert result.code == 0, result.err
    assert result.err.startswith(f"edgectl is not running (no daemon at {books.socket})")
    return result.json()


def test_deliveries_without_the_daemon(books: Books) -> None:
    body = run_json(books, "deliveries")
    assert body["source"] == "database"
    first, second = body["deliveries"]  # oldest first
    assert first["start_at"] == DELIVERY["start_at"] and first["delivered_tc"] == "10010"
    assert second["tank"] == 1 and second["gauge"] == "tls"
    since = run_json(books, "deliveries", "--since", "2d")
    assert [d["id"] for d in since["deliveries"]] == [second["id"]]
    assert run_json(books, "deliveries", "--tank", "2")["deliveries"] == []
    text = cli("deliveries", "--config", str(books.config))
    fits(text)
    assert "2 delivery(ies), 20020.00 L at 15 °C" in text.out and "detected" in text.out
    assert "40m 0s" in text.out  # how long the recent one took


def test_reconciliation_without_the_daemon(books: Books) -> None:
    body = run_json(books, "reconciliation", "--days", "5")
    assert body["source"] == "database"
    days = body["reconciliations"]
    assert len(days) == 5 and all(d["tank"] == 1 for d in days)
    last = days[-1]
    assert last["cumulative_variance"] == "-1502.50" and last["flagged"] is True
    assert last["limit"] == "520.00"  # 1 % of 12000 L + the tank's 400 L
    assert last["verdict"] == "flagged"
    assert len(run_json(books, "reconciliation")["reconciliations"]) == 7  # the default
    text = cli("reconciliation", "--tank", "1", "--days", "31", "--config", str(books.config))
    fits(text)
    assert "tank 1 (92 east)" in text.out and "FLAGGED" in text.out and "-1503" in text.out
    assert "cum var" in text.out
    none = cli("reconciliation", "--tank", "3", "--config", str(books.config))
    assert none.code == 0 and "no reconciliation kept for tank 3" in none.out


def test_totals_and_their_last_check_without_the_daemon(books: Books) -> None:
    body = run_json(books, "totals")
    assert body["source"] == "database"
    checks = {(t["pump"], t["nozzle"]): t for t in body["totals"]}
    assert checks[(1, 1)]["volume"] == "1010.00" and checks[(1, 1)]["grade"] == "92"
    assert checks[(1, 1)]["last_check"]["verdict"] == "ok"
    assert checks[(2, 1)]["last_check"]["verdict"] == "mismatch"
    assert "totals moved 12.00 L" in checks[(2, 1)]["last_check"]["detail"]
    assert checks[(2, 2)]["last_check"]["verdict"] == "moved"
    text = cli("totals", "--config", str(books.config))
    fits(text)
    assert "MISMATCH" in text.out and "MOVED" in text.out and "ok, sale" in text.out
    assert "unrecorded dispensing on pump 2 nozzle 2" in text.out


def test_tanks_show_the_last_reading_kept_when_the_daemon_is_down(books: Books) -> None:
    result = cli("tanks", "--json", "--config", str(books.config))
    assert result.code == 0, result.err
    assert result.err.startswith(f"edgectl is not running (no daemon at {books.socket}); the last")
    assert f"kept in {books.db}, read-only; the newest is 2h 0m old" in result.err
    body = result.json()
    assert body["source"] == "database"
    [tank] = body["tanks"]
    assert tank["net_l"] == "19950" and tank["fill_pct"] == "66.7"
    assert 7190 < tank["reading_age_s"] < 7500
    assert tank["online"] is None and tank["alarms"] == []
    text = cli("tanks", "--config", str(books.config))
    assert text.code == 0 and "19950" in text.out and "(2h 0m ago)" in text.out
    assert "each tank's last reading kept" in text.out


def test_the_records_commands_without_any_store() -> None:
    with short_dir() as tmp:
        config = control_config(tmp, tmp / "control.sock")
        result = cli("deliveries", "--config", str(config))
        assert result.code == 1 and f"no database at {tmp / 'edgectl.db'}" in result.err
        assert "Traceback" not in result.err


# --------------------------------------------------------------------------- reports


@pytest.fixture(scope="module")
def sample() -> Iterator[Path]:
    with short_dir() as tmp:
        config = reportkit.write_config(tmp)
        reportkit.seed_day(tmp / "edgectl.db")
        yield config


NOW = "2026-11-24T22:05:00+08:00"


def report(config: Path, *args: str) -> Result:
    """`edgectl report …` made at NOW, in the sample station's time zone."""
    done = subprocess.run(
        [sys.executable, "-m", "edgectl", "report", *args, "--config", str(config), "--now", NOW],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clikit._env(), "TZ": reportkit.ZONE},
        cwd=clikit.ROOT,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def test_the_day_report_reads_for_people_in_80_columns(sample: Path) -> None:
    result = report(sample, "day", "2026-11-24")
    fits(result)
    out = result.out
    assert out.startswith("Day report 2026-11-24, station SAMPLE-01 (Riverside)")
    assert "from 2026-11-24 00:00 to 2026-11-25 00:00, local time (CST, UTC+08:00)" in out
    assert "to look at:" in out and "pump 3 nozzle 2: totals moved" in out
    for heading in (
        "sales by grade",
        "sales by pump",
        "sales by payment source",
        "totals check",
        "tank stock",
        "variance",
        "deliveries",
        "alarms",
    ):
        assert heading in out, heading
    assert "cloud order" in out and "attendant" in out and "MISMATCH" in out
    assert "provisional" in out and "gauge" in out and "pump 2 does not answer" in out
    assert "\x1b[" not in out


def test_the_day_report_as_json_csv_and_html(sample: Path, tmp_path: Path) -> None:
    body = report(sample, "day", "2026-11-24", "--json")
    assert body.code == 0, body.err
    data = body.json()
    assert data["source"] == "database"
    figures = data["report"]
    assert figures["period"]["kind"] == "day" and figures["period"]["day"] == "2026-11-24"
    assert figures["total"]["sales"] > 50 and isinstance(figures["total"]["litres"], str)
    assert [s["key"] for s in figures["by_source"]] == ["cloud", "auto", "attendant"]
    assert len(figures["hours"]) == 24 and len(figures["tanks"]) == 3

    out = tmp_path / "day.csv"
    made = report(sample, "day", "2026-11-24", "--csv", str(out))
    assert made.code == 0 and made.out.strip() == f"wrote the CSV to {out}"
    rows = list(csv.DictReader(out.open(newline="")))
    litres = next(
        r for r in rows if (r["section"], r["key"], r["field"]) == ("sales", "all", "litres")
    )
    assert litres["value"] == figures["total"]["litres"] and litres["unit"] == "L"
    assert not list(tmp_path.glob(".*partial"))

    page = tmp_path / "day.html"
    made = report(sample, "day", "2026-11-24", "--html", str(page))
    assert made.code == 0 and made.out.strip() == f"wrote the page to {page}"
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and "http" not in text
    to_stdout = report(sample, "day", "2026-11-24", "--html", "-")
    assert to_stdout.code == 0 and to_stdout.out == text
    csv_out = report(sample, "day", "2026-11-24", "--csv", "-")
    assert next(csv.reader(io.StringIO(csv_out.out))) == [
        "section",
        "key",
        "field",
        "value",
        "unit",
    ]


def test_report_errors_name_what_the_user_gave(sample: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "day.html"
    result = report(sample, "day", "2026-11-24", "--html", str(missing))
    assert result.code == 1 and result.out == ""
    assert result.err.strip() == (
        f"edgectl report day: cannot write {missing}: No such file or directory (no such directory)"
    )
    bad = report(sample, "day", "24/11/2026")
    assert bad.code == 2 and "'24/11/2026' is not a day" in bad.err
    both = report(sample, "day", "--csv", "-", "--html", "-")
    assert both.code == 2 and "not allowed with" in both.err
    none = report(sample, "shift")
    assert none.code == 1 and "no shift recorded yet (edgectl shift open starts one)" in none.err
    nine = report(sample, "shift", "9")
    assert nine.code == 1 and "no shift 9" in nine.err


def test_an_empty_day_reports_nothing_sold(sample: Path) -> None:
    result = report(sample, "day", "2026-10-02")
    fits(result)
    assert "0 sale(s), 0.00 L, 0.00 CNY" in result.out
    assert "no delivery in this period" in result.out


# --------------------------------------------------------------------------- shifts offline


def test_shifts_without_the_daemon_take_the_stores_totals_and_are_audited(books: Books) -> None:
    opened = cli("shift", "open", "--json", "--config", str(books.config))
    assert opened.code == 0, opened.err
    assert opened.err.startswith(f"edgectl is not running (no daemon at {books.socket})")
    assert f"recording the shift in {books.db} itself" in opened.err
    body = opened.json()
    assert body["source"] == "database" and body["shift"]["id"] == 1
    assert body["totals_from"] == "the store's last recorded totals (the daemon is not running)"
    totals = {(t["pump"], t["nozzle"]): t for t in body["totals"]}
    assert len(totals) == 2 * 2  # every configured nozzle: 2 pumps, 2 nozzles each
    assert totals[(1, 1)]["volume"] == "1010.00" and totals[(1, 1)]["source"] == "store"
    assert totals[(1, 2)] == {
        "pump": 1,
        "nozzle": 2,
        "grade": "95",
        "volume": None,
        "amount": None,
        "source": "none",
        "read_at": None,
    }

    again = cli("shift", "open", "--config", str(books.config))
    assert again.code == 1
    assert again.err.splitlines()[-1] == (
        "edgectl shift open: shift 1 is still open: close it first (edgectl shift close)"
    )

    # A sale while the shift is open, then its closing.
    store = Store(books.db, messages=ContractMessages())
    try:
        store.record_sale(
            Sale(
                pump=1,
                nozzle=1,
                grade="92",
                volume=Decimal("20.00"),
                amount=Decimal("149.00"),
                unit_price=Decimal("7.45"),
                currency="CNY",
                ended_at=iso(datetime.now(UTC)),
                total_volume_after=Decimal("1030.00"),
                total_amount_after=Decimal("7673.50"),
            )
        )
    finally:
        store.close()
    closed = cli("shift", "close", "--config", str(books.config))
    fits(closed)
    assert "shift 1 closed at" in closed.out
    assert "nozzle totals: the store's last recorded totals (the daemon is not" in closed.out
    assert "never read" in closed.out and "its report: edgectl report shift 1" in closed.out

    listing = cli("shift", "list", "--config", str(books.config))
    fits(listing)
    assert "open" not in listing.out.split("\n", 3)[-1]  # closed: no "open" in its row

    shift = cli("report", "shift", "--json", "--config", str(books.config)).json()["report"]
    assert shift["period"]["kind"] == "shift" and shift["period"]["shift"] == 1
    one = next(c for c in shift["nozzle_checks"] if (c["pump"], c["nozzle"]) == (1, 1))
    assert (one["delta"], one["sold"], one["verdict"]) == ("20.00", "20.00", "ok")
    assert one["basis"] == "shift totals (store)"
    never = next(c for c in shift["nozzle_checks"] if (c["pump"], c["nozzle"]) == (1, 2))
    assert never["verdict"] == "no totals"
    fits(cli("report", "shift", "1", "--config", str(books.config)))

    rows = audit(books.db)
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("shift_open", "ok"),
        ("shift_open", "failed"),
        ("shift_close", "ok"),
    ]
    assert rows[0]["client_user"] and rows[0]["peer_uid"] is not None
    assert "still open" in rows[1]["message"]

    none = cli("shift", "close", "--config", str(books.config))
    assert none.code == 1 and "no shift is open (edgectl shift open starts one)" in none.err


def audit(db: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM audit ORDER BY id")]
    finally:
        con.close()


# --------------------------------------------------------------------------- with the daemon


@pytest.fixture(scope="module")
def station() -> Iterator[DaemonProcess]:
    """The daemon running on simulated pumps, attendant mode (nothing authorized unasked)."""
    with short_dir() as tmp:
        config = control_config(tmp, tmp / "control.sock", mode="attendant")
        with daemon_process(config) as daemon:
            yield daemon


def run(station: DaemonProcess, *args: str) -> Any:
    result = cli(*args, "--config", str(station.config_path), "--json")
    assert result.code == 0, result.err
    assert result.err == ""
    return result.json()


@pytest.mark.slow
def test_a_shift_with_the_daemon_asks_the_pumps(station: DaemonProcess) -> None:
    station.wait_for(lambda: len(station.call("totals")) == 4, "every nozzle's totals read")
    opened = run(station, "shift", "open")
    assert opened["source"] == "daemon" and opened["totals_from"] == "asked of the pumps"
    assert {t["source"] for t in opened["totals"]} == {"pump"}
    assert len(opened["totals"]) == 4
    start = {(t["pump"], t["nozzle"]): Decimal(t["volume"]) for t in opened["totals"]}
    assert start[(1, 1)] == Decimal("1000.00")  # the simulator's meter (100000 at 2 places)

    # A sale on pump 1 nozzle 1, and pump 2's nozzle 2 meter moving with no sale.
    sim = station.sims["l0"].pump(0x50)
    run(station, "authorize", "1", "--amount", "10")
    sim.lift(1)
    sim.squeeze()
    station.wait_for(lambda: sim.status is DartStatus.MAX_REACHED or sim.amount >= 1000, "fill")
    sim.hang_up()
    station.wait_for(lambda: len(station.call("sales", {"all": True})) == 1, "the sale")
    station.wait_for(lambda: station.pump_view(1)["state"] == "IDLE", "pump 1 idle")
    other = station.sims["l0"].pump(0x51)
    with other._lock:
        other._nozzles[2].total_volume += 500  # 5.00 L
        other._nozzles[2].total_amount += 3965

    closed = run(station, "shift", "close")
    assert closed["totals_from"] == "asked of the pumps"
    end = {(t["pump"], t["nozzle"]): Decimal(t["volume"]) for t in closed["totals"]}
    assert end[(2, 2)] - start[(2, 2)] == Decimal("5.00")
    sale = station.call("sales")[-1]
    assert end[(1, 1)] - start[(1, 1)] == Decimal(sale["volume"])
    # Asked of pump 2, the meter that moved is kept as the store's new base, and alarmed.
    moved = [a for a in station.call("alarms") if a["kind"] == "missed_sale"]
    assert [(a["pump"], a["nozzle"]) for a in moved] == [(2, 2)]

    shift = run(station, "report", "shift")["report"]
    assert shift["period"]["running"] is False and shift["period"]["shift"] == 1
    checks = {(c["pump"], c["nozzle"]): c for c in shift["nozzle_checks"]}
    assert checks[(1, 1)]["verdict"] == "ok" and checks[(1, 1)]["sold"] == sale["volume"]
    assert checks[(2, 2)]["verdict"] == "mismatch" and checks[(2, 2)]["difference"] == "5.00"
    assert checks[(2, 2)]["basis"] == "shift totals (pump)"
    assert [s["sales"] for s in shift["by_source"] if s["key"] == "attendant"] == [1]

    rows = [r for r in audit(station.config.store.path) if r["action"].startswith("shift")]
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("shift_open", "ok"),
        ("shift_close", "ok"),
    ]
    assert rows[0]["peer_uid"] is not None and json.loads(rows[0]["args"]) == {}
    assert "asked of the pumps" in rows[1]["message"]

    refused = cli("shift", "close", "--config", str(station.config_path))
    assert refused.code == 1 and "no shift is open" in refused.err
    assert audit(station.config.store.path)[-1]["outcome"] == "failed"


@pytest.mark.slow
def test_the_records_through_the_daemon(station: DaemonProcess) -> None:
    assert run(station, "deliveries") == {"source": "daemon", "deliveries": []}
    assert run(station, "reconciliation") == {"source": "daemon", "reconciliations": []}
    totals = run(station, "totals")
    assert totals["source"] == "daemon" and len(totals["totals"]) == 4
    assert run(station, "shift", "list")["source"] == "daemon"
    text = cli("totals", "--config", str(station.config_path))
    fits(text)
    assert "1000.00" in text.out or "ok" in text.out
    today = cli("report", "day", "--config", str(station.config_path))
    fits(today)
    assert f"Day report {date.today().isoformat()}" in today.out
