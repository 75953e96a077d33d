"""A station with an IFSF line, from its station.toml to the sale: the real daemon (edgectl
run's Daemon, in this process) against the IFSF network simulator on loopback. One pay-at-pump
order, one sale recorded and cleared at the dispenser, and `edgectl status` showing the pump
by its node and FP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.ifsf.dispenser import FpState
from drivers.ifsf.sim import IfsfSimulator, paying_customer
from edgectl.config import Config, load_config
from edgectl.daemon import Daemon
from edgectl.station import OrderRequest
from tests.control.clikit import acall, acli, short_dir
from tests.drivers.ifsf.loopback import free_udp_port
from tests.ifsfkit import one_node_simulator
from tests.stationkit import daemon_running, rows, until

D = Decimal

STATION = """
[station]
id = "IFSF-STATION"
currency = "CNY"

[store]
path = "{tmp}/edgectl.db"

[authorization]
mode = "cloud"
authorize_timeout_s = 60

[logging]
level = "debug"
format = "json"

[control]
socket = "{tmp}/control.sock"

[[grades]]
id = "92"
name = "92"
unit_price = "7.45"

[[grades]]
id = "95"
name = "95"
unit_price = "7.93"

[[lines]]
name = "forecourt"
protocol = "ifsf"
profile = "generic"
controller_lna = "2.1"
tcp_port = 0
heartbeat_port = {cd_hb}
heartbeat_to = ["127.0.0.1:{sim_hb}"]
heartbeat_interval_s = 0.2
missed_heartbeats = 10
reply_timeout_ms = 2000
products = {{ "92" = 1, "95" = 2 }}

[[pumps]]
number = 1
line = "forecourt"
node = "1.1"
fp = 1
nozzles = {{ 1 = "92", 2 = "95" }}
"""


@contextlib.asynccontextmanager
async def station() -> AsyncIterator[tuple[Config, Daemon, IfsfSimulator]]:
    with short_dir() as tmp:
        cd_hb, sim_hb = free_udp_port(), free_udp_port()
        path = Path(tmp) / "station.toml"
        path.write_text(STATION.format(tmp=tmp, cd_hb=cd_hb, sim_hb=sim_hb), encoding="utf-8")
        config = load_config(path)
        sim = one_node_simulator(config, 1, sim_hb, cd_hb)
        await sim.start()
        try:
            async with daemon_running(config) as daemon:
                yield config, daemon, sim
        finally:
            await sim.stop()


@pytest.mark.timeout(90)
async def test_a_pay_at_pump_order_on_an_ifsf_dispenser_is_sold_and_cleared() -> None:
    async with station() as (config, daemon, sim):
        fp = sim.fps[0]
        # The station's prices reach the dispenser's product 2 (95) in fuelling mode 1.
        await until(lambda: fp.node.model.price(2) == D("7.93"), 15, "prices sent")
        order = OrderRequest(
            order_id="o-ifsf-1",
            cmd_id="cmd-o-ifsf-1",
            pump=1,
            preset_type="amount",
            preset_value=D("79.30"),
            currency="CNY",
            nozzles=(2,),
        )
        await daemon.station.start_order(order)
        await paying_customer(fp, 2, random.Random(1))
        db = config.store.path
        await until(lambda: len(rows(db, "SELECT * FROM sales")) == 1, 20, "the sale recorded")
        (sale,) = rows(db, "SELECT * FROM sales")
        assert (sale["pump"], sale["nozzle"], sale["grade"]) == (1, 2, "95")
        assert (sale["volume"], sale["amount"], sale["order_id"]) == ("10.00", "79.30", "o-ifsf-1")
        point = fp.point
        # Committed, then cleared at the dispenser: nothing left Payable in its buffer.
        await until(lambda: bool(point.transactions) and not point.unpaid(), 10, "sale cleared")
        assert point.state is FpState.IDLE
        (stored,) = rows(db, "SELECT status FROM orders WHERE order_id = 'o-ifsf-1'")
        assert stored["status"] == "completed"

        status = await acall(config.control.socket, "status")
        (pump,) = status["pumps"]
        assert (pump["pump"], pump["line"], pump["address"], pump["online"]) == (
            1,
            "forecourt",
            "1.1/FP1",
            True,
        )
        shown = await acli("status", "--config", str(config.source))
        assert shown.code == 0, shown.err
        assert "1.1/FP1" in shown.out and "forecourt" in shown.out


async def test_config_check_shows_the_ifsf_line() -> None:
    with short_dir() as tmp:
        path = Path(tmp) / "station.toml"
        path.write_text(STATION.format(tmp=tmp, cd_hb=3486, sim_hb=3487), encoding="utf-8")
        checked = await acli("config", "check", str(path), "--json")
        assert checked.code == 0, checked.err + checked.out
        assert '"protocol": "ifsf"' in checked.out
        assert "profile generic, LNA 2.1, heartbeat UDP 3486" in checked.out


async def test_sniff_shows_the_ifsf_messages_decoded_live() -> None:
    async with station() as (config, daemon, _sim):
        where = ("--config", str(config.source))
        # Everything: the heartbeats both ways among the rest, every message decoded.
        shown = await acli("sniff", "forecourt", "--json", "--count", "6", *where, timeout=30)
        assert shown.code == 0, shown.err
        events = [json.loads(line) for line in shown.out.splitlines()]
        assert "sniffing line forecourt (ifsf on IP)" in shown.err
        assert len(events) == 6 and all(e["valid"] for e in events)
        beats = [e for e in events if e["type"] == "HEARTBEAT"]
        assert beats, events
        assert {e["from"] for e in beats} <= {"controller", "node 1.1"}
        assert all(e["frame"]["raw"] == e["hex"] for e in events)
        # Without the heartbeats: what a release writes and the dispenser answers.
        sniff = asyncio.create_task(
            acli("sniff", "forecourt", "--json", "--no-polls", "--count", "2", *where, timeout=30)
        )
        await asyncio.sleep(1.5)  # the stream is open
        await daemon.station.start_order(
            OrderRequest(
                order_id="o-sniff",
                cmd_id="cmd-o-sniff",
                pump=1,
                preset_type="amount",
                preset_value=D("20.00"),
                currency="CNY",
                nozzles=(1,),
            )
        )
        quiet = await sniff
        assert quiet.code == 0, quiet.err
        messages = [json.loads(line) for line in quiet.out.splitlines()]
        assert messages[0]["type"] == "WRITE", messages
        write = messages[0]
        assert (write["direction"], write["address"]) == ("tx", "1.1")
        assert "FP 1" in write["summary"] and "Release_FP" in write["summary"], write["summary"]
        assert "HEARTBEAT" not in {e["type"] for e in messages}
        human = await acli("sniff", "forecourt", "--count", "3", *where, timeout=30)
        assert human.code == 0, human.err
        assert "HEARTBEAT" in human.out or "READ" in human.out or "ANSWER" in human.out
