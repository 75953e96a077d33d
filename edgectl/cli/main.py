"""The `edgectl` command: technician entry point; each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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
    "edgectl.cli.actions",
    "edgectl.cli.watch",
    "edgectl.cli.sniff",
    "edgectl.cli.probe",
    "edgectl.cli.configcheck",
    "edgectl.cli.db",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgectl",
        description="On-site controller of a fuel station's forecourt.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
