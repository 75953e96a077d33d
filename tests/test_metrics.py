"""Prometheus metrics (issue 11.4): the textfile for node_exporter's textfile collector and
`edgectl metrics`, with the real daemon over simulated pumps, a simulated TLS console and, for
the order latency, a real Mosquitto and signed cloud commands."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import re
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from drivers.tank_sim import SimTank, TankChart, TankFarm, TankSpec
from drivers.veeder_root.sim import TlsConsole, TlsConsoleSimulator
from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import Customer, normal_fill, preset_fill
from edgectl.cloud.messages import ContractMessages
from edgectl.config import MetricsConfig, load_config, parse_config
from edgectl.daemon import Daemon
from edgectl.errors import ConfigError
from edgectl.forecourt.sale import Sale
from edgectl.metrics import textfile_temp, write_textfile
from edgectl.store.store import Store
from tests import tankkit
from tests.cloudkit import TestCloud, cloud_section
from tests.control.clikit import acall, acli, cli, daemon_process, short_dir
from tests.mqttkit import MosquittoBroker
from tests.stationkit import RunningStation, rows, running_station, until, write_config

WATER_L = 150.0
PRODUCT_L = 20_000.0


# ---------------------------------------------------------------------------- helpers
def families(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(found: dict[str, Metric], sample: str, **labels: str) -> float:
    """The one sample named `sample` whose labels include `labels`."""
    family = found[re.sub(r"_(total|count|sum|bucket)$", "", sample)]
    matches = [
        s.value
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (sample, labels, family.samples)
    return float(matches[0])


def read_textfile(path: Path) -> dict[str, Metric]:
    return families(path.read_text()) if path.exists() else {}


def sold(found: dict[str, Metric], grade: str) -> float:
    if "edgectl_sales" not in found:
        return 0.0
    return value(found, "edgectl_sales_total", grade=grade)


def metrics_section(textfile: Path, interval_s: float = 1) -> str:
    return f'\n[metrics]\ntextfile = "{textfile}"\ninterval_s = {interval_s}\n'


@contextlib.contextmanager
def tls_console(tmp: Path) -> Iterator[SimTank]:
    """tankkit's console, its tank with water under the product."""
    spec = TankSpec(1, TankChart.from_points([(0, 0), (2500, 30000)]), "gasoline", 737.0)
    tank = SimTank(spec, product_l=PRODUCT_L, water_l=WATER_L)
    sim = TlsConsoleSimulator(TlsConsole(TankFarm([tank])))
    sim.serve_pty(tmp / "tls")
    try:
        yield tank
    finally:
        sim.stop()


@pytest.fixture
def tmp() -> Iterator[Path]:
    with short_dir() as path:  # the control socket's path must be short
        yield path


def station_config(tmp: Path, *, mode: str = "auto", extra: str = "") -> Path:
    gauge = tankkit.TANK_TOML.format(port=tmp / "tls", low=1000)
    control = f'\n[control]\nsocket = "{tmp / "ctl.sock"}"\n'
    return write_config(
        tmp, mode=mode, extra=gauge + control + metrics_section(tmp / "edgectl.prom") + extra
    )


# ---------------------------------------------------------------------------- end to end
@dataclass
class Rig:
    station: RunningStation
    cloud: TestCloud
    textfile: Path


@pytest.fixture
async def rig(tmp: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Rig]:
    key = Ed25519PrivateKey.generate()
    config = station_config(tmp, mode="cloud", extra=cloud_section(mosquitto.port, key))
    with tls_console(tmp):
        async with (
            TestCloud(mosquitto.port, "TEST-01", key) as cloud,
            running_station(config, flow_rate_lps=20.0) as st,
        ):
            await cloud.wait(lambda: cloud.on("state/online"), what="station online")
            yield Rig(st, cloud, tmp / "edgectl.prom")


async def test_a_cloud_sale_shows_in_the_textfile(rig: Rig) -> None:
    st, cloud = rig.station, rig.cloud
    order = {
        "order_id": "o-1",
        "pump": 1,
        "preset": {"type": "amount", "value": "20.00"},
        "currency": "CNY",
    }
    result = await cloud.result(await cloud.send("authorize", order))
    assert result["status"] == "accepted", result
    await until(lambda: st.pump(1).status is DartStatus.AUTHORIZED, what="pump authorized")
    await Customer(st.pump(1), preset_fill(2)).run()
    await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="the sale recorded")
    (sale,) = st.rows("SELECT * FROM sales")

    await until(lambda: sold(read_textfile(rig.textfile), "95") == 1, what="the sale in the file")
    found = read_textfile(rig.textfile)
    assert value(found, "edgectl_sales_litres_total", grade="95") == float(sale["volume"])
    assert value(found, "edgectl_sales_total", grade="92") == 0
    assert value(found, "edgectl_order_latency_seconds_count") == 1
    assert 0 < value(found, "edgectl_order_latency_seconds_sum") < 10
    assert value(found, "edgectl_authorizations_total", source="cloud", outcome="completed") == 1
    assert value(found, "edgectl_authorizations_total", source="cloud", outcome="refused") == 0
    for device, kind in (("line:l0", "line"), ("pump:1", "pump"), ("gauge:tls", "gauge")):
        assert value(found, "edgectl_device_online", device=device, kind=kind) == 1
    assert value(found, "edgectl_line_frames_total", line="l0", direction="received") > 0
    assert value(found, "edgectl_line_frames_total", line="tls", kind="gauge", direction="sent") > 0
    assert value(found, "edgectl_device_frames_total", device="pump:1", direction="sent") > 0
    assert value(found, "edgectl_device_timeouts_total", device="pump:1") >= 0
    assert value(found, "edgectl_line_poll_period_seconds", line="l0") > 0
    assert value(found, "edgectl_store_commit_seconds_count") > 0
    assert value(found, "edgectl_mqtt_connected") == 1
    assert value(found, "edgectl_mqtt_reconnects_total") == 0
    assert value(found, "edgectl_mqtt_published_total") > 0
    assert value(found, "edgectl_outbox_messages") >= 0
    assert value(found, "edgectl_store_writable") == 1
    assert value(found, "edgectl_tank_product_litres", tank="1", grade="92") == pytest.approx(
        PRODUCT_L, abs=1
    )
    assert value(found, "edgectl_tank_water_litres", tank="1") == pytest.approx(WATER_L, abs=1)
    assert value(found, "edgectl_tank_water_height_metres", tank="1") > 0
    assert value(found, "edgectl_tank_online", tank="1") == 1
    assert "edgectl_backup_age_seconds" not in found  # no backup yet: no figure, not a zero

    mode = stat.S_IMODE(rig.textfile.stat().st_mode)
    assert mode == 0o644, oct(mode)  # node_exporter reads it as another user


async def test_the_textfile_and_edgectl_metrics_agree(tmp: Path) -> None:
    """The same families in the file, in `edgectl metrics` and in its --json; the outbox
    depth is the store's, and the file is always whole while it is rewritten."""
    textfile = tmp / "edgectl.prom"
    config = station_config(tmp)
    with tls_console(tmp):
        async with running_station(config) as st:
            await Customer(st.pump(2), normal_fill(1, Decimal("10.00"))).run()
            await until(lambda: sold(read_textfile(textfile), "92") == 1, what="sale in the file")

            shown = await acli("metrics", "--config", str(config))
            assert shown.code == 0, shown
            as_json = await acli("metrics", "--json", "--config", str(config))
            assert as_json.code == 0, as_json
            # A request the station refuses before the pump is touched is counted as such.
            refused = await acli("authorize", "1", "--amount", "99999", "--config", str(config))
            assert refused.code == 1 and "outside" in refused.err, refused
            reply = await acall(config.parent / "ctl.sock", "metrics")
            outcome = {"source": "attendant", "outcome": "refused"}
            assert value(families(reply["text"]), "edgectl_authorizations_total", **outcome) == 1

            in_file = set(read_textfile(textfile))
            assert set(families(shown.out)) == in_file
            assert {f["name"] for f in json.loads(as_json.out)} == in_file

            # The outbox keeps its rows without a cloud link: the gauge is the store's count.
            await st.quiet()
            before = len(st.rows("SELECT seq FROM outbox"))
            reply = await acall(config.parent / "ctl.sock", "metrics")
            after = len(st.rows("SELECT seq FROM outbox"))
            depth = value(families(reply["text"]), "edgectl_outbox_messages")
            assert before <= depth <= after and depth > 0

            # Rewritten every second: each read is a whole exposition (ending in a newline,
            # every family parsed), and no other name appears that node_exporter would take.
            inodes = {textfile.stat().st_ino}
            while len(inodes) < 4:
                text = textfile.read_text()
                assert text.endswith("\n") and set(families(text)) == in_file
                prom = fnmatch.filter(os.listdir(tmp), "*.prom")
                assert prom == ["edgectl.prom"], prom
                inodes.add(textfile.stat().st_ino)
                await asyncio.sleep(0.05)


def test_a_missing_directory_is_logged_once_and_the_daemon_runs_on() -> None:
    with short_dir() as tmp:
        textfile = tmp / "textfile_collector" / "edgectl.prom"
        config = write_config(
            tmp,
            mode="auto",
            extra=f'\n[control]\nsocket = "{tmp / "ctl.sock"}"\n' + metrics_section(textfile),
        )
        with daemon_process(config) as daemon:

            def failures() -> float:
                text = daemon.call("metrics")["text"]
                return value(families(text), "edgectl_metrics_textfile_failures_total")

            daemon.wait_for(lambda: failures() >= 3, "three failed writes")
            logged = _events(daemon.log, "metrics_textfile_not_written")
            assert len(logged) == 1, logged
            assert logged[0]["error"] == f"the directory {textfile.parent} does not exist"
            assert logged[0]["path"] == str(textfile)
            assert not textfile.parent.exists()
            assert cli("status", "--config", str(config)).code == 0  # the station runs on

            textfile.parent.mkdir()
            daemon.wait_for(textfile.exists, "the textfile once its directory exists")
            daemon.wait_for(
                lambda: _events(daemon.log, "metrics_textfile_written_again"), "the recovery"
            )
            assert len(_events(daemon.log, "metrics_textfile_not_written")) == 1
            assert "edgectl_device_online" in read_textfile(textfile)


def _events(log: Path, event: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event:
            found.append(entry)
    return found


# ---------------------------------------------------------------------------- the file
def test_the_textfile_is_replaced_whole_by_a_rename(tmp: Path) -> None:
    path = tmp / "edgectl.prom"
    temp = textfile_temp(path)
    assert temp.parent == path.parent  # the same file system: the rename is atomic
    assert not fnmatch.fnmatch(temp.name, "*.prom")  # never read half-written
    path.write_text("old\n")
    old_inode = path.stat().st_ino
    mask = os.umask(0o077)  # what a strict umask would give: the file must stay readable
    try:
        write_textfile(path, b"# new\nedgectl_x 1\n")
    finally:
        os.umask(mask)
    assert path.read_bytes() == b"# new\nedgectl_x 1\n"
    assert path.stat().st_ino != old_inode  # a new file renamed over, not rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp.iterdir()) == ["edgectl.prom"]  # no temp left


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp: Path) -> None:
    path = tmp / "edgectl.prom"
    path.write_text("old\n")
    textfile_temp(path).mkdir()  # the temp cannot be opened: the write fails
    with pytest.raises(IsADirectoryError):
        write_textfile(path, b"new\n")
    assert path.read_text() == "old\n"


# ---------------------------------------------------------------------------- names
def _exposition(config: Path) -> str:
    """The exposition of a daemon built from `config` but not started: every family that
    needs no device answer is there."""
    daemon = Daemon(load_config(config))
    try:
        return asyncio.run(daemon.metrics.exposition()).decode()
    finally:
        daemon.station.close()
        daemon.store.close()
        daemon.instance.release()


ALLOWED_UNITS = {"seconds", "litres", "metres", "celsius"}
OTHER_UNITS = {
    "ms",
    "msec",
    "millis",
    "milliseconds",
    "minutes",
    "hours",
    "days",
    "l",
    "liters",
    "liter",
    "litre",
    "mm",
    "cm",
    "meters",
    "percent",
    "pct",
    "kb",
    "mb",
}


def test_names_follow_the_prometheus_conventions(tmp: Path) -> None:
    key = Ed25519PrivateKey.generate()
    config = station_config(tmp, extra=cloud_section(1, key))  # every family: cloud, tanks
    found = families(_exposition(config))
    assert {"edgectl_sales", "edgectl_mqtt_connected", "edgectl_tank_water_litres"} <= set(found)
    for family in found.values():
        assert family.name.startswith("edgectl_"), family.name
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", family.name), family.name
        words = family.name.split("_")
        assert not set(words) & OTHER_UNITS, f"{family.name}: base units only"
        if family.type == "counter":
            assert all(s.name == f"{family.name}_total" for s in family.samples), family.name
        else:
            assert not family.name.endswith("_total"), family.name
        if family.type == "histogram" or "age" in words or "period" in words:
            assert words[-1] == "seconds", family.name
        if words[1] == "tank" and words[2] != "online":
            assert words[-1] in ALLOWED_UNITS, f"{family.name}: a figure names its unit"
        assert family.documentation, family.name
        for sample in family.samples:
            for label in sample.labels:
                assert re.fullmatch(r"[a-z_][a-z0-9_]*", label), (family.name, label)


def test_sales_totals_survive_a_restart_and_retention(tmp: Path) -> None:
    """Counted from the store since it began: the same after a restart, and after the sales
    themselves were deleted by retention."""
    config_path = write_config(tmp, mode="auto", extra=f'\n[control]\nsocket = "{tmp}/c.sock"\n')
    config = load_config(config_path)
    store = Store(config.store.path, station_id="TEST-01", messages=ContractMessages())
    try:
        for n, (grade, volume) in enumerate([("92", "10.50"), ("95", "3.25"), ("92", "1.25")]):
            store.record_sale(_sale(n, grade, Decimal(volume)))
    finally:
        store.close()

    def sales_figures() -> dict[str, tuple[float, float]]:
        found = families(_exposition(config_path))
        return {
            grade: (
                value(found, "edgectl_sales_total", grade=grade),
                value(found, "edgectl_sales_litres_total", grade=grade),
            )
            for grade in ("92", "95", "diesel")
        }

    before = sales_figures()
    assert before == {"92": (2, 11.75), "95": (1, 3.25), "diesel": (0, 0)}

    store = Store(config.store.path, station_id="TEST-01", messages=ContractMessages())
    try:
        store.outbox_delete([r["seq"] for r in store.query("SELECT seq FROM outbox")])
        removed = store.purge_old_records("2999-01-01T00:00:00.000Z")
        assert removed["sales"] == 3
    finally:
        store.close()
    assert rows(config.store.path, "SELECT * FROM sales") == []
    assert sales_figures() == before


def _sale(n: int, grade: str, volume: Decimal) -> Sale:
    return Sale(
        pump=1,
        nozzle=1 if grade == "92" else 2,
        grade=grade,
        volume=volume,
        amount=(volume * Decimal("7.45")).quantize(Decimal("0.01")),
        unit_price=Decimal("7.45"),
        currency="CNY",
        ended_at=f"2026-01-0{n + 1}T10:00:00.000Z",
        total_volume_after=Decimal(1000 + 100 * n),
        total_amount_after=Decimal(7450 + 745 * n),
    )


# ---------------------------------------------------------------------------- config
def _config(tmp: Path, section: str) -> Any:
    path = write_config(tmp)
    return parse_config(_toml(path.read_text() + section), source=path)


def _toml(text: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(text)


def test_metrics_config_defaults_and_relative_paths(tmp: Path) -> None:
    assert _config(tmp, "").metrics == MetricsConfig(textfile=None, interval_s=15.0)
    config = _config(tmp, '[metrics]\ntextfile = "prom/edgectl.prom"\ninterval_s = 60\n')
    assert config.metrics == MetricsConfig(textfile=tmp / "prom" / "edgectl.prom", interval_s=60)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            '[metrics]\ntextfile = "/var/lib/node/edgectl.txt"\n',
            "metrics.textfile: /var/lib/node/edgectl.txt does not end in .prom",
        ),
        ('[metrics]\ntextfile = ""\n', "metrics.textfile: must not be empty"),
        ("[metrics]\ntextfile = 3\n", "metrics.textfile: expected a string, got 3"),
        ("[metrics]\ninterval_s = 0\n", "metrics.interval_s: 0 is out of range (1.0..3600.0)"),
        ('[metrics]\ninterval_s = "15"\n', 'metrics.interval_s: expected a number, got "15"'),
        ('[metrics]\ntext_file = "x.prom"\n', 'metrics: unknown key "text_file"'),
    ],
)
def test_metrics_config_errors_are_config_errors(tmp: Path, section: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(tmp, section)
    assert message in str(err.value)
