"""A PetroChina DIT dispenser (one IFSF node per nozzle) at a station: the real daemon against
the IFSF simulator laid out by `dit_layout`, a two-nozzle dispenser whose nozzles are the
nodes 1.9 and 1.10, each with FP 1 and logical nozzle 1.

The station config gives each node its own `[[pumps]]`: a DIT node is a fuelling point of
its own (its own FP_State and transaction buffer), so the dispenser's two nozzles are the
station's pumps 1 and 2, each with nozzle 1. A pay-at-pump order on one and a walk-in sale
(auto mode) on the other are each recorded once, on the right pump, nozzle and grade, and
cleared at their node."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.ifsf.dispenser import (
    PETROCHINA,
    FpState,
    NozzleSpec,
    ProductSpec,
    dit_layout,
    normal_fill,
)
from drivers.ifsf.encodings import Lna
from drivers.ifsf.links import LinkSettings
from drivers.ifsf.sim import IfsfSimulator, SimFp, paying_customer
from edgectl.config import Config, load_config
from edgectl.daemon import Daemon
from edgectl.station import OrderRequest
from tests.control.clikit import acall, acli, short_dir
from tests.drivers.ifsf.loopback import free_udp_port
from tests.stationkit import daemon_running, rows, until

D = Decimal

STATION = """
[station]
id = "DIT-STATION"
currency = "CNY"

[store]
path = "{tmp}/edgectl.db"

[authorization]
mode = "auto"
auto_preset_amount = "100.00"
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
name = "dit"
protocol = "ifsf"
profile = "petrochina"
controller_lna = "2.1"
tcp_port = 0
heartbeat_port = {cd_hb}
heartbeat_to = ["127.0.0.1:{hb_9}", "127.0.0.1:{hb_10}"]
heartbeat_interval_s = 0.2
missed_heartbeats = 10
reply_timeout_ms = 2000
products = {{ "92" = 1, "95" = 2 }}

# One dispenser, two nozzles, one node each (DIT): each node is a pump with nozzle 1.
[[pumps]]
number = 1
line = "dit"
node = "1.9"
fp = 1
nozzles = {{ 1 = "92" }}

[[pumps]]
number = 2
line = "dit"
node = "1.10"
fp = 1
nozzles = {{ 1 = "95" }}
"""

# The products are set at the dispenser (PetroChina: the controller downloads prices only),
# so they start at other prices: the station's reaching them is part of the test.
PRODUCTS = (
    ProductSpec(1, "92", {1: D("7.00")}),
    ProductSpec(2, "95", {1: D("7.50")}),
)


def dit_simulator(hb_ports: dict[int, int], cd_hb: int) -> IfsfSimulator:
    """Nodes 1.9 (92) and 1.10 (95), as one DIT board presents a two-nozzle dispenser. Each
    node hears the controller's heartbeat on a port of its own: on loopback the controller
    unicasts to each (a real board hears the subnet broadcast)."""
    specs = dit_layout(9, [NozzleSpec(1), NozzleSpec(2)], PRODUCTS, dialect=PETROCHINA)
    settings = [
        LinkSettings(
            lnas=(spec.lna,),
            tcp_host="127.0.0.1",
            tcp_port=0,
            advertise_ip="127.0.0.1",
            heartbeat_host="0.0.0.0",
            heartbeat_port=hb_ports[spec.lna.node],
            heartbeat_destinations=(("127.0.0.1", cd_hb),),
            heartbeat_interval_s=0.2,
            send_heartbeat=False,
        )
        for spec in specs
    ]
    numbers = {(Lna(1, 9), 1): 1, (Lna(1, 10), 1): 2}
    return IfsfSimulator(specs, settings, name="dit", heartbeat_interval_s=0.2, numbers=numbers)


@contextlib.asynccontextmanager
async def station() -> AsyncIterator[tuple[Config, Daemon, IfsfSimulator]]:
    with short_dir() as tmp:
        cd_hb, hb_9, hb_10 = free_udp_port(), free_udp_port(), free_udp_port()
        path = Path(tmp) / "station.toml"
        text = STATION.format(tmp=tmp, cd_hb=cd_hb, hb_9=hb_9, hb_10=hb_10)
        path.write_text(text, encoding="utf-8")
        config = load_config(path)
        sim = dit_simulator({9: hb_9, 10: hb_10}, cd_hb)
        await sim.start()
        try:
            async with daemon_running(config) as daemon:
                yield config, daemon, sim
        finally:
            await sim.stop()


def fp_of(sim: IfsfSimulator, node: int) -> SimFp:
    (found,) = [fp for fp in sim.fps if fp.node.lna == Lna(1, node)]
    return found


@pytest.mark.timeout(120)
async def test_a_dit_dispenser_sells_an_order_and_a_walk_in_each_once_on_its_own_node() -> None:
    async with station() as (config, daemon, sim):
        nozzle_92, nozzle_95 = fp_of(sim, 9), fp_of(sim, 10)
        assert (nozzle_92.number, nozzle_95.number) == (1, 2)
        # Each node gets the station's price of the product its one nozzle sells.
        await until(lambda: nozzle_92.node.model.price(1) == D("7.45"), 15, "92 priced")
        await until(lambda: nozzle_95.node.model.price(2) == D("7.93"), 15, "95 priced")

        # Pay-at-pump on the 95 nozzle (node 1.10): the order's pump 2, nozzle 1.
        order = OrderRequest(
            order_id="o-dit-1",
            cmd_id="cmd-o-dit-1",
            pump=2,
            preset_type="amount",
            preset_value=D("79.30"),
            currency="CNY",
            nozzles=(1,),
        )
        await daemon.station.start_order(order)
        await paying_customer(nozzle_95, 1, random.Random(2))
        # A walk-in at the 92 nozzle (node 1.9): auto mode releases it, 5 litres.
        walk_in = sim.play(nozzle_92, normal_fill(1, volume=D("5.00"), wait_s=15.0))
        await sim.wait_until(lambda: walk_in.done, 60)
        assert walk_in.outcome == "done"

        db = config.store.path
        await until(lambda: len(rows(db, "SELECT * FROM sales")) == 2, 20, "both sales recorded")
        await asyncio.sleep(1.0)  # time to record a sale twice, were it to
        sales = rows(db, "SELECT * FROM sales ORDER BY pump")
        assert [(s["pump"], s["nozzle"], s["grade"]) for s in sales] == [(1, 1, "92"), (2, 1, "95")]
        walked, ordered = sales
        assert (walked["volume"], walked["amount"], walked["order_id"]) == ("5.00", "37.25", None)
        assert (ordered["volume"], ordered["amount"], ordered["order_id"]) == (
            "10.00",
            "79.30",
            "o-dit-1",
        )
        # Committed, then cleared at each node: nothing Payable left in either buffer.
        for fp in (nozzle_92, nozzle_95):
            point = fp.point
            await until(
                lambda p=point: len(p.transactions) == 1 and not p.unpaid(), 10, "sale cleared"
            )
            assert point.state is FpState.IDLE
        (stored,) = rows(db, "SELECT status FROM orders WHERE order_id = 'o-dit-1'")
        assert stored["status"] == "completed"

        status = await acall(config.control.socket, "status")
        shown = {p["pump"]: (p["address"], p["online"]) for p in status["pumps"]}
        assert shown == {1: ("1.9/FP1", True), 2: ("1.10/FP1", True)}


async def test_config_check_accepts_a_dit_dispenser_as_a_pump_per_node() -> None:
    with short_dir() as tmp:
        path = Path(tmp) / "station.toml"
        text = STATION.format(tmp=tmp, cd_hb=3485, hb_9=3485, hb_10=3485)
        path.write_text(text, encoding="utf-8")
        checked = await acli("config", "check", str(path))
        assert checked.code == 0, checked.err + checked.out
        config = load_config(path)
        assert [(p.number, p.node, p.fp, dict(p.nozzles)) for p in config.pumps] == [
            (1, "1.9", 1, {1: "92"}),
            (2, "1.10", 1, {1: "95"}),
        ]
