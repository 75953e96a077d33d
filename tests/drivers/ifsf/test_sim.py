"""The IFSF simulator on loopback (drivers/ifsf/sim.py), driven by a minimal controller built
on the node layer (links.py): heartbeats both ways, a sale authorised, filled, read from the
transaction buffer, locked and cleared; the faults; the control language."""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.base import DriverError, TransportError
from drivers.ifsf import databases as db
from drivers.ifsf import profiles
from drivers.ifsf.codec import Message, Unsolicited, Write
from drivers.ifsf.codec import item as it
from drivers.ifsf.dispenser import FpState
from drivers.ifsf.encodings import Lna
from drivers.ifsf.heartbeat import Heartbeat, decode_heartbeat
from drivers.ifsf.links import IfsfNode, LinkDown, LinkEvent, LinkSettings, LinkUp
from drivers.ifsf.node import PeerHeard, PeerLost, Refused, unsolicited
from drivers.ifsf.sim import (
    Drop,
    Garbage,
    IfsfController,
    IfsfSimulator,
    WaitForState,
    network,
    parse_command,
    serve,
    simulation,
)
from drivers.ifsf.startup import NozzleSetup, ProductSetup, StartupPlan, start_up
from drivers.simulation import NetworkPlan, NodePlan, PumpPlan, ServePlan
from drivers.wayne_dart.sim_commands import CommandSyntaxError, HangUp, PumpRef
from drivers.wayne_dart.sim_control import run_script
from edgectl.cli import simulate as simulate_cli
from tests.drivers.ifsf.loopback import FAST, free_udp_port

ROOT = Path(__file__).resolve().parents[3]
CD = Lna(2, 1)
NODE_1, NODE_2 = Lna(1, 1), Lna(1, 2)
FP1 = db.FuellingPoint(1)
PRICES = {1: Decimal("1.79"), 2: Decimal("1.65")}


@dataclass
class Station:
    sim: IfsfSimulator
    control: IfsfController
    cd: IfsfNode
    reports: list[Message] = field(default_factory=list)
    events: list[LinkEvent] = field(default_factory=list)
    errors: list[DriverError] = field(default_factory=list)

    async def do(self, line: str) -> str:
        reply = await self.control.handle(line)
        assert reply is not None
        assert reply.ok, reply.line
        return reply.line

    def states(self, lna: Lna, fp: int = 1) -> list[int]:
        """The FP states the CD was told of, in order."""
        found = []
        for m in self.reports:
            if m.originator == lna and m.database == db.FuellingPoint(fp):
                assert isinstance(m.body, Unsolicited)
                items = {i.data_id: i.data for i in m.body.items}
                if 0x14 in items:
                    found.append(items[0x14][0])
        return found


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def plan(sim_hb: int, cd_hb: int, profile: str = "generic") -> NetworkPlan:
    return NetworkPlan(
        name="forecourt",
        nodes=[
            NodePlan(1, [PumpPlan(1, 1, PRICES)]),
            NodePlan(2, [PumpPlan(2, 1, PRICES), PumpPlan(3, 2, {1: Decimal("1.89")})]),
        ],
        heartbeat_port=sim_hb,
        heartbeat_destinations=[("127.0.0.1", cd_hb)],
        heartbeat_interval_s=0.1,
        profile=profile,
    )


@pytest.fixture
async def station() -> AsyncIterator[Station]:
    sim_hb, cd_hb = free_udp_port(), free_udp_port()
    sim = network(plan(sim_hb, cd_hb))
    reports: list[Message] = []
    events: list[LinkEvent] = []
    errors: list[DriverError] = []
    cd = IfsfNode(
        LinkSettings(
            lnas=(CD,),
            tcp_host="127.0.0.1",
            tcp_port=0,
            heartbeat_host="127.0.0.1",
            heartbeat_port=cd_hb,
            # Every node shares the heartbeat port: the loopback broadcast reaches them all.
            heartbeat_destinations=(("127.255.255.255", sim_hb),),
            **FAST,  # type: ignore[arg-type]
        ),
        name="cd",
        on_report=reports.append,
        on_event=events.append,
        on_error=errors.append,
    )
    async with sim, cd:
        for lna in (NODE_1, NODE_2):
            await cd.wait_link(lna, 5)
            await cd.write(lna, db.COM_SV, {0x0B: CD})
        yield Station(sim, IfsfController(sim, seed=3), cd, reports, events, errors)


async def test_a_sale_authorised_filled_read_locked_and_cleared(station: Station) -> None:
    cd = station.cd
    reply = await cd.read(NODE_1, FP1, [0x14])
    assert reply.values() == {0x14: 2}  # Closed until the CD opens it
    await cd.command(NODE_1, FP1, 0x3C)
    await cd.command(NODE_1, FP1, 0x3E, items={0x1B: Decimal("5.00"), 0x19: 0x01, 0x1E: CD})
    assert (await cd.read(NODE_1, FP1, [0x14])).values() == {0x14: 5}
    await station.do("lift 1 1")
    done = await station.do("fill 1 rate 120")
    assert "amount=5.00" in done and "volume=2.79" in done
    await station.do("hangup 1")
    await until(lambda: station.states(NODE_1)[-1:] == [3])
    assert station.states(NODE_1)[:4] == [3, 5, 6, 8]
    running = [
        m
        for m in station.reports
        if isinstance(m.body, Unsolicited) and m.body.items[0].data_id == 0x66
    ]
    assert running, "running amount and volume were reported during the fill"
    unpaid = await cd.read(NODE_1, db.TransactionBuffer(1, 0, every=True), [0x01, 0x05, 0x06, 0x15])
    ((address, values),) = unpaid.records()
    assert address == db.TransactionBuffer(1, 1)
    assert values == {0x01: 1, 0x05: Decimal("5.00"), 0x06: Decimal("2.79"), 0x15: 2}
    await cd.command(NODE_1, address, 0x1F)  # Lock
    await cd.command(NODE_1, address, 0x1E)  # Clear
    assert (await cd.read(NODE_1, address, [0x15])).values() == {0x15: 1}
    none_left = await cd.read(NODE_1, db.TransactionBuffer(1, 0, every=True), [0x01])
    assert none_left.records() == []
    totals = (await cd.read(NODE_1, db.LogicalNozzle(1, 1), [0x14, 0x15])).values()
    assert totals == {0x14: Decimal("2.79"), 0x15: Decimal("5.00")}


async def test_every_node_answers_for_its_own_fps(station: Station) -> None:
    every = await station.cd.read(NODE_2, db.FuellingPoint(0), [0x14, 0x04])
    assert [a for a, _ in every.records()] == [db.FuellingPoint(1), db.FuellingPoint(2)]
    assert [v[0x04] for _, v in every.records()] == [2, 1]
    status = await station.do("status 3")
    assert "node=1.2 fp=2" in status


async def test_refusal_is_busy_then_accepted(station: Station) -> None:
    await station.do("refuse 1 1")
    with pytest.raises(Refused) as refused:
        await station.cd.command(NODE_1, FP1, 0x3C)
    assert refused.value.ms_ack == 7
    await station.cd.command(NODE_1, FP1, 0x3C)


async def test_a_silent_node_is_lost_and_comes_back(station: Station) -> None:
    await station.do("silent 1")
    await until(
        lambda: any(isinstance(e, PeerLost) and e.peer.lna == NODE_1 for e in station.events)
    )
    heard = len([e for e in station.events if isinstance(e, PeerHeard) and e.peer.lna == NODE_1])
    await station.do("answer 1")
    await until(
        lambda: (
            len([e for e in station.events if isinstance(e, PeerHeard) and e.peer.lna == NODE_1])
            > heard
        )
    )
    await station.cd.wait_link(NODE_1, 5)
    assert (await station.cd.read(NODE_1, FP1, [0x14])).values() == {0x14: 2}
    # The other node went on meanwhile.
    assert (await station.cd.read(NODE_2, FP1, [0x14])).values() == {0x14: 2}


async def test_dropped_links_open_again(station: Station) -> None:
    before = len([e for e in station.events if isinstance(e, LinkUp)])
    await station.do("drop 1")
    await until(lambda: any(isinstance(e, LinkDown) for e in station.events))
    await until(lambda: len([e for e in station.events if isinstance(e, LinkUp)]) > before)
    await station.cd.wait_link(NODE_1, 5)
    assert (await station.cd.read(NODE_1, FP1, [0x14])).values() == {0x14: 2}


async def test_garbage_is_reported_and_the_link_recovers(station: Station) -> None:
    await station.do("garbage 1 2")
    await until(lambda: len(station.errors) >= 1)
    await asyncio.sleep(0.3)
    await station.cd.wait_link(NODE_1, 5)
    reply = await station.cd.read(NODE_1, FP1, [0x14], timeout=2)
    assert reply.values() == {0x14: 2}


async def test_power_cycle_closes_the_fp_and_keeps_the_sale(station: Station) -> None:
    cd = station.cd
    await cd.command(NODE_1, FP1, 0x3C)
    await cd.command(NODE_1, FP1, 0x3E, items={0x19: 0x01})
    await station.do("lift 1 1")
    fill = asyncio.ensure_future(station.control.handle("fill 1"))
    await station.do("wait 1 fuelling timeout 5")
    await asyncio.sleep(0.3)
    await station.do("power-cycle 1 0.2")
    reply = await fill
    assert reply is not None and "state=closed" in reply.line
    await cd.wait_link(NODE_1, 5)
    assert (await cd.read(NODE_1, FP1, [0x14])).values() == {0x14: 2}
    unpaid = await cd.read(NODE_1, db.TransactionBuffer(1, 0, every=True), [0x06, 0x15])
    ((_, values),) = unpaid.records()
    assert values[0x15] == 2 and values[0x06] > 0


async def test_random_customers_are_served_by_a_releasing_cd(station: Station) -> None:
    cd = station.cd
    for lna in (NODE_1, NODE_2):
        await cd.command(lna, db.FuellingPoint(0), 0x3C)
    station.control.mean_interval_s = 0.2
    assert (await station.do("customers random")) == "ok customers=random"
    for crowd in station.sim.random.values():
        crowd.wait_s = 5.0
        crowd.rates_lps = (20.0, 30.0)
    sold = 0
    async with asyncio.timeout(20):
        while sold < 2:
            for lna in (NODE_1, NODE_2):
                states = await cd.read(lna, db.FuellingPoint(0), [0x14])
                for address, values in states.records():
                    if values[0x14] == 4:  # Calling: release it
                        await cd.command(lna, address, 0x3E)
                unpaid = await cd.read(lna, db.TransactionBuffer(0, 0, every=True), [0x06])
                for address, _values in unpaid.records():
                    await cd.command(lna, address, 0x1E)
                    sold += 1
            await asyncio.sleep(0.1)
    assert (await station.do("customers none")) == "ok customers=none"


async def test_random_customers_come_only_to_the_fps_given(station: Station) -> None:
    """The demo keeps some FPs for pay-at-pump orders: walk-in customers use the others."""
    sim = station.sim
    for lna in (NODE_1, NODE_2):
        await station.cd.command(lna, db.FuellingPoint(0), 0x3C)  # every FP open, Idle
    pump_3 = next(f for f in sim.fps if f.number == 3)  # node 1.2, FP 2
    sim.set_random(True, mean_interval_s=0.05, seed=1, fps=[pump_3])
    assert set(sim.random) == {NODE_2}  # node 1.1 has no FP in the list: no customers there
    await until(lambda: pump_3.nozzle_out is not None)  # a customer lifted a nozzle ...
    await asyncio.sleep(0.5)  # ... and the others came to no other FP
    assert [f.number for f in sim.fps if f.nozzle_out is not None] == [3]
    sim.set_random(False)
    assert pump_3.nozzle_out is None


async def test_customers_sent_away_mid_fill_are_seen_by_the_cd(station: Station) -> None:
    """`customers none` (the demo stopping): the customer at a pump hangs up, and the CD is
    told, so that it records the sale rather than waiting for a fill that ended."""
    cd, sim = station.cd, station.sim
    await cd.command(NODE_1, FP1, 0x3C)
    sim.set_random(True, mean_interval_s=0.05, seed=1, fps=sim.fps[:1])
    (crowd,) = sim.random.values()
    crowd.rates_lps = (0.05, 0.06)  # a fill that lasts
    async with asyncio.timeout(10):
        while sim.fps[0].point.state is not FpState.CALLING:
            await asyncio.sleep(0.02)
    await cd.command(NODE_1, FP1, 0x3E)
    await until(lambda: station.states(NODE_1)[-1:] == [8])  # Fuelling
    sim.set_random(False)
    await until(lambda: station.states(NODE_1)[-1:] == [3])  # Idle, the sale payable
    unpaid = await cd.read(NODE_1, db.TransactionBuffer(1, 0, every=True), [0x15])
    assert [values[0x15] for _, values in unpaid.records()] == [2]


async def test_the_example_script_sells_at_a_cd_that_releases_and_clears(station: Station) -> None:
    cd = station.cd
    await cd.command(NODE_1, FP1, 0x3C)
    text = (ROOT / "config" / "scripts" / "ifsf-sale.sim").read_text(encoding="utf-8")
    lines = text.replace("rate 60 ", "rate 900 ").splitlines()  # the same sale, faster
    replies: list[str] = []
    script = asyncio.ensure_future(run_script(station.control, lines, replies.append))
    every = db.TransactionBuffer(1, 0, every=True)
    async with asyncio.timeout(30):
        while not script.done():
            if (await cd.read(NODE_1, FP1, [0x14])).values()[0x14] == 4:  # Calling
                await cd.command(NODE_1, FP1, 0x3E)
            for address, values in (await cd.read(NODE_1, every, [0x05, 0x15])).records():
                assert values[0x05] == Decimal("20.00")
                await cd.command(NODE_1, address, 0x1F)
                await cd.command(NODE_1, address, 0x1E)
            await asyncio.sleep(0.05)
    assert script.result().ok, replies
    assert len(replies) == 6 and "filled state=fuelling volume=11.17 amount=20.00" in replies[2]
    assert "unpaid=none" in replies[-1] and "totals=1:11.17:20.00" in replies[-1]


async def test_heartbeats_say_where_each_node_listens_and_sinopec_needs_configuration() -> None:
    sim_hb = free_udp_port()
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    cd_hb = listener.getsockname()[1]
    loop = asyncio.get_running_loop()

    async def next_heartbeats() -> dict[Lna, Heartbeat]:
        found: dict[Lna, Heartbeat] = {}
        async with asyncio.timeout(5):
            while len(found) < 2:
                heartbeat = decode_heartbeat(await loop.sock_recv(listener, 64))
                found[heartbeat.lna] = heartbeat
        return found

    try:
        async with network(plan(sim_hb, cd_hb, profile="sinopec")) as sim:
            heard = await next_heartbeats()
            for node in sim.nodes:
                assert heard[node.lna].port == node.tcp_port
                assert str(heard[node.lna].ip) == "127.0.0.1"
                assert heard[node.lna].status == 0x01  # configuration needed: FPs not open
            model = sim.nodes[0].model
            model.receive(
                Message(model.lna, CD, 1, db.FuellingPoint(0), Write((it(FP1, 0x3C),))), 0
            )
            await asyncio.sleep(0.25)
            while True:  # what was sent before the FPs opened may still be queued
                try:
                    listener.recv(64)
                except BlockingIOError:
                    break
            heard = await next_heartbeats()
            assert heard[NODE_1].status == 0 and heard[NODE_2].status == 0x01
    finally:
        listener.close()


# ------------------------------------------------------------------ control language
def test_parse_the_ifsf_verbs() -> None:
    assert parse_command("drop 2") == Drop(PumpRef(2))
    assert parse_command("garbage 2 5") == Garbage(PumpRef(2), 5)
    assert parse_command("garbage 2") == Garbage(PumpRef(2), 1)
    assert parse_command("wait 1 calling timeout 3") == WaitForState(
        PumpRef(1), "calling", Decimal(3)
    )
    assert parse_command("wait 1 filling") == WaitForState(PumpRef(1), "fuelling", None)
    assert parse_command("hangup 1") == HangUp(PumpRef(1))
    assert parse_command("# nothing") is None
    for bad, code in (
        ("drop", "syntax"),
        ("garbage 1 x", "bad_number"),
        ("wait 1 flying", "syntax"),
        ("explode 1", "unknown_command"),
    ):
        with pytest.raises(CommandSyntaxError) as caught:
            parse_command(bad)
        assert caught.value.code == code, bad


async def test_controller_errors_are_replies(station: Station) -> None:
    for line, code in (
        ("lift 9 1", "unknown_pump"),
        ("lift 0x50 1", "unknown_pump"),
        ("hangup 1", "wrong_state"),
        ("fill 1", "wrong_state"),
        ("lift 1 7", "wrong_state"),
    ):
        reply = await station.control.handle(line)
        assert reply is not None and not reply.ok
        assert reply.line.startswith(f"error {code} "), reply.line
    await station.do("lift 1 1")
    reply = await station.control.handle("fill 1 wait 0.3")
    assert reply is not None and reply.line.startswith("error not_authorized ")


async def test_serve_runs_a_script_to_its_end() -> None:
    sim_hb, cd_hb = free_udp_port(), free_udp_port()
    sim = simulation()
    assert sim.network is not None
    nodes = sim.network(plan(sim_hb, cd_hb, profile="sinopec"))
    lines: list[str] = []
    script = ["status 1", "lift 1 1", "wait 1 nozzle-out timeout 2", "hangup 1", "price 3", "quit"]
    status = await sim.serve(
        [nodes],
        ServePlan(numbers={}, script=script, script_name="t.sim"),
        asyncio.Event(),
        lines.append,
        lines.append,
    )
    assert status == 0
    replies = [line for line in lines if line.startswith(("ok", "error"))]
    assert len(replies) == 6 and all(r.startswith("ok") for r in replies)
    assert replies[4] == "ok pump=3 prices=1:1.89"


async def test_serve_fails_a_script_at_its_first_error() -> None:
    sim_hb, cd_hb = free_udp_port(), free_udp_port()
    lines: list[str] = []
    status = await serve(
        [network(plan(sim_hb, cd_hb))],
        ServePlan(numbers={}, script=["status", "hangup 2", "status"], script_name="bad.sim"),
        asyncio.Event(),
        lines.append,
        lines.append,
    )
    assert status == 1
    assert lines[-1].startswith("simulate ifsf: bad.sim:2: error wrong_state")


# ------------------------------------------------------------------ edgectl simulate ifsf
@pytest.fixture(autouse=True)
def _logs_stay_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    # The command points the process's logging at its stderr, which capsys closes after the
    # test: later tests would log into a closed file.
    monkeypatch.setattr("edgectl.logs.configure", lambda **_: None)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="edgectl")
    simulate_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate", "ifsf", "--heartbeat-port", "0", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_runs_a_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "sale.sim"
    script.write_text("status 2\nlift 2 1\nwait 2 nozzle-out timeout 2\nhangup 2\nquit\n")
    code, out, _err = _cli(["--fps", "2", "--script", str(script)], capsys)
    assert code == 0
    assert "ifsf: node 1.1 at 127.0.0.1:" in out and "pump 2 = FP 2 (4 nozzles)" in out
    assert "ok pump=2 node=1.1 fp=2" in out and "state=closed volume=0.00" in out
    assert out.count("\nok ") == 5


def test_cli_script_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "bad.sim"
    script.write_text("lift 1 1\nwait 1 calling timeout 0.2\n")
    code, _out, err = _cli(["--script", str(script)], capsys)
    assert code == 1
    assert f"simulate ifsf: {script}:2: error timeout pump 1 not calling" in err


def test_cli_dit_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "quit.sim"
    script.write_text("quit\n")
    argv = ["--nozzles", "3", "--node-per-nozzle", "--first-node", "9", "--profile", "petrochina"]
    code, out, _err = _cli([*argv, "--script", str(script)], capsys)
    assert code == 0
    for node, pump in ((9, 1), (10, 2), (11, 3)):
        assert f"node 1.{node} at" in out and f"petrochina: pump {pump} = FP 1 (1 nozzles)" in out


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--fps", "5"], "--fps 1-4"),
        (["--profile", "shell"], "no IFSF profile 'shell'"),
        (["--first-node", "127", "--nodes", "2"], "nodes 1.127-1.128"),
        (["--keep-running"], "--keep-running goes with --script"),
    ],
)
def test_cli_refuses_what_it_cannot_simulate(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = _cli(argv, capsys)
    assert code == 2
    assert said in err


# ------------------------------------------------------------------ the controller's start-up
@pytest.mark.parametrize("name", ["generic", "sinopec", "petrochina"])
async def test_the_start_up_sequence_against_the_simulator(name: str) -> None:
    """startup.py (the CD's side) against the simulated dispenser of the same profile: it
    registers, configures, opens, finds no sale; after a sale and a restart of the CD's
    sequence it finds the Payable one, and with the Chinese profiles an offline sale."""
    profile = profiles.profile(name)
    sim_hb, cd_hb = free_udp_port(), free_udp_port()
    sim = network(plan(sim_hb, cd_hb, profile=name))
    cd = IfsfNode(
        profile.link_settings(
            tcp_host="127.0.0.1",
            tcp_port=0,
            heartbeat_host="127.0.0.1",
            heartbeat_port=cd_hb,
            heartbeat_destinations=(("127.255.255.255", sim_hb),),
            **FAST,
        ),
        name="cd",
    )
    setup = StartupPlan(
        products=(
            ProductSetup(1, 1, {1: Decimal("1.81")}),
            ProductSetup(2, 2, {1: Decimal("1.67")}),
        ),
        nozzles=(NozzleSetup(1, 1, 1), NozzleSetup(1, 2, 2)),
        calculator={0x0B: 0},
        fp_settings={0x07: 1},
    )
    async with sim, cd:
        await cd.wait_link(NODE_1, 5)
        first = await start_up(cd, NODE_1, profile, setup)
        assert first.warnings == ()
        assert first.opened == (1,) and first.fp_states == {1: 3}
        assert first.sales == () and first.offline == ()
        model = sim.nodes[0].model
        assert model.recipients == [profile.controller_lna]
        assert model.price(1) == Decimal("1.81")
        control = IfsfController(sim)
        await cd.command(NODE_1, FP1, 0x3E, items={0x1C: Decimal("2.00"), 0x19: 0x03})
        assert (await control.handle("lift 1 2")) is not None
        reply = await control.handle("fill 1 rate 900")
        assert reply is not None and reply.ok, reply
        await control.handle("hangup 1")
        if profile.offline_sales:  # the CD goes; a customer fills on the FP's own authority
            sim.nodes[0].model.set_cd_online(False)
            await control.handle("lift 1 1")
            await control.handle("fill 1 volume 1.00 rate 900")
            await control.handle("hangup 1")
            sim.nodes[0].model.set_cd_online(True)
        again = await start_up(cd, NODE_1, profile, setup)
        assert again.opened == ()  # open already: nothing to open, configuration refused
        (sale,) = again.sales
        assert (sale.fp, sale.seq, sale.state, sale.volume, sale.amount, sale.nozzle) == (
            1,
            1,
            2,
            Decimal("2.00"),
            Decimal("3.34"),
            2,
        )
        if profile.offline_sales:
            (offline,) = again.offline
            assert offline[0x06] == Decimal("1.00") and offline[0xCA]


async def test_a_sale_ended_while_the_cd_was_away_is_found_by_the_next_one() -> None:
    """The CD stops mid-fill (as a SIGKILLed daemon's node does); the customer finishes
    and hangs up; a new CD process (another TCP port) starts up and finds the Payable sale."""
    sim_hb, cd_hb = free_udp_port(), free_udp_port()
    profile = profiles.profile("generic")

    def cd_node() -> IfsfNode:
        return IfsfNode(
            profile.link_settings(
                tcp_host="127.0.0.1",
                tcp_port=0,
                heartbeat_host="127.0.0.1",
                heartbeat_port=cd_hb,
                heartbeat_destinations=(("127.255.255.255", sim_hb),),
                **FAST,
            ),
            name="cd",
        )

    async with network(plan(sim_hb, cd_hb)) as sim:
        control = IfsfController(sim)
        first = cd_node()
        async with first:
            await first.wait_link(NODE_1, 5)
            await start_up(first, NODE_1, profile, StartupPlan())
            await first.command(NODE_1, FP1, 0x3E, items={0x1B: Decimal("3.58")})
            await control.handle("lift 1 1")
            filling = asyncio.ensure_future(control.handle("fill 1 rate 60"))
            assert (await control.handle("wait 1 fuelling timeout 5")) is not None
        # The CD is gone; the fill goes on to its preset and the customer hangs up.
        reply = await filling
        assert reply is not None and reply.ok and "amount=3.58" in reply.line, reply
        await control.handle("hangup 1")
        second = cd_node()
        async with second:
            await second.wait_link(NODE_1, 5)
            found = await start_up(second, NODE_1, profile, StartupPlan())
    ((sale),) = found.sales
    assert (sale.seq, sale.state, sale.amount, sale.volume) == (
        1,
        2,
        Decimal("3.58"),
        Decimal("2.00"),
    )
    assert found.fp_states == {1: 3}


async def test_a_failed_send_does_not_stop_the_simulator_ticking(station: Station) -> None:
    """A send that fails in a tick (a TransportError: a link broken under it) is logged and
    the ticking goes on: in the chaos run the ticker died of one and every dispenser stood
    still until the harness gave up."""
    node = station.sim.nodes[0]
    assert node.node is not None
    real_send = node.node.send
    failures = [TransportError("send failed: Connection lost", device="node")]

    async def broken_once(message: Message) -> None:
        if failures:
            raise failures.pop()
        await real_send(message)

    node.node.send = broken_once  # type: ignore[method-assign]
    state = unsolicited(NODE_1, CD, FP1, [it(FP1, 0x14, 2)])
    station.sim._outbox[NODE_1] = [state]
    await until(lambda: not failures)
    station.sim._outbox[NODE_1] = [state]
    await until(lambda: any(m.originator == NODE_1 for m in station.reports))
    assert all(not task.done() for task in station.sim._tasks)
