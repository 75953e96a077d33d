"""Day and shift reports (issue 16.2): the pure model (records in, figures out), the records a
seeded store gives it, its CSV and HTML, and the page as headless Chromium renders it."""

from __future__ import annotations

import ast
import csv
import io
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edgectl.config import load_config
from edgectl.reports import charts, gather, html, tabular
from edgectl.reports.model import (
    AlarmRecord,
    DeliveryRecord,
    GradeInfo,
    KeptDay,
    NozzleTotals,
    Period,
    Reading,
    Records,
    Report,
    SaleRecord,
    TankInfo,
    build,
    hour_starts,
)
from edgectl.store.store import StoreReader, open_read_only
from tests import reportkit

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 11, 24)
ROOT = Path(__file__).resolve().parents[1]


def at(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=TZ).astimezone(UTC)


def day_period(day: date = DAY) -> Period:
    return gather.day_period(day, TZ)


def sale(
    n: int,
    when: datetime,
    *,
    pump: int = 1,
    nozzle: int = 1,
    grade: str = "92",
    volume: str = "10.00",
    source: str = "auto",
    before: str | None = None,
    after: str | None = None,
) -> SaleRecord:
    litres = Decimal(volume)
    amount = (litres * Decimal("7.45")).quantize(Decimal("0.01"))
    return SaleRecord(
        id=n,
        pump=pump,
        nozzle=nozzle,
        grade=grade,
        volume=litres,
        amount=amount,
        ended_at=when,
        source=source,
        total_volume_before=None if before is None else Decimal(before),
        total_volume_after=None if after is None else Decimal(after),
        total_amount_before=None if before is None else Decimal(before) * Decimal("7.45"),
        total_amount_after=None if after is None else Decimal(after) * Decimal("7.45"),
    )


def records(**kw: Any) -> Records:
    base: dict[str, Any] = {
        "station_id": "TEST-01",
        "station_name": "Test",
        "currency": "CNY",
        "period": day_period(),
        "generated_at": at(23),
        "grades": (GradeInfo("92", "Super 92"), GradeInfo("95", "Super 95")),
        "tanks": (TankInfo(1, "92 east", "92", "Super 92", Decimal(30000)),),
        "nozzles": ((1, 1, "92"), (1, 2, "95")),
    }
    return Records(**{**base, **kw})


# --------------------------------------------------------------------------- the model


def test_sales_of_the_day_by_grade_pump_and_payment_source() -> None:
    sales = [
        sale(1, at(0), volume="99.00"),  # at midnight: the day before's last fill
        sale(2, at(0, 1), source="cloud", volume="20.00"),
        sale(3, at(8, 30), pump=2, grade="95", nozzle=2, source="attendant", volume="30.50"),
        sale(4, at(23, 59), source="auto", volume="12.25"),
        sale(5, at(0, 0, DAY + timedelta(days=1)), volume="1.00"),  # midnight ends the day
        sale(6, at(0, 1, DAY + timedelta(days=1)), volume="77.00"),  # the next day
        sale(7, at(12), source="", volume="5.00"),  # no authorization record
    ]
    report = build(records(sales=sales), tz=TZ)
    assert (report.total.sales, report.total.litres) == (5, Decimal("68.75"))
    assert report.total.amount == sum(
        (s.amount for s in sales if s.id in (2, 3, 4, 5, 7)), Decimal(0)
    )
    assert [(g.key, g.name, g.sales, g.litres) for g in report.by_grade] == [
        ("92", "Super 92", 4, Decimal("38.25")),
        ("95", "Super 95", 1, Decimal("30.50")),
    ]
    assert [(p.key, p.sales) for p in report.by_pump] == [("1", 4), ("2", 1)]
    assert [(s.key, s.name, s.sales, s.litres) for s in report.by_source] == [
        ("cloud", "cloud order", 1, Decimal("20.00")),
        ("auto", "auto", 2, Decimal("13.25")),
        ("attendant", "attendant", 1, Decimal("30.50")),
        ("none", "no authorization", 1, Decimal("5.00")),
    ]
    assert report.timezone == "CST, UTC+08:00"


def test_every_source_is_listed_even_without_sales() -> None:
    report = build(records(), tz=TZ)
    assert [(s.key, s.sales, s.litres) for s in report.by_source] == [
        ("cloud", 0, Decimal("0.00")),
        ("auto", 0, Decimal("0.00")),
        ("attendant", 0, Decimal("0.00")),
    ]
    assert report.by_grade == () and report.total.sales == 0


def test_sales_per_hour_in_local_hours() -> None:
    sales = [
        sale(1, at(8, 30), volume="10.00"),
        sale(2, at(9, 0), volume="5.00"),  # an hour's stroke ends that hour's fills
        sale(3, at(9, 1), grade="95", nozzle=2, volume="7.00"),
    ]
    report = build(records(sales=sales), tz=TZ)
    assert len(report.hours) == 24
    assert [h.start.astimezone(TZ).hour for h in report.hours] == list(range(24))
    assert report.hours[8].litres == {"92": Decimal("15.00"), "95": Decimal("0.00")}
    assert report.hours[9].litres == {"92": Decimal("0.00"), "95": Decimal("7.00")}
    assert report.hours[9].total == Decimal("7.00")


def test_a_day_has_the_hours_its_clocks_show() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    spring = gather.day_period(date(2026, 3, 29), berlin)  # 02:00 does not exist that day
    autumn = gather.day_period(date(2026, 10, 25), berlin)  # 02:00 comes twice
    assert len(hour_starts(spring, berlin)) == 23
    assert len(hour_starts(autumn, berlin)) == 25
    assert len(hour_starts(day_period(), TZ)) == 24


def test_the_totals_check_of_a_day_from_its_sales_totals() -> None:
    sales = [
        sale(1, at(7), before="1000.00", after="1010.00"),
        sale(2, at(8), before="1010.00", after="1022.50", volume="12.50"),
        # Pump 1 nozzle 2: its meter moved 4.10 L more than its sales (an unrecorded fill).
        sale(3, at(9), nozzle=2, grade="95", before="500.00", after="520.00"),
        sale(4, at(10), nozzle=2, grade="95", before="524.10", after="534.10"),
        # Pump 2 reads no totals at all.
        sale(5, at(11), pump=2),
    ]
    report = build(records(sales=sales, nozzles=((1, 1, "92"), (1, 2, "95"), (1, 3, "92"))))
    checks = {(c.pump, c.nozzle): c for c in report.nozzle_checks}
    ok = checks[(1, 1)]
    assert (ok.start, ok.end, ok.delta, ok.sold, ok.difference, ok.verdict) == (
        Decimal("1000.00"),
        Decimal("1022.50"),
        Decimal("22.50"),
        Decimal("22.50"),
        Decimal("0.00"),
        "ok",
    )
    assert ok.basis == "sales' totals" and ok.sales == 2
    bad = checks[(1, 2)]
    assert (bad.delta, bad.sold, bad.difference, bad.verdict) == (
        Decimal("34.10"),
        Decimal("20.00"),
        Decimal("14.10"),
        "mismatch",
    )
    assert checks[(1, 3)].verdict == "no sales"
    assert checks[(2, 1)].verdict == "no totals" and checks[(2, 1)].sold == Decimal("10.00")
    assert report.findings[0] == (
        "pump 1 nozzle 2: totals moved 34.10 L, sales 20.00 L (difference 14.10 L)"
    )


def test_the_totals_check_of_a_shift_from_its_recorded_totals() -> None:
    period = Period("shift", at(6), at(14), "Shift report 3", shift=3, opened_by="ana")

    def t(pump: int, nozzle: int, volume: str | None, source: str) -> NozzleTotals:
        figure = None if volume is None else Decimal(volume)
        amount = None if figure is None else figure * Decimal("7.45")
        return NozzleTotals(pump, nozzle, figure, amount, source)

    start = {(1, 1): t(1, 1, "1000.00", "pump"), (1, 2): t(1, 2, "500.00", "store")}
    end = {(1, 1): t(1, 1, "1030.00", "pump"), (1, 2): t(1, 2, "502.00", "pump")}
    sales = [sale(1, at(7), volume="10.00"), sale(2, at(13), volume="20.00")]
    report = build(records(period=period, sales=sales, totals_start=start, totals_end=end), tz=TZ)
    one, two = report.nozzle_checks
    assert (one.delta, one.sold, one.verdict, one.basis) == (
        Decimal("30.00"),
        Decimal("30.00"),
        "ok",
        "shift totals (pump)",
    )
    # Totals that moved with no sale at all.
    assert (two.delta, two.sold, two.difference, two.verdict) == (
        Decimal("2.00"),
        Decimal("0.00"),
        Decimal("2.00"),
        "mismatch",
    )
    assert two.basis == "shift totals (pump, store)"
    missing = build(records(period=period, totals_start=start, totals_end={}), tz=TZ)
    assert [c.verdict for c in missing.nozzle_checks] == ["no totals", "no totals"]
    assert len(report.hours) == 8  # 06:00 to 14:00


def readings(tank: int, points: list[tuple[datetime, str]]) -> list[Reading]:
    return [
        Reading(tank, when, Decimal(net), Decimal(net) / Decimal("0.995")) for when, net in points
    ]


def test_a_day_not_kept_yet_is_reconciled_from_its_readings() -> None:
    kept = [
        KeptDay(
            1,
            date(2026, 11, d),
            Decimal(0),
            Decimal(0),
            Decimal(0),
            Decimal(0),
            Decimal(-5),
            Decimal(-5 * d),
            Decimal(1000 * d),
            False,
        )
        for d in range(1, 24)
    ]
    delivery = DeliveryRecord(
        7, 1, "gauge", at(14, 10), at(14, 50), Decimal("10050.00"), Decimal("10000.00")
    )
    report = build(
        records(
            sales=[sale(1, at(9), volume="100.50"), sale(2, at(20), volume="199.50")],
            readings=readings(
                1,
                [
                    (at(0) - timedelta(minutes=5), "9000.00"),
                    (at(10), "8900.00"),
                    (at(15), "18890.00"),
                    (at(22), "18690.00"),
                ],
            ),
            deliveries=[delivery],
            kept_days=kept,
        ),
        tz=TZ,
    )
    [book] = report.tanks
    assert book.basis == "provisional"
    assert (book.opening, book.closing, book.deliveries) == (
        Decimal("9000.00"),
        Decimal("18690.00"),
        Decimal("10000.00"),
    )
    assert book.sales == Decimal("298.50")  # 300.00 L metered, to 15 °C at 0.995
    assert book.variance == Decimal("18690.00") - (Decimal("9000.00") + 10000 - Decimal("298.50"))
    assert book.cumulative_variance == Decimal(-115) + book.variance  # the month carries on
    # 1 % of the month's throughput (23 days of 1000 L, and today's) plus the allowance.
    assert book.limit == Decimal("232.98") + Decimal("492.1")
    assert book.flagged is False
    assert report.deliveries == (delivery,)
    [levels] = report.levels
    assert levels.points[0].at == report.period.start  # the opening, at the day's start
    assert [p.net_l for p in levels.points] == [
        Decimal("9000.00"),
        Decimal("8900.00"),
        Decimal("18890.00"),
        Decimal("18690.00"),
    ]
    [mark] = levels.deliveries
    assert (mark.delivery, mark.delivered_tc, mark.level) == (
        7,
        Decimal("10000.00"),
        Decimal("18890.00"),
    )
    [variance] = report.variance
    assert variance.month == date(2026, 11, 1)
    assert len(variance.points) == 24 and variance.points[-1].kept is False
    assert variance.points[-1].cumulative_variance == book.cumulative_variance
    assert variance.points[0].limit == Decimal("10.00") + Decimal("492.1")


def test_a_kept_day_is_taken_as_the_daemon_kept_it() -> None:
    day = KeptDay(
        1,
        DAY,
        Decimal("9000"),
        Decimal(0),
        Decimal("300"),
        Decimal("8000"),
        Decimal("-700"),
        Decimal("-900"),
        Decimal("30000"),
        True,
    )
    report = build(records(kept_days=[day], readings=readings(1, [(at(1), "1.00")])), tz=TZ)
    [book] = report.tanks
    assert (book.basis, book.variance, book.cumulative_variance, book.flagged) == (
        "kept",
        Decimal("-700"),
        Decimal("-900"),
        True,
    )
    assert book.limit == Decimal("300.00") + Decimal("492.1")
    assert report.findings == (
        "tank 1: cumulative variance -900 L is beyond its limit of 792.10 L",
    )
    assert [p.kept for p in report.variance[0].points] == [True]


def test_a_grade_in_two_tanks_shares_its_sales_by_their_stock() -> None:
    tanks = (
        TankInfo(1, "92 a", "92", "92", Decimal(30000)),
        TankInfo(2, "92 b", "92", "92", Decimal(10000)),
    )
    report = build(
        records(
            tanks=tanks,
            sales=[sale(1, at(9), volume="400.00")],
            readings=readings(1, [(at(1), "15000"), (at(20), "14700")])
            + readings(2, [(at(1), "5000"), (at(20), "4900")]),
        ),
        tz=TZ,
    )
    a, b = report.tanks
    assert a.sales + b.sales == Decimal("398.00")
    assert a.sales == Decimal("298.50") and b.sales == Decimal("99.50")


def test_a_shift_has_its_own_variance_and_a_tank_without_readings_none() -> None:
    period = Period("shift", at(6), at(14), "Shift report 1", shift=1)
    report = build(
        records(
            period=period,
            tanks=(
                TankInfo(1, "92 east", "92", "92", Decimal(30000)),
                TankInfo(2, "95", "95", "95", Decimal(20000)),
            ),
            readings=readings(1, [(at(5, 55), "9000"), (at(13, 55), "8890")]),
            sales=[sale(1, at(9), volume="100.00")],
        ),
        tz=TZ,
    )
    one, two = report.tanks
    assert one.basis == "provisional" and one.cumulative_variance is None
    assert one.variance == Decimal("8890") - (Decimal("9000") - Decimal("99.50"))
    assert one.limit == Decimal("1.00") + Decimal("492.1")
    assert two.basis == "none" and two.variance is None and two.flagged is None


def test_the_alarms_of_the_period() -> None:
    def alarm(n: int, raised: datetime, cleared: datetime | None, severity: str = "warning"):
        return AlarmRecord(n, "pump_offline", severity, f"alarm {n}", raised, cleared, pump=1)

    alarms = [
        alarm(1, at(1, 0, DAY - timedelta(days=2)), at(2, 0, DAY - timedelta(days=1))),  # before
        alarm(2, at(23, 0, DAY - timedelta(days=1)), at(1)),  # runs into the day
        alarm(3, at(9), None, "critical"),  # raised in it, still active
        alarm(4, at(1, 0, DAY + timedelta(days=1)), None),  # after it
        alarm(5, at(20, 0, DAY - timedelta(days=3)), None),  # active all along
    ]
    report = build(records(alarms=alarms), tz=TZ)
    assert [a.id for a in report.alarms] == [5, 2, 3]
    assert "1 critical alarm(s) in the period" in report.findings
    assert "2 alarm(s) still active" in report.findings


def test_the_model_is_pure() -> None:
    """No I/O in the figures or their drawing: what the reports' tests rest on."""
    io_modules = {"sqlite3", "asyncio", "socket", "subprocess", "os", "pathlib", "edgectl.store"}
    for name in ("model", "charts", "html", "tabular", "fmt"):
        tree = ast.parse((ROOT / "edgectl" / "reports" / f"{name}.py").read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {
            m for m in imported if any(m == b or m.startswith(b + ".") for b in io_modules)
        }, name


# --------------------------------------------------------------------------- from a store


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, reportkit.Seeded]]:
    """The sample station's day, seeded through the store's own API."""
    tmp = tmp_path_factory.mktemp("report")
    config = reportkit.write_config(tmp)
    seeded = reportkit.seed_day(tmp / "edgectl.db")
    yield config, seeded


def day_report(config_path: Path) -> Report:
    config = load_config(config_path)
    db = open_read_only(config.store.path)
    try:
        records = gather.day_records(
            StoreReader(db), config, reportkit.DAY, now=at(22, 5), tz=TZ, source="store"
        )
    finally:
        db.close()
    return build(records, tz=TZ)


def test_the_report_of_a_seeded_day(sample: tuple[Path, reportkit.Seeded]) -> None:
    config, seeded = sample
    report = day_report(config)
    assert report.total.sales == seeded.sales > 50
    assert report.total.amount == seeded.amount
    assert {g.key: g.litres for g in report.by_grade} == seeded.litres
    assert {int(p.key): p.litres for p in report.by_pump} == seeded.by_pump
    assert {s.key: s.sales for s in report.by_source} == {
        k: v for k, v in seeded.by_source.items() if k != "missed"
    }
    assert {h.start.astimezone(TZ).hour: h.total for h in report.hours if h.total} == (seeded.hours)
    # The one nozzle whose meter moved without a sale, and no other.
    bad = [c for c in report.nozzle_checks if c.verdict != "ok"]
    assert [(c.pump, c.nozzle, c.difference) for c in bad] == [
        (reportkit.MISSED["pump"], reportkit.MISSED["nozzle"], reportkit.MISSED["litres"])
    ]
    assert len(report.nozzle_checks) == reportkit.PUMPS * len(reportkit.NOZZLES)
    [delivery] = report.deliveries
    assert delivery.id == seeded.delivery_id and delivery.tank == reportkit.DELIVERY["tank"]
    assert [b.basis for b in report.tanks] == ["provisional"] * len(reportkit.TANKS)
    assert all(abs(b.variance or 0) < 60 for b in report.tanks)  # a small loss, probe noise
    assert [len(v.points) for v in report.variance] == [reportkit.DAY.day] * 3
    assert {a.kind for a in report.alarms} >= {"pump_offline", "tank_low_product"}


# --------------------------------------------------------------------------- CSV and HTML


def test_the_csv_has_every_section(sample: tuple[Path, reportkit.Seeded]) -> None:
    report = day_report(sample[0])
    buffer = io.StringIO()
    count = tabular.write(buffer, report, TZ)
    rows = list(csv.reader(io.StringIO(buffer.getvalue())))
    assert rows[0] == ["section", "key", "field", "value", "unit"]
    assert len(rows) == count + 1
    sections = {r[0] for r in rows[1:]}
    assert sections >= {
        "report",
        "sales",
        "sales_by_grade",
        "sales_by_pump",
        "sales_by_source",
        "sales_per_hour",
        "totals_check",
        "deliveries",
        "tanks",
        "alarms",
        "findings",
    }
    total = {(r[1], r[2]): r[3] for r in rows if r[0] == "sales"}
    assert total[("all", "litres")] == f"{report.total.litres:.2f}"
    assert total[("all", "amount")] == f"{report.total.amount:.2f}"
    assert ["report", "day", "start", "2026-11-24T00:00:00+08:00", ""] in rows
    verdicts = [r[3] for r in rows if r[0] == "totals_check" and r[2] == "verdict"]
    assert verdicts.count("mismatch") == 1


class Elements(HTMLParser):
    """Every element of a page, with its attributes, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.elements
            if t == tag and (cls is None or cls in a.get("class", "").split())
        ]


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    return parser


def assert_self_contained(page: str) -> None:
    """Nothing for a browser to fetch: no URL, script, link, import, font or image."""
    lowered = page.lower()
    for needle in (
        "http:",
        "https:",
        "//",
        "<script",
        "<link",
        "<img",
        "<iframe",
        "@import",
        "url(",
        "src=",
        "@font-face",
    ):
        assert needle not in lowered.replace("<!doctype html>", ""), needle


def check_page(page: str, report: Report) -> None:
    """What the page must show of `report`: its title and figures, and its charts' data."""
    found = parse(page)
    text = " ".join(found.text)
    assert report.period.title in text and report.station_id in text
    assert f"{report.total.litres:.2f}" in text and f"{report.total.amount:.2f}" in text
    for finding in report.findings:
        assert finding in text
    # Sales per hour: one group per hour, one bar per grade sold in it.
    hours = found.find("g", "hour")
    assert len(hours) == len(report.hours) == 24
    bars = found.find("rect", "bar")
    assert len(bars) == sum(1 for h in report.hours for v in h.litres.values() if v)
    assert sum(Decimal(b["data-litres"]) for b in bars) == report.total.litres
    # Tank levels with the deliveries marked.
    levels = found.find("polyline", "level")
    assert [int(p["data-tank"]) for p in levels] == [b.tank for b in report.tanks]
    marks = found.find("g", "delivery")
    assert [(int(m["data-delivery"]), Decimal(m["data-litres"])) for m in marks] == [
        (d.id, d.delivered_tc) for d in report.deliveries
    ]
    # The cumulative variance against its limit, both ways, per tank.
    limits = found.find("polyline", "limit")
    assert len(limits) == 2 * len(report.tanks)
    for book, pair in zip(report.tanks, zip(limits[::2], limits[1::2], strict=True), strict=True):
        assert {p["data-limit"] for p in pair} == {str(book.limit)}
    points = found.find("circle", "point")
    assert len(points) == sum(len(v.points) for v in report.variance)
    assert len(found.find("polyline", "cumulative")) == len(report.tanks)


def test_the_page_is_self_contained_and_shows_the_report(
    sample: tuple[Path, reportkit.Seeded],
) -> None:
    report = day_report(sample[0])
    page = html.page(report, TZ)
    assert page.startswith("<!DOCTYPE html>")
    assert_self_contained(page)
    assert "@media print" in page and "@page" in page and "break-inside: avoid" in page
    check_page(page, report)


def test_a_chart_without_data_says_so() -> None:
    report = build(records(), tz=TZ)
    page = html.page(report, TZ)
    assert "no sales in this period" in page and "no readings in this period" in page
    assert "no day reconciled this month yet" in page
    assert "No delivery in this period" in page and "No alarm in this period" in page
    assert "Nothing to look at" in page
    assert charts.nice_ticks(0, 30000) == [0, 10000, 20000, 30000]
    assert charts.nice_ticks(-1060, 1060, 6)[0] <= -1060


# --------------------------------------------------------------------------- in Chromium

needs_chromium = pytest.mark.skipif(
    reportkit.chromium() is None,
    reason="chromium is not installed (make system-deps installs Debian's chromium)",
)


@pytest.fixture(scope="module")
def page(
    sample: tuple[Path, reportkit.Seeded], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Report]:
    report = day_report(sample[0])
    path = tmp_path_factory.mktemp("page") / "report-day.html"
    path.write_text(html.page(report, TZ), encoding="utf-8")
    return path, report


@needs_chromium
def test_chromium_renders_the_page_with_its_charts(page: tuple[Path, Report]) -> None:
    path, report = page
    dom = reportkit.dump_dom(path)
    # What the browser built from the page, not the text we wrote.
    assert "<svg" in dom and "</html>" in dom
    check_page(dom, report)
    found = parse(dom)
    assert [a.get("data-kpi") for a in found.find("div", "kpi")] == [
        "sales",
        "litres sold",
        "amount CNY",
        "deliveries",
        "alarms",
    ]
    assert_self_contained(dom)


@needs_chromium
def test_the_screenshot_is_the_whole_page_and_not_blank(
    page: tuple[Path, Report], tmp_path: Path
) -> None:
    path, _ = page
    height = reportkit.page_height(path, 860)
    assert 2000 < height < 8000
    png = reportkit.screenshot(path, tmp_path / "shot.png", width=860, height=height)
    width, tall, colours = png_facts(png)
    assert (width, tall) == (860, height)
    assert colours > 50  # text, bars in three colours, lines: not an empty page


@needs_chromium
def test_it_prints_on_a4(page: tuple[Path, Report], tmp_path: Path) -> None:
    pdf = reportkit.print_pdf(page[0], tmp_path / "report.pdf").read_bytes()
    pages = len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))
    assert 2 <= pages <= 8
    boxes = {
        tuple(round(float(v)) for v in m.split())
        for m in re.findall(rb"/MediaBox\s*\[([^\]]*)\]", pdf)
    }
    assert boxes == {(0, 0, 595, 842)}  # A4 portrait, as the page's @page asks


def png_facts(path: Path) -> tuple[int, int, int]:
    """A PNG's width, height and (a sample of) how many distinct pixel values it has."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    chunks, offset = [], 8
    while offset < len(data):
        length = struct.unpack(">I", data[offset : offset + 4])[0]
        kind = data[offset + 4 : offset + 8]
        if kind == b"IDAT":
            chunks.append(data[offset + 8 : offset + 8 + length])
        offset += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    # Filtered rows, but a page of one colour would still give a handful of byte values.
    sample = raw[:200_000]
    values = {sample[i : i + 3] for i in range(0, len(sample) - 3, 3)}
    return width, height, len(values)


def test_the_report_figures_follow_the_records_not_the_clock() -> None:
    """The same records give the same page (a reprint matches the original)."""
    one = build(records(sales=[sale(1, at(9))]), tz=TZ)
    assert html.page(one, TZ) == html.page(replace(one), TZ)


def test_the_table_fits_an_80_column_terminal_without_wrapping(
    sample: tuple[Path, reportkit.Seeded],
) -> None:
    """Laid out for 80 columns: on an 80-column console the table is the same as on a wide
    one (nothing wrapped or cut), and no line is longer."""
    from rich.console import Console

    from edgectl.cli.report import render

    report = day_report(sample[0])
    shown = {}
    for width in (80, 200):
        out = Console(file=io.StringIO(), width=width, no_color=True, highlight=False)
        render(report, out)
        shown[width] = [line.rstrip() for line in out.file.getvalue().splitlines()]  # type: ignore[attr-defined]
    assert shown[80] == shown[200]
    assert max(len(line) for line in shown[80]) <= 80
    assert any("MISMATCH" in line for line in shown[80])
