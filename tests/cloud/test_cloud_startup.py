"""Cloud contract 1.1 through the real broker session: orders that arrive while the station
starts or while a pump is being reset, the lift deadline every order step carries, retained
state after the broker lost it, and the small consistency rules of results and reasons."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.wayne_dart.codec import DCC, DartStatus
from drivers.wayne_dart.sim import Customer, DartLineSimulator, normal_fill, walk_away
from edgectl.config import load_config
from edgectl.daemon import Daemon
from tests.cloudkit import TestCloud, cloud_section, iso
from tests.mqttkit import MosquittoBroker
from tests.stationkit import RunningStation, running_station, start_simulators, until, write_config

pytestmark = pytest.mark.slow


@dataclass
class Site:
    """A station's config and simulated pumps that outlive its daemon, and the cloud."""

    config: Path
    sims: dict[str, DartLineSimulator]
    cloud: TestCloud
    broker: MosquittoBroker
    key: Ed25519PrivateKey

    def pump(self, address: int) -> Any:
        return self.sims["l0"].pump(address)

    def station(self) -> contextlib.AbstractAsyncContextManager[RunningStation]:
        return running_station(self.config, sims=self.sims)

    @contextlib.asynccontextmanager
    async def station_with_a_dead_pump(self) -> AsyncIterator[RunningStation]:
        """The daemon, not waiting for every pump to answer (one never will)."""
        config = load_config(self.config)
        daemon = Daemon(config)
        task = asyncio.create_task(daemon.run(install_signals=False))
        st = RunningStation(config, daemon, self.sims, task)
        try:
            yield st
        finally:
            await st.stop()


@contextlib.contextmanager
def simulators(config: Path) -> Iterator[dict[str, DartLineSimulator]]:
    sims = start_simulators(load_config(config), flow_rate_lps=20.0)
    try:
        yield sims
    finally:
        for sim in sims.values():
            sim.stop()


@pytest.fixture
async def site(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Site]:
    key = Ed25519PrivateKey.generate()
    # No clock skew allowed: a deadline passes when it says, so a test can watch it pass.
    cloud = cloud_section(mosquitto.port, key) + "clock_skew_s = 0\n"
    config = write_config(tmp_path, mode="cloud", authorize_timeout_s=30, extra=cloud)
    with simulators(config) as sims:
        async with TestCloud(mosquitto.port, "TEST-01", key) as test_cloud:
            yield Site(config, sims, test_cloud, mosquitto, key)


def order(pump: int = 1, order_id: str = "o-1", amount: str = "50.00", **extra: object) -> dict:
    data: dict[str, object] = {
        "order_id": order_id,
        "pump": pump,
        "preset": {"type": "amount", "value": amount},
        "currency": "CNY",
    }
    data.update(extra)
    return data


async def first_run(site: Site) -> None:
    """Start the daemon once and stop it: the broker then keeps its session (and queues the
    commands sent while it is down)."""
    async with site.station():
        await site.cloud.wait(lambda: site.cloud.on("state/online"), what="station online")


def steps(cloud: TestCloud, order_id: str) -> list[str]:
    return [e["status"] for e in cloud.orders(order_id)]


# --------------------------------------------------------------------------- start-up


async def test_an_order_queued_while_the_station_was_down_is_carried_out(site: Site) -> None:
    cloud = site.cloud
    await first_run(site)
    body = cloud.command("authorize", order(pump=2, order_id="o-queued"))
    await cloud.publish("authorize", body)  # the broker holds it for the station's session
    async with site.station() as st:
        result = await cloud.result(body["cmd_id"])
        assert (result["status"], result["code"]) == ("accepted", "ok"), result
        await until(lambda: site.pump(0x51).status is DartStatus.AUTHORIZED, what="authorized")
        await cloud.wait(lambda: "authorized" in steps(cloud, "o-queued"), what="authorized step")
        assert st.rows("SELECT state FROM authorizations") == [{"state": "authorized"}]


async def test_an_order_for_a_pump_that_does_not_answer_is_refused_with_why(site: Site) -> None:
    cloud = site.cloud
    await first_run(site)
    site.sims["l0"].set_online(0x51, False)  # pump 2 is dead when the station starts
    body = cloud.command("authorize", order(pump=2, order_id="o-dead"))
    await cloud.publish("authorize", body)
    started = time.monotonic()
    async with site.station_with_a_dead_pump() as st:
        result = await cloud.result(body["cmd_id"], timeout=15)
        waited = time.monotonic() - started
        assert (result["status"], result["code"]) == ("rejected", "pump_offline"), result
        assert result["message"].startswith("pump 2 is offline: "), result
        assert "since the station started" in result["message"], result
        assert 1.0 < waited < 15, waited  # it waited for the pump, within the bound
        assert st.rows("SELECT * FROM orders") == []
        # An order for a pump that answers is not held up by the dead one.
        other = await cloud.result(await cloud.send("authorize", order(pump=1, order_id="o-1")))
        assert other["code"] == "ok"


async def test_an_order_whose_deadline_passes_while_its_pump_is_awaited_is_expired(
    site: Site,
) -> None:
    cloud = site.cloud
    await first_run(site)
    site.sims["l0"].set_online(0x51, False)
    async with site.station_with_a_dead_pump() as st:
        # Sent as the station starts: pump 2 is not decided yet, and the order's own lift
        # deadline passes before it is.
        soon = iso(datetime.now(UTC) + timedelta(seconds=1))
        body = cloud.command("authorize", order(pump=2, order_id="o-late", expires_at=soon))
        await cloud.publish("authorize", body)
        result = await cloud.result(body["cmd_id"], timeout=15)
        assert (result["status"], result["code"]) == ("rejected", "expired"), result
        assert st.rows("SELECT * FROM orders") == []


# --------------------------------------------------------------------------- after a sale


async def test_an_order_right_after_completed_is_accepted(site: Site) -> None:
    cloud = site.cloud
    async with site.station() as st:
        await cloud.wait(lambda: cloud.on("state/online"), what="online")
        pump = st.pump(1)
        for n in range(3):
            order_id = f"o-next-{n}"
            cmd_id = await cloud.send("authorize", order(pump=1, order_id=order_id))
            result = await cloud.result(cmd_id)
            assert (result["status"], result["code"]) == ("accepted", "ok"), (n, result)
            await Customer(pump, normal_fill(1, Decimal("5.00"), react_s=0.1)).run()
            # The next order is sent the moment `completed` arrives, before the reset.
            await cloud.wait(lambda o=order_id: "completed" in steps(cloud, o), what="completed")


async def test_an_order_waits_for_a_slow_reset_then_goes_through(site: Site) -> None:
    cloud = site.cloud
    async with site.station() as st:
        await cloud.wait(lambda: cloud.on("state/online"), what="online")
        pump = st.pump(1)
        await cloud.result(await cloud.send("authorize", order(pump=1, order_id="o-a")))
        pump.ignore_commands(DCC.RESET)  # the sale is committed, the reset does not take
        await Customer(pump, normal_fill(1, Decimal("5.00"), react_s=0.1)).run()
        await cloud.wait(lambda: "completed" in steps(cloud, "o-a"), what="completed")
        cmd_id = await cloud.send("authorize", order(pump=1, order_id="o-b"))
        await asyncio.sleep(0.5)
        assert cloud.results(cmd_id) == []  # waiting for the reset, not refused
        pump.ignore_commands()
        result = await cloud.result(cmd_id)
        assert (result["status"], result["code"]) == ("accepted", "ok"), result


async def test_an_order_for_a_pump_whose_reset_never_takes_is_refused_in_time(
    site: Site,
) -> None:
    cloud = site.cloud
    async with site.station() as st:
        await cloud.wait(lambda: cloud.on("state/online"), what="online")
        pump = st.pump(1)
        await cloud.result(await cloud.send("authorize", order(pump=1, order_id="o-a")))
        pump.ignore_commands(DCC.RESET)
        try:
            await Customer(pump, normal_fill(1, Decimal("5.00"), react_s=0.1)).run()
            await cloud.wait(lambda: "completed" in steps(cloud, "o-a"), what="completed")
            result = await cloud.result(
                await cloud.send("authorize", order(pump=1, order_id="o-b")), timeout=15
            )
        finally:
            pump.ignore_commands()
        assert (result["status"], result["code"]) == ("rejected", "pump_busy"), result
        assert result["message"] == "pump 1 is filling_completed"


# --------------------------------------------------------------------------- lift deadline


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_every_order_step_carries_the_lift_deadline_in_force(site: Site) -> None:
    cloud = site.cloud
    async with site.station() as st:
        # No expires_at: authorize_timeout_s (30 s) from the moment the order is accepted.
        before = datetime.now(UTC)
        await cloud.result(await cloud.send("authorize", order(pump=1, order_id="o-dflt")))
        after = datetime.now(UTC)
        await Customer(st.pump(1), normal_fill(1, Decimal("5.00"), react_s=0.1)).run()
        await cloud.wait(lambda: "completed" in steps(cloud, "o-dflt"), what="completed")
        events = cloud.orders("o-dflt")
        assert [e["status"] for e in events] == ["accepted", "authorized", "fuelling", "completed"]
        deadlines = {e["expires_at"] for e in events}
        assert len(deadlines) == 1 and None not in deadlines, deadlines
        deadline = moment(deadlines.pop())
        timeout = timedelta(seconds=30)
        assert before + timeout - timedelta(seconds=0.01) <= deadline <= after + timeout
        row = st.rows("SELECT expires_at FROM authorizations WHERE order_id = 'o-dflt'")[0]
        assert moment(row["expires_at"]) == deadline  # the pump's timer keeps the same one

        # An earlier expires_at is the deadline as given; a later one is capped by the
        # station's authorize_timeout_s.
        near = iso(datetime.now(UTC) + timedelta(seconds=20))
        far = iso(datetime.now(UTC) + timedelta(minutes=10))
        await cloud.result(
            await cloud.send("authorize", order(pump=2, order_id="o-near", expires_at=near))
        )
        await cloud.wait(lambda: "authorized" in steps(cloud, "o-near"), what="authorized")
        assert {e["expires_at"] for e in cloud.orders("o-near")} == {near}
        await cloud.result(await cloud.send("cancel", {"order_id": "o-near"}))
        await cloud.wait(lambda: "cancelled" in steps(cloud, "o-near"), what="cancelled")
        await until(lambda: st.pump(2).status is DartStatus.RESET, what="de-authorized")
        asked = datetime.now(UTC)
        await cloud.result(
            await cloud.send("authorize", order(pump=2, order_id="o-far", expires_at=far))
        )
        await cloud.wait(lambda: "authorized" in steps(cloud, "o-far"), what="authorized")
        capped = {moment(e["expires_at"]) for e in cloud.orders("o-far")}
        assert len(capped) == 1
        assert asked + timeout - timedelta(seconds=0.01) <= capped.pop() < moment(far)


# --------------------------------------------------------------------------- consistency


async def test_a_lifted_then_hung_order_expires_with_its_own_reason(site: Site) -> None:
    cloud = site.cloud
    async with site.station() as st:
        soon = iso(datetime.now(UTC) + timedelta(seconds=3))
        await cloud.result(
            await cloud.send("authorize", order(pump=1, order_id="o-lift", expires_at=soon))
        )
        await Customer(st.pump(1), walk_away(1, linger_s=0.3)).run()  # no fuel drawn
        ended = await cloud.wait(
            lambda: [e for e in cloud.orders("o-lift") if e["status"] == "expired"],
            timeout=15,
            what="expired",
        )
        assert ended[0]["reason"] == "nozzle_lifted_no_fuel" and ended[0]["sale"] is None
        # Never lifted: the reason it always had.
        soon = iso(datetime.now(UTC) + timedelta(seconds=1))
        await cloud.result(
            await cloud.send("authorize", order(pump=2, order_id="o-idle", expires_at=soon))
        )
        ended = await cloud.wait(
            lambda: [e for e in cloud.orders("o-idle") if e["status"] == "expired"],
            timeout=15,
            what="expired",
        )
        assert ended[0]["reason"] == "no_nozzle_lifted"


async def test_an_order_the_pump_refuses_is_rejected_and_its_order_failed(site: Site) -> None:
    """One story: the order was recorded (`accepted` step) before the pump was asked, the
    pump refused, so the command is `rejected/pump_refused` and the order ends
    `failed/pump_refused`; never `accepted` as a result."""
    cloud = site.cloud
    async with site.station() as st:
        st.pump(1).ignore_commands(DCC.AUTHORIZE)
        result = await cloud.result(await cloud.send("authorize", order(order_id="o-ref")))
        assert (result["status"], result["code"]) == ("rejected", "pump_refused"), result
        assert result["order_id"] == "o-ref"
        await cloud.wait(lambda: "failed" in steps(cloud, "o-ref"), what="failed")
        events = cloud.orders("o-ref")
        assert [(e["status"], e["reason"]) for e in events] == [
            ("accepted", None),
            ("failed", "pump_refused"),
        ]
        st.pump(1).ignore_commands()
        again = await cloud.result(await cloud.send("authorize", order(order_id="o-ref2")))
        assert again["code"] == "ok"


async def test_a_result_names_no_type_for_a_payload_it_could_not_read(site: Site) -> None:
    cloud = site.cloud
    async with site.station():
        for junk in (b"{not json", b"[1, 2]", b"\xff\xfe", b'"authorize"'):
            await cloud.publish("authorize", junk)
        readable = cloud.command("authorize", order())
        del readable["data"]["currency"]
        await cloud.publish("authorize", readable)  # JSON, but missing a field
        await cloud.wait(lambda: len(cloud.on("result")) == 5, what="five answers")
        answers = [m["data"] for m in cloud.on("result")]
        assert all(a["code"] == "invalid" for a in answers)
        assert [(a["cmd_id"], a["type"]) for a in answers[:4]] == [(None, None)] * 4
        assert (answers[4]["cmd_id"], answers[4]["type"]) == (readable["cmd_id"], "authorize")


# --------------------------------------------------------------------------- retained state


async def test_retained_state_comes_back_after_the_broker_lost_it(site: Site) -> None:
    cloud, broker = site.cloud, site.broker
    async with site.station() as st:
        session = st.daemon.cloud.session if st.daemon.cloud else None
        assert session is not None
        retained = ("state/online", "state/pump/1", "state/pump/2", "state/prices")
        await cloud.wait(lambda: all(cloud.on(t) for t in retained), what="retained state")
        await until(lambda: st.rows("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == 0)
        # The broker restarts without its database: sessions and retained messages gone.
        broker.stop()
        (broker.directory / "mosquitto.db").unlink(missing_ok=True)
        broker.start()
        await until(lambda: session.reconnects >= 1 and session.connected, timeout=15)
        assert session.session_present is False
        await until(lambda: st.rows("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == 0, timeout=15)
        # The republish may still be on its way (queued after the outbox looked empty): a
        # first subscriber waits until the broker has every topic again...
        async with TestCloud(broker.port, "TEST-01", site.key) as first:
            await first.wait(lambda: all(first.on(t) for t in retained), what="republished")
        # ...and a backend that subscribes now finds every one retained, as the station has it.
        async with TestCloud(broker.port, "TEST-01", site.key) as late:
            await late.wait(lambda: all(late.on(t) for t in retained), what="retained again")
            flags = {topic: raw.retain for topic, _, raw in late.messages}
            assert all(flags[f"{late.base}/{t}"] for t in retained), flags
            pumps = {late.on(f"state/pump/{n}")[-1]["data"]["state"] for n in (1, 2)}
            assert pumps == {"idle"}
            assert late.on("state/online")[-1]["data"]["online"] is True
            prices = late.on("state/prices")[-1]["data"]["prices"]
            assert {p["grade"] for p in prices} == {"92", "95", "diesel"}
