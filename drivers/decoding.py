"""Bytes captured on a bus, made readable: the shape of each protocol's decoder
(`<protocol>/decode.py`), which `edgectl decode` finds through the registry.

A decoder is pure: text in (hex, or a TLS reply as pasted), described items out, with the
lines a person reads; it never prints. The CLI reads the input, prints and sets the exit status.
"""

from __future__ import annotations

import argparse
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


class Unreadable(ValueError):
    """The input is not what this decoder reads (not hex, nothing there): one sentence."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a decoder made of its input: every item as described (each with `valid`), what
    `--json` prints, and the text a person reads."""

    items: Sequence[dict[str, Any]]
    json: Any
    lines: Sequence[str]

    @property
    def valid(self) -> bool:
        return all(item["valid"] for item in self.items)


@dataclass(frozen=True, slots=True)
class Decoder:
    """One protocol's `edgectl decode NAME` subcommand."""

    name: str
    help: str
    description: str
    epilog: str
    metavar: str  # what the words are: "HEX", "TEXT"
    add_arguments: Callable[[argparse.ArgumentParser], None]
    decode: Callable[[str, argparse.Namespace], Decoded]  # raises Unreadable


_HEX_DIGITS = frozenset(string.hexdigits)


def parse_hex(text: str) -> bytes:
    """Bytes from hex text; whitespace may fall anywhere, even inside a byte, and a word
    may carry a 0x prefix."""
    words = []
    for word in text.split():
        body = word[2:] if word[:2] in ("0x", "0X") else word
        bad = next((char for char in body if char not in _HEX_DIGITS), None)
        if bad is not None:
            raise Unreadable(f"not hex: {word!r} (bad character {bad!r})")
        words.append(body)
    digits = "".join(words)
    if len(digits) % 2:
        raise Unreadable(f"{len(digits)} hex digits: the last byte is missing a digit")
    wire = bytes.fromhex(digits)
    if not wire:
        raise Unreadable("nothing to decode")
    return wire


def summary(items: Sequence[dict[str, Any]], valid: str = "valid") -> str:
    """`3 item(s), 2 valid, 1 not valid`."""
    bad = sum(1 for item in items if not item["valid"])
    text = f"{len(items)} item(s), {len(items) - bad} {valid}"
    return text + (f", {bad} not valid" if bad else "")
