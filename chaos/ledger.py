"""What the simulated forecourt (DART pumps, IFSF fuelling points) saw happen, and the audit
of the station's books against it."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

from drivers.ifsf.dispenser import Step as IfsfStep
from drivers.wayne_dart.codec import DartStatus
from drivers.wayne_dart.sim import Customer, SimPump, Step
from tests.soakkit import FINAL, START_TOTAL, IfsfBooks

FillKey = tuple[int, int, Decimal, Decimal]  # pump, nozzle, volume, amount


@dataclass(frozen=True, slots=True)
class Fill:
    """Fuel one customer drew, as the pump's own totals metered it."""

    pump: int
    nozzle: int
    volume: Decimal
    amount: Decimal

    @property
    def key(self) -> FillKey:
        return (self.pump, self.nozzle, self.volume, self.amount)


class Ledger:
    """Fills metered at the pumps and releases counted per lift (auto mode) or per order.

    A release is a DART pump going to AUTHORIZED, or an IFSF fuelling point acting on a
    Release_FP (`watch_ifsf`). It is charged to whatever the pump is attending
    at that moment (`attending`): one lift of a nozzle in auto mode, one order in cloud mode.
    Two releases for one of them is a double actuation; one while the pump attends nobody is
    a stray release.
    """

    def __init__(self) -> None:
        self.fills: list[Fill] = []
        self.releases: Counter[str] = Counter()
        self.stray_releases: Counter[int] = Counter()  # pump -> count
        self.fill_ended_at = 0.0  # monotonic time a fill last ended at any pump
        self.released_at: dict[str, list[str]] = {}  # token -> UTC times, to find in the logs
        self._attending: dict[int, str | None] = {}

    def watch(self, number: int, pump: SimPump) -> None:
        pump.add_listener(partial(self._on_status, number))

    def watch_ifsf(self, books: IfsfBooks) -> None:
        """The IFSF fuelling points too: a release is the FP acting on a Release_FP, a fill
        ends when its sale is stored in the transaction buffer."""
        books.on_release.append(self._released)
        books.on_sale.append(lambda _number: self._fill_ended())

    def _on_status(self, number: int, status: DartStatus) -> None:
        # Runs under the pump's lock, on whatever thread changed the status: no pump calls.
        if status is DartStatus.AUTHORIZED:
            self._released(number)
        elif status in (DartStatus.FILLING_COMPLETED, DartStatus.MAX_REACHED):
            self._fill_ended()

    def _released(self, number: int) -> None:
        token = self._attending.get(number)
        if token is None:
            self.stray_releases[number] += 1
            token = f"nobody at pump {number}"
        else:
            self.releases[token] += 1
        self.released_at.setdefault(token, []).append(utc_now())

    def _fill_ended(self) -> None:
        self.fill_ended_at = time.monotonic()

    @contextlib.contextmanager
    def attending(self, number: int, token: str) -> Iterator[None]:
        self._attending[number] = token
        self.releases.setdefault(token, 0)
        try:
            yield
        finally:
            self._attending[number] = None

    async def serve(
        self, number: int, pump: SimPump, nozzle: int, steps: Sequence[Step], name: str
    ) -> Decimal:
        """Play one customer at a nozzle; returns (and records) the litres drawn."""
        before = pump.totals(nozzle)
        await Customer(pump, steps, name=name).run()
        after = pump.totals(nozzle)
        scale = Decimal(10) ** pump.volume_decimals, Decimal(10) ** pump.amount_decimals
        volume = Decimal(after[0] - before[0]) / scale[0]
        amount = Decimal(after[1] - before[1]) / scale[1]
        return self._drawn(number, nozzle, volume, amount)

    async def serve_ifsf(
        self, number: int, books: IfsfBooks, nozzle: int, steps: Sequence[IfsfStep]
    ) -> Decimal:
        """Play one customer at an IFSF fuelling point; returns (and records) the litres."""
        volume, amount = await books.serve(number, nozzle, steps)
        return self._drawn(number, nozzle, volume, amount)

    def _drawn(self, number: int, nozzle: int, volume: Decimal, amount: Decimal) -> Decimal:
        if volume:
            self.fills.append(Fill(number, nozzle, volume, amount))
        return volume


@dataclass
class Figures:
    """The counts a chaos run reports; the ones in `FAILURES` must all be zero."""

    rounds: int = 0
    kills: int = 0
    customers: int = 0
    fills: int = 0
    sales: int = 0
    litres: Decimal = Decimal(0)
    orders: int = 0
    orders_accepted: int = 0
    faults: int = 0
    lost: int = 0
    lost_litres: Decimal = Decimal(0)
    duplicates: int = 0
    wrong_nozzle: int = 0
    meter_mismatches: int = 0
    double_releases: int = 0
    stray_releases: int = 0
    uncleared: int = 0  # IFSF sales left in a dispenser's buffer at the end
    orders_not_ended: int = 0
    unpublished: int = 0
    stranded_pumps: int = 0
    unserved: int = 0
    crashes: int = 0
    store_cases: int = 0
    store_mishandled: int = 0
    fuzz_cases: int = 0
    fuzz_failures: int = 0
    harness_errors: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def add(self, other: Figures) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, mine + theirs)

    @property
    def failed(self) -> list[str]:
        return [name for name in FAILURES if getattr(self, name)]


FAILURES = (
    "lost",
    "duplicates",
    "wrong_nozzle",
    "meter_mismatches",
    "double_releases",
    "stray_releases",
    "uncleared",
    "orders_not_ended",
    "unpublished",
    "stranded_pumps",
    "crashes",
    "store_mishandled",
    "fuzz_failures",
    "harness_errors",
)


def audit(
    figures: Figures,
    ledger: Ledger,
    sales: Sequence[Mapping[str, Any]],
    meters: Mapping[tuple[int, int], Decimal],
    *,
    published: Iterable[int] | None = None,
    orders: Sequence[Mapping[str, Any]] = (),
    accepted: Iterable[str] = (),
    cloud_final: Mapping[str, str | None] | None = None,
) -> None:
    """Compare the store (`sales`, `orders`) with the pumps (`ledger`, `meters`: litres each
    nozzle metered since the start) and what the cloud received; count every discrepancy."""
    figures.fills += len(ledger.fills)
    figures.sales += len(sales)
    figures.litres += sum((Decimal(s["volume"]) for s in sales), Decimal(0))

    # Each fill recorded once, on its own nozzle: match fills and sales as multisets.
    drawn = Counter(f.key for f in ledger.fills)
    sold = Counter(
        (s["pump"], s["nozzle"], Decimal(s["volume"]), Decimal(s["amount"])) for s in sales
    )
    lost, extra = drawn - sold, sold - drawn
    for pump, nozzle, volume, amount in list(extra.elements()):
        moved = next((k for k in lost if k[0] == pump and k[2:] == (volume, amount)), None)
        if moved is not None:
            figures.wrong_nozzle += 1
            figures.notes.append(
                f"fill of {volume} L on pump {pump} nozzle {moved[1]} sold on {nozzle}"
            )
            lost[moved] -= 1
            extra[(pump, nozzle, volume, amount)] -= 1
            lost, extra = +lost, +extra
    for pump, nozzle, volume, _ in lost.elements():
        figures.notes.append(f"lost: {volume} L on pump {pump} nozzle {nozzle}")
    for pump, nozzle, volume, _ in extra.elements():
        figures.notes.append(f"sold with no such fill: {volume} L on pump {pump} nozzle {nozzle}")
    figures.lost += lost.total()
    figures.lost_litres += sum((k[2] * n for k, n in lost.items()), Decimal(0))
    figures.duplicates += extra.total()
    figures.duplicates += len(sales) - len({s["uid"] for s in sales})

    # Each nozzle's meter moved by exactly the litres sold on it.
    by_nozzle: Counter[tuple[int, int]] = Counter()
    for s in sales:
        by_nozzle[(s["pump"], s["nozzle"])] += Decimal(s["volume"])  # type: ignore[assignment]
    for where, metered in sorted(meters.items()):
        if metered != by_nozzle[where]:
            figures.meter_mismatches += 1
            figures.notes.append(
                f"pump {where[0]} nozzle {where[1]}: metered {metered} L, sold {by_nozzle[where]} L"
            )

    doubles = {token: n for token, n in ledger.releases.items() if n > 1}
    figures.double_releases += len(doubles)
    figures.notes += [
        f"released {n} times: {token} (at {', '.join(ledger.released_at.get(token, []))})"
        for token, n in sorted(doubles.items())
    ]
    figures.stray_releases += ledger.stray_releases.total()
    figures.notes += [
        f"pump {pump} released {n} times while nobody stood at it or paid for it"
        f" (at {', '.join(ledger.released_at.get(f'nobody at pump {pump}', []))})"
        for pump, n in sorted(ledger.stray_releases.items())
    ]

    if published is not None:
        missing = {s["id"] for s in sales} - set(published)
        figures.unpublished += len(missing)
        if missing:
            figures.notes.append(f"sales never received by the cloud: {sorted(missing)}")

    # Cloud mode: each order sold at most once, and every accepted order ended.
    with_order = [s["order_id"] for s in sales if s.get("order_id") is not None]
    figures.duplicates += len(with_order) - len(set(with_order))
    stored = {o["order_id"]: o["status"] for o in orders}
    figures.orders += len(stored)
    accepted = set(accepted)
    figures.orders_accepted += len(accepted)
    for order_id in sorted(accepted):
        status = stored.get(order_id)
        seen = (cloud_final or {}).get(order_id, status)
        if status not in FINAL or seen != status:
            figures.orders_not_ended += 1
            figures.notes.append(f"order {order_id}: {status} in the store, {seen} at the cloud")


def meters(pumps: Mapping[int, SimPump]) -> dict[tuple[int, int], Decimal]:
    """Litres each nozzle metered since the simulators started."""
    return {
        (number, nozzle): Decimal(pump.totals(nozzle)[0] - START_TOTAL)
        / Decimal(10) ** pump.volume_decimals
        for number, pump in pumps.items()
        for nozzle in pump.nozzles
    }


def utc_now() -> str:
    """The time as the daemon's JSON logs write it, to find a moment in them."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def crashes_in(log: str) -> list[str]:
    """Lines of a daemon's log that show a crash."""
    return [
        line.strip()[:300]
        for line in log.splitlines()
        if "pump_step_crashed" in line or line.startswith("Traceback")
    ]
