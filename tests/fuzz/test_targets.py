"""Every codec entry point and the command parser, briefly fuzzed in the normal suite.

For each entry of tests/fuzz (what a codec's public entry points read, and what they may
answer): a few hundred Hypothesis examples, the inputs that once broke it, and its valid
seeds. `python -m chaos.fuzz` runs the same entries for 100k cases each (make chaos).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from chaos import fuzz
from tests.fuzz.targets import Entry, Target

ENTRIES = [(target, entry) for target in fuzz.TARGETS.values() for entry in target.entries]
PINNED = [
    (f"{target.name}.{entry.name}[{n}]", entry, value)
    for target, entry in ENTRIES
    for n, value in enumerate([*entry.examples, *entry.seeds])
]


def test_every_codec_and_the_command_parser_has_a_target() -> None:
    assert set(fuzz.TARGETS) == {"dart", "tls", "modbus", "ifsf", "cloud"}
    assert all(target.entries for target in fuzz.TARGETS.values())


@pytest.mark.parametrize(("name", "entry", "value"), PINNED, ids=[p[0] for p in PINNED])
def test_inputs_that_once_broke_an_entry_point_and_valid_seeds(
    name: str, entry: Entry, value: Any
) -> None:
    entry.check(value)


@pytest.mark.parametrize(
    ("target", "entry"), ENTRIES, ids=[f"{t.name}.{e.name}" for t, e in ENTRIES]
)
def test_arbitrary_input_gives_a_value_or_a_typed_error(target: Target, entry: Entry) -> None:
    # No example database: other work shares this tree, and the suite must not write into it.
    @settings(
        max_examples=5 if entry.big else 200,  # 64 KB inputs: a few in the suite
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(entry.strategy)
    def property_holds(value: Any) -> None:
        entry.check(value)

    property_holds()


def test_the_runner_counts_replays_and_fails_on_an_untyped_exception() -> None:
    def check(value: bytes) -> None:
        if b"\x03" in value:
            raise KeyError(value)

    from hypothesis import strategies as st

    broken = Target("toy", (Entry("bytes", st.binary(max_size=8), check, seeds=[b"ok"]),))
    summary = fuzz.run_entry(broken, broken.entries[0], 3000, seed=5)
    assert summary["cases"] == 3001 and summary["failures"]
    failure = summary["failures"][0]
    assert "KeyError" in failure["error"] and "\\x03" in failure["input"]
    again = fuzz.run_entry(broken, broken.entries[0], 3000, seed=5)
    assert again["failures"] == summary["failures"]  # the seed replays it


def test_run_gives_the_figures_chaos_run_reads() -> None:
    summary = fuzz.run(cases=40, seed=1, targets=["tls.fields", "cloud"])
    assert summary["ok"] is True and set(summary["targets"]) == {"tls", "cloud"}
    cloud = summary["targets"]["cloud"]
    assert cloud["cases"] >= 40 and cloud["failures"] == 0 and cloud["seconds"] >= 0
    assert [entry["entry"] for entry in cloud["entries"]] == [
        entry.name for entry in fuzz.TARGETS["cloud"].entries
    ]
    # One entry of a target gets the share it has in a whole run: a replay is the same run.
    (fields,) = summary["targets"]["tls"]["entries"]
    tls = fuzz.TARGETS["tls"]
    assert fields["hypothesis"] + fields["mutated"] == tls.shares(40)["fields"]
    assert "fuzz: ok" in fuzz.report(summary)


def test_main_exits_1_on_a_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hypothesis import strategies as st

    def check(value: int) -> None:
        raise ValueError(value)

    monkeypatch.setattr(
        fuzz, "TARGETS", {"toy": Target("toy", (Entry("ints", st.integers(), check),))}
    )
    assert fuzz.main(["--cases", "20", "--seed", "3"]) == 1
    out = capsys.readouterr().out
    assert "FAILED toy.ints" in out and "--seed 3" in out
    with pytest.raises(SystemExit):
        fuzz.main(["--target", "nothing"])
