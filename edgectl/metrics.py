"""Prometheus metrics of the running daemon, without a TCP port: a textfile for node_exporter's
textfile collector, and the same exposition over the control socket (`edgectl metrics`).

Each daemon has its own `CollectorRegistry` (never the library's global one: tests run several
daemons in one process). Most figures are read at scrape time from what the parts of the
daemon keep anyway: the drivers' counters, the device monitor's online states, the tank
service's readings, the cloud session's state, the station's authorization outcomes. The
store is read once per scrape on its own thread (the outbox, and only the sales recorded since
the last scrape: the sales and litres per grade are totals since the store began, so a restart
does not reset them). Two figures are distributions and so real Histograms: an order's latency
(the cloud's command received to the pump's confirmation) and the store's commit time.

Names follow the Prometheus conventions: `edgectl_` first, counters end in `_total`, base
units in the name (`_seconds`, `_litres`, `_metres`, `_celsius`). docs/operations.md lists
them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

import edgectl
from drivers.base import BusCounters, LineCounters
from edgectl.errors import StoreError
from edgectl.logs import get_logger

if TYPE_CHECKING:
    from edgectl.daemon import Daemon

# A textfile carries no timestamps and node_exporter's collector reads it as it is: the
# `_created` series the library adds to each counter and histogram would be one more gauge per
# family that nobody asked for (the library reads this at every scrape; process-wide).
disable_created_metrics()  # type: ignore[no-untyped-call]

# From the few ms of a station that is idle (docs/performance.md, section 3) to a pump that
# needed its retries, or an order that waited for a pump at start-up (at most 5 s).
ORDER_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# From a commit in the page cache's time to an SD card that stalls.
COMMIT_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
TEXTFILE_MODE: Final = 0o644  # node_exporter runs as another user
OUTCOMES: Final = ("refused", "completed", "no_sale", "expired", "cancelled", "failed")

# The error kinds of each kind of line counters, as the metrics name them.
_LINE_ERRORS: Final = ("bad_crc", "malformed", "naks", "unexpected")
_BUS_ERRORS: Final = ("exceptions", "malformed")
_PUMP_ERRORS: Final = ("bad_crc", "naks")


def textfile_temp(path: Path) -> Path:
    """Where the textfile is written before it is renamed into place: the same directory (a
    rename within one file system is atomic), a name node_exporter's `*.prom` never matches."""
    return path.with_name(f".{path.name}.tmp")


def write_textfile(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically: a reader sees the old file or the new one,
    whole, never a part; mode 0644 whatever the umask; durable before the rename."""
    temp = textfile_temp(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, TEXTFILE_MODE)
    try:
        try:
            os.fchmod(fd, TEXTFILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


@dataclass
class _StoreFigures:
    """What the last scrape read from the store (kept when a read fails)."""

    outbox_depth: int | None = None
    outbox_oldest_at: str | None = None
    # grade -> [sales, litres] since the store began; None until the first read.
    sales: dict[str, list[float]] | None = None
    last_sale: int = 0  # the highest sale id counted


class StationMetrics:
    """The daemon's metrics: its registry, the two histograms, the scrape and the textfile.

    Run `run()` as one of the daemon's tasks (it writes the textfile when `[metrics] textfile`
    is set, and returns at once otherwise); `exposition()` is the text either way."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.config = daemon.config.metrics
        self.log = get_logger(station=daemon.config.station.id, part="metrics")
        self.registry = CollectorRegistry(auto_describe=False)
        self.order_latency = Histogram(
            "edgectl_order_latency_seconds",
            "Time from a cloud order's authorize command received to the pump's confirmation "
            "of its authorization.",
            buckets=ORDER_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.store_commit = Histogram(
            "edgectl_store_commit_seconds",
            "Time of one write transaction of the store, BEGIN to durable COMMIT (fsync).",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.textfile_failures = 0
        self._store = _StoreFigures()
        self._refreshing = asyncio.Lock()
        self._store_failing = False
        self._textfile_failing: str | None = None
        self.registry.register(_DaemonCollector(self))

    # ------------------------------------------------------------------ scraping
    async def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric, now."""
        await self.refresh()
        return generate_latest(self.registry)

    def families(self) -> list[dict[str, Any]]:
        """The metric families as JSON-able objects (`edgectl metrics --json`), as of the
        last `refresh()`."""
        return [
            {
                "name": metric.name,
                "type": metric.type,
                "help": metric.documentation,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": s.value}
                    for s in metric.samples
                ],
            }
            for metric in self.registry.collect()
        ]

    async def refresh(self) -> None:
        """Read the store's figures: one visit to the store thread. One refresh at a time,
        so that the sales counted since the last one are counted once."""
        async with self._refreshing:
            figures = self._store
            station = self.daemon.station
            try:
                read = await station.db_quiet(
                    read_store_figures,
                    station.store.reader,
                    figures.last_sale,
                    figures.sales is None,
                )
            except (StoreError, sqlite3.Error) as exc:
                if not self._store_failing:
                    self._store_failing = True
                    self.log.warning("metrics_store_unreadable", error=str(exc))
                return
            if self._store_failing:
                self._store_failing = False
                self.log.info("metrics_store_readable_again")
            sales = figures.sales if figures.sales is not None else {}
            for grade, (count, litres) in read["purged"].items():
                total = sales.setdefault(grade, [0.0, 0.0])
                total[0] += count
                total[1] += litres
            last = figures.last_sale
            for grade, count, litres, highest in read["sales"]:
                total = sales.setdefault(grade, [0.0, 0.0])
                total[0] += count
                total[1] += litres
                last = max(last, highest)
            self._store = _StoreFigures(
                outbox_depth=read["outbox_depth"],
                outbox_oldest_at=read["outbox_oldest_at"],
                sales=sales,
                last_sale=last,
            )

    # ------------------------------------------------------------------ the textfile
    async def run(self) -> None:
        """Write the textfile every `interval_s` until cancelled; never raises for a write
        that fails (logged once per failure episode: the station sells on)."""
        path = self.config.textfile
        if path is None:
            return
        self.log.info("metrics_textfile", path=str(path), interval_s=self.config.interval_s)
        while True:
            await self.write_now()
            await asyncio.sleep(self.config.interval_s)

    async def write_now(self) -> bool:
        """Write the textfile once; True if written."""
        path = self.config.textfile
        assert path is not None
        try:
            data = await self.exposition()
            await asyncio.to_thread(write_textfile, path, data)
        except OSError as exc:
            self._textfile_failed(path, _why(exc, path))
            return False
        except Exception as exc:  # a bug in a collector: the daemon runs on without metrics
            if self._textfile_failing is None:
                self.log.exception("metrics_textfile_failed", path=str(path))
            self._textfile_failed(path, f"internal error ({type(exc).__name__})", logged=True)
            return False
        if self._textfile_failing is not None:
            self._textfile_failing = None
            self.log.info("metrics_textfile_written_again", path=str(path))
        return True

    def _textfile_failed(self, path: Path, why: str, *, logged: bool = False) -> None:
        self.textfile_failures += 1
        if self._textfile_failing is None and not logged:
            self.log.error(
                "metrics_textfile_not_written",
                path=str(path),
                error=why,
                hint="the station runs on; monitoring sees no new figures until this is fixed",
            )
        self._textfile_failing = why

    @property
    def store_figures(self) -> _StoreFigures:
        return self._store


def read_store_figures(reader: Any, after_sale: int, first: bool) -> dict[str, Any]:
    """On the store thread: the outbox, the sales after `after_sale`, and on the first read
    what retention deleted."""
    figures: dict[str, Any] = reader.metrics_figures(after_sale)
    figures["purged"] = reader.purged_sales() if first else {}
    return figures


def _why(exc: OSError, path: Path) -> str:
    if isinstance(exc, FileNotFoundError) and not path.parent.is_dir():
        return f"the directory {path.parent} does not exist"
    if isinstance(exc, PermissionError):
        return f"permission denied writing in {path.parent}"
    return exc.strerror or str(exc)


# ---------------------------------------------------------------------------- the collector
class _DaemonCollector:
    """The figures the daemon keeps, read at each scrape (on the event loop)."""

    def __init__(self, metrics: StationMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        daemon = self.metrics.daemon
        yield from self._daemon(daemon)
        yield from self._lines(daemon)
        yield from self._devices(daemon)
        yield from self._sales(daemon)
        yield from self._authorizations(daemon)
        yield from self._outbox()
        yield from self._cloud(daemon)
        yield from self._store(daemon)
        yield from self._backup(daemon)
        yield from self._tanks(daemon)

    def _daemon(self, daemon: Daemon) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "edgectl_info",
            "The daemon's version and station (always 1).",
            labels=["version", "station"],
        )
        info.add_metric([edgectl.__version__, daemon.config.station.id], 1)
        yield info
        yield GaugeMetricFamily(
            "edgectl_start_time_seconds",
            "When the daemon started, in seconds since the Unix epoch.",
            value=time.time() - daemon.uptime_s,
        )
        failures = CounterMetricFamily(
            "edgectl_metrics_textfile_failures_total",
            "Writes of the metrics textfile that failed (its directory missing, not writable…).",
        )
        failures.add_metric([], self.metrics.textfile_failures)
        yield failures

    # -------------------------------------------------------------- lines
    def _lines(self, daemon: Daemon) -> Iterable[Metric]:
        labels = ["line", "kind"]
        frames = CounterMetricFamily(
            "edgectl_line_frames_total",
            "Frames on a line (Modbus: requests sent, replies received), by direction.",
            labels=[*labels, "direction"],
        )
        errors = CounterMetricFamily(
            "edgectl_line_errors_total",
            "Bad frames on a line, by kind (bad_crc, malformed, naks, unexpected; Modbus "
            "exceptions, malformed).",
            labels=[*labels, "error"],
        )
        timeouts = CounterMetricFamily(
            "edgectl_line_timeouts_total",
            "Requests on a line that got no reply in time.",
            labels=labels,
        )
        reopens = CounterMetricFamily(
            "edgectl_line_reopens_total",
            "Times a line's port (or TCP connection) was opened again after a failure.",
            labels=labels,
        )
        period = GaugeMetricFamily(
            "edgectl_line_poll_period_seconds",
            "Time between two polls of one pump, smoothed, for the slowest pump online on the "
            "line (absent while no pump is online).",
            labels=["line"],
        )
        lines: list[tuple[str, str, object]] = [
            (name, "dispensers", line) for name, line in daemon.lines.items()
        ]
        if daemon.tanks is not None:
            lines += [(name, "gauge", gauge) for name, gauge in daemon.tanks.gauges.items()]
        for name, kind, driver in lines:
            counters = getattr(driver, "counters", None)
            key = [name, kind]
            if isinstance(counters, LineCounters):
                frames.add_metric([*key, "sent"], counters.frames_sent)
                frames.add_metric([*key, "received"], counters.frames_received)
                for error in _LINE_ERRORS:
                    errors.add_metric([*key, error], getattr(counters, error))
                timeouts.add_metric(key, counters.timeouts)
                reopens.add_metric(key, counters.reopens)
            elif isinstance(counters, BusCounters):
                frames.add_metric([*key, "sent"], counters.requests)
                frames.add_metric([*key, "received"], counters.replies)
                for error in _BUS_ERRORS:
                    errors.add_metric([*key, error], getattr(counters, error))
                timeouts.add_metric(key, counters.timeouts)
                reopens.add_metric(key, counters.reconnects)
            poll_period = getattr(driver, "poll_period", None)
            if kind == "dispensers" and poll_period is not None:
                seconds = poll_period()
                if seconds is not None:
                    period.add_metric([name], seconds)
        yield from (frames, errors, timeouts, reopens, period)

    # -------------------------------------------------------------- devices
    def _devices(self, daemon: Daemon) -> Iterable[Metric]:
        labels = ["device", "kind"]
        online = GaugeMetricFamily(
            "edgectl_device_online",
            "1 while a pump, line or gauge answers; 0 while it does not, or is not known yet "
            "(a pump on a line that is down is offline too).",
            labels=labels,
        )
        frames = CounterMetricFamily(
            "edgectl_device_frames_total",
            "Frames exchanged with one pump or gauge, by direction (a gauge: its line's).",
            labels=[*labels, "direction"],
        )
        errors = CounterMetricFamily(
            "edgectl_device_errors_total",
            "Bad replies from one pump (bad_crc, naks) or gauge (its line's kinds), by kind.",
            labels=[*labels, "error"],
        )
        timeouts = CounterMetricFamily(
            "edgectl_device_timeouts_total",
            "Requests to one pump or gauge that got no reply in time.",
            labels=labels,
        )
        gauges = {} if daemon.tanks is None else daemon.tanks.gauges
        for key, view in daemon.devices.views().items():
            kind = key.partition(":")[0]
            online.add_metric([key, kind], 1 if view["online"] else 0)
            if kind == "pump":
                number = int(key.partition(":")[2])
                pump = daemon.config.pump(number)
                line = daemon.lines.get(pump.line)
                pump_frames = getattr(line, "pump_frames", None)
                pump_errors = getattr(line, "pump_errors", None)
                if pump_frames is None or pump_errors is None:
                    continue
                sent = pump_frames(pump.address)
                for direction in ("sent", "received"):
                    frames.add_metric([key, kind, direction], sent[direction])
                seen = pump_errors(pump.address)
                for error in _PUMP_ERRORS:
                    errors.add_metric([key, kind, error], seen.get(error, 0))
                timeouts.add_metric([key, kind], seen.get("timeouts", 0))
            elif kind == "gauge":
                counters = getattr(gauges.get(key.partition(":")[2]), "counters", None)
                if isinstance(counters, LineCounters):
                    frames.add_metric([key, kind, "sent"], counters.frames_sent)
                    frames.add_metric([key, kind, "received"], counters.frames_received)
                    for error in _LINE_ERRORS:
                        errors.add_metric([key, kind, error], getattr(counters, error))
                    timeouts.add_metric([key, kind], counters.timeouts)
                elif isinstance(counters, BusCounters):
                    frames.add_metric([key, kind, "sent"], counters.requests)
                    frames.add_metric([key, kind, "received"], counters.replies)
                    for error in _BUS_ERRORS:
                        errors.add_metric([key, kind, error], getattr(counters, error))
                    timeouts.add_metric([key, kind], counters.timeouts)
        yield from (online, frames, errors, timeouts)

    # -------------------------------------------------------------- selling
    def _sales(self, daemon: Daemon) -> Iterable[Metric]:
        sales = self.metrics.store_figures.sales
        if sales is None:
            return  # the store not read yet: no figure rather than a false zero
        count = CounterMetricFamily(
            "edgectl_sales_total",
            "Sales recorded, by grade, since the store began (retention does not lower it).",
            labels=["grade"],
        )
        litres = CounterMetricFamily(
            "edgectl_sales_litres_total",
            "Litres sold, by grade, since the store began (retention does not lower it).",
            labels=["grade"],
        )
        grades = [g.id for g in daemon.config.grades]
        grades += sorted(set(sales) - set(grades))  # a grade no longer configured, "unknown"
        for grade in grades:
            n, volume = sales.get(grade, (0.0, 0.0))
            count.add_metric([grade], n)
            litres.add_metric([grade], volume)
        yield count
        yield litres

    def _authorizations(self, daemon: Daemon) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "edgectl_authorizations_total",
            "Authorizations asked for since the daemon started, by source (cloud, auto, "
            "attendant) and outcome: refused (never reached the pump: busy, offline, limits), "
            "else how it ended (completed with a sale, no_sale, expired, cancelled, failed).",
            labels=["source", "outcome"],
        )
        seen = dict(daemon.station.authorization_outcomes)
        sources = ["attendant"]
        if daemon.config.authorization.mode == "auto":
            sources.append("auto")
        if daemon.config.cloud is not None:
            sources.append("cloud")
        keys = [(source, outcome) for source in sources for outcome in OUTCOMES]
        keys += sorted(set(seen) - set(keys))
        for source, outcome in keys:
            family.add_metric([source, outcome], seen.get((source, outcome), 0))
        yield family

    # -------------------------------------------------------------- the cloud link
    def _outbox(self) -> Iterable[Metric]:
        figures = self.metrics.store_figures
        if figures.outbox_depth is None:
            return
        yield GaugeMetricFamily(
            "edgectl_outbox_messages",
            "Messages held in the outbox (its depth): waiting for the broker, or for the "
            "backend's ack.",
            value=figures.outbox_depth,
        )
        yield GaugeMetricFamily(
            "edgectl_outbox_oldest_age_seconds",
            "Age of the oldest message held in the outbox (0 when it is empty).",
            value=_age_s(figures.outbox_oldest_at) or 0.0,
        )

    def _cloud(self, daemon: Daemon) -> Iterable[Metric]:
        cloud = daemon.cloud
        if cloud is None:
            return
        yield GaugeMetricFamily(
            "edgectl_mqtt_connected",
            "1 while the MQTT session with the broker is up.",
            value=1 if cloud.session.connected else 0,
        )
        reconnects = CounterMetricFamily(
            "edgectl_mqtt_reconnects_total",
            "Connections to the broker after the first one since the daemon started.",
        )
        reconnects.add_metric([], cloud.session.reconnects)
        yield reconnects
        published = CounterMetricFamily(
            "edgectl_mqtt_published_total", "Outbox messages the broker took (PUBACK)."
        )
        published.add_metric([], cloud.publisher.published)
        yield published

    # -------------------------------------------------------------- the store
    def _store(self, daemon: Daemon) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "edgectl_store_writable",
            "1 while the store writes; 0 while it cannot (disk full, permissions, I/O).",
            value=0 if daemon.store.write_fault is not None else 1,
        )

    def _backup(self, daemon: Daemon) -> Iterable[Metric]:
        last = daemon.maintenance.last_backup
        if last is None:
            return
        yield GaugeMetricFamily(
            "edgectl_backup_age_seconds",
            "Age of this station's newest backup (absent while there is none).",
            value=max(0.0, (datetime.now(UTC) - last.taken_at).total_seconds()),
        )

    # -------------------------------------------------------------- tanks
    def _tanks(self, daemon: Daemon) -> Iterable[Metric]:
        service = daemon.tanks
        if service is None:
            return
        labels = ["tank", "grade"]
        online = GaugeMetricFamily(
            "edgectl_tank_online", "1 while the tank's gauge and probe answer.", labels=labels
        )
        capacity = GaugeMetricFamily(
            "edgectl_tank_capacity_litres", "The tank's configured capacity.", labels=labels
        )
        figures = {
            "product_l": GaugeMetricFamily(
                "edgectl_tank_product_litres",
                "Product in the tank at its own temperature (gross less water), last reading.",
                labels=labels,
            ),
            "net_l": GaugeMetricFamily(
                "edgectl_tank_net_litres",
                "Product in the tank at 15 °C, last reading.",
                labels=labels,
            ),
            "ullage_l": GaugeMetricFamily(
                "edgectl_tank_ullage_litres",
                "Room left in the tank up to its capacity, last reading.",
                labels=labels,
            ),
            "water_l": GaugeMetricFamily(
                "edgectl_tank_water_litres",
                "Water under the product, last reading.",
                labels=labels,
            ),
            "water_mm": GaugeMetricFamily(
                "edgectl_tank_water_height_metres",
                "Height of the water under the product, last reading.",
                labels=labels,
            ),
            "temperature_c": GaugeMetricFamily(
                "edgectl_tank_temperature_celsius",
                "Temperature of the product, last reading.",
                labels=labels,
            ),
        }
        age = GaugeMetricFamily(
            "edgectl_tank_reading_age_seconds",
            "Age of the tank's last plausible reading (absent before the first).",
            labels=labels,
        )
        now = datetime.now(UTC)
        for view in service.snapshot():
            key = [str(view.number), view.grade]
            online.add_metric(key, 1 if view.online else 0)
            capacity.add_metric(key, float(view.capacity_l))
            for name, family in figures.items():
                value = getattr(view, name)
                if value is not None:
                    scale = 1000 if name.endswith("_mm") else 1
                    family.add_metric(key, float(value) / scale)
            if view.reading_at is not None:
                age.add_metric(key, max(0.0, (now - view.reading_at).total_seconds()))
        yield from (online, capacity, *figures.values(), age)


def _age_s(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())
