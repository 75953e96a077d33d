"""The `edgectl` command: technician entry point; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import edgectl

# Each module exposes `register(subparsers)` which adds its subcommand(s) and sets
# `func(args) -> int` as the handler. Heavy imports (daemon, simulators) stay inside
# the handlers so that `edgectl --help` and `decode` start fast.
_COMMAND_MODULES = (
    "edgectl.cli.run",
    "edgectl.cli.decode",
    "edgectl.cli.simulate",
    "edgectl.cli.demo",
    "edgectl.cli.cloud",
    "edgectl.cli.status",
    "edgectl.cli.health",
    "edgectl.cli.metrics",
    "edgectl.cli.pumps",
    "edgectl.cli.records",
    "edgectl.cli.books",
    "edgectl.cli.report",
    "edgectl.cli.shift",
    "edgectl.cli.actions",
    "edgectl.cli.watch",
    "edgectl.cli.sniff",
    "edgectl.cli.probe",
    "edgectl.cli.configcheck",
    "edgectl.cli.db",
)


# A shell's status for a process ended by SIGPIPE (128 + 13), as `yes | head` gives.
EXIT_BROKEN_PIPE = 141


class Parser(argparse.ArgumentParser):
    """argparse, with "did you mean" for a mistyped command or choice (3.11 has none).
    Subcommand parsers are made of the same class, so `edgectl db bakup` is helped too."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        choices = action.choices
        if choices is not None and value not in choices and isinstance(value, str):
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1, cutoff=0.6)
            if close:
                raise argparse.ArgumentError(
                    action, f"invalid choice: {value!r} (did you mean {close[0]!r}?)"
                )
        super()._check_value(action, value)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="edgectl",
        description="On-site controller of a fuel station's forecourt.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgectl {edgectl.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        code: int = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at the exit
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`edgectl sales | head`): stop quietly. Python would flush
        # stdout again on exit and complain, so stdout now goes nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
