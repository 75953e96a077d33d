"""Contract 1.1 end to end, over a real Mosquitto and the real daemon: gap-free sequences per
stream, and with `delivery = "backend"` messages kept until the backend's `ack`, re-sent with
their msg_ids by `replay`, across a broker restart and a station restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.cloudkit import TestCloud, cloud_section
from tests.mqttkit import MosquittoBroker
from tests.stationkit import RunningStation, running_station, until, write_config

pytestmark = pytest.mark.slow

STATION = "TEST-01"


def results(cloud: TestCloud) -> list[dict[str, Any]]:
    return cloud.on("result")


def seqs(cloud: TestCloud) -> list[int]:
    return [m["seq"] for m in results(cloud)]


def ids_by_seq(cloud: TestCloud) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for m in results(cloud):
        found.setdefault(m["seq"], set()).add(m["msg_id"])
    return found


def held(st: RunningStation) -> list[int]:
    """The result stream's seqs the station still holds."""
    rows = st.rows("SELECT stream_seq FROM outbox WHERE stream = 'result' ORDER BY stream_seq")
    return [r["stream_seq"] for r in rows]


async def answered(cloud: TestCloud, type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return await cloud.result(await cloud.send(type_, data))


async def test_backend_acks_and_replays_through_broker_and_station_restarts(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    key = Ed25519PrivateKey.generate()
    extra = cloud_section(mosquitto.port, key) + 'delivery = "backend"\n'
    config = write_config(tmp_path, mode="cloud", extra=extra)
    async with TestCloud(mosquitto.port, STATION, key) as cloud, running_station(config) as st:
        await cloud.wait(lambda: cloud.on("state/online"), what="station online")
        online = cloud.on("state/online")[-1]
        assert online["data"]["contract"] == "1.1"
        # Ten guaranteed messages: the answers to ten clears of a sale that is not there.
        for _ in range(10):
            assert (await answered(cloud, "clear", {"sale_id": 999}))["code"] == "unknown"
        assert seqs(cloud) == list(range(1, 11))  # one stream, gap-free from 1
        # The pumps' live state went out meanwhile: versions, no seq, nothing in the way.
        states = cloud.on("state/pump/1")
        assert states and all(m["seq"] == 0 and m["version"] >= 1 for m in states)
        # The broker took every result; the station keeps them for the backend.
        await until(lambda: held(st) == list(range(1, 11)), what="results kept")
        first_ids = ids_by_seq(cloud)

        ack = await answered(cloud, "ack", {"stream": "result", "seq": 4})
        assert (ack["status"], ack["code"]) == ("accepted", "ok")
        await until(lambda: held(st)[:1] == [5], what="1..4 released")
        replay = await answered(cloud, "replay", {"stream": "result", "from_seq": 6, "to_seq": 8})
        assert (replay["status"], replay["code"]) == ("accepted", "ok")
        await cloud.wait(
            lambda: all(len([s for s in seqs(cloud) if s == n]) == 2 for n in (6, 7, 8)),
            what="6..8 again",
        )
        assert all(ids_by_seq(cloud)[n] == first_ids[n] for n in (6, 7, 8))  # same ids
        gone = await answered(cloud, "replay", {"stream": "result", "from_seq": 1, "to_seq": 5})
        assert (gone["status"], gone["code"]) == ("accepted", "partial")  # 1..4 acked
        ahead = await answered(cloud, "ack", {"stream": "result", "seq": 10**6})
        assert (ahead["status"], ahead["code"]) == ("rejected", "beyond_stream")
        last = max(seqs(cloud))
        await until(lambda: held(st) and held(st)[-1] == last, what="answers kept")
    first_seen = {n: ids for n, ids in ids_by_seq(cloud).items()}

    # The broker restarts, and the station with it: nothing it has not been told about goes.
    mosquitto.restart()
    async with TestCloud(mosquitto.port, STATION, key) as cloud, running_station(config) as st:
        await cloud.wait(lambda: cloud.on("state/online"), what="station online again")
        assert held(st)[:1] == [5] and held(st)[-1] >= last
        replay = await answered(cloud, "replay", {"stream": "result", "from_seq": 5, "to_seq": 10})
        assert replay["code"] == "ok"
        await cloud.wait(
            lambda: set(range(5, 11)) <= set(seqs(cloud)), what="5..10 after the restarts"
        )
        again = ids_by_seq(cloud)
        assert all(again[n] <= first_seen[n] for n in range(5, 11))  # the same msg_ids
        # The new answers continue the stream where it was: no gap, no repeat.
        new = [m["seq"] for m in results(cloud) if m["seq"] > last]
        assert new == list(range(last + 1, last + 1 + len(new)))
        top = max(seqs(cloud))
        done = await answered(cloud, "ack", {"stream": "result", "seq": top})
        assert done["code"] == "ok"
        await until(lambda: held(st) and held(st)[0] > top, what="all acknowledged")
        summary = st.daemon.station.store.reader.outbox_summary()
        assert summary["sequences"]["result"]["acked_seq"] == top
        assert summary["sequences"]["result"]["unacked"] == len(held(st))
