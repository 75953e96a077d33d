"""The reference ingest worker (edgectl cloud ingest) end to end: a real Mosquitto, a real
station daemon with simulated pumps in cloud mode with ``delivery = "backend"``, and the
machine's real PostgreSQL, in a schema of each test's own that is dropped afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.wayne_dart.sim import Customer, preset_fill
from edgectl.cloud.client import Broker
from tests.cloudkit import TestCloud, cloud_section
from tests.mqttkit import MosquittoBroker
from tests.stationkit import RunningStation, running_station, until, write_config

psycopg = pytest.importorskip("psycopg")

from edgectl.backend.config import IngestConfig  # noqa: E402  (needs psycopg's extra)
from edgectl.backend.worker import IngestWorker  # noqa: E402

pytestmark = pytest.mark.slow

STATION = "TEST-01"
DSN = os.environ.get("EDGECTL_TEST_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
# Quick rhythm for tests: a gap is asked for after half a second, a quiet stream probed.
RHYTHM: dict[str, Any] = {
    "ack_interval_s": 0.3,
    "gap_grace_s": 0.5,
    "replay_interval_s": 0.5,
    "quiet_s": 1.0,
    "probe_interval_s": 3.0,
    "answer_timeout_s": 3.0,
}


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_prefix() -> Iterator[str]:
    """edgectl_test_<random>: every schema of this session starts so, all dropped at the end."""
    try:
        psycopg.connect(DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL at {DSN}: {exc}")
    prefix = f"edgectl_test_{secrets.token_hex(4)}"
    yield prefix
    with psycopg.connect(DSN, autocommit=True) as conn:
        names = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (prefix + "%",)
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


@pytest.fixture
def pg_schema(pg_prefix: str, request: pytest.FixtureRequest) -> str:
    return f"{pg_prefix}_{secrets.token_hex(3)}"


def query(schema: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    with psycopg.connect(DSN, row_factory=dict_row) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        try:
            return list(conn.execute(sql, params).fetchall())
        except psycopg.errors.UndefinedTable:
            return []


# --------------------------------------------------------------------------- the rig


@dataclass
class Rig:
    broker: MosquittoBroker
    station: RunningStation
    cloud: TestCloud
    key: Ed25519PrivateKey
    key_file: Path
    schema: str
    tmp: Path

    def config(self, client_id: str, **over: Any) -> IngestConfig:
        return IngestConfig(
            broker=Broker("127.0.0.1", self.broker.port),
            key=self.key,
            key_id="test-key",
            dsn=DSN,
            schema=self.schema,
            group="ingest",
            client_id=client_id,
            **{**RHYTHM, **over},
        )

    def pg(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return query(self.schema, sql, params)

    def streams(self) -> dict[str, dict[str, Any]]:
        return {
            r["stream"]: r for r in self.station.rows("SELECT * FROM outbox_streams WHERE key = ''")
        }

    def drained(self) -> bool:
        """Every guaranteed message the station made is acknowledged by the backend, but for
        answers to the backend's own latest acks and probes (the contract: the answer to the
        last ack of the result stream is always outstanding)."""
        held = self.station.rows("SELECT stream, payload FROM outbox WHERE stream_seq IS NOT NULL")
        return all(
            r["stream"] == "result" and json.loads(r["payload"])["cmd_id"].startswith("bk-")
            for r in held
        )

    def summary(self) -> dict[str, Any]:
        """Both sides' counts, for a failure's message."""
        return {
            "station": self.streams(),
            "watermarks": self.pg(
                "SELECT stream, contiguous_seq, highest_seq, ack_sent_seq, acked_seq"
                " FROM watermarks WHERE highest_seq > 0"
            ),
            "gaps": self.pg("SELECT stream, from_seq, to_seq, replays FROM gaps"),
            "rejects": self.pg("SELECT topic, reason FROM rejects"),
        }

    def stored_once(self, stream: str) -> bool:
        """The backend holds seq 1..last of `stream`, each in one event."""
        last = self.streams().get(stream, {}).get("last_seq", 0)
        rows = self.pg(
            "SELECT seq, COUNT(*) AS n FROM events WHERE station = %s AND kind = %s"
            " GROUP BY seq ORDER BY seq",
            (STATION, stream),
        )
        return [r["seq"] for r in rows] == list(range(1, last + 1)) and all(
            r["n"] == 1 for r in rows
        )


@contextlib.asynccontextmanager
async def rig_for(
    tmp_path: Path,
    broker: MosquittoBroker,
    schema: str,
    *,
    delivery: str = "backend",
    key: Ed25519PrivateKey | None = None,
) -> AsyncIterator[Rig]:
    key = key or Ed25519PrivateKey.generate()
    key_file = tmp_path / "test-key.key"
    key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    extra = cloud_section(broker.port, key) + f'delivery = "{delivery}"\n'
    config = write_config(tmp_path, mode="cloud", extra=extra)
    async with (
        TestCloud(broker.port, STATION, key) as cloud,
        running_station(config, flow_rate_lps=40.0) as st,
    ):
        await cloud.wait(lambda: cloud.on("state/online"), what="station online")
        yield Rig(broker, st, cloud, key, key_file, schema, tmp_path)


@contextlib.asynccontextmanager
async def worker(config: IngestConfig) -> AsyncIterator[IngestWorker]:
    w = IngestWorker(config)
    task = asyncio.create_task(w.run(), name=f"worker-{config.client_id}")
    try:
        await asyncio.wait_for(w.wait_ready(), 15)
        yield w
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled(), "the worker ended on its own"


async def sale(rig: Rig, pump: int, n: int) -> None:
    """A pay-at-pump sale: authorize, the customer fills to the preset, hangs up."""
    order = {
        "order_id": f"o-{pump}-{n}",
        "pump": pump,
        "preset": {"type": "amount", "value": "5.00"},
        "currency": "CNY",
    }
    result = await rig.cloud.result(await rig.cloud.send("authorize", order))
    assert result["code"] == "ok", result
    await Customer(rig.station.pump(pump), preset_fill(1, react_s=0.05)).run()
    await until(
        lambda: [e for e in rig.cloud.orders(order["order_id"]) if e["status"] == "completed"],
        20,
        "completed",
    )


async def clears(rig: Rig, count: int) -> None:
    """`count` messages on the result stream, quickly: answers to clears of no sale."""
    for _ in range(count):
        await rig.cloud.publish("clear", rig.cloud.command("clear", {"sale_id": 999}))


def same_sales(rig: Rig) -> None:
    """PostgreSQL's sales are the station's, each once, field for field."""
    mine = {
        r["uid"]: r
        for r in rig.station.rows("SELECT uid, pump, nozzle, grade, volume, amount FROM sales")
    }
    theirs = rig.pg(
        "SELECT uid, pump, nozzle, grade, volume::text AS volume, amount::text AS amount,"
        " COUNT(*) OVER (PARTITION BY station, uid) AS copies FROM sales"
    )
    assert mine and len(theirs) == len(mine)
    for row in theirs:
        assert row.pop("copies") == 1
        assert row == {
            k: str(v) if k in ("volume", "amount") else v for k, v in mine[row["uid"]].items()
        }


# --------------------------------------------------------------------------- tests


async def test_sales_orders_stored_once_equal_to_the_store_and_acked_after_commit(
    tmp_path: Path, mosquitto: MosquittoBroker, pg_schema: str
) -> None:
    async with rig_for(tmp_path, mosquitto, pg_schema) as rig, worker(rig.config("w-1")) as w:
        for n in range(2):
            await asyncio.gather(sale(rig, 1, n), sale(rig, 2, n))
        await until(lambda: rig.drained(), 20, "every message acknowledged")
        same_sales(rig)
        await until(
            lambda: all(rig.stored_once(s) for s in ("sale", "order", "result")),
            10,
            "each message of the streams stored once",
        )
        steps = rig.pg("SELECT order_id, status FROM orders WHERE status = 'completed'")
        assert {s["order_id"] for s in steps} == {"o-1-0", "o-2-0", "o-1-1", "o-2-1"}
        # What the station was told is what PostgreSQL holds contiguously, no more.
        marks = {m["stream"]: m for m in rig.pg("SELECT * FROM watermarks")}
        for stream, row in rig.streams().items():
            if stream in marks:
                assert row["acked_seq"] <= marks[stream]["contiguous_seq"]
        assert marks["sale"]["contiguous_seq"] == 4
        await until(
            lambda: (
                rig.pg("SELECT acked_seq FROM watermarks WHERE stream = 'sale'")
                == [{"acked_seq": 4}]
            ),
            10,
            "the station's answer to the ack of sale 4",
        )

        # A broker redelivering a stored message: stored once still.
        topic, body, raw = next(m for m in rig.cloud.messages if m[0].endswith("/evt/sale"))
        before = w.counters.duplicates
        await rig.cloud._client.publish(topic, raw.payload, qos=1)  # type: ignore[union-attr]
        await until(lambda: w.counters.duplicates > before, 10, "the duplicate seen")
        assert len(rig.pg("SELECT * FROM sales")) == 4

        # Malformed messages on a station's topics: rejected, visible, and the stream goes on.
        client = rig.cloud._client
        assert client is not None
        await client.publish(f"edgectl/v1/{STATION}/evt/sale", b"{not json", qos=1)
        # The next sale's seq, claimed by a broken message: it counts for contiguity until
        # the real one comes, which takes the place.
        bad = dict(body, msg_id="00000000-0000-4000-8000-000000000001", seq=5)
        bad["data"] = dict(body["data"], volume=12.5)  # a float where a decimal string goes
        await client.publish(topic, json.dumps(bad).encode(), qos=1)
        await until(lambda: len(rig.pg("SELECT * FROM rejects")) == 2, 10, "two rejects")
        reasons = sorted(r["reason"] for r in rig.pg("SELECT reason FROM rejects"))
        assert reasons[0].startswith("fails the sale schema: data/volume")
        assert reasons[1].startswith("not UTF-8 JSON")
        await sale(rig, 1, 2)
        await until(lambda: len(rig.pg("SELECT * FROM sales")) == 5, 10, "the next sale")
        assert rig.stored_once("sale")
        slot = rig.pg("SELECT state FROM seqs WHERE stream = 'sale' AND seq = 5")
        assert slot == [{"state": "stored"}]
        await until(lambda: rig.drained(), 20, "acknowledged")
        assert rig.pg("SELECT * FROM gaps") == []


async def test_a_message_the_broker_handed_to_a_dead_member_is_replayed(
    tmp_path: Path, mosquitto: MosquittoBroker, pg_schema: str
) -> None:
    """A group member that took messages (PUBACK on receipt) and died before storing them:
    the worker sees the gaps, and a quiet stream's lost last message by its probe, and has
    the station send them again."""
    async with rig_for(tmp_path, mosquitto, pg_schema) as rig:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 0
        thief = aiomqtt.Client(
            "127.0.0.1",
            mosquitto.port,
            identifier="thief",
            protocol=aiomqtt.ProtocolVersion.V5,
            properties=properties,
        )
        taken: list[int] = []
        async with worker(rig.config("w-1")) as w:
            async with thief:
                await thief.subscribe("$share/ingest/edgectl/v1/+/result", qos=1)

                async def steal() -> None:
                    async for message in thief.messages:
                        taken.append(json.loads(message.payload)["seq"])  # type: ignore[arg-type]

                stealing = asyncio.create_task(steal())
                await clears(rig, 30)
                await until(lambda: len(taken) >= 5, 10, "messages taken by the doomed member")
                await until(lambda: rig.streams()["result"]["last_seq"] >= 30, 10, "all answered")
                stealing.cancel()
            assert taken  # gone with it, PUBACKed: only the station still has them
            await until(lambda: rig.drained() and rig.stored_once("result"), 30, "gaps filled")
            assert w.counters.replays_sent >= 1
            history = rig.pg("SELECT outcome FROM gap_history WHERE stream = 'result'")
            assert history and {h["outcome"] for h in history} == {"filled"}
            assert rig.pg("SELECT * FROM gaps") == []


async def steal_results(broker: MosquittoBroker, rig: Rig, count: int) -> list[int]:
    """A doomed group member takes some of `count` results (PUBACK on receipt) and dies."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 0
    thief = aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier="thief",
        protocol=aiomqtt.ProtocolVersion.V5,
        properties=properties,
    )
    taken: list[int] = []
    async with thief:
        await thief.subscribe("$share/ingest/edgectl/v1/+/result", qos=1)

        async def steal() -> None:
            async for message in thief.messages:
                taken.append(json.loads(message.payload)["seq"])  # type: ignore[arg-type]

        stealing = asyncio.create_task(steal())
        await clears(rig, count)
        await until(lambda: len(taken) >= 3, 10, "messages taken by the doomed member")
        await until(lambda: rig.streams()["result"]["last_seq"] >= count, 10, "all answered")
        stealing.cancel()
    return taken


async def test_a_gap_the_station_no_longer_holds_is_recorded_lost_and_the_stream_goes_on(
    tmp_path: Path, mosquitto: MosquittoBroker, pg_schema: str
) -> None:
    """With `delivery = "broker"` the station deletes a message at the broker's PUBACK: a
    message a dead member took is gone, the replay is answered `unknown`, and the worker
    marks the seqs lost (visible in gap_history) instead of asking for ever."""
    async with (
        rig_for(tmp_path, mosquitto, pg_schema, delivery="broker") as rig,
        worker(rig.config("w-1")) as w,
    ):
        taken = await steal_results(mosquitto, rig, 20)
        assert taken
        await until(
            lambda: (
                rig.pg("SELECT * FROM gaps") == []
                and w.counters.replays_sent >= 1
                and bool(rig.pg("SELECT * FROM gap_history"))
            ),
            30,
            "gaps closed",
        )
        lost = rig.pg(
            "SELECT seq FROM seqs WHERE stream = 'result' AND state = 'lost' ORDER BY seq"
        )
        assert {r["seq"] for r in lost} == set(taken)
        history = rig.pg("SELECT outcome FROM gap_history WHERE stream = 'result'")
        assert {h["outcome"] for h in history} == {"lost"}
        # The stream goes on past them: the next results are stored and contiguous.
        await clears(rig, 3)
        last = rig.streams()
        await until(
            lambda: (
                rig.pg("SELECT contiguous_seq FROM watermarks WHERE stream = 'result'")[0][
                    "contiguous_seq"
                ]
                >= last["result"]["last_seq"] - 1
            ),
            20,
            "contiguous past the lost ones",
        )


async def test_a_rebuilt_station_store_is_counted_again_from_1(
    tmp_path: Path, mosquitto: MosquittoBroker, pg_schema: str
) -> None:
    """The station's store is replaced by a new one (restored from nothing): its streams
    start again at 1 with new msg_ids. The worker's ack is answered `beyond_stream`, it
    forgets what it counted of the old store, and the new store's sales are stored too."""
    key = Ed25519PrivateKey.generate()
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    async with rig_for(first, mosquitto, pg_schema, key=key) as rig:
        config = rig.config("w-1")
        async with worker(config):
            await sale(rig, 1, 0)
            await sale(rig, 1, 1)
            await until(lambda: rig.drained(), 20, "the old store acknowledged")
            old_generation = rig.pg("SELECT generation FROM watermarks WHERE stream = 'sale'")
    assert old_generation == [{"generation": 1}]
    async with rig_for(second, mosquitto, pg_schema, key=key) as rig, worker(config):
        await sale(rig, 2, 0)  # seq 1 of the new store's sale stream: a new msg_id
        await until(lambda: rig.drained(), 30, "the new store acknowledged")
        marks = rig.pg("SELECT generation, contiguous_seq FROM watermarks WHERE stream = 'sale'")
        assert marks == [{"generation": 2, "contiguous_seq": 1}]
        sales = rig.pg(
            "SELECT s.seq FROM sales s JOIN events e USING (msg_id) ORDER BY e.received_at"
        )
        assert [s["seq"] for s in sales] == [1, 2, 1]  # the old store's two, the new one's
        assert rig.pg("SELECT * FROM gaps") == []


def ingest_process(rig: Rig, client_id: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "edgectl", "cloud", "ingest",
        "--dsn", DSN, "--schema", rig.schema,
        "--host", "127.0.0.1", "--port", str(rig.broker.port),
        "--group", "ingest", "--client-id", client_id,
        "--key", str(rig.key_file),
        "--ack-interval", "0.3", "--gap-grace", "0.5", "--replay-interval", "0.5",
        "--quiet", "1", "--probe-interval", "3", "--answer-timeout", "3",
        *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


async def test_two_workers_one_killed_mid_stream_nothing_lost_nothing_twice(
    tmp_path: Path, mosquitto: MosquittoBroker, pg_schema: str
) -> None:
    async with rig_for(tmp_path, mosquitto, pg_schema) as rig:
        log = tmp_path / "workers.log"
        # The one to be killed keeps its session 2 s: what the broker queued for it then dies
        # with it, as when a worker never comes back.
        doomed = ingest_process(rig, "w-doomed", log, "--session-expiry", "2")
        other = ingest_process(rig, "w-other", log)
        try:
            try:
                await until(
                    lambda: log.exists() and log.read_text().count("ingest_subscribed") == 2,
                    20,
                    "both workers subscribed",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {log.read_text()[-4000:]}") from None

            async def customers(pump: int) -> None:
                for n in range(3):
                    await sale(rig, pump, n)

            sales = asyncio.gather(customers(1), customers(2))
            await clears(rig, 40)
            await until(
                lambda: len(rig.pg("SELECT 1 FROM events WHERE worker = 'w-doomed'")) >= 5,
                20,
                "the doomed worker storing",
            )
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(10)
            await clears(rig, 40)
            await sales
            await sale(rig, 1, 9)
            try:
                await until(
                    lambda: (
                        rig.drained()
                        and all(rig.stored_once(s) for s in ("result", "sale", "order"))
                    ),
                    60,
                    "everything stored once and acknowledged",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {rig.summary()}") from None
            same_sales(rig)
            assert other.poll() is None
            assert rig.pg("SELECT * FROM gaps") == []
            assert rig.pg("SELECT * FROM rejects") == []
        finally:
            for proc in (doomed, other):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        assert other.returncode == 0, log.read_text()[-3000:]


def test_a_worker_that_cannot_reach_its_database_says_so_and_exits_1(tmp_path: Path) -> None:
    key_file = tmp_path / "k.key"
    key_file.write_bytes(Ed25519PrivateKey.generate().private_bytes_raw())
    done = subprocess.run(
        [
            sys.executable, "-m", "edgectl", "cloud", "ingest",
            "--dsn", "host=127.0.0.1 port=1 user=postgres connect_timeout=2",
            "--broker", "127.0.0.1:1", "--key", str(key_file), "--key-id", "k",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "PostgreSQL" in done.stderr and "port 1" in done.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "edgectl", "cloud", "ingest", "--broker", "127.0.0.1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert usage.returncode == 2 and "--key" in usage.stderr


async def test_workers_starting_together_on_a_fresh_schema_all_open_it(pg_schema: str) -> None:
    """Workers of a pool start at once (a deploy, a host reboot): each creates the schema and
    its tables if missing. PostgreSQL's CREATE … IF NOT EXISTS is not safe against a concurrent
    creator (a unique violation on its catalogue), so a worker lost that race and died at start
    (the CI run where 'both workers subscribed' never came)."""
    from edgectl.backend.db import Database

    for attempt in range(3):  # the race is narrow: several fresh schemas make it near-certain
        schema = f"{pg_schema}_{attempt}"
        dbs = await asyncio.gather(
            *(Database.open(DSN, schema, f"w{n}") for n in range(8)), return_exceptions=True
        )
        opened = [db for db in dbs if isinstance(db, Database)]
        try:
            assert len(opened) == 8, [repr(e) for e in dbs if not isinstance(e, Database)]
            made = await asyncio.gather(
                *(db.create_tables() for db in opened), return_exceptions=True
            )
            assert [m for m in made if m is not None] == []
        finally:
            for db in opened:
                await db.close()
        assert query(schema, "SELECT count(*) AS n FROM events") == [{"n": 0}]
