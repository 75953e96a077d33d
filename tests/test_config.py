"""Tests for the station configuration loader: shipped files load, every mistake names its key."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from edgectl.config import (
    CloudConfig,
    CommandKey,
    Config,
    GradeConfig,
    LimitsConfig,
    LineConfig,
    LoggingConfig,
    PumpConfig,
    load_config,
    parse_config,
)
from edgectl.errors import ConfigError

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


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(text, encoding="utf-8")
    return path


def variant(*replacements: tuple[str, str]) -> str:
    """BASE with fragments replaced; fails loudly if a fragment is not there."""
    text = BASE
    for old, new in replacements:
        assert text.count(old) == 1, f"fragment {old!r} must occur exactly once in BASE"
        text = text.replace(old, new)
    return text


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.code == "config"
    return str(info.value)


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


def test_demo_config_loads() -> None:
    config = load_config(CONFIG_DIR / "demo.toml")
    assert config.station.id == "DEMO-001"
    assert [(line.name, line.port) for line in config.lines] == [
        ("north", "/tmp/edgectl-demo/north"),
        ("south", "/tmp/edgectl-demo/south"),
    ]
    assert [(p.number, p.line, p.address) for p in config.pumps] == [
        (1, "north", 0x50),
        (2, "north", 0x51),
        (3, "south", 0x50),
        (4, "south", 0x51),
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
        "pumps[1].number: missing required key",
        id="missing-pump-number",
    ),
    pytest.param(
        "baud = 9600",
        'baud = "9600"',
        'lines[0].baud: expected an integer, got "9600"',
        id="int-as-string",
    ),
    pytest.param(
        "retries = 3",
        "retries = true",
        "lines[0].retries: expected an integer, got true",
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
        "grades[0].unit_price: got the TOML float 7.45; floats are binary and not exact",
        id="float-money",
    ),
    pytest.param(
        'unit_price = "7.45"',
        'unit_price = "7,45"',
        'grades[0].unit_price: expected a decimal number like "7.89", got "7,45"',
        id="malformed-decimal",
    ),
    pytest.param(
        'unit_price = "7.45"',
        'unit_price = "7.455"',
        'grades[0].unit_price: "7.455" has 3 decimal places, at most 2 allowed by price_decimals',
        id="price-too-precise",
    ),
    pytest.param(
        'unit_price = "7.45"',
        'unit_price = "0"',
        'grades[0].unit_price: must be greater than 0, got "0"',
        id="price-zero",
    ),
    pytest.param(
        'protocol = "wayne_dart"\nbaud',
        'protocol = "dartt"\nbaud',
        'lines[0].protocol: unknown protocol "dartt" (known: wayne_dart)',
        id="unknown-protocol",
    ),
    pytest.param(
        "address = 0x51",
        "address = 0x50",
        'pumps[1].address: duplicate address 0x50 on line "north" (pump 1 uses it)',
        id="duplicate-address-on-line",
    ),
    pytest.param(
        "address = 0x52",
        "address = 0x70",
        "pumps[2].address: address 0x70 is out of range for wayne_dart (0x50..0x6F)",
        id="address-out-of-range",
    ),
    pytest.param(
        "number = 3",
        "number = 1",
        "pumps[2].number: duplicate pump number 1 (pumps[0] uses it)",
        id="duplicate-pump-number",
    ),
    pytest.param(
        "number = 3", "number = 100", "pumps[2].number: 100 is out of range (1..99)", id="pump-100"
    ),
    pytest.param(
        'nozzles = { 1 = "92", 2 = "95" }',
        'nozzles = { 1 = "92", 2 = "98" }',
        'pumps[0].nozzles.2: grade "98" is not defined in [[grades]]',
        id="nozzle-unknown-grade",
    ),
    pytest.param(
        'nozzles = { 1 = "95" }',
        'nozzles = { 16 = "95" }',
        "pumps[1].nozzles.16: nozzle number 16 is out of range (1..15)",
        id="nozzle-out-of-range",
    ),
    pytest.param(
        'nozzles = { 1 = "95" }',
        'nozzles = { a = "95" }',
        'pumps[1].nozzles.a: nozzle numbers are integers 1..15, got "a"',
        id="nozzle-not-a-number",
    ),
    pytest.param(
        'nozzles = { 1 = "95" }',
        "nozzles = {}",
        "pumps[1].nozzles: at least one nozzle is required",
        id="no-nozzles",
    ),
    pytest.param(
        "address = 0x51",
        "adress = 0x51",
        'pumps[1]: unknown key "adress" (did you mean "address"?)',
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
        'lines[0].parity: expected one of "odd", "even", "none", got "Odd"',
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
        "lines[0].baud: expected one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, "
        "got 9601",
        id="bad-baud",
    ),
    pytest.param(
        "retries = 3", "retries = 11", "lines[0].retries: 11 is out of range (0..10)", id="range"
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
        "pumps[0].nozzles: pump 1 mixes grades with different volume_decimals "
        '("92" has 2, "95" has 3)',
        id="inconsistent-decimals",
    ),
    pytest.param(
        'line = "south"',
        'line = "east"',
        'pumps[2].line: unknown line "east" (defined: "north", "south")',
        id="unknown-line",
    ),
    pytest.param(
        'name = "south"',
        'name = "north"',
        'lines[1].name: duplicate line name "north" (lines[0] uses it)',
        id="duplicate-line-name",
    ),
    pytest.param(
        'port = "/dev/ttyUSB1"',
        'port = "/dev/ttyUSB0"',
        'lines[1].port: port "/dev/ttyUSB0" is already used by line "north"',
        id="duplicate-port",
    ),
    pytest.param(
        'id = "95"',
        'id = "92"',
        'grades[1].id: duplicate grade id "92" (grades[0] uses it)',
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
        'cloud.command_keys[1].id: duplicate key id "cloud-2026a" (command_keys[0] uses it)',
        id="duplicate-key-id",
    ),
    pytest.param(
        'id = "cloud-2026a"',
        'id = "cloud 2026a"',
        'cloud.command_keys[0].id: "cloud 2026a" is not a valid key id',
        id="bad-key-id",
    ),
    pytest.param(
        f'public_key = "{CLOUD_KEY}"',
        'public_key = "bm90IGEga2V5"',
        'cloud.command_keys[0].public_key: "bm90IGEga2V5" is not an Ed25519 public key: a raw '
        "Ed25519 public key is 32 bytes, this base64 holds 9",
        id="short-key",
    ),
    pytest.param(
        f'public_key = "{CLOUD_KEY}"',
        'public_key = "!!"',
        'cloud.command_keys[0].public_key: "!!" is not an Ed25519 public key: neither base64',
        id="garbage-key",
    ),
    pytest.param(
        f'public_key = "{CLOUD_KEY}"',
        "",
        "cloud.command_keys[0].public_key: missing: give public_key (base64) or public_key_file",
        id="no-public-key",
    ),
    pytest.param(
        f'public_key = "{CLOUD_KEY}"',
        f'public_key = "{CLOUD_KEY}"\npublic_key_file = "station.toml"',
        "cloud.command_keys[0].public_key_file: give either public_key or public_key_file",
        id="both-key-forms",
    ),
    pytest.param(
        f'public_key = "{CLOUD_KEY}"',
        'public_key_file = "keys/nope.pub"',
        "cloud.command_keys[0].public_key_file: ",
        id="key-file-missing",
    ),
    pytest.param(
        'id = "cloud-2026a"',
        'id = "cloud-2026a"\nkey = "x"',
        'cloud.command_keys[0]: unknown key "key"',
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
