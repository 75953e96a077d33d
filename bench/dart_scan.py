"""Benchmark: how close the DART line master gets to the wire's own speed on a full idle line.

32 idle pumps (0x50..0x6F) on one line, simulated at 9600 baud 8O1 with a 5 ms reply delay.
The real `DartLine` polls them over a pty; a tap on its transmit side timestamps every POLL,
and one scan is 32 consecutive POLLs (0x50 .. 0x6F). The scan period is compared with the
line-time floor: what the same polls cost on a perfect wire with pumps answering after
exactly the reply delay.

    .venv/bin/python bench/dart_scan.py                # simulator in a separate process
    .venv/bin/python bench/dart_scan.py --sim both     # also in a thread, to see the GIL's share
    .venv/bin/python bench/dart_scan.py --json

Exits 0 whether or not the target is met (this is a measurement); 1 when the measurement
could not be set up (simulator did not start, pumps never came online, the line stalled).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _kit import SetupError, machine

from drivers.base import DispenserEvent, DispenserStatus, PumpOnline
from drivers.transport import SerialTransport
from drivers.wayne_dart import codec
from drivers.wayne_dart.driver import DartLine, DartLineSettings, DartPumpSettings
from drivers.wayne_dart.sim import DartLineSimulator, SimPump
from edgectl.logs import configure

ADDRESSES = tuple(range(0x50, 0x70))
BAUD = 9600
BITS_PER_CHAR = 11  # start + 8 data + odd parity + stop
REPLY_DELAY_S = 0.005
REPLY_TIMEOUT_S = 0.05
TARGET_RATIO = 1.10
SETUP_TIMEOUT_S = 20.0

POLL_WIRE = codec.encode(codec.poll(ADDRESSES[0]))
EOT_WIRE = codec.encode(codec.eot(ADDRESSES[0], 0))
# One POLL and its EOT answer on a perfect line: both frames' characters plus the think time.
POLL_FLOOR_S = (len(POLL_WIRE) + len(EOT_WIRE)) * BITS_PER_CHAR / BAUD + REPLY_DELAY_S
SCAN_FLOOR_S = len(ADDRESSES) * POLL_FLOOR_S


# ======================================================================================
# The simulated line, in a thread of this process or in a process of its own
# ======================================================================================
def build_simulator() -> DartLineSimulator:
    pumps = [SimPump(address, {1: 789, 2: 750}) for address in ADDRESSES]
    return DartLineSimulator(
        pumps, baud=BAUD, parity="odd", reply_delay_s=REPLY_DELAY_S, name="bench-line"
    )


def _sim_stats(sim: DartLineSimulator) -> dict[str, Any]:
    stats = asdict(sim.stats)
    stats["pump_polls"] = sum(sim.pump(a).counters.polls for a in ADDRESSES)
    return stats


def _serve_in_child(link: str, conn: Connection) -> None:
    """Spawned process: serve the line until the parent says stop or goes away."""
    # Ctrl-C reaches the whole process group; the parent decides when the line stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure(level="warning", fmt="console")
    sim = build_simulator()
    try:
        try:
            sim.serve_pty(Path(link))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            return
        conn.send(("ready", None))
        with contextlib.suppress(EOFError):
            conn.recv()
        with contextlib.suppress(OSError):
            conn.send(("stats", _sim_stats(sim)))
    finally:
        sim.stop()


class ThreadSim:
    """The simulator on its own thread in this process (shares the GIL with the driver)."""

    mode = "thread"

    def __init__(self, link: Path) -> None:
        self._sim = build_simulator()
        self._link = link

    def start(self) -> None:
        self._sim.serve_pty(self._link)

    def stop(self) -> dict[str, Any]:
        stats = _sim_stats(self._sim)
        self._sim.stop()
        return stats


class ProcessSim:
    """The simulator in a spawned process: its own interpreter, its own GIL, its own core."""

    mode = "process"

    def __init__(self, link: Path) -> None:
        self._link = link
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_serve_in_child, args=(str(link), child_conn), name="dart-sim", daemon=True
        )
        self._child_conn = child_conn

    def start(self) -> None:
        self._process.start()
        self._child_conn.close()  # only the child holds it now: its exit shows up as EOF
        if not self._conn.poll(SETUP_TIMEOUT_S):
            raise SetupError("the simulator process did not report ready")
        try:
            kind, detail = self._conn.recv()
        except EOFError:
            raise SetupError("the simulator process exited before it was ready") from None
        if kind != "ready":
            raise SetupError(f"the simulator process failed: {detail}")

    def stop(self) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send("stop")
            with contextlib.suppress(EOFError, OSError):
                if self._conn.poll(5.0):
                    kind, detail = self._conn.recv()
                    if kind == "stats":
                        stats = detail
        self._conn.close()
        self._process.join(5.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        return stats


# ======================================================================================
# Measuring
# ======================================================================================
class ScanRecorder:
    """A frame tap: timestamps every frame until `scans` whole scans have been seen.

    It only appends to a list; the analysis runs after the measurement so the tap adds
    as little as possible to the line task's own work.
    """

    def __init__(self, scans: int) -> None:
        self.frames: list[tuple[str, bytes, float]] = []
        self._starts_needed = scans + 1  # N periods need N+1 scan starts
        self._starts = 0
        self.done = asyncio.Event()

    def tap(self, direction: str, raw: bytes, item: object, t: float) -> None:
        self.frames.append((direction, raw, t))
        if direction == "tx" and raw == POLL_WIRE:
            self._starts += 1
            if self._starts >= self._starts_needed:
                self.done.set()


@dataclass
class ScanResult:
    sim: str
    scans: int
    irregular_scans: int
    floor_s: float
    mean_s: float
    p50_s: float
    p95_s: float
    min_s: float
    max_s: float
    ratio: float
    target_ratio: float
    target_met: bool
    polls_per_s: float
    floor_polls_per_s: float
    reply_latency_mean_s: float  # POLL sent -> EOT decoded, as the driver sees it
    turnaround_mean_s: float  # EOT decoded -> next POLL sent: the controller's own time
    # CPU of this process over the window; with the simulator in a thread it includes it.
    process_cpu_pct: float
    process_cpu_per_poll_s: float
    # Every process on the machine, in % of one core: shows how busy a shared machine was.
    host_busy_pct: float
    timeouts: int
    retransmissions: int
    counters: dict[str, int]
    simulator: dict[str, Any]


def analyse(frames: list[tuple[str, bytes, float]]) -> dict[str, Any]:
    """Scan periods (start to start), and the per-poll split of each period."""
    tx = [(raw, t) for direction, raw, t in frames if direction == "tx"]
    first = next((i for i, (raw, _t) in enumerate(tx) if raw == POLL_WIRE), None)
    if first is None:
        raise SetupError("no POLL to the first pump was seen")
    starts = [i for i in range(first, len(tx)) if tx[i][0] == POLL_WIRE]
    expected = [codec.encode(codec.poll(a)) for a in ADDRESSES]
    periods: list[float] = []
    irregular = 0
    for begin, end in itertools.pairwise(starts):
        if [raw for raw, _t in tx[begin:end]] != expected:
            irregular += 1  # a command, a retry or a skipped pump got in: not a plain scan
        periods.append(tx[end][1] - tx[begin][1])
    window_start, window_end = tx[starts[0]][1], tx[starts[-1]][1]

    latencies: list[float] = []
    turnarounds: list[float] = []
    sent_at: float | None = None
    answered_at: float | None = None
    for direction, _raw, t in frames:
        if not window_start <= t <= window_end:
            continue
        if direction == "tx":
            if answered_at is not None:
                turnarounds.append(t - answered_at)
            sent_at, answered_at = t, None
        elif sent_at is not None:
            latencies.append(t - sent_at)
            sent_at, answered_at = None, t
    polls = sum(1 for raw, t in tx if window_start <= t < window_end and raw[1] == 0x20)
    return {
        "periods": periods,
        "irregular": irregular,
        "polls_per_s": polls / (window_end - window_start),
        "latency": statistics.fmean(latencies) if latencies else float("nan"),
        "turnaround": statistics.fmean(turnarounds) if turnarounds else float("nan"),
    }


async def measure(link: Path, scans: int, sim_mode: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Run the real line master against the simulator and record `scans` idle scans."""
    online: set[int] = set()
    all_online = asyncio.Event()

    def on_event(event: DispenserEvent) -> None:
        if isinstance(event, PumpOnline):
            online.add(event.pump)
            if len(online) == len(ADDRESSES):
                all_online.set()

    settings = DartLineSettings(
        name="bench",
        baud=BAUD,
        bits_per_char=BITS_PER_CHAR,
        reply_timeout_s=REPLY_TIMEOUT_S,
        poll_interval_s=0.0,
    )
    pumps = [DartPumpSettings(address, (1, 2)) for address in ADDRESSES]
    transport = SerialTransport(str(link), baud=BAUD, parity="odd", name="bench")
    line = DartLine(settings, pumps, transport, on_event)
    task = asyncio.create_task(line.run(), name="line-bench")
    try:
        try:
            async with asyncio.timeout(SETUP_TIMEOUT_S):
                await all_online.wait()
                statuses = await asyncio.gather(*(line.request_status(a) for a in ADDRESSES))
        except TimeoutError:
            raise SetupError(
                f"only {len(online)} of {len(ADDRESSES)} pumps came online "
                f"within {SETUP_TIMEOUT_S:.0f} s ({sim_mode} simulator)"
            ) from None
        busy = [
            f"0x{a:02X}"
            for a, status in zip(ADDRESSES, statuses, strict=True)
            if status is not DispenserStatus.RESET
        ]
        if busy:
            raise SetupError(f"pumps not idle: {', '.join(busy)}")
        recorder = ScanRecorder(scans)
        before = line.counters.as_dict()
        cpu_before, wall_before = time.process_time(), time.monotonic()
        host_before = host_busy_s()
        line.taps.append(recorder.tap)
        # Generous: 30 scans at the floor take 11.4 s; a stalled line must not hang the bench.
        try:
            async with asyncio.timeout(scans * SCAN_FLOOR_S * 5 + SETUP_TIMEOUT_S):
                await recorder.done.wait()
        except TimeoutError:
            raise SetupError("the line stalled: the scans did not complete") from None
        line.taps.remove(recorder.tap)
        cpu_s, wall_s = time.process_time() - cpu_before, time.monotonic() - wall_before
        host_s = host_busy_s() - host_before
        after = line.counters.as_dict()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    delta = {name: after[name] - before[name] for name in after}
    data = analyse(recorder.frames)
    data["cpu_pct"] = cpu_s / wall_s * 100
    data["cpu_per_poll_s"] = cpu_s / max(1, delta["frames_sent"])
    data["host_busy_pct"] = host_s / wall_s * 100
    return data, delta


def run_once(sim_mode: str, scans: int) -> ScanResult:
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-") as tmp:
        link = Path(tmp) / "dart"
        sim: ThreadSim | ProcessSim = ThreadSim(link) if sim_mode == "thread" else ProcessSim(link)
        sim_stats: dict[str, Any] = {}
        try:
            sim.start()
            data, delta = asyncio.run(measure(link, scans, sim_mode))
        finally:
            sim_stats = sim.stop()
    periods = data["periods"]
    mean = statistics.fmean(periods)
    return ScanResult(
        sim=sim_mode,
        scans=len(periods),
        irregular_scans=data["irregular"],
        floor_s=SCAN_FLOOR_S,
        mean_s=mean,
        p50_s=statistics.median(periods),
        p95_s=_percentile(periods, 95),
        min_s=min(periods),
        max_s=max(periods),
        ratio=mean / SCAN_FLOOR_S,
        target_ratio=TARGET_RATIO,
        target_met=mean / SCAN_FLOOR_S <= TARGET_RATIO,
        polls_per_s=data["polls_per_s"],
        floor_polls_per_s=1 / POLL_FLOOR_S,
        reply_latency_mean_s=data["latency"],
        turnaround_mean_s=data["turnaround"],
        process_cpu_pct=data["cpu_pct"],
        process_cpu_per_poll_s=data["cpu_per_poll_s"],
        host_busy_pct=data["host_busy_pct"],
        timeouts=delta["timeouts"],
        retransmissions=delta["retransmissions"],
        counters={k: v for k, v in delta.items() if v},
        simulator=sim_stats,
    )


def host_busy_s() -> float:
    """CPU seconds every core of the machine spent busy (all processes), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], pct: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


# ======================================================================================
# Reporting
# ======================================================================================
def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def table(result: ScanResult) -> Iterator[str]:
    where = {
        "process": "simulator in a separate process",
        "thread": "simulator in a thread of this process (shares the GIL)",
    }[result.sim]
    verdict = "met" if result.target_met else "MISSED"
    yield (
        f"DART status scan: {len(ADDRESSES)} idle pumps, {BAUD} baud 8O1, "
        f"{REPLY_DELAY_S * 1000:.0f} ms reply delay"
    )
    yield f"  {where}"
    yield (
        f"  floor per scan     {_ms(result.floor_s)}   = {len(ADDRESSES)} x "
        f"({len(POLL_WIRE)}+{len(EOT_WIRE)} bytes x {BITS_PER_CHAR} bit / {BAUD} "
        f"+ {REPLY_DELAY_S * 1000:.0f} ms)"
    )
    yield f"  scans measured     {result.scans:8d}      ({result.irregular_scans} irregular)"
    yield f"  scan period mean   {_ms(result.mean_s)}"
    yield f"              p50    {_ms(result.p50_s)}"
    yield f"              p95    {_ms(result.p95_s)}"
    yield f"              min    {_ms(result.min_s)}"
    yield f"              max    {_ms(result.max_s)}"
    yield (
        f"  mean / floor       {result.ratio:8.3f}      "
        f"target <= {result.target_ratio:.2f}: {verdict}"
    )
    yield (
        f"  polls per second   {result.polls_per_s:8.1f}      "
        f"(floor allows {result.floor_polls_per_s:.1f})"
    )
    yield (
        f"  per poll           reply {result.reply_latency_mean_s * 1000:.3f} ms "
        f"(floor {POLL_FLOOR_S * 1000:.3f}), controller turnaround "
        f"{result.turnaround_mean_s * 1000:.3f} ms"
    )
    whose = "controller + simulator" if result.sim == "thread" else "controller only"
    yield (
        f"  CPU of this process{result.process_cpu_pct:8.2f} %    "
        f"{result.process_cpu_per_poll_s * 1e6:.0f} us per poll ({whose})"
    )
    yield f"  whole machine busy {result.host_busy_pct:8.2f} %    (all processes, for noise)"
    yield f"  timeouts           {result.timeouts:8d}"
    yield f"  retransmissions    {result.retransmissions:8d}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Status-scan period of 32 idle DART pumps on one 9600 baud line, "
        "as a ratio to the line-time floor.",
    )
    parser.add_argument("--scans", type=int, default=30, help="full scans to measure (30)")
    parser.add_argument(
        "--sim",
        choices=("process", "thread", "both"),
        default="process",
        help="where the simulator runs: a separate process (default, like real pumps), "
        "a thread of the benchmark process, or both one after the other",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.scans < 1:
        parser.error("--scans must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the line task, the simulator and the pty are closed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    configure(level="warning", fmt="console")
    modes = ("thread", "process") if args.sim == "both" else (args.sim,)
    results: list[ScanResult] = []
    try:
        for mode in modes:
            results.append(run_once(mode, args.scans))
    except SetupError as exc:
        print(f"dart_scan: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dart_scan: interrupted", file=sys.stderr)
        return 130
    if args.json:
        report = {
            "benchmark": "dart_scan",
            "machine": machine(),
            "line": {
                "pumps": len(ADDRESSES),
                "baud": BAUD,
                "bits_per_char": BITS_PER_CHAR,
                "reply_delay_s": REPLY_DELAY_S,
                "reply_timeout_s": REPLY_TIMEOUT_S,
            },
            "runs": [asdict(r) for r in results],
        }
        print(json.dumps(report, indent=2))
        return 0
    info = machine()
    print(f"machine: {info['nproc']} x {info['cpu']}, Python {info['python']}")
    for result in results:
        print()
        print("\n".join(table(result)))
    if len(results) == 2:
        thread, process = results
        print()
        print(
            f"simulator in a thread vs a process: {thread.mean_s * 1000:.1f} vs "
            f"{process.mean_s * 1000:.1f} ms per scan "
            f"({(thread.mean_s / process.mean_s - 1) * 100:+.1f} %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
