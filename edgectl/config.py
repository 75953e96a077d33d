"""Station configuration: one TOML file, validated at start into frozen, typed models.

Every mistake stops the start with a single `ConfigError` that names the file and the key path,
for example ``station.toml: pumps[number=3].address: duplicate address 0x51 on line "north" (pump 1
uses it)``, so a technician can fix the file without reading code. The models are never changed
at run time; runtime state lives elsewhere.

Money and volumes are written as TOML strings (``unit_price = "7.89"``) or integers and read
into `Decimal`; TOML floats are refused because binary floats cannot hold 7.89 exactly.

To add a section (cloud link, tank gauges…): write a frozen model, a ``_read_<section>(root)``
that opens its table with the keys it accepts and reads fields through the `_Table` readers
(they report missing keys, wrong types and out-of-range values with the key path), add the
section name to `_SECTIONS` and a field to `Config`, and call the reader in `parse_config`.
"""

from __future__ import annotations

import base64
import difflib
import json
import os
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar, cast

from drivers import registry
from edgectl.cloud.signing import KEY_ID, InvalidKeyError, parse_public_key
from edgectl.errors import ConfigError
from edgectl.forecourt.tanks import (
    RECONCILIATION_ALLOWANCE_L,
    AlarmLimits,
    DeliveryRules,
    InvalidChart,
    Tank,
    TankChart,
)

__all__ = [
    "AuthorizationConfig",
    "CloudConfig",
    "CommandKey",
    "Config",
    "ControlConfig",
    "GaugeConfig",
    "GradeConfig",
    "LimitsConfig",
    "LineConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PumpConfig",
    "StationConfig",
    "StoreConfig",
    "TankConfig",
    "load_config",
    "parse_config",
    "refuse_placeholders",
]


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class StationConfig:
    """Who this site is. `id` names it to the cloud; `currency` is an ISO-4217 code."""

    id: str
    name: str = ""
    currency: str = "CNY"


@dataclass(frozen=True)
class StoreConfig:
    """Where the SQLite store lives, its scheduled backups and how long old rows are kept.
    Relative paths are resolved against the config file."""

    path: Path
    backup_interval_h: float = 24.0  # an online backup this often; 0: no scheduled backups
    backup_dir: Path | None = None  # None: a `backups` folder beside the store
    backup_keep: int = 7  # the newest backups kept
    keep_days: int = 0  # sales, orders, audit older than this are deleted daily; 0: kept

    @property
    def backups(self) -> Path:
        return self.backup_dir if self.backup_dir is not None else self.path.parent / "backups"


@dataclass(frozen=True)
class GradeConfig:
    """A fuel grade (product) and how its figures are shown on a dispenser display."""

    id: str
    name: str
    unit_price: Decimal  # per litre, quantized to `price_decimals` places
    volume_decimals: int = 2
    amount_decimals: int = 2
    price_decimals: int = 2


@dataclass(frozen=True)
class LineConfig:
    """One half-duplex serial bus (RS-485 or current loop) with its pumps' protocol."""

    name: str
    port: str
    protocol: str
    baud: int = 9600
    parity: str = "odd"  # "odd" | "even" | "none"
    bytesize: int = 8
    stopbits: int = 1
    reply_timeout_ms: int = 50
    retries: int = 3
    offline_after: int = 3  # consecutive missed replies before a pump is declared offline
    poll_interval_ms: int = 0  # pause between scan rounds; 0 = as fast as the line allows
    idle_poll_ms: int = 200  # an idle pump is polled at most this often; busy ones at line speed


@dataclass(frozen=True)
class PumpConfig:
    """A fuelling point: its station number, where it sits on a line, and its nozzles.

    `nozzles` maps nozzle number (1..15) to grade id. The three `*_decimals` are the pump's
    display decimals, taken by the loader from its grades (which must all agree).
    """

    number: int
    line: str
    address: int
    # Not hashed (a mapping proxy is unhashable); equality still compares it.
    nozzles: Mapping[int, str] = field(hash=False)
    name: str = ""
    volume_decimals: int = 2
    amount_decimals: int = 2
    price_decimals: int = 2

    def __post_init__(self) -> None:
        # Keep a private, read-only copy so neither the caller's dict nor ours can change later.
        frozen = MappingProxyType(dict(sorted(self.nozzles.items())))
        object.__setattr__(self, "nozzles", frozen)


@dataclass(frozen=True)
class AuthorizationConfig:
    """Who releases pumps: the cloud (pay-at-pump), the controller itself, or an attendant.

    In "auto" mode the loader sets `auto_preset_amount` (default: limits.max_preset_amount);
    in other modes it is whatever the file says, or None.
    """

    mode: str = "cloud"  # "cloud" | "auto" | "attendant"
    auto_preset_amount: Decimal | None = None
    authorize_timeout_s: float = 120.0  # an authorized pump not lifted in time is de-authorized


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on presets sent to pumps, in the station currency and in litres."""

    max_preset_amount: Decimal = Decimal("2000.00")
    max_preset_volume: Decimal = Decimal("300.00")
    min_preset_amount: Decimal = Decimal("1.00")
    # `edgectl price` refuses a change of more than this share of the price in force
    # (a typo like 70000 for 7.45) unless given --force.
    max_price_change_pct: Decimal = Decimal("20")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"  # "debug" | "info" | "warning" | "error"
    format: str = "json"  # "json" | "console"


@dataclass(frozen=True)
class HealthConfig:
    """The thresholds of the health verdict (`edgectl health`, docs/operations.md): an
    operator whose uplink is worse, or whose disk is smaller, tunes them per station."""

    cloud_outage_budget_s: float = 15 * 60.0  # a link down longer than this is a fault
    outbox_degraded_s: float = 30 * 60.0  # the oldest message waiting for the broker
    outbox_critical_s: float = 24 * 3600.0
    backup_late_factor: float = 2.0  # the newest backup older than this × the interval
    disk_degraded_mb: int = 500
    disk_critical_mb: int = 100
    disk_degraded_pct: float = 10.0  # also degraded under this share of the disk free
    clock_behind_s: float = 5 * 60.0  # the store holds records this far in the future


@dataclass(frozen=True)
class CommandKey:
    """A cloud key whose signature the station accepts on commands."""

    id: str
    public_key: bytes  # the raw 32-byte Ed25519 public key

    def __repr__(self) -> str:
        return (
            f"CommandKey(id={self.id!r}, public_key={base64.b64encode(self.public_key).decode()!r})"
        )


CloudDelivery = Literal["broker", "backend"]


@dataclass(frozen=True)
class CloudConfig:
    """The MQTT link to the cloud. The station always connects out; see docs/mqtt.md.

    File paths are absolute (the loader resolves them against the config file). `password`
    holds the secret itself, read from `password_file` when the file names one.
    """

    host: str
    client_id: str
    command_keys: tuple[CommandKey, ...] = ()
    port: int = 8883
    topic_prefix: str = "edgectl"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 20
    session_expiry_s: int = 3600
    heartbeat_s: float = 10.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    max_inflight: int = 32
    clock_skew_s: float = 30.0
    outbox_max_rows: int = 100_000
    # "broker": a message is done at the broker's PUBACK. "backend": a guaranteed message is
    # kept until the backend acknowledges it with a signed `ack` (docs/mqtt.md).
    delivery: CloudDelivery = "broker"


DEFAULT_CONTROL_SOCKET: Final = Path("/run/edgectl/control.sock")
# sockaddr_un.sun_path holds 108 bytes on Linux, the last one a NUL.
_SOCKET_PATH_MAX: Final = 107


@dataclass(frozen=True)
class ControlConfig:
    """The local control socket the technician CLI talks to (a Unix socket, never TCP).

    `socket` is absolute (the loader resolves a relative path against the config file). The
    socket is made mode 0660; `group`, when given, owns it so its members may use the CLI.
    """

    socket: Path = DEFAULT_CONTROL_SOCKET
    group: str | None = None


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics without a TCP port: the exposition is written to `textfile` (for
    node_exporter's textfile collector) every `interval_s`; None: not written (`edgectl
    metrics` still shows it over the control socket).

    `textfile` is absolute (a relative path is resolved against the config file) and ends in
    `.prom`, the only files the collector reads. Its directory is not checked here: the
    daemon logs a missing one and keeps running.
    """

    textfile: Path | None = None
    interval_s: float = 15.0


GaugeUnits = Literal["metric", "us"]
# How a Veeder-Root console's inventory is asked: the computer-format i201 only, the printed
# (display-format) I201 report only, or i201 with I201 where the console refuses it.
InventoryFormat = Literal["computer", "display", "auto"]


@dataclass(frozen=True)
class GaugeConfig:
    """A tank gauge: a Veeder-Root TLS console, or a line of Modbus level probes.

    It is reached on a serial `port` or at `host`:`tcp_port`, exactly one of the two. Settings
    that do not apply (serial settings of a TCP gauge, TLS settings of a probe line) keep their
    defaults; the loader refuses them in the file. `register_map` is an absolute path.
    """

    name: str
    protocol: str  # "veeder_root" | "modbus_probe"
    port: str | None = None
    host: str | None = None
    tcp_port: int | None = None  # set with host: 10001 for veeder_root, 502 for modbus_probe
    baud: int = 9600
    parity: str = "none"  # "odd" | "even" | "none"
    bytesize: int = 8
    stopbits: int = 1
    reply_timeout_ms: int = 3000  # 3000 for veeder_root, 1000 for modbus_probe
    poll_interval_s: float = 10.0
    offline_after: int = 3  # consecutive failed polls before the gauge's tanks are offline
    security_code: str = field(default="", repr=False)  # veeder_root: 6 characters, "" = none
    terminator: str = "none"  # veeder_root: "none" | "lf" | "crlf"
    etx: int = 0x03  # veeder_root: the character that ends a reply (console setup 531)
    # veeder_root: the console's unit setup; "us" figures (in, °F, US gal) are converted.
    units: GaugeUnits = "metric"
    inventory_format: InventoryFormat = "auto"  # veeder_root: i201, I201, or either
    register_map: Path | None = None  # modbus_probe: the TOML register map of its probes

    @property
    def terminator_bytes(self) -> bytes:
        return _TERMINATORS[self.terminator]


_ALARMS: Final = AlarmLimits()
_DELIVERIES: Final = DeliveryRules()


@dataclass(frozen=True)
class TankConfig:
    """A tank: what it holds and how big it is, which gauge reads it, and its alarm limits.

    `gauge_tank` is the tank's number on its gauge (a TLS console's tank number, or the tank
    within a multi-tank Modbus device); `device_id` is the Modbus unit id of its probe. `chart`
    is None only on a Veeder-Root gauge, which reports volumes itself; `chart_file` says where
    a chart read from a CSV file came from. The loader sets `low_product_l` (default: 10 % of
    capacity). `model()` is the tank as the forecourt domain uses it.
    """

    number: int
    grade: str
    capacity_l: Decimal
    height_mm: Decimal
    density_15: Decimal  # kg/m³ at 15 °C
    gauge: str
    gauge_tank: int = 1
    device_id: int | None = None
    name: str = ""
    safe_fill_pct: Decimal = Decimal(95)
    chart: TankChart | None = None
    chart_file: Path | None = None
    low_product_l: Decimal = _ALARMS.low_product_l
    high_water_mm: Decimal = _ALARMS.high_water_mm
    overfill_pct: Decimal = _ALARMS.overfill_pct
    sudden_loss_l: Decimal = _ALARMS.sudden_loss_l
    hysteresis_pct: Decimal = _ALARMS.hysteresis_pct
    delivery_min_l: Decimal = _DELIVERIES.min_rise_l
    delivery_settle_s: int = int(_DELIVERIES.settle_time.total_seconds())
    reconciliation_limit_l: Decimal = RECONCILIATION_ALLOWANCE_L
    # Inventory to the cloud: on a product change this big, and at least this often.
    inventory_threshold_l: Decimal = Decimal(50)
    inventory_interval_s: int = 300

    def model(self) -> Tank:
        return Tank(
            number=self.number,
            grade=self.grade,
            capacity_l=self.capacity_l,
            height_mm=self.height_mm,
            density_15=self.density_15,
            chart=self.chart,
            safe_fill_pct=self.safe_fill_pct,
            name=self.name,
            alarms=AlarmLimits(
                low_product_l=self.low_product_l,
                high_water_mm=self.high_water_mm,
                overfill_pct=self.overfill_pct,
                sudden_loss_l=self.sudden_loss_l,
                hysteresis_pct=self.hysteresis_pct,
            ),
            deliveries=DeliveryRules(
                min_rise_l=self.delivery_min_l,
                settle_time=timedelta(seconds=self.delivery_settle_s),
            ),
            reconciliation_allowance_l=self.reconciliation_limit_l,
        )


@dataclass(frozen=True)
class Config:
    """The whole, validated station configuration.

    Look-ups by id never raise KeyError. Every reference inside a validated config resolves
    (a nozzle's grade, a pump's line), so `grade`, `line` and `pump` return the model directly
    and raise `ConfigError` for an id that is not configured: such an id came from outside
    (cloud, CLI), and the caller answers "unknown pump" in its own terms.
    """

    station: StationConfig
    store: StoreConfig
    authorization: AuthorizationConfig
    limits: LimitsConfig
    logging: LoggingConfig
    grades: tuple[GradeConfig, ...]
    lines: tuple[LineConfig, ...]
    pumps: tuple[PumpConfig, ...]
    source: Path  # the file it was read from, as given
    cloud: CloudConfig | None = None  # None: no [cloud] section, the station runs alone
    control: ControlConfig = ControlConfig()
    health: HealthConfig = HealthConfig()
    metrics: MetricsConfig = MetricsConfig()

    gauges: tuple[GaugeConfig, ...] = ()  # empty: no [[gauges]], no tank gauging
    tanks: tuple[TankConfig, ...] = ()

    def grade(self, grade_id: str) -> GradeConfig:
        for grade in self.grades:
            if grade.id == grade_id:
                return grade
        raise self._unknown("grade", _show(grade_id), [_show(g.id) for g in self.grades])

    def line(self, name: str) -> LineConfig:
        for line in self.lines:
            if line.name == name:
                return line
        raise self._unknown("line", _show(name), [_show(line.name) for line in self.lines])

    def pump(self, number: int) -> PumpConfig:
        for pump in self.pumps:
            if pump.number == number:
                return pump
        raise self._unknown("pump", str(number), [str(p.number) for p in self.pumps])

    def pumps_on(self, line_name: str) -> tuple[PumpConfig, ...]:
        """The pumps on one line, in file order; empty for an unknown line."""
        return tuple(p for p in self.pumps if p.line == line_name)

    def gauge(self, name: str) -> GaugeConfig:
        for gauge in self.gauges:
            if gauge.name == name:
                return gauge
        raise self._unknown("gauge", _show(name), [_show(g.name) for g in self.gauges])

    def tank(self, number: int) -> TankConfig:
        for tank in self.tanks:
            if tank.number == number:
                return tank
        raise self._unknown("tank", str(number), [str(t.number) for t in self.tanks])

    def tanks_on(self, gauge_name: str) -> tuple[TankConfig, ...]:
        """The tanks one gauge reads, in file order; empty for an unknown gauge."""
        return tuple(t for t in self.tanks if t.gauge == gauge_name)

    def tanks_for_grade(self, grade_id: str) -> tuple[TankConfig, ...]:
        """The tanks holding a grade (several when manifolded); empty when none is configured."""
        return tuple(t for t in self.tanks if t.grade == grade_id)

    def _unknown(self, what: str, key: str, defined: list[str]) -> ConfigError:
        return _error(
            self.source,
            "",
            f"no {what} {key} is configured (defined: {', '.join(defined) or 'none'})",
        )


# The command key config/station.example.toml ships: a valid Ed25519 key whose private half
# nobody holds, so a station that lists it verifies no command. A file copied from the example
# parses, but is refused where it would be used (`edgectl config check`, `edgectl run`).
EXAMPLE_COMMAND_KEYS: Final = frozenset(
    {base64.b64decode("Zzdxg8iCoKZFERZbvA8BHfQ2FlkrFWX8sTvKxaUN1NE=")}
)


def refuse_placeholders(config: Config) -> None:
    """Raise `ConfigError` for what the example holds in place of a station's own values (its
    command key), with how to make the real one."""
    for key in config.cloud.command_keys if config.cloud is not None else ():
        if key.public_key in EXAMPLE_COMMAND_KEYS:
            raise _error(
                config.source,
                f"cloud.command_keys[id={_show(key.id)}]",
                "its public key is the placeholder of config/station.example.toml, whose "
                "private half nobody holds, so it would verify no command: make the cloud's "
                f"key pair with `edgectl cloud keygen --id {key.id}` (on the cloud side) and "
                "put the public key it prints here",
            )


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file; any problem raises one `ConfigError`."""
    source = Path(path)
    try:
        with source.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: config file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not a UTF-8 text file ({exc.reason})") from exc
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)".
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    return parse_config(data, source=source)


def parse_config(data: Mapping[str, Any], *, source: Path) -> Config:
    """Validate already-parsed TOML data; `source` names the file in messages and anchors
    relative paths."""
    root = _Table(data, "", source, _SECTIONS)
    station = _read_station(root)
    store = _read_store(root)
    limits = _read_limits(root)
    authorization = _read_authorization(root, limits)
    logging = _read_logging(root)
    grades = _read_grades(root)
    lines = _read_lines(root)
    pumps = _read_pumps(root, grades, lines)
    cloud = _read_cloud(root, station)
    control = _read_control(root)
    health = _read_health(root)
    metrics = _read_metrics(root)
    gauges = _read_gauges(root, lines)
    tanks = _read_tanks(root, grades, gauges)
    return Config(
        station=station,
        store=store,
        authorization=authorization,
        limits=limits,
        logging=logging,
        grades=grades,
        lines=lines,
        pumps=pumps,
        source=source,
        gauges=gauges,
        tanks=tanks,
        cloud=cloud,
        control=control,
        health=health,
        metrics=metrics,
    )


_SECTIONS: Final = (
    "station",
    "store",
    "authorization",
    "limits",
    "logging",
    "grades",
    "lines",
    "pumps",
    "cloud",
    "control",
    "health",
    "metrics",
    "gauges",
    "tanks",
)


# What the config needs to know of each protocol (its valid addresses, its own keys, its
# defaults) is in its drivers.registry entry.
_PROTOCOLS: Final = registry.names("dispenser")

_STATION_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CURRENCY: Final = re.compile(r"[A-Z]{3}")
_DECIMAL_TEXT: Final = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")
_INT_TEXT: Final = re.compile(r"[+-]?(0x[0-9A-Fa-f]+|[0-9]+)")
_NOZZLE_KEY: Final = re.compile(r"[0-9]+")
_MAX_DECIMALS: Final = 4
_NOZZLES: Final = range(1, 16)


def _read_station(root: _Table) -> StationConfig:
    t = root.table("station", ("id", "name", "currency"))
    default = StationConfig(id="")
    station_id = t.req_str("id")
    if not _STATION_ID.fullmatch(station_id):
        raise t.fail(
            "id",
            f"{_show(station_id)} is not a valid station id (up to 64 letters, digits, "
            '"-" or "_"; it becomes part of MQTT topics)',
        )
    currency = t.opt_str("currency", default.currency)
    if not _CURRENCY.fullmatch(currency):
        raise t.fail(
            "currency",
            f'{_show(currency)} is not an ISO-4217 code (three upper-case letters, e.g. "CNY")',
        )
    return StationConfig(id=station_id, name=t.opt_str("name", default.name), currency=currency)


def _read_store(root: _Table) -> StoreConfig:
    t = root.table("store", ("path", "backup_interval_h", "backup_dir", "backup_keep", "keep_days"))
    path = Path(t.req_str("path"))
    if not path.is_absolute():
        path = (t.source.parent / path).resolve()
    backup_dir = None
    folder = t.opt_str("backup_dir", "")
    if folder.strip():
        backup_dir = Path(folder)
        if not backup_dir.is_absolute():
            backup_dir = (t.source.parent / backup_dir).resolve()
    return StoreConfig(
        path=path,
        backup_interval_h=t.opt_number("backup_interval_h", 24.0, lo=0.0, hi=24.0 * 366),
        backup_dir=backup_dir,
        backup_keep=t.opt_int("backup_keep", 7, lo=1, hi=10_000),
        keep_days=t.opt_int("keep_days", 0, lo=0, hi=36_600),
    )


def _read_limits(root: _Table) -> LimitsConfig:
    t = root.table(
        "limits",
        ("max_preset_amount", "max_preset_volume", "min_preset_amount", "max_price_change_pct"),
    )
    default = LimitsConfig()
    values: dict[str, Decimal] = {}
    for key, fallback in (
        ("max_preset_amount", default.max_preset_amount),
        ("max_preset_volume", default.max_preset_volume),
        ("min_preset_amount", default.min_preset_amount),
    ):
        value = t.opt_decimal(key, fallback, max_places=_MAX_DECIMALS)
        if value <= 0:
            raise t.fail(key, f"must be greater than 0, got {_show_decimal(value)}")
        values[key] = value
    change = t.opt_decimal("max_price_change_pct", default.max_price_change_pct, max_places=2)
    if not 0 < change <= 1000:
        raise t.fail("max_price_change_pct", f"must be above 0 and at most 1000, got {change}")
    limits = LimitsConfig(**values, max_price_change_pct=change)
    if limits.min_preset_amount > limits.max_preset_amount:
        raise t.fail(
            "min_preset_amount",
            f"{_show_decimal(limits.min_preset_amount)} is more than max_preset_amount "
            f"{_show_decimal(limits.max_preset_amount)}",
        )
    return limits


def _read_authorization(root: _Table, limits: LimitsConfig) -> AuthorizationConfig:
    t = root.table("authorization", ("mode", "auto_preset_amount", "authorize_timeout_s"))
    default = AuthorizationConfig()
    mode = t.choice("mode", default.mode, ("cloud", "auto", "attendant"))
    preset = t.opt_decimal("auto_preset_amount", None, max_places=_MAX_DECIMALS)
    if preset is not None and not limits.min_preset_amount <= preset <= limits.max_preset_amount:
        raise t.fail(
            "auto_preset_amount",
            f"{_show_decimal(preset)} must be between limits.min_preset_amount "
            f"{_show_decimal(limits.min_preset_amount)} and limits.max_preset_amount "
            f"{_show_decimal(limits.max_preset_amount)}",
        )
    if preset is None and mode == "auto":
        preset = limits.max_preset_amount
    timeout = t.opt_number("authorize_timeout_s", default.authorize_timeout_s, lo=1, hi=3600)
    return AuthorizationConfig(mode=mode, auto_preset_amount=preset, authorize_timeout_s=timeout)


def _read_logging(root: _Table) -> LoggingConfig:
    t = root.table("logging", ("level", "format"))
    default = LoggingConfig()
    return LoggingConfig(
        level=t.choice("level", default.level, ("debug", "info", "warning", "error")),
        format=t.choice("format", default.format, ("json", "console")),
    )


def _read_grades(root: _Table) -> tuple[GradeConfig, ...]:
    keys = ("id", "name", "unit_price", "volume_decimals", "amount_decimals", "price_decimals")
    grades: list[GradeConfig] = []
    for t in root.tables("grades", keys, "id"):
        grade = _read_grade(t)
        for j, other in enumerate(grades):
            if other.id == grade.id:
                raise t.fail(
                    "id",
                    f"duplicate grade id {_show(grade.id)} "
                    f"(also in the {ordinal(j + 1)} [[grades]])",
                )
        grades.append(grade)
    if not grades:
        raise root.fail("grades", "at least one [[grades]] entry is required")
    return tuple(grades)


def _read_grade(t: _Table) -> GradeConfig:
    default = GradeConfig(id="", name="", unit_price=Decimal(1))
    grade_id = t.req_str("id")
    name = t.req_str("name")
    decimals = {
        key: t.opt_int(key, getattr(default, key), lo=0, hi=_MAX_DECIMALS)
        for key in ("volume_decimals", "amount_decimals", "price_decimals")
    }
    places = decimals["price_decimals"]
    price = t.req_decimal("unit_price", max_places=places, limit_name="price_decimals")
    if price <= 0:
        raise t.fail("unit_price", f"must be greater than 0, got {_show_decimal(price)}")
    return GradeConfig(
        id=grade_id,
        name=name,
        unit_price=price.quantize(Decimal(1).scaleb(-places)),
        **decimals,
    )


def _read_lines(root: _Table) -> tuple[LineConfig, ...]:
    keys = (
        "name",
        "port",
        "protocol",
        "baud",
        "parity",
        "bytesize",
        "stopbits",
        "reply_timeout_ms",
        "retries",
        "offline_after",
        "poll_interval_ms",
        "idle_poll_ms",
    )
    lines: list[LineConfig] = []
    for t in root.tables("lines", keys, "name"):
        line = _read_line(t)
        for j, other in enumerate(lines):
            if other.name == line.name:
                raise t.fail(
                    "name",
                    f"duplicate line name {_show(line.name)} "
                    f"(also in the {ordinal(j + 1)} [[lines]])",
                )
            # One task owns one bus; two lines on the same port would fight over it.
            if other.port == line.port:
                raise t.fail(
                    "port", f"port {_show(line.port)} is already used by line {_show(other.name)}"
                )
        lines.append(line)
    if not lines:
        raise root.fail("lines", "at least one [[lines]] entry is required")
    return tuple(lines)


def _read_line(t: _Table) -> LineConfig:
    default = LineConfig(name="", port="", protocol="")
    name = t.req_str("name")
    port = t.req_str("port")
    protocol = t.req_str("protocol")
    if protocol not in _PROTOCOLS:
        known = ", ".join(sorted(_PROTOCOLS))
        raise t.fail("protocol", f"unknown protocol {_show(protocol)} (known: {known})")
    return LineConfig(
        name=name,
        port=port,
        protocol=protocol,
        baud=t.opt_int(
            "baud", default.baud, choices=(1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
        ),
        parity=t.choice("parity", default.parity, ("odd", "even", "none")),
        bytesize=t.opt_int("bytesize", default.bytesize, choices=(7, 8)),
        stopbits=t.opt_int("stopbits", default.stopbits, choices=(1, 2)),
        reply_timeout_ms=t.opt_int("reply_timeout_ms", default.reply_timeout_ms, lo=5, hi=5000),
        retries=t.opt_int("retries", default.retries, lo=0, hi=10),
        offline_after=t.opt_int("offline_after", default.offline_after, lo=1, hi=20),
        poll_interval_ms=t.opt_int("poll_interval_ms", default.poll_interval_ms, lo=0, hi=60000),
        idle_poll_ms=t.opt_int("idle_poll_ms", default.idle_poll_ms, lo=0, hi=10000),
    )


def _read_pumps(
    root: _Table, grades: Sequence[GradeConfig], lines: Sequence[LineConfig]
) -> tuple[PumpConfig, ...]:
    grades_by_id = {g.id: g for g in grades}
    lines_by_name = {line.name: line for line in lines}
    pumps: list[PumpConfig] = []
    for t in root.tables("pumps", ("number", "line", "address", "nozzles", "name"), "number"):
        pump = _read_pump(t, grades_by_id, lines_by_name)
        for j, other in enumerate(pumps):
            if other.number == pump.number:
                raise t.fail(
                    "number",
                    f"duplicate pump number {pump.number} (also in the {ordinal(j + 1)} [[pumps]])",
                )
            if other.line == pump.line and other.address == pump.address:
                raise t.fail(
                    "address",
                    f"duplicate address {_hex(pump.address)} on line {_show(pump.line)} "
                    f"(pump {other.number} uses it)",
                )
        pumps.append(pump)
    if not pumps:
        raise root.fail("pumps", "at least one [[pumps]] entry is required")
    return tuple(pumps)


def _read_pump(
    t: _Table, grades: Mapping[str, GradeConfig], lines: Mapping[str, LineConfig]
) -> PumpConfig:
    number = t.req_int("number", lo=1, hi=99)
    line_name = t.req_str("line")
    line = lines.get(line_name)
    if line is None:
        raise t.fail("line", f"unknown line {_show(line_name)} (defined: {_listing(lines)})")
    address = t.req_int("address")
    valid = registry.lookup(line.protocol, "dispenser").addresses
    assert valid is not None  # every dispenser entry has its addresses
    if address not in valid:
        raise t.fail(
            "address",
            f"address {_hex(address)} is out of range for {line.protocol} "
            f"({_hex(valid[0])}..{_hex(valid[-1])})",
        )
    nozzles = _read_nozzles(t.table("nozzles", None, required=True), grades)
    display = _display_decimals(t, number, [grades[g] for g in nozzles.values()])
    return PumpConfig(
        number=number,
        line=line_name,
        address=address,
        nozzles=nozzles,
        name=t.opt_str("name", ""),
        volume_decimals=display.volume_decimals,
        amount_decimals=display.amount_decimals,
        price_decimals=display.price_decimals,
    )


def _read_nozzles(t: _Table, grades: Mapping[str, GradeConfig]) -> dict[int, str]:
    nozzles: dict[int, str] = {}
    for key, value in t.data.items():
        if not _NOZZLE_KEY.fullmatch(key):
            raise t.fail(key, f"nozzle numbers are integers 1..15, got {_show(key)}")
        number = int(key)
        if number not in _NOZZLES:
            raise t.fail(key, f"nozzle number {number} is out of range (1..15)")
        if number in nozzles:
            raise t.fail(key, f"nozzle {number} is listed twice")
        grade_id = t.as_str(key, value)
        if grade_id not in grades:
            raise t.fail(
                key,
                f"grade {_show(grade_id)} is not defined in [[grades]] "
                f"(defined: {_listing(grades)})",
            )
        nozzles[number] = grade_id
    if not nozzles:
        raise t.fail(None, 'at least one nozzle is required, e.g. nozzles = { 1 = "95" }')
    return nozzles


def _display_decimals(t: _Table, number: int, grades: Sequence[GradeConfig]) -> GradeConfig:
    """The one grade whose decimals stand for the pump; all its grades must agree."""
    first = grades[0]
    for grade in grades[1:]:
        for attr in ("volume_decimals", "amount_decimals", "price_decimals"):
            if getattr(grade, attr) != getattr(first, attr):
                raise t.fail(
                    "nozzles",
                    f"pump {number} mixes grades with different {attr} "
                    f"({_show(first.id)} has {getattr(first, attr)}, "
                    f"{_show(grade.id)} has {getattr(grade, attr)}); "
                    "a dispenser has one display, so its grades must agree",
                )
    return first


def _read_cloud(root: _Table, station: StationConfig) -> CloudConfig | None:
    if "cloud" not in root.data:
        return None
    t = root.table("cloud", _CLOUD_KEYS)
    default = CloudConfig(host="", client_id="")
    host = t.req_str("host")
    if any(c.isspace() for c in host) or "/" in host:
        raise t.fail("host", f"{_show(host)} is not a host name or address (no scheme, no path)")
    tls = t.opt_bool("tls", default.tls)
    port = t.opt_int("port", 8883 if tls else 1883, lo=1, hi=65535)
    prefix = t.opt_str("topic_prefix", default.topic_prefix)
    problem = _topic_prefix_problem(prefix)
    if problem:
        raise t.fail("topic_prefix", f"{_show(prefix)} {problem}")
    client_id = t.opt_str("client_id", f"edgectl-{station.id}")
    if not client_id.strip() or len(client_id.encode()) > 256:
        raise t.fail("client_id", "must be 1..256 bytes and not blank")
    username = t.opt_str("username", "") or None
    password = _read_password(t, username)
    ca_file, cert_file, key_file = (t.opt_file(k) for k in ("ca_file", "cert_file", "key_file"))
    if not tls:
        for key, path in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
            if path is not None:
                raise t.fail(key, "is only used with tls = true")
    if (cert_file is None) != (key_file is None):
        given, missing = (
            ("cert_file", "key_file") if key_file is None else ("key_file", "cert_file")
        )
        raise t.fail(
            missing, f"missing: {given} is given, and a client certificate and its key go together"
        )
    reconnect_min = t.opt_number("reconnect_min_s", default.reconnect_min_s, lo=0.01, hi=3600)
    reconnect_max = t.opt_number("reconnect_max_s", default.reconnect_max_s, lo=0.01, hi=3600)
    if reconnect_max < reconnect_min:
        raise t.fail(
            "reconnect_max_s",
            f"{reconnect_max:g} is less than reconnect_min_s {reconnect_min:g}",
        )
    return CloudConfig(
        host=host,
        client_id=client_id,
        command_keys=_read_command_keys(t),
        port=port,
        topic_prefix=prefix,
        username=username,
        password=password,
        tls=tls,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        keepalive_s=t.opt_int("keepalive_s", default.keepalive_s, lo=5, hi=3600),
        session_expiry_s=t.opt_int(
            "session_expiry_s", default.session_expiry_s, lo=60, hi=_SESSION_EXPIRY_MAX
        ),
        heartbeat_s=t.opt_number("heartbeat_s", default.heartbeat_s, lo=0.1, hi=3600),
        reconnect_min_s=reconnect_min,
        reconnect_max_s=reconnect_max,
        max_inflight=t.opt_int("max_inflight", default.max_inflight, lo=1, hi=1000),
        clock_skew_s=t.opt_number("clock_skew_s", default.clock_skew_s, lo=0, hi=3600),
        outbox_max_rows=t.opt_int(
            "outbox_max_rows", default.outbox_max_rows, lo=1000, hi=100_000_000
        ),
        delivery=cast(CloudDelivery, t.choice("delivery", default.delivery, _CLOUD_DELIVERIES)),
    )


_CLOUD_KEYS: Final = (
    "host",
    "port",
    "topic_prefix",
    "client_id",
    "username",
    "password",
    "password_file",
    "tls",
    "ca_file",
    "cert_file",
    "key_file",
    "keepalive_s",
    "session_expiry_s",
    "heartbeat_s",
    "reconnect_min_s",
    "reconnect_max_s",
    "max_inflight",
    "clock_skew_s",
    "outbox_max_rows",
    "delivery",
    "command_keys",
)
_CLOUD_DELIVERIES: Final[tuple[CloudDelivery, ...]] = ("broker", "backend")
_SESSION_EXPIRY_MAX: Final = 0xFFFFFFFF  # MQTT 5: the session never expires


def _read_control(root: _Table) -> ControlConfig:
    t = root.table("control", ("socket", "group"))
    default = ControlConfig()
    text = t.opt_str("socket", str(default.socket))
    if not text.strip():
        raise t.fail("socket", "must not be empty")
    path = Path(text)
    if not path.is_absolute():
        path = (t.source.parent / path).resolve()
    if len(os.fsencode(path)) > _SOCKET_PATH_MAX:
        raise t.fail(
            "socket",
            f"{path} is {len(os.fsencode(path))} bytes long; a Unix socket path holds at most "
            f"{_SOCKET_PATH_MAX}: choose a shorter path",
        )
    group = t.opt_str("group", "") or None
    if group is not None and not _GROUP_NAME.fullmatch(group):
        raise t.fail("group", f"{_show(group)} is not a valid group name")
    return ControlConfig(socket=path, group=group)


def _read_health(root: _Table) -> HealthConfig:
    keys = tuple(HealthConfig.__dataclass_fields__)
    t = root.table("health", keys)
    d = HealthConfig()
    day = 24 * 3600.0
    health = HealthConfig(
        cloud_outage_budget_s=t.opt_number(
            "cloud_outage_budget_s", d.cloud_outage_budget_s, lo=0.0, hi=30 * day
        ),
        outbox_degraded_s=t.opt_number(
            "outbox_degraded_s", d.outbox_degraded_s, lo=0.0, hi=30 * day
        ),
        outbox_critical_s=t.opt_number(
            "outbox_critical_s", d.outbox_critical_s, lo=0.0, hi=365 * day
        ),
        backup_late_factor=t.opt_number(
            "backup_late_factor", d.backup_late_factor, lo=1.0, hi=100.0
        ),
        disk_degraded_mb=t.opt_int("disk_degraded_mb", d.disk_degraded_mb, lo=0, hi=2**31),
        disk_critical_mb=t.opt_int("disk_critical_mb", d.disk_critical_mb, lo=0, hi=2**31),
        disk_degraded_pct=t.opt_number("disk_degraded_pct", d.disk_degraded_pct, lo=0.0, hi=100.0),
        clock_behind_s=t.opt_number("clock_behind_s", d.clock_behind_s, lo=0.0, hi=365 * day),
    )
    if health.outbox_critical_s < health.outbox_degraded_s:
        raise t.fail(
            "outbox_critical_s",
            f"{health.outbox_critical_s:g} is less than outbox_degraded_s "
            f"({health.outbox_degraded_s:g}): the critical age must be the longer one",
        )
    if health.disk_critical_mb > health.disk_degraded_mb:
        raise t.fail(
            "disk_critical_mb",
            f"{health.disk_critical_mb} is more than disk_degraded_mb "
            f"({health.disk_degraded_mb}): critical must be the smaller free space",
        )
    return health


_GROUP_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")


def _read_metrics(root: _Table) -> MetricsConfig:
    t = root.table("metrics", ("textfile", "interval_s"))
    default = MetricsConfig()
    textfile: Path | None = None
    if "textfile" in t.data:
        text = t.opt_str("textfile", "")
        if not text.strip():
            raise t.fail("textfile", "must not be empty (leave the key out to write no file)")
        textfile = Path(text)
        if not textfile.is_absolute():
            textfile = (t.source.parent / textfile).resolve()
        if textfile.suffix != ".prom":
            raise t.fail(
                "textfile",
                f"{textfile} does not end in .prom: node_exporter's textfile collector reads "
                "only *.prom files (for example /var/lib/prometheus/node-exporter/edgectl.prom)",
            )
    interval = t.opt_number("interval_s", default.interval_s, lo=1.0, hi=3600.0)
    return MetricsConfig(textfile=textfile, interval_s=interval)


def _topic_prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot start every topic of the station, or None if it can."""
    if not prefix:
        return "is empty"
    if "+" in prefix or "#" in prefix:
        return 'contains an MQTT wildcard ("+" or "#")'
    if prefix.startswith("/") or prefix.endswith("/"):
        return 'must not start or end with "/"'
    if "//" in prefix:
        return "has an empty topic level"
    if prefix.startswith("$"):
        return 'must not start with "$" (topics reserved for the broker)'
    if "\x00" in prefix or any(c.isspace() for c in prefix):
        return "contains white space or NUL"
    return None


def _read_password(t: _Table, username: str | None) -> str | None:
    password = t.opt_str("password", "") or None
    path = t.opt_file("password_file")
    if password is not None and path is not None:
        raise t.fail("password_file", "give either password or password_file, not both")
    if path is not None:
        try:
            # Editors add a final newline; it is never part of the password.
            password = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise t.fail("password_file", f"cannot read {path}: {reason or exc}") from None
        if not password:
            raise t.fail("password_file", f"{path} is empty")
    if password is not None and username is None:
        key = "password" if path is None else "password_file"
        raise t.fail(key, "a password needs a username")
    return password


def _read_command_keys(cloud: _Table) -> tuple[CommandKey, ...]:
    keys: list[CommandKey] = []
    for t in cloud.tables("command_keys", ("id", "public_key", "public_key_file"), "id"):
        key = _read_command_key(t)
        for j, other in enumerate(keys):
            if other.id == key.id:
                raise t.fail(
                    "id",
                    f"duplicate key id {_show(key.id)} "
                    f"(also in the {ordinal(j + 1)} [[cloud.command_keys]])",
                )
        keys.append(key)
    if not keys:
        raise cloud.fail(
            "command_keys",
            "at least one [[cloud.command_keys]] entry is required (the cloud's public key; "
            "make a pair with: edgectl cloud keygen --id KEYID)",
        )
    return tuple(keys)


def _read_command_key(t: _Table) -> CommandKey:
    key_id = t.req_str("id")
    if not KEY_ID.fullmatch(key_id):
        raise t.fail(
            "id", f'{_show(key_id)} is not a valid key id (1..64 letters, digits, ".", "_" or "-")'
        )
    text = t.opt_str("public_key", "") or None
    path = t.opt_file("public_key_file")
    if text is not None and path is not None:
        raise t.fail("public_key_file", "give either public_key or public_key_file, not both")
    if text is None and path is None:
        raise t.fail("public_key", "missing: give public_key (base64) or public_key_file")
    where = "public_key"
    if path is not None:
        where = "public_key_file"
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a text key file"
            raise t.fail(where, f"cannot read {path}: {reason or exc}") from None
    assert text is not None
    try:
        key = parse_public_key(text)
    except InvalidKeyError as exc:
        shown = str(path) if path is not None else _show(text)
        raise t.fail(where, f"{shown} is not an Ed25519 public key: {exc}") from None
    return CommandKey(id=key_id, public_key=key.public_bytes_raw())


_GAUGE_PROTOCOLS: Final = registry.names("gauge")
_GAUGE_SERIAL_KEYS: Final = ("baud", "parity", "bytesize", "stopbits")
_GAUGE_OWN_KEYS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {name: registry.lookup(name).own_keys for name in _GAUGE_PROTOCOLS}
)
_GAUGE_UNITS: Final[tuple[GaugeUnits, ...]] = ("metric", "us")
_INVENTORY_FORMATS: Final[tuple[InventoryFormat, ...]] = ("computer", "display", "auto")
_GAUGE_KEYS: Final = (
    "name",
    "protocol",
    "port",
    "host",
    "tcp_port",
    *_GAUGE_SERIAL_KEYS,
    "reply_timeout_ms",
    "poll_interval_s",
    "offline_after",
    *(key for name in _GAUGE_PROTOCOLS for key in _GAUGE_OWN_KEYS[name]),
)
_GAUGE_TCP_PORTS: Final[Mapping[str, int]] = MappingProxyType(
    {name: registry.lookup(name).default_tcp_port or 0 for name in _GAUGE_PROTOCOLS}
)
_GAUGE_REPLY_TIMEOUTS: Final[Mapping[str, int]] = MappingProxyType(
    {name: registry.lookup(name).default_reply_timeout_ms or 3000 for name in _GAUGE_PROTOCOLS}
)
_GAUGE_BAUDS: Final = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
_TERMINATORS: Final[Mapping[str, bytes]] = MappingProxyType(
    {"none": b"", "lf": b"\n", "crlf": b"\r\n"}
)
_SECURITY_CODE: Final = re.compile(r"[!-~]{6}")
# Control characters that cannot end a TLS reply: they start, abort or break up messages.
_ETX_REFUSED: Final[Mapping[int, str]] = MappingProxyType(
    {
        0x01: "SOH, which starts every message",
        0x0A: "LF, a line end inside display-format reports",
        0x0D: "CR, a line end inside display-format reports",
        0x1B: "ESC, which aborts a reply",
    }
)


def _read_gauges(root: _Table, lines: Sequence[LineConfig]) -> tuple[GaugeConfig, ...]:
    gauges: list[GaugeConfig] = []
    for t in root.tables("gauges", _GAUGE_KEYS, "name"):
        gauge = _read_gauge(t)
        for j, other in enumerate(gauges):
            if other.name == gauge.name:
                raise t.fail(
                    "name",
                    f"duplicate gauge name {_show(gauge.name)} "
                    f"(also in the {ordinal(j + 1)} [[gauges]])",
                )
            if gauge.port is not None and other.port == gauge.port:
                raise t.fail(
                    "port", f"port {_show(gauge.port)} is already used by gauge {_show(other.name)}"
                )
            if gauge.host is not None and (other.host, other.tcp_port) == (
                gauge.host,
                gauge.tcp_port,
            ):
                raise t.fail(
                    "host",
                    f"{gauge.host}:{gauge.tcp_port} is already used by gauge {_show(other.name)}",
                )
        # One task owns one bus: a gauge cannot share a serial port with a pump line.
        for line in lines:
            if gauge.port == line.port:
                raise t.fail(
                    "port", f"port {_show(line.port)} is already used by line {_show(line.name)}"
                )
        gauges.append(gauge)
    return tuple(gauges)


def _read_gauge(t: _Table) -> GaugeConfig:
    default = GaugeConfig(name="", protocol="")
    name = t.req_str("name")
    protocol = t.req_str("protocol")
    if protocol not in _GAUGE_PROTOCOLS:
        known = ", ".join(sorted(_GAUGE_PROTOCOLS))
        raise t.fail("protocol", f"unknown gauge protocol {_show(protocol)} (known: {known})")
    for other, keys in _GAUGE_OWN_KEYS.items():
        for key in keys:
            if other != protocol and key in t.data:
                raise t.fail(key, f"is only used with protocol {_show(other)}")
    port = t.req_str("port") if "port" in t.data else None
    host = t.req_str("host") if "host" in t.data else None
    if port is not None and host is not None:
        raise t.fail("host", "give either port (a serial line) or host (TCP), not both")
    if port is None and host is None:
        raise t.fail("port", "missing: give port (a serial device) or host (a TCP address)")
    tcp_port: int | None = None
    if host is not None:
        if any(c.isspace() for c in host) or "/" in host:
            raise t.fail("host", f"{_show(host)} is not a host name or address (no scheme, path)")
        for key in _GAUGE_SERIAL_KEYS:
            if key in t.data:
                raise t.fail(key, "is only used with a serial port, not with host")
        tcp_port = t.opt_int("tcp_port", _GAUGE_TCP_PORTS[protocol], lo=1, hi=65535)
    elif "tcp_port" in t.data:
        raise t.fail("tcp_port", "is only used with host (a gauge over TCP)")
    security_code = t.opt_str("security_code", default.security_code)
    if security_code and not _SECURITY_CODE.fullmatch(security_code):
        raise t.fail(
            "security_code",
            "must be the console's 6-character security code (letters, digits, punctuation, no "
            "spaces); leave it out when the console's security is off",
        )
    etx = t.opt_int("etx", default.etx, lo=0, hi=0x7F)
    if etx in _ETX_REFUSED:
        raise t.fail("etx", f"{_hex(etx)} cannot end a reply: it is {_ETX_REFUSED[etx]}")
    if 0x20 <= etx < 0x7F:
        raise t.fail("etx", f"{_hex(etx)} is a printable character and could occur in a reply")
    register_map = t.opt_file("register_map")
    if protocol == "modbus_probe" and register_map is None:
        raise t.fail(
            "register_map",
            "missing: a Modbus probe line needs the register map of its probes (a TOML file, "
            "relative to this file)",
        )
    return GaugeConfig(
        name=name,
        protocol=protocol,
        port=port,
        host=host,
        tcp_port=tcp_port,
        baud=t.opt_int("baud", default.baud, choices=_GAUGE_BAUDS),
        parity=t.choice("parity", default.parity, ("odd", "even", "none")),
        bytesize=t.opt_int("bytesize", default.bytesize, choices=(7, 8)),
        stopbits=t.opt_int("stopbits", default.stopbits, choices=(1, 2)),
        reply_timeout_ms=t.opt_int(
            "reply_timeout_ms", _GAUGE_REPLY_TIMEOUTS[protocol], lo=50, hi=60000
        ),
        poll_interval_s=t.opt_number("poll_interval_s", default.poll_interval_s, lo=0.5, hi=3600),
        offline_after=t.opt_int("offline_after", default.offline_after, lo=1, hi=20),
        security_code=security_code,
        terminator=t.choice("terminator", default.terminator, tuple(_TERMINATORS)),
        etx=etx,
        units=cast(GaugeUnits, t.choice("units", default.units, _GAUGE_UNITS)),
        inventory_format=cast(
            InventoryFormat,
            t.choice("inventory_format", default.inventory_format, _INVENTORY_FORMATS),
        ),
        register_map=register_map,
    )


_TANK_KEYS: Final = (
    "number",
    "name",
    "grade",
    "capacity_l",
    "safe_fill_pct",
    "height_mm",
    "density_15",
    "chart",
    "chart_file",
    "gauge",
    "gauge_tank",
    "device_id",
    "low_product_l",
    "high_water_mm",
    "overfill_pct",
    "sudden_loss_l",
    "hysteresis_pct",
    "delivery_min_l",
    "delivery_settle_s",
    "reconciliation_limit_l",
    "inventory_threshold_l",
    "inventory_interval_s",
)
_DENSITY_15: Final = (Decimal(653), Decimal(1075))  # the range of table 54B, kg/m³
_DEFAULT_LOW_PRODUCT_SHARE: Final = Decimal("0.10")


def _read_tanks(
    root: _Table, grades: Sequence[GradeConfig], gauges: Sequence[GaugeConfig]
) -> tuple[TankConfig, ...]:
    grades_by_id = {g.id: g for g in grades}
    gauges_by_name = {g.name: g for g in gauges}
    tanks: list[TankConfig] = []
    for t in root.tables("tanks", _TANK_KEYS, "number"):
        tank = _read_tank(t, grades_by_id, gauges_by_name)
        for j, other in enumerate(tanks):
            if other.number == tank.number:
                raise t.fail(
                    "number",
                    f"duplicate tank number {tank.number} (also in the {ordinal(j + 1)} [[tanks]])",
                )
            if (other.gauge, other.device_id, other.gauge_tank) == (
                tank.gauge,
                tank.device_id,
                tank.gauge_tank,
            ):
                raise t.fail(*_same_probe(tank, other))
        tanks.append(tank)
    return tuple(tanks)


def _same_probe(tank: TankConfig, other: TankConfig) -> tuple[str, str]:
    """Key and message for two tanks read by the same gauge input."""
    gauge = _show(tank.gauge)
    if tank.device_id is None:
        where, key = f"tank {tank.gauge_tank}", "gauge_tank"
    elif tank.gauge_tank == 1:
        where, key = f"device {tank.device_id}", "device_id"
    else:
        where, key = f"device {tank.device_id} tank {tank.gauge_tank}", "gauge_tank"
    return key, f"gauge {gauge} {where} already reads tank {other.number}"


def _read_tank(
    t: _Table, grades: Mapping[str, GradeConfig], gauges: Mapping[str, GaugeConfig]
) -> TankConfig:
    default = TankConfig(
        number=0,
        grade="",
        capacity_l=Decimal(1),
        height_mm=Decimal(1),
        density_15=Decimal(745),
        gauge="",
    )
    number = t.req_int("number", lo=1, hi=99)
    grade = t.req_str("grade")
    if grade not in grades:
        raise t.fail(
            "grade",
            f"grade {_show(grade)} is not defined in [[grades]] (defined: {_listing(grades)})",
        )
    gauge_name = t.req_str("gauge")
    gauge = gauges.get(gauge_name)
    if gauge is None:
        raise t.fail("gauge", f"unknown gauge {_show(gauge_name)} (defined: {_listing(gauges)})")
    device_id: int | None = None
    if gauge.protocol == "veeder_root":
        if "device_id" in t.data:
            raise t.fail(
                "device_id",
                "is only used on a modbus_probe gauge; a Veeder-Root console numbers its tanks "
                "with gauge_tank",
            )
        gauge_tank = t.req_int("gauge_tank", lo=1, hi=99)
    else:
        device_id = t.req_int("device_id", lo=1, hi=247)
        gauge_tank = t.opt_int("gauge_tank", default.gauge_tank, lo=1, hi=99)
    capacity = _positive(t, "capacity_l", None)
    height = _positive(t, "height_mm", None)
    density = _density(t)
    safe_fill = _percentage(t, "safe_fill_pct", default.safe_fill_pct, lo=50)
    chart, chart_file = _read_chart(t, gauge, capacity, height, safe_fill)
    low_default = (capacity * _DEFAULT_LOW_PRODUCT_SHARE).quantize(Decimal("0.01"))
    low = t.opt_decimal("low_product_l", low_default, max_places=_MAX_DECIMALS)
    if not 0 <= low < capacity:
        raise t.fail(
            "low_product_l",
            f"{_show_decimal(low)} must be at least 0 and less than capacity_l "
            f"{_show_decimal(capacity)}",
        )
    high_water = t.opt_decimal("high_water_mm", default.high_water_mm, max_places=_MAX_DECIMALS)
    if not 0 <= high_water < height:
        raise t.fail(
            "high_water_mm",
            f"{_show_decimal(high_water)} must be at least 0 and less than height_mm "
            f"{_show_decimal(height)}",
        )
    delivery_min = _positive(t, "delivery_min_l", default.delivery_min_l)
    if delivery_min >= capacity:
        raise t.fail(
            "delivery_min_l",
            f"{_show_decimal(delivery_min)} must be less than capacity_l {_show_decimal(capacity)}",
        )
    allowance = t.opt_decimal(
        "reconciliation_limit_l", default.reconciliation_limit_l, max_places=_MAX_DECIMALS
    )
    if allowance < 0:
        raise t.fail(
            "reconciliation_limit_l", f"must be at least 0, got {_show_decimal(allowance)}"
        )
    return TankConfig(
        number=number,
        grade=grade,
        capacity_l=capacity,
        height_mm=height,
        density_15=density,
        gauge=gauge_name,
        gauge_tank=gauge_tank,
        device_id=device_id,
        name=t.opt_str("name", default.name),
        safe_fill_pct=safe_fill,
        chart=chart,
        chart_file=chart_file,
        low_product_l=low,
        high_water_mm=high_water,
        overfill_pct=_percentage(t, "overfill_pct", default.overfill_pct, lo=50),
        sudden_loss_l=_positive(t, "sudden_loss_l", default.sudden_loss_l),
        hysteresis_pct=_percentage(t, "hysteresis_pct", default.hysteresis_pct, lo=0, hi=50),
        delivery_min_l=delivery_min,
        delivery_settle_s=t.opt_int("delivery_settle_s", default.delivery_settle_s, lo=10, hi=3600),
        reconciliation_limit_l=allowance,
        inventory_threshold_l=_positive(t, "inventory_threshold_l", default.inventory_threshold_l),
        inventory_interval_s=t.opt_int(
            "inventory_interval_s", default.inventory_interval_s, lo=10, hi=86400
        ),
    )


def _positive(t: _Table, key: str, default: Decimal | None) -> Decimal:
    """A volume or length greater than 0; required when there is no default."""
    if default is None:
        value = t.req_decimal(key, max_places=_MAX_DECIMALS)
    else:
        value = t.opt_decimal(key, default, max_places=_MAX_DECIMALS)
    if value <= 0:
        raise t.fail(key, f"must be greater than 0, got {_show_decimal(value)}")
    return value


def _percentage(t: _Table, key: str, default: Decimal, *, lo: int, hi: int = 100) -> Decimal:
    value = t.opt_decimal(key, default, max_places=_MAX_DECIMALS)
    if not lo <= value <= hi:
        raise t.fail(key, f"{_show_decimal(value)} is out of range ({lo}..{hi} %)")
    return value


def _density(t: _Table) -> Decimal:
    if "density_15" not in t.data:
        raise t.fail(
            "density_15",
            "missing required key: the product's density at 15 °C in kg/m³, from its delivery "
            "note (about 720..775 for gasoline, 820..850 for diesel); the temperature "
            "compensation of every volume depends on it",
        )
    density = t.req_decimal("density_15", max_places=_MAX_DECIMALS)
    low, high = _DENSITY_15
    if not low <= density <= high:
        raise t.fail(
            "density_15",
            f"{_show_decimal(density)} kg/m³ is outside table 54B ({low}..{high} kg/m³ at "
            "15 °C); is it in kg/m³ (745, not 0.745)?",
        )
    return density


def _read_chart(
    t: _Table, gauge: GaugeConfig, capacity: Decimal, height: Decimal, safe_fill_pct: Decimal
) -> tuple[TankChart | None, Path | None]:
    path = t.opt_file("chart_file")
    if "chart" in t.data and path is not None:
        raise t.fail("chart_file", "give either chart or chart_file, not both")
    if "chart" in t.data:
        key, chart = "chart", _inline_chart(t)
    elif path is not None:
        key, chart = "chart_file", _chart_file(t, path)
    elif gauge.protocol == "modbus_probe":
        raise t.fail(
            "chart",
            f"missing: tank on Modbus probe gauge {_show(gauge.name)} needs its tank chart "
            "(chart or chart_file): a probe measures heights, not volumes",
        )
    else:
        return None, None
    if chart.max_height > height:
        raise t.fail(
            key, f"the chart reaches {chart.max_height} mm, above height_mm {_show_decimal(height)}"
        )
    if chart.max_volume > capacity:
        raise t.fail(
            key,
            f"the chart holds {chart.max_volume} L at its top, more than capacity_l "
            f"{_show_decimal(capacity)}",
        )
    safe_fill = (capacity * safe_fill_pct / 100).quantize(Decimal("0.01"))
    if chart.max_volume < safe_fill:
        raise t.fail(
            key,
            f"the chart ends at {chart.max_volume} L, below the safe fill volume {safe_fill} L "
            f"({safe_fill_pct} % of capacity_l): a fuller tank could not be measured",
        )
    return chart, path


def _inline_chart(t: _Table) -> TankChart:
    value = t.data["chart"]
    if not isinstance(value, list):
        raise t.fail(
            "chart",
            "expected an array of [height_mm, volume_l] pairs, e.g. chart = [[0, 0], "
            f"[100, 1200]], got {_show(value)}",
        )
    points: list[tuple[Decimal, Decimal]] = []
    for i, pair in enumerate(value):
        key = f"chart[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            shown = f"an array of {len(pair)}" if isinstance(pair, list) else _show(pair)
            raise t.fail(key, f"expected a [height_mm, volume_l] pair, got {shown}")
        points.append((_chart_number(t, key, pair[0]), _chart_number(t, key, pair[1])))
    try:
        return TankChart(tuple(points))
    except InvalidChart as exc:
        raise t.fail("chart" if exc.index is None else f"chart[{exc.index}]", str(exc)) from None


def _chart_number(t: _Table, key: str, value: object) -> Decimal:
    if isinstance(value, float):
        raise t.fail(
            key,
            f"got the TOML float {value!r}; floats are not exact, so write chart heights and "
            f'volumes as integers or strings ("{value!r}")',
        )
    return t._decimal(key, value, _MAX_DECIMALS, None)


def _chart_file(t: _Table, path: Path) -> TankChart:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise t.fail("chart_file", f"cannot read {path}: {reason or exc}") from None
    try:
        return TankChart.parse_csv(text)
    except InvalidChart as exc:
        raise t.fail("chart_file", f"{path}: {exc}") from None


# --------------------------------------------------------------------------- field readers

_T = TypeVar("_T")


class _Table:
    """One TOML table under validation: knows its key path, refuses unknown keys, and reads
    typed fields, raising a `ConfigError` that names the file and the key."""

    def __init__(
        self,
        data: Mapping[str, Any],
        path: str,
        source: Path,
        allowed: Collection[str] | None,
    ) -> None:
        self.data = data
        self.path = path
        self.source = source
        if allowed is not None:
            for key in data:  # file order, so the first typo in the file is reported
                if key not in allowed:
                    raise self.fail(None, f"unknown key {_show(key)}{_hint(key, allowed)}")

    def key_path(self, key: str | None) -> str:
        if key is None:
            return self.path
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str | None, message: str) -> ConfigError:
        return _error(self.source, self.key_path(key), message)

    # -- nested tables

    def table(self, key: str, allowed: Collection[str] | None, *, required: bool = False) -> _Table:
        """A sub-table; a missing optional one reads as empty. `allowed=None` means its keys
        are data (e.g. nozzle numbers) rather than names."""
        value = self._get(key, required=required)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a table, got {_show(value)}")
        return _Table(value, self.key_path(key), self.source, allowed)

    def tables(self, key: str, allowed: Collection[str], ident: str) -> list[_Table]:
        """An array of tables (``[[key]]``); missing reads as empty. Each is named in messages
        by its `ident` key (`entry_path`)."""
        value = self._get(key, required=False)
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise self.fail(key, f"expected an array of tables ([[{key}]]), got {_show(value)}")
        result = []
        for i, item in enumerate(value):
            path = entry_path(self.key_path(key), value, i, ident)
            if not isinstance(item, Mapping):
                raise _error(self.source, path, f"expected a table, got {_show(item)}")
            result.append(_Table(item, path, self.source, allowed))
        return result

    # -- strings

    def req_str(self, key: str) -> str:
        value = self.as_str(key, self._get(key, required=True))
        if not value.strip():
            raise self.fail(key, "must not be empty")
        return value

    def opt_str(self, key: str, default: str) -> str:
        value = self._get(key, required=False)
        return default if value is None else self.as_str(key, value)

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self.opt_str(key, default)
        if value not in choices:
            options = ", ".join(_show(c) for c in choices)
            raise self.fail(key, f"expected one of {options}, got {_show(value)}")
        return value

    def as_str(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {_show(value)}")
        return value

    # -- booleans

    def opt_bool(self, key: str, default: bool) -> bool:
        value = self._get(key, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            hint = ""
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                hint = " (write it without quotes)"
            raise self.fail(key, f"expected true or false, got {_show(value)}{hint}")
        return value

    # -- files

    def opt_file(self, key: str) -> Path | None:
        """An existing file; a relative path is resolved against the config file's directory."""
        value = self._get(key, required=False)
        if value is None:
            return None
        text = self.as_str(key, value)
        if not text.strip():
            raise self.fail(key, "must not be empty")
        path = Path(text)
        if not path.is_absolute():
            path = (self.source.parent / path).resolve()
        if not path.is_file():
            state = "is not a file" if path.exists() else "not found"
            raise self.fail(key, f"{path}: {state}")
        return path

    # -- integers

    def req_int(self, key: str, *, lo: int | None = None, hi: int | None = None) -> int:
        return self._int(key, self._get(key, required=True), lo, hi, None)

    def opt_int(
        self,
        key: str,
        default: int,
        *,
        lo: int | None = None,
        hi: int | None = None,
        choices: Sequence[int] | None = None,
    ) -> int:
        value = self._get(key, required=False)
        return default if value is None else self._int(key, value, lo, hi, choices)

    def _int(
        self,
        key: str,
        value: object,
        lo: int | None,
        hi: int | None,
        choices: Sequence[int] | None,
    ) -> int:
        # bool is a subclass of int in Python, but `true` is never a number in a config.
        if isinstance(value, bool) or not isinstance(value, int):
            hint = ""
            if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
                hint = " (write it without quotes)"
            raise self.fail(key, f"expected an integer, got {_show(value)}{hint}")
        if choices is not None and value not in choices:
            options = ", ".join(str(c) for c in choices)
            raise self.fail(key, f"expected one of {options}, got {value}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.fail(key, f"{value} is out of range ({_range(lo, hi)})")
        return value

    # -- real numbers (durations and the like, never money)

    def opt_number(self, key: str, default: float, *, lo: float, hi: float) -> float:
        value = self._get(key, required=False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"expected a number, got {_show(value)}")
        if not lo <= value <= hi:  # also refuses nan and inf
            raise self.fail(key, f"{value} is out of range ({_range(lo, hi)})")
        return float(value)

    # -- decimals (money, volumes)

    def req_decimal(self, key: str, *, max_places: int, limit_name: str | None = None) -> Decimal:
        return self._decimal(key, self._get(key, required=True), max_places, limit_name)

    def opt_decimal(
        self, key: str, default: _T, *, max_places: int, limit_name: str | None = None
    ) -> Decimal | _T:
        value = self._get(key, required=False)
        return default if value is None else self._decimal(key, value, max_places, limit_name)

    def _decimal(self, key: str, value: object, max_places: int, limit_name: str | None) -> Decimal:
        if isinstance(value, float):
            bare_key = key.rsplit(".", 1)[-1]
            raise self.fail(
                key,
                f"got the TOML float {value!r}; floats are binary and not exact, so money and "
                f'volumes are written as strings: {bare_key} = "{value!r}"',
            )
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self.fail(key, f'expected a decimal string like "7.89", got {_show(value)}')
        if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
            raise self.fail(key, f'expected a decimal number like "7.89", got {_show(value)}')
        number = Decimal(value)
        places = _places(number)
        if places > max_places:
            by = f" by {limit_name}" if limit_name else ""
            raise self.fail(
                key,
                f"{_show(value)} has {places} decimal places, at most {max_places} allowed{by}",
            )
        return number

    def _get(self, key: str, *, required: bool) -> Any:
        # TOML has no null, so None can only mean "absent".
        if key in self.data:
            return self.data[key]
        if required:
            raise self.fail(key, "missing required key")
        return None


def entry_path(prefix: str, items: Sequence[object], index: int, ident: str) -> str:
    """The key path of one entry of an array of tables, named as a technician knows it: by
    its `ident` key (``pumps[number=2]``, ``lines[name="north"]``), or where that is missing,
    not a plain value or shared with another entry, by its place in the file
    (``pumps[2nd]``), never by a bare 0-based index."""
    item = items[index]
    if isinstance(item, Mapping):
        value = item.get(ident)
        plain = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and value.strip() != ""
        )
        if plain:
            same = [
                other
                for other in items
                if isinstance(other, Mapping)
                and type(other.get(ident)) is type(value)
                and other.get(ident) == value
            ]
            if len(same) == 1:
                return f"{prefix}[{ident}={_show(value)}]"
    return f"{prefix}[{ordinal(index + 1)}]"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th … 11th, 12th, 13th … 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _error(source: Path, where: str, message: str) -> ConfigError:
    """The one message shape: "<file>: <key path>: <what is wrong>"."""
    return ConfigError(f"{source}: {where}: {message}" if where else f"{source}: {message}")


def _show(value: object) -> str:
    """A value as the technician wrote it in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return f"{value} (a {type(value).__name__})"  # dates and times


def _show_decimal(value: Decimal) -> str:
    return _show(str(value))


def _hex(value: int) -> str:
    return f"0x{value:02X}" if value >= 0 else str(value)


def _range(lo: float | None, hi: float | None) -> str:
    if lo is None:
        return f"at most {hi}"
    if hi is None:
        return f"at least {lo}"
    return f"{lo}..{hi}"


def _places(value: Decimal) -> int:
    """Significant decimal places: "7.890" has 2, "100" has 0."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _listing(names: Collection[str]) -> str:
    return ", ".join(_show(n) for n in names) or "none"


def _hint(key: str, allowed: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {_show(close[0])}?)"
    return f" (allowed: {', '.join(allowed)})"
