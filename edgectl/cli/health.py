"""`edgectl health` and `edgectl history`: the station's verdict for monitoring, and what each
pump, line and gauge went through. Both work with the daemon down, from the store."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from edgectl import health
from edgectl.cli import output
from edgectl.cli.output import Subparsers
from edgectl.cli.records import fetch
from edgectl.config import Config
from edgectl.control.client import DaemonNotRunning
from edgectl.errors import ConfigError
from edgectl.store.store import StoreReader, open_read_only

HEALTH_EXAMPLE = """\
examples:
  edgectl health                     # EDGECTL OK - 4/4 pumps online, ...
  edgectl health --json | jq .checks

The rules are in docs/operations.md ("Health"). With the daemon down the verdict is
CRITICAL (daemon not running) and the rest is still read from the store and the disk.
"""
HEALTH_EXITS = "exit status: 0 healthy, 1 degraded, 2 critical (the monitoring-plugin convention)."
HISTORY_EXAMPLE = """\
examples:
  edgectl history                    # every pump, line and gauge
  edgectl history pump:2             # or pump2, 2
  edgectl history l0 --last 30       # a line or a gauge by its name
  edgectl history --json

Error counts are kept per 10 minutes for 48 h; the last 200 events per device. Works
without the daemon too: the database is then read directly, read-only.
"""


def register(sub: Subparsers) -> None:
    output.add_command(
        sub,
        "health",
        help="one-line health verdict for monitoring (exit 0 ok, 1 degraded, 2 critical)",
        description="Evaluate the station's health rules: daemon up, store writable, every "
        "device online (from the alarms), cloud link, outbox age, last backup, disk, clock.",
        example=HEALTH_EXAMPLE,
        exits=HEALTH_EXITS,
        func=run_health,
    )
    history = output.add_command(
        sub,
        "history",
        help="each device's last-seen time, outages, error counts and last errors",
        description="For each pump, line and gauge: when it was last seen, when it went "
        "offline and came back, its errors by kind over the last hour and day, and its last "
        "events with their times.",
        example=HISTORY_EXAMPLE,
        func=run_history,
    )
    history.add_argument("device", nargs="?", help="pump:N, a pump number, a line or a gauge")
    history.add_argument(
        "--last", type=output.positive_int, default=10, help="events per device (default 10)"
    )


# ---------------------------------------------------------------------------- health
# A monitoring plugin that cannot make its check exits 3, UNKNOWN (the Nagios plugin
# guidelines): a station config that cannot be read is not a verdict on the station.
UNKNOWN = 3


def run_health(args: argparse.Namespace) -> int:
    try:
        verdict = verdict_of(args)
    except ConfigError as exc:
        verdict = {
            "source": "config",
            "status": "unknown",
            "code": UNKNOWN,
            "line": f"EDGECTL UNKNOWN - {exc}",
            "checks": [],
        }
    if args.json:
        output.print_json(verdict)
    else:
        print(verdict["line"])
    return int(verdict["code"])


def verdict_of(args: argparse.Namespace) -> dict[str, Any]:
    """The daemon's verdict, or with the daemon down the one the store and disk allow."""
    station = output.target(args)
    try:
        with station.client() as client:
            result: dict[str, Any] = client.call("health")
            return {"source": "daemon", **result}
    except DaemonNotRunning as exc:
        why = str(exc)
    now = datetime.now(UTC)
    fields: dict[str, Any] = {}
    if station.config is None:
        why += f"; {station.config_error}"
    else:
        fields = _offline_fields(station.config, now)
    verdict = health.evaluate(
        health.HealthSnapshot(now=now, daemon_up=False, daemon_detail=why, **fields)
    )
    return {"source": "database", **verdict.as_dict()}


def _offline_fields(config: Config, now: datetime) -> dict[str, Any]:
    fields: dict[str, Any] = {"cloud_configured": config.cloud is not None}
    fields.update(health.gather_files(config, now))
    fields["store_error"] = health.store_write_problem(config.store.path)
    if config.store.path.exists():
        db = open_read_only(config.store.path)
        try:
            fields.update(health.gather_store(StoreReader(db), now))
        finally:
            db.close()
    else:
        fields["store_error"] = f"no store at {config.store.path}"
    return fields


# ---------------------------------------------------------------------------- history
def device_key(text: str | None, config: Config | None) -> str | None:
    """`pump:2`, `pump2`, `2` → pump:2; a line's or a gauge's name → line:NAME / gauge:NAME."""
    if not text:
        return None
    if ":" in text:
        return text
    digits = text.removeprefix("pump").removeprefix("p")
    if digits.isdigit():
        return f"pump:{int(digits)}"
    if config is not None:
        if any(line.name == text for line in config.lines):
            return f"line:{text}"
        if any(gauge.name == text for gauge in config.gauges):
            return f"gauge:{text}"
    return text


def run_history(args: argparse.Namespace) -> int:
    device = device_key(args.device, output.target(args).config)
    devices, source = fetch(
        args,
        "history",
        {"device": device, "last": args.last},
        lambda reader: reader.device_history(now=datetime.now(UTC), device=device, last=args.last),
    )
    if args.json:
        output.print_json({"source": source, "devices": devices})
        return output.EXIT_OK
    if not devices:
        if device is not None:
            return output.fail("history", f"no history of {device} (is it configured?)")
        print("no device history yet")
        return output.EXIT_OK
    out = output.console()
    for number, dev in enumerate(devices):
        if number:
            out.print()
        render_device(out, dev)
    return output.EXIT_OK


def render_device(out: Any, dev: dict[str, Any]) -> None:
    online = dev["online"]
    state = (
        output.yes_no(True, "online")
        if online
        else output.yes_no(False, bad="OFFLINE")
        if online == 0
        else "not known yet"
    )
    why = f": {output.esc(dev['reason'])}" if online == 0 and dev["reason"] else ""
    out.print(f"[bold]{output.esc(dev['device'])}[/] {state}{why}")
    out.print(
        f"  last seen {_when(dev['last_seen_at'])}, last offline {_when(dev['offline_since'])},"
        f" back {_when(dev['online_since'])}"
    )
    for label, key in (("last hour", "errors_last_hour"), ("last day", "errors_last_day")):
        counts = dev[key]
        text = ", ".join(f"{kind} {n}" for kind, n in counts.items()) if counts else "none"
        out.print(f"  errors {label}: {output.esc(text)}")
    if dev["events"]:
        out.print(
            output.table(
                None,
                ("at", "event", "kind", "count", "message"),
                [
                    (
                        output.local_time(e["at"]),
                        e["event"],
                        e["kind"],
                        e["count"],
                        e["message"],
                    )
                    for e in dev["events"]
                ],
                right=("count",),
                optional=("kind", "count"),
            )
        )


def _when(stamp: str | None) -> str:
    return output.local_time(stamp) if stamp else "never"
