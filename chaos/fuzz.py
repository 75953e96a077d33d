"""Bounded, seeded fuzzing of every codec and the cloud command parser (part of `make chaos`).

    python -m chaos.fuzz --cases 100000 --seed 1            # every target, 100k cases each
    python -m chaos.fuzz --cases 5000 --seed 1 --target tls.display   # one entry, or: tls

The targets are those of tests/fuzz: one per codec and one for the command parser, each a few
entries (public entry points that read one kind of input) with a check that lets through only
what the entry points are documented to do. `--cases` is per target, divided among its
entries by weight. Each entry runs in three steps:

1. the inputs that once broke it (its pinned examples);
2. Hypothesis, with the entry's structured strategy, for a tenth of its cases (at least
   200): inputs shaped like real frames and commands, shrunk to a small one on failure;
3. mutation for the rest: an input drawn in step 2, or one of the entry's valid seeds
   (golden frames, real commands), with a few of its bytes, characters, numbers, list
   items or JSON members changed (tricky digits, edge numbers, NaN, protocol bytes, cuts,
   repeats). Cheap enough for 100k cases a minute.

Everything follows from `--seed` (Hypothesis without an example database, and one
random.Random per entry), so the command line printed with a failure replays it. Exits 1 when
any entry raised an exception its entry points are not documented to raise, broke a round
trip, or took over SLOW_CASE_S on one input. `run(cases, seed)` does the same as a function,
for chaos/run.py.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
import traceback
import zlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed

from tests.fuzz import cloud, dart, ifsf, modbus, tls
from tests.fuzz.targets import EDGE_INTEGERS, TRICKY_CHARS, Entry, Target

__all__ = ["TARGETS", "main", "mutate", "report", "run", "run_entry"]

TARGETS: dict[str, Target] = {m.TARGET.name: m.TARGET for m in (dart, tls, modbus, ifsf, cloud)}

HYPOTHESIS_SHARE = 10  # one case in ten is drawn by Hypothesis, the rest are mutations
HYPOTHESIS_MIN = 200
CORPUS = 1000  # inputs kept from the Hypothesis step to mutate
MAX_BUGS = 20  # distinct failures recorded per entry; the run goes on counting
MAX_BYTES = 70_000  # a mutated bytes or str value is cut to this (64 KB inputs exist)
# A case slower than this is a failure: a parser on the daemon's event loop stalls every pump
# for as long (three quadratic or slow parsers took 3-20 s on a 64 KB reply).
SLOW_CASE_S = 2.0
_SHOWN = 1500  # characters of a failing input shown


def entry_seed(seed: int, target: str, entry: str) -> int:
    """Each entry's own seed, so one entry replays alone with the run's seed."""
    return zlib.crc32(f"{seed}:{target}.{entry}".encode())


# ---------------------------------------------------------------------------------------
# Mutation
# ---------------------------------------------------------------------------------------
# One odd character in an otherwise valid string: the edit that gets furthest into a parser.
_ODD_CHARACTERS = ["\ud800", "\udfff", "\x00", "\x7f", "³", "٣", "１", " ", "\n", "⛽", "\u2028"]
_TRICKY_STRINGS = [*TRICKY_CHARS, "NaN", "Infinity", "-0", "1e400", "9" * 40, "&&", "\r\n"]
_TRICKY_BYTES = [
    *{char.encode("utf-8", "surrogatepass") for char in TRICKY_CHARS},
    *{bytes((code,)) for code in (0x00, 0x01, 0x03, 0x10, 0x1B, 0x7F, 0x80, 0xB3, 0xFA, 0xFF)},
    b"\xc3",  # a cut UTF-8 sequence
    b"\xed\xa0\x80",  # a UTF-8-encoded surrogate
    b"&&",
    b"\\ud800",
    b"1e400",
    b"NaN",
    b"[" * 64,
    b'{"":' * 32,
]
_TRICKY_DECIMALS = [
    Decimal(text)
    for text in (
        "0",
        "-0",
        "0.0001",
        "1E+999999",
        "1E-999999",
        "NaN",
        "sNaN",
        "Infinity",
        "-Infinity",
        "9" * 40,
        "0." + "0" * 30 + "1",
        "1E+28",
        "-1",
    )
]
_TRICKY_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1e308, 5e-324, 3.4028235e38, 1e39]
_JSON_SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    10**400,
    1.5,
    math.nan,
    math.inf,
    "",
    "0",
    "1.00",
    "١٢",
    "³",
    "\ud800",
    "\x00",
    "x" * 300,
    "2026-11-24T10:20:00.000Z",
    "9999-12-31T23:59:59Z",
]


def _mutate_sequence(
    value: Any, rng: random.Random, tricky: Sequence[Any], donors: Sequence[Any]
) -> Any:
    """One edit of a str or bytes value."""
    empty = value[:0]
    at = rng.randint(0, len(value))
    op = rng.randrange(8)
    if op == 0 and value:  # replace one element
        at = min(at, len(value) - 1)
        return value[:at] + rng.choice(tricky)[:1] + value[at + 1 :]
    if op == 1:  # insert a token
        return value[:at] + rng.choice(tricky) + value[at:]
    if op == 2:  # delete a stretch
        return value[:at] + value[at + rng.randint(1, 8) :]
    if op == 3:  # repeat a stretch
        return value[:at] + value[at : at + rng.randint(1, 16)] + value[at:]
    if op == 4:  # cut off
        return value[:at]
    if op == 5 and isinstance(value, bytes) and value:  # flip a bit
        at = min(at, len(value) - 1)
        return value[:at] + bytes((value[at] ^ (1 << rng.randrange(8)),)) + value[at + 1 :]
    if op == 6 and donors:  # splice with another input of the same kind
        donor = rng.choice(donors)
        if type(donor) is type(value) and donor:
            cut = rng.randint(0, len(donor))
            return value[:at] + donor[cut:]
    if op == 7 and value:  # swap two stretches
        other = rng.randint(0, len(value))
        lo, hi = sorted((at, other))
        return value[:lo] + value[hi:] + value[lo:hi]
    return value + (rng.choice(tricky) if tricky else empty)


def _mutate_int(value: int, rng: random.Random) -> int:
    choice = rng.randrange(6)
    if choice == 0:
        return value + rng.choice((-1, 1))
    if choice == 1:
        return -value
    if choice == 2:
        return rng.choice(EDGE_INTEGERS)
    if choice == 3:
        return rng.getrandbits(rng.choice((4, 8, 16, 32, 64, 70)))
    if choice == 4:
        return value ^ (1 << rng.randrange(64))
    return 0


def _mutate_decimal(value: Decimal, rng: random.Random) -> Decimal:
    try:
        choice = rng.randrange(4)
        if choice == 0:
            return value.scaleb(rng.choice((-30, -3, -1, 1, 3, 30, 999999)))
        if choice == 1:
            return -value
        if choice == 2:
            return value + Decimal("0.001")
    except ArithmeticError:
        pass
    return rng.choice(_TRICKY_DECIMALS)


def _mutate_datetime(value: datetime, rng: random.Random) -> datetime:
    try:
        if rng.randrange(3):
            return value + timedelta(seconds=rng.choice((-1, 1)) * 10 ** rng.randrange(12))
    except OverflowError:
        pass
    edge = rng.choice((datetime.min, datetime.max))
    return edge.replace(tzinfo=value.tzinfo)


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    if depth < 2 and rng.randrange(4) == 0:
        if rng.randrange(2):
            return [_random_json(rng, depth + 1) for _ in range(rng.randrange(3))]
        return {rng.choice(_TRICKY_STRINGS): _random_json(rng, depth + 1) for _ in range(2)}
    return rng.choice(_JSON_SCALARS)


MAX_DEPTH = 24  # a member nested deeper is left as it is (inputs may nest 50000 deep)


def mutate(
    value: Any,
    rng: random.Random,
    donors: Sequence[Any] = (),
    *,
    json: bool = False,
    depth: int = 0,
) -> Any:
    """A copy of `value` with one edit somewhere inside it.

    The type of a value is kept (an int stays an int, a tuple keeps its length) except
    inside a dict, whose members are JSON as far as the entry points go: there a value may
    become any JSON value. Classes, functions and other objects are left as they are.
    """
    if depth > MAX_DEPTH:
        return value
    inner = depth + 1
    if json and rng.randrange(5) == 0:
        return _random_json(rng)
    if isinstance(value, bool):
        return not value
    if isinstance(value, Enum):
        return rng.choice(list(type(value)))
    if isinstance(value, int):
        return _mutate_int(value, rng)
    if isinstance(value, float):
        return rng.choice(_TRICKY_FLOATS) if rng.randrange(2) else -value * 1e10
    if isinstance(value, Decimal):
        return _mutate_decimal(value, rng)
    if isinstance(value, datetime):
        return _mutate_datetime(value, rng)
    if isinstance(value, bytes):
        return _mutate_sequence(value, rng, _TRICKY_BYTES, donors)[:MAX_BYTES]
    if isinstance(value, str):
        return _mutate_sequence(value, rng, _TRICKY_STRINGS, donors)[:MAX_BYTES]
    if isinstance(value, tuple) and value:
        at = rng.randrange(len(value))
        return (*value[:at], mutate(value[at], rng, json=json, depth=inner), *value[at + 1 :])
    if isinstance(value, list):
        items = list(value)
        op = rng.randrange(4) if items else 3
        at = rng.randrange(len(items)) if items else 0
        if op == 0:
            items[at] = mutate(items[at], rng, json=json, depth=inner)
        elif op == 1:
            del items[at]
        elif op == 2:
            items.insert(at, items[at])
        elif json:
            items.insert(at, _random_json(rng))
        elif items:
            items.append(mutate(items[at], rng, depth=inner))
        return items
    if isinstance(value, dict):
        return _mutate_document(value, rng)
    return value


def _members(document: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to the members of a JSON document, nested ones included (not too many)."""
    paths: list[tuple[Any, ...]] = []
    pending = [(document, path)]
    while pending and len(paths) < 256:
        node, where = pending.pop()
        if len(where) > MAX_DEPTH:
            continue
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, member in items:
            paths.append((*where, key))
            if isinstance(member, dict | list):
                pending.append((member, (*where, key)))
    return paths


def _mutate_document(document: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One edit at a member picked among all of a JSON document's members, at any depth:
    its value changed (often by one odd character in a string), the member removed, or a
    member added beside it. The containers on the way are copied, the rest is shared."""
    paths = _members(document)
    if not paths:
        return {rng.choice(_TRICKY_STRINGS): _random_json(rng)}
    *parents, key = rng.choice(paths)
    root: dict[str, Any] = dict(document)
    node: Any = root
    for step in parents:
        child = node[step]
        node[step] = dict(child) if isinstance(child, dict) else list(child)
        node = node[step]
    op = rng.randrange(6)
    member = node[key]
    if op <= 2 and isinstance(member, str) and rng.randrange(2):
        at = rng.randint(0, len(member))
        node[key] = member[:at] + rng.choice(_ODD_CHARACTERS) + member[at:]
    elif op <= 3:
        node[key] = mutate(member, rng, json=True, depth=MAX_DEPTH - 2)
    elif op == 4:
        del node[key]
    elif isinstance(node, dict):
        node[rng.choice(_TRICKY_STRINGS)] = _random_json(rng)
    else:
        node.insert(key, _random_json(rng))
    return root


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------
class SlowCase(Exception):
    """One input an entry point took more than SLOW_CASE_S over."""


class _Bugs:
    """Distinct failures of one entry (by exception type and where it was raised)."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.found: dict[tuple[str, str], dict[str, Any]] = {}
        self.cases = 0

    def add(self, value: Any, error: BaseException, step: str) -> None:
        self.cases += 1
        where = _where(error)
        key = (type(error).__name__, where)
        shown = show(value)
        known = self.found.get(key)
        if known is not None:
            known["cases"] += 1
            if len(shown) < len(known["input"]):
                known.update(input=_cut(shown), step=step)
            return
        if len(self.found) < MAX_BUGS:
            self.found[key] = {
                "entry": self.entry.name,
                "step": step,
                "error": _cut(show(error)),
                "where": where,
                "input": _cut(shown),
                "cases": 1,
            }


def show(value: Any) -> str:
    """repr of an input, which may hold an int too long for str() (10**4300)."""
    try:
        return repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deep to show>"
    except ValueError:
        pass
    if isinstance(value, int):
        return f"<int of {value.bit_length()} bits>"
    if isinstance(value, tuple | list):
        inner = ", ".join(map(show, value))
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{show(k)}: {show(v)}" for k, v in value.items()) + "}"
    return f"<{type(value).__name__}>"


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        if "/hypothesis/" not in frame.filename:
            return f"{os.path.relpath(frame.filename)}:{frame.lineno} in {frame.name}"
    return "?"


def run_entry(target: Target, entry: Entry, cases: int, seed: int) -> dict[str, Any]:
    """Fuzz one entry with `cases` inputs, after its pinned examples."""
    own_seed = entry_seed(seed, target.name, entry.name)
    rng = random.Random(own_seed)
    bugs = _Bugs(entry)
    corpus: list[Any] = []
    drawn = 0
    started = time.perf_counter()

    slowest: list[Any] = [0.0, None]

    def timed(value: Any, step: str) -> None:
        """entry.check(value), keeping the slowest case; raises what the check raises."""
        begun = time.perf_counter()
        try:
            entry.check(value)
        finally:
            took = time.perf_counter() - begun
            if took > slowest[0]:
                slowest[:] = [took, value]
            if took > SLOW_CASE_S:
                bugs.add(value, SlowCase(f"one case took {took:.1f} s"), step)

    for example in entry.examples:
        try:
            timed(example, "pinned")
        except Exception as error:
            bugs.add(example, error, "pinned")
        corpus.append(example)
    for valid in entry.seeds:
        try:
            timed(valid, "seed")
        except Exception as error:
            bugs.add(valid, error, "seed")

    # Large inputs: few cases, all from Hypothesis; the rest: a tenth, then mutation.
    share = cases if entry.big else max(HYPOTHESIS_MIN, cases // HYPOTHESIS_SHARE)
    drawn_cases = min(cases, share)
    last: list[Any] = [None]

    @hypothesis_seed(own_seed)
    @settings(
        max_examples=drawn_cases,
        database=None,
        deadline=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
        verbosity=Verbosity.quiet,  # the report below shows the input, safely
    )
    @given(entry.strategy)
    def hypothesis_step(value: Any) -> None:
        nonlocal drawn
        drawn += 1
        last[0] = value
        if len(corpus) < CORPUS:
            corpus.append(value)
        else:
            corpus[rng.randrange(CORPUS)] = value
        timed(value, "hypothesis")

    try:
        hypothesis_step()
    except Exception as error:  # after shrinking, the last input run is the small one
        bugs.add(last[0], error, "hypothesis")
    drawn = min(drawn, drawn_cases)  # shrinking runs inputs again; count what was asked

    mutated = 0
    seeds = list(entry.seeds)
    if corpus or seeds:
        for _ in range(cases - drawn):
            # A third of the mutations start from a valid input, the rest from drawn ones.
            from_seed = seeds and (not corpus or rng.randrange(3) == 0)
            value = rng.choice(seeds) if from_seed else rng.choice(corpus)
            for _ in range(rng.choice((1, 1, 2, 3))):
                value = mutate(value, rng, corpus)
            mutated += 1
            try:
                timed(value, "mutation")
            except Exception as error:
                bugs.add(value, error, "mutation")
    elapsed = time.perf_counter() - started
    total = len(entry.examples) + len(entry.seeds) + drawn + mutated
    return {
        "target": target.name,
        "entry": entry.name,
        "seed": own_seed,
        "cases": total,
        "pinned": len(entry.examples),
        "hypothesis": drawn,
        "mutated": mutated,
        "seconds": round(elapsed, 3),
        "cases_per_s": round(total / elapsed) if elapsed else None,
        "failing_cases": bugs.cases,
        "failures": list(bugs.found.values()),
        # A case far slower than the rest is how a quadratic parser shows itself.
        "slowest_ms": round(slowest[0] * 1000, 1),
        "slowest_input": None if slowest[1] is None else _cut(show(slowest[1]))[:200],
    }


def _select(only: Sequence[str]) -> list[tuple[Target, list[Entry]]]:
    known = set(TARGETS) | {f"{t.name}.{e.name}" for t in TARGETS.values() for e in t.entries}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ValueError(f"no fuzz target {unknown[0]!r} (known: {', '.join(sorted(known))})")
    chosen: list[tuple[Target, list[Entry]]] = []
    for target in TARGETS.values():
        entries = [
            entry
            for entry in target.entries
            if not only or target.name in only or f"{target.name}.{entry.name}" in only
        ]
        if entries:
            chosen.append((target, entries))
    return chosen


def run(cases: int, seed: int, targets: Sequence[str] = ()) -> dict[str, Any]:
    """Fuzz every target (or those named: "tls", "tls.display") with `cases` cases each.

    Returns {"seed", "cases", "ok", "targets": {name: {"cases", "seconds", "cases_per_s",
    "failures", "entries": [...]}}}, where each entry lists its distinct failures with the
    input that raised; `ok` is False when any entry failed.
    """
    if cases < 1:
        raise ValueError("cases must be at least 1")
    summary: dict[str, Any] = {"seed": seed, "cases": cases, "targets": {}}
    for target, entries in _select(targets):
        shares = target.shares(cases)
        results = [run_entry(target, entry, shares[entry.name], seed) for entry in entries]
        seconds = sum(result["seconds"] for result in results)
        total = sum(result["cases"] for result in results)
        summary["targets"][target.name] = {
            "cases": total,
            "seconds": round(seconds, 3),
            "cases_per_s": round(total / seconds) if seconds else None,
            "failures": sum(len(result["failures"]) for result in results),
            "entries": results,
        }
    summary["ok"] = not any(t["failures"] for t in summary["targets"].values())
    return summary


def report(summary: dict[str, Any]) -> str:
    """The figures of a run as text: one line per entry and per target, then each failure."""
    lines = [f"fuzz: seed {summary['seed']}, {summary['cases']} cases per target"]
    for name, target in summary["targets"].items():
        for entry in target["entries"]:
            label = f"{name}.{entry['entry']}"
            lines.append(
                f"  {label:<22} {entry['cases']:>8} cases {entry['seconds']:>7.1f} s "
                f"{entry['cases_per_s'] or 0:>7}/s  failures {len(entry['failures'])}"
                f"  ({entry['pinned']} pinned, {entry['hypothesis']} hypothesis, "
                f"{entry['mutated']} mutated; slowest {entry['slowest_ms']} ms)"
            )
        lines.append(
            f"{name:<24} {target['cases']:>8} cases {target['seconds']:>7.1f} s "
            f"{target['cases_per_s'] or 0:>7}/s  failures {target['failures']}"
        )
    for name, target in summary["targets"].items():
        for entry in target["entries"]:
            for failure in entry["failures"]:
                lines += [
                    f"FAILED {name}.{failure['entry']} ({failure['step']}, "
                    f"{failure['cases']} case(s)): {failure['error']}",
                    f"  at {failure['where']}",
                    f"  input {failure['input']}",
                    f"  replay: python -m chaos.fuzz --seed {summary['seed']} "
                    f"--cases {summary['cases']} --target {name}.{failure['entry']}",
                ]
    lines.append("fuzz: ok" if summary["ok"] else "fuzz: FAILED")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaos.fuzz", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--cases", type=int, default=100_000, help="cases per target")
    parser.add_argument("--seed", type=int, default=None, help="default: a new one, printed")
    parser.add_argument(
        "--target", action="append", default=[], help="a target (tls) or an entry (tls.display)"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    if args.cases < 1:
        parser.error("--cases must be at least 1")
    try:
        _select(args.target)
    except ValueError as error:
        parser.error(str(error))
    print(f"fuzz: seed {seed}", flush=True)
    summary = run(args.cases, seed, args.target)
    print(report(summary), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
