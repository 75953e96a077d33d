"""`make chaos`: SIGKILL rounds, line noise, store faults and codec fuzzing against the real
daemon, one summary of figures, exit status 1 on any loss, duplicate, double actuation or crash.

    .venv/bin/python -m chaos.run [--rounds N] [--seed S] [--only kill|noise|store|fuzz]

Every random choice comes from `--seed` (printed at the start): the same seed replays the same
customers, kill triggers and faults. Timing is real, so a replay meets the same choices at
nearly, not exactly, the same moments.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from chaos import storefaults
from chaos.campaign import Campaign, Mode, progress
from chaos.ledger import Figures

PARTS = ("kill", "noise", "store", "fuzz")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=200, help="SIGKILL rounds, half in auto, half in cloud mode"
    )
    parser.add_argument("--seed", type=int, help="replay the choices of an earlier run")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only this part")
    parser.add_argument(
        "--noise-s", type=float, default=20.0, help="seconds of line noise in each mode"
    )
    parser.add_argument(
        "--fuzz-cases", type=int, default=100_000, help="fuzzed inputs per codec and parser"
    )
    parser.add_argument("--work", type=Path, help="keep station directories here (default: temp)")
    return parser.parse_args(argv)


async def kills(work: Path, rounds: int, seed: int) -> Figures:
    figures = Figures()
    auto = rounds - rounds // 2
    plan: tuple[tuple[Mode, int], ...] = (("auto", auto), ("cloud", rounds // 2))
    for mode, count in plan:
        if count:
            name = f"kill-{mode}"
            progress(f"{name}: {count} SIGKILL rounds, seed {seed}")
            campaign = Campaign(name, mode, work / name, seed)
            figures.add(await campaign.run(rounds=count))
    return figures


async def noise(work: Path, seconds: float, seed: int) -> Figures:
    figures = Figures()
    modes: tuple[Mode, ...] = ("auto", "cloud")
    for mode in modes:
        name = f"noise-{mode}"
        progress(f"{name}: {seconds:.0f} s of line noise while selling, seed {seed}")
        campaign = Campaign(name, mode, work / name, seed)
        figures.add(await campaign.run(noise_s=seconds))
    return figures


async def store(work: Path, seed: int) -> Figures:
    progress(f"store: faults at start and while selling, seed {seed}")
    return await storefaults.run(work / "store", seed)


def fuzz(cases: int, seed: int) -> tuple[Figures, str | None]:
    """chaos/fuzz.py's run, when it is there: its failures count, its report is printed."""
    figures = Figures()
    try:
        module = importlib.import_module("chaos.fuzz")
    except ModuleNotFoundError as exc:
        if exc.name != "chaos.fuzz":
            raise
        progress("fuzz: chaos/fuzz.py is not there yet, skipped")
        figures.notes.append("fuzz: not run (no chaos/fuzz.py)")
        return figures, None
    progress(f"fuzz: {cases} cases per codec and parser, seed {seed}")
    started = time.monotonic()
    result: dict[str, Any] = module.run(cases=cases, seed=seed)
    figures.seconds = time.monotonic() - started
    targets = result.get("targets", {})
    figures.fuzz_cases = sum(int(t.get("cases", 0)) for t in targets.values())
    figures.fuzz_failures = sum(failures(t.get("failures", 0)) for t in targets.values())
    if not result.get("ok", True) and not figures.fuzz_failures:
        figures.fuzz_failures = 1
    text = module.report(result) if hasattr(module, "report") else str(result)
    return figures, text


def failures(value: object) -> int:
    return value if isinstance(value, int) else len(value) if isinstance(value, list) else 0


def commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{'+dirty' if dirty else ''}"


def replay_args(seed: int) -> list[str]:
    """This run's arguments with its seed in place of any given one."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg.startswith("--seed"):
            skip = arg == "--seed"
            continue
        args.append(arg)
    return [*args, "--seed", str(seed)]


def summary(parts: dict[str, Figures], fuzzed: str | None, seed: int, seconds: float) -> Figures:
    total = Figures()
    for figures in parts.values():
        total.add(figures)
    print("\n== chaos summary ==")
    print(f"commit {commit()}  seed {seed}  time {seconds:.0f} s")
    print(f"replay: .venv/bin/python -m chaos.run {' '.join(replay_args(seed))}")
    header = (
        "part",
        "rounds",
        "kills",
        "customers",
        "sales",
        "litres",
        "orders",
        "faults",
        "time",
    )
    print("  ".join(f"{h:>9}" for h in header))
    for name, f in parts.items():
        values = (
            name,
            f.rounds,
            f.kills,
            f.customers,
            f.sales,
            f.litres,
            f"{f.orders_accepted}/{f.orders}",
            f.faults,
            f"{f.seconds:.0f} s",
        )
        print("  ".join(f"{v!s:>9}" for v in values))
    print(
        f"lost {total.lost} ({total.lost_litres} L)  duplicates {total.duplicates}"
        f"  wrong nozzle {total.wrong_nozzle}  meter mismatches {total.meter_mismatches}"
        f"  double releases {total.double_releases}  stray releases {total.stray_releases}"
        f"  uncleared {total.uncleared}"
    )
    print(
        f"orders not ended {total.orders_not_ended}  unpublished {total.unpublished}"
        f"  stranded pumps {total.stranded_pumps}  crashes {total.crashes}"
        f"  store faults mishandled {total.store_mishandled}/{total.store_cases}"
        f"  fuzz failures {total.fuzz_failures} in {total.fuzz_cases} cases"
        f"  harness errors {total.harness_errors}"
        f"  (customers not served: {total.unserved})"
    )
    if fuzzed is not None:
        print(fuzzed)
    for note in total.notes[:60]:
        print(f"  - {note}")
    if len(total.notes) > 60:
        print(f"  … {len(total.notes) - 60} more")
    failed = total.failed
    print(f"verdict: {'FAILED: ' + ', '.join(failed) if failed else 'ok'}")
    return total


async def main_async(args: argparse.Namespace, seed: int, work: Path) -> int:
    only = set(args.only or PARTS)
    started = time.monotonic()
    parts: dict[str, Figures] = {}
    fuzzed = None
    rng = random.Random(seed)
    seeds = {part: rng.randrange(1, 2**31) for part in PARTS}
    if "kill" in only and args.rounds:
        parts["kill"] = await kills(work, args.rounds, seeds["kill"])
    if "noise" in only and args.noise_s:
        parts["noise"] = await noise(work, args.noise_s, seeds["noise"])
    if "store" in only:
        parts["store"] = await store(work, seeds["store"])
    if "fuzz" in only and args.fuzz_cases:
        parts["fuzz"], fuzzed = await asyncio.to_thread(fuzz, args.fuzz_cases, seeds["fuzz"])
    total = summary(parts, fuzzed, seed, time.monotonic() - started)
    return 1 if total.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    # The simulators log through structlog too: only their warnings belong on the console.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    work = args.work or Path(tempfile.mkdtemp(prefix="edgectl-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    progress(f"seed {seed} (--seed {seed} replays its choices); station directories in {work}")
    code = asyncio.run(main_async(args, seed, work))
    if code == 0 and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    elif code:
        progress(f"daemon logs and stores kept in {work}")
    return code


if __name__ == "__main__":
    sys.exit(main())
