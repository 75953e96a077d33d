"""Tank gauges in the running station: the daemon in-process, a TLS console simulator on a pty
driven by the shared tank physics, DART pumps on another pty."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from drivers.tank_sim import SimTank, TankChart, TankFarm, TankSpec
from drivers.veeder_root.sim import TlsConsole, TlsConsoleSimulator
from drivers.wayne_dart.sim import Customer, normal_fill
from edgectl import tank_service
from edgectl.cloud import contract
from edgectl.config import load_config
from edgectl.station import Station
from edgectl.store.store import PRIORITY_TELEMETRY, Store
from edgectl.tank_service import TankService
from tests.stationkit import RunningStation, rows, running_station, until, write_config

T = TypeVar("T")
DEMO_4S = ("--duration", "4")

TANK_TOML = """
[[gauges]]
name = "tls"
protocol = "veeder_root"
port = "{port}"
poll_interval_s = 0.5
reply_timeout_ms = 300
offline_after = 1

[[tanks]]
number = 1
name = "92"
grade = "92"
capacity_l = 30000
height_mm = 2500
density_15 = "737.0"
gauge = "tls"
gauge_tank = 1
chart = [[0, 0], [2500, 30000]]
low_product_l = {low}
sudden_loss_l = 20000
"""


@contextlib.contextmanager
def console(tmp: Path, product_l: float) -> Iterator[tuple[SimTank, TlsConsoleSimulator]]:
    spec = TankSpec(1, TankChart.from_points([(0, 0), (2500, 30000)]), "gasoline", 737.0)
    tank = SimTank(spec, product_l=product_l)
    sim = TlsConsoleSimulator(TlsConsole(TankFarm([tank])))
    sim.serve_pty(tmp / "tls")
    try:
        yield tank, sim
    finally:
        sim.stop()


def config(tmp: Path, low: int = 1000) -> Path:
    return write_config(tmp, extra=TANK_TOML.format(port=tmp / "tls", low=low))


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
            contract.envelope("inventory", "TEST-01", 1, data["measured_at"], data)
            # The simulated pumps draw from the simulated tank as the station records a sale.
            service = st.daemon.tanks
            assert service is not None
            recorded = st.daemon.station.on_sold

            def sold(grade: str, litres: Decimal) -> None:
                tank.draw(litres)
                recorded(grade, litres)

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
    store = Store(loaded.store.path)
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
    # Filled to 60 % of capacity by the demo.
    assert abs(Decimal(tanks[0]["product_l"]) - Decimal(18000)) < 200
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
