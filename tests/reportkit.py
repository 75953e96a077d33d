"""Test kit for the reports: a station config with tanks, a store seeded through the store's own
API with a simulated day (sales from every payment source, tank readings that follow them, a
delivery, the month's reconciliations, alarms, one nozzle whose meter moved without a sale),
and headless Chromium to render the HTML page.

`python -m tests.reportkit docs/report-day.png` makes the screenshot the docs show
(`make report-screenshot`).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from edgectl.cloud.messages import ContractMessages
from edgectl.forecourt.sale import AuthorizationSource, Sale
from edgectl.forecourt.tanks import litres
from edgectl.store.store import Store

# The sample station's zone: its reports are made in local time, and so are the tests'.
ZONE = "Asia/Shanghai"
DAY = date(2026, 11, 24)
PRICES = {"92": Decimal("7.45"), "95": Decimal("7.93"), "diesel": Decimal("7.10")}
NOZZLES = {1: "92", 2: "95", 3: "diesel"}
PUMPS = 4
# Tank number -> (name, grade, capacity, net litres at the day's start).
TANKS = {
    1: ("92 east", "92", Decimal(30000), Decimal(9800)),
    2: ("95 west", "95", Decimal(20000), Decimal(12600)),
    3: ("diesel", "diesel", Decimal(25000), Decimal(17400)),
}
VCF = Decimal("0.9950")  # product at about 18 °C to 15 °C
LOW_L = Decimal(9200)  # tank 1's low-product alarm, raised before its delivery
DELIVERY = {"tank": 1, "start": time(14, 10), "end": time(14, 52), "litres": Decimal(14000)}
# The nozzle whose meter moves by this much more than its sales (a fill not recorded).
MISSED: dict[str, Any] = {"pump": 3, "nozzle": 2, "litres": Decimal("18.40"), "after": time(9)}


def config_toml(tmp: Path, *, extra: str = "") -> str:
    parts = [
        f"""
[station]
id = "SAMPLE-01"
name = "Riverside"
currency = "CNY"

[store]
path = "{tmp / "edgectl.db"}"

[authorization]
mode = "auto"
auto_preset_amount = "300.00"

[control]
socket = "{tmp / "control.sock"}"

[[lines]]
name = "l0"
port = "{tmp / "l0"}"
protocol = "wayne_dart"

[[gauges]]
name = "tls"
protocol = "veeder_root"
port = "{tmp / "tls"}"
{extra}
"""
    ]
    for grade, price in PRICES.items():
        parts.append(f'[[grades]]\nid = "{grade}"\nname = "{grade}"\nunit_price = "{price}"\n')
    for number in range(1, PUMPS + 1):
        nozzles = ", ".join(f'{n} = "{g}"' for n, g in NOZZLES.items())
        parts.append(
            f'[[pumps]]\nnumber = {number}\nline = "l0"\naddress = {0x50 + number - 1}\n'
            f"nozzles = {{ {nozzles} }}\n"
        )
    for number, (name, grade, capacity, _) in TANKS.items():
        parts.append(
            f'[[tanks]]\nnumber = {number}\nname = "{name}"\ngrade = "{grade}"\n'
            f'capacity_l = {capacity}\nheight_mm = 2500\ndensity_15 = "{_density(grade)}"\n'
            f'gauge = "tls"\ngauge_tank = {number}\n'
        )
    return "\n".join(parts)


def _density(grade: str) -> str:
    return "840.0" if grade == "diesel" else "737.0"


def write_config(tmp: Path, **kw: str) -> Path:
    path = tmp / "station.toml"
    path.write_text(config_toml(tmp, **kw))
    return path


def local(day: date, at: time) -> datetime:
    """A local wall-clock time of the sample's zone, as an aware UTC datetime."""
    from zoneinfo import ZoneInfo

    return datetime.combine(day, at, tzinfo=ZoneInfo(ZONE)).astimezone(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Clock:
    """The store's clock, set by hand to the moment each record is made."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> str:
        return iso(self.moment)


@dataclass
class Seeded:
    """What the seeded day holds, to check the report against."""

    day: date
    sales: int = 0
    litres: dict[str, Decimal] = field(default_factory=dict)
    amount: Decimal = Decimal(0)
    by_source: dict[str, int] = field(default_factory=dict)
    by_pump: dict[int, Decimal] = field(default_factory=dict)
    hours: dict[int, Decimal] = field(default_factory=dict)  # local hour -> litres
    delivery_id: int | None = None
    totals: dict[tuple[int, int], Decimal] = field(default_factory=dict)  # at the day's end
    kept_days: int = 0


def _hour_weight(hour: int) -> int:
    """Fills per hour: a morning and an evening peak, a quiet night."""
    return {6: 3, 7: 7, 8: 8, 9: 5, 12: 5, 13: 4, 16: 5, 17: 8, 18: 9, 19: 6}.get(
        hour, 1 if hour < 6 or hour > 21 else 3
    )


def seed_day(db: Path, day: date = DAY, *, until: time = time(22, 0), seed: int = 16) -> Seeded:
    """A store at `db` with `day` simulated from local midnight to `until`, and the days of
    the month before it reconciled (kept as the daemon keeps them)."""
    rng = random.Random(seed)
    start = local(day, time())
    clock = Clock(start)
    store = Store(db, clock=clock, station_id="SAMPLE-01", messages=ContractMessages())
    seeded = Seeded(day)
    try:
        _keep_month(store, clock, day, rng, seeded)
        meters = {
            (p, n): (Decimal(100000 + 5000 * p + 700 * n), Decimal(750000 + 40000 * p + 6000 * n))
            for p in range(1, PUMPS + 1)
            for n in NOZZLES
        }
        for (pump, nozzle), (volume, amount) in meters.items():
            clock.moment = start - timedelta(minutes=5)
            store.check_totals(pump, nozzle, volume, amount)  # the meters' base from the day before
        stock = {n: t[3] for n, t in TANKS.items()}
        sold_since: dict[int, Decimal] = dict.fromkeys(TANKS, Decimal(0))
        end = local(day, until)
        events = _fills(day, end, rng)
        moment = start
        delivery_start = local(day, DELIVERY["start"])
        delivery_end = local(day, DELIVERY["end"])
        delivered = False
        low_alarm = False
        missed = False
        order_n = 0
        while moment < end:
            moment += timedelta(minutes=1)
            clock.moment = moment
            for fill in [f for f in events if f[0] <= moment]:
                events.remove(fill)
                _, pump, nozzle, volume = fill
                grade = NOZZLES[nozzle]
                price = PRICES[grade]
                amount = (volume * price).quantize(Decimal("0.01"))
                roll = rng.random()
                if roll < 0.18:
                    order_n += 1
                    auth = store.create_order(
                        order_id=f"ord-{order_n}",
                        cmd_id=f"cmd-{order_n}",
                        pump=pump,
                        preset_type="amount",
                        preset_value=Decimal("300.00"),
                        currency="CNY",
                        nozzles=(),
                        grades=(),
                        payment_method="card",
                        expires_at=None,
                    )
                    source = "cloud"
                else:
                    source = "attendant" if roll < 0.30 else "auto"
                    auth = store.create_authorization(pump, AuthorizationSource(source))
                before = meters[(pump, nozzle)]
                after = (before[0] + volume, before[1] + amount)
                if (
                    not missed
                    and (pump, nozzle) == (MISSED["pump"], MISSED["nozzle"])
                    and moment >= local(day, MISSED["after"])
                ):
                    # The meter moved before this sale by a fill nobody recorded.
                    missed = True
                    extra = MISSED["litres"]
                    extra_amount = (extra * price).quantize(Decimal("0.01"))
                    before = (before[0] + extra, before[1] + extra_amount)
                    after = (after[0] + extra, after[1] + extra_amount)
                    for number, tank in TANKS.items():
                        if tank[1] == grade:
                            stock[number] -= extra * VCF
                store.record_sale(
                    Sale(
                        pump=pump,
                        nozzle=nozzle,
                        grade=grade,
                        volume=volume,
                        amount=amount,
                        unit_price=price,
                        currency="CNY",
                        ended_at=iso(moment),
                        total_volume_after=after[0],
                        total_amount_after=after[1],
                        authorization_id=auth.id,
                    )
                )
                meters[(pump, nozzle)] = after
                seeded.sales += 1
                seeded.litres[grade] = seeded.litres.get(grade, Decimal(0)) + volume
                seeded.amount += amount
                seeded.by_source[source] = seeded.by_source.get(source, 0) + 1
                seeded.by_pump[pump] = seeded.by_pump.get(pump, Decimal(0)) + volume
                # A fill ending at an hour's stroke ends that hour (as midnight ends a day).
                hour = (moment - timedelta(microseconds=1)).astimezone(_zone()).hour
                seeded.hours[hour] = seeded.hours.get(hour, Decimal(0)) + volume
                for number, tank in TANKS.items():
                    if tank[1] == grade:
                        stock[number] -= volume * VCF
                        sold_since[number] += volume
            if delivery_start < moment <= delivery_end:
                minutes = int((delivery_end - delivery_start).total_seconds() / 60)
                rate = DELIVERY["litres"] / minutes
                stock[DELIVERY["tank"]] += rate * VCF
            if moment >= delivery_end and not delivered:
                delivered = True
                clock.moment = moment + timedelta(minutes=8)
                seeded.delivery_id = store.record_delivery(
                    "tls",
                    {
                        "tank": DELIVERY["tank"],
                        "source": "gauge",
                        "start_at": iso(delivery_start),
                        "end_at": iso(delivery_end),
                        "start_volume": "6100.00",
                        "end_volume": "20050.00",
                        "start_volume_tc": "6069.50",
                        "end_volume_tc": "19949.75",
                        "dispensed_during": "52.40",
                        "dispensed_during_tc": "52.14",
                        "delivered": str(DELIVERY["litres"]),
                        "delivered_tc": str(litres(DELIVERY["litres"] * VCF)),
                    },
                )
                if low_alarm:
                    store.clear_tank_alarm(1, "tank_low_product")
                clock.moment = moment
            if not low_alarm and stock[1] < LOW_L and not delivered:
                low_alarm = True
                store.raise_tank_alarm(
                    1, "tank_low_product", f"tank 1 (92 east) is low: under {LOW_L} L at 15 °C"
                )
            if moment.minute % 5 == 0:  # a reading every 5 minutes, after the minute's sales
                for number, (_, _, capacity, _) in TANKS.items():
                    # The stock measured: the book, less a small loss, with probe noise.
                    lost = Decimal(rng.uniform(0.0, 0.15)).quantize(Decimal("0.01"))
                    stock[number] -= lost
                    noise = Decimal(rng.uniform(-2.5, 2.5)).quantize(Decimal("0.01"))
                    net = litres(stock[number] + noise)
                    product = litres(net / VCF)
                    store.record_tank_reading(
                        {
                            "tank": number,
                            "at": iso(moment),
                            "height_mm": str(litres(Decimal(2500) * product / capacity)),
                            "water_mm": "4.0",
                            "temperature_c": "18.0",
                            "gross_l": str(product + 12),
                            "water_l": "12.00",
                            "product_l": str(product),
                            "net_l": str(net),
                            "ullage_l": str(litres(capacity - product - 12)),
                            "fill_pct": str(
                                (100 * (product + 12) / capacity).quantize(Decimal("0.1"))
                            ),
                        },
                        history=True,
                    )
            if moment == local(day, time(11, 5)):
                store.raise_alarm("pump_offline", "pump 2 does not answer on line l0", pump=2)
            if moment == local(day, time(11, 17)):
                store.clear_alarm("pump_offline", pump=2)
        seeded.totals = {k: v[0] for k, v in meters.items()}
    finally:
        store.close()
    return seeded


def _zone():  # type: ignore[no-untyped-def]
    from zoneinfo import ZoneInfo

    return ZoneInfo(ZONE)


Fill = tuple[datetime, int, int, Decimal]


def _fills(day: date, end: datetime, rng: random.Random) -> list[Fill]:
    """Each fill of the day: when it ends, pump, nozzle, litres."""
    fills = []
    for hour in range(24):
        for _ in range(_hour_weight(hour)):
            at = local(day, time(hour, rng.randrange(60)))
            if at >= end or at == local(day, time()):
                continue
            pump = rng.randrange(1, PUMPS + 1)
            nozzle = rng.choices(list(NOZZLES), weights=(5, 3, 2))[0]
            volume = Decimal(rng.uniform(8.0, 60.0)).quantize(Decimal("0.01"))
            fills.append((at, pump, nozzle, volume))
    fills.sort()
    return fills


def _keep_month(store: Store, clock: Clock, day: date, rng: random.Random, seeded: Seeded) -> None:
    """The days of the month before `day`, reconciled as the daemon keeps them."""
    for number in TANKS:
        throughput = cumulative = Decimal(0)
        for d in range(1, day.day):
            kept = day.replace(day=d)
            clock.moment = local(kept + timedelta(days=1), time(0, 1))
            sales = Decimal(rng.uniform(900, 2600)).quantize(Decimal("0.01"))
            variance = Decimal(rng.uniform(-9.0, 4.0)).quantize(Decimal("0.01"))
            if number == 2 and d > 10:
                variance -= Decimal(45)  # tank 2 starts losing: it shows on the chart
            throughput += sales
            cumulative += variance
            opening = Decimal(15000)
            store.record_reconciliation(
                {
                    "tank": number,
                    "day": kept.isoformat(),
                    "opening": str(opening),
                    "deliveries": "0",
                    "sales": str(sales),
                    "closing": str(opening - sales + variance),
                    "variance": str(variance),
                    "cumulative_variance": str(cumulative),
                    "period_throughput": str(throughput),
                    "flagged": int(abs(cumulative) > litres(throughput / 100) + Decimal("492.1")),
                },
                {"tank": number, "day": kept.isoformat()},
            )
            seeded.kept_days += 1


# --------------------------------------------------------------------------- chromium


def chromium() -> str | None:
    """Debian's chromium (the Makefile's system-deps installs it), or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


@contextmanager
def _profile() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="edgectl-chromium-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    binary = chromium()
    assert binary is not None, "chromium is not installed"
    with _profile() as profile:
        return subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "HOME": str(profile)},
            check=False,
        )


def dump_dom(page: Path) -> str:
    """The page's DOM once Chromium has rendered it."""
    done = _run(["--dump-dom", page.resolve().as_uri()])
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(page: Path, png: Path, *, width: int = 900, height: int = 3000) -> Path:
    size = f"--window-size={width},{height}"
    done = _run([f"--screenshot={png.resolve()}", size, page.resolve().as_uri()])
    assert done.returncode == 0 and png.exists(), done.stderr[-2000:]
    return png


def print_pdf(page: Path, pdf: Path) -> Path:
    target = f"--print-to-pdf={pdf.resolve()}"
    done = _run([target, "--no-pdf-header-footer", page.resolve().as_uri()])
    assert done.returncode == 0 and pdf.exists(), done.stderr[-2000:]
    return pdf


def main(argv: list[str]) -> int:
    """Seed a sample station's day, make its report page and screenshot it to argv[0]."""
    target = Path(argv[0] if argv else "docs/report-day.png")
    if chromium() is None:
        print("chromium is not installed (make system-deps installs it)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="edgectl-report-") as tmp:
        folder = Path(tmp)
        config = write_config(folder)
        seed_day(folder / "edgectl.db")
        page = folder / "report.html"
        env = {**os.environ, "TZ": ZONE}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgectl",
                "report",
                "day",
                DAY.isoformat(),
                "--config",
                str(config),
                "--html",
                str(page),
                "--now",
                "2026-11-24T22:05:00+08:00",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        # The page names the store it was read from: a station's, not this run's temp dir.
        page.write_text(page.read_text().replace(str(folder), "/var/lib/edgectl"))
        screenshot(page, target, width=860, height=page_height(page, 860))
    print(f"wrote {target}")
    return 0


def page_height(page: Path, width: int = 860) -> int:
    """The page's height at `width` px, measured by Chromium on a copy of it with a line of
    script (the report itself has none), so that a screenshot holds the whole page."""
    probe = page.with_name(f".{page.name}.measure.html")
    script = "<script>document.title = String(document.documentElement.scrollHeight)</script>"
    probe.write_text(page.read_text().replace("</body>", f"{script}</body>"))
    try:
        done = _run([f"--window-size={width},1000", "--dump-dom", probe.resolve().as_uri()])
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r"<title>(\d+)</title>", done.stdout)
    assert found is not None, done.stderr[-2000:]
    return int(found.group(1))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
