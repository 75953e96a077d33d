"""`edgectl metrics`: the daemon's Prometheus metrics, as its textfile holds them.

The daemon builds the exposition; this only prints it, so the CLI needs neither
prometheus-client nor pymodbus."""

from __future__ import annotations

import argparse
import sys

from edgectl.cli import output
from edgectl.cli.output import Subparsers

EXAMPLE = """\
examples:
  edgectl metrics                            # the Prometheus text exposition
  edgectl metrics | grep edgectl_device_online
  edgectl metrics --json | jq '.[] | select(.name == "edgectl_sales_litres")'

The same figures as the file of [metrics] textfile (node_exporter's textfile collector),
read live from the running daemon over its control socket. The metrics and their labels are
listed in docs/operations.md ("Metrics").
"""


def register(sub: Subparsers) -> None:
    output.add_command(
        sub,
        "metrics",
        help="the daemon's Prometheus metrics (text exposition, or --json)",
        description="Print the running daemon's metrics in the Prometheus text format: "
        "frames, errors and timeouts per line and device, devices online, poll periods, "
        "sales and litres per grade, authorizations by outcome, order latency, the outbox, "
        "the MQTT link, store commit times, the last backup, tanks.",
        example=EXAMPLE,
        func=run_metrics,
    )


def run_metrics(args: argparse.Namespace) -> int:
    if args.json:
        result = output.call(args, "metrics", {"json": True})
        output.print_json(result["families"])
        return output.EXIT_OK
    result = output.call(args, "metrics")
    sys.stdout.write(str(result["text"]))
    sys.stdout.flush()
    return output.EXIT_OK
