"""Soak: the real daemon in cloud mode on two DART lines and an IFSF line (two dispenser nodes
of the IFSF network simulator on loopback) under a stream of pay-at-pump orders, line and
dispenser faults and broker restarts; then the books must balance: nothing lost, nothing
twice, no fuelling point released twice for one order.

Only `make soak` runs it, for `EDGECTL_SOAK_S` seconds of traffic (120 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.ifsf.dispenser import FpState
from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import Customer, SimPump, normal_fill, preset_fill, walk_away
from edgectl.forecourt.fuelling_point import FPState
from tests.cloudkit import cloud_section
from tests.drivers.ifsf.loopback import free_udp_port
from tests.mqttkit import MosquittoBroker
from tests.soakkit import (
    FINAL,
    IFSF_NODES,
    IFSF_PRODUCTS,
    START_TOTAL,
    IfsfBooks,
    SoakCloud,
    Target,
    ifsf_line_toml,
    line_faults,
    order_request,
)
from tests.stationkit import GRADES, RunningStation, running_station, station_toml, until

SOAK_S = float(os.environ.get("EDGECTL_SOAK_S", "120"))
SEED = int(os.environ.get("EDGECTL_SOAK_SEED", "0")) or random.randrange(1, 2**31)
# What a customer does with an accepted order, and how often.
SCRIPTS = {"fill": 50, "preset": 15, "walk_away": 12, "no_show": 10, "cancel": 13}

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SOAK_S + 300)]


@dataclass
class Tally:
    accepted: dict[str, str] = field(default_factory=dict)  # order_id -> script
    refused: Counter[str] = field(default_factory=Counter)  # authorize result code
    cancels: Counter[str] = field(default_factory=Counter)  # cancel result code
    faults: Counter[str] = field(default_factory=Counter)
    broker_restarts: int = 0
    released: dict[int, int] = field(default_factory=dict)  # IFSF pump: releases, last order
    double_releases: list[str] = field(default_factory=list)  # orders released twice
    stray_releases: list[tuple[int, str]] = field(default_factory=list)  # before an order


async def orders_at(
    number: int,
    st: RunningStation,
    cloud: SoakCloud,
    books: IfsfBooks,
    rng: random.Random,
    until_t: float,
    tally: Tally,
) -> None:
    """One pump's stream of orders and customers, each order followed to its end."""
    loop = asyncio.get_running_loop()
    grades = st.config.pump(number).nozzles
    ifsf = number in books.fps
    count = 0
    while loop.time() < until_t:
        count += 1
        order_id = f"o-{number}-{count}"
        script = rng.choices(list(SCRIPTS), list(SCRIPTS.values()))[0]
        nozzle = rng.choice(sorted(grades))
        preset = Decimal(rng.randrange(3000, 15000)) / 100
        lifetime = {"no_show": 3, "walk_away": 8}.get(script)
        data = order_request(order_id, number, grades[nozzle], preset, lifetime_s=lifetime)
        released = books.releases[number]
        if released != tally.released.get(number, 0):
            tally.stray_releases.append((number, order_id))  # a release between two orders
        result = await cloud.ask("authorize", data)
        if result["status"] != "accepted":
            tally.refused[result["code"]] += 1  # busy, offline, or lost on the line: try again
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            continue
        tally.accepted[order_id] = script
        react = rng.uniform(0.3, 1.5)
        amount = (preset * Decimal(rng.uniform(0.3, 0.9))).quantize(Decimal("0.01"))
        if script == "cancel":
            await asyncio.sleep(react)
            cancelled = await cloud.ask("cancel", {"order_id": order_id})
            tally.cancels[cancelled["code"]] += 1
        elif ifsf:
            await asyncio.sleep(react)
            await books.visit(number, script, nozzle, amount)
        else:
            await dart_visit(st.pump(number), script, nozzle, amount, react)
        await cloud.wait(
            lambda oid=order_id: cloud.final_status(oid), timeout=120, what=f"end of {order_id}"
        )
        if books.releases[number] - released > 1:
            tally.double_releases.append(order_id)
        tally.released[number] = books.releases[number]
        await asyncio.sleep(rng.uniform(0.2, 1.5))


async def dart_visit(
    pump: SimPump, script: str, nozzle: int, amount: Decimal, react: float
) -> None:
    """A customer of an accepted order at a DART pump."""
    if script == "fill":
        await Customer(pump, normal_fill(nozzle, amount, react_s=react)).run()
    elif script == "preset":
        await Customer(pump, preset_fill(nozzle, react_s=react)).run()
    elif script == "walk_away":
        await Customer(pump, walk_away(nozzle, linger_s=react)).run()


def online_pumps(st: RunningStation) -> list[Target]:
    """The DART pumps the station has online, each as its line's simulator and its address."""
    online = [s.pump for s in st.daemon.station.points.values() if s.online]
    return [(st.sims[p.line], p.address) for p in online if p.line in st.sims]


async def broker_chaos(
    broker: MosquittoBroker, rng: random.Random, start: float, until_t: float, tally: Tally
) -> None:
    """Three clean restarts (one after a few seconds down) and one SIGKILL, spread out."""
    loop = asyncio.get_running_loop()
    span = until_t - start
    for at, how in ((0.15, "restart"), (0.35, "restart"), (0.55, "down"), (0.75, "kill")):
        await asyncio.sleep(max(0.0, start + at * span - loop.time()))
        if how == "restart":
            await asyncio.to_thread(broker.restart)
        else:
            await asyncio.to_thread(broker.kill if how == "kill" else broker.stop)
            await asyncio.sleep(rng.uniform(1.0, 4.0))
            await asyncio.to_thread(broker.start)
        tally.broker_restarts += 1


async def test_orders_under_line_faults_and_broker_restarts_lose_nothing_and_sell_once(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    print(f"\nsoak: {SOAK_S:.0f} s, seed {SEED} (EDGECTL_SOAK_SEED={SEED} repeats the choices)")
    rng = random.Random(SEED)
    key = Ed25519PrivateKey.generate()
    # Two DART lines of four pumps (1-8) and an IFSF line of two nodes of two FPs (9-12).
    cd_hb, node_hbs = free_udp_port(), [free_udp_port() for _ in IFSF_NODES]
    config = tmp_path / "station.toml"
    dart = station_toml(
        tmp_path,
        mode="cloud",
        lines=2,
        pumps_per_line=4,
        authorize_timeout_s=30,
        extra=cloud_section(mosquitto.port, key),
    )
    config.write_text(dart + "\n" + ifsf_line_toml(9, cd_hb, node_hbs))
    books = IfsfBooks(9, cd_hb, node_hbs, [GRADES[g] for g in IFSF_PRODUCTS])
    tally = Tally()
    loop = asyncio.get_running_loop()
    with structlog.testing.capture_logs() as logs, keep_log(logs, tmp_path / "daemon.jsonl"):
        async with (
            SoakCloud(mosquitto.port, "TEST-01", key) as cloud,
            books.sim,
            running_station(config) as st,
        ):
            await cloud.wait(lambda: cloud.on("state/online"), what="station online")
            start = loop.time()
            until_t = start + SOAK_S
            async with asyncio.TaskGroup() as tg:
                tg.create_task(
                    line_faults(
                        lambda: online_pumps(st), random.Random(rng.random()), until_t, tally.faults
                    )
                )
                tg.create_task(
                    books.faults(
                        lambda: [n for n in books.fps if st.daemon.station.points[n].online],
                        random.Random(rng.random()),
                        until_t,
                        tally.faults,
                    )
                )
                tg.create_task(
                    broker_chaos(mosquitto, random.Random(rng.random()), start, until_t, tally)
                )
                for number in st.daemon.station.points:
                    lane_rng = random.Random(rng.random())
                    tg.create_task(orders_at(number, st, cloud, books, lane_rng, until_t, tally))

            # The faults are over and every order has ended: let the station settle. A pump
            # that was offline is retried with a capped backoff (30 s), so this may take a while.
            with contextlib.suppress(AssertionError):
                await until(lambda: not busy_pumps(st, books), timeout=60)
            assert busy_pumps(st, books) == []
            await until(
                lambda: st.rows("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == 0,
                timeout=60,
                what="outbox drained",
            )
            await asyncio.sleep(1)  # the last messages PUBACKed to the station reach the cloud
            sales = st.rows("SELECT * FROM sales ORDER BY id")
            orders = {o["order_id"]: o for o in st.rows("SELECT * FROM orders")}
            check_books(st, cloud, sales, orders, tally)
            check_ifsf_books(books, sales, tally)
            assert st.rows("SELECT kind, message FROM alarms WHERE cleared_at IS NULL") == []

    assert [e for e in logs if e["event"] == "pump_step_crashed"] == []
    outcomes = Counter(o["status"] for o in orders.values())
    by_protocol = Counter("ifsf" if s["pump"] in books.fps else "dart" for s in sales)
    print(
        f"soak: {len(orders)} orders {dict(outcomes)}, accepted by script"
        f" {dict(Counter(tally.accepted.values()))}, refused {dict(tally.refused)},"
        f" cancels {dict(tally.cancels)}; {len(sales)} sales {dict(by_protocol)},"
        f" {sum(Decimal(s['volume']) for s in sales)} L; IFSF releases"
        f" {sum(books.releases.values())}; faults {dict(tally.faults)};"
        f" broker restarts {tally.broker_restarts}; station log {tmp_path / 'daemon.jsonl'}"
    )


@contextlib.contextmanager
def keep_log(logs: list[dict[str, Any]], path: Path) -> Iterator[None]:
    """Write what the daemon logged to `path` (JSON lines), whatever the outcome."""
    try:
        yield
    finally:
        with path.open("w") as out:
            for entry in logs:
                out.write(json.dumps(entry, default=str) + "\n")


def busy_pumps(st: RunningStation, books: IfsfBooks) -> list[tuple[int, str, str, bool]]:
    """Pumps not back at rest: (number, station state, pump status, nozzle out or sales
    not cleared)."""
    busy = []
    for number, service in st.daemon.station.points.items():
        if number in books.fps:
            fp = books.fps[number].point
            out = fp.nozzle_out is not None or bool(fp.unpaid())
            if service.fp.state is not FPState.IDLE or fp.state is not FpState.IDLE or out:
                busy.append((number, service.fp.state.name, fp.state.name, out))
            continue
        pump = st.pump(number)
        if not (
            service.fp.state is FPState.IDLE
            and pump.status is DartStatus.RESET
            and pump.nozzle_out is None
        ):
            out = pump.nozzle_out is not None
            busy.append((number, service.fp.state.name, pump.status.name, out))
    return busy


def check_books(
    st: RunningStation,
    cloud: SoakCloud,
    sales: list[dict[str, Any]],
    orders: dict[str, dict[str, Any]],
    tally: Tally,
) -> None:
    # Nothing lost, nothing twice: each nozzle's meter moved by exactly the litres sold on it.
    sold: dict[tuple[int, int], Decimal] = defaultdict(Decimal)
    for sale in sales:
        sold[(sale["pump"], sale["nozzle"])] += Decimal(sale["volume"])
    for number in st.daemon.station.points:
        if st.config.pump(number).line not in st.sims:
            continue  # an IFSF pump: check_ifsf_books
        pump = st.pump(number)
        for nozzle in pump.nozzles:
            metered = Decimal(pump.totals(nozzle)[0] - START_TOTAL) / 100
            assert metered == sold[(number, nozzle)], (number, nozzle)
    assert len({s["uid"] for s in sales}) == len(sales)
    # Cloud mode: every fill came from an order, and each order has at most one sale.
    assert all(s["order_id"] is not None for s in sales)
    assert len({s["order_id"] for s in sales}) == len(sales)
    assert sum(o["status"] == "completed" for o in orders.values()) == len(sales)

    # Every order ended, in the store and as the cloud saw it.
    assert {o["order_id"]: o["status"] for o in orders.values() if o["status"] not in FINAL} == {}
    for order_id in tally.accepted:
        assert order_id in orders, order_id
        assert cloud.final_status(order_id) == orders[order_id]["status"], order_id
    seen_sales = {m["data"]["sale_id"] for m in cloud.on("evt/sale")}
    assert seen_sales == {s["id"] for s in sales}

    # Deduplicated by msg_id, each stream's messages arrive in seq order.
    first: dict[str, dict[str, Any]] = {}
    for _, message, raw in cloud.messages:
        if message.get("seq") and not raw.retain:  # a retained copy is a snapshot, not a step
            first.setdefault(message["msg_id"], message)
    streams: dict[str, list[int]] = defaultdict(list)
    for message in first.values():
        streams[message["schema"]].append(message["seq"])
    for schema, seqs in streams.items():
        assert seqs == sorted(seqs), schema


def check_ifsf_books(books: IfsfBooks, sales: list[dict[str, Any]], tally: Tally) -> None:
    """The IFSF dispensers' own records against the store: each nozzle's volume total moved
    by the litres sold on it, every sale in a transaction buffer is in the store once (and
    cleared there), and no FP was released twice for one order or for none."""
    ifsf = [s for s in sales if s["pump"] in books.fps]
    for number, fp in books.fps.items():
        for nozzle in fp.point.nozzles:
            litres = sum(
                Decimal(s["volume"]) for s in ifsf if (s["pump"], s["nozzle"]) == (number, nozzle)
            )
            assert books.meter(number, nozzle) == litres, (number, nozzle)
    stored = Counter(
        (s["pump"], s["nozzle"], Decimal(s["volume"]), Decimal(s["amount"])) for s in ifsf
    )
    assert stored == Counter(books.sold)
    assert tally.double_releases == [] and tally.stray_releases == []
    accepted = Counter(int(order_id.split("-")[1]) for order_id in tally.accepted)
    for number in books.fps:
        assert books.releases[number] <= accepted[number], number
        assert books.releases[number] == tally.released.get(number, 0), number
