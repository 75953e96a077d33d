"""Finding IFSF nodes by their heartbeats (drivers/ifsf/probe.py): dispenser nodes of the node
layer on loopback send unicast heartbeats to the listener's port; what it hears, the status
bytes it names, the garbage it counts, and the config it writes for them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import socket
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from drivers import registry
from drivers.base import TransportError
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import Heartbeat, encode_heartbeat
from drivers.ifsf.links import IfsfNode
from drivers.ifsf.probe import (
    PROFILE_NAMES,
    HeardNode,
    Hearing,
    HeartbeatListener,
    LocalNetwork,
    Tally,
    config_snippet,
    describe_status,
    heard,
    local_networks,
    other_bits,
    plan,
    status_flags,
)
from drivers.ifsf.profiles import PETROCHINA, PROFILES
from tests.drivers.ifsf.loopback import CD, free_udp_port, loopback_settings

BEAT_S = 0.05


@asynccontextmanager
async def dispensers(
    listener_port: int, lnas: Sequence[Lna], status: int = 0
) -> AsyncIterator[list[IfsfNode]]:
    """One node of the node layer per LNA, each heartbeating to the listener by unicast."""
    nodes = [
        IfsfNode(loopback_settings([lna], 0, listener_port, heartbeat_interval_s=BEAT_S))
        for lna in lnas
    ]
    for node in nodes:
        node.set_status(node.lnas[0], status)
        await node.start()
    try:
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


async def heard_within(listener: HeartbeatListener, count: int, beats: int = 2) -> Hearing:
    """The hearing once `count` nodes were each heard `beats` times (5 s at most)."""
    async with asyncio.timeout(5):
        while True:
            hearing = listener.hearing()
            if len(hearing.nodes) >= count and all(n.count >= beats for n in hearing.nodes):
                return hearing
            await asyncio.sleep(BEAT_S / 2)


def lo() -> list[LocalNetwork]:
    return [LocalNetwork("lo", ipaddress.IPv4Interface("127.0.0.1/8"), None, True)]


async def test_a_node_heard_with_its_address_port_lna_and_status() -> None:
    async with HeartbeatListener([0], host="127.0.0.1") as listener:
        (port,) = listener.ports
        async with dispensers(port, [Lna(1, 1)], status=0x01) as (node,):
            hearing = await heard_within(listener, 1, beats=3)
    (found,) = hearing.nodes
    assert found.lna == Lna(1, 1) and found.role == "dispenser" and found.dispenser
    assert found.ip == ipaddress.IPv4Address("127.0.0.1") and found.source == "127.0.0.1"
    assert found.tcp_port == node.tcp_port  # the port its TCP server listens on
    assert found.heartbeat_port == port
    assert found.status == 0x01 and found.statuses == [0x01]
    assert found.count >= 3
    assert hearing.ports == (port,) and hearing.shared == () and hearing.garbage == 0


async def test_two_nodes_each_heard_and_written_as_pumps_one_and_two() -> None:
    async with HeartbeatListener([0], host="127.0.0.1") as listener:
        lnas = [Lna(1, 2), Lna(1, 1)]
        async with dispensers(listener.ports[0], lnas) as nodes:
            hearing = await heard_within(listener, 2)
    assert [n.lna for n in hearing.nodes] == [Lna(1, 1), Lna(1, 2)]  # sorted by LNA
    by_lna = {node.lnas[0]: node.tcp_port for node in nodes}
    assert {n.lna: n.tcp_port for n in hearing.nodes} == by_lna
    config = tomllib.loads(config_snippet(hearing, networks=lo()))
    (line,) = config["lines"]
    assert line["protocol"] == "ifsf" and line["heartbeat_port"] == hearing.ports[0]
    assert line["heartbeat_to"] == ["127.0.0.1"]  # loopback has no broadcast: unicast
    assert [(p["number"], p["node"], p["line"], p["fp"]) for p in config["pumps"]] == [
        (1, "1.1", line["name"], 1),
        (2, "1.2", line["name"], 1),
    ]


async def test_garbage_on_the_port_is_counted_and_ignored() -> None:
    async with HeartbeatListener([0], host="127.0.0.1") as listener:
        port = listener.ports[0]
        bad_mc = bytearray(encode_heartbeat(Heartbeat(ipaddress.IPv4Address(1), 1, Lna(1, 9))))
        bad_mc[8] = 0x00  # IFSF_MC 0 is no heartbeat
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as noise:
            for junk in (b"hello", bytes(bad_mc), bytes(11), b""):
                noise.sendto(junk, ("127.0.0.1", port))
            async with dispensers(port, [Lna(1, 1)]):
                hearing = await heard_within(listener, 1)
    assert [n.lna for n in hearing.nodes] == [Lna(1, 1)]
    assert hearing.garbage == 4 and hearing.garbage_from == {"127.0.0.1": 4}
    said = heard(hearing, None)
    assert any("4 datagram(s) were not heartbeats" in note for note in said.notes)


@pytest.mark.parametrize(
    ("status", "flags", "other", "text"),
    [
        (0x00, [], 0x00, "00 normal"),
        (0x01, ["configuration needed"], 0x00, "01 configuration needed"),
        (0x80, ["software refresh required"], 0x00, "80 software refresh required"),
        (
            0x81,
            ["configuration needed", "software refresh required"],
            0x00,
            "81 configuration needed, software refresh required",
        ),
        (0x06, [], 0x06, "06 other bits 06"),  # an FP state, as ZSY boards put there
        (0xFF, ["configuration needed", "software refresh required"], 0x7E, None),
    ],
)
def test_odd_status_bytes_are_named_bit_by_bit(
    status: int, flags: list[str], other: int, text: str | None
) -> None:
    assert status_flags(status) == flags
    assert other_bits(status) == other
    if text is not None:
        assert describe_status(status) == text
    else:
        assert describe_status(status).endswith("other bits 7E")


def test_a_status_that_changes_while_listening_is_told() -> None:
    tally = Tally()
    for now, status in enumerate((0x01, 0x01, 0x00)):
        beat = Heartbeat(ipaddress.IPv4Address("10.0.0.5"), 4000, Lna(1, 3), status)
        tally.feed(encode_heartbeat(beat), "10.0.0.5", 3486, float(now))
    (node,) = tally.heard()
    assert node.status == 0x00 and node.statuses == [0x01, 0x00] and node.count == 3
    hearing = Hearing((3486,), 12.0, (), (node,), 0, {})
    assert "1.3's status changed while listening: 01 -> 00" in heard(hearing, None).notes


def test_a_node_that_advertises_no_address_is_shown_where_it_sent_from() -> None:
    tally = Tally()
    beat = Heartbeat(ipaddress.IPv4Address(0), 4000, Lna(1, 1))
    tally.feed(encode_heartbeat(beat), "192.168.1.30", 3486, 0.0)
    assert tally.heard()[0].ip == ipaddress.IPv4Address("192.168.1.30")


def node(lna: Lna, ip: str, port: int = 3486, status: int = 0) -> HeardNode:
    return HeardNode(lna, ipaddress.IPv4Address(ip), 4000, port, ip, status, 0.0, 0.0)


ETH0 = LocalNetwork(
    "eth0",
    ipaddress.IPv4Interface("192.168.1.10/24"),
    ipaddress.IPv4Address("192.168.1.255"),
    False,
)


def test_the_snippet_broadcasts_on_the_interface_the_heartbeats_came_from() -> None:
    nodes = (node(Lna(1, 1), "192.168.1.21"), node(Lna(1, 2), "192.168.1.22"))
    hearing = Hearing((3486,), 12.0, (), nodes, 0, {})
    text = config_snippet(hearing, networks=[ETH0, *lo()])
    config = tomllib.loads(text)
    assert config["lines"][0]["heartbeat_to"] == ["192.168.1.255"]
    assert "the broadcast of eth0" in text
    assert config["lines"][0]["profile"] == "generic" and "sinopec" in text  # 3486: either


def test_the_snippet_of_a_node_on_no_subnet_of_ours_says_so() -> None:
    hearing = Hearing((3486,), 12.0, (), (node(Lna(1, 1), "10.9.9.9"),), 0, {})
    text = config_snippet(hearing, networks=[ETH0])
    assert tomllib.loads(text)["lines"][0]["heartbeat_to"] == ["255.255.255.255"]
    assert "10.9.9.9 is on no subnet of this host" in text


def test_the_snippet_lists_a_controller_heard_but_makes_no_pump_of_it() -> None:
    nodes = (
        node(Lna(1, 1), "192.168.1.21"),
        node(CD, "192.168.1.10"),
        node(Lna(9, 1), "192.168.1.40"),
    )
    text = config_snippet(Hearing((3486,), 12.0, (), nodes, 0, {}), networks=[ETH0])
    config = tomllib.loads(text)
    assert [p["node"] for p in config["pumps"]] == ["1.1"]
    assert "2.1 is heard at 192.168.1.10: pick a free LNA" in text
    assert "also heard: 9.1 (tank level gauge)" in text


def test_the_snippet_of_a_petrochina_port_is_a_petrochina_line_node_per_nozzle() -> None:
    nodes = (node(Lna(1, 9), "192.168.1.21", port=3485), node(Lna(1, 10), "192.168.1.21", 3485))
    text = config_snippet(Hearing((3485,), 12.0, (), nodes, 0, {}), networks=[ETH0])
    config = tomllib.loads(text)
    (line,) = config["lines"]
    assert line["profile"] == "petrochina" and line["heartbeat_port"] == 3485
    assert line["tcp_port"] == PETROCHINA.controller_port
    assert "one node per nozzle" in text
    assert [p["number"] for p in config["pumps"]] == [1, 2]


def test_nodes_heard_on_two_ports_get_a_line_each() -> None:
    nodes = (node(Lna(1, 1), "192.168.1.21", 3485), node(Lna(1, 1), "192.168.1.22", 3486))
    config = tomllib.loads(
        config_snippet(Hearing((3485, 3486), 12.0, (), nodes, 0, {}), networks=[ETH0])
    )
    assert [(x["name"], x["profile"]) for x in config["lines"]] == [
        ("ifsf_3485", "petrochina"),
        ("ifsf_3486", "generic"),
    ]
    assert [p["line"] for p in config["pumps"]] == ["ifsf_3485", "ifsf_3486"]


def test_no_dispenser_no_snippet() -> None:
    assert config_snippet(Hearing((3486,), 12.0, (), (), 0, {}), networks=[]) == ""


def args(**given: object) -> argparse.Namespace:
    return argparse.Namespace(**{"heartbeat_port": None, "profile": None, "seconds": None, **given})


def test_the_ports_and_time_a_listen_takes() -> None:
    assert plan(args(), every_port=False) == ([3486], 12.0, None)
    assert plan(args(), every_port=True) == ([3485, 3486], 12.0, None)
    assert plan(args(profile="petrochina"), every_port=True) == ([3485], 12.0, PETROCHINA)
    ports, seconds, _ = plan(args(heartbeat_port=[4000, 3999, 4000], seconds=3.0), False)
    assert ports == [3999, 4000] and seconds == 3.0


@pytest.mark.parametrize("daemon_host", ["0.0.0.0", "127.0.0.1"])
async def test_beside_a_running_controller_on_the_same_port(daemon_host: str) -> None:
    """The daemon's node holds the heartbeat port (SO_REUSEADDR), on every address or on
    the one the dispensers send to: the listener binds it too, says it is shared, and hears
    a dispenser's unicast heartbeats."""
    port = free_udp_port()
    settings = loopback_settings([CD], port, free_udp_port(), send_heartbeat=False)
    daemon = IfsfNode(replace(settings, heartbeat_host=daemon_host))
    async with daemon, HeartbeatListener([port]) as listener:
        assert listener.shared == (port,)
        async with dispensers(port, [Lna(1, 1)]):
            hearing = await heard_within(listener, 1)
    assert [n.lna for n in hearing.nodes] == [Lna(1, 1)]
    said = heard(hearing, None).notes
    assert any(f"UDP {port} is bound by another process too" in note for note in said)


async def test_on_a_shared_port_each_heartbeat_is_counted_once() -> None:
    """The sockets on each address besides 0.0.0.0 hear unicast only; a broadcast comes to
    the 0.0.0.0 one alone."""
    port = free_udp_port()
    settings = loopback_settings([CD], port, free_udp_port(), send_heartbeat=False)
    daemon = IfsfNode(replace(settings, heartbeat_host="0.0.0.0"))
    unicast = encode_heartbeat(Heartbeat(ipaddress.IPv4Address("127.0.0.1"), 4000, Lna(1, 1)))
    broadcast = encode_heartbeat(Heartbeat(ipaddress.IPv4Address("127.0.0.1"), 4001, Lna(1, 2)))
    async with daemon, HeartbeatListener([port]) as listener:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            for _ in range(3):
                sender.sendto(unicast, ("127.0.0.1", port))
                # A host that sends no broadcast on loopback: unicast alone.
                with contextlib.suppress(OSError):
                    sender.sendto(broadcast, ("127.255.255.255", port))
            await asyncio.sleep(0.3)
        counts = {n.lna: n.count for n in listener.hearing().nodes}
    assert counts[Lna(1, 1)] == 3
    assert counts.get(Lna(1, 2), 3) == 3


def test_listening_on_a_shared_port_as_long_as_the_daemon_waits_is_warned() -> None:
    nodes = (node(Lna(1, 1), "192.168.1.21"),)
    short = heard(Hearing((3486,), 12.0, (3486,), nodes, 0, {}), None)
    assert len(short.notes) == 2 and "UDP 3486 is bound by another process too" in short.notes[0]
    assert short.notes[1].startswith("the config snippet is not complete: fill in products")
    assert short.json["notes"] == list(short.notes)
    long = heard(Hearing((3486,), 30.0, (3486,), nodes, 0, {}), None)
    assert "counts them lost after 30 s" in long.notes[1]


async def test_a_port_held_without_sharing_cannot_be_listened_on() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with pytest.raises(TransportError, match=f"cannot listen on UDP port {port}"):
            async with HeartbeatListener([port], host="127.0.0.1"):
                pass


def test_this_hosts_loopback_is_found() -> None:
    assert any(n.loopback and str(n.interface.ip) == "127.0.0.1" for n in local_networks())


def test_the_profile_names_are_the_profiles() -> None:
    """One list, light to import, that the profiles themselves are checked against."""
    assert tuple(sorted(PROFILES)) == PROFILE_NAMES
    assert registry.lookup("ifsf").choices["profile"] == PROFILE_NAMES


def test_the_listener_loads_no_node_layer() -> None:
    """`edgectl` builds its parser with every listener's options at every start."""
    code = (
        "import sys; from drivers import registry; registry.listeners(); "
        "print('drivers.ifsf.links' in sys.modules, 'drivers.ifsf.profiles' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
