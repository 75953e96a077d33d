"""`make fleet`: a chain of stations on one broker, through bad uplinks, into PostgreSQL.

    .venv/bin/python -m chaos.fleet [--stations 50] [--duration 240] [--workers 3] [--seed S]

What runs, all real processes on this machine:

- one Mosquitto (tests/mqttkit.py), restarted once half-way through the fleet phase;
- `--stations` station daemons (`edgectl run`), each with two simulated DART pumps on a pty
  (`edgectl simulate dart --customers random`), in cloud mode with `delivery = "backend"`;
- each station's uplink through its own fault proxy (chaos/netproxy.py): latency and jitter
  always, and at random per station dropped connections, no coverage, and stalls that close
  nothing (only the keepalive notices them);
- `--workers` reference ingest workers (`edgectl cloud ingest`) on one shared subscription,
  into a schema of their own in the machine's PostgreSQL, killed with SIGKILL and restarted at
  random during the run;
- a load generator playing the backend's payment side: when a customer lifts a nozzle (the
  pump reports `calling`), it sends a signed `authorize` for that pump, as an app payment
  would; and probe orders (authorize an idle pump, then cancel) that time the round trip, on
  one station alone first, then across the loaded fleet, in the same run.

At the end, with the faults lifted and the orders stopped, it waits for every outbox to drain
and checks: every sale of every station is in PostgreSQL exactly once and equal to the
station's own store; every order the generator sent ended; no gap is left open; every outbox is
empty. Figures (docs/performance.md) and the verdict are printed, and written as JSON with
`--report FILE`. Exit status 1 on any loss, duplicate, open order, open gap or crash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chaos.netproxy import FaultProxy, Schedule
from edgectl.cloud.signing import encode_public_key, sign_command

PREFIX = "edgectl"
KEY_ID = "fleet-key"
GRADES = {"92": "7.45", "95": "7.93"}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.fleet", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--stations", type=int, default=50)
    parser.add_argument("--pumps", type=int, default=2, help="pumps per station (one line)")
    parser.add_argument("--duration", type=float, default=240.0, help="fleet phase, seconds")
    parser.add_argument("--workers", type=int, default=3, help="ingest workers")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--customer-interval", type=float, default=25.0, help="mean s between customers per line"
    )
    parser.add_argument("--solo-probes", type=int, default=40, help="probe orders, one station")
    parser.add_argument("--probe-interval", type=float, default=0.5, help="s between probes")
    parser.add_argument("--worker-kill-interval", type=float, default=30.0)
    parser.add_argument("--no-faults", action="store_true", help="no uplink faults (a baseline)")
    parser.add_argument("--no-broker-restart", action="store_true")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "EDGECTL_FLEET_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
        ),
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    parser.add_argument("--report", type=Path, help="write the figures and verdict as JSON")
    return parser.parse_args(argv)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _backend_answer(payload: str) -> bool:
    """A result answering the ingest worker's own ack or replay (its cmd_ids begin "bk-")."""
    try:
        body = json.loads(payload)
        return str(body.get("cmd_id") or body["data"]["cmd_id"]).startswith("bk-")
    except (ValueError, KeyError, TypeError):
        return False


# ------------------------------------------------------------------------------ stations
@dataclass
class Station:
    index: int
    directory: Path
    proxy: FaultProxy
    station_id: str
    pumps: int
    daemon: subprocess.Popen[bytes] | None = None
    sim: subprocess.Popen[bytes] | None = None
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    rss_peak_kb: int = 0

    @property
    def config(self) -> Path:
        return self.directory / "station.toml"

    @property
    def store(self) -> Path:
        return self.directory / "edgectl.db"

    @property
    def log(self) -> Path:
        return self.directory / "daemon.log"

    def write_config(self, key: Ed25519PrivateKey, broker_port: int) -> None:
        public = encode_public_key(key.public_key())
        parts = [
            f"""[station]
id = "{self.station_id}"
currency = "CNY"

[store]
path = "{self.store}"
backup_interval_h = 0

[authorization]
mode = "cloud"
authorize_timeout_s = 60

[logging]
level = "info"
format = "json"

[control]
socket = "{self.directory / "ctl.sock"}"

[cloud]
host = "127.0.0.1"
port = {self.proxy.port}
tls = false
heartbeat_s = 30
keepalive_s = 10
reconnect_min_s = 0.5
reconnect_max_s = 15
delivery = "backend"
command_keys = [{{ id = "{KEY_ID}", public_key = "{public}" }}]
"""
        ]
        for grade, price in GRADES.items():
            parts.append(f'[[grades]]\nid = "{grade}"\nname = "{grade}"\nunit_price = "{price}"\n')
        parts.append(
            f'[[lines]]\nname = "l0"\nport = "{self.directory / "l0"}"\nprotocol = "wayne_dart"\n'
        )
        for p in range(self.pumps):
            parts.append(
                f'[[pumps]]\nnumber = {p + 1}\nline = "l0"\naddress = {0x50 + p}\n'
                'nozzles = { 1 = "92", 2 = "95" }\n'
            )
        self.config.write_text("\n".join(parts), encoding="utf-8")
        del broker_port  # the station reaches the broker only through its proxy

    def start_sim(self, interval: float, seed: int) -> None:
        self.sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgectl",
                "simulate",
                "dart",
                "--config",
                str(self.config),
                "--customers",
                "random",
                "--mean-interval",
                str(interval),
                "--seed",
                str(seed),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "sim.log").open("ab"),
        )

    def start_daemon(self) -> None:
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "edgectl", "run", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )

    def cpu_s(self) -> float:
        if self.daemon is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.daemon.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sample_rss(self) -> None:
        if self.daemon is None:
            return
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.daemon.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.rss_peak_kb = max(self.rss_peak_kb, int(line.split()[1]))

    def read(self, sql: str) -> list[dict[str, Any]]:
        db = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute(sql)]
        finally:
            db.close()

    def outbox_depth(self) -> int:
        """Guaranteed messages the backend has not acknowledged, but for the answers to its
        own latest acks and probes (the answer to the last ack is always outstanding: the
        contract's result stream is acknowledged by the next ack); -1 if unreadable."""
        try:
            rows = self.read(
                "SELECT stream, payload FROM outbox WHERE stream_seq IS NOT NULL"
            )
        except sqlite3.Error:
            return -1
        return sum(
            1
            for r in rows
            if not (r["stream"] == "result" and _backend_answer(r["payload"]))
        )

    def stop(self, which: str) -> None:
        """SIGTERM to the daemon or the simulator ("daemon" | "sim"), without waiting."""
        proc = self.daemon if which == "daemon" else self.sim
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def wait(self, which: str) -> None:
        proc = self.daemon if which == "daemon" else self.sim
        if proc is None:
            return
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------ the backend
class Workers:
    """The reference ingest workers (`edgectl cloud ingest`), one shared subscription."""

    def __init__(
        self,
        base: Path,
        broker_port: int,
        dsn: str,
        schema: str,
        key_file: Path,
        count: int,
        rng: random.Random,
    ) -> None:
        self.base = base
        self.broker_port = broker_port
        self.dsn = dsn
        self.schema = schema
        self.key_file = key_file
        self.rng = rng
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.kills = 0

    def command(self, n: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "edgectl",
            "cloud",
            "ingest",
            "--dsn",
            self.dsn,
            "--schema",
            self.schema,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.broker_port),
            "--group",
            "fleet",
            "--client-id",
            f"fleet-worker-{n}",
            "--key",
            str(self.key_file),
            "--key-id",
            KEY_ID,
            "--prefix",
            PREFIX,
        ]

    def start(self, n: int) -> None:
        log = (self.base / f"worker-{n}.log").open("ab")
        self.procs[n] = subprocess.Popen(
            self.command(n), stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )

    def start_all(self) -> None:
        for n in range(len(self.procs)):
            self.start(n)

    def kill_one(self) -> int:
        n = self.rng.randrange(len(self.procs))
        proc = self.procs[n]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
            self.kills += 1
        self.start(n)
        return n

    def crashed(self) -> list[int]:
        """Workers that ended by themselves (not our SIGKILL, not our SIGTERM's clean 0)."""
        return [
            n
            for n, p in enumerate(self.procs)
            if p is not None and p.poll() not in (None, 0, -signal.SIGKILL, -signal.SIGTERM)
        ]

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


# ------------------------------------------------------------------------------ the generator
@dataclass
class Generator:
    """The backend's payment side: authorize a pump a customer is waiting at; time probes."""

    key: Ed25519PrivateKey
    port: int
    stations: dict[str, Station]
    rng: random.Random
    client: aiomqtt.Client | None = None
    states: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    ordered: dict[tuple[str, int], float] = field(default_factory=dict)  # pump → when
    orders: dict[str, str] = field(default_factory=dict)  # order_id → station
    pending: dict[str, tuple[float, str]] = field(default_factory=dict)  # cmd_id → (t0, kind)
    round_trips: dict[str, list[float]] = field(default_factory=lambda: {"solo": [], "fleet": []})
    results: dict[str, int] = field(default_factory=dict)  # code → count
    refused: set[str] = field(default_factory=set)  # orders the station rejected outright
    unsent: int = 0  # publishes that failed while the broker was away
    phase: str = "solo"
    paying: bool = False

    def command(self, station: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        issued = datetime.now(UTC)
        body = {
            "schema": f"edgectl/v1/cmd/{kind}",
            "cmd_id": f"c-{uuid.uuid4().hex[:16]}",
            "station": station,
            "issued_at": iso(issued),
            "expires_at": iso(issued + timedelta(seconds=120)),
            "data": data,
        }
        return sign_command(body, self.key, KEY_ID)

    async def send(self, station: str, kind: str, data: dict[str, Any], probe: bool = False) -> str:
        body = self.command(station, kind, data)
        if self.client is None:
            raise aiomqtt.MqttError("the generator is not connected")
        self.pending[body["cmd_id"]] = (time.monotonic(), "probe" if probe else kind)
        try:
            await self.client.publish(
                f"{PREFIX}/v1/{station}/cmd/{kind}", json.dumps(body).encode(), qos=1
            )
        except aiomqtt.MqttError:
            self.pending.pop(body["cmd_id"], None)
            raise
        return str(body["cmd_id"])

    async def authorize(self, station: str, pump: int, probe: bool = False) -> str:
        order_id = f"o-{uuid.uuid4().hex[:16]}"
        self.orders[order_id] = station
        amount = f"{self.rng.randrange(20, 300, 10)}.00"
        data = {
            "order_id": order_id,
            "pump": pump,
            "preset": {"type": "amount", "value": amount},
            "currency": "CNY",
        }
        try:
            await self.send(station, "authorize", data, probe=probe)
        except aiomqtt.MqttError:
            del self.orders[order_id]  # never sent: nothing to account for
            self.unsent += 1
        return order_id

    async def run(self) -> None:
        """Subscribed on a persistent session, reconnecting when the broker restarts, so no
        result of an order it sent is missed."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        identifier = f"fleet-gen-{uuid.uuid4().hex[:6]}"
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=identifier,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    clean_start=False,
                    properties=properties,
                    keepalive=10,
                ) as client:
                    self.client = client
                    await client.subscribe(f"{PREFIX}/v1/+/state/pump/+", qos=1)
                    await client.subscribe(f"{PREFIX}/v1/+/result", qos=1)
                    async for message in client.messages:
                        await self._on(str(message.topic), message.payload)
            except aiomqtt.MqttError:
                self.client = None
                await asyncio.sleep(0.5)

    async def _on(self, topic: str, payload: Any) -> None:
        try:
            body = json.loads(payload)
        except (TypeError, ValueError):
            return
        parts = topic.split("/")
        station = parts[2]
        if "/state/pump/" in topic:
            data = body.get("data") or {}
            pump = int(data.get("pump", 0))
            self.states[(station, pump)] = data
            if self.paying and data.get("state") == "calling" and not data.get("order_id"):
                last = self.ordered.get((station, pump), 0.0)
                if time.monotonic() - last > 5.0:  # one payment per lift
                    self.ordered[(station, pump)] = time.monotonic()
                    await self.authorize(station, pump)
        elif topic.endswith("/result"):
            data = body.get("data") or {}
            code = str(data.get("code"))
            self.results[code] = self.results.get(code, 0) + 1
            sent = self.pending.pop(str(data.get("cmd_id")), None)
            if data.get("status") == "rejected" and data.get("type") == "authorize":
                self.refused.add(str(data.get("order_id")))
            if sent is not None and sent[1] == "probe" and data.get("status") == "accepted":
                self.round_trips[self.phase].append(time.monotonic() - sent[0])
                order_id = data.get("order_id")
                if order_id:
                    await self.send(station, "cancel", {"order_id": order_id})

    def idle_pump(self, station: str) -> int | None:
        pumps = [
            pump
            for (st, pump), data in self.states.items()
            if st == station and data.get("state") == "idle" and data.get("online")
        ]
        return self.rng.choice(pumps) if pumps else None

    async def probe(self, station: str) -> bool:
        pump = self.idle_pump(station)
        if pump is None:
            return False
        self.states[(station, pump)] = {**self.states[(station, pump)], "state": "probed"}
        await self.authorize(station, pump, probe=True)
        return True

    def unanswered(self) -> list[str]:
        """Authorize commands sent and not answered (yet)."""
        return [cmd for cmd, (_, kind) in self.pending.items() if kind in ("authorize", "probe")]


# ------------------------------------------------------------------------------ the run
class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seed = args.seed if args.seed is not None else random.randrange(2**32)
        self.rng = random.Random(self.seed)
        self.key = Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32))
        self.base = Path(tempfile.mkdtemp(prefix="edgectl-fleet-"))
        self.schema = f"fleet_{self.seed}_{os.getpid()}"
        self.stations: list[Station] = []
        self.figures: dict[str, Any] = {"seed": self.seed, "stations": args.stations}
        self.problems: list[str] = []
        self.restart_at: float | None = None

    def drop_schema(self) -> None:
        """The run's PostgreSQL schema goes with its directory (kept with --keep)."""
        if not self.args.workers:
            return
        try:
            import psycopg  # type: ignore[import-not-found, unused-ignore]

            with psycopg.connect(self.args.dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        except Exception as exc:  # a leftover schema is reported, not fatal
            self.say(f"could not drop schema {self.schema}: {exc}")

    def say(self, text: str) -> None:
        print(f"fleet: {text}", flush=True)

    async def run(self) -> int:
        from tests.mqttkit import MosquittoBroker

        args = self.args
        self.say(f"seed {self.seed}, {args.stations} stations, directory {self.base}")
        key_file = self.base / "cloud.key"
        from cryptography.hazmat.primitives import serialization

        key_file.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        with MosquittoBroker(self.base) as broker:
            workers = Workers(
                self.base,
                broker.port,
                args.dsn,
                self.schema,
                key_file,
                args.workers,
                random.Random(self.rng.random()),
            )
            gen = Generator(self.key, broker.port, {}, random.Random(self.rng.random()))
            gen_task = asyncio.create_task(gen.run())
            try:
                await self._stations(broker.port, gen)
                workers.start_all()
                await self._solo(gen)
                await self._fleet(broker, workers, gen)
                await self._drain(gen)
            finally:
                gen_task.cancel()
                with contextlib.suppress(BaseException):
                    await gen_task
                self.say("stopping")
                for st in self.stations:
                    st.cpu_end = st.cpu_end or st.cpu_s()
                # The daemons first, then their pumps: pumps gone under a running daemon
                # would leave a line_down alarm in the outbox with no backend to take it.
                for which in ("daemon", "sim"):
                    for st in self.stations:
                        st.stop(which)
                    for st in self.stations:
                        st.wait(which)
                workers.stop()
                for st in self.stations:
                    await st.proxy.close()
            self._reconnect_storm()
            await asyncio.to_thread(self._verify, gen, workers)
        self._report()
        return 1 if self.problems else 0

    async def _stations(self, broker_port: int, gen: Generator) -> None:
        args = self.args
        for i in range(args.stations):
            directory = self.base / f"s{i:03d}"
            directory.mkdir()
            proxy = FaultProxy(
                broker_port,
                latency_s=0.03,
                jitter_s=0.04,
                seed=self.rng.randrange(2**32),
                name=f"s{i:03d}",
            )
            await proxy.__aenter__()
            st = Station(i, directory, proxy, f"FLEET-{i:03d}", args.pumps)
            st.write_config(self.key, broker_port)
            self.stations.append(st)
            gen.stations[st.station_id] = st
        # Station 0 first, alone, for the solo round trips.
        await self._start([self.stations[0]])

    async def _start(self, stations: list[Station]) -> None:
        for st in stations:
            st.start_sim(self.args.customer_interval, self.rng.randrange(2**32))
        deadline = time.monotonic() + 30
        while not all((st.directory / "l0").exists() for st in stations):
            if time.monotonic() > deadline:
                raise RuntimeError("a simulator did not create its pty")
            await asyncio.sleep(0.1)
        for st in stations:
            st.start_daemon()
            st.cpu_start = st.cpu_s()

    async def _until(self, predicate: Any, timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.problems.append(f"timed out waiting for {what}")
                return False
            await asyncio.sleep(0.2)
        return True

    async def _solo(self, gen: Generator) -> None:
        first = self.stations[0].station_id
        await self._until(lambda: gen.idle_pump(first) is not None, 60, "station 0 online")
        gen.phase = "solo"
        sent = 0
        deadline = time.monotonic() + 120
        while len(gen.round_trips["solo"]) < self.args.solo_probes and time.monotonic() < deadline:
            if await gen.probe(first):
                sent += 1
            await asyncio.sleep(self.args.probe_interval)
        self.say(f"solo: {len(gen.round_trips['solo'])} probe round trips on {first}")

    async def _fleet(self, broker: Any, workers: Workers, gen: Generator) -> None:
        args = self.args
        await self._start(self.stations[1:])
        await self._until(
            lambda: len({s for s, _ in gen.states}) == len(self.stations),
            120,
            "every station online",
        )
        self.say("fleet phase begins")
        for st in self.stations:
            st.cpu_start = st.cpu_s()
        gen.phase = "fleet"
        gen.paying = True
        loop = asyncio.get_running_loop()
        start = loop.time()
        faults = []
        if not args.no_faults:
            schedule = Schedule(mean_gap_s=45.0, fault_s=(2.0, 25.0))
            faults = [
                asyncio.create_task(st.proxy.run_schedule(schedule, args.duration * 0.8))
                for st in self.stations
            ]
        restarted = args.no_broker_restart
        next_kill = start + self.rng.expovariate(1.0 / args.worker_kill_interval)
        cpu_t0 = time.monotonic()
        while (now := loop.time()) < start + args.duration:
            if not restarted and now > start + args.duration / 2:
                self.say("broker restart")
                self.restart_at = time.time()
                await asyncio.to_thread(broker.restart)
                restarted = True
            if now > next_kill and workers.procs:
                n = workers.kill_one()
                self.say(f"worker {n} killed and restarted")
                next_kill = now + self.rng.expovariate(1.0 / args.worker_kill_interval)
            # Round trips under load, not through a fault: probes go to stations whose
            # uplink is up now (a fault that begins during a probe still counts).
            healthy = [st for st in self.stations if not st.proxy.faulted]
            if healthy:
                await gen.probe(self.rng.choice(healthy).station_id)
            for st in self.stations:
                st.sample_rss()
            await asyncio.sleep(args.probe_interval)
        for task in faults:
            task.cancel()
        await asyncio.gather(*faults, return_exceptions=True)
        for st in self.stations:
            st.proxy.blackhole(False)
            st.proxy.refuse(False)
            st.cpu_end = st.cpu_s()
        elapsed = time.monotonic() - cpu_t0
        cpu = [(st.cpu_end - st.cpu_start) / elapsed * 100 for st in self.stations]
        self.figures["daemon_cpu_pct_median"] = statistics.median(cpu)
        self.figures["daemon_cpu_pct_max"] = max(cpu)
        self.figures["daemon_rss_peak_mb_median"] = statistics.median(
            st.rss_peak_kb / 1024 for st in self.stations
        )
        self.figures["daemon_rss_peak_mb_max"] = max(st.rss_peak_kb / 1024 for st in self.stations)
        self.figures["fleet_phase_s"] = elapsed
        self.figures["worker_kills"] = workers.kills
        self.figures["faults"] = sum(
            1
            for st in self.stations
            for _, what in st.proxy.events
            if what in ("blackhole on", "refuse on")
        )
        gen.paying = False
        self.say("fleet phase over; orders stopped, faults lifted")

    async def _drain(self, gen: Generator) -> None:
        # Fills in progress finish; a customer who lifts now waits in vain and walks away.
        await asyncio.sleep(5)
        drained = await self._until(
            lambda: self._orders_open(gen) == 0
            and all(st.outbox_depth() == 0 for st in self.stations),
            self.args.drain_timeout,
            "every order ended and every outbox drained",
        )
        self.say("outboxes drained" if drained else "outboxes NOT drained")

    def _orders_open(self, gen: Generator) -> int:
        """Orders the generator sent that the stations hold and have not ended."""
        from chaos.fleetcheck import TERMINAL

        open_ = 0
        for st in self.stations:
            try:
                rows = st.read("SELECT order_id, status FROM orders")
            except sqlite3.Error:
                return -1
            open_ += sum(
                1 for r in rows if r["order_id"] in gen.orders and r["status"] not in TERMINAL
            )
        return open_

    def _reconnect_storm(self) -> None:
        if self.restart_at is None:
            return
        moments = []
        for st in self.stations:
            with contextlib.suppress(OSError):
                for line in st.log.read_text(errors="replace").splitlines():
                    if '"cloud_reconnected"' not in line:
                        continue
                    with contextlib.suppress(ValueError, KeyError):
                        entry = json.loads(line)
                        at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
                        if at.timestamp() >= self.restart_at:
                            moments.append(at.timestamp() - self.restart_at)
                            break
        per_second: dict[int, int] = {}
        for t in moments:
            per_second[int(t)] = per_second.get(int(t), 0) + 1
        self.figures["restart_reconnected_stations"] = len(moments)
        self.figures["restart_reconnects_peak_per_s"] = max(per_second.values(), default=0)
        self.figures["restart_all_back_s"] = max(moments, default=None)

    def _verify(self, gen: Generator, workers: Workers) -> None:
        solo, fleet = gen.round_trips["solo"], gen.round_trips["fleet"]
        for name, values in (("solo", solo), ("fleet", fleet)):
            self.figures[f"order_rtt_{name}_p50_ms"] = (percentile(values, 0.5) or 0) * 1000
            self.figures[f"order_rtt_{name}_p99_ms"] = (percentile(values, 0.99) or 0) * 1000
            self.figures[f"order_rtt_{name}_n"] = len(values)
        if solo and fleet:
            self.figures["order_rtt_p50_ratio"] = percentile(fleet, 0.5) / percentile(solo, 0.5)  # type: ignore[operator]
        self.figures["orders_sent"] = len(gen.orders)
        self.figures["results"] = gen.results
        for n in workers.crashed():
            self.problems.append(f"ingest worker {n} exited on its own")
        for st in self.stations:
            if st.daemon is not None and st.daemon.returncode not in (0, None):
                self.problems.append(f"{st.station_id}: daemon exited {st.daemon.returncode}")
        try:
            from chaos import fleetcheck
        except ImportError:
            self.problems.append("chaos/fleetcheck.py is missing: nothing checked")
            return
        if self.args.workers:
            fleetcheck.check(self, gen)

    def _report(self) -> None:
        self.say("figures:")
        for key, value in self.figures.items():
            shown = f"{value:.2f}" if isinstance(value, float) else value
            print(f"  {key:36} {shown}")
        if self.args.report:
            self.args.report.write_text(
                json.dumps(
                    {"figures": self.figures, "problems": self.problems}, indent=2, default=str
                )
            )
        if self.problems:
            self.say(f"FAILED: {len(self.problems)} problem(s)")
            for problem in self.problems[:50]:
                print(f"  - {problem}")
        else:
            self.say(
                "ok: every sale in PostgreSQL exactly once, every order ended, no gap, "
                "every outbox empty"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    fleet = Fleet(args)
    try:
        return asyncio.run(fleet.run())
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(fleet.base, ignore_errors=True)
            fleet.drop_schema()


if __name__ == "__main__":
    sys.exit(main())
