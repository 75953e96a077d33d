"""IFSF lines and pumps in station.toml: the keys of issue 15.6 read into the models, the
profile's values where a key is left out, and every mistake named by its key and pump."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers import registry
from drivers.ifsf.driver import IfsfLine
from drivers.ifsf.encodings import Lna
from drivers.ifsf.profiles import PETROCHINA, PROFILES
from edgectl.config import load_config
from edgectl.daemon import build_line
from tests.configkit import refusal, replaced, write

BASE = """\
[station]
id = "MIXED-1"

[store]
path = "var/edgectl.db"

[[grades]]
id = "92"
name = "92# Gasoline"
unit_price = "7.45"

[[grades]]
id = "95"
name = "95# Gasoline"
unit_price = "7.93"

[[lines]]
name = "dart"
port = "/dev/ttyUSB0"
protocol = "wayne_dart"

[[lines]]
name = "ifsf"
protocol = "ifsf"
profile = "generic"
controller_lna = "2.1"
tcp_port = 4368
heartbeat_port = 3486
heartbeat_to = ["192.168.1.255"]
products = { "92" = 1, "95" = 2 }

[[pumps]]
number = 1
line = "dart"
address = 0x50
nozzles = { 1 = "92" }

[[pumps]]
number = 2
line = "ifsf"
node = "1.1"
fp = 1
nozzles = { 1 = "92", 2 = "95" }

[[pumps]]
number = 3
line = "ifsf"
node = "1.1"
fp = 2
nozzles = { 1 = "95" }
"""


def variant(*replacements: tuple[str, str]) -> str:
    return replaced(BASE, *replacements)


def load_error(tmp_path: Path, text: str) -> str:
    return str(refusal(tmp_path, text)).split(": ", 1)[1]  # without the file's name


def test_an_ifsf_line_and_its_pumps_load(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    line = config.line("ifsf")
    assert (line.protocol, line.profile, line.controller_lna) == ("ifsf", "generic", "2.1")
    assert (line.tcp_port, line.heartbeat_port, line.heartbeat_to) == (
        4368,
        3486,
        ("192.168.1.255",),
    )
    assert dict(line.products) == {"92": 1, "95": 2}
    assert line.port is None and line.reply_timeout_ms == 5000  # the entry's default
    assert line.where == "IP, TCP port 4368"
    two, three = config.pumps_on("ifsf")
    assert (two.node, two.fp, dict(two.nozzles)) == ("1.1", 1, {1: "92", 2: "95"})
    entry = registry.lookup("ifsf")
    # The station's address of a pump is its node and FP: shown as such everywhere.
    assert entry.show_address(two.address) == "1.1/FP1"
    assert entry.show_address(three.address) == "1.1/FP2"
    assert config.pump(1).address == 0x50 and config.line("dart").reply_timeout_ms == 50


def test_the_line_is_built_into_the_driver_with_the_profile_and_the_products(
    tmp_path: Path,
) -> None:
    config = load_config(
        write(
            tmp_path,
            variant(
                ('profile = "generic"', 'profile = "petrochina"'),
                (
                    'heartbeat_to = ["192.168.1.255"]',
                    'heartbeat_to = ["10.0.0.7", "127.0.0.1:9999"]',
                ),
                ("heartbeat_port = 3486\n", "missed_heartbeats = 5\n"),
            ),
        )
    )
    line = build_line(config.line("ifsf"), config, lambda event: None)
    assert isinstance(line, IfsfLine)
    link = line.settings.link
    assert line.settings.profile == PETROCHINA
    # Left out: the profile's heartbeat port (3485) and interval; given: the rest.
    assert link.heartbeat_port == 3485 and link.heartbeat_interval_s == 10.0
    assert link.heartbeat_destinations == (("10.0.0.7", 3485), ("127.0.0.1", 9999))
    assert (link.lnas, link.tcp_port, link.missed_heartbeats) == ((Lna(2, 1),), 4368, 5)
    assert link.reply_timeout_s == 5.0
    pump = config.pump(2)
    spec = line.view(pump.address)
    assert spec.fp == 1
    pumps = {p.spec.address: p.spec for p in line._pumps.values()}
    assert pumps[pump.address].node == Lna(1, 1)
    assert [(n.nozzle, n.logical, n.product) for n in pumps[pump.address].nozzles] == [
        (1, 1, 1),
        (2, 2, 2),
    ]


def test_left_out_keys_are_the_profiles(tmp_path: Path) -> None:
    text = variant(
        ('controller_lna = "2.1"\n', ""),
        ("tcp_port = 4368\n", ""),
        ("heartbeat_port = 3486\n", ""),
        ('heartbeat_to = ["192.168.1.255"]\n', ""),
        ('profile = "generic"', 'profile = "sinopec"'),
    )
    config = load_config(write(tmp_path, text))
    link = build_line(config.line("ifsf"), config, lambda event: None)
    assert isinstance(link, IfsfLine)
    settings = link.settings.link
    sinopec = PROFILES["sinopec"]
    assert settings.lnas == (sinopec.controller_lna,)
    assert settings.tcp_port == sinopec.controller_port
    assert settings.heartbeat_destinations == ((sinopec.broadcast, sinopec.heartbeat_port),)


def test_the_registry_knows_every_profile() -> None:
    assert set(registry.lookup("ifsf").choices["profile"]) == set(PROFILES)


MISTAKES = [
    pytest.param(
        ('node = "1.1"\nfp = 1', 'node = "1-1"\nfp = 1'),
        'pumps[number=2].node: "1-1" is not an IFSF node address',
        id="lna-syntax",
    ),
    pytest.param(
        ('node = "1.1"\nfp = 1', 'node = "1.300"\nfp = 1'),
        'pumps[number=2].node: "1.300" is not an IFSF node address',
        id="lna-range",
    ),
    pytest.param(
        ('node = "1.1"\nfp = 2', 'node = "1.1"\nfp = 5'),
        "pumps[number=3].fp: 5 is out of range (1..4)",
        id="fp-range",
    ),
    pytest.param(
        ('fp = 2\nnozzles = { 1 = "95" }', 'fp = 2\nnozzles = { 9 = "95" }'),
        "pumps[number=3].nozzles.9: nozzle 9 is out of range for an IFSF line (1..8)",
        id="logical-nozzle",
    ),
    pytest.param(
        ('products = { "92" = 1, "95" = 2 }', 'products = { "92" = 1 }'),
        'pumps[number=2].nozzles.2: grade "95" has no product number in line "ifsf"\'s products',
        id="grade-without-prod-nb",
    ),
    pytest.param(
        ('products = { "92" = 1, "95" = 2 }', 'products = { "92" = 1, "95" = 2, "98" = 3 }'),
        'lines[name="ifsf"].products.98: grade "98" is not defined in [[grades]]',
        id="product-of-unknown-grade",
    ),
    pytest.param(
        ('products = { "92" = 1, "95" = 2 }', 'products = { "92" = 1, "95" = 1 }'),
        'lines[name="ifsf"].products.95: product number 1 is also grade "92"\'s',
        id="two-grades-one-prod-nb",
    ),
    pytest.param(
        ('node = "1.1"\nfp = 2', 'node = "1.1"\nfp = 1'),
        'pumps[number=3].node: duplicate address 1.1/FP1 on line "ifsf" (pump 2 uses it)',
        id="same-node-and-fp",
    ),
    pytest.param(
        ('node = "1.1"\nfp = 2', "fp = 2"),
        "pumps[number=3].node: missing: an IFSF pump needs its dispenser's node address",
        id="node-missing",
    ),
    pytest.param(
        ('node = "1.1"\nfp = 2', 'node = "1.1"'),
        "pumps[number=3].fp: missing: an IFSF pump needs its fuelling point",
        id="fp-missing",
    ),
    pytest.param(
        ('node = "1.1"\nfp = 2', 'node = "1.1"\nfp = 2\naddress = 0x51'),
        'pumps[number=3].address: pump 3 is on IFSF line "ifsf": address is only used on a '
        "Wayne DART line",
        id="dart-key-on-ifsf-pump",
    ),
    pytest.param(
        (
            'address = 0x50\nnozzles = { 1 = "92" }',
            'address = 0x50\nnode = "1.2"\nnozzles = { 1 = "92" }',
        ),
        'pumps[number=1].node: pump 1 is on Wayne DART line "dart": node is only used on an '
        "IFSF line",
        id="ifsf-key-on-dart-pump",
    ),
    pytest.param(
        ('profile = "generic"', 'profile = "generic"\nbaud = 9600'),
        'lines[name="ifsf"].baud: is only used with protocol "wayne_dart"',
        id="dart-key-on-ifsf-line",
    ),
    pytest.param(
        ('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\nheartbeat_port = 3486'),
        'lines[name="dart"].heartbeat_port: is only used with protocol "ifsf"',
        id="ifsf-key-on-dart-line",
    ),
    pytest.param(
        ('port = "/dev/ttyUSB0"\n', ""),
        'lines[name="dart"].port: missing: a DART line needs its serial port',
        id="dart-line-without-port",
    ),
    pytest.param(
        ('profile = "generic"', 'profile = "gilbarco"'),
        'lines[name="ifsf"].profile: expected one of "generic", "petrochina", "sinopec"',
        id="unknown-profile",
    ),
    pytest.param(
        ('heartbeat_to = ["192.168.1.255"]', 'heartbeat_to = ["192.168.1.255:70000"]'),
        'lines[name="ifsf"].heartbeat_to[0]: "192.168.1.255:70000": the port after',
        id="heartbeat-destination-port",
    ),
    pytest.param(
        ('heartbeat_to = ["192.168.1.255"]', "heartbeat_to = []"),
        'lines[name="ifsf"].heartbeat_to: at least one address is needed',
        id="no-heartbeat-destination",
    ),
    pytest.param(
        ('node = "1.1"\nfp = 1', 'node = "1.1"\nfp = 1\nhost = "192.168.1"'),
        'pumps[number=2].host: "192.168.1" is not an IPv4 address: write "IP" or "IP:port"',
        id="host-not-ipv4",
    ),
    pytest.param(
        ('node = "1.1"\nfp = 1', 'node = "1.1"\nfp = 1\nhost = "192.168.1.21:0"'),
        "pumps[number=2].host: \"192.168.1.21:0\": the port after ':' must be 1..65535",
        id="host-port-range",
    ),
    pytest.param(
        ('node = "1.1"\nfp = 1', 'node = "1.1"\nfp = 1\nhost = "0.0.0.0"'),
        'pumps[number=2].host: "0.0.0.0" is not a dispenser\'s address',
        id="host-unspecified",
    ),
    pytest.param(
        ('node = "1.1"\nfp = 1', 'node = "1.1"\nfp = 1\nhost = 21'),
        "pumps[number=2].host: expected a string, got 21",
        id="host-not-a-string",
    ),
    pytest.param(
        (
            'address = 0x50\nnozzles = { 1 = "92" }',
            'address = 0x50\nhost = "192.168.1.21"\nnozzles = { 1 = "92" }',
        ),
        'pumps[number=1].host: pump 1 is on Wayne DART line "dart": host is only used on an '
        "IFSF line",
        id="host-on-dart-pump",
    ),
    pytest.param(
        ('controller_lna = "2.1"', 'controller_lna = "2"'),
        'lines[name="ifsf"].controller_lna: "2" is not an IFSF node address',
        id="controller-lna",
    ),
]


@pytest.mark.parametrize(("change", "expected"), MISTAKES)
def test_mistakes_name_the_key_and_the_pump(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    message = load_error(tmp_path, variant(change))
    assert message.startswith(expected), message


def test_the_pumps_of_one_node_giving_two_hosts_are_refused_naming_both(tmp_path: Path) -> None:
    text = variant(
        ('node = "1.1"\nfp = 1', 'node = "1.1"\nfp = 1\nhost = "192.168.1.21"'),
        ('node = "1.1"\nfp = 2', 'node = "1.1"\nfp = 2\nhost = "192.168.1.22"'),
    )
    assert load_error(tmp_path, text) == (
        'pumps[number=3].host: pump 3 gives node 1.1 host "192.168.1.22" but pump 2 gives '
        '"192.168.1.21": the pumps of one dispenser node are at one address'
    )


def test_two_ifsf_lines_cannot_share_the_controllers_tcp_port(tmp_path: Path) -> None:
    second = """
[[lines]]
name = "ifsf2"
protocol = "ifsf"
tcp_port = 4368
"""
    message = load_error(tmp_path, BASE + second)
    assert message == 'lines[name="ifsf2"].tcp_port: TCP port 4368 is already used by line "ifsf"'


def test_a_gauge_on_tcp_beside_an_ifsf_line_shares_no_port(tmp_path: Path) -> None:
    gauge = """
[[gauges]]
name = "tls"
protocol = "veeder_root"
host = "10.0.0.9"
"""
    config = load_config(write(tmp_path, BASE + gauge))
    assert config.gauge("tls").port is None and config.line("ifsf").port is None


HOSTS = (
    ('node = "1.1"\nfp = 1', 'node = "1.1"\nfp = 1\nhost = "192.168.1.21:5000"'),
    ('node = "1.1"\nfp = 2', 'node = "1.1"\nfp = 2\nhost = "192.168.1.21:5000"'),
)


def test_a_pump_gives_where_its_dispenser_node_is(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            variant(
                ('node = "1.1"\nfp = 1', 'node = "1.1"\nfp = 1\nhost = "192.168.1.21:5000"'),
                ('node = "1.1"\nfp = 2', 'node = "1.1"\nfp = 2\nhost = "192.168.1.21:5000"'),
            ),
        )
    )
    two, three = config.pumps_on("ifsf")
    assert (two.host, three.host) == ("192.168.1.21:5000", "192.168.1.21:5000")
    assert config.pump(1).host is None  # a DART pump has none
    line = build_line(config.line("ifsf"), config, lambda event: None)
    assert isinstance(line, IfsfLine)
    (pinned,) = line.settings.link.peer_hosts
    assert (pinned.lna, pinned.ip, pinned.port) == (Lna(1, 1), "192.168.1.21", 5000)
    # heartbeat_to given: it is where the heartbeat goes, hosts or not.
    assert line.settings.link.heartbeat_destinations == (("192.168.1.255", 3486),)


def test_one_pump_of_a_node_giving_its_host_is_enough_and_a_bare_ip_pins_no_port(
    tmp_path: Path,
) -> None:
    text = variant(('node = "1.1"\nfp = 2', 'node = "1.1"\nfp = 2\nhost = "192.168.1.21"'))
    config = load_config(write(tmp_path, text))
    assert [p.host for p in config.pumps_on("ifsf")] == [None, "192.168.1.21"]
    line = build_line(config.line("ifsf"), config, lambda event: None)
    assert isinstance(line, IfsfLine)
    (pinned,) = line.settings.link.peer_hosts
    assert (pinned.lna, pinned.ip, pinned.port) == (Lna(1, 1), "192.168.1.21", None)


def test_without_heartbeat_to_the_heartbeat_goes_to_the_hosts_when_every_node_has_one(
    tmp_path: Path,
) -> None:
    third = """
[[pumps]]
number = 4
line = "ifsf"
node = "1.2"
fp = 1
nozzles = { 1 = "92" }
"""
    unpinned = variant(('heartbeat_to = ["192.168.1.255"]\n', ""), *HOSTS) + third
    config = load_config(write(tmp_path, unpinned))
    line = build_line(config.line("ifsf"), config, lambda event: None)
    assert isinstance(line, IfsfLine)
    # Node 1.2 has no host: it is found by the broadcast, as before.
    assert line.settings.link.heartbeat_destinations == (("255.255.255.255", 3486),)

    pinned = unpinned.replace('node = "1.2"\n', 'node = "1.2"\nhost = "192.168.1.22"\n')
    config = load_config(write(tmp_path, pinned))
    line = build_line(config.line("ifsf"), config, lambda event: None)
    assert isinstance(line, IfsfLine)
    # Every node pinned: unicast to each, at the heartbeat port (not the TCP port given).
    assert line.settings.link.heartbeat_destinations == (
        ("192.168.1.21", 3486),
        ("192.168.1.22", 3486),
    )


def test_the_examples_commented_ifsf_blocks_load_as_documented(tmp_path: Path) -> None:
    """config/station.example.toml's IFSF line and pump, uncommented, are a valid config."""
    example = (Path(__file__).resolve().parents[1] / "config" / "station.example.toml").read_text()
    start = example.index('# [[lines]]\n# name = "east"')
    block = example[start : example.index("\n\n", start)]
    uncommented = "\n".join(
        line.removeprefix("# ").removeprefix("#") for line in block.splitlines()
    )
    beside = variant(("tcp_port = 4368\n", "tcp_port = 4369\n"))  # the example's is 4368
    config = load_config(write(tmp_path, beside + "\n" + uncommented + "\n"))
    (pump,) = config.pumps_on("east")
    assert (pump.node, pump.host, pump.fp) == ("1.1", "192.168.1.21:5000", 1)
    line = build_line(config.line("east"), config, lambda event: None)
    assert isinstance(line, IfsfLine)
    # No heartbeat_to and its one node pinned: the heartbeat goes to it, at UDP 3486.
    assert line.settings.link.heartbeat_destinations == (("192.168.1.21", 3486),)
