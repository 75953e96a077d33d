"""Test kit shared by the soak test and `make chaos`: a cloud that outlives broker and station
restarts, pay-at-pump order requests, and faults on simulated DART lines."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.ifsf.codec import Message
from drivers.ifsf.dispenser import (
    Dispenser,
    DispenserSpec,
    Fill,
    FpEvent,
    FpSpec,
    FpState,
    FuellingPoint,
    HangUp,
    Lift,
    NozzleSpec,
    Pause,
    ProductSpec,
    Step,
)
from drivers.ifsf.encodings import Lna
from drivers.ifsf.sim import IfsfController, IfsfSimulator
from drivers.wayne_dart.sim import DartLineSimulator
from tests.cloudkit import TestCloud, iso
from tests.drivers.ifsf.loopback import loopback_settings

FINAL = frozenset({"completed", "expired", "cancelled", "failed"})
START_TOTAL = 100_000  # raw volume total of every simulated nozzle (stationkit.start_simulators)

# Faults on a line and how often each comes: answers lost, a CRC flipped, noise before an
# answer, a pump without power for a while, the line's adapter pulled out for a while.
LINE_FAULTS = {"drop": 40, "corrupt": 25, "garbage": 20, "power_cut": 10, "unplug": 5}
NOISE_ONLY = {"drop": 40, "corrupt": 30, "garbage": 30}


class SoakCloud(TestCloud):
    """The test cloud, made to outlive broker restarts as a real one does: a persistent
    session it keeps reconnecting to, and publishes tried again until the broker has them."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.connected = asyncio.Event()
        self.connections = 0

    async def __aenter__(self) -> SoakCloud:
        self._reader = asyncio.create_task(self._stay_connected())
        await asyncio.wait_for(self.connected.wait(), 10)
        return self

    async def _stay_connected(self) -> None:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        while True:
            client = aiomqtt.Client(
                "127.0.0.1",
                self.port,
                identifier="soak-cloud",
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=False,
                properties=properties,
            )
            with contextlib.suppress(aiomqtt.MqttError):
                async with client:
                    self._client = client
                    await client.subscribe(f"{self.base}/#", qos=1)
                    self.connections += 1
                    self.connected.set()
                    await self._read()
            self.connected.clear()
            self._client = None
            await asyncio.sleep(0.2)

    async def publish(self, type_: str, body: dict[str, Any] | bytes, **kw: Any) -> None:
        while True:
            await self.connected.wait()
            if self._client is not None:
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    async with asyncio.timeout(5):
                        await super().publish(type_, body, **kw)
                    return
            await asyncio.sleep(0.2)

    async def ask(self, type_: str, data: dict[str, Any]) -> dict[str, Any]:
        """Send a command and return its result; sent again (same cmd_id) while unanswered,
        as a cloud does when the broker may have lost it."""
        body = self.command(type_, data, valid_for=300)
        for _ in range(8):
            await self.publish(type_, body)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):
                    while not (found := self.results(body["cmd_id"])):
                        await asyncio.sleep(0.05)
                    return found[0]
        raise AssertionError(f"no result for {type_} {data}")

    def final_status(self, order_id: str) -> str | None:
        statuses = [e["status"] for e in self.orders(order_id) if e["status"] in FINAL]
        return statuses[-1] if statuses else None


def order_request(
    order_id: str, pump: int, grade: str, preset: Decimal, *, lifetime_s: float | None = None
) -> dict[str, Any]:
    """The data of an `authorize` command: an amount preset on one grade."""
    data: dict[str, Any] = {
        "order_id": order_id,
        "pump": pump,
        "preset": {"type": "amount", "value": f"{preset:.2f}"},
        "currency": "CNY",
        "grades": [grade],
    }
    if lifetime_s is not None:
        data["expires_at"] = iso(datetime.now(UTC) + timedelta(seconds=lifetime_s))
    return data


Target = tuple[DartLineSimulator, int]  # a line and a pump address on it


async def line_faults(
    targets: Callable[[], Sequence[Target]],
    rng: random.Random,
    until_t: float,
    counts: Counter[str],
    faults: Mapping[str, int] = LINE_FAULTS,
) -> None:
    """Faults on the lines, about one a second, each over before the next, each on one of
    `targets()` (pumps the station is talking to: lost answers do not pile up on a pump it
    polls only every 30 s)."""
    loop = asyncio.get_running_loop()
    touched: dict[int, DartLineSimulator] = {}
    while loop.time() < until_t:
        await asyncio.sleep(rng.uniform(0.3, 1.7))
        # A pump whose last fault has not struck yet is left alone: answers lost on a pump
        # polled only at its retry pace would pile up into an outage, not noise.
        choices = [(sim, a) for sim, a in targets() if not sim.faults_pending(a)]
        if not choices:
            continue
        sim, address = rng.choice(choices)
        touched[id(sim)] = sim
        fault = rng.choices(list(faults), list(faults.values()))[0]
        counts[fault] += 1
        if fault == "drop":
            # Up to three answers lost: retried; more: the command fails and the pump is
            # taken offline while it may have acted on it.
            sim.drop_next_replies(address, rng.choice((1, 1, 2, 3, 5)))
        elif fault == "corrupt":
            sim.corrupt_next_reply(address)
        elif fault == "garbage":
            sim.inject_garbage(rng.randbytes(rng.randint(1, 16)))
        elif fault == "power_cut":
            sim.set_online(address, False)
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            sim.set_online(address, True)
        elif fault == "unplug":
            sim.unplug()
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            sim.replug()
        else:
            raise ValueError(f"unknown line fault {fault!r}")
    # The noise is over: answers still to be lost would keep a pump polled at its retry pace
    # away long after it (an outage the harness made, not the line).
    for sim in touched.values():
        sim.withdraw_faults()


# ------------------------------------------------------------------ IFSF dispensers
IFSF_NODES = (Lna(1, 1), Lna(1, 2))  # two dispenser nodes of two fuelling points each
IFSF_FPS = 2
IFSF_PRODUCTS = {"92": 92, "95": 95}  # grade: Prod_Nb, nozzle 1 the 92, nozzle 2 the 95
IFSF_START = Decimal("1000.00")  # volume total of every simulated IFSF nozzle
# Faults at a dispenser node and how often each comes: both TCP links closed, bytes nobody
# can read, writes refused as busy, the node silent a while (lost, then heard again), the
# mains cut (every FP closed, the sales kept).
IFSF_FAULTS = {"drop": 30, "garbage": 25, "refuse": 20, "silent": 15, "power_cycle": 10}
IFSF_NOISE = {"drop": 30, "garbage": 40, "refuse": 30}  # the node never goes away


def ifsf_line_toml(first: int, cd_hb: int, node_hbs: Sequence[int]) -> str:
    """An IFSF line "ifsf" of IFSF_NODES on loopback, station pumps `first`, `first + 1` ...
    (FP 1, 2 of each node in turn)."""
    to = ", ".join(f'"127.0.0.1:{port}"' for port in node_hbs)
    products = ", ".join(f'"{g}" = {n}' for g, n in IFSF_PRODUCTS.items())
    parts = [
        '[[lines]]\nname = "ifsf"\nprotocol = "ifsf"\ncontroller_lna = "2.1"\ntcp_port = 0\n'
        f"heartbeat_port = {cd_hb}\nheartbeat_to = [{to}]\nheartbeat_interval_s = 0.2\n"
        f"missed_heartbeats = 10\nreply_timeout_ms = 1000\nproducts = {{ {products} }}\n"
    ]
    for number, (lna, fp) in enumerate(ifsf_points(), start=first):
        parts.append(
            f'[[pumps]]\nnumber = {number}\nline = "ifsf"\nnode = "{lna}"\nfp = {fp}\n'
            'nozzles = { 1 = "92", 2 = "95" }\n'
        )
    return "\n".join(parts)


def ifsf_points() -> list[tuple[Lna, int]]:
    return [(lna, fp) for lna in IFSF_NODES for fp in range(1, IFSF_FPS + 1)]


class IfsfBooks:
    """The IFSF dispenser nodes (in this process, on loopback) and what they did: the
    releases each FP acted on and every sale stored in its transaction buffer."""

    def __init__(self, first: int, cd_hb: int, node_hbs: Sequence[int], prices: Sequence[str]):
        products = tuple(
            ProductSpec(n, f"product {n}", {1: Decimal(p)})
            for n, p in zip(IFSF_PRODUCTS.values(), prices, strict=True)
        )
        nozzles = tuple(NozzleSpec(i, IFSF_START, IFSF_START * 5) for i in (1, 2))
        specs = [
            DispenserSpec(lna, (FpSpec(nozzles),) * IFSF_FPS, products, flow_rate_lps=Decimal(5))
            for lna in IFSF_NODES
        ]
        settings = [
            loopback_settings([lna], hb, cd_hb, heartbeat_interval_s=0.2)
            for lna, hb in zip(IFSF_NODES, node_hbs, strict=True)
        ]
        numbers = {point: n for n, point in enumerate(ifsf_points(), start=first)}
        self.sim = IfsfSimulator(
            specs, settings, heartbeat_interval_s=0.2, tick_s=0.05, numbers=numbers
        )
        self.control = IfsfController(self.sim, seed=first)
        self.fps = {fp.number: fp for fp in self.sim.fps}
        self.releases: Counter[int] = Counter()  # station pump: releases acted on
        self.sold: list[tuple[int, int, Decimal, Decimal]] = []  # pump, nozzle, volume, amount
        # Called with the station pump's number as an FP is released, as a sale is stored.
        self.on_release: list[Callable[[int], None]] = []
        self.on_sale: list[Callable[[int], None]] = []
        for node in self.sim.nodes:
            self._watch(node.model, {fp.fp: fp.number for fp in self.sim.fps if fp.node is node})

    def _watch(self, model: Dispenser, numbers: Mapping[int, int]) -> None:
        release, end_sale = model._release, model._end_sale

        def released(fp: FuellingPoint, sender: Lna, now: float) -> list[Message]:
            self.releases[numbers[fp.number]] += 1
            for listener in self.on_release:
                listener(numbers[fp.number])
            return release(fp, sender, now)

        def ended(fp: FuellingPoint, now: float, event: FpEvent) -> list[Message]:
            out = end_sale(fp, now, event)
            tr = fp.transactions[fp.last_seq]
            self.sold.append((numbers[fp.number], tr.nozzle, tr.volume, tr.amount))
            for listener in self.on_sale:
                listener(numbers[fp.number])
            return out

        model._release = released  # type: ignore[method-assign]
        model._end_sale = ended  # type: ignore[method-assign]

    def meter(self, number: int, nozzle: int) -> Decimal:
        """Litres the nozzle's volume total moved by."""
        return self.fps[number].point.nozzles[nozzle].volume_total - IFSF_START

    def meters(self) -> dict[tuple[int, int], Decimal]:
        """Litres each nozzle metered since the simulator started, by (pump, nozzle)."""
        return {
            (number, nozzle): self.meter(number, nozzle)
            for number, fp in self.fps.items()
            for nozzle in fp.point.nozzles
        }

    def busy(self) -> list[tuple[int, str, int | None, int]]:
        """FPs not at rest: (pump, state, nozzle out, sales not cleared)."""
        return [
            (n, fp.point.state.name, fp.point.nozzle_out, len(fp.point.unpaid()))
            for n, fp in self.fps.items()
            if fp.point.state is not FpState.IDLE or fp.point.nozzle_out or fp.point.unpaid()
        ]

    async def serve(
        self, number: int, nozzle: int, steps: Sequence[Step], timeout: float = 300
    ) -> tuple[Decimal, Decimal]:
        """Play one customer at pump `number`; the litres and the amount the nozzle's totals
        moved by meanwhile."""
        fp = self.fps[number]
        before = fp.point.nozzles[nozzle]
        volume, amount = before.volume_total, before.amount_total
        customer = self.sim.play(fp, steps)
        try:
            await self.sim.wait_until(lambda: customer.done, timeout)
        finally:
            self.sim.customers.pop(number, None)
        after = fp.point.nozzles[nozzle]
        return after.volume_total - volume, after.amount_total - amount

    async def visit(self, number: int, script: str, nozzle: int, amount: Decimal) -> None:
        """A customer of an accepted order at an IFSF pump (the soak's scripts)."""
        fp = self.fps[number]
        steps: list[Step]
        if script == "fill":
            steps = [Lift(nozzle), Fill(amount=amount, wait_s=30), HangUp()]
        elif script == "preset":
            steps = [Lift(nozzle), Fill(wait_s=30), HangUp()]
        elif script == "walk_away":  # released, then gone without fuel
            authorised = (FpState.AUTHORISED, FpState.STARTED)
            await self.sim.wait_until(lambda: fp.point.state in authorised, 30)
            steps = [Lift(nozzle), Pause(1.0), HangUp()]
        else:
            return
        await self.serve(number, nozzle, steps)

    async def faults(
        self,
        online: Callable[[], Sequence[int]],
        rng: random.Random,
        until_t: float,
        counts: Counter[str],
        faults: Mapping[str, int] = IFSF_FAULTS,
    ) -> None:
        """Faults at the nodes, one every one to three seconds, each at the node of one of
        `online()` (pumps the station is talking to)."""
        loop = asyncio.get_running_loop()
        while loop.time() < until_t:
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            choices = online()
            if choices:
                await self.fault(rng.choice(choices), rng, counts, faults)

    def heard(self) -> list[int]:
        """The pumps whose node hears a controller (what the harness can tell of a daemon
        in another process)."""
        return [n for n, fp in self.fps.items() if fp.node.model.cd_online and not fp.node.silent]

    async def fault(
        self,
        number: int,
        rng: random.Random,
        counts: Counter[str],
        faults: Mapping[str, int] = IFSF_FAULTS,
    ) -> None:
        """One of `faults` at the node of pump `number`, over when this returns."""
        fault = rng.choices(list(faults), list(faults.values()))[0]
        counts[f"ifsf_{fault}"] += 1
        if fault == "drop":
            command = f"drop {number}"
        elif fault == "garbage":
            command = f"garbage {number} {rng.randint(1, 4)}"
        elif fault == "refuse":
            command = f"refuse {number} {rng.choice((1, 1, 2, 3))}"
        elif fault == "silent":
            command = f"silent {number} {rng.uniform(0.5, 4.0):.1f}"
        else:
            command = f"power-cycle {number} {rng.uniform(0.5, 3.0):.1f}"
        reply = await self.control.handle(command)
        if reply is not None and not reply.ok:
            counts[f"ifsf_{fault}_not_done"] += 1  # garbage with no link up: nothing sent
        if fault == "silent":
            await self.sim.wait_until(lambda: not self.fps[number].node.silent, 10)
