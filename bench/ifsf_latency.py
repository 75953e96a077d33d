"""Benchmark: pay-at-pump order latency to an IFSF dispenser against a DART pump, in one run.

One station, one daemon: bench/order_latency.py's rig (a private Mosquitto, `edgectl run`
as a child process in cloud mode, two DART lines of 8 simulated pumps on ptys, the signing
cloud client) plus an IFSF line of 16 fuelling points: 4 dispenser nodes of 4 FPs on
loopback, drivers/ifsf/sim.py's network simulator on a thread of this process with its own
event loop. Orders alternate between a DART pump and an IFSF FP, one at a time, each
rotating over its 16; an order's latency ends, for DART, when the simulated pump has decoded
the frame that authorizes it (order_latency's TimedPump), for IFSF when the simulated node
has decoded the Write that carries Release_FP (before the model answers it). Both ends of
every figure come from `time.perf_counter()` in this process. A signed `cancel` frees the
pump; the next order waits until the station has published it idle.

    .venv/bin/python bench/ifsf_latency.py                 # 500 orders of each
    .venv/bin/python bench/ifsf_latency.py --orders 200 --json

Exits 0 whether or not anything is fast (a measurement); 1 when it could not be set up; 130
when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from _kit import Child, SetupError, free_port, ifsf_forecourt_toml, read_log_events
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from order_latency import (
    HOST,
    LINES,
    PUMPS,
    STOP_GRACE_S,
    Bench,
    Cloud,
    OrderTimes,
    Spread,
    Usage,
    UsageMeter,
    _row,
    _usage,
    build_lines,
    log_rows,
    machine,
    spread,
    start_broker,
    station_toml,
)

from drivers.ifsf import databases as db
from drivers.ifsf.codec import Message, Write
from drivers.ifsf.dispenser import DispenserSpec, FpSpec, NozzleSpec, ProductSpec
from drivers.ifsf.encodings import Lna
from drivers.ifsf.links import LinkSettings
from drivers.ifsf.sim import IfsfSimulator
from drivers.ptylink import PtyLink
from drivers.wayne_dart.codec import DartStatus
from edgectl.cloud.signing import encode_public_key
from edgectl.logs import configure

NODES = 4
FPS_PER_NODE = 4
IFSF_PUMPS = NODES * FPS_PER_NODE
FIRST_IFSF_PUMP = PUMPS + 1
RELEASE_FP = 0x3E
HEARTBEAT_INTERVAL_S = 1.0


# ======================================================================================
# The IFSF dispensers: the network simulator on a thread of its own
# ======================================================================================
class TimedFp:
    """What order_latency's Bench needs of a simulated pump, for one IFSF fuelling point:
    `on_authorized` is called (on the simulator's thread) with the arrival time of the Write
    that released it, and `status` says whether it is at rest (DART's RESET) as `free` asks."""

    def __init__(self, sim: IfsfSimulator, node: int, fp: int) -> None:
        self._sim, self._node, self._fp = sim, node, fp
        self.on_authorized: Callable[[float], None] | None = None

    @property
    def status(self) -> DartStatus:
        point = self._sim.nodes[self._node].model.fps[self._fp]
        at_rest = point.state.name == "IDLE" and not point.unpaid()
        return DartStatus.RESET if at_rest else DartStatus.AUTHORIZED


class ThreadedDispensers:
    """NODES dispenser nodes of FPS_PER_NODE FPs, served by an event loop on a thread."""

    def __init__(self, tcp_ports: Sequence[int], heartbeat_port: int, cd_heartbeat: int) -> None:
        nozzles = (
            NozzleSpec(1, Decimal("1000.00"), Decimal("7450.00")),
            NozzleSpec(2, Decimal("1000.00"), Decimal("7930.00")),
        )
        products = (
            ProductSpec(1, "92", {1: Decimal("7.45")}),
            ProductSpec(2, "95", {1: Decimal("7.93")}),
        )
        specs = [
            DispenserSpec(Lna(1, n), tuple(FpSpec(nozzles) for _ in range(FPS_PER_NODE)), products)
            for n in range(1, NODES + 1)
        ]
        settings = [
            LinkSettings(
                lnas=(Lna(1, n),),
                tcp_host=HOST,
                tcp_port=tcp_ports[n - 1],
                advertise_ip=HOST,
                heartbeat_host="0.0.0.0",
                heartbeat_port=heartbeat_port,
                heartbeat_destinations=((HOST, cd_heartbeat),),
                heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
                send_heartbeat=False,
            )
            for n in range(1, NODES + 1)
        ]
        numbers = {
            (Lna(1, n), fp): FIRST_IFSF_PUMP + (n - 1) * FPS_PER_NODE + fp - 1
            for n in range(1, NODES + 1)
            for fp in range(1, FPS_PER_NODE + 1)
        }
        self.loop = asyncio.new_event_loop()
        self.sim = IfsfSimulator(
            specs, settings, heartbeat_interval_s=HEARTBEAT_INTERVAL_S, numbers=numbers
        )
        self.fps: dict[int, TimedFp] = {}
        for index, node in enumerate(self.sim.nodes):
            timed = {fp: TimedFp(self.sim, index, fp) for fp in node.model.fps}
            for fp, probe in timed.items():
                self.fps[numbers[(node.lna, fp)]] = probe
            node._on_request = _timed(node._on_request, timed)  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self.loop.run_forever, name="ifsf-sim")

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(10)

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()


def _timed(answer: Callable[[Message], Any], fps: dict[int, TimedFp]) -> Callable[[Message], Any]:
    """The node's request handler, timestamping a Write with Release_FP on entry: the node
    layer calls it as soon as it has framed and decoded the message."""

    async def on_request(request: Message) -> Any:
        arrived = time.perf_counter()
        body, address = request.body, request.database
        if (
            isinstance(body, Write)
            and isinstance(address, db.FuellingPoint)
            and any(item.data_id == RELEASE_FP for item in body.items)
        ):
            probe = fps.get(address.fp)
            if probe is not None and probe.on_authorized is not None:
                probe.on_authorized(arrived)
        return await answer(request)

    return on_request


# ======================================================================================
# Measuring
# ======================================================================================
@dataclass
class LatencyResult:
    orders_each: int
    warmup_orders: int
    dart_pumps: int
    ifsf_fps: int
    dart_failures: dict[str, int]
    ifsf_failures: dict[str, int]
    dart: Spread | None
    ifsf: Spread | None
    dart_result: Spread | None
    ifsf_result: Spread | None
    ratio_p50: float | None
    ratio_p99: float | None
    usage: Usage | None
    daemon_log_events: dict[str, int]


async def measure(
    port: int,
    key: Ed25519PrivateKey,
    bench_parts: tuple[list[Any], ThreadedDispensers],
    daemon: Child,
    broker: Child,
    *,
    orders: int,
    warmup: int,
    pause_s: float,
    seed: int,
) -> tuple[dict[str, list[OrderTimes]], dict[str, dict[str, int]], Usage]:
    lines, dispensers = bench_parts
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        async with Cloud(port, key) as cloud:
            bench = Bench(cloud, lines, daemon, broker, random.Random(seed))
            dart_pumps = sorted(bench.pumps)
            bench.pumps.update(dispensers.fps)  # type: ignore[arg-type]
            ifsf_pumps = sorted(dispensers.fps)
            await bench.wait_ready()
            times: dict[str, list[OrderTimes]] = {"dart": [], "ifsf": []}
            failures: dict[str, dict[str, int]] = {"dart": {}, "ifsf": {}}
            usage = UsageMeter(daemon, broker)
            for i in range(2 * (warmup + orders)):
                if i == 2 * warmup:
                    usage = UsageMeter(daemon, broker)
                kind, numbers = ("dart", dart_pumps) if i % 2 == 0 else ("ifsf", ifsf_pumps)
                outcome = await bench.order(i, numbers[(i // 2) % len(numbers)])
                if i >= 2 * warmup:
                    if isinstance(outcome, str):
                        failures[kind][outcome] = failures[kind].get(outcome, 0) + 1
                    else:
                        times[kind].append(outcome)
                await bench.pause(pause_s)
            return times, failures, usage.done()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def run(
    *, orders: int, warmup: int, pause_s: float, seed: int, keep_logs: Path | None
) -> LatencyResult:
    with tempfile.TemporaryDirectory(prefix="edgectl-bench-") as tmp:
        workdir = Path(tmp)
        key = Ed25519PrivateKey.generate()
        config = workdir / "station.toml"
        links = [PtyLink(workdir / f"line{n}") for n in range(LINES)]
        node_ports = [free_port() for _ in range(NODES)]
        cd_tcp, cd_hb, sim_hb = free_port(), free_port(), free_port()
        lines: list[Any] = []
        dispensers: ThreadedDispensers | None = None
        children: list[Child] = []
        daemon: Child | None = None
        try:
            for link in links:
                link.open()
            broker, port = start_broker(workdir)
            children.append(broker)
            public_key = encode_public_key(key.public_key())
            text = station_toml(workdir, port, public_key, 200)
            text += ifsf_forecourt_toml(
                first_pump=FIRST_IFSF_PUMP,
                nodes=NODES,
                fps=FPS_PER_NODE,
                tcp_port=cd_tcp,
                heartbeat_port=cd_hb,
                heartbeat_to=f"127.255.255.255:{sim_hb}",
                line_keys=f"heartbeat_interval_s = {HEARTBEAT_INTERVAL_S}\n",
            )
            config.write_text(text)
            daemon = Child(
                "daemon",
                [sys.executable, "-m", "edgectl", "run", "--config", str(config)],
                workdir / "daemon.log",
            )
            children.append(daemon)
            # Threads only from here on: both children were forked from a single thread.
            lines = build_lines(False)
            for line, link in zip(lines, links, strict=True):
                line.serve_fd(link.master_fd)
            dispensers = ThreadedDispensers(node_ports, sim_hb, cd_hb)
            dispensers.start()
            try:
                times, failures, usage = asyncio.run(
                    measure(
                        port,
                        key,
                        (lines, dispensers),
                        daemon,
                        broker,
                        orders=orders,
                        warmup=warmup,
                        pause_s=pause_s,
                        seed=seed,
                    )
                )
            except asyncio.CancelledError:
                raise KeyboardInterrupt from None
        finally:
            for child in reversed(children):
                child.stop(STOP_GRACE_S)
            for line in lines:
                line.stop()
            if dispensers is not None:
                dispensers.stop()
            for link in links:
                link.close()
            if keep_logs is not None:
                keep_logs.mkdir(parents=True, exist_ok=True)
                for path in (config, *(c.log for c in children)):
                    with contextlib.suppress(OSError):
                        shutil.copy(path, keep_logs / path.name)
        assert daemon is not None
        log_events = read_log_events(daemon.log)
    dart = spread([t.authorize_s for t in times["dart"]])
    ifsf = spread([t.authorize_s for t in times["ifsf"]])
    return LatencyResult(
        orders_each=orders,
        warmup_orders=warmup,
        dart_pumps=PUMPS,
        ifsf_fps=IFSF_PUMPS,
        dart_failures=failures["dart"],
        ifsf_failures=failures["ifsf"],
        dart=dart,
        ifsf=ifsf,
        dart_result=spread([t.result_s for t in times["dart"]]),
        ifsf_result=spread([t.result_s for t in times["ifsf"]]),
        ratio_p50=ifsf.p50_s / dart.p50_s if dart and ifsf else None,
        ratio_p99=ifsf.p99_s / dart.p99_s if dart and ifsf else None,
        usage=usage,
        daemon_log_events=log_events,
    )


# ======================================================================================
# Reporting
# ======================================================================================
def table(r: LatencyResult) -> Iterator[str]:
    yield (
        f"edgectl order latency, IFSF against DART in one run: {r.dart_pumps} DART pumps "
        f"(2 lines x 8, ptys, no line timing) and {r.ifsf_fps} IFSF FPs "
        f"({NODES} nodes x {FPS_PER_NODE}, loopback TCP)"
    )
    failed = sum(r.dart_failures.values()) + sum(r.ifsf_failures.values())
    yield (
        f"  orders                  {r.orders_each:9d} of each, alternating; "
        f"{r.warmup_orders} of each not counted; {failed} failed"
    )
    for kind, reasons in (("DART", r.dart_failures), ("IFSF", r.ifsf_failures)):
        for reason, count in sorted(reasons.items()):
            yield f"    {count:5d}  {kind} {reason}"
    yield f"  {'':<24}" + "".join(f"{h:>9}" for h in ("p50", "p95", "p99", "max", "mean"))
    yield _row("publish -> AUTHORIZE", r.dart, "DART: the data frame decoded at the pump")
    yield _row("publish -> Release_FP", r.ifsf, "IFSF: the Write decoded at the node")
    yield _row("DART publish -> result", r.dart_result)
    yield _row("IFSF publish -> result", r.ifsf_result)
    if r.ratio_p50 is not None and r.ratio_p99 is not None:
        yield f"  IFSF / DART             p50 {r.ratio_p50:.2f} x, p99 {r.ratio_p99:.2f} x"
    yield _usage(r.usage)
    yield from log_rows(r.daemon_log_events)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Pay-at-pump order latency to 16 IFSF fuelling points against 16 DART "
        "pumps, in one run of the real daemon through a real Mosquitto.",
    )
    parser.add_argument("--orders", type=int, default=500, help="orders of each (500)")
    parser.add_argument("--warmup-orders", type=int, default=16, help="of each, not counted")
    parser.add_argument(
        "--pause-ms", type=float, default=50.0, help="random pause of 0..this between orders"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the pauses (1)")
    parser.add_argument("--logs", type=Path, metavar="DIR", help="keep the config and logs here")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.orders < 1 or args.warmup_orders < 0 or args.pause_ms < 0:
        parser.error("--orders must be positive, --warmup-orders and --pause-ms not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path("/proc/self/stat").exists():
        print("ifsf_latency: needs Linux /proc", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    configure(level="warning", fmt="console")
    try:
        result = run(
            orders=args.orders,
            warmup=args.warmup_orders,
            pause_s=args.pause_ms / 1000,
            seed=args.seed,
            keep_logs=args.logs,
        )
    except SetupError as exc:
        print(f"ifsf_latency: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ifsf_latency: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(
            json.dumps(
                {"benchmark": "ifsf_latency", "machine": machine(), "run": asdict(result)}, indent=2
            )
        )
        return 0
    info = machine()
    print(f"machine: {info['nproc']} x {info['cpu']}, Python {info['python']}, {info['mosquitto']}")
    print("\n".join(line for line in table(result) if line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
