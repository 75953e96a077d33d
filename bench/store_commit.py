"""What the store's identity costs per commit: every write transaction rewrites page 1 with the
store id (`PRAGMA application_id`, see edgectl/store/identity.py), one more page per commit in
the -wal. Commits per second and -wal bytes per commit, with that rewrite and without it, for a
commit of live pump state (the most frequent), a sale, and an empty write (the probe).

    .venv/bin/python bench/store_commit.py [--commits 2000] [--rounds 3] [--dir DIR] [--json]

The store lives in a temporary directory under --dir (default: /var/tmp, a real disk; /tmp
may be a tmpfs, where fsync costs nothing). WAL with synchronous=FULL, as the daemon runs it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from _kit import SetupError, host_busy_s, machine

from edgectl.cloud.messages import ContractMessages
from edgectl.forecourt.sale import Sale
from edgectl.store import identity
from edgectl.store.store import PRIORITY_TELEMETRY, Store


def sale(n: int) -> Sale:
    return Sale(
        pump=1 + n % 16,
        nozzle=1,
        grade="95",
        volume=Decimal("31.52"),
        amount=Decimal("249.95"),
        unit_price=Decimal("7.93"),
        currency="CNY",
        ended_at="2026-11-24T10:00:00.000Z",
        total_volume_after=Decimal(100_000 + 32 * n),
        total_amount_after=Decimal(750_000 + 250 * n),
    )


WRITES: dict[str, Callable[[Store, int], Any]] = {
    "pump state": lambda s, n: s.queue_event(
        "pump_state",
        {"pump": 1 + n % 16, "state": "fuelling", "volume": str(n)},
        priority=PRIORITY_TELEMETRY,
        key=str(1 + n % 16),
        retain=True,
    ),
    "sale": lambda s, n: s.record_sale(sale(n)),
    "probe (empty write)": lambda s, n: s.probe(),
}


def run(kind: str, touch: bool, commits: int, folder: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=folder, prefix="ec-bench-") as tmp:
        store = Store(Path(tmp) / "edgectl.db", station_id="BENCH-01", messages=ContractMessages())
        try:
            if not touch:
                # The same number of statements, but one that writes nothing.
                store._touch = "-- no page 1"
            write = WRITES[kind]
            for n in range(50):  # warm up: the tables' first pages, the statement cache
                write(store, 1_000_000 + n)
            # Let the -wal grow for the count (a checkpoint would start it over).
            store._db.execute("PRAGMA wal_autocheckpoint=0")
            store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            wal = identity.wal_file(store.path)
            started = time.perf_counter()
            for n in range(commits):
                write(store, n)
            elapsed = time.perf_counter() - started
            frames = identity.read_wal(wal).committed_frames
            page = store._db.execute("PRAGMA page_size").fetchone()[0]
        finally:
            store.close()
    return {
        "commits_per_s": commits / elapsed,
        "wal_pages_per_commit": frames / commits,
        "wal_bytes_per_commit": frames * (page + 24) / commits,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.dir.is_dir():
        raise SetupError(f"no directory {args.dir}")
    # Rounds alternate with and without, so a busier moment of the machine hits both.
    measured: dict[str, list[dict[str, float]]] = {}
    busy, wall = host_busy_s(), time.monotonic()
    for _ in range(args.rounds):
        for kind in WRITES:
            for touch in (True, False):
                key = f"{kind}, {'with' if touch else 'without'} page 1"
                measured.setdefault(key, []).append(run(kind, touch, args.commits, args.dir))
    cores_busy = (host_busy_s() - busy) / (time.monotonic() - wall)
    results: dict[str, dict[str, Any]] = {
        key: {
            "commits_per_s": statistics.median(r["commits_per_s"] for r in rounds),
            "commits_per_s_rounds": [round(r["commits_per_s"]) for r in rounds],
            "wal_pages_per_commit": statistics.median(r["wal_pages_per_commit"] for r in rounds),
            "wal_bytes_per_commit": statistics.median(r["wal_bytes_per_commit"] for r in rounds),
        }
        for key, rounds in measured.items()
    }
    if args.json:
        report = {"dir": str(args.dir), "commits": args.commits, "results": results}
        print(json.dumps({**report, "machine": machine(), "cores_busy": cores_busy}))
        return 0
    print(
        f"{args.commits} commits x {args.rounds} rounds in {args.dir} (median); the machine"
        f" was {cores_busy:.2f} cores busy meanwhile (this benchmark included)"
    )
    print(f"{'write':<36} {'commits/s':>10} {'rounds':>22} {'-wal pages':>10} {'B/commit':>9}")
    for key, r in results.items():
        spread = "/".join(str(x) for x in r["commits_per_s_rounds"])
        print(
            f"{key:<36} {r['commits_per_s']:>10.0f} {spread:>22}"
            f" {r['wal_pages_per_commit']:>10.2f} {r['wal_bytes_per_commit']:>9.0f}"
        )
    for kind in WRITES:
        with_, without = (results[f"{kind}, {w} page 1"] for w in ("with", "without"))
        change = with_["commits_per_s"] / without["commits_per_s"] - 1
        pages = with_["wal_pages_per_commit"] - without["wal_pages_per_commit"]
        print(f"  {kind}: commit rate with the rewrite {change:+.1%}, {pages:+.2f} -wal page")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SetupError as exc:
        print(f"store_commit: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
