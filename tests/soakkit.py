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

from drivers.wayne_dart.sim import DartLineSimulator
from tests.cloudkit import TestCloud, iso

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
    while loop.time() < until_t:
        await asyncio.sleep(rng.uniform(0.3, 1.7))
        choices = targets()
        if not choices:
            continue
        sim, address = rng.choice(choices)
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
