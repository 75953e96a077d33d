"""Every table of the CLI on an 80-column terminal (issue 16 point 4): nothing wider than the
screen, no cell cut (`FUE…`) or wrapped, numbers of a column with the same decimals, one time
convention (local time with its zone).

Each command runs on its real handler with the daemon's answer given to it, printing to a
recording console 80 columns wide, as an ssh session from a technician's laptop would be.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console

from edgectl.cli import health, output, probe, pumps, records, status, watch

WIDTH = 80
NOW = datetime.now(UTC)


def stamp(ago_s: float = 0.0) -> str:
    moment = NOW - timedelta(seconds=ago_s)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    """The console every command prints to: 80 columns, recorded."""
    console = Console(
        width=WIDTH, record=True, file=io.StringIO(), force_terminal=False, color_system=None
    )
    monkeypatch.setattr(output, "console", lambda stderr=False: console)
    yield console


def shown(console: Console, *cells: str) -> list[str]:
    """The screen's lines, checked: none wider than the terminal, none cut with an ellipsis,
    and each of `cells` whole on one line (not folded onto the next)."""
    lines = console.export_text().splitlines()
    assert lines, "nothing printed"
    for line in lines:
        assert cell_len(line) <= WIDTH, f"{cell_len(line)} columns: {line!r}"
        assert "…" not in line, f"a cut cell: {line!r}"
    for value in cells:
        assert any(value in line for line in lines), f"{value!r} not whole on one line"
    return lines


def answering(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Any]) -> None:
    """The daemon, as far as the handlers ask it."""
    monkeypatch.setattr(output, "call", lambda args, op, op_args=None: answers[op])

    def fetch(args: Any, op: str, op_args: Any, from_database: Any) -> tuple[Any, str]:
        return answers[op], "daemon"

    monkeypatch.setattr(records, "fetch", fetch)
    monkeypatch.setattr(health, "fetch", fetch)


def args(**values: Any) -> argparse.Namespace:
    return argparse.Namespace(json=False, config=None, socket=None, **values)


def pump(number: int, state: str, **kw: Any) -> dict[str, Any]:
    view = {
        "pump": number,
        "line": "north" if number < 3 else "south",
        "address": f"0x{0x4F + number:02X}",
        "online": True,
        "state": state,
        "state_code": 4,
        "status": "filling",
        "nozzle": 2,
        "nozzle_out": True,
        "grade": "diesel",
        "unit_price": "7.10",
        "volume": "38.12",
        "amount": "270.65",
        "authorization_id": "a-20261202T181447-5f3c9e21",
        "sales": 1208,
    }
    return view | kw


PUMPS = [
    pump(1, "SUSPENDED_FUELLING"),
    pump(2, "IDLE", nozzle=None, nozzle_out=False, grade=None, volume="0.00", amount="0.00"),
    pump(3, "AUTHORISED", online=False, authorization_id=None, volume="1446.1"),
    pump(4, "FUELLING", grade="98", unit_price="8.93", volume="747.14", amount="6672.46"),
]


def tank(number: int, **kw: Any) -> dict[str, Any]:
    row = {
        "tank": number,
        "name": "92# Gasoline tank by the shop",
        "grade": "92",
        "product": "92# Gasoline",
        "capacity_l": "30000",
        "gauge": "tls",
        "gauge_tank": number,
        "online": True,
        "reading_at": stamp(3),
        "reading_age_s": 3.0,
        "height_mm": "1402.5",
        "water_mm": "0.0",
        "temperature_c": "15.62",
        "gross_l": "17123.4",
        "product_l": "17123.4",
        "net_l": "747.1391",
        "ullage_l": "12876.6",
        "fill_pct": "57.1",
        "alarms": [],
        "implausible": False,
    }
    return row | kw


TANKS = [
    tank(1),
    tank(2, net_l="1446.1", alarms=["high_water", "low_product"]),
    tank(3, online=False, fill_pct="9.0"),
]


def test_pumps(screen: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    answering(monkeypatch, {"pumps": PUMPS})
    assert pumps.run_pumps(args()) == 0
    lines = shown(screen, "SUSPENDED_FUELLING", "AUTHORISED", "6672.46", "747.14")
    # 1446.1 beside 747.14 gets the column's two decimals, and ends where the others end.
    [long] = [line for line in lines if "1446.10" in line]
    [short] = [line for line in lines if "747.14" in line]
    assert long.index("1446.10") + 7 == short.index("747.14") + 6


def test_tanks_with_one_decimal_in_each_figure(
    screen: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Daemon:
        def __enter__(self) -> Daemon:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def call(self, op: str, op_args: Any = None) -> Any:
            return TANKS

    class Target:
        config = None

        def client(self) -> Daemon:
            return Daemon()

    monkeypatch.setattr(output, "target", lambda args: Target())
    assert pumps.run_tanks(args()) == 0
    shown(screen, "747.1", "1446.1", "high_water, low_product", "57.1 %")
    text = screen.export_text()
    assert "747.1391" not in text and "15.62" not in text


def test_status(screen: Console) -> None:
    document = {
        "health": {"code": 1, "status": "degraded", "line": "EDGECTL WARNING - pump 3 offline"},
        "daemon": {
            "version": "0.1.0",
            "station": "DEMO-001",
            "station_name": "edgectl demo station",
            "uptime_s": 3600.0,
            "pid": 4242,
            "mode": "auto",
            "config": "/etc/edgectl/station.toml",
            "store": "/var/lib/edgectl/edgectl.db",
        },
        "cloud": None,
        "outbox": {"depth": 0, "oldest_age_s": None, "sequences": {}},
        "lines": [
            {
                "line": "north",
                "port": "/run/edgectl-demo-1234/north",
                "protocol": "wayne_dart",
                "settings": "9600 8O1",
                "pumps": 2,
                "online": 2,
                "per_minute": {"frames": 1200.0, "errors": 0.0, "timeouts": 3.0},
                "up": True,
                "reason": None,
            },
            {
                "line": "tls",
                "port": "/dev/ttyUSB1",
                "protocol": "veeder_root",
                "settings": "9600 7E1",
                "tanks": 4,
                "online": 4,
                "per_minute": None,
                "up": True,
                "reason": None,
            },
        ],
        "pumps": [
            {
                "pump": 1,
                "line": "north",
                "address": "0x50",
                "online": True,
                "state": "IDLE",
                "reason": None,
            },
            {
                "pump": 3,
                "line": "south",
                "address": "0x50",
                "online": False,
                "state": "INOPERATIVE",
                "reason": "no answer to 3 polls",
            },
        ],
        "tanks": [
            {
                "tank": 1,
                "gauge": "tls",
                "gauge_tank": 1,
                "online": True,
                "alarms": [],
                "reading_at": stamp(),
                "fill_pct": "57.1",
            }
        ],
    }
    status.render(document)
    shown(screen, "north", "1200", "pump 3", "no answer to 3 polls", "57.1 % full")


def test_watch(screen: Console) -> None:
    update = {"at": stamp(), "pumps": PUMPS, "tanks": TANKS}
    screen.print(watch.view(update, "DEMO-001"))
    lines = shown(screen, "SUSPENDED_FUELLING", "6672.46", "high_water, low_product")
    assert len(lines) <= 24, "the live view fits one 80x24 screen"


def test_prices(screen: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    prices = {
        "price_set_id": "ps-20261202-evening-0001",
        "currency": "CNY",
        "grades": [
            {"grade": "92", "name": "92# Gasoline", "unit_price": "7.45", "configured": "7.45"},
            {"grade": "diesel", "name": "0# Diesel", "unit_price": "7.1", "configured": "7.10"},
        ],
        "pumps": [{"pump": 1, "price_set_id": "ps-20261202-evening-0001"}],
        "pending": [],
    }
    answering(monkeypatch, {"prices": prices})
    assert pumps.run_prices(args()) == 0
    shown(screen, "92# Gasoline", "7.10")


def sale(number: int, **kw: Any) -> dict[str, Any]:
    row = {
        "id": number,
        "recorded_at": stamp(60 * number),
        "pump": 3,
        "nozzle": 2,
        "grade": "diesel",
        "volume": "38.12",
        "amount": "270.65",
        "unit_price": "7.10",
        "currency": "CNY",
        "order_id": None,
        "authorization_id": "a-20261202T181447-5f3c9e21",
    }
    return row | kw


def test_sales(screen: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    answering(monkeypatch, {"sales": [sale(1), sale(1208, volume="1446.1", amount="10267.31")]})
    assert records.run_sales(args(since=None, pump=None, limit=None, all=False)) == 0
    shown(screen, "1446.10", "10267.31", output.local_time(stamp(60)))


def test_orders(screen: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    order = {
        "order_id": "o-demo-20261202T181447-5f3c",
        "created_at": stamp(90),
        "pump": 4,
        "status": "completed",
        "preset_type": "amount",
        "preset_value": "120.00",
        "currency": "CNY",
        "reason": None,
        "sale_id": 1208,
    }
    answering(monkeypatch, {"orders": [order]})
    assert records.run_orders(args(status=None, since=None, limit=None, all=False)) == 0
    shown(screen, "o-demo-20261202T181447-5f3c", "amount 120.00 CNY", "completed")


def test_outbox(screen: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    row = {
        "seq": 90211,
        "stream": "sale",
        "stream_seq": 41,
        "version": "1.1",
        "created_at": stamp(400),
        "sent_at": stamp(399),
        "priority": 1,
        "key": "DEMO-001/evt/sale/1208",
        "bytes": 812,
    }
    sequences = {
        "sale": {
            "last_seq": 41,
            "acked_seq": 39,
            "unacked": 2,
            "sent": 2,
            "dropped": 0,
            "oldest_unacked_at": stamp(420),
        }
    }
    outbox = {
        "depth": 1,
        "waiting": 0,
        "oldest_at": stamp(400),
        "streams": {"sale": 1},
        "sequences": sequences,
        "rows": [row],
    }
    answering(monkeypatch, {"outbox": outbox})
    assert records.run_outbox(args(limit=None, all=False)) == 0
    shown(screen, "DEMO-001/evt/sale/1208", "unacked")


def test_alarms(screen: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    alarm = {
        "id": 77,
        "raised_at": stamp(3000),
        "severity": "critical",
        "kind": "tank_high_water",
        "pump": None,
        "message": "tank 2: water 62.0 mm, above the 50 mm limit",
        "cleared_at": stamp(100),
    }
    answering(monkeypatch, {"alarms": [alarm]})
    assert records.run_alarms(args(cleared=True, limit=None, all=False)) == 0
    shown(screen, "tank 2: water 62.0 mm, above the 50 mm limit", "tank_high_water")


def test_audit(screen: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    row = {
        "id": 12,
        "requested_at": stamp(30),
        "action": "price",
        "args": '{"grade": "92", "price": "70000"}',
        "client_user": "technician (via sudo as root)",
        "peer_user": "root",
        "peer_uid": 0,
        "outcome": "failed",
        "message": "grade 92: 7.45 → 70000.00 CNY is a change of +939497.3 %",
    }
    answering(monkeypatch, {"audit": [row]})
    assert records.run_audit(args(limit=None, all=False)) == 0
    shown(screen, "grade 92: 7.45 → 70000.00 CNY is a change of +939497.3 %", "failed")


def test_device_history(screen: Console) -> None:
    device = {
        "device": "pump:3",
        "online": 0,
        "reason": "no answer to 3 polls",
        "last_seen_at": stamp(50),
        "offline_since": stamp(40),
        "online_since": None,
        "errors_last_hour": {"timeout": 12},
        "errors_last_day": {"timeout": 40, "bad_crc": 2},
        "events": [
            {
                "at": stamp(40),
                "event": "offline",
                "kind": "timeout",
                "count": 3,
                "message": "pump 3 (south/0x50) stopped answering: no reply to 3 polls",
            }
        ],
    }
    health.render_device(screen, device)
    shown(screen, "pump 3 (south/0x50) stopped answering: no reply to 3 polls")


def test_probe_findings(screen: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    from drivers.probing import Found, Setting

    dart = probe.protocols()["dart"]
    found = [
        Found(
            dart,
            0x50 + n,
            "DATA DC1 pump status: reset; DC3 nozzle status: nozzle 1 in",
            [Setting(9600, "odd"), Setting(19200, "odd")],
        )
        for n in range(3)
    ]
    monkeypatch.setattr(probe, "check_free", lambda port: None)
    monkeypatch.setattr(probe, "_with_progress", lambda show, label, total, work: found)
    plan: probe.Plan = [(dart, list(dart.settings), [0x50])]
    command = args(port="/dev/ttyUSB0", timeout_ms=None)
    assert probe._report(command, plan, stop_at_first=False) == 0
    shown(screen, "DATA DC1 pump status: reset; DC3 nozzle status: nozzle 1 in", "0x52")


def test_times_are_local_with_their_zone() -> None:
    text = output.local_time("2026-12-02T10:14:47.123Z")
    moment = datetime(2026, 12, 2, 10, 14, 47, tzinfo=UTC).astimezone()
    assert text == moment.strftime("%Y-%m-%d %H:%M:%S ") + moment.strftime("%Z")


def test_the_demos_live_view(screen: Console, tmp_path: Path) -> None:
    from drivers.base import DispenserStatus
    from edgectl.cli import demo
    from edgectl.config import load_config
    from edgectl.forecourt.fuelling_point import FPState
    from edgectl.station import PumpView
    from tests.test_cli_demo import demo_copy

    config = load_config(demo_copy(tmp_path))
    views = [
        PumpView(
            number=p.number,
            line=p.line,
            address=p.address,
            online=True,
            state=FPState.SUSPENDED_FUELLING if p.number == 1 else FPState.IDLE,
            status=DispenserStatus.FILLING if p.number == 1 else None,
            nozzle=2,
            nozzle_out=p.number == 1,
            grade="95",
            unit_price=Decimal("7.93"),
            volume=Decimal("747.14") if p.number == 1 else Decimal("1446.1"),
            amount=Decimal("5924.82"),
            authorization_id=1208,
            sales=12,
        )
        for p in config.pumps
    ]

    class Station:
        def snapshot(self) -> list[PumpView]:
            return views

    class Daemon:
        station = Station()

    screen.print(demo._render(Daemon(), config, height=24))
    # No tank reading yet (the store is new): the tanks are listed all the same.
    lines = shown(screen, "SUSPENDED_FUELLING", "1446.10", "747.14", "diesel", "latest sales")
    assert len(lines) <= 24


def test_the_configured_tanks_without_the_daemon(screen: Console) -> None:
    rows = [tank(n, capacity_l="30000") for n in (1, 2)]
    screen.print(pumps.configured_tanks_table(rows))
    shown(screen, "92# Gasoline tank by the shop", "30000", "tls/2")


def test_a_table_too_wide_even_without_its_optional_columns_becomes_blocks(
    screen: Console,
) -> None:
    message = "pump 3 did not confirm the STOP: no reply to 3 retries within 250 ms each"
    screen.print(
        output.table(
            "audit",
            ("id", "action", "outcome", "message"),
            [(7, "stop", "failed", message), (8, "price", "ok", "grade 92: 7.45 → 7.60")],
            right=("id",),
            optional=("outcome",),
        )
    )
    lines = shown(screen, message, "grade 92: 7.45 → 7.60")
    assert lines[0] == "audit"
    assert [line for line in lines if line.startswith("id ")] == ["id 7", "id 8"]
    assert any(line.split() == ["outcome", "failed"] for line in lines)


def test_a_table_that_fits_leaves_out_only_what_it_must(screen: Console) -> None:
    rows = [(1, "north/0x50", "IDLE", "x" * 70)]
    columns = ("pump", "line", "state", "note")
    screen.print(output.table(None, columns, rows, optional=("note", "line")))
    [heading] = [line for line in shown(screen, "north/0x50") if "pump" in line]
    assert heading.split() == ["pump", "line", "state"]  # the note went, the line stayed
