"""The black-box guarantees for IFSF dispensers (issue 15.7): no sale lost, none recorded
twice, no double actuation, through SIGKILL mid-sale and dropped TCP links.

The daemon is `edgectl run`, a real child process, with an IFSF line in cloud mode
against a real Mosquitto; the IFSF dispenser simulator runs in a process of its own and
outlives every daemon, as a dispenser outlives a power cut of the controller. The DART
counterparts are tests/test_recovery.py and tests/cloud/test_cloud_e2e.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.cloudkit import TestCloud, cloud_section
from tests.ifsfkit import Ports, SimProcess, station_toml
from tests.mqttkit import MosquittoBroker
from tests.stationkit import DaemonProcess, count_when_ready, rows, until

pytestmark = pytest.mark.slow


@dataclass
class Site:
    tmp: Path
    sim: SimProcess
    daemon: DaemonProcess
    cloud: TestCloud

    @property
    def db(self) -> Path:
        return self.tmp / "edgectl.db"

    def sales(self) -> list[dict[str, object]]:
        return rows(self.db, "SELECT * FROM sales ORDER BY id") if self.db.exists() else []

    def log(self) -> str:
        return self.daemon.log.read_text()

    async def start_daemon(self) -> None:
        """Start it and wait until the pump is online at the station, the FP open."""
        mark = len(self.cloud.on("state/pump/1"))
        self.daemon.start()
        await until(
            lambda: count_when_ready(self.db, "nozzle_totals") >= 2, timeout=30, what="totals"
        )
        await self.cloud.wait(
            lambda: any(m["data"].get("online") for m in self.cloud.on("state/pump/1")[mark:]),
            timeout=30,
            what="pump 1 online at the station",
        )

    async def authorize(self, order_id: str, amount: str, **kw: object) -> str:
        body = self.cloud.command(
            "authorize",
            {
                "order_id": order_id,
                "pump": 1,
                "preset": {"type": "amount", "value": amount},
                "currency": "CNY",
            },
            **kw,  # type: ignore[arg-type]
        )
        await self.cloud.publish("authorize", body)
        result = await self.cloud.result(str(body["cmd_id"]), timeout=20)
        assert result["status"] == "accepted", result
        return str(body["cmd_id"])

    def order_statuses(self, order_id: str) -> list[str]:
        return [str(o["status"]) for o in self.cloud.orders(order_id)]

    async def cleared(self) -> None:
        await self.sim.until(lambda s: s["unpaid"] == "none", what="buffer cleared")


@pytest.fixture
async def site(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Site]:
    key = Ed25519PrivateKey.generate()
    ports = Ports.free()
    config = tmp_path / "station.toml"
    config.write_text(station_toml(tmp_path, ports, cloud_section(mosquitto.port, key)))
    sim = SimProcess(tmp_path, ports)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    sim.start()
    try:
        async with TestCloud(mosquitto.port, "IFSF-01", key) as cloud:
            yield Site(tmp_path, sim, daemon, cloud)
    finally:
        daemon.cleanup()
        sim.stop()


async def test_sigkill_mid_fill_records_the_sale_once_then_clears_it(site: Site) -> None:
    await site.start_daemon()
    await site.authorize("o-1", "15.00")
    await site.sim.until(lambda s: s["state"] == "authorised", what="released")
    await site.sim.say("lift 1 1")
    fill = asyncio.create_task(site.sim.say("fill 1"))  # to the preset: 10 litres at 1 l/s
    await site.sim.until(lambda s: s["state"] == "fuelling" and float(s["volume"]) > 1)
    site.daemon.kill()  # power cut in the middle of the fill
    await fill  # the customer fills to the preset while nobody is watching
    await site.sim.say("hangup 1")
    status = await site.sim.status()
    assert status["unpaid"].endswith(":payable") and site.sales() == []

    await site.start_daemon()
    await site.cleared()
    (sale,) = site.sales()
    assert (sale["volume"], sale["amount"], sale["order_id"]) == ("10.00", "15.00", "o-1")
    journal = await site.sim.journal()
    clears = [w for w in journal if w.startswith("clear@")]
    assert clears == ["clear@1"], journal  # cleared once, and only once the sale was in the store
    await site.cloud.wait(lambda: "completed" in site.order_statuses("o-1"), what="order ended")
    assert site.order_statuses("o-1").count("completed") == 1
    (auth,) = rows(site.db, "SELECT * FROM authorizations")
    assert auth["state"] == "completed" and auth["sale_id"] == sale["id"]
    assert await site.sim.releases() == 1
    assert site.daemon.terminate() == 0
    assert len(site.sales()) == 1 and "Traceback" not in site.log()


async def sell(site: Site, order_id: str, amount: str, nozzle: int = 1) -> None:
    """A pay-at-pump order and its customer, to the preset and the hang-up."""
    await site.authorize(order_id, amount)
    await site.sim.until(lambda s: s["state"] == "authorised", what="released")
    await site.sim.say(f"lift 1 {nozzle}")
    await site.sim.say("fill 1")
    await site.sim.say("hangup 1")


async def test_sigkill_after_the_commit_before_the_clear_records_nothing_new(
    site: Site,
) -> None:
    await site.start_daemon()
    await site.sim.say("hold-clear on")  # the Clear after the sale will not take
    await sell(site, "o-2", "3.00")
    await until(lambda: len(site.sales()) == 1, timeout=20, what="sale committed")
    await until(lambda: "sale_recorded" in site.log(), what="sale logged")
    journal = await site.sim.journal()
    assert "clear@1" in journal  # the daemon tried to clear it, once it was in the store
    assert (await site.sim.status())["unpaid"] != "none"
    site.daemon.kill()  # power cut between the commit and the Clear
    await site.sim.say("hold-clear off")

    await site.start_daemon()  # reads the same sale from the buffer again
    await site.cleared()
    assert len(site.sales()) == 1
    assert '"sale_already_recorded"' in site.log()
    clears = {w for w in await site.sim.journal() if w.startswith("clear@")}
    assert clears == {"clear@1"}  # never a Clear before the commit
    await site.cloud.wait(lambda: "completed" in site.order_statuses("o-2"), what="order ended")
    assert site.order_statuses("o-2").count("completed") == 1
    assert await site.sim.releases() == 1
    assert rows(site.db, "SELECT kind FROM alarms") == []
    assert site.daemon.terminate() == 0


async def test_a_sale_read_again_without_its_totals_is_known_by_its_tr_seq_nb(
    site: Site,
) -> None:
    """Issue 15.4, the identity "fuelling point + TR_Seq_Nb + totals": the sale is committed
    without its totals (the dispenser would not give them), the daemon is killed before the
    Clear, and after the restart the totals are still not given. The totals cannot name the
    sale, the authorization is closed: its TR_Seq_Nb does (recorded twice before)."""
    await site.start_daemon()
    await site.sim.say("hold-clear on")
    await site.sim.say("hold-totals on")
    await sell(site, "o-5", "3.00")
    await until(lambda: len(site.sales()) == 1, timeout=20, what="sale committed")
    (sale,) = site.sales()
    assert sale["total_volume_after"] is None and sale["dispenser_ref"] == "TR 0001"
    assert '"totals_unavailable"' in site.log()
    site.daemon.kill()
    await site.sim.say("hold-clear off")

    await site.start_daemon()
    await site.cleared()
    assert len(site.sales()) == 1
    assert '"sale_already_recorded"' in site.log()
    clears = {w for w in await site.sim.journal() if w.startswith("clear@")}
    assert clears == {"clear@1"}  # each Clear after the one commit
    assert site.order_statuses("o-5").count("completed") == 1
    assert site.daemon.terminate() == 0


async def test_sigkill_with_two_payable_sales_records_both_once_oldest_first(
    site: Site,
) -> None:
    await site.start_daemon()
    await site.authorize("o-3", "3.00")
    await site.sim.until(lambda s: s["state"] == "authorised", what="released")
    await site.sim.say("lift 1 1")
    fill = asyncio.create_task(site.sim.say("fill 1"))
    await site.sim.until(lambda s: s["state"] == "fuelling", what="fuel flowing")
    site.daemon.kill()
    await fill
    await site.sim.say("hangup 1")
    # While edgectl is down the POS serves the next customer: a second sale left Payable.
    await site.sim.say("pos-release 1 volume 4.00")
    await site.sim.say("lift 1 2")
    await site.sim.say("fill 1")
    await site.sim.say("hangup 1")
    status = await site.sim.status()
    assert status["unpaid"].count("payable") == 2, status

    await site.start_daemon()
    await site.cleared()
    sales = site.sales()
    assert [(s["nozzle"], s["grade"], s["volume"], s["order_id"]) for s in sales] == [
        (1, "95", "2.00", "o-3"),
        (2, "diesel", "4.00", None),
    ]
    clears = [w for w in await site.sim.journal() if w.startswith("clear@")]
    assert clears == ["clear@1", "clear@2"]  # each cleared after its own commit
    assert site.order_statuses("o-3").count("completed") == 1
    site.daemon.kill()
    await site.start_daemon()  # and again: nothing left, nothing twice
    await asyncio.sleep(1.0)
    assert len(site.sales()) == 2
    assert site.daemon.terminate() == 0


async def test_links_dropped_mid_sale_lose_nothing_and_release_once(site: Site) -> None:
    await site.start_daemon()
    await site.authorize("o-4", "15.00")
    await site.sim.until(lambda s: s["state"] == "authorised", what="released")
    await site.sim.say("lift 1 1")
    fill = asyncio.create_task(site.sim.say("fill 1"))
    await site.sim.until(lambda s: s["state"] == "fuelling" and float(s["volume"]) > 1)
    await site.sim.say("drop 1")  # both TCP links closed mid-sale
    await site.sim.until(lambda s: float(s["volume"]) > 4, what="still flowing")
    await site.sim.say("drop 1")  # and again
    await fill
    await site.sim.say("hangup 1")
    await site.cleared()
    (sale,) = site.sales()
    assert (sale["volume"], sale["amount"], sale["order_id"]) == ("10.00", "15.00", "o-4")
    await site.cloud.wait(lambda: "completed" in site.order_statuses("o-4"), what="order ended")
    assert site.order_statuses("o-4").count("completed") == 1
    assert await site.sim.releases() == 1
    assert "Traceback" not in site.log()
    assert site.daemon.terminate() == 0


async def test_a_repeated_authorize_after_a_restart_does_not_release_twice(site: Site) -> None:
    await site.start_daemon()
    body = site.cloud.command(
        "authorize",
        {
            "order_id": "o-5",
            "pump": 1,
            "preset": {"type": "amount", "value": "3.00"},
            "currency": "CNY",
        },
    )
    cmd_id = str(body["cmd_id"])
    await site.cloud.publish("authorize", body)
    first = await site.cloud.result(cmd_id, timeout=20)
    assert first["status"] == "accepted"
    await site.sim.until(lambda s: s["state"] == "authorised", what="released")
    site.daemon.kill()
    await site.start_daemon()
    await site.cloud.publish("authorize", body)  # the cloud sends it again after the restart
    await site.cloud.wait(lambda: len(site.cloud.results(cmd_id)) == 2, what="second answer")
    second = site.cloud.results(cmd_id)[1]
    assert second["status"] == first["status"]
    await asyncio.sleep(1.0)
    assert await site.sim.releases() == 1
    await site.sim.say("lift 1 1")
    await site.sim.say("fill 1")
    await site.sim.say("hangup 1")
    await site.cleared()
    (sale,) = site.sales()
    assert (sale["amount"], sale["order_id"]) == ("3.00", "o-5")
    assert await site.sim.releases() == 1
    assert len(rows(site.db, "SELECT * FROM authorizations")) == 1
    assert site.daemon.terminate() == 0
