"""A dispenser node whose host is configured (a pump's `host`, issue 15 point 6): taken only
from a heartbeat that says that address; one from elsewhere is counted, warned about once and
keeps the node's pumps offline with both addresses in the reason. On loopback every node
declares 127.0.0.1, so 127.0.0.2 (or another port) stands for "somewhere else"."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from drivers.base import WRONG_ADDRESS, DeviceFault, DispenserEvent, LinkHealth, PumpOnline
from drivers.ifsf.driver import IfsfLine, IfsfLineSettings
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import Heartbeat, encode_heartbeat
from drivers.ifsf.links import IfsfNode, LinkEvent, PeerHost, PeerMisplaced
from drivers.ifsf.node import PeerMoved
from tests.drivers.ifsf.loopback import (
    CD,
    DISPENSER,
    free_tcp_port,
    free_udp_port,
    loopback_settings,
)
from tests.drivers.ifsf.test_driver import NODE, PUMP, PUMPS, Sim, spec


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def beating(lna: Lna, ip: str, tcp_port: int, to_port: int) -> AsyncIterator[None]:
    """A hand-made peer's heartbeats declaring `ip`:`tcp_port`, every 50 ms, sent from
    127.0.0.1."""
    record = encode_heartbeat(Heartbeat(ipaddress.IPv4Address(ip), tcp_port, lna))

    async def beat() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            while True:
                udp.sendto(record, ("127.0.0.1", to_port))
                await asyncio.sleep(0.05)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_peer_heard_at_its_configured_host_and_port_is_taken() -> None:
    cd_hb, disp_hb, tcp = free_udp_port(), free_udp_port(), free_tcp_port()
    events: list[LinkEvent] = []
    dispenser = IfsfNode(loopback_settings([DISPENSER], disp_hb, cd_hb, tcp_port=tcp))
    pinned = (PeerHost(DISPENSER, "127.0.0.1", tcp),)
    cd = IfsfNode(
        loopback_settings([CD], cd_hb, disp_hb, peer_hosts=pinned), on_event=events.append
    )
    async with cd, dispenser:
        await cd.wait_link(DISPENSER, 3)
        assert cd.peers[DISPENSER].endpoint == ("127.0.0.1", tcp)
    assert cd.counters.unexpected == 0
    assert not any(isinstance(e, PeerMisplaced) for e in events)


@pytest.mark.parametrize(
    ("ip", "port_offset", "configured"),
    [
        pytest.param("127.0.0.2", None, "127.0.0.2", id="other-ip"),
        pytest.param("127.0.0.1", 1, "127.0.0.1:{port}", id="other-port"),
    ],
)
async def test_a_heartbeat_from_elsewhere_is_not_the_peer_and_is_counted_and_warned_once(
    ip: str, port_offset: int | None, configured: str
) -> None:
    cd_hb, disp_hb, tcp = free_udp_port(), free_udp_port(), free_tcp_port()
    events: list[LinkEvent] = []
    dispenser = IfsfNode(loopback_settings([DISPENSER], disp_hb, cd_hb, tcp_port=tcp))
    port = None if port_offset is None else tcp + port_offset
    cd = IfsfNode(
        loopback_settings([CD], cd_hb, disp_hb, peer_hosts=(PeerHost(DISPENSER, ip, port),)),
        name="cd",
        on_event=events.append,
    )
    with capture_logs() as logs:
        async with cd, dispenser:
            await until(lambda: cd.counters.unexpected >= 3)
            assert cd.peers == {} and cd._links == {}  # not taken: no link opened
            assert dispenser.peers[CD].port == cd.tcp_port  # the other way is unchanged
    heard = f"127.0.0.1:{tcp}"
    shown = configured.format(port=port)
    warned = [e for e in logs if e["event"] == "ifsf_heartbeat_unexpected"]
    assert warned == [
        {
            "event": "ifsf_heartbeat_unexpected",
            "log_level": "warning",
            "node": "cd",
            "peer": "1.1",
            "heard": heard,
            "configured": shown,
        }
    ]
    misplaced = [e for e in events if isinstance(e, PeerMisplaced)]
    assert len(misplaced) == cd.counters.unexpected  # each one told, warned about once
    assert str(misplaced[0]) == f"node 1.1 heard at {heard}, configured at {shown}"


async def test_a_heartbeat_declaring_no_ip_is_checked_at_the_address_it_came_from() -> None:
    cd_hb = free_udp_port()
    pinned = (PeerHost(DISPENSER, "127.0.0.1"), PeerHost(Lna(1, 2), "127.0.0.2"))
    scanner = IfsfNode(
        loopback_settings(
            [CD], cd_hb, free_udp_port(), connect=False, send_heartbeat=False, peer_hosts=pinned
        )
    )
    async with (
        scanner,
        beating(DISPENSER, "0.0.0.0", 5000, cd_hb),
        beating(Lna(1, 2), "0.0.0.0", 5001, cd_hb),
    ):
        await scanner.wait_peer(DISPENSER, 3)  # sent from its host: taken
        await until(lambda: scanner.counters.unexpected >= 2)
    assert Lna(1, 2) not in scanner.peers  # sent from 127.0.0.1, configured at 127.0.0.2


async def test_a_twin_with_the_same_lna_does_not_move_the_configured_peer() -> None:
    cd_hb, disp_hb, tcp = free_udp_port(), free_udp_port(), free_tcp_port()
    events: list[LinkEvent] = []
    dispenser = IfsfNode(loopback_settings([DISPENSER], disp_hb, cd_hb, tcp_port=tcp))
    pinned = (PeerHost(DISPENSER, "127.0.0.1", tcp),)
    cd = IfsfNode(
        loopback_settings([CD], cd_hb, disp_hb, peer_hosts=pinned), on_event=events.append
    )
    async with cd, dispenser:
        await cd.wait_link(DISPENSER, 3)
        async with beating(DISPENSER, "127.0.0.1", tcp + 1, cd_hb):
            await until(lambda: cd.counters.unexpected >= 5)
        assert cd.is_up(DISPENSER) and cd.peers[DISPENSER].endpoint == ("127.0.0.1", tcp)
    # Unpinned, each twin's heartbeat would have moved the peer to the other's port.
    assert not any(isinstance(e, PeerMoved) for e in events)


@dataclass
class Station:
    """The simulator's dispenser node 1.3 and the heartbeat port of the controller's line."""

    sim: Sim
    cd_hb: int


@pytest.fixture
async def station() -> AsyncIterator[Station]:
    cd_hb, hb = free_udp_port(), free_udp_port()
    sim = Sim(spec(), hb, cd_hb, free_tcp_port())
    await sim.start()
    try:
        yield Station(sim, cd_hb)
    finally:
        await sim.stop()


@contextlib.asynccontextmanager
async def running(
    station: Station, host: PeerHost, events: list[DispenserEvent], health: list[LinkHealth]
) -> AsyncIterator[IfsfLine]:
    link = loopback_settings([CD], station.cd_hb, station.sim.hb, peer_hosts=(host,))
    settings = IfsfLineSettings("ifsf1", link, retry_s=0.1)
    line = IfsfLine(settings, PUMPS, events.append)
    line.on_health = health.append
    task = asyncio.create_task(line.run())
    try:
        yield line
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_pumps_of_a_node_heard_elsewhere_are_offline_naming_both_addresses(
    station: Station,
) -> None:
    events: list[DispenserEvent] = []
    health: list[LinkHealth] = []
    async with running(station, PeerHost(NODE, "127.0.0.2"), events, health) as line:
        await until(lambda: line.pump_fault(PUMP) is not None)
        tcp = station.sim.node.settings.tcp_port
        fault = DeviceFault(
            WRONG_ADDRESS, f"IFSF node 1.3 heard at 127.0.0.1:{tcp}, configured at 127.0.0.2"
        )
        assert line.pump_fault(PUMP) == fault
        # Past the time the line declares a node never heard offline: still this reason.
        link = line.settings.link
        await asyncio.sleep(link.heartbeat_interval_s * link.missed_heartbeats + 0.3)
        assert line.pump_fault(PUMP) == fault and not line.is_online(PUMP)
    assert [h.fault for h in health if h.address == PUMP] == [fault]  # raised once
    assert not any(isinstance(e, PumpOnline) for e in events)


async def test_the_pumps_of_a_node_heard_at_its_host_come_online(station: Station) -> None:
    events: list[DispenserEvent] = []
    health: list[LinkHealth] = []
    async with running(station, PeerHost(NODE, "127.0.0.1"), events, health) as line:
        await until(lambda: line.is_online(PUMP), timeout=5)
        assert line.pump_fault(PUMP) is None and line.node.counters.unexpected == 0
    assert isinstance(events[0], PumpOnline)
