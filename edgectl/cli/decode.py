"""`edgectl decode PROTOCOL`: turn bytes captured on a forecourt bus into readable frames.

Each protocol's decoder lives in its folder (`drivers/<protocol>/decode.py`) and is found
through the registry; this command reads the input, prints what the decoder made of it, and
says by its exit status whether every item was valid.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO, TypeAlias

from drivers import registry

if TYPE_CHECKING:
    from drivers.registry import Decoder

EXIT_OK = 0
EXIT_BAD_INPUT = 1  # bad CRC, malformed, garbage, truncated or non-hex input

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(subparsers: Subparsers) -> None:
    """Add `decode` and a subcommand per protocol that has a decoder."""
    parser = subparsers.add_parser(
        "decode",
        help="decode bytes captured on a device bus",
        description="Decode bytes captured on a device bus into readable frames.",
    )
    protocols = parser.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    for decoder in registry.decoders():
        sub = protocols.add_parser(
            decoder.name,
            help=decoder.help,
            description=decoder.description,
            epilog=decoder.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        name = decoder.metavar.lower()
        sub.add_argument(
            name, nargs="*", metavar=decoder.metavar, help=f"the captured {name} (or - for stdin)"
        )
        sub.add_argument("--json", action="store_true", help="print JSON")
        decoder.add_arguments(sub)
        sub.set_defaults(func=_runner(decoder))


def _runner(decoder: Decoder) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return run_decoder(decoder, args)

    return run


def run_decoder(decoder: Decoder, args: argparse.Namespace) -> int:
    """Read the input, decode it, print it; 1 if any item is not valid."""
    name = f"edgectl decode {decoder.name}"
    try:
        text = _read_text(getattr(args, decoder.metavar.lower()), sys.stdin, decoder.metavar)
    except (UnicodeDecodeError, OSError) as exc:
        print(f"{name}: cannot read the input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        decoded = decoder.decode(text, args)
    except ValueError as exc:  # the decoder's Unreadable: not hex, nothing there
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(decoded.json, indent=2))
    else:
        print("\n".join(decoded.lines))
    return EXIT_OK if decoded.valid else EXIT_BAD_INPUT


def _read_text(words: Sequence[str], stdin: TextIO, what: str) -> str:
    if words and list(words) != ["-"]:
        return " ".join(words)
    if stdin.isatty():
        print(f"reading {what.lower()} from stdin; end with Ctrl-D", file=sys.stderr)
    return stdin.read()
