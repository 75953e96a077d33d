"""`status` tells the cloud link as it is: connected or not, last PUBACK, outbox depth and age."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.cloudkit import cloud_section
from tests.control.clikit import acall, acli, control_config, eventually, short_dir
from tests.mqttkit import MosquittoBroker
from tests.stationkit import running_station, until


async def test_status_follows_the_cloud_link(mosquitto: MosquittoBroker) -> None:
    with short_dir() as tmp:
        socket = tmp / "control.sock"
        extra = cloud_section(mosquitto.port, Ed25519PrivateKey.generate())
        config = control_config(tmp, socket, mode="attendant", extra=extra)
        async with running_station(config):
            await until(socket.exists, what="the control socket")

            async def status() -> dict[str, Any]:
                result = await acli("status", "--json", "--socket", str(socket))
                assert result.code == 0, result.err
                body: dict[str, Any] = result.json()
                return body

            async def drained() -> bool:
                link = (await acall(socket, "status"))["cloud"]
                return bool(link["connected"] and link["outbox_depth"] == 0)

            async def down() -> bool:
                return not (await acall(socket, "status"))["cloud"]["connected"]

            # Connected, and what was queued at start has been acknowledged.
            await eventually(drained, timeout=20, what="the outbox drained")
            link = (await status())["cloud"]
            assert link["broker"] == f"127.0.0.1:{mosquitto.port}"
            assert link["last_puback_at"] is not None and link["last_puback_age_s"] >= 0
            assert link["published"] >= 1 and link["outbox_oldest_age_s"] is None

            text = await acli("status", "--socket", str(socket))
            assert f"cloud 127.0.0.1:{mosquitto.port}: connected, last PUBACK" in text.out

            mosquitto.stop()
            await eventually(down, timeout=20, what="the link down")
            text = await acli("status", "--socket", str(socket))
            assert "NOT connected" in text.out and "last error" in text.out

            # A message queued while the broker is away waits in the outbox, and its age shows.
            price = await acli("price", "92", "7.50", "--socket", str(socket))
            assert price.code == 0, price.err

            async def waiting() -> bool:
                return bool((await acall(socket, "status"))["cloud"]["outbox_depth"] >= 1)

            await eventually(waiting, timeout=10, what="a message waiting")
            link = (await status())["cloud"]
            assert link["connected"] is False and link["outbox_oldest_age_s"] >= 0
            text = await acli("status", "--socket", str(socket))
            assert f"outbox {link['outbox_depth']} message(s), oldest" in text.out
