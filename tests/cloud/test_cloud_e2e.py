"""Pay-at-pump end to end: signed commands over a real Mosquitto, the real daemon, DART pumps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import Customer, normal_fill, preset_fill
from edgectl.forecourt.fuelling_point import FPState
from tests.cloudkit import TestCloud, cloud_section, iso
from tests.mqttkit import MosquittoBroker
from tests.stationkit import RunningStation, running_station, until, write_config

pytestmark = pytest.mark.slow


@dataclass
class Rig:
    station: RunningStation
    cloud: TestCloud
    broker: MosquittoBroker
    key: Ed25519PrivateKey


@pytest.fixture
async def rig(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Rig]:
    key = Ed25519PrivateKey.generate()
    config = write_config(
        tmp_path, mode="cloud", authorize_timeout_s=30, extra=cloud_section(mosquitto.port, key)
    )
    async with (
        TestCloud(mosquitto.port, "TEST-01", key) as cloud,
        running_station(config, flow_rate_lps=20.0) as st,
    ):
        await cloud.wait(lambda: cloud.on("state/online"), what="station online")
        yield Rig(st, cloud, mosquitto, key)


def order(pump: int = 1, amount: str = "50.00", order_id: str = "o-1", **extra: object) -> dict:
    data: dict[str, object] = {
        "order_id": order_id,
        "pump": pump,
        "preset": {"type": "amount", "value": amount},
        "currency": "CNY",
    }
    data.update(extra)
    return data


async def test_order_lifecycle_from_authorize_to_completed_sale(rig: Rig) -> None:
    cloud, st = rig.cloud, rig.station
    cmd_id = await cloud.send("authorize", order(pump=1, amount="20.00", grades=["95"]))
    result = await cloud.result(cmd_id)
    assert result["status"] == "accepted" and result["code"] == "ok"
    assert result["order_id"] == "o-1" and result["duplicate"] is False
    pump = st.pump(1)
    await until(lambda: pump.status is DartStatus.AUTHORIZED, what="pump authorized")
    # The order names grade 95: only nozzle 2 may be used.
    await Customer(pump, preset_fill(2)).run()
    events = await cloud.wait(
        lambda: [e for e in cloud.orders("o-1") if e["status"] == "completed"], what="completed"
    )
    statuses = [e["status"] for e in cloud.orders("o-1")]
    assert statuses == ["accepted", "authorized", "fuelling", "completed"]
    sale = events[0]["sale"]
    assert sale["amount"] == "20.00" and sale["grade"] == "95" and sale["nozzle"] == 2
    assert sale["authorized_by"] == "cloud" and sale["order_id"] == "o-1"
    assert sale["total_volume_after"] is not None and sale["total_volume_before"] is not None
    await cloud.wait(lambda: cloud.on("evt/sale"), what="sale event")
    # Each guaranteed stream counts 1, 2, 3… with no gap (contract 1.1); every msg_id unique.
    sequenced = [m for t, m, _ in cloud.messages if m.get("seq")]
    for kind in {m["schema"] for m in sequenced}:
        seqs = [m["seq"] for m in sequenced if m["schema"] == kind]
        assert seqs == list(range(1, len(seqs) + 1)), kind
    assert len({m["msg_id"] for m in sequenced}) == len(sequenced)
    # The live pump state is retained and went back to idle.
    await cloud.wait(
        lambda: [m for m in cloud.on("state/pump/1") if m["data"]["state"] == "idle"],
        what="pump idle",
    )
    await until(lambda: st.rows("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == 0, what="drained")


async def test_rejections_act_on_nothing(rig: Rig) -> None:
    cloud, st = rig.cloud, rig.station
    other_key = Ed25519PrivateKey.generate()
    cases = {
        "unknown_pump": cloud.command("authorize", order(pump=9)),
        "preset_out_of_limits": cloud.command("authorize", order(amount="99999.00")),
        "wrong_currency": cloud.command("authorize", {**order(), "currency": "USD"}),
        "unknown_nozzle": cloud.command("authorize", order(nozzles=[7])),
        "unknown_grade": cloud.command("authorize", order(grades=["98"])),
        "expired": cloud.command(
            "authorize", order(), issued_at=datetime.now(UTC) - timedelta(minutes=5)
        ),
        "wrong_station": cloud.command("authorize", order(), station="OTHER-99"),
        "unsigned": cloud.command("authorize", order(), sign=False),
        "bad_signature": cloud.command("authorize", order(), key=other_key),
        "unknown_order": cloud.command("cancel", {"order_id": "nope"}),
    }
    for code, body in cases.items():
        await cloud.publish("authorize" if "preset" in body["data"] else "cancel", body)
        result = await cloud.result(body["cmd_id"])
        assert (result["status"], result["code"]) == ("rejected", code), code
    await cloud.publish("authorize", b"{not json")
    await cloud.wait(
        lambda: [m for m in cloud.on("result") if m["data"]["code"] == "invalid"], what="invalid"
    )
    assert st.rows("SELECT * FROM authorizations") == []
    assert st.rows("SELECT * FROM orders") == []
    assert st.pump(1).status is DartStatus.RESET


async def test_busy_pump_is_refused(rig: Rig) -> None:
    cloud = rig.cloud
    first = await cloud.send("authorize", order(order_id="o-a"))
    assert (await cloud.result(first))["status"] == "accepted"
    second = await cloud.send("authorize", order(order_id="o-b"))
    assert (await cloud.result(second))["code"] == "pump_busy"


async def test_repeated_command_returns_the_stored_result_and_acts_once(rig: Rig) -> None:
    cloud, st = rig.cloud, rig.station
    body = cloud.command("authorize", order())
    await cloud.publish("authorize", body)
    first = await cloud.result(body["cmd_id"])
    await cloud.publish("authorize", body)  # the broker or the cloud sends it again
    await cloud.wait(lambda: len(cloud.results(body["cmd_id"])) == 2, what="second answer")
    second = cloud.results(body["cmd_id"])[1]
    assert second["duplicate"] is True
    assert (second["status"], second["code"]) == (first["status"], first["code"])
    assert len(st.rows("SELECT * FROM authorizations")) == 1
    # The same cmd_id for a different command is refused, not confused with the first.
    other = cloud.command("stop", {"pump": 2}, cmd_id=body["cmd_id"])
    await cloud.publish("stop", other)
    await cloud.wait(lambda: len(cloud.results(body["cmd_id"])) == 3, what="third answer")
    assert cloud.results(body["cmd_id"])[2]["code"] == "duplicate"


async def test_order_id_taken_by_another_command_is_refused_and_acts_once(rig: Rig) -> None:
    cloud, st = rig.cloud, rig.station
    first = await cloud.send("authorize", order(pump=1, order_id="o-same"))
    assert (await cloud.result(first))["status"] == "accepted"
    again = await cloud.send("authorize", order(pump=2, order_id="o-same"))
    result = await cloud.result(again)
    assert (result["status"], result["code"]) == ("rejected", "invalid")
    assert "exists already" in result["message"]
    assert len(st.rows("SELECT * FROM authorizations")) == 1
    assert st.pump(2).status is DartStatus.RESET
    # The refused command is in the inbox with its payload and its result.
    row = st.rows("SELECT * FROM inbox WHERE cmd_id = ?", (again,))[0]
    assert '"pump":2' in row["payload"].replace(" ", "") and row["code"] == "invalid"


async def test_refused_authorize_is_remembered_with_its_payload(rig: Rig) -> None:
    """An authorize refused before it was persisted (pump busy) is stored with its result:
    the same cmd_id for a different order is then a duplicate, not a new chance."""
    cloud = rig.cloud
    await cloud.result(await cloud.send("authorize", order(pump=1, order_id="o-x")))
    refused = cloud.command("authorize", order(pump=1, order_id="o-y"))
    await cloud.publish("authorize", refused)
    assert (await cloud.result(refused["cmd_id"]))["code"] == "pump_busy"
    await cloud.publish("authorize", refused)
    await cloud.wait(lambda: len(cloud.results(refused["cmd_id"])) == 2, what="repeat")
    repeat = cloud.results(refused["cmd_id"])[1]
    assert repeat["duplicate"] is True and repeat["code"] == "pump_busy"
    changed = cloud.command("authorize", order(pump=2, order_id="o-y"), cmd_id=refused["cmd_id"])
    await cloud.publish("authorize", changed)
    await cloud.wait(lambda: len(cloud.results(refused["cmd_id"])) == 3, what="reuse")
    assert cloud.results(refused["cmd_id"])[2]["code"] == "duplicate"


async def test_result_goes_to_the_response_topic_with_correlation(rig: Rig) -> None:
    cloud = rig.cloud
    body = cloud.command("stop", {"pump": 2})
    await cloud.publish("stop", body, reply_to="replies/worker-7", correlation=b"\x01\x02corr")
    _, message, raw = await cloud.wait(
        lambda: next((m for m in cloud.messages if m[0] == "replies/worker-7"), None),
        what="reply",
    )
    assert message["data"]["cmd_id"] == body["cmd_id"] and message["data"]["status"] == "accepted"
    assert raw.properties is not None and raw.properties.CorrelationData == b"\x01\x02corr"


async def test_cancel_and_expiry_release_the_payment(rig: Rig) -> None:
    cloud, st = rig.cloud, rig.station
    await cloud.result(await cloud.send("authorize", order(pump=1, order_id="o-c")))
    await until(lambda: st.pump(1).status is DartStatus.AUTHORIZED, what="authorized")
    result = await cloud.result(await cloud.send("cancel", {"order_id": "o-c"}))
    assert result["status"] == "accepted"
    await until(lambda: st.pump(1).status is DartStatus.RESET, what="de-authorized")
    cancelled = await cloud.wait(
        lambda: [e for e in cloud.orders("o-c") if e["status"] == "cancelled"], what="cancelled"
    )
    assert cancelled[0]["sale"] is None and cancelled[0]["reason"] == "cancelled_by_cloud"

    soon = iso(datetime.now(UTC) + timedelta(seconds=1))
    await cloud.result(
        await cloud.send("authorize", order(pump=2, order_id="o-e", expires_at=soon))
    )
    expired = await cloud.wait(
        lambda: [e for e in cloud.orders("o-e") if e["status"] == "expired"],
        timeout=10,
        what="expired",
    )
    assert expired[0]["reason"] == "no_nozzle_lifted"
    await until(lambda: st.pump(2).status is DartStatus.RESET, what="de-authorized")


async def test_cancel_or_stop_the_pump_does_not_confirm_is_rejected_not_redelivered(
    rig: Rig,
) -> None:
    """A pump that refuses or does not answer the STOP of a `cancel` or `stop` gets the
    command a rejected result with the reason (found: the handler raised, the session dropped
    the connection, and the broker re-delivered the same command on every reconnect)."""
    cloud, st = rig.cloud, rig.station
    await cloud.result(await cloud.send("authorize", order(pump=1, order_id="o-n")))
    await until(lambda: st.pump(1).status is DartStatus.AUTHORIZED, what="authorized")
    st.sims["l0"].nak_data_frames(0x50, 4)  # the STOP and its three retries
    refused = await cloud.result(await cloud.send("cancel", {"order_id": "o-n"}))
    assert (refused["status"], refused["code"]) == ("rejected", "pump_refused")
    assert "pump 1" in refused["message"]
    assert st.pump(1).status is DartStatus.AUTHORIZED  # nothing was done: still released
    # While the pump does not answer, the order stays, and the result says why.
    st.sims["l0"].set_online(0x50, False)
    await until(lambda: not st.service(1).online, what="pump 1 seen offline")
    offline = await cloud.result(await cloud.send("cancel", {"order_id": "o-n"}))
    assert (offline["status"], offline["code"]) == ("rejected", "pump_offline")
    assert "stays authorized" in offline["message"]
    st.sims["l0"].set_online(0x50, True)
    await until(lambda: st.service(1).fp.state is FPState.AUTHORISED, what="pump 1 back")
    # The link was not dropped: the next command on the same session is carried out.
    done = await cloud.result(await cloud.send("cancel", {"order_id": "o-n"}))
    assert (done["status"], done["code"]) == ("accepted", "ok")
    await until(lambda: st.pump(1).status is DartStatus.RESET, what="de-authorized")

    st.sims["l0"].set_online(0x51, False)  # pump 2 stops answering its line
    await until(lambda: not st.service(2).online, what="pump 2 seen offline")
    silent = await cloud.result(await cloud.send("stop", {"pump": 2}))
    assert (silent["status"], silent["code"]) == ("rejected", "pump_offline")
    st.sims["l0"].set_online(0x51, True)
    assert len([m for t, m, _ in cloud.messages if t.endswith("state/online")]) == 1


async def test_clear_is_idempotent(rig: Rig) -> None:
    cloud, st = rig.cloud, rig.station
    await cloud.result(await cloud.send("authorize", order(pump=1, order_id="o-p")))
    await Customer(st.pump(1), normal_fill(1, Decimal("10.00"))).run()
    await cloud.wait(
        lambda: [e for e in cloud.orders("o-p") if e["status"] == "completed"], what="sale"
    )
    codes = []
    for _ in range(2):
        codes.append((await cloud.result(await cloud.send("clear", {"order_id": "o-p"})))["code"])
    assert codes == ["ok", "already_cleared"]
    unknown = await cloud.result(await cloud.send("clear", {"order_id": "o-none"}))
    assert (unknown["status"], unknown["code"]) == ("rejected", "unknown")
    # A sale the attendant authorized was paid at the shop, not through the cloud.
    from edgectl.forecourt.sale import AuthorizationSource

    await st.daemon.station.authorize(2, AuthorizationSource.ATTENDANT)
    await Customer(st.pump(2), normal_fill(1, Decimal("5.00"))).run()
    await until(lambda: len(st.rows("SELECT * FROM sales")) == 2, what="second sale")
    shop_sale = st.rows("SELECT id FROM sales WHERE pump = 2")[0]["id"]
    result = await cloud.result(await cloud.send("clear", {"sale_id": shop_sale}))
    assert (result["status"], result["code"]) == ("accepted", "paid_elsewhere")


async def test_prices_are_applied_per_pump_and_recorded_on_sales(rig: Rig) -> None:
    cloud, st = rig.cloud, rig.station
    data = {
        "price_set_id": "ps-42",
        "currency": "CNY",
        "prices": [{"grade": "92", "unit_price": "7.77"}],
    }
    assert (await cloud.result(await cloud.send("prices", data)))["status"] == "accepted"
    confirmed = await cloud.wait(
        lambda: (
            [m for m in cloud.on("evt/price") if m["data"]["price_set_id"] == "ps-42"]
            if len(cloud.on("evt/price")) >= 2
            else None
        ),
        what="both pumps confirmed",
    )
    assert {m["data"]["pump"] for m in confirmed} == {1, 2}
    assert all(m["data"]["status"] == "applied" for m in confirmed)
    assert st.pump(1).price(1) == 777
    retained = await cloud.wait(lambda: cloud.on("state/prices"), what="retained prices")
    assert {"grade": "92", "unit_price": "7.77"} in retained[-1]["data"]["prices"]
    await cloud.result(await cloud.send("authorize", order(pump=1, order_id="o-ps")))
    await Customer(st.pump(1), normal_fill(1, Decimal("7.77"))).run()
    await until(lambda: st.rows("SELECT * FROM sales"), what="sale")
    sale = st.rows("SELECT * FROM sales")[0]
    assert sale["price_set_id"] == "ps-42" and sale["unit_price"] == "7.77"


async def test_emergency_stop_ends_the_fill_and_keeps_the_sale(rig: Rig) -> None:
    cloud, st = rig.cloud, rig.station
    await cloud.result(
        await cloud.send("authorize", order(pump=2, amount="500.00", order_id="o-s"))
    )
    pump = st.pump(2)
    await until(lambda: pump.status is DartStatus.AUTHORIZED, what="authorized")
    pump.lift(1)
    pump.squeeze()
    await until(lambda: pump.volume > 100, what="flowing")
    result = await cloud.result(await cloud.send("stop", {"pump": 2}))
    assert result["status"] == "accepted"
    await until(
        lambda: pump.status in (DartStatus.FILLING_COMPLETED, DartStatus.RESET), what="stopped"
    )
    pump.hang_up()
    done = await cloud.wait(
        lambda: [e for e in cloud.orders("o-s") if e["status"] == "completed"], what="completed"
    )
    assert Decimal(done[0]["sale"]["volume"]) > 0
    await until(lambda: st.service(2).fp.state is FPState.IDLE, what="idle")


async def test_broker_restart_mid_sale_loses_nothing(rig: Rig) -> None:
    cloud, st, broker = rig.cloud, rig.station, rig.broker
    await cloud.result(await cloud.send("authorize", order(pump=1, order_id="o-b")))
    pump = st.pump(1)
    await until(lambda: pump.status is DartStatus.AUTHORIZED, what="authorized")
    pump.lift(1)
    pump.squeeze()
    await until(lambda: pump.volume > 50, what="flowing")
    broker.stop()  # the broker goes down in the middle of the fill
    pump.release()
    pump.hang_up()
    await until(lambda: len(st.rows("SELECT * FROM sales")) == 1, what="sale recorded offline")
    assert st.rows("SELECT COUNT(*) AS n FROM outbox")[0]["n"] > 0  # waiting for the broker
    broker.start()
    async with TestCloud(broker.port, "TEST-01", rig.key) as again:
        # Retained state and the replayed events arrive after the station reconnects.
        await again.wait(
            lambda: (
                [e for e in again.orders("o-b") if e["status"] == "completed"]
                or [e for e in cloud.orders("o-b") if e["status"] == "completed"]
            ),
            timeout=20,
            what="completed after the restart",
        )
    await until(
        lambda: st.rows("SELECT COUNT(*) AS n FROM outbox")[0]["n"] == 0,
        timeout=20,
        what="outbox drained",
    )
    # Events seen by the cloud, deduplicated by msg_id, each once and in seq order.
    seen: dict[str, dict] = {}
    for _, message, _ in cloud.messages:
        if message.get("seq"):
            seen.setdefault(message["msg_id"], message)
    orders = [m for m in seen.values() if m["schema"] == "edgectl/v1/order"]
    order_seqs = [m["seq"] for m in orders]
    assert order_seqs == sorted(order_seqs)
    assert len(st.rows("SELECT * FROM sales")) == 1


async def test_restart_with_an_order_in_flight_reconciles_with_the_pump(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    from edgectl.config import load_config
    from tests.stationkit import start_simulators

    key = Ed25519PrivateKey.generate()
    config_path = write_config(tmp_path, mode="cloud", extra=cloud_section(mosquitto.port, key))
    sims = start_simulators(load_config(config_path), flow_rate_lps=20.0)
    try:
        async with TestCloud(mosquitto.port, "TEST-01", key) as cloud:
            async with running_station(config_path, sims=sims) as st:
                await cloud.result(await cloud.send("authorize", order(pump=2, order_id="o-r")))
                await until(lambda: st.pump(2).status is DartStatus.AUTHORIZED, what="auth")
            # The daemon is gone; the pump stays authorized and the customer arrives.
            pump = sims["l0"].pump(0x51)
            pump.lift(1)
            pump.squeeze()
            async with running_station(config_path, sims=sims) as st:
                await until(lambda: pump.amount >= 5000, timeout=15, what="preset reached")
                pump.hang_up()
                done = await cloud.wait(
                    lambda: [e for e in cloud.orders("o-r") if e["status"] == "completed"],
                    timeout=15,
                    what="order completed after the restart",
                )
                assert done[0]["sale"]["amount"] == "50.00"
                assert len(st.rows("SELECT * FROM sales")) == 1
                auth = st.rows("SELECT state FROM authorizations")
                assert [a["state"] for a in auth] == ["completed"]
    finally:
        for sim in sims.values():
            sim.stop()
