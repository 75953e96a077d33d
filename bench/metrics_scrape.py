"""Benchmark: the cost of one metrics scrape and textfile write, and its share of a core.

The forecourt of bench/startup.py: 16 simulated DART pumps (2 lines x 8, `edgectl simulate
dart`, 9600 baud 8O1, 5 ms reply delay) and 8 tanks on one simulated Veeder-Root TLS console,
in two child processes. The daemon runs in this process (so that its parts can be timed one
by one), on a store holding `--sales` sales made for the run, with [metrics] textfile set.

Once every pump is online and every tank read, each scrape is timed in its three parts, as the
daemon's textfile task does them: the store read (on the store's thread: the outbox and the
sales since the last scrape), the exposition (`generate_latest` on the event loop: every
collector), and the write (temp file, fsync, rename, on a worker thread). CPU is the thread's
own (time.thread_time), so the daemon's polling in the same process does not count; the share
of a core is the CPU of one scrape over the interval (15 s by default). The first store read
after a start (every sale in the store aggregated once) is timed apart.

    .venv/bin/python bench/metrics_scrape.py                 # 200 scrapes, 20,000 sales
    .venv/bin/python bench/metrics_scrape.py --scrapes 500 --sales 200000 --json

Exits 0 (this is a measurement); 1 when it could not be set up (a simulator or the daemon
failed, the pumps or tanks never answered); 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from _kit import Child, SetupError, host_busy_s, machine
from startup import LINES, PUMPS_PER_LINE, REPLY_DELAY_MS, TANKS, TLS_SERVER, station_toml

from edgectl.cloud.messages import ContractMessages
from edgectl.config import load_config
from edgectl.daemon import Daemon
from edgectl.logs import configure
from edgectl.metrics import read_store_figures, write_textfile
from edgectl.store.store import Store

T = TypeVar("T")
ONLINE_TIMEOUT_S = 60.0
DEFAULT_INTERVAL_S = 15.0  # [metrics] interval_s's default


@dataclass
class Stats:
    median_ms: float
    p95_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Stats:
        ordered = sorted(seconds)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        return cls(statistics.median(ordered) * 1e3, p95 * 1e3, ordered[-1] * 1e3)


@dataclass
class ScrapeResult:
    pumps: int
    tanks: int
    sales: int
    scrapes: int
    exposition_bytes: int
    families: int
    samples: int
    first_store_read_ms: float  # after a start: every sale aggregated once
    store_wall: Stats
    store_cpu: Stats
    build_wall: Stats
    build_cpu: Stats
    write_wall: Stats
    write_cpu: Stats
    total_cpu: Stats
    interval_s: float
    core_share_pct: float  # the median scrape's CPU over the interval
    other_load_pct: float


def timed(fn: Callable[..., T], *args: Any) -> tuple[T, float, float]:
    """fn(*args), its wall and its thread's CPU seconds (on whatever thread runs it)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.thread_time() - cpu


def seed_sales(path: Path, count: int) -> None:
    """`count` sales in the store, in one transaction (as years of selling would leave)."""
    store = Store(path, station_id="BENCH-01", messages=ContractMessages())
    try:
        with store.transaction() as tx:
            for n in range(count):
                grade, price = ("92", "7.45") if n % 3 else ("95", "7.93")
                tx.execute(
                    "INSERT INTO sales (uid, pump, nozzle, grade, volume, amount, unit_price,"
                    " currency, ended_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'CNY', ?, ?)",
                    (
                        f"BENCH-{n}",
                        1 + n % (LINES * PUMPS_PER_LINE),
                        1 if grade == "92" else 2,
                        grade,
                        "30.00",
                        f"{30 * float(price):.2f}",
                        price,
                        "2026-01-01T10:00:00.000Z",
                        "2026-01-01T10:00:00.000Z",
                    ),
                )
    finally:
        store.close()


async def measure(config_path: Path, scrapes: int, interval_s: float, sales: int) -> ScrapeResult:
    daemon = Daemon(load_config(config_path))
    task = asyncio.create_task(daemon.run(install_signals=False))
    station, metrics = daemon.station, daemon.metrics
    textfile = daemon.config.metrics.textfile
    assert textfile is not None and daemon.tanks is not None
    try:
        deadline = time.monotonic() + ONLINE_TIMEOUT_S
        while not (
            all(p.online for p in station.points.values())
            and all(v.reading_at is not None for v in daemon.tanks.snapshot())
        ):
            if task.done():
                task.result()
                raise SetupError("the daemon stopped while starting")
            if time.monotonic() > deadline:
                raise SetupError(f"pumps and tanks not all answering in {ONLINE_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.1)
        reader = station.store.reader
        _, first_wall, _ = await station.db_quiet(timed, read_store_figures, reader, 0, True)
        await metrics.refresh()
        last_sale = metrics.store_figures.last_sale
        store_wall: list[float] = []
        store_cpu: list[float] = []
        build_wall: list[float] = []
        build_cpu: list[float] = []
        write_wall: list[float] = []
        write_cpu: list[float] = []
        data = b""
        busy = host_busy_s()
        started = time.monotonic()
        for _ in range(scrapes):
            read = (read_store_figures, reader, last_sale, False)
            _, wall, cpu = await station.db_quiet(timed, *read)
            store_wall.append(wall)
            store_cpu.append(cpu)
            data, wall, cpu = timed(lambda: _exposition(metrics))
            build_wall.append(wall)
            build_cpu.append(cpu)
            _, wall, cpu = await asyncio.to_thread(timed, write_textfile, textfile, data)
            write_wall.append(wall)
            write_cpu.append(cpu)
            await asyncio.sleep(0.05)  # the lines poll on meanwhile, as between two scrapes
        elapsed = time.monotonic() - started
        other = (host_busy_s() - busy) / elapsed * 100
        text = data.decode()
        totals = [a + b + c for a, b, c in zip(store_cpu, build_cpu, write_cpu, strict=True)]
        total = Stats.of(totals)
        return ScrapeResult(
            pumps=len(station.points),
            tanks=len(daemon.config.tanks),
            sales=sales,
            scrapes=scrapes,
            exposition_bytes=len(data),
            families=sum(1 for row in text.splitlines() if row.startswith("# TYPE ")),
            samples=sum(1 for row in text.splitlines() if row and not row.startswith("#")),
            first_store_read_ms=first_wall * 1e3,
            store_wall=Stats.of(store_wall),
            store_cpu=Stats.of(store_cpu),
            build_wall=Stats.of(build_wall),
            build_cpu=Stats.of(build_cpu),
            write_wall=Stats.of(write_wall),
            write_cpu=Stats.of(write_cpu),
            total_cpu=total,
            interval_s=interval_s,
            core_share_pct=total.median_ms / 1e3 / interval_s * 100,
            other_load_pct=other,
        )
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)


def _exposition(metrics: Any) -> bytes:
    from prometheus_client.exposition import generate_latest

    return bytes(generate_latest(metrics.registry))


def run(scrapes: int, sales: int, interval_s: float) -> ScrapeResult:
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "textfile").mkdir()
        config = workdir / "station.toml"
        config.write_text(
            station_toml(workdir)
            + f'\n[metrics]\ntextfile = "{workdir / "textfile" / "edgectl.prom"}"\n'
            "interval_s = 3600\n"  # the bench drives the writes itself
        )
        seed_sales(workdir / "edgectl.db", sales)
        python = sys.executable
        children = []
        try:
            dart_argv = [
                python, "-m", "edgectl", "simulate", "dart", "--config", str(config),
                "--reply-delay-ms", str(REPLY_DELAY_MS),
            ]  # fmt: skip
            children.append(Child("simulate", dart_argv, workdir / "simulate.log"))
            tls_argv = [python, "-c", TLS_SERVER, str(workdir / "tls"), str(TANKS)]
            children.append(Child("tls", tls_argv, workdir / "tls.log"))
            ports = [workdir / f"line{n}" for n in range(LINES)] + [workdir / "tls"]
            deadline = time.monotonic() + 20
            while not all(p.exists() for p in ports):
                for child in children:
                    if not child.alive():
                        raise SetupError(f"{child.name} exited before serving\n{child.tail()}")
                if time.monotonic() > deadline:
                    raise SetupError("the simulators' ptys did not appear within 20 s")
                time.sleep(0.05)
            return asyncio.run(measure(config, scrapes, interval_s, sales))
        finally:
            for child in reversed(children):
                child.stop(20.0)


def table(r: ScrapeResult) -> Iterator[str]:
    yield (
        f"edgectl metrics scrape: {r.pumps} pumps, {r.tanks} tanks, {r.sales} sales in the "
        f"store; {r.scrapes} scrapes, {r.exposition_bytes} bytes, {r.families} families, "
        f"{r.samples} samples"
    )
    yield "                      median      p95      max   (ms)"
    for label, stats in (
        ("store read, wall", r.store_wall),
        ("store read, CPU", r.store_cpu),
        ("exposition, wall", r.build_wall),
        ("exposition, CPU", r.build_cpu),
        ("write+fsync, wall", r.write_wall),
        ("write+fsync, CPU", r.write_cpu),
        ("one scrape, CPU", r.total_cpu),
    ):
        yield f"  {label:18s} {stats.median_ms:8.3f} {stats.p95_ms:8.3f} {stats.max_ms:8.3f}"
    yield (
        f"  first store read after a start (every sale aggregated once): "
        f"{r.first_store_read_ms:.1f} ms"
    )
    yield (
        f"  share of a core at interval_s = {r.interval_s:g}: {r.core_share_pct:.4f} % "
        f"(other load on the machine {r.other_load_pct:.1f} %)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cost of one metrics scrape and textfile write.")
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes timed (200)")
    parser.add_argument("--sales", type=int, default=20_000, help="sales in the store (20000)")
    parser.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL_S, help="for the core share (15)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.scrapes < 1 or args.sales < 0 or args.interval <= 0:
        parser.error("--scrapes at least 1, --sales at least 0, --interval positive")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    configure(level="warning", fmt="console")  # the daemon in this process: problems only
    try:
        result = run(args.scrapes, args.sales, args.interval)
    except SetupError as exc:
        print(f"metrics_scrape: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("metrics_scrape: interrupted", file=sys.stderr)
        return 130
    if args.json:
        report = {"benchmark": "metrics_scrape", "machine": machine(), "run": asdict(result)}
        print(json.dumps(report, indent=2))
        return 0
    info = machine()
    print(f"machine: {info['nproc']} x {info['cpu']}, Python {info['python']}")
    print("\n".join(table(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
