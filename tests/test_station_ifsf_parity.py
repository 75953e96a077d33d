"""IFSF pumps as DART ones (issue 15.7): the totals alarm, the technician CLI and what the
cloud is told, on one station with a DART pump (1, on a pty) and an IFSF pump (2, FP 1 of
node 1.1 on loopback), the real daemon in this process. The cloud cannot tell them apart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.ifsf.dispenser import Fill, FpState, HangUp, Lift
from drivers.ifsf.sim import IfsfSimulator, SimFp
from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import Customer, DartLineSimulator, SimPump, preset_fill
from edgectl.config import Config, load_config
from edgectl.daemon import Daemon
from edgectl.errors import CommandError
from edgectl.station import OrderRequest
from tests.cloudkit import TestCloud, cloud_section
from tests.control.clikit import Result, acli, short_dir
from tests.drivers.ifsf.loopback import free_udp_port
from tests.ifsfkit import one_node_simulator
from tests.mqttkit import MosquittoBroker
from tests.stationkit import daemon_running, rows, start_simulators, until

D = Decimal
DART, IFSF = 1, 2  # the station's pump numbers

STATION = """
[station]
id = "MIXED-01"
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
{cloud}
[[grades]]
id = "92"
name = "92"
unit_price = "7.45"

[[grades]]
id = "95"
name = "95"
unit_price = "7.93"

[[lines]]
name = "l0"
port = "{tmp}/l0"
protocol = "wayne_dart"
reply_timeout_ms = 150

[[pumps]]
number = 1
line = "l0"
address = 0x50
nozzles = {{ 1 = "92", 2 = "95" }}

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
number = 2
line = "forecourt"
node = "1.1"
fp = 1
nozzles = {{ 1 = "92", 2 = "95" }}
"""


@dataclass
class Mixed:
    config: Config
    daemon: Daemon
    dart: DartLineSimulator
    ifsf: IfsfSimulator

    @property
    def db(self) -> Path:
        return self.config.store.path

    @property
    def socket(self) -> Path:
        return self.config.control.socket

    @property
    def pump(self) -> SimPump:
        """The DART pump, 1."""
        return self.dart.pump(0x50)

    @property
    def fp(self) -> SimFp:
        """The IFSF fuelling point, pump 2."""
        return self.ifsf.fps[0]

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return rows(self.db, sql)

    async def cli(self, *args: str) -> Result:
        return await acli(*args, "--config", str(self.config.source))

    async def json(self, *args: str) -> Any:
        done = await self.cli(*args, "--json")
        assert done.code == 0, done.err
        return done.json()

    async def ifsf_fill(self, nozzle: int, **fill: Any) -> None:
        """A customer at the IFSF FP: lift, fill at 5 l/s, hang up."""
        customer = self.ifsf.play(self.fp, [Lift(nozzle), Fill(rate_lps=D(5), **fill), HangUp()])
        assert await self.ifsf.wait_until(lambda: customer.done, 20), "customer still at it"
        assert customer.outcome == "done", customer.outcome

    async def settled(self) -> None:
        """Both pumps idle with their start-up work done (totals baseline, prices sent)."""

        def quiet(s: Any) -> bool:
            return bool(
                s.idle.is_set()
                and s.queue.empty()
                and not s.decider.check_totals
                and not s.prices_pending()
            )

        points = self.daemon.station.points.values()
        await until(lambda: all(quiet(s) for s in points), 15, "pumps settled")


def shape(value: Any) -> Any:
    """A JSON value's structure: every key, and each leaf's type ("NoneType" for a null)."""
    if isinstance(value, dict):
        return {key: shape(v) for key, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def keys(value: Any) -> Any:
    """A JSON object's keys, and those of the objects in it."""
    if isinstance(value, dict):
        return {key: keys(v) for key, v in value.items()}
    return None


def leaf_types(messages: Iterable[Any]) -> dict[str, set[str]]:
    """Each leaf's path in the messages ("data.nozzle") and every type it takes in them."""
    found: dict[str, set[str]] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, v in value.items():
                walk(v, f"{path}.{key}" if path else key)
        else:
            found.setdefault(path, set()).add(type(value).__name__)

    for message in messages:
        walk(message, "")
    return found


@contextlib.asynccontextmanager
async def mixed_station(cloud: str = "") -> AsyncIterator[Mixed]:
    with short_dir() as tmp:
        cd_hb, sim_hb = free_udp_port(), free_udp_port()
        path = tmp / "station.toml"
        text = STATION.format(tmp=tmp, cd_hb=cd_hb, sim_hb=sim_hb, cloud=cloud)
        path.write_text(text, encoding="utf-8")
        config = load_config(path)
        dart = start_simulators(config, flow_rate_lps=20.0)["l0"]
        totals = {n: (D("1000.00") * n, D("7500.00") * n) for n in config.pump(IFSF).nozzles}
        ifsf = one_node_simulator(config, IFSF, sim_hb, cd_hb, totals)
        await ifsf.start()
        try:
            async with daemon_running(config) as daemon:
                station = Mixed(config, daemon, dart, ifsf)
                await station.settled()
                yield station
        finally:
            await ifsf.stop()
            dart.stop()


# ---------------------------------------------------------------------- (a) totals alarm
@pytest.mark.timeout(60)
async def test_an_ifsf_meter_that_moves_without_a_sale_raises_the_totals_alarm_once() -> None:
    async with mixed_station() as st:
        assert st.rows("SELECT * FROM alarms") == []
        (baseline,) = st.rows("SELECT * FROM nozzle_totals WHERE pump = 2 AND nozzle = 2")
        assert (baseline["volume"], baseline["amount"]) == ("2000.00", "15000.00")
        # 3 litres the controller never hears of, then an ordinary attendant sale of 20.00.
        st.fp.meter_fault(2, D("3.00"), D("23.79"))
        done = await st.json("authorize", "2", "--amount", "20", "--nozzle", "2")
        assert done["state"] == "authorized", done
        await st.ifsf_fill(2)
        await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, 15, "the sale recorded")
        (sale,) = st.rows("SELECT * FROM sales")
        assert (sale["pump"], sale["nozzle"], sale["grade"]) == (2, 2, "95")
        assert (sale["volume"], sale["amount"]) == ("2.52", "20.00")
        await until(lambda: bool(st.rows("SELECT * FROM alarms")), 10, "the totals alarm")
        (alarm,) = st.rows("SELECT * FROM alarms")
        assert (alarm["kind"], alarm["severity"], alarm["pump"], alarm["nozzle"]) == (
            "totals_mismatch",
            "critical",
            2,
            2,
        )
        assert alarm["message"] == (
            "pump 2 nozzle 2: totals moved by 5.52 volume / 43.79 amount but the sale is "
            "2.52 / 20.00 (missed or tampered sale)"
        )
        shown = await st.json("totals")
        checks = {(n["pump"], n["nozzle"]): n["last_check"] for n in shown["totals"]}
        assert checks[(2, 2)]["verdict"] == "mismatch", checks
        assert checks[(2, 2)]["sale_id"] == sale["id"]
        # The next sale on it agrees with its totals again: no second alarm.
        await until(lambda: st.fp.point.state is FpState.IDLE, 10, "FP idle")
        await st.settled()
        await st.json("authorize", "2", "--amount", "10", "--nozzle", "2")
        await st.ifsf_fill(2)
        await until(lambda: len(st.rows("SELECT * FROM sales")) == 2, 15, "the second sale")
        await st.settled()
        assert [a["kind"] for a in st.rows("SELECT * FROM alarms")] == ["totals_mismatch"]


# ---------------------------------------------------------------------- (b) technician CLI
@pytest.mark.timeout(60)
async def test_the_cli_shows_an_ifsf_pump_as_a_dart_one_and_its_price_change_reaches_it() -> None:
    async with mixed_station() as st:
        dart, ifsf = await st.json("pumps")
        assert shape(ifsf) == shape(dart)
        assert (dart["line"], dart["address"]) == ("l0", "0x50")
        assert (ifsf["pump"], ifsf["line"], ifsf["address"]) == (2, "forecourt", "1.1/FP1")
        assert (ifsf["online"], ifsf["state"], ifsf["status"]) == (True, "IDLE", "reset")
        shown = await st.cli("pumps")
        assert shown.code == 0, shown.err
        (line,) = [text for text in shown.out.splitlines() if "forecourt/1.1/FP1" in text]
        assert "IDLE" in line and "yes" in line

        changed = await st.json("price", "95", "8.10")
        assert (changed["previous_price"], changed["unit_price"]) == ("7.93", "8.10")

        async def confirmed() -> bool:
            prices = await st.json("prices")
            return all(p["price_set_id"] == changed["price_set_id"] for p in prices["pumps"])

        async with asyncio.timeout(15):
            while not await confirmed():
                await asyncio.sleep(0.1)
        # Each dispenser holds it: the IFSF product 2 in fuelling mode 1, DART nozzle 2.
        model = st.fp.node.model
        assert (model.price(1), model.price(2)) == (D("7.45"), D("8.10"))
        assert (st.pump.price(1), st.pump.price(2)) == (745, 810)
        prices = await st.json("prices")
        (p95,) = [g for g in prices["grades"] if g["grade"] == "95"]
        assert (p95["unit_price"], p95["configured"]) == ("8.10", "7.93")

        # And the IFSF pump sells at it, the sale named in `sales` like any other.
        await st.settled()
        await st.json("authorize", "2", "--amount", "16.20", "--nozzle", "2")
        await st.ifsf_fill(2)
        await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, 15, "the sale recorded")
        sales = await st.json("sales", "--pump", "2")
        (sale,) = sales["sales"]
        assert (sale["pump"], sale["nozzle"], sale["grade"]) == (2, 2, "95")
        assert (sale["unit_price"], sale["volume"], sale["amount"]) == ("8.10", "2.00", "16.20")
        assert sale["price_set_id"] == changed["price_set_id"]
        assert (await st.json("sales", "--pump", "1"))["sales"] == []
        text = await st.cli("sales")
        assert text.code == 0 and "16.20" in text.out and "1 sale(s)" in text.out, text.out


@pytest.mark.timeout(60)
async def test_close_open_and_stop_from_the_cli_act_on_an_ifsf_pump() -> None:
    async with mixed_station() as st:
        closed = await st.cli("close", "2", "--reason", "nozzle 2 leaking")
        assert closed.code == 0, closed.err
        assert closed.out.strip() == "pump 2 closed: no authorization until it is opened again"
        views = await st.json("pumps")
        assert [(p["pump"], p["state"], p["closed"]) for p in views] == [
            (1, "IDLE", False),
            (2, "CLOSED", True),
        ]
        refused = await st.cli("authorize", "2", "--amount", "20")
        assert refused.code == 1 and "pump 2 is closed" in refused.err, refused.err
        order = OrderRequest(
            order_id="o-closed",
            cmd_id="cmd-o-closed",
            pump=IFSF,
            preset_type="amount",
            preset_value=D("20.00"),
            currency="CNY",
        )
        with pytest.raises(CommandError) as cloud_refused:
            await st.daemon.station.start_order(order)
        assert cloud_refused.value.code == "pump_closed"
        await asyncio.sleep(0.5)
        assert st.fp.point.state is FpState.IDLE  # never released
        assert st.rows("SELECT * FROM authorizations") == []

        opened = await st.json("open", "2")
        assert opened == {"message": "pump 2 open again", "pump": 2, "closed": False}
        authorized = await st.json("authorize", "2", "--amount", "20")
        assert authorized["state"] == "authorized", authorized
        await until(lambda: st.fp.point.state is FpState.AUTHORISED, 10, "FP released")
        stopped = await st.json("stop", "2")
        assert stopped["message"] == "pump 2 stopped"
        await until(lambda: st.fp.point.state is FpState.IDLE, 10, "FP back to idle")
        (auth,) = st.rows("SELECT * FROM authorizations")
        assert (auth["pump"], auth["source"]) == (2, "attendant")
        await until(
            lambda: st.rows("SELECT state FROM authorizations")[0]["state"] != "authorized",
            10,
            "the authorization ended",
        )
        everything = await st.json("stop", "all")
        assert everything["stopped"] == [1, 2] and everything["failed"] == []
        audit = [(a["action"], a["outcome"]) for a in (await st.json("audit"))["audit"]]
        assert audit == [
            ("close", "ok"),
            ("authorize", "failed"),
            ("open", "ok"),
            ("authorize", "ok"),
            ("stop", "ok"),
            ("stop", "ok"),
        ]

        history = (await st.json("history"))["devices"]
        by_device = {d["device"]: d for d in history}
        assert set(by_device["pump:2"]) == set(by_device["pump:1"])
        assert by_device["pump:2"]["kind"] == "pump" and by_device["pump:2"]["online"] == 1
        shown = await st.cli("history", "2")
        assert shown.code == 0 and shown.out.startswith("pump:2 online"), shown.out


# ---------------------------------------------------------------------- (c) the cloud's view
# What may differ between two otherwise equal orders on two pumps: which pump, the ids, the
# times, each stream's place, and the meters' readings (the dispensers started elsewhere).
PER_PUMP = {"pump", "order_id", "cmd_id", "msg_id", "seq", "ts", "uid", "sale_id"}
PER_PUMP_SUFFIXES = ("_at", "_id")
METERS = {"total_volume_before", "total_amount_before", "total_volume_after", "total_amount_after"}


def comparable(value: Any) -> Any:
    """`value` with what may differ per pump reduced to its type: what is left must be equal."""
    if isinstance(value, dict):
        return {
            key: type(v).__name__
            if key in PER_PUMP | METERS or key.endswith(PER_PUMP_SUFFIXES)
            else comparable(v)
            for key, v in value.items()
        }
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


# A pay-at-pump order as the pump's state shows it, from idle to idle.
WALK = ["idle", "authorised", "started", "fuelling", "idle"]


def steps(states: Iterable[str]) -> list[str]:
    """A pump's states, each repeat of the one before dropped."""
    out: list[str] = []
    for state in states:
        if not out or out[-1] != state:
            out.append(state)
    return out


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_the_cloud_cannot_tell_an_ifsf_order_and_sale_from_a_dart_one(
    mosquitto: MosquittoBroker,
) -> None:
    key = Ed25519PrivateKey.generate()
    async with (
        TestCloud(mosquitto.port, "MIXED-01", key) as cloud,
        mixed_station(cloud_section(mosquitto.port, key)) as st,
    ):
        await cloud.wait(lambda: cloud.on("state/online"), what="station online")
        marks: dict[int, int] = {}
        for pump, order_id in ((DART, "o-dart"), (IFSF, "o-ifsf")):
            marks[pump] = len(cloud.on(f"state/pump/{pump}"))
            cmd_id = await cloud.send(
                "authorize",
                {
                    "order_id": order_id,
                    "pump": pump,
                    "preset": {"type": "amount", "value": "20.00"},
                    "currency": "CNY",
                    "grades": ["95"],
                },
            )
            result = await cloud.result(cmd_id)
            assert (result["status"], result["code"]) == ("accepted", "ok"), result
            if pump == DART:
                await until(lambda: st.pump.status is DartStatus.AUTHORIZED, 10, "DART released")
                await Customer(st.pump, preset_fill(2)).run()
            else:
                await until(lambda: st.fp.point.state is FpState.AUTHORISED, 10, "FP released")
                await st.ifsf_fill(2)
            await cloud.wait(
                lambda: "completed" in [o["status"] for o in cloud.orders(order_id)],  # noqa: B023
                15,
                f"{order_id} completed",
            )
            await cloud.wait(
                lambda: [m for m in cloud.on("evt/sale") if m["data"]["pump"] == pump],  # noqa: B023
                15,
                f"the sale of pump {pump}",
            )
            await cloud.wait(
                lambda: cloud.on(f"state/pump/{pump}")[-1]["data"]["state"] == "idle",  # noqa: B023
                15,
                f"pump {pump} idle again",
            )

        def envelopes(suffix: str, pump: int) -> list[dict[str, Any]]:
            return [m for m in cloud.on(suffix) if m["data"].get("pump") == pump]

        # The order's steps, each message whole: the same keys, types and values but ids,
        # times and the pump.
        dart_orders, ifsf_orders = envelopes("evt/order", DART), envelopes("evt/order", IFSF)
        assert [o["data"]["status"] for o in dart_orders] == [
            "accepted",
            "authorized",
            "fuelling",
            "completed",
        ]
        assert [o["data"]["status"] for o in ifsf_orders] == [
            o["data"]["status"] for o in dart_orders
        ]
        assert [shape(o) for o in ifsf_orders] == [shape(o) for o in dart_orders]
        assert [comparable(o) for o in ifsf_orders] == [comparable(o) for o in dart_orders]
        sale = ifsf_orders[-1]["data"]["sale"]
        assert (sale["pump"], sale["nozzle"], sale["grade"], sale["amount"]) == (
            2,
            2,
            "95",
            "20.00",
        )

        (dart_sale,), (ifsf_sale,) = envelopes("evt/sale", DART), envelopes("evt/sale", IFSF)
        assert shape(ifsf_sale) == shape(dart_sale)
        assert comparable(ifsf_sale) == comparable(dart_sale)
        assert ifsf_sale["data"] == sale  # the order's sale and the sale event agree
        for name in METERS:
            assert dart_sale["data"][name] is not None and ifsf_sale["data"][name] is not None

        # The pump's live state through the order: every message alike, and the same steps.
        # A pump state is a latest value (contract 1.1: thinned while queued, its version
        # then skips): on a busy machine a step may be left out, never added or reordered.
        dart_states = cloud.on(f"state/pump/{DART}")[marks[DART] :]
        ifsf_states = cloud.on(f"state/pump/{IFSF}")[marks[IFSF] :]
        # Which of a state's fields are null depends on the moment it was taken (the nozzle
        # back yet or not): over the whole order each field takes the same types on both.
        assert {repr(keys(s)) for s in dart_states + ifsf_states} == {repr(keys(dart_states[0]))}
        assert leaf_types(ifsf_states) == leaf_types(dart_states)
        for states in (dart_states, ifsf_states):
            walk = steps(s["data"]["state"] for s in states)
            versions = [s["version"] for s in states]
            thinned = versions != list(range(versions[0], versions[0] + len(versions)))
            if thinned:
                expected = iter(WALK)
                assert all(state in expected for state in walk), walk
            else:
                assert walk == WALK
