"""Tests for the station configuration loader: shipped files load, every mistake names its key."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from edgectl.config import (
    CloudConfig,
    CommandKey,
    Config,
    GaugeConfig,
    GradeConfig,
    HealthConfig,
    LimitsConfig,
    LineConfig,
    LoggingConfig,
    PumpConfig,
    TankConfig,
    load_config,
    parse_config,
)
from edgectl.errors import ConfigError
from edgectl.forecourt.tanks import TankChart
from tests.configkit import refusal, replaced, write

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"

# A small valid station; each error test changes one fragment of it.
BASE = """\
[station]
id = "TEST-1"
name = "Test station"

[store]
path = "var/edgectl.db"

[authorization]
mode = "cloud"

[[grades]]
id = "92"
name = "92# Gasoline"
unit_price = "7.45"

[[grades]]
id = "95"
name = "95# Gasoline"
unit_price = "7.93"

[[lines]]
name = "north"
port = "/dev/ttyUSB0"
protocol = "wayne_dart"
baud = 9600
parity = "odd"
retries = 3

[[lines]]
name = "south"
port = "/dev/ttyUSB1"
protocol = "wayne_dart"

[[pumps]]
number = 1
line = "north"
address = 0x50
nozzles = { 1 = "92", 2 = "95" }

[[pumps]]
number = 2
line = "north"
address = 0x51
nozzles = { 1 = "95" }

[[pumps]]
number = 3
line = "south"
address = 0x52
nozzles = { 1 = "92" }
"""


def variant(*replacements: tuple[str, str]) -> str:
    return replaced(BASE, *replacements)


def load_error(tmp_path: Path, text: str) -> str:
    return str(refusal(tmp_path, text))


# ------------------------------------------------------------------ the shipped files


def test_example_config_loads() -> None:
    config = load_config(CONFIG_DIR / "station.example.toml")
    assert config.station.currency == "CNY"
    assert [line.port for line in config.lines] == ["/dev/ttyUSB0", "/dev/ttyUSB1"]
    assert len(config.pumps) == 6
    assert {g.id for g in config.grades} == {"92", "95", "98", "0#"}
    assert all(g.unit_price > 0 for g in config.grades)
    assert config.cloud is not None
    assert config.cloud.client_id == "edgectl-SH-PD-0017"
    assert [key.id for key in config.cloud.command_keys] == ["cloud-2026a"]
    assert config.health == HealthConfig()  # the example shows the defaults it says
    assert config.metrics.textfile == Path("/var/lib/prometheus/node-exporter/edgectl.prom")
    assert config.metrics.interval_s == 15


def test_demo_config_loads() -> None:
    config = load_config(CONFIG_DIR / "demo.toml")
    assert config.station.id == "DEMO-001"
    assert config.metrics.textfile == config.store.path.with_name("edgectl.prom")
    assert [(line.name, line.protocol, line.port) for line in config.lines] == [
        ("north", "wayne_dart", "/tmp/edgectl-demo/north"),
        ("south", "wayne_dart", "/tmp/edgectl-demo/south"),
        ("east", "ifsf", None),  # a mixed station: an IFSF dispenser on TCP/IP
    ]
    assert [(p.number, p.line, config.address_of(p.number)) for p in config.pumps] == [
        (1, "north", "0x50"),
        (2, "north", "0x51"),
        (3, "south", "0x50"),
        (4, "south", "0x51"),
        (5, "east", "1.1/FP1"),
        (6, "east", "1.1/FP2"),
    ]
    assert all(2 <= len(p.nozzles) <= 3 for p in config.pumps)
    assert config.authorization.mode == "auto"
    assert config.logging.format == "console"
    assert config.store.path == (CONFIG_DIR.parent / "var" / "demo" / "edgectl.db").resolve()


# ------------------------------------------------------------------ a valid file, read right


def test_base_config_values_and_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.source == tmp_path / "station.toml"
    assert config.station.currency == "CNY"
    # Keys left out take the models' own defaults.
    assert config.lines[1] == LineConfig(name="south", port="/dev/ttyUSB1", protocol="wayne_dart")
    assert config.limits == LimitsConfig()
    assert config.logging == LoggingConfig()
    assert config.authorization.auto_preset_amount is None
    assert config.authorization.authorize_timeout_s == 120.0
    assert config.grades[0] == GradeConfig(id="92", name="92# Gasoline", unit_price=Decimal("7.45"))
    pump = config.pumps[0]
    assert pump.address == 0x50
    assert dict(pump.nozzles) == {1: "92", 2: "95"}
    assert (pump.volume_decimals, pump.amount_decimals, pump.price_decimals) == (2, 2, 2)


def test_relative_store_path_resolves_against_config_dir(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.store.path == (tmp_path / "var" / "edgectl.db").resolve()


def test_absolute_store_path_is_kept(tmp_path: Path) -> None:
    text = variant(('path = "var/edgectl.db"', 'path = "/srv/edgectl/x.db"'))
    assert load_config(write(tmp_path, text)).store.path == Path("/srv/edgectl/x.db")


def test_same_address_on_different_lines_is_fine(tmp_path: Path) -> None:
    text = variant(('line = "south"\naddress = 0x52', 'line = "south"\naddress = 0x50'))
    config = load_config(write(tmp_path, text))
    assert config.pumps[0].address == config.pumps[2].address == 0x50


def test_auto_mode_presets_max_amount_by_default(tmp_path: Path) -> None:
    text = variant(('mode = "cloud"', 'mode = "auto"'))
    config = load_config(write(tmp_path, text))
    assert config.authorization.auto_preset_amount == LimitsConfig().max_preset_amount


def test_money_accepts_integers_and_pads_price_to_its_decimals(tmp_path: Path) -> None:
    text = variant(
        ('unit_price = "7.45"', "unit_price = 8"),
        ('unit_price = "7.93"', 'unit_price = "7.9"'),
    )
    config = load_config(write(tmp_path, text))
    assert str(config.grades[0].unit_price) == "8.00"
    assert str(config.grades[1].unit_price) == "7.90"


def test_pump_takes_display_decimals_from_its_grades(tmp_path: Path) -> None:
    text = variant(
        ('unit_price = "7.45"', 'unit_price = "7.450"\nprice_decimals = 3\nvolume_decimals = 3'),
        ('unit_price = "7.93"', 'unit_price = "7.930"\nprice_decimals = 3\nvolume_decimals = 3'),
    )
    pump = load_config(write(tmp_path, text)).pumps[0]
    assert (pump.volume_decimals, pump.amount_decimals, pump.price_decimals) == (3, 2, 3)


def test_lookups(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert config.grade("95") is config.grades[1]
    assert config.line("south") is config.lines[1]
    assert config.pump(2) is config.pumps[1]
    assert [p.number for p in config.pumps_on("north")] == [1, 2]
    assert config.pumps_on("east") == ()


@pytest.mark.parametrize(
    ("lookup", "expected"),
    [
        (lambda c: c.grade("98"), 'no grade "98" is configured (defined: "92", "95")'),
        (lambda c: c.line("east"), 'no line "east" is configured (defined: "north", "south")'),
        (lambda c: c.pump(9), "no pump 9 is configured (defined: 1, 2, 3)"),
    ],
)
def test_lookup_of_unconfigured_id_raises_config_error(
    tmp_path: Path, lookup: Callable[[Config], object], expected: str
) -> None:
    config = load_config(write(tmp_path, BASE))
    with pytest.raises(ConfigError) as info:
        lookup(config)
    assert str(info.value) == f"{config.source}: {expected}"


def test_models_are_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.station.id = "X"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pumps[0].address = 0x60  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pumps = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.pumps[0].nozzles[3] = "92"  # type: ignore[index]
    assert isinstance(config.pumps, tuple)
    hash(config.pumps[0])  # usable as a dict key despite the nozzle mapping


def test_pump_keeps_its_own_copy_of_nozzles() -> None:
    nozzles = {2: "95", 1: "92"}
    pump = PumpConfig(number=1, line="north", address=0x50, nozzles=nozzles)
    nozzles[3] = "98"
    assert dict(pump.nozzles) == {1: "92", 2: "95"}
    assert list(pump.nozzles) == [1, 2]


def test_parse_config_takes_data_directly() -> None:
    data = {
        "station": {"id": "S"},
        "store": {"path": "/tmp/x.db"},
        "grades": [{"id": "92", "name": "92", "unit_price": "7.45"}],
        "lines": [{"name": "a", "port": "/dev/x", "protocol": "wayne_dart"}],
        "pumps": [{"number": 1, "line": "a", "address": 0x50, "nozzles": {"1": "92"}}],
    }
    config = parse_config(data, source=Path("station.toml"))
    assert isinstance(config, Config)
    data["station"] = {"id": "S", "colour": "red"}
    with pytest.raises(ConfigError, match=r'^station\.toml: station: unknown key "colour"'):
        parse_config(data, source=Path("station.toml"))


# ------------------------------------------------------------------ one message per mistake

# (fragment in BASE, its replacement, "key path: message" expected in the error)
MISTAKES = [
    pytest.param(
        'path = "var/edgectl.db"', "", "store.path: missing required key", id="missing-key"
    ),
    pytest.param('id = "TEST-1"', "", "station.id: missing required key", id="missing-station-id"),
    pytest.param(
        'number = 2\nline = "north"\n',
        'line = "north"\n',
        "pumps[2nd].number: missing required key",
        id="missing-pump-number",
    ),
    pytest.param(
        "baud = 9600",
        'baud = "9600"',
        'lines[name="north"].baud: expected an integer, got "9600"',
        id="int-as-string",
    ),
    pytest.param(
        "retries = 3",
        "retries = true",
        'lines[name="north"].retries: expected an integer, got true',
        id="bool",
    ),
    pytest.param(
        'name = "Test station"',
        "name = 7",
        "station.name: expected a string, got 7",
        id="string-as-int",
    ),
    pytest.param(
        'unit_price = "7.45"',
        "unit_price = 7.45",
        'grades[id="92"].unit_price: got the TOML float 7.45; floats are binary and not exact',
        id="float-money",
    ),
    pytest.param(
        'unit_price = "7.45"',
        'unit_price = "7,45"',
        'grades[id="92"].unit_price: expected a decimal number like "7.89", got "7,45"',
        id="malformed-decimal",
    ),
    pytest.param(
        'unit_price = "7.45"',
        'unit_price = "7.455"',
        'grades[id="92"].unit_price: "7.455" has 3 decimal places, at most 2 allowed by '
        "price_decimals",
        id="price-too-precise",
    ),
    pytest.param(
        'unit_price = "7.45"',
        'unit_price = "0"',
        'grades[id="92"].unit_price: must be greater than 0, got "0"',
        id="price-zero",
    ),
    pytest.param(
        'protocol = "wayne_dart"\nbaud',
        'protocol = "dartt"\nbaud',
        'lines[name="north"].protocol: unknown protocol "dartt" (known: ifsf, wayne_dart)',
        id="unknown-protocol",
    ),
    pytest.param(
        "address = 0x51",
        "address = 0x50",
        'pumps[number=2].address: duplicate address 0x50 on line "north" (pump 1 uses it)',
        id="duplicate-address-on-line",
    ),
    pytest.param(
        "address = 0x52",
        "address = 0x70",
        "pumps[number=3].address: address 0x70 is out of range for wayne_dart (0x50..0x6F)",
        id="address-out-of-range",
    ),
    pytest.param(
        "number = 3",
        "number = 1",
        "pumps[3rd].number: duplicate pump number 1 (also in the 1st [[pumps]])",
        id="duplicate-pump-number",
    ),
    pytest.param(
        "number = 3",
        "number = 100",
        "pumps[number=100].number: 100 is out of range (1..99)",
        id="pump-100",
    ),
    pytest.param(
        'nozzles = { 1 = "92", 2 = "95" }',
        'nozzles = { 1 = "92", 2 = "98" }',
        'pumps[number=1].nozzles.2: grade "98" is not defined in [[grades]]',
        id="nozzle-unknown-grade",
    ),
    pytest.param(
        'nozzles = { 1 = "95" }',
        'nozzles = { 16 = "95" }',
        "pumps[number=2].nozzles.16: nozzle number 16 is out of range (1..15)",
        id="nozzle-out-of-range",
    ),
    pytest.param(
        'nozzles = { 1 = "95" }',
        'nozzles = { a = "95" }',
        'pumps[number=2].nozzles.a: nozzle numbers are integers 1..15, got "a"',
        id="nozzle-not-a-number",
    ),
    pytest.param(
        'nozzles = { 1 = "95" }',
        "nozzles = {}",
        "pumps[number=2].nozzles: at least one nozzle is required",
        id="no-nozzles",
    ),
    pytest.param(
        "address = 0x51",
        "adress = 0x51",
        'pumps[number=2]: unknown key "adress" (did you mean "address"?)',
        id="unknown-key",
    ),
    pytest.param(
        "[authorization]",
        "[authorisation]",
        'unknown key "authorisation" (did you mean "authorization"?)',
        id="unknown-section",
    ),
    pytest.param(
        'parity = "odd"',
        'parity = "Odd"',
        'lines[name="north"].parity: expected one of "odd", "even", "none", got "Odd"',
        id="bad-enum",
    ),
    pytest.param(
        'mode = "cloud"',
        'mode = "manual"',
        'authorization.mode: expected one of "cloud", "auto", "attendant", got "manual"',
        id="bad-mode",
    ),
    pytest.param(
        "baud = 9600",
        "baud = 9601",
        'lines[name="north"].baud: expected one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, '
        "115200, "
        "got 9601",
        id="bad-baud",
    ),
    pytest.param(
        "retries = 3",
        "retries = 11",
        'lines[name="north"].retries: 11 is out of range (0..10)',
        id="range",
    ),
    pytest.param(
        'name = "Test station"',
        'name = "Test station"\ncurrency = "cny"',
        'station.currency: "cny" is not an ISO-4217 code',
        id="bad-currency",
    ),
    pytest.param(
        'id = "TEST-1"',
        'id = "TEST/1"',
        'station.id: "TEST/1" is not a valid station id',
        id="bad-station-id",
    ),
    pytest.param(
        'unit_price = "7.93"',
        'unit_price = "7.93"\nvolume_decimals = 3',
        "pumps[number=1].nozzles: pump 1 mixes grades with different volume_decimals "
        '("92" has 2, "95" has 3)',
        id="inconsistent-decimals",
    ),
    pytest.param(
        'line = "south"',
        'line = "east"',
        'pumps[number=3].line: unknown line "east" (defined: "north", "south")',
        id="unknown-line",
    ),
    pytest.param(
        'name = "south"',
        'name = "north"',
        'lines[2nd].name: duplicate line name "north" (also in the 1st [[lines]])',
        id="duplicate-line-name",
    ),
    pytest.param(
        'port = "/dev/ttyUSB1"',
        'port = "/dev/ttyUSB0"',
        'lines[name="south"].port: port "/dev/ttyUSB0" is already used by line "north"',
        id="duplicate-port",
    ),
    pytest.param(
        'id = "95"',
        'id = "92"',
        'grades[2nd].id: duplicate grade id "92" (also in the 1st [[grades]])',
        id="duplicate-grade",
    ),
    pytest.param(
        'mode = "cloud"',
        'mode = "auto"\nauto_preset_amount = "5000"',
        'authorization.auto_preset_amount: "5000" must be between limits.min_preset_amount '
        '"1.00" and limits.max_preset_amount "2000.00"',
        id="auto-preset-above-max",
    ),
    pytest.param(
        'mode = "cloud"',
        'mode = "cloud"\n[limits]\nmin_preset_amount = "3000"',
        'limits.min_preset_amount: "3000" is more than max_preset_amount "2000.00"',
        id="min-above-max",
    ),
    pytest.param(
        'mode = "cloud"',
        'mode = "cloud"\nauthorize_timeout_s = 0.5',
        "authorization.authorize_timeout_s: 0.5 is out of range (1..3600)",
        id="timeout-range",
    ),
    pytest.param(
        "[store]",
        '[logging]\nformat = "text"\n[store]',
        'logging.format: expected one of "json", "console", got "text"',
        id="bad-log-format",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), MISTAKES)
def test_mistake_names_file_and_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    message = load_error(tmp_path, variant((old, new)))
    assert message.startswith(f"{tmp_path / 'station.toml'}: "), message
    assert expected in message, message


def test_no_pumps_is_an_error(tmp_path: Path) -> None:
    text = BASE[: BASE.index("[[pumps]]")]
    assert "pumps: at least one [[pumps]] entry is required" in load_error(tmp_path, text)


def test_no_grades_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"grades: at least one \[\[grades\]\] entry"):
        parse_config({"station": {"id": "S"}, "store": {"path": "x.db"}}, source=Path("s.toml"))


def test_toml_syntax_error_gives_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, variant(("retries = 3", "retries = ")))
    line = BASE.splitlines().index("retries = 3") + 1
    assert "invalid TOML" in message
    assert f"at line {line}," in message


def test_section_of_wrong_shape() -> None:
    data = {"station": {"id": "S"}, "store": {"path": "x.db"}, "grades": {"id": "92"}}
    with pytest.raises(
        ConfigError, match=r"grades: expected an array of tables \(\[\[grades\]\]\)"
    ):
        parse_config(data, source=Path("s.toml"))
    with pytest.raises(ConfigError, match=r"s\.toml: station: expected a table, got \"S\""):
        parse_config({"station": "S"}, source=Path("s.toml"))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_config(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_bytes(b'[station]\nid = "\xff"\n')
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(path)


# ------------------------------------------------------------------ [cloud]

CLOUD_KEY = "Zzdxg8iCoKZFERZbvA8BHfQ2FlkrFWX8sTvKxaUN1NE="  # any valid Ed25519 public key

CLOUD = f"""
[cloud]
host = "mqtt.example.com"

[[cloud.command_keys]]
id = "cloud-2026a"
public_key = "{CLOUD_KEY}"
"""


def cloud_variant(*replacements: tuple[str, str]) -> str:
    """BASE plus a [cloud] section with fragments replaced (each must occur once)."""
    text = CLOUD
    for old, new in replacements:
        assert text.count(old) == 1, f"fragment {old!r} must occur exactly once in CLOUD"
        text = text.replace(old, new)
    return BASE + text


def test_cloud_section_is_optional(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE)).cloud is None


def test_cloud_defaults(tmp_path: Path) -> None:
    cloud = load_config(write(tmp_path, cloud_variant())).cloud
    assert cloud is not None
    assert cloud == CloudConfig(
        host="mqtt.example.com",
        client_id="edgectl-TEST-1",
        command_keys=(CommandKey("cloud-2026a", base64.b64decode(CLOUD_KEY)),),
    )
    assert (cloud.port, cloud.tls, cloud.topic_prefix) == (8883, True, "edgectl")
    assert (cloud.keepalive_s, cloud.session_expiry_s, cloud.heartbeat_s) == (20, 3600, 10.0)
    assert (cloud.reconnect_min_s, cloud.reconnect_max_s) == (1.0, 60.0)
    assert (cloud.max_inflight, cloud.clock_skew_s, cloud.outbox_max_rows) == (32, 30.0, 100_000)
    assert cloud.username is None and cloud.password is None and cloud.ca_file is None


def test_cloud_without_tls_defaults_to_port_1883(tmp_path: Path) -> None:
    cloud = load_config(write(tmp_path, cloud_variant(("host", "tls = false\nhost")))).cloud
    assert cloud is not None and (cloud.tls, cloud.port) == (False, 1883)


def test_cloud_files_resolve_against_the_config_file(tmp_path: Path) -> None:
    for name in ("certs/ca.pem", "certs/station.crt", "certs/station.key"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "secret").write_text("s3cret\n")
    (tmp_path / "cloud-b.pub").write_text(CLOUD_KEY + "\n")
    text = cloud_variant(
        (
            'host = "mqtt.example.com"',
            'host = "10.0.0.5"\nport = 18883\nca_file = "certs/ca.pem"\n'
            'cert_file = "certs/station.crt"\nkey_file = "certs/station.key"\n'
            'username = "TEST-1"\npassword_file = "secret"\nclient_id = "custom"\n'
            'topic_prefix = "acme/fuel"\nkeepalive_s = 30\nheartbeat_s = 0.5\n'
            "reconnect_min_s = 0.05\nreconnect_max_s = 2\nmax_inflight = 1000",
        ),
        (
            f'public_key = "{CLOUD_KEY}"',
            f'public_key = "{CLOUD_KEY}"\n\n[[cloud.command_keys]]\nid = "cloud-2026b"\n'
            'public_key_file = "cloud-b.pub"',
        ),
    )
    cloud = load_config(write(tmp_path, text)).cloud
    assert cloud is not None
    assert cloud.ca_file == tmp_path / "certs" / "ca.pem"
    assert cloud.cert_file == tmp_path / "certs" / "station.crt"
    assert cloud.key_file == tmp_path / "certs" / "station.key"
    assert (cloud.username, cloud.password) == ("TEST-1", "s3cret")
    assert "s3cret" not in repr(cloud)
    assert (cloud.client_id, cloud.topic_prefix, cloud.port) == ("custom", "acme/fuel", 18883)
    assert (cloud.heartbeat_s, cloud.reconnect_min_s, cloud.max_inflight) == (0.5, 0.05, 1000)
    assert [k.id for k in cloud.command_keys] == ["cloud-2026a", "cloud-2026b"]
    assert cloud.command_keys[1].public_key == base64.b64decode(CLOUD_KEY)


def test_cloud_public_key_file_in_pem(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    pem = Ed25519PublicKey.from_public_bytes(base64.b64decode(CLOUD_KEY)).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "k.pem").write_bytes(pem)
    text = cloud_variant((f'public_key = "{CLOUD_KEY}"', 'public_key_file = "k.pem"'))
    cloud = load_config(write(tmp_path, text)).cloud
    assert cloud is not None
    assert cloud.command_keys[0].public_key == base64.b64decode(CLOUD_KEY)


KEY_B = f'[[cloud.command_keys]]\nid = "cloud-2026a"\npublic_key = "{CLOUD_KEY}"'

CLOUD_MISTAKES = [
    pytest.param('host = "mqtt.example.com"', "", "cloud.host: missing required key", id="no-host"),
    pytest.param(
        'host = "mqtt.example.com"',
        'host = "mqtts://mqtt.example.com"',
        'cloud.host: "mqtts://mqtt.example.com" is not a host name',
        id="host-url",
    ),
    pytest.param(
        KEY_B,
        "",
        "cloud.command_keys: at least one [[cloud.command_keys]] entry is required",
        id="no-keys",
    ),
    pytest.param(
        KEY_B,
        KEY_B + "\n" + KEY_B,
        'cloud.command_keys[2nd].id: duplicate key id "cloud-2026a" (also in the 1st '
        "[[cloud.command_keys]])",
        id="duplicate-key-id",
    ),
    pytest.param(
        'id = "cloud-2026a"',
        'id = "cloud 2026a"',
        'cloud.command_keys[id="cloud 2026a"].id: "cloud 2026a" is not a valid key id',
        id="bad-key-id",
    ),
    pytest.param(
        f'public_key = "{CLOUD_KEY}"',
        'public_key = "bm90IGEga2V5"',
        'cloud.command_keys[id="cloud-2026a"].public_key: "bm90IGEga2V5" is not an Ed25519 public '
        "key: a raw "
        "Ed25519 public key is 32 bytes, this base64 holds 9",
        id="short-key",
    ),
    pytest.param(
        f'public_key = "{CLOUD_KEY}"',
        'public_key = "!!"',
        'cloud.command_keys[id="cloud-2026a"].public_key: "!!" is not an Ed25519 public key: '
        "neither base64",
        id="garbage-key",
    ),
    pytest.param(
        f'public_key = "{CLOUD_KEY}"',
        "",
        'cloud.command_keys[id="cloud-2026a"].public_key: missing: give public_key (base64) or '
        "public_key_file",
        id="no-public-key",
    ),
    pytest.param(
        f'public_key = "{CLOUD_KEY}"',
        f'public_key = "{CLOUD_KEY}"\npublic_key_file = "station.toml"',
        'cloud.command_keys[id="cloud-2026a"].public_key_file: give either public_key or '
        "public_key_file",
        id="both-key-forms",
    ),
    pytest.param(
        f'public_key = "{CLOUD_KEY}"',
        'public_key_file = "keys/nope.pub"',
        'cloud.command_keys[id="cloud-2026a"].public_key_file: ',
        id="key-file-missing",
    ),
    pytest.param(
        'id = "cloud-2026a"',
        'id = "cloud-2026a"\nkey = "x"',
        'cloud.command_keys[id="cloud-2026a"]: unknown key "key"',
        id="unknown-key-in-key",
    ),
    pytest.param(
        "host",
        'hots = "x"\nhost',
        'cloud: unknown key "hots" (did you mean "host"?)',
        id="unknown-key",
    ),
    pytest.param(
        "host",
        'tls = "true"\nhost',
        'cloud.tls: expected true or false, got "true" (write it',
        id="tls-string",
    ),
    pytest.param("host", "port = 0\nhost", "cloud.port: 0 is out of range (1..65535)", id="port"),
    pytest.param(
        "host",
        'topic_prefix = "edgectl/#"\nhost',
        'cloud.topic_prefix: "edgectl/#" contains an MQTT wildcard',
        id="prefix-wildcard",
    ),
    pytest.param(
        "host",
        'topic_prefix = "/edgectl"\nhost',
        'cloud.topic_prefix: "/edgectl" must not start or end with "/"',
        id="prefix-slash",
    ),
    pytest.param(
        "host",
        'topic_prefix = "a//b"\nhost',
        'cloud.topic_prefix: "a//b" has an empty topic level',
        id="prefix-empty-level",
    ),
    pytest.param(
        "host",
        'topic_prefix = "$SYS"\nhost',
        'cloud.topic_prefix: "$SYS" must not start with "$"',
        id="prefix-dollar",
    ),
    pytest.param(
        "host",
        'password = "x"\nhost',
        "cloud.password: a password needs a username",
        id="password-without-user",
    ),
    pytest.param(
        "host",
        'username = "u"\npassword = "x"\npassword_file = "station.toml"\nhost',
        "cloud.password_file: give either password or password_file, not both",
        id="password-twice",
    ),
    pytest.param(
        "host",
        'username = "u"\npassword_file = "nope"\nhost',
        "cloud.password_file: ",
        id="password-file-missing",
    ),
    pytest.param(
        "host",
        'cert_file = "station.toml"\nhost',
        "cloud.key_file: missing: cert_file is given, and a client certificate and its key go "
        "together",
        id="cert-without-key",
    ),
    pytest.param(
        "host",
        'key_file = "station.toml"\nhost',
        "cloud.cert_file: missing: key_file is given",
        id="key-without-cert",
    ),
    pytest.param("host", 'ca_file = "ca.pem"\nhost', "ca.pem: not found", id="ca-file-missing"),
    pytest.param("host", 'ca_file = "."\nhost', ": is not a file", id="ca-file-directory"),
    pytest.param(
        "host",
        'tls = false\nca_file = "station.toml"\nhost',
        "cloud.ca_file: is only used with tls = true",
        id="ca-without-tls",
    ),
    pytest.param(
        "host",
        "max_inflight = 0\nhost",
        "cloud.max_inflight: 0 is out of range (1..1000)",
        id="inflight-0",
    ),
    pytest.param(
        "host",
        "max_inflight = 1001\nhost",
        "cloud.max_inflight: 1001 is out of range (1..1000)",
        id="inflight-1001",
    ),
    pytest.param(
        "host",
        "reconnect_min_s = 5\nreconnect_max_s = 2\nhost",
        "cloud.reconnect_max_s: 2 is less than reconnect_min_s 5",
        id="reconnect-max-below-min",
    ),
    pytest.param(
        "host",
        "keepalive_s = 2\nhost",
        "cloud.keepalive_s: 2 is out of range (5..3600)",
        id="keepalive",
    ),
    pytest.param(
        "host",
        "session_expiry_s = 0\nhost",
        "cloud.session_expiry_s: 0 is out of range (60..4294967295)",
        id="session-expiry-0",
    ),
    pytest.param(
        "host",
        "heartbeat_s = 0\nhost",
        "cloud.heartbeat_s: 0 is out of range (0.1..3600)",
        id="heartbeat-0",
    ),
    pytest.param(
        "host",
        'outbox_max_rows = "1000"\nhost',
        'cloud.outbox_max_rows: expected an integer, got "1000" (write it without quotes)',
        id="outbox-rows-string",
    ),
    pytest.param(
        "host",
        'client_id = " "\nhost',
        "cloud.client_id: must be 1..256 bytes and not blank",
        id="blank-client-id",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), CLOUD_MISTAKES)
def test_cloud_mistake_names_file_and_key(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    message = load_error(tmp_path, cloud_variant((old, new)))
    assert message.startswith(f"{tmp_path / 'station.toml'}: "), message
    assert expected in message, message


def test_cloud_section_of_wrong_shape(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'cloud = "mqtt.example.com"\n' + BASE)
    assert 'cloud: expected a table, got "mqtt.example.com"' in message
    message = load_error(tmp_path, BASE + '\n[cloud]\nhost = "h"\ncommand_keys = "k"\n')
    assert "cloud.command_keys: expected an array of tables ([[command_keys]])" in message


def test_empty_password_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("\n")
    message = load_error(
        tmp_path, cloud_variant(("host", 'username = "u"\npassword_file = "secret"\nhost'))
    )
    assert "cloud.password_file: " in message and "is empty" in message


# ------------------------------------------------------------------ [[gauges]] and [[tanks]]

TANKS = """
[[gauges]]
name = "tls"
protocol = "veeder_root"
port = "/dev/ttyS0"
security_code = "AB12C3"
terminator = "crlf"

[[gauges]]
name = "probes"
protocol = "modbus_probe"
host = "10.0.0.9"
register_map = "maps/probe.toml"

[[tanks]]
number = 1
grade = "92"
capacity_l = 20000
height_mm = 2000
density_15 = "745"
gauge = "tls"
gauge_tank = 1
chart = [[0, 0], [1000, "10000.5"], [2000, 20000]]

[[tanks]]
number = 2
name = "95 east"
grade = "95"
capacity_l = 30000
height_mm = 2500
density_15 = "840.5"
gauge = "tls"
gauge_tank = 2

[[tanks]]
number = 3
grade = "92"
capacity_l = 10000
height_mm = 1500
density_15 = "737"
gauge = "probes"
device_id = 7
chart_file = "tank3.csv"
"""

TANK3_CSV = "height_mm,volume_l\n0,0\n750,5000\n1500,10000\n"


def tanks_variant(tmp_path: Path, *replacements: tuple[str, str]) -> str:
    """BASE plus gauges and tanks with fragments replaced (each must occur once in TANKS), with
    the files they refer to written next to the config."""
    (tmp_path / "maps").mkdir(exist_ok=True)
    (tmp_path / "maps" / "probe.toml").write_text('name = "probe"\n')
    (tmp_path / "tank3.csv").write_text(TANK3_CSV)
    text = TANKS
    for old, new in replacements:
        assert text.count(old) == 1, f"fragment {old!r} must occur exactly once in TANKS"
        text = text.replace(old, new)
    return BASE + text


def test_gauges_and_tanks_are_optional(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    assert (config.gauges, config.tanks) == ((), ())
    assert config.tanks_for_grade("92") == () and config.tanks_on("tls") == ()


def test_gauges_read_right_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, tanks_variant(tmp_path)))
    tls, probes = config.gauges
    assert tls == GaugeConfig(
        name="tls",
        protocol="veeder_root",
        port="/dev/ttyS0",
        security_code="AB12C3",
        terminator="crlf",
    )
    assert (tls.baud, tls.parity, tls.bytesize, tls.stopbits) == (9600, "none", 8, 1)
    assert (tls.reply_timeout_ms, tls.poll_interval_s, tls.offline_after) == (3000, 10.0, 3)
    assert (tls.etx, tls.terminator_bytes, tls.host, tls.tcp_port) == (3, b"\r\n", None, None)
    assert "AB12C3" not in repr(tls)
    assert probes == GaugeConfig(
        name="probes",
        protocol="modbus_probe",
        host="10.0.0.9",
        tcp_port=502,
        reply_timeout_ms=1000,
        register_map=tmp_path / "maps" / "probe.toml",
    )


def test_tanks_read_right_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, tanks_variant(tmp_path)))
    one, two, three = config.tanks
    assert one.chart == TankChart(
        (
            (Decimal(0), Decimal(0)),
            (Decimal(1000), Decimal("10000.5")),
            (Decimal(2000), Decimal(20000)),
        )
    )
    assert (one.gauge, one.gauge_tank, one.device_id, one.chart_file) == ("tls", 1, None, None)
    # Defaults: 95 % safe fill, low product at 10 % of capacity, the domain's alarm limits.
    assert one.safe_fill_pct == 95 and one.low_product_l == 2000 and one.high_water_mm == 50
    assert one.overfill_pct == 90 and one.sudden_loss_l == 200 and one.hysteresis_pct == 5
    assert one.delivery_min_l == 500 and one.delivery_settle_s == 120
    assert one.reconciliation_limit_l == Decimal("492.1")
    # A TLS console reports volumes itself: no chart needed.
    assert two == TankConfig(
        number=2,
        name="95 east",
        grade="95",
        capacity_l=Decimal(30000),
        height_mm=Decimal(2500),
        density_15=Decimal("840.5"),
        gauge="tls",
        gauge_tank=2,
        low_product_l=Decimal("3000.00"),
    )
    assert two.chart is None and two.low_product_l == Decimal("3000.00")
    assert three.chart_file == tmp_path / "tank3.csv"
    assert three.chart is not None and three.chart.max_volume == 10000
    assert (three.device_id, three.gauge_tank) == (7, 1)


def test_tank_settings_and_the_domain_model(tmp_path: Path) -> None:
    text = tanks_variant(
        tmp_path,
        (
            "gauge_tank = 1\n",
            'gauge_tank = 1\nsafe_fill_pct = 90\nlow_product_l = "1500.5"\nhigh_water_mm = 30\n'
            'overfill_pct = "92.5"\nsudden_loss_l = 150\nhysteresis_pct = 2\n'
            "delivery_min_l = 800\ndelivery_settle_s = 300\nreconciliation_limit_l = 400\n",
        ),
    )
    tank = load_config(write(tmp_path, text)).tank(1).model()
    assert (tank.number, tank.grade, tank.capacity_l, tank.safe_fill_l) == (
        1,
        "92",
        Decimal(20000),
        Decimal("18000.00"),
    )
    assert (tank.alarms.low_product_l, tank.alarms.high_water_mm) == (
        Decimal("1500.5"),
        Decimal(30),
    )
    assert (tank.alarms.overfill_pct, tank.alarms.sudden_loss_l) == (Decimal("92.5"), Decimal(150))
    assert tank.alarms.hysteresis_pct == 2
    assert (tank.deliveries.min_rise_l, tank.deliveries.settle_time) == (
        Decimal(800),
        timedelta(minutes=5),
    )
    assert tank.reconciliation_allowance_l == 400


def test_gauge_and_tank_lookups(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, tanks_variant(tmp_path)))
    assert config.gauge("probes") is config.gauges[1]
    assert config.tank(3) is config.tanks[2]
    assert [t.number for t in config.tanks_on("tls")] == [1, 2]
    assert [t.number for t in config.tanks_for_grade("92")] == [1, 3]  # one grade, two tanks
    with pytest.raises(ConfigError, match=r'no gauge "atg" is configured \(defined: "tls", '):
        config.gauge("atg")
    with pytest.raises(ConfigError, match=r"no tank 9 is configured \(defined: 1, 2, 3\)"):
        config.tank(9)
    with pytest.raises(ConfigError, match=r"no tank 1 is configured \(defined: none\)"):
        load_config(write(tmp_path, BASE)).tank(1)


def test_gauge_over_tcp_and_serial_settings(tmp_path: Path) -> None:
    text = tanks_variant(
        tmp_path,
        ('port = "/dev/ttyS0"', 'host = "atg.local"\ntcp_port = 10002\netx = 0x04'),
        ('host = "10.0.0.9"', 'port = "/dev/ttyS1"\nbaud = 19200\nparity = "even"\nbytesize = 7'),
    )
    tls, probes = load_config(write(tmp_path, text)).gauges
    assert (tls.host, tls.tcp_port, tls.port, tls.etx) == ("atg.local", 10002, None, 4)
    assert (probes.port, probes.baud, probes.parity, probes.bytesize) == (
        "/dev/ttyS1",
        19200,
        "even",
        7,
    )
    default_port = tanks_variant(tmp_path, ('port = "/dev/ttyS0"', 'host = "atg.local"'))
    assert load_config(write(tmp_path, default_port)).gauges[0].tcp_port == 10001


def test_gauge_units(tmp_path: Path) -> None:
    tls, probes = load_config(write(tmp_path, tanks_variant(tmp_path))).gauges
    assert tls.units == "metric" and probes.units == "metric"  # the default
    us = tanks_variant(tmp_path, ('terminator = "crlf"', 'terminator = "crlf"\nunits = "us"'))
    assert load_config(write(tmp_path, us)).gauges[0].units == "us"


@pytest.mark.parametrize("fmt", ["computer", "display", "auto"])
def test_gauge_inventory_format(tmp_path: Path, fmt: str) -> None:
    tls, probes = load_config(write(tmp_path, tanks_variant(tmp_path))).gauges
    # auto by default: i201, and the printed I201 report where a console refuses it.
    assert tls.inventory_format == "auto" and probes.inventory_format == "auto"
    text = tanks_variant(
        tmp_path, ('terminator = "crlf"', f'terminator = "crlf"\ninventory_format = "{fmt}"')
    )
    assert load_config(write(tmp_path, text)).gauges[0].inventory_format == fmt


def test_same_gauge_tank_on_two_gauges_is_fine(tmp_path: Path) -> None:
    text = tanks_variant(
        tmp_path,
        ("gauge_tank = 2", "gauge_tank = 2\n"),
        ("device_id = 7", "device_id = 1\ngauge_tank = 2"),
    )
    config = load_config(write(tmp_path, text))
    assert [(t.gauge, t.gauge_tank) for t in config.tanks] == [
        ("tls", 1),
        ("tls", 2),
        ("probes", 2),
    ]


# (fragment in TANKS, its replacement, "key path: message" expected in the error)
TANK_MISTAKES = [
    # [[gauges]]
    pytest.param('name = "tls"', "", "gauges[1st].name: missing required key", id="gauge-no-name"),
    pytest.param(
        'protocol = "veeder_root"',
        'protocol = "tls350"',
        'gauges[name="tls"].protocol: unknown gauge protocol "tls350" (known: modbus_probe, '
        "veeder_root)",
        id="gauge-protocol",
    ),
    pytest.param(
        'port = "/dev/ttyS0"',
        "",
        'gauges[name="tls"].port: missing: give port (a serial device) or host (a TCP address)',
        id="gauge-no-port-no-host",
    ),
    pytest.param(
        'port = "/dev/ttyS0"',
        'port = "/dev/ttyS0"\nhost = "atg"',
        'gauges[name="tls"].host: give either port (a serial line) or host (TCP), not both',
        id="gauge-port-and-host",
    ),
    pytest.param(
        'port = "/dev/ttyS0"',
        'port = ""',
        'gauges[name="tls"].port: must not be empty',
        id="gauge-empty-port",
    ),
    pytest.param(
        'port = "/dev/ttyS0"',
        'port = "/dev/ttyS0"\ntcp_port = 10001',
        'gauges[name="tls"].tcp_port: is only used with host (a gauge over TCP)',
        id="gauge-tcp-port-on-serial",
    ),
    pytest.param(
        'host = "10.0.0.9"',
        'host = "10.0.0.9"\nbaud = 9600',
        'gauges[name="probes"].baud: is only used with a serial port, not with host',
        id="gauge-serial-setting-on-tcp",
    ),
    pytest.param(
        'host = "10.0.0.9"',
        'host = "tcp://10.0.0.9"',
        'gauges[name="probes"].host: "tcp://10.0.0.9" is not a host name or address',
        id="gauge-host-url",
    ),
    pytest.param(
        'host = "10.0.0.9"',
        'host = "10.0.0.9"\ntcp_port = 70000',
        'gauges[name="probes"].tcp_port: 70000 is out of range (1..65535)',
        id="gauge-tcp-port-range",
    ),
    pytest.param(
        'terminator = "crlf"',
        'terminator = "cr"',
        'gauges[name="tls"].terminator: expected one of "none", "lf", "crlf", got "cr"',
        id="gauge-terminator",
    ),
    pytest.param(
        'security_code = "AB12C3"',
        'security_code = "AB12"',
        'gauges[name="tls"].security_code: must be the console\'s 6-character security code',
        id="gauge-security-code-short",
    ),
    pytest.param(
        'security_code = "AB12C3"',
        'security_code = "AB 2C3"',
        'gauges[name="tls"].security_code: must be the console\'s 6-character security code',
        id="gauge-security-code-space",
    ),
    pytest.param(
        'terminator = "crlf"',
        "etx = 0x01",
        'gauges[name="tls"].etx: 0x01 cannot end a reply: it is SOH, which starts every message',
        id="gauge-etx-soh",
    ),
    pytest.param(
        'terminator = "crlf"',
        "etx = 0x41",
        'gauges[name="tls"].etx: 0x41 is a printable character and could occur in a reply',
        id="gauge-etx-printable",
    ),
    pytest.param(
        'terminator = "crlf"',
        "etx = 256",
        'gauges[name="tls"].etx: 256 is out of range (0..127)',
        id="gauge-etx-range",
    ),
    pytest.param(
        'register_map = "maps/probe.toml"',
        'register_map = "maps/probe.toml"\nsecurity_code = "AB12C3"',
        'gauges[name="probes"].security_code: is only used with protocol "veeder_root"',
        id="gauge-tls-key-on-modbus",
    ),
    pytest.param(
        'terminator = "crlf"',
        'terminator = "crlf"\nunits = "imperial"',
        'gauges[name="tls"].units: expected one of "metric", "us", got "imperial"',
        id="gauge-units",
    ),
    pytest.param(
        'terminator = "crlf"',
        'terminator = "crlf"\nunits = "US"',
        'gauges[name="tls"].units: expected one of "metric", "us", got "US"',
        id="gauge-units-case",
    ),
    pytest.param(
        'terminator = "crlf"',
        'terminator = "crlf"\ninventory_format = "printed"',
        'gauges[name="tls"].inventory_format: expected one of "computer", "display", "auto", got '
        '"printed"',
        id="gauge-inventory-format",
    ),
    pytest.param(
        'register_map = "maps/probe.toml"',
        'register_map = "maps/probe.toml"\ninventory_format = "display"',
        'gauges[name="probes"].inventory_format: is only used with protocol "veeder_root"',
        id="gauge-inventory-format-on-modbus",
    ),
    pytest.param(
        'register_map = "maps/probe.toml"',
        'register_map = "maps/probe.toml"\nunits = "us"',
        'gauges[name="probes"].units: is only used with protocol "veeder_root"',
        id="gauge-units-on-modbus",
    ),
    pytest.param(
        'terminator = "crlf"',
        'register_map = "maps/probe.toml"',
        'gauges[name="tls"].register_map: is only used with protocol "modbus_probe"',
        id="gauge-modbus-key-on-tls",
    ),
    pytest.param(
        'register_map = "maps/probe.toml"',
        "",
        'gauges[name="probes"].register_map: missing: a Modbus probe line needs the register map',
        id="gauge-no-register-map",
    ),
    pytest.param(
        'register_map = "maps/probe.toml"',
        'register_map = "maps/nope.toml"',
        'gauges[name="probes"].register_map: ',
        id="gauge-register-map-missing-file",
    ),
    pytest.param(
        'port = "/dev/ttyS0"',
        'port = "/dev/ttyS0"\nbaud = 14400',
        'gauges[name="tls"].baud: expected one of 300, 600, 1200, 2400, 4800, 9600, 19200',
        id="gauge-baud",
    ),
    pytest.param(
        'port = "/dev/ttyS0"',
        'port = "/dev/ttyS0"\npoll_interval_s = 0.1',
        'gauges[name="tls"].poll_interval_s: 0.1 is out of range (0.5..3600)',
        id="gauge-poll-interval",
    ),
    pytest.param(
        'port = "/dev/ttyS0"',
        'port = "/dev/ttyS0"\nreply_timeout_ms = 10',
        'gauges[name="tls"].reply_timeout_ms: 10 is out of range (50..60000)',
        id="gauge-reply-timeout",
    ),
    pytest.param(
        'port = "/dev/ttyS0"',
        'port = "/dev/ttyS0"\noffline_after = 0',
        'gauges[name="tls"].offline_after: 0 is out of range (1..20)',
        id="gauge-offline-after",
    ),
    pytest.param(
        'name = "probes"',
        'name = "tls"',
        'gauges[2nd].name: duplicate gauge name "tls" (also in the 1st [[gauges]])',
        id="gauge-duplicate-name",
    ),
    pytest.param(
        'host = "10.0.0.9"',
        'port = "/dev/ttyS0"',
        'gauges[name="probes"].port: port "/dev/ttyS0" is already used by gauge "tls"',
        id="gauge-duplicate-port",
    ),
    pytest.param(
        'port = "/dev/ttyS0"',
        'port = "/dev/ttyUSB1"',
        'gauges[name="tls"].port: port "/dev/ttyUSB1" is already used by line "south"',
        id="gauge-port-of-a-pump-line",
    ),
    pytest.param(
        'port = "/dev/ttyS0"',
        'host = "10.0.0.9"\ntcp_port = 502',
        'gauges[name="probes"].host: 10.0.0.9:502 is already used by gauge "tls"',
        id="gauge-duplicate-host",
    ),
    pytest.param(
        'port = "/dev/ttyS0"',
        'port = "/dev/ttyS0"\nadress = 1',
        'gauges[name="tls"]: unknown key "adress"',
        id="gauge-unknown-key",
    ),
    # [[tanks]]
    pytest.param(
        "number = 1\n", "", "tanks[1st].number: missing required key", id="tank-no-number"
    ),
    pytest.param(
        "number = 2\n",
        "number = 1\n",
        "tanks[2nd].number: duplicate tank number 1 (also in the 1st [[tanks]])",
        id="tank-duplicate-number",
    ),
    pytest.param(
        "number = 3\n",
        "number = 100\n",
        "tanks[number=100].number: 100 is out of range (1..99)",
        id="tank-number-range",
    ),
    pytest.param(
        'grade = "95"',
        'grade = "98"',
        'tanks[number=2].grade: grade "98" is not defined in [[grades]] (defined: "92", "95")',
        id="tank-unknown-grade",
    ),
    pytest.param(
        'gauge = "tls"\ngauge_tank = 2',
        'gauge = "atg"\ngauge_tank = 2',
        'tanks[number=2].gauge: unknown gauge "atg" (defined: "tls", "probes")',
        id="tank-unknown-gauge",
    ),
    pytest.param(
        "gauge_tank = 2",
        "",
        "tanks[number=2].gauge_tank: missing required key",
        id="tank-tls-without-gauge-tank",
    ),
    pytest.param(
        "gauge_tank = 2",
        "gauge_tank = 100",
        "tanks[number=2].gauge_tank: 100 is out of range (1..99)",
        id="tank-gauge-tank-range",
    ),
    pytest.param(
        "gauge_tank = 2",
        "gauge_tank = 1",
        'tanks[number=2].gauge_tank: gauge "tls" tank 1 already reads tank 1',
        id="tank-duplicate-gauge-tank",
    ),
    pytest.param(
        "gauge_tank = 2",
        "gauge_tank = 2\ndevice_id = 3",
        "tanks[number=2].device_id: is only used on a modbus_probe gauge",
        id="tank-device-id-on-tls",
    ),
    pytest.param(
        "device_id = 7",
        "",
        "tanks[number=3].device_id: missing required key",
        id="tank-no-device-id",
    ),
    pytest.param(
        "device_id = 7",
        "device_id = 248",
        "tanks[number=3].device_id: 248 is out of range (1..247)",
        id="tank-device-id-range",
    ),
    pytest.param(
        "capacity_l = 10000",
        "capacity_l = 0",
        'tanks[number=3].capacity_l: must be greater than 0, got "0"',
        id="tank-capacity-zero",
    ),
    pytest.param(
        "capacity_l = 10000",
        "capacity_l = 10000.0",
        "tanks[number=3].capacity_l: got the TOML float 10000.0; floats are binary and not exact",
        id="tank-capacity-float",
    ),
    pytest.param(
        "capacity_l = 10000",
        "capacity = 10000",
        'tanks[number=3]: unknown key "capacity" (did you mean "capacity_l"?)',
        id="tank-unknown-key",
    ),
    pytest.param(
        'height_mm = 2500\ndensity_15 = "840.5"',
        'density_15 = "840.5"',
        "tanks[number=2].height_mm: missing required key",
        id="tank-no-height",
    ),
    pytest.param(
        'density_15 = "840.5"',
        "",
        "tanks[number=2].density_15: missing required key: the product's density at 15 °C in kg/m³",
        id="tank-no-density",
    ),
    pytest.param(
        'density_15 = "840.5"',
        'density_15 = "0.84"',
        'tanks[number=2].density_15: "0.84" kg/m³ is outside table 54B (653..1075 kg/m³ at 15 °C)',
        id="tank-density-not-kg-m3",
    ),
    pytest.param(
        'density_15 = "840.5"',
        'density_15 = "1100"',
        'tanks[number=2].density_15: "1100" kg/m³ is outside table 54B',
        id="tank-density-range",
    ),
    pytest.param(
        'density_15 = "840.5"',
        'density_15 = "840.5"\nsafe_fill_pct = 101',
        'tanks[number=2].safe_fill_pct: "101" is out of range (50..100 %)',
        id="tank-safe-fill-range",
    ),
    pytest.param(
        'chart = [[0, 0], [1000, "10000.5"], [2000, 20000]]',
        "chart = [[0, 0], [1000, 12000], [2000, 11000]]",
        "tanks[number=1].chart[2]: volume 11000 L at 2000 mm is less than 12000 L at 1000 mm",
        id="chart-volume-falls",
    ),
    pytest.param(
        'chart = [[0, 0], [1000, "10000.5"], [2000, 20000]]',
        "chart = [[0, 0], [1000, 100], [1000, 200]]",
        "tanks[number=1].chart[2]: height 1000 mm is not above the previous point's 1000 mm",
        id="chart-heights-not-rising",
    ),
    pytest.param(
        'chart = [[0, 0], [1000, "10000.5"], [2000, 20000]]',
        "chart = [[0, 0]]",
        "tanks[number=1].chart: a chart needs at least 2 points, got 1",
        id="chart-one-point",
    ),
    pytest.param(
        'chart = [[0, 0], [1000, "10000.5"], [2000, 20000]]',
        "chart = [[0, 0], [1000, 10000, 1], [2000, 20000]]",
        "tanks[number=1].chart[1]: expected a [height_mm, volume_l] pair, got an array of 3",
        id="chart-not-a-pair",
    ),
    pytest.param(
        'chart = [[0, 0], [1000, "10000.5"], [2000, 20000]]',
        "chart = [[0, 0], [1000, 10000.5], [2000, 20000]]",
        "tanks[number=1].chart[1]: got the TOML float 10000.5; floats are not exact",
        id="chart-float",
    ),
    pytest.param(
        'chart = [[0, 0], [1000, "10000.5"], [2000, 20000]]',
        'chart = [[0, 0], [1000, "lots"], [2000, 20000]]',
        'tanks[number=1].chart[1]: expected a decimal number like "7.89", got "lots"',
        id="chart-not-a-number",
    ),
    pytest.param(
        'chart = [[0, 0], [1000, "10000.5"], [2000, 20000]]',
        'chart = "tank1.csv"',
        "tanks[number=1].chart: expected an array of [height_mm, volume_l] pairs",
        id="chart-not-an-array",
    ),
    pytest.param(
        'chart = [[0, 0], [1000, "10000.5"], [2000, 20000]]',
        "chart = [[0, 0], [1000, 10000], [2100, 20000]]",
        'tanks[number=1].chart: the chart reaches 2100 mm, above height_mm "2000"',
        id="chart-above-height",
    ),
    pytest.param(
        'chart = [[0, 0], [1000, "10000.5"], [2000, 20000]]',
        "chart = [[0, 0], [1000, 10000], [2000, 20500]]",
        'tanks[number=1].chart: the chart holds 20500 L at its top, more than capacity_l "20000"',
        id="chart-over-capacity",
    ),
    pytest.param(
        'chart = [[0, 0], [1000, "10000.5"], [2000, 20000]]',
        "chart = [[0, 0], [1000, 10000], [1800, 18000]]",
        "tanks[number=1].chart: the chart ends at 18000 L, below the safe fill volume 19000.00 L",
        id="chart-short-of-safe-fill",
    ),
    pytest.param(
        'chart_file = "tank3.csv"',
        'chart_file = "tank3.csv"\nchart = [[0, 0], [1500, 10000]]',
        "tanks[number=3].chart_file: give either chart or chart_file, not both",
        id="chart-and-chart-file",
    ),
    pytest.param(
        'chart_file = "tank3.csv"',
        'chart_file = "charts/tank3.csv"',
        "tanks[number=3].chart_file: ",
        id="chart-file-missing",
    ),
    pytest.param(
        'chart_file = "tank3.csv"',
        "",
        'tanks[number=3].chart: missing: tank on Modbus probe line "probes" needs its tank chart',
        id="modbus-tank-without-chart",
    ),
    pytest.param(
        "device_id = 7",
        "device_id = 7\nlow_product_l = 10000",
        'tanks[number=3].low_product_l: "10000" must be at least 0 and less than capacity_l '
        '"10000"',
        id="low-product-at-capacity",
    ),
    pytest.param(
        "device_id = 7",
        "device_id = 7\nhigh_water_mm = 1500",
        'tanks[number=3].high_water_mm: "1500" must be at least 0 and less than height_mm "1500"',
        id="high-water-at-height",
    ),
    pytest.param(
        "device_id = 7",
        "device_id = 7\noverfill_pct = 40",
        'tanks[number=3].overfill_pct: "40" is out of range (50..100 %)',
        id="overfill-range",
    ),
    pytest.param(
        "device_id = 7",
        'device_id = 7\nhysteresis_pct = "50.5"',
        'tanks[number=3].hysteresis_pct: "50.5" is out of range (0..50 %)',
        id="hysteresis-range",
    ),
    pytest.param(
        "device_id = 7",
        "device_id = 7\nsudden_loss_l = 0",
        'tanks[number=3].sudden_loss_l: must be greater than 0, got "0"',
        id="sudden-loss-zero",
    ),
    pytest.param(
        "device_id = 7",
        "device_id = 7\ndelivery_min_l = 12000",
        'tanks[number=3].delivery_min_l: "12000" must be less than capacity_l "10000"',
        id="delivery-min-over-capacity",
    ),
    pytest.param(
        "device_id = 7",
        "device_id = 7\ndelivery_settle_s = 5",
        "tanks[number=3].delivery_settle_s: 5 is out of range (10..3600)",
        id="delivery-settle-range",
    ),
    pytest.param(
        "device_id = 7",
        'device_id = 7\nreconciliation_limit_l = "-1"',
        'tanks[number=3].reconciliation_limit_l: must be at least 0, got "-1"',
        id="reconciliation-limit-negative",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), TANK_MISTAKES)
def test_tank_mistake_names_file_and_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    message = load_error(tmp_path, tanks_variant(tmp_path, (old, new)))
    assert message.startswith(f"{tmp_path / 'station.toml'}: "), message
    assert expected in message, message


def test_duplicate_modbus_device_names_the_device(tmp_path: Path) -> None:
    extra = (
        '\n[[tanks]]\nnumber = 4\ngrade = "95"\ncapacity_l = 10000\nheight_mm = 1500\n'
        'density_15 = "745"\ngauge = "probes"\ndevice_id = 7\nchart = [[0, 0], [1500, 10000]]\n'
    )
    message = load_error(tmp_path, tanks_variant(tmp_path) + extra)
    assert 'tanks[number=4].device_id: gauge "probes" device 7 already reads tank 3' in message
    # The same device's second tank (a multi-tank console over Modbus) is another input.
    config = load_config(write(tmp_path, tanks_variant(tmp_path) + extra + "gauge_tank = 2\n"))
    assert [(t.device_id, t.gauge_tank) for t in config.tanks[2:]] == [(7, 1), (7, 2)]
    message = load_error(
        tmp_path,
        tanks_variant(tmp_path, ("device_id = 7", "device_id = 7\ngauge_tank = 2"))
        + extra
        + "gauge_tank = 2\n",
    )
    assert (
        'tanks[number=4].gauge_tank: gauge "probes" device 7 tank 2 already reads tank 3' in message
    )


def test_chart_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    text = tanks_variant(tmp_path)
    (tmp_path / "tank3.csv").write_text("0,0\n750,5000\n1500,4000\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: tanks[number=3].chart_file: {tmp_path / 'tank3.csv'}: line 3: volume 4000 L at "
        "1500 mm is less than 5000 L at 750 mm (a tank holds more the higher it is filled)"
    )
    (tmp_path / "tank3.csv").write_bytes(b"0,0\n\xff\n")
    with pytest.raises(
        ConfigError, match=r"tanks\[number=3\]\.chart_file: cannot read .*not UTF-8 text"
    ):
        load_config(path)


def test_gauges_and_tanks_of_wrong_shape(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'gauges = "tls"\n' + BASE)
    assert 'gauges: expected an array of tables ([[gauges]]), got "tls"' in message
    message = load_error(tmp_path, "tanks = [1]\n" + BASE)
    assert "tanks[1st]: expected a table, got 1" in message


def test_shipped_files_have_gauges_and_tanks() -> None:
    example = load_config(CONFIG_DIR / "station.example.toml")
    assert [(g.name, g.protocol) for g in example.gauges] == [
        ("tls", "veeder_root"),
        ("probes", "modbus_probe"),
    ]
    assert [t.number for t in example.tanks_for_grade("0#")] == [4, 5]  # manifolded diesel
    assert all(t.model().number == t.number for t in example.tanks)
    demo = load_config(CONFIG_DIR / "demo.toml")
    (tls,) = demo.gauges
    assert (tls.protocol, tls.port) == ("veeder_root", "/tmp/edgectl-demo/tls")
    assert [(t.number, t.grade, t.gauge_tank) for t in demo.tanks] == [
        (1, "92", 1),
        (2, "95", 2),
        (3, "98", 3),
        (4, "diesel", 4),
    ]
    for tank in demo.tanks:
        assert tank.chart is not None and tank.chart.points[0] == (Decimal(0), Decimal(0))
        assert tank.chart.max_volume == tank.capacity_l


# ------------------------------------------------------------------ [health]


def test_health_thresholds_default_and_tune(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE)).health == HealthConfig()
    tuned = load_config(
        write(
            tmp_path,
            BASE + "\n[health]\ncloud_outage_budget_s = 3600\ndisk_critical_mb = 50\n"
            "outbox_degraded_s = 600\noutbox_critical_s = 7200\n",
        )
    ).health
    assert tuned.cloud_outage_budget_s == 3600 and tuned.disk_critical_mb == 50
    assert (tuned.outbox_degraded_s, tuned.outbox_critical_s) == (600, 7200)
    assert tuned.disk_degraded_mb == HealthConfig().disk_degraded_mb  # the rest keep defaults


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("outbox_critical_s = 60", "outbox_critical_s: 60 is less than outbox_degraded_s (1800)"),
        ("disk_critical_mb = 900", "disk_critical_mb: 900 is more than disk_degraded_mb (500)"),
        ("disk_degraded_pct = 120", "health.disk_degraded_pct: 120 is out of range"),
        ("backup_late_factor = 0.5", "health.backup_late_factor: 0.5 is out of range"),
        ("cloud_outage = 1", 'health: unknown key "cloud_outage"'),
    ],
)
def test_health_threshold_mistakes_name_their_key(
    tmp_path: Path, section: str, expected: str
) -> None:
    assert expected in load_error(tmp_path, BASE + f"\n[health]\n{section}\n")
