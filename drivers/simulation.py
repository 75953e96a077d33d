"""Simulated devices for `edgectl simulate` and `edgectl demo`: what a protocol's simulator is
given (plans: plain data the CLI makes from the station's config) and what it offers, found
through the registry so that the CLI names no protocol's modules.

A dispenser protocol simulates a line of pumps on a pty (with customers, and for `simulate`
its control commands), or, for a protocol on IP (IFSF), dispenser nodes on the network; a gauge
protocol a console over simulated tanks (drivers/tank_sim.py).
Simulators never print: what they have to say goes to the `emit`/`warn` callables given.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class PumpPlan:
    """One pump to simulate: its station number and address, the unit price of each nozzle,
    its decimals, and the electronic totals (volume, amount) it carries on from."""

    number: int
    address: int
    prices: Mapping[int, Decimal]
    volume_decimals: int = 2
    amount_decimals: int = 2
    price_decimals: int = 2
    totals: Mapping[int, tuple[Decimal, Decimal]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LinePlan:
    """A line of pumps on a pty at `port`; `baud` None: no line timing."""

    name: str
    port: Path
    pumps: Sequence[PumpPlan]
    baud: int | None = None
    bytesize: int = 8
    parity: str = "odd"  # DART's own
    stopbits: int = 1
    reply_delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class NodePlan:
    """One dispenser node on the network: its node number (the LNA is subnet 1 and this),
    the TCP port its server listens on (0: any free one), and its fuelling points as pumps
    (`PumpPlan.address` is the FP, 1-4). `products` gives the product number (Prod_Nb)
    each (FP, nozzle) sells; nozzles not in it sell the product of their unit price (one
    product per price, numbered after the given ones in the order they are met)."""

    node: int
    pumps: Sequence[PumpPlan]
    tcp_port: int = 0
    products: Mapping[tuple[int, int], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NetworkPlan:
    """Dispenser nodes on IP: where they listen (`host`; UDP `heartbeat_port` for the
    controllers' heartbeats, 0: any free one) and where they send theirs, the heartbeat
    interval, and the dialect (`profile`: generic, petrochina, sinopec)."""

    name: str
    nodes: Sequence[NodePlan]
    host: str = "127.0.0.1"
    heartbeat_port: int = 0
    heartbeat_destinations: Sequence[tuple[str, int]] = ()
    heartbeat_interval_s: float = 10.0
    profile: str = "generic"


@dataclass(frozen=True, slots=True)
class TankPlan:
    """A tank a simulated console gauges: its chart, product and starting volume."""

    gauge_tank: int
    chart: Sequence[tuple[float, float]]
    product: str
    density15: float
    product_l: float


@dataclass(frozen=True, slots=True)
class GaugePlan:
    name: str
    port: Path
    tanks: Sequence[TankPlan]
    security_code: str | None = None
    terminator: bytes = b""
    etx: int = 0x03


@dataclass(frozen=True, slots=True)
class ServePlan:
    """How `edgectl simulate` runs the lines: customers, a script, a control console or
    socket. `numbers` maps (line, address) to the pump number commands use."""

    numbers: Mapping[tuple[str, int], int]
    customers: str = "none"  # "random" | "none"
    mean_interval_s: float = 20.0
    seed: int | None = None
    control_socket: Path | None = None
    script: Sequence[str] | None = None  # None with `script_from_stdin`: read stdin
    script_name: str | None = None
    script_from_stdin: bool = False
    keep_running: bool = False
    console: bool = False  # commands on stdin, replies on stdout


@dataclass(frozen=True, slots=True)
class DispenserSimulation:
    """A dispenser protocol's simulators."""

    # The line's simulator serving a pty linked at `plan.port` (the caller stops it).
    line: Callable[[LinePlan], Any]
    # Customers arriving at random at `pumps` of a line (all when None), until cancelled.
    random_customers: Callable[
        [Any, Sequence[Any] | None, float, int | None], Coroutine[Any, Any, None]
    ]
    # A customer who paid in an app: walks to the released pump and fuels to its preset.
    paying_customer: Callable[[Any, int, random.Random], Coroutine[Any, Any, None]]
    # `edgectl simulate`: run the lines until `stop` is set; the exit status.
    serve: Callable[
        [Sequence[Any], ServePlan, asyncio.Event, Callable[[str], None], Callable[[str], None]],
        Coroutine[Any, Any, int],
    ]
    # A protocol on IP: its nodes per the plan, not started yet (`serve` starts them).
    network: Callable[[NetworkPlan], Any] | None = None


@dataclass(frozen=True, slots=True)
class GaugeSimulation:
    """A gauge protocol's simulator: (the tanks' physics, the console serving its pty)."""

    console: Callable[[GaugePlan], tuple[Any, Any]]
