"""`edgectl status`: is the daemon up, is the cloud reachable, are the lines and devices healthy."""

from __future__ import annotations

import argparse
from typing import Any

from edgectl.cli import output
from edgectl.cli.output import Subparsers
from edgectl.cli.records import sequence_table

EXAMPLE = """\
examples:
  edgectl status
  edgectl status --json | jq .cloud.outbox_depth
  edgectl status --config /etc/edgectl/station.toml

Line rates are per minute over the last minute; the lines are the pumps' and the tank
gauges'. A device is online when it answered its last polls; beside one that is not, and
beside a line that is down, the reason. Once the cloud streams have begun, each guaranteed
stream's last seq, the backend's ack and what is held unacknowledged (as `edgectl outbox`).
The first line is the health verdict of
`edgectl health`, and so is the exit status.
"""
STATUS_EXITS = (
    "exit status: 0 healthy, 1 degraded or failed (one line on stderr says why), 2 critical."
)


def register(sub: Subparsers) -> None:
    output.add_command(
        sub,
        "status",
        help="daemon, cloud link, serial lines and devices at a glance",
        description="Show the daemon's uptime, the cloud link (connected, last PUBACK, outbox "
        "depth and oldest age), each line's frames, errors and timeouts per minute (pump lines "
        "and tank gauges), and which devices (pumps, tanks) are online.",
        example=EXAMPLE,
        exits=STATUS_EXITS,
        func=run_status,
    )


def run_status(args: argparse.Namespace) -> int:
    status = output.call(args, "status")
    verdict = status.get("health") or {"code": output.EXIT_OK}
    if args.json:
        output.print_json(status)
        return int(verdict["code"])
    render(status)
    return int(verdict["code"])


def render(status: dict[str, Any]) -> None:
    out = output.console()
    verdict = status.get("health")
    if verdict is not None:
        style = ("green", "yellow", "bold red")[int(verdict["code"])]
        out.print(f"[{style}]{output.esc(verdict['line'])}[/]")
    daemon = status["daemon"]
    name = f" ({daemon['station_name']})" if daemon.get("station_name") else ""
    out.print(
        f"[bold]edgectl {output.esc(daemon['version'])}[/] station "
        f"[bold]{output.esc(daemon['station'])}[/]{output.esc(name)}: "
        f"{output.yes_no(True, 'running')} for {output.duration(daemon['uptime_s'])} "
        f"(pid {daemon['pid']}, mode {output.esc(daemon['mode'])})"
    )
    out.print(f"config {output.esc(daemon['config'])}   store {output.esc(daemon['store'])}")
    cloud = status["cloud"]
    outbox = status["outbox"]
    backlog = f"outbox {outbox['depth']} message(s)" + (
        f", oldest {output.duration(outbox['oldest_age_s'])} old" if outbox["depth"] else ""
    )
    if cloud is None:
        out.print(f"cloud: [dim]not configured[/] ({backlog})")
    else:
        state = output.yes_no(cloud["connected"], "connected", "NOT connected")
        puback = (
            f"last PUBACK {output.duration(cloud['last_puback_age_s'])} ago"
            if cloud["last_puback_age_s"] is not None
            else "no PUBACK yet"
        )
        out.print(f"cloud {output.esc(cloud['broker'])}: {state}, {puback}, {backlog}")
        if not cloud["connected"] and cloud.get("last_error"):
            out.print(f"  last error: {output.esc(cloud['last_error'])}")
    # Contract 1.1: what each guaranteed stream holds until the backend's ack, and how old.
    streams = sequence_table(outbox.get("sequences") or {})
    if streams is not None:
        out.print(streams)
    lines = []
    for line in status["lines"]:
        rate = line["per_minute"] or {}
        lines.append(
            (
                line["line"],
                line["port"],
                line["protocol"],
                line["settings"],
                f"{line['online']}/{line['pumps'] if 'pumps' in line else line['tanks']}",
                *(_rate(rate.get(key)) for key in ("frames", "errors", "timeouts")),
                _line_state(line),
            )
        )
    out.print(
        output.table(
            "serial lines (per minute)",
            (
                "line",
                "port",
                "protocol",
                "settings",
                "online",
                "frames",
                "errors",
                "timeouts",
                "state",
            ),
            lines,
            right=("frames", "errors", "timeouts"),
            optional=("settings", "protocol", "timeouts", "errors", "port"),
        )
    )
    devices: list[tuple[str, str, str, str]] = [
        (
            f"pump {p['pump']}",
            f"{p['line']}/{p['address']}" + (f" at {p['host']}" if p.get("host") else ""),
            output.yes_no(p["online"], "online", "OFFLINE"),
            p["state"] if p["online"] or not p.get("reason") else p["reason"],
        )
        for p in status["pumps"]
    ]
    for tank in status["tanks"]:
        online = tank["online"]
        devices.append(
            (
                f"tank {tank['tank']}",
                f"{tank['gauge']}/{tank['gauge_tank']}",
                output.yes_no(online, "online", "OFFLINE") if online is not None else "-",
                _tank_state(tank),
            )
        )
    out.print(output.table("devices", ("device", "where", "link", "state"), devices))


def _line_state(line: dict[str, Any]) -> str | output.Markup:
    if line.get("reason"):
        return output.Markup(f"[bold red]DOWN[/]: {output.esc(line['reason'])}")
    if line.get("up"):
        return output.yes_no(True, "up")
    return "-"


def _tank_state(tank: dict[str, Any]) -> str:
    if tank["alarms"]:
        return "alarm: " + ", ".join(tank["alarms"])
    if tank["reading_at"] is None:
        return "no reading yet"
    return f"{tank['fill_pct']} % full"


def _rate(value: float | None) -> str:
    """Per-minute rates as whole numbers; "-" until the first second of samples."""
    return "-" if value is None else f"{value:.0f}"
