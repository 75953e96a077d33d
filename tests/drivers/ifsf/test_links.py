"""The IFSF node on loopback: a controller and a small dispenser peer, both IfsfNode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from drivers.base import DriverError
from drivers.ifsf import databases as db
from drivers.ifsf.links import IfsfNode, LinkEvent, LinkUp
from drivers.ifsf.node import PeerHeard, ReadReply
from tests.drivers.ifsf.loopback import (
    CD,
    DISPENSER,
    LoopbackDispenser,
    free_udp_port,
    loopback_settings,
)

FP1 = db.FuellingPoint(1)


@dataclass
class Pair:
    cd: IfsfNode
    dispenser: IfsfNode
    app: LoopbackDispenser
    cd_events: list[LinkEvent] = field(default_factory=list)
    disp_events: list[LinkEvent] = field(default_factory=list)
    reports: list[object] = field(default_factory=list)
    errors: list[DriverError] = field(default_factory=list)


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    cd_hb, disp_hb = free_udp_port(), free_udp_port()
    app = LoopbackDispenser()
    cd_events: list[LinkEvent] = []
    disp_events: list[LinkEvent] = []
    reports: list[object] = []
    errors: list[DriverError] = []
    cd = IfsfNode(
        loopback_settings([CD], cd_hb, disp_hb),
        name="cd",
        on_event=cd_events.append,
        on_report=reports.append,
        on_error=errors.append,
    )
    dispenser = IfsfNode(
        loopback_settings([DISPENSER], disp_hb, cd_hb),
        name="dispenser",
        on_request=app.on_request,
        on_event=disp_events.append,
    )
    app.node = dispenser
    async with cd, dispenser:
        yield Pair(cd, dispenser, app, cd_events, disp_events, reports, errors)


async def test_heartbeats_are_heard_and_both_links_open(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    await pair.dispenser.wait_link(CD, 3)
    peer = pair.cd.peers[DISPENSER]
    assert peer.endpoint == ("127.0.0.1", pair.dispenser.tcp_port)
    assert pair.dispenser.peers[CD].port == pair.cd.tcp_port
    assert any(isinstance(e, PeerHeard) for e in pair.cd_events)
    assert any(isinstance(e, LinkUp) for e in pair.cd_events)


async def test_read_is_answered(pair: Pair) -> None:
    await pair.cd.wait_link(DISPENSER, 3)
    reply = await pair.cd.read(DISPENSER, FP1, [0x14])
    assert isinstance(reply, ReadReply)
    assert reply.values() == {0x14: 2}
