"""`edgectl run`: the daemon in the foreground (systemd runs exactly this)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from edgectl.config import load_config, refuse_placeholders
from edgectl.errors import EdgectlError
from edgectl.logs import configure

EXAMPLE = """example:
  edgectl run --config /etc/edgectl/station.toml
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "run",
        help="run the station daemon",
        description="Run the forecourt daemon: poll every configured line, authorize pumps "
        "according to the authorization mode and record every sale durably.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", required=True, help="station TOML file")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from edgectl.daemon import Daemon

    try:
        config = load_config(args.config)
        refuse_placeholders(config)
        configure(config.logging.level, config.logging.format)
        daemon = Daemon(config)
    except EdgectlError as exc:
        print(f"edgectl: {exc}", file=sys.stderr)
        return 1
    asyncio.run(daemon.run())
    return 0
