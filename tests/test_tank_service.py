"""Tank gauges in the running station: the daemon in-process, a TLS console simulator on a pty
driven by the shared tank physics, DART pumps on another pty."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time as _time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

import pytest

from drivers.base import GaugeAlarm
from drivers.tank_sim import SimTank, TankChart, TankFarm, TankSpec
from drivers.veeder_root.sim import TlsConsole, TlsConsoleSimulator
from drivers.wayne_dart.codec import DCC, DartStatus
from drivers.wayne_dart.sim import (
    Customer,
    FillUntil,
    HangUp,
    Lift,
    Release,
    Squeeze,
    Step,
    WaitAuthorized,
    normal_fill,
)
from edgectl import tank_service
from edgectl.cloud import contract
from edgectl.cloud.messages import ContractMessages
from edgectl.config import load_config
from edgectl.station import PumpFill, Station
from edgectl.store.store import PRIORITY_TELEMETRY, Store
from edgectl.tank_service import TankService
from tests.drivers.veeder_root.frames import MANUAL_US, FakeTank, FakeTanks
from tests.stationkit import RunningStation, rows, running_station, until, write_config
from tests.tankkit import TANK_TOML, HandClock, config, console, piped

T = TypeVar("T")
DEMO_4S = ("--duration", "4")


def latest(st: RunningStation) -> dict[str, str] | None:
    rows = st.rows("SELECT * FROM tank_latest WHERE tank = 1")
    return rows[0] if rows else None


def product(st: RunningStation) -> Decimal:
    row = latest(st)
    return Decimal(row["product_l"]) if row else Decimal(-1)


def open_alarms(st: RunningStation, kind: str) -> list[dict[str, str]]:
    return st.rows("SELECT * FROM alarms WHERE kind = ? AND cleared_at IS NULL", (kind,))


async def handled(st: RunningStation, n: int) -> None:
    assert st.daemon.tanks is not None
    target = st.daemon.tanks.events_handled + n
    await until(lambda: st.daemon.tanks is not None and st.daemon.tanks.events_handled >= target)


async def test_readings_sales_and_a_delivery_while_dispensing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tank_service, "DELIVERIES_INTERVAL_S", 0.5)
    with console(tmp_path, 15000) as (tank, _sim):
        async with running_station(config(tmp_path)) as st:
            await until(lambda: latest(st) is not None, what="first tank reading")
            assert abs(product(st) - 15000) < 1
            assert st.rows("SELECT COUNT(*) AS n FROM tank_readings")[0]["n"] >= 1
            (inventory,) = st.rows("SELECT * FROM outbox WHERE stream = 'inventory'")
            assert inventory["key"] == "tank/1" and inventory["priority"] == PRIORITY_TELEMETRY
            data = json.loads(inventory["payload"])
            assert data["tank"] == 1 and data["grade"] == "92"
            assert inventory["version"] >= 1 and inventory["stream_seq"] is None
            contract.envelope("inventory", "TEST-01", 0, data["measured_at"], data, version=1)
            # The simulated pumps draw from the simulated tank as the station records a sale.
            service = st.daemon.tanks
            assert service is not None
            recorded = st.daemon.station.on_sold

            def sold(fill: PumpFill) -> None:
                tank.draw(fill.volume)
                recorded(fill)

            st.daemon.station.on_sold = sold
            await Customer(st.pump(1), normal_fill(1, Decimal("30.00"))).run()
            await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="sale")
            first = Decimal(st.rows("SELECT volume FROM sales")[0]["volume"])
            await until(lambda: product(st) < Decimal(15000) - first + 1, what="level falls")

            # A tanker drops 3000 L over 8 s while pump 2 sells from the same tank.
            tank.deliver(3000, duration_s=8)
            await Customer(st.pump(2), normal_fill(1, Decimal("40.00"))).run()
            await until(lambda: len(st.rows("SELECT * FROM sales")) == 2, what="second sale")
            second = Decimal(st.rows("SELECT volume FROM sales ORDER BY id")[1]["volume"])
            await until(lambda: bool(st.rows("SELECT * FROM deliveries")), 30, "delivery")
            await handled(st, 4)
            (delivery,) = st.rows("SELECT * FROM deliveries")
            assert delivery["source"] == "gauge" and delivery["tank"] == 1
            assert Decimal(delivery["dispensed_during"]) == second
            assert abs(Decimal(delivery["delivered"]) - 3000) <= 2
            (event,) = st.rows("SELECT * FROM outbox WHERE stream = 'delivery'")
            data = json.loads(event["payload"])
            assert data["delivery_id"] == delivery["id"] and data["source"] == "gauge"
            assert data["dispensed_during"] == str(second)
            contract.envelope("delivery", "TEST-01", 2, data["end_at"], data)
            assert len(st.rows("SELECT * FROM outbox WHERE stream = 'inventory'")) == 1
            assert st.rows("SELECT * FROM alarms") == []


async def test_alarm_with_hysteresis_and_a_gauge_going_offline(tmp_path: Path) -> None:
    with console(tmp_path, 8000) as (tank, sim):
        async with running_station(config(tmp_path, low=5000)) as st:
            await until(lambda: latest(st) is not None, what="first tank reading")
            tank.set_state(product_l=4000)
            await until(lambda: bool(open_alarms(st, "tank_low_product")), what="low product")
            tank.set_state(product_l=5100)  # above the limit, inside the 5 % band
            await until(lambda: abs(product(st) - 5100) < 1, what="reading at 5100")
            await handled(st, 2)
            assert open_alarms(st, "tank_low_product")
            tank.set_state(product_l=5400)
            await until(lambda: not open_alarms(st, "tank_low_product"), what="cleared")
            (alarm,) = st.rows("SELECT * FROM alarms WHERE kind = 'tank_low_product'")
            assert alarm["cleared_at"] is not None and alarm["severity"] == "warning"
            streams = st.rows("SELECT payload FROM outbox WHERE stream = 'alarm'")
            assert len(streams) == 2 and '"cleared_at":null' in streams[0]["payload"]

            sim.set_online(False)
            await until(lambda: bool(open_alarms(st, "tank_probe_offline")), 15, "probe offline")
            sim.set_online(True)
            await until(lambda: not open_alarms(st, "tank_probe_offline"), 30, "probe back")
            assert len(st.rows("SELECT * FROM alarms WHERE kind = 'tank_probe_offline'")) == 1


class _StoreOnly:
    """What the tank service needs of the station to reconcile: the store, called inline."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.on_sold: object = None

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)


def _reading(tank: int, at: datetime, net: str, product: str) -> dict[str, Any]:
    return {
        "tank": tank,
        "at": at.isoformat(),
        "height_mm": "1000",
        "water_mm": "0",
        "temperature_c": "15",
        "gross_l": product,
        "water_l": "0",
        "product_l": product,
        "net_l": net,
        "ullage_l": "10000",
        "fill_pct": "50",
    }


async def test_reconciliation_of_a_day_on_known_data(tmp_path: Path) -> None:
    loaded = load_config(config(tmp_path))
    store = Store(loaded.store.path, messages=ContractMessages())
    try:
        service = TankService(loaded, cast(Station, _StoreOnly(store)))
        await service.prepare()
        day = date(2026, 11, 20)
        start = datetime.combine(day, time()).astimezone()
        end = start + timedelta(days=1)
        for at, net, product in (
            (start - timedelta(minutes=10), "15000.00", "15100.00"),
            (start + timedelta(hours=12), "14000.00", "14090.00"),
            (end - timedelta(minutes=5), "16400.00", "16500.00"),
            (end + timedelta(minutes=5), "1.00", "1.00"),  # the next day: not this one's
        ):
            store.record_tank_reading(_reading(1, at, net, product), history=True)
        delivery = {
            "tank": 1,
            "source": "gauge",
            "start_at": (start + timedelta(hours=11)).isoformat(),
            "end_at": (start + timedelta(hours=12)).isoformat(),
            "start_volume": Decimal(12000),
            "end_volume": Decimal(15000),
            "start_volume_tc": Decimal(11900),
            "end_volume_tc": Decimal(14900),
            "dispensed_during": None,
            "dispensed_during_tc": None,
            "delivered": Decimal(3000),
            "delivered_tc": Decimal(3000),
        }
        assert store.record_delivery("tls", delivery) is not None
        assert store.record_delivery("tls", delivery) is None  # once per gauge, tank, start
        with store.transaction() as tx:
            for uid, grade, volume, at in (
                ("a", "92", "1500.00", start + timedelta(hours=13)),
                ("b", "92", "99.00", end + timedelta(minutes=1)),  # the next day
                ("c", "95", "77.00", start + timedelta(hours=13)),  # another grade
            ):
                tx.execute(
                    "INSERT INTO sales (uid, pump, nozzle, grade, volume, amount, unit_price,"
                    " currency, ended_at, recorded_at) VALUES (?, 1, 1, ?, ?, '1', '1', 'CNY',"
                    " ?, ?)",
                    (uid, grade, volume, contract.timestamp(at), contract.timestamp(at)),
                )
        (rec,) = await service.reconcile_day(day)
        assert (rec.opening, rec.closing, rec.deliveries) == (
            Decimal("15000.00"),
            Decimal("16400.00"),
            Decimal(3000),
        )
        # 1500 L metered, to 15 °C with the closing factor 16400 / 16500.
        assert rec.sales == Decimal("1490.91")
        assert rec.variance == Decimal("-109.09") and not rec.flagged
        assert await service.reconcile_day(day) == []  # a day is kept once
        (row,) = store.query("SELECT * FROM outbox WHERE stream = 'reconciliation'")
        data = json.loads(row["payload"])
        assert data["day"] == "2026-11-20" and data["variance"] == "-109.09"
        contract.envelope("reconciliation", "TEST-01", 3, row["created_at"], data)
        # The next day carries the month's running sums on.
        store.record_tank_reading(
            _reading(1, end + timedelta(hours=23), "16300.00", "16400.00"), history=True
        )
        (nxt,) = await service.reconcile_day(day + timedelta(days=1))
        assert nxt.opening == Decimal("16400.00") and nxt.closing == Decimal("16300.00")
        assert nxt.sales == Decimal("98.40")  # sale "b": 99 L x 16300 / 16400
        assert nxt.variance == Decimal("-1.60")
        assert nxt.cumulative_variance == Decimal("-110.69")
        assert nxt.period_throughput == Decimal("1589.31")
    finally:
        store.close()


def test_the_demo_has_tanks_on_a_simulated_tls_console(tmp_path: Path) -> None:
    from edgectl.cli.demo import _tanks_table
    from tests.test_cli_demo import demo_copy

    path = demo_copy(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "edgectl", "demo", "--config", str(path), "--no-ui", *DEMO_4S],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "simulated tank gauge tls" in result.stdout
    loaded = load_config(path)
    tanks = rows(loaded.store.path, "SELECT * FROM tank_latest ORDER BY tank")
    assert [t["tank"] for t in tanks] == [1, 2, 3, 4]
    # The demo starts tank 1 just above a quarter of its 30,000 L (a tanker is due soon) and
    # the others at 60 % of capacity.
    assert abs(Decimal(tanks[0]["product_l"]) - Decimal(7530)) < 200
    assert abs(Decimal(tanks[1]["product_l"]) - Decimal(18000)) < 200
    table = _tanks_table(loaded)
    assert table.row_count == len(loaded.tanks)


PROBE_TOML = """
[[gauges]]
name = "probes"
protocol = "modbus_probe"
host = "127.0.0.1"
tcp_port = {port}
register_map = "{map}"
poll_interval_s = 0.5
reply_timeout_ms = 300
offline_after = 1

[[tanks]]
number = 2
grade = "95"
capacity_l = 30000
height_mm = 2500
density_15 = "745.0"
gauge = "probes"
device_id = 1
gauge_tank = 1
chart = [[0, 0], [2500, 30000]]
sudden_loss_l = 20000
"""


async def test_a_modbus_probe_feeds_its_tank_and_goes_offline_and_back(tmp_path: Path) -> None:
    from drivers.modbus_probe.registers import load_register_map
    from drivers.modbus_probe.sim import ModbusProbeSimulator, sim_probe

    map_path = Path(__file__).parent.parent / "config" / "modbus" / "generic_magnetostrictive.toml"
    spec = TankSpec(1, TankChart.from_points([(0, 0), (2500, 30000)]), "gasoline", 745.0)
    tank = SimTank(spec, product_l=12000)
    sim = ModbusProbeSimulator([sim_probe(1, load_register_map(map_path), tank)])
    _host, port = sim.serve_tcp()
    try:
        path = write_config(tmp_path, extra=PROBE_TOML.format(port=port, map=map_path))
        async with running_station(path) as st:

            def product2() -> Decimal:
                found = st.rows("SELECT product_l FROM tank_latest WHERE tank = 2")
                return Decimal(found[0]["product_l"]) if found else Decimal(-1)

            await until(lambda: product2() >= 0, 15, "probe reading")
            assert abs(product2() - 12000) < 50
            sim.set_silent(1)
            await until(lambda: bool(open_alarms(st, "tank_probe_offline")), 15, "offline")
            sim.set_silent(1, False)
            await until(lambda: not open_alarms(st, "tank_probe_offline"), 60, "probe back")
    finally:
        sim.stop()


# --------------------------------------------------------------------------- fills in progress


def fill_litres(nozzle: int, litres: Decimal) -> list[Step]:
    """Lift, squeeze as soon as the pump is released, fill `litres`, hang up."""
    return [
        Lift(nozzle),
        WaitAuthorized(),
        Squeeze(),
        FillUntil(volume=litres),
        Release(),
        HangUp(),
    ]


def fill_config(tmp: Path, **tank: object) -> Path:
    """The TLS tank with `tank` settings changed; walk-in fills up to 2000.00 (about 268 L)."""
    path = config(tmp)
    text = path.read_text().replace(
        'auto_preset_amount = "100.00"', 'auto_preset_amount = "2000.00"'
    )
    for key, value in tank.items():
        if f"\n{key} = " in text:
            text = re.sub(rf"\n{key} = [^\n]*", f"\n{key} = {value}", text)
        else:  # into the tank's table: the last key of TANK_TOML is its sudden_loss_l
            text = text.replace("\nsudden_loss_l =", f"\n{key} = {value}\nsudden_loss_l =")
    path.write_text(text)
    return path


async def test_a_long_fill_lowers_the_level_without_a_sudden_loss(tmp_path: Path) -> None:
    """120 L leave the tank over 4 s while the gauge reads it every 0.5 s: the running
    volume accounts for the fall as it happens (sudden loss at 40 L would fire otherwise),
    and the sale, once recorded, adds only what the running figure had not counted (a
    second count would look like a 120 L rise: a delivery starting, at 60 L)."""
    path = fill_config(tmp_path, sudden_loss_l=40, delivery_min_l=60)
    with console(tmp_path, 15000) as (tank, _sim):
        async with running_station(path, flow_rate_lps=30.0) as st:
            await until(lambda: latest(st) is not None, what="first tank reading")
            start = product(st)
            service = st.daemon.tanks
            assert service is not None
            async with piped(st.pump(1), tank) as pipe:
                fill = asyncio.create_task(Customer(st.pump(1), fill_litres(1, Decimal(120))).run())
                # Readings while the fill runs: the level falls, no sale recorded yet.
                await until(lambda: product(st) < start - 60, what="level falling mid-fill")
                assert st.rows("SELECT * FROM sales") == []
                # The pump keeps its finished fill on show after the sale is recorded (its
                # reset is lost for a while): readings then must not count the fill again.
                st.pump(1).ignore_commands(DCC.RESET)
                await fill
                await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="sale")
                sold = Decimal(st.rows("SELECT volume FROM sales")[0]["volume"])
                await until(lambda: pipe.drawn == sold, what="the pipe drew the sale")
            assert sold >= 120
            try:
                await handled(st, 4)  # readings after the sale went through the tank service
                assert st.pump(1).status is DartStatus.FILLING_COMPLETED
                assert service.tanks[1].deliveries.in_progress is None
            finally:
                st.pump(1).ignore_commands()
            await until(lambda: st.pump(1).status is DartStatus.RESET, what="pump reset")
            await handled(st, 2)
            assert abs(product(st) - (start - sold)) < 1
            assert st.rows("SELECT * FROM alarms WHERE kind = 'tank_sudden_loss'") == []
            assert service.tanks[1].deliveries.in_progress is None
            assert st.rows("SELECT * FROM deliveries") == []


async def test_a_delivery_during_a_fill_adds_back_what_was_sold_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tanker drops 3000 L over 4 s; a 60 L fill starts during the drop and ends after it.
    Only what flowed during the drop is added back, so the delivery is the 3000 L that went
    in (with the sale counted at its end it would be 0 L added back, about 35 L short)."""
    monkeypatch.setattr(tank_service, "DELIVERIES_INTERVAL_S", 0.5)
    with console(tmp_path, 15000) as (tank, _sim):
        async with running_station(fill_config(tmp_path), flow_rate_lps=10.0) as st:
            await until(lambda: latest(st) is not None, what="first tank reading")
            async with piped(st.pump(2), tank):
                tank.deliver(3000, duration_s=4)
                await asyncio.sleep(0.3)
                await Customer(st.pump(2), fill_litres(1, Decimal(60))).run()
                await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="sale")
            sold = Decimal(st.rows("SELECT volume FROM sales")[0]["volume"])
            await until(lambda: bool(st.rows("SELECT * FROM deliveries")), 30, "delivery")
            (delivery,) = st.rows("SELECT * FROM deliveries")
            assert delivery["source"] == "gauge"
            during = Decimal(delivery["dispensed_during"])
            # Part of the fill: the drop ended while the pump still ran (the gauge is read
            # every 0.5 s, so the added-back figure is right to 0.5 s of flow, 5 L).
            assert 10 < during < sold - 10, (during, sold)
            assert abs(Decimal(delivery["delivered"]) - 3000) <= 8, delivery
            rise = Decimal(delivery["end_volume"]) - Decimal(delivery["start_volume"])
            assert Decimal(delivery["delivered"]) == rise + during


# --------------------------------------------------------------------------- the gauge's alarms


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (2, "leak", "tank_gauge_leak"),
        (6, "sudden loss", "tank_gauge_sudden_loss"),
        (25, "reconciliation warning", "tank_gauge_reconciliation_warning"),
        (31, "tank alarm 31", "tank_gauge_alarm_31"),  # a code the protocols file does not name
        (5, "Precision leak detected", "tank_gauge_precision_leak_detected"),  # Franklin bit
        (12, "High-high product", "tank_gauge_high_high_product"),
        (3, "高液位", "tank_gauge_alarm_03"),  # a name that has no code letters
    ],
)
def test_a_gauge_alarm_kind_is_its_name_in_snake_case(code: int, text: str, kind: str) -> None:
    alarm = GaugeAlarm(gauge="tls", tank=1, code=code, text=text)
    assert tank_service.gauge_alarm_kind(alarm) == kind
    contract.alarm_data(1, kind, "warning", "m", raised_at="2026-01-01T00:00:00.000Z")


def gauge_alarms(st: RunningStation, *, open_only: bool = True) -> dict[str, dict[str, Any]]:
    sql = "SELECT * FROM alarms WHERE kind LIKE 'tank_gauge_%'"
    if open_only:
        sql += " AND cleared_at IS NULL"
    return {row["kind"]: row for row in st.rows(sql)}


async def test_the_gauges_own_alarms_are_raised_and_cleared_as_station_alarms(
    tmp_path: Path,
) -> None:
    with console(tmp_path, 15000) as (_tank, sim):
        sim.console.set_console_alarms(1, [2, 26])
        async with running_station(config(tmp_path)) as st:
            await until(lambda: len(gauge_alarms(st)) == 2, what="leak and reconciliation alarm")
            alarms = gauge_alarms(st)
            leak = alarms["tank_gauge_leak"]
            assert leak["severity"] == "critical" and "reports leak (code 2)" in leak["message"]
            assert json.loads(leak["detail"]) == {"gauge": "tls", "code": 2, "tank": 1}
            assert alarms["tank_gauge_reconciliation_alarm"]["severity"] == "warning"
            sim.console.set_console_alarms(1, [26])
            await until(lambda: "tank_gauge_leak" not in gauge_alarms(st), what="leak cleared")
            await handled(st, 4)
        # A restart: the console still reports the reconciliation alarm, which stays the one
        # open alarm (the driver reports every tank's alarms afresh when it starts).
        async with running_station(config(tmp_path)) as st:
            await until(lambda: latest(st) is not None, what="reading")
            await handled(st, 6)
            assert list(gauge_alarms(st)) == ["tank_gauge_reconciliation_alarm"]
            sim.console.set_console_alarms(1, [])
            await until(lambda: not gauge_alarms(st), what="all cleared")
            everything = gauge_alarms(st, open_only=False)
            assert sorted(everything) == ["tank_gauge_leak", "tank_gauge_reconciliation_alarm"]
            assert all(row["cleared_at"] is not None for row in everything.values())
            events = [
                json.loads(row["payload"])
                for row in st.rows("SELECT payload FROM outbox WHERE stream = 'alarm' ORDER BY seq")
            ]
            # Raised twice and cleared twice, each once.
            assert [(e["kind"], e["cleared_at"] is None) for e in events] == [
                ("tank_gauge_leak", True),
                ("tank_gauge_reconciliation_alarm", True),
                ("tank_gauge_leak", False),
                ("tank_gauge_reconciliation_alarm", False),
            ]
            assert open_alarms(st, "tank_low_product") == []


async def test_a_probe_refusing_its_reads_raises_one_probe_fault_until_it_reads_again(
    tmp_path: Path,
) -> None:
    from drivers.modbus_probe.registers import load_register_map
    from drivers.modbus_probe.sim import ModbusProbeSimulator, sim_probe

    map_path = Path(__file__).parent.parent / "config" / "modbus" / "generic_magnetostrictive.toml"
    spec = TankSpec(1, TankChart.from_points([(0, 0), (2500, 30000)]), "gasoline", 745.0)
    probe = sim_probe(1, load_register_map(map_path), SimTank(spec, product_l=12000))
    sim = ModbusProbeSimulator([probe])
    _host, port = sim.serve_tcp()
    try:
        path = write_config(tmp_path, extra=PROBE_TOML.format(port=port, map=map_path))
        async with running_station(path) as st:

            def faults(open_only: bool = True) -> list[dict[str, Any]]:
                sql = "SELECT * FROM alarms WHERE kind = 'tank_probe_fault'"
                return st.rows(sql + (" AND cleared_at IS NULL" if open_only else ""))

            await until(lambda: bool(st.rows("SELECT * FROM tank_latest")), 15, "reading")
            sim.set_exception(1, 4)  # device failure, on every read
            await until(lambda: bool(faults()), 15, "probe fault")
            (fault,) = faults()
            assert "device 1: Modbus exception 4 (device failure) (code 4)" in fault["message"]
            assert fault["severity"] == "warning"
            await asyncio.sleep(1.5)  # three more polls, all refused: still one alarm
            assert len(faults(open_only=False)) == 1
            assert not open_alarms(st, "tank_probe_offline")  # it answers: not offline
            sim.set_exception(1, None)
            await until(lambda: not faults(), 15, "fault cleared")

            # Registers too few for the map: the same fault, again once, cleared again.
            sim.set_short_replies(1, 4)
            await until(lambda: bool(faults()), 15, "short replies")
            assert "needs 16 registers, got 4" in faults()[0]["message"]
            sim.set_short_replies(1, None)
            await until(lambda: not faults(), 15, "fault cleared again")
            assert len(faults(open_only=False)) == 2
            events = st.rows(
                "SELECT payload FROM outbox WHERE stream = 'alarm' AND payload LIKE "
                "'%tank_probe_fault%'"
            )
            assert len(events) == 4
    finally:
        sim.stop()


# --------------------------------------------------------------------------- the midnight timer


@pytest.fixture
def shanghai(monkeypatch: pytest.MonkeyPatch) -> Iterator[ZoneInfo]:
    """The station's local time is UTC+8: its midnight is 16:00 UTC the day before."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    _time.tzset()
    yield ZoneInfo("Asia/Shanghai")
    monkeypatch.undo()
    _time.tzset()


TWO_TANKS = (
    TANK_TOML
    + """
[[tanks]]
number = 2
grade = "95"
capacity_l = 30000
height_mm = 2500
density_15 = "745.0"
gauge = "tls"
gauge_tank = 2
chart = [[0, 0], [2500, 30000]]
"""
)


def reconciliations(st: RunningStation) -> list[tuple[int, str]]:
    return [(r["tank"], r["day"]) for r in st.rows("SELECT * FROM reconciliations ORDER BY rowid")]


def reconciliation_events(st: RunningStation) -> list[tuple[int, str]]:
    sql = "SELECT payload FROM outbox WHERE stream = 'reconciliation' ORDER BY seq"
    return [(e["tank"], e["day"]) for e in (json.loads(r["payload"]) for r in st.rows(sql))]


async def test_midnight_reconciles_each_tank_once_a_day_across_restarts(
    tmp_path: Path, shanghai: ZoneInfo
) -> None:
    path = write_config(tmp_path, extra=TWO_TANKS.format(port=tmp_path / "tls", low=1000))
    # Readings of March 2030 (the gauge's own readings are of today, years apart).
    store = Store(load_config(path).store.path, messages=ContractMessages())
    try:
        for day in range(8, 12):
            for hour, net in ((1, 20000 - 100 * day), (13, 19950 - 100 * day)):
                at = datetime(2030, 3, day, hour, 0, tzinfo=shanghai)
                for tank in (1, 2):
                    store.record_tank_reading(
                        _reading(tank, at.astimezone(UTC), f"{net}.00", f"{net + 40}.00"),
                        history=True,
                    )
    finally:
        store.close()

    def local(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
        return datetime(2030, 3, day, hour, minute, second, tzinfo=shanghai)

    chart = TankChart.from_points([(0, 0), (2500, 30000)])
    farm = TankFarm(
        [
            SimTank(TankSpec(1, chart, "gasoline", 737.0), product_l=15000),
            SimTank(TankSpec(2, chart, "gasoline", 745.0), product_l=9000),
        ]
    )
    with TlsConsoleSimulator(TlsConsole(farm)) as sim:
        sim.serve_pty(tmp_path / "tls")
        clock = HandClock(local(10, 23, 59))
        async with running_station(path, wall_clock=clock) as st:
            # At start: the day before (no reconciliation kept yet), for each tank.
            await until(lambda: len(reconciliations(st)) == 2, what="March 9th")
            assert reconciliations(st) == [(1, "2030-03-09"), (2, "2030-03-09")]
            await until(lambda: clock.naps >= 1, what="the timer asleep")
            await clock.move_to(local(11, 0, 0, 1))  # local midnight + 1 s: 16:00:01 UTC
            assert reconciliations(st)[2:] == [(1, "2030-03-10"), (2, "2030-03-10")]
            await clock.move_to(local(11, 8))  # later that day: nothing more
            await clock.move_to(local(11, 23, 59, 59))
            assert len(reconciliations(st)) == 4
            (row,) = st.rows("SELECT * FROM reconciliations WHERE tank = 1 AND day = '2030-03-10'")
            # Opening: the last reading before 10 March 00:00 local; closing: the day's last.
            assert (row["opening"], row["closing"]) == ("19050.00", "18950.00")
        # A restart the same day: March 10th is kept already, nothing is repeated.
        clock = HandClock(local(11, 23, 59, 59))
        async with running_station(path, wall_clock=clock) as st:
            await until(lambda: clock.naps >= 1, what="the timer asleep")
            assert len(reconciliations(st)) == 4
            await clock.move_to(local(12, 0, 0, 2))
            assert reconciliations(st)[4:] == [(1, "2030-03-11"), (2, "2030-03-11")]
        # Down for two days: the days missed are caught up, oldest first (the 12th, from
        # the 11th's last reading; the 13th has no reading within reach and is left out).
        clock = HandClock(local(14, 9))
        async with running_station(path, wall_clock=clock) as st:
            await until(lambda: clock.naps >= 1, what="the timer asleep")
            assert reconciliations(st)[6:] == [(1, "2030-03-12"), (2, "2030-03-12")]
            done = reconciliations(st)
            assert len(done) == len(set(done)) == 8
            assert reconciliation_events(st) == done  # one event each, in order


async def test_a_new_station_does_not_reconcile_days_before_its_first_reading(
    tmp_path: Path, shanghai: ZoneInfo, capfd: pytest.CaptureFixture[str]
) -> None:
    """First start of a station (or of a tank): yesterday had no readings because there was
    no station yet; that is not a gauge failure to warn about, and nothing is reconciled."""
    path = write_config(tmp_path, extra=TWO_TANKS.format(port=tmp_path / "no-console", low=1000))
    clock = HandClock(datetime(2030, 3, 10, 12, tzinfo=shanghai))
    async with running_station(path, wall_clock=clock) as st:
        await until(lambda: clock.naps >= 1, what="the timer asleep")
        assert reconciliations(st) == []
    assert "reconciliation_no_readings" not in capfd.readouterr().out


# --------------------------------------------------------------------------- units


US_TANK_TOML = """
[[gauges]]
name = "tls"
protocol = "veeder_root"
port = "{port}"
units = "us"
poll_interval_s = 0.5
reply_timeout_ms = 300

[[tanks]]
number = 1
grade = "92"
capacity_l = 30000
height_mm = 2500
density_15 = "737.0"
gauge = "tls"
gauge_tank = 1
"""


async def test_a_console_in_us_units_is_kept_in_litres_mm_and_celsius(tmp_path: Path) -> None:
    """The manual's example console (gallons, inches, °F), its tank without a chart here:
    the station keeps and publishes the console's figures converted."""
    us_console = TlsConsoleSimulator(TlsConsole(FakeTanks([FakeTank(1, MANUAL_US)])))
    us_console.serve_pty(tmp_path / "tls")
    try:
        path = write_config(tmp_path, extra=US_TANK_TOML.format(port=tmp_path / "tls"))
        async with running_station(path) as st:
            await until(lambda: latest(st) is not None, what="first tank reading")
            row = latest(st)
            assert row is not None
            # 5329 US gal = 20172.46 L; 48.97 in = 1243.838 mm; 37.39 °F = 2.9944 °C.
            assert (row["product_l"], row["height_mm"], row["temperature_c"]) == (
                "20172.46",
                "1243.8380",
                "2.9944",
            )
            (event,) = st.rows("SELECT payload FROM outbox WHERE stream = 'inventory'")
            data = json.loads(event["payload"])
            assert (data["product_l"], data["height_mm"]) == ("20172.46", "1243.8380")
            assert st.rows("SELECT * FROM alarms") == []  # plausible: within the tank's 2500 mm
    finally:
        us_console.stop()
