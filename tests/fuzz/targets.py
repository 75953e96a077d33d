"""What the fuzzers throw at the codecs and the cloud command parser, and what may come back.

One `Target` per codec (and one for the command parser), one `Entry` per public entry point or
group of them that reads the same kind of input. An entry's `check` feeds one input to its
entry points and lets through only what they are documented to do: return a value (a
`Malformed` item where the codec reports bad bytes as one) or raise their typed error. Any
other exception, or a broken round trip, escapes `check` and is a finding.

The normal suite runs every entry briefly (tests/fuzz/test_targets.py) and replays each
entry's `examples`, the inputs that once broke it; `chaos/fuzz.py` runs them for 100k cases.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import strategies as st

T = TypeVar("T")


class Refused:
    """What `attempt` returns when the call raised one of the errors it may raise."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Refused({self.error!r})"


def attempt(
    errors: type[BaseException] | tuple[type[BaseException], ...],
    call: Callable[..., T],
    *args: Any,
    **kwargs: Any,
) -> T | Refused:
    """`call(*args, **kwargs)`, or Refused when it raised one of `errors`; anything else
    raised goes through (the finding)."""
    try:
        return call(*args, **kwargs)
    except errors as error:
        return Refused(error)


def json_able(value: object) -> str:
    """JSON text of a description; raises if it holds anything JSON does not."""
    return json.dumps(value, allow_nan=False)


@dataclass(frozen=True)
class Entry:
    """Public entry points that read one kind of input.

    `weight` is this entry's share of its target's cases. `examples` are inputs that once
    broke an entry point; they are checked before anything is generated. `seeds` are valid
    inputs (golden frames, real commands) a mutating fuzzer starts from, besides what
    `strategy` draws: one change to a valid input reaches deeper than one to noise.

    An entry of large inputs (64 KB replies, looking for parsers slow on them) takes no
    share: `big` is how many cases it gets in a run of 100k per target, in proportion.
    """

    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]
    examples: Sequence[Any] = ()
    weight: int = 1
    seeds: Sequence[Any] = ()
    big: int = 0


@dataclass(frozen=True)
class Target:
    """A codec (or the command parser) and its entries."""

    name: str
    entries: tuple[Entry, ...] = field(default_factory=tuple)

    def entry(self, name: str) -> Entry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(f"{self.name} has no entry {name!r}")

    def shares(self, cases: int) -> dict[str, int]:
        """`cases` divided among the entries by weight (each gets at least one); an entry of
        large inputs gets its `big` per 100k."""
        total = sum(entry.weight for entry in self.entries if not entry.big)
        return {
            entry.name: max(1, -(-cases * entry.big // 100_000))
            if entry.big
            else max(1, -(-cases * entry.weight // total))
            for entry in self.entries
        }


# ---------------------------------------------------------------------------------------
# Inputs shared by every codec: the characters and numbers that have broken parsers before.
# ---------------------------------------------------------------------------------------
# Digits to str.isdigit() or str.isnumeric() that int() refuses or reads as ASCII would not
# ('³', '½', 'Ⅻ'), digits int() and Decimal() take from other scripts ('٣', '３', '𝟑'),
# separators they tolerate ('_', spaces), and control characters.
TRICKY_DIGITS = "²³¹¼½¾٠١٢٣٤٥٦٧٨٩۳߃३৩੩௩０１２３９𝟎𝟑Ⅻⅸ"
TRICKY_CHARS = (
    TRICKY_DIGITS + "\x00\x01\x03\x1b\x7f\x85\xa0\xad\u2028\u200b\ufeff\ud800\udfff"
    " \t\r\n-+.,_eExX&:;/\\\"'{}[]"
)
ASCII_DIGITS = "0123456789"
HEX_DIGITS = "0123456789ABCDEFabcdef"

tricky_char = st.sampled_from(TRICKY_CHARS)
any_char = st.one_of(tricky_char, st.characters(codec="utf-8"), st.sampled_from(ASCII_DIGITS))


def texts(
    alphabet: st.SearchStrategy[str] = any_char, max_size: int = 40
) -> st.SearchStrategy[str]:
    return st.text(alphabet, max_size=max_size)


# Integers at the edges: bytes, words, 64-bit limits, and past Python's 4300-digit limit on
# int <-> str conversion (int("1" * 5000) and str(10**5000) raise ValueError).
EDGE_INTEGERS = [-1, 0, 0xFF, 0x100, 0xFFFF, 0x10000, 2**31 - 1, 2**31, 2**32, 2**63 - 1]
EDGE_INTEGERS += [2**63, -(2**63) - 1]
# Built by .map: Hypothesis shows a strategy by repr() of what it holds, and 10**4300 has none.
huge_integers = st.sampled_from([4300, 5000]).map(lambda digits: 10**digits)
edge_integers = st.one_of(
    st.integers(-2, 0x101),
    st.integers(-(2**64), 2**64),
    st.sampled_from(EDGE_INTEGERS),
    huge_integers,
)
EDGE_INTEGERS.append(10**4300)

# JSON-ish values: what json.loads or tomllib can hand a parser, and then some.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    edge_integers,
    st.floats(),  # NaN and infinities included
    texts(),
    st.sampled_from(["", "0", "1", "-1", "1e400", "NaN", "Infinity", "١٢", "1_000", "0x10"]),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(texts(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def nested(depth: int) -> str:
    """JSON text nested `depth` deep: past the recursion limit of a recursive decoder."""
    return "[" * depth + "]" * depth


LARGE = 65_536  # a TLS reply's guard, and above the cloud's MAX_COMMAND_BYTES


def repeated(tokens: st.SearchStrategy[Any], limit: int = LARGE) -> st.SearchStrategy[Any]:
    """One short token repeated up to `limit` long: the inputs that show a parser quadratic
    in its input's length (a row of blanks, a header of many words, thousands of lines)."""
    # Hypothesis favours small numbers: ask for long ones outright most of the time.
    lengths = st.one_of(st.just(limit), st.integers(limit // 4, limit), st.integers(1, limit))
    return st.tuples(tokens, lengths).map(
        lambda pair: pair[0] * max(1, min(pair[1], limit // max(1, len(pair[0]))))
    )


@st.composite
def mutated(draw: st.DrawFn, base: bytes, noise: st.SearchStrategy[bytes]) -> bytes:
    """`base` with a few of its bytes replaced, inserted, deleted, repeated or cut off."""
    wire = bytearray(base)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(wire)))
        match draw(st.sampled_from(("replace", "insert", "delete", "repeat", "cut"))):
            case "replace" if wire:
                at = min(at, len(wire) - 1)
                wire[at : at + 1] = draw(noise)[:1] or b"\x00"
            case "insert":
                wire[at:at] = draw(noise)
            case "delete":
                del wire[at : at + draw(st.integers(1, 4))]
            case "repeat":
                wire[at:at] = wire[at : at + draw(st.integers(1, 8))]
            case "cut":
                del wire[at:]
    return bytes(wire)
