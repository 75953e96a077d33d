"""`edgectl config check FILE`: is a station config valid, and what is wrong with it if not;
`edgectl config schema`: the JSON Schema of station.toml, for editors."""

from __future__ import annotations

import argparse
import grp
import json
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drivers import registry
from edgectl.cli import output
from edgectl.cli.output import Subparsers
from edgectl.config import Config, PumpConfig, json_schema, load_config, refuse_placeholders
from edgectl.errors import ConfigError

EXAMPLE = """\
examples:
  edgectl config check /etc/edgectl/station.toml
  edgectl config check new-station.toml --json

The whole file is validated as the daemon does at start; the first problem found is shown
with the key it concerns and what that section is for (fix it and check again). A valid file
is summarised (lines, gauges and their tanks, grades, store, cloud, control socket), with notes
on this machine: serial ports that do not exist, a store directory that cannot be written, an
unknown control group.
exit status: 0 valid (notes do not count), 1 not valid or unreadable, 2 usage error.
"""

# What each section is for, told with a problem in it.
_SECTIONS = {
    "station": "[station] names the site: id (letters, digits, '-', '_'; it is part of MQTT "
    "topics), name, and currency (ISO 4217, e.g. CNY).",
    "store": "[store] path is the SQLite database; a relative path is taken from the "
    "config file's directory.",
    "authorization": "[authorization] mode says who releases pumps: cloud, auto or attendant; "
    "auto_preset_amount must lie within [limits].",
    "limits": "[limits] bound every preset: min_preset_amount, max_preset_amount, "
    'max_preset_volume, as strings like "2000.00".',
    "logging": '[logging] level is debug, info, warning or error; format is "json" or "console".',
    "grades": "each [[grades]] has an id, a name and a unit_price written as a string "
    '(unit_price = "7.45"), never a float.',
    "lines": "each [[lines]] is one serial bus: a unique name, its port, protocol "
    '"wayne_dart", and baud/parity/bytesize/stopbits as the pumps are set.',
    "pumps": "each [[pumps]] has a unique number, the line it is on, its address on that line "
    '(0x50-0x6F for DART) and its nozzles, e.g. nozzles = { 1 = "92", 2 = "95" }.',
    "gauges": "each [[gauges]] is one tank gauge: a unique name, protocol veeder_root or "
    "modbus_probe, and either a serial port (with baud/parity/bytesize/stopbits as set on the "
    "gauge) or host and tcp_port.",
    "tanks": "each [[tanks]] has a unique number, its grade, capacity_l, height_mm, density_15, "
    "the gauge that reads it (and gauge_tank / device_id on it), and a chart unless a "
    "Veeder-Root console reports the volumes.",
    "cloud": "[cloud] is the MQTT link: host, port, tls and certificate files, credentials, "
    "and [[cloud.command_keys]]; leave the whole section out to run without a cloud.",
    "control": "[control] socket is the CLI's Unix socket path (at most 107 bytes), group the "
    "group allowed to use it.",
    "metrics": "[metrics] textfile is where the Prometheus metrics are written for "
    "node_exporter's textfile collector (a *.prom file in its --collector.textfile.directory), "
    "interval_s how often (1 to 3600 s, default 15).",
}
# A key path as the loader writes it: `pumps[number=2].nozzles.16`, `lines[name="north"]`,
# `tanks[2nd]`; a quoted name may hold any character but a quote.
_KEY_PATH = re.compile(r'[A-Za-z_][\w.-]*(?:\[(?:[^\]"]|"[^"]*")*\][\w.-]*)*')


def register(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "config",
        help="check a station config file",
        description="Work with station config files.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate a config file and explain any problem",
        description="Validate a station config file as the daemon would, and explain what is "
        "wrong with it.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "file",
        nargs="?",
        help=f"config file (default: ${output.CONFIG_ENV}, else {output.DEFAULT_CONFIG})",
    )
    check.add_argument("--json", action="store_true", help="print JSON for scripts")
    check.set_defaults(func=output.guarded("config check", run_check))
    schema = actions.add_parser(
        "schema",
        help="print the JSON Schema of station.toml (for editors)",
        description="Print the JSON Schema of a station config, generated from the models "
        "the daemon validates it with. config/station.schema.json is this output.",
        epilog=SCHEMA_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    schema.set_defaults(func=output.guarded("config schema", run_schema))


SCHEMA_EXAMPLE = """\
example:
  edgectl config schema > config/station.schema.json

An editor with a TOML language server (Even Better TOML, taplo) checks and completes a
station.toml whose first line is:  #:schema ./station.schema.json
It describes the file's shape (keys, types, ranges, choices); `edgectl config check` also
checks what a schema cannot (references between sections, files, this machine).
exit status: 0 printed, 2 usage error.
"""


def run_schema(args: argparse.Namespace) -> int:
    print(schema_text(), end="")
    return output.EXIT_OK


def schema_text() -> str:
    """config/station.schema.json as it is shipped: generated, stable, ending in a newline."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def run_check(args: argparse.Namespace) -> int:
    path = Path(args.file or os.environ.get(output.CONFIG_ENV) or output.DEFAULT_CONFIG)
    try:
        config = load_config(path)
        refuse_placeholders(config)
    except ConfigError as exc:
        problem = explain(path, exc)
        if args.json:
            output.print_json({"file": str(path), "valid": False, "problems": [problem]})
        else:
            where = f"{problem['key']}: " if problem["key"] else ""
            print(f"{path} is not valid:")
            print(f"  {where}{problem['message']}")
            if problem["explanation"]:
                print(f"  {problem['explanation']}")
            print(
                "The file is checked in order and checking stops at the first problem: fix it "
                "and run this again. Every key is documented in config/station.example.toml."
            )
        return output.EXIT_FAILED
    notes = machine_notes(config)
    summary = summarise(config)
    if args.json:
        output.print_json(
            {"file": str(path), "valid": True, "problems": [], "summary": summary, "notes": notes}
        )
        return output.EXIT_OK
    print(f"{path} is valid.")
    station = summary["station"]
    print(
        f"station {station['id']}{' (' + station['name'] + ')' if station['name'] else ''}, "
        f"currency {station['currency']}, authorization mode {summary['mode']}"
    )
    for line in summary["lines"]:
        print(
            f"line {line['name']}: {line['port']} {line['protocol']} {line['settings']}, "
            f"pumps {', '.join(str(n) for n in line['pumps']) or 'none'}"
        )
        for node in line.get("nodes", ()):
            where = node["host"] or "where its heartbeat says"
            print(f"  node {node['node']} at {where}: pumps {', '.join(map(str, node['pumps']))}")
    for gauge in summary["gauges"]:
        print(
            f"gauge {gauge['name']}: {gauge['port']} {gauge['protocol']} {gauge['settings']}, "
            f"tanks {', '.join(str(n) for n in gauge['tanks']) or 'none'}"
        )
    print(f"{len(summary['grades'])} grade(s): {', '.join(summary['grades'])}")
    print(f"store {summary['store']}")
    cloud = summary["cloud"]
    print(f"cloud {cloud}" if cloud else "cloud: none (the station runs alone)")
    group = summary["control"]["group"]
    print(f"control socket {summary['control']['socket']}{f' (group {group})' if group else ''}")
    metrics = summary["metrics"]
    if metrics["textfile"] is None:
        print("metrics: no textfile (edgectl metrics shows them)")
    else:
        print(f"metrics textfile {metrics['textfile']} every {metrics['interval_s']:g} s")
    for text in notes:
        print(f"note: {text}")
    return output.EXIT_OK


def explain(path: Path, exc: ConfigError) -> dict[str, Any]:
    """Split "<file>: <key>: <message>" and add what the key's section is for."""
    text = str(exc)
    prefix = f"{path}: "
    if text.startswith(prefix):
        text = text[len(prefix) :]
    key: str | None = None
    found = _KEY_PATH.match(text)
    if found and text[found.end() : found.end() + 2] == ": ":
        key, text = found.group(), text[found.end() + 2 :]
    section = re.split(r"[.\[]", key, maxsplit=1)[0] if key else None
    return {
        "key": key,
        "message": text,
        "explanation": _SECTIONS.get(section or ""),
    }


def summarise(config: Config) -> dict[str, Any]:
    cloud = config.cloud
    return {
        "station": {
            "id": config.station.id,
            "name": config.station.name,
            "currency": config.station.currency,
        },
        "mode": config.authorization.mode,
        "lines": [
            {
                "name": line.name,
                "port": line.where,
                "protocol": line.protocol,
                "settings": registry.lookup(line.protocol).line_settings(line),
                "pumps": [p.number for p in config.pumps_on(line.name)],
                **_nodes(config.pumps_on(line.name)),
            }
            for line in config.lines
        ],
        "gauges": [
            {
                "name": gauge.name,
                "port": gauge.port if gauge.port is not None else f"{gauge.host}:{gauge.tcp_port}",
                "protocol": gauge.protocol,
                "settings": (
                    f"{gauge.baud} {gauge.bytesize}{gauge.parity[0].upper()}{gauge.stopbits}"
                    if gauge.port is not None
                    else "tcp"
                ),
                "tanks": [t.number for t in config.tanks_on(gauge.name)],
            }
            for gauge in config.gauges
        ],
        "grades": [g.id for g in config.grades],
        "store": str(config.store.path),
        "cloud": (
            f"{cloud.host}:{cloud.port} ({'tls' if cloud.tls else 'no tls'})"
            if cloud is not None
            else None
        ),
        "control": {
            "socket": str(config.control.socket),
            "group": config.control.group,
        },
        "metrics": {
            "textfile": None if config.metrics.textfile is None else str(config.metrics.textfile),
            "interval_s": config.metrics.interval_s,
        },
    }


def _nodes(pumps: Sequence[PumpConfig]) -> dict[str, Any]:
    """The dispenser nodes of a line whose pumps name one (IFSF), with where each is: its
    configured host, or None (learned from its heartbeat)."""
    nodes: dict[str, dict[str, Any]] = {}
    for pump in pumps:
        if pump.node is None:
            continue
        node = nodes.setdefault(pump.node, {"node": pump.node, "host": None, "pumps": []})
        node["host"] = node["host"] or pump.host
        node["pumps"].append(pump.number)
    return {"nodes": list(nodes.values())} if nodes else {}


def machine_notes(config: Config) -> list[str]:
    """What the file cannot know but this machine can tell: missing ports, unwritable dirs."""
    notes: list[str] = []
    ports = [(f"lines.{line.name}.port", line.port) for line in config.lines if line.port]
    ports += [(f"gauges.{g.name}.port", g.port) for g in config.gauges if g.port is not None]
    for key, name in ports:
        port = Path(name)
        if not port.exists():
            notes.append(f"{key}: {port} does not exist on this machine")
        elif not stat.S_ISCHR(port.stat().st_mode):
            notes.append(f"{key}: {port} is not a serial device")
    store_dir = _existing_parent(config.store.path)
    if not os.access(store_dir, os.W_OK):
        notes.append(f"store.path: {store_dir} cannot be written by this user")
    socket_dir = config.control.socket.parent
    if not socket_dir.is_dir():
        notes.append(
            f"control.socket: {socket_dir} does not exist yet (the daemon creates it when it "
            "may; systemd's RuntimeDirectory=edgectl does for /run/edgectl)"
        )
    textfile = config.metrics.textfile
    if textfile is not None and not textfile.parent.is_dir():
        notes.append(
            f"metrics.textfile: {textfile.parent} does not exist: the daemon does not create "
            "it (node_exporter's textfile directory); until it exists no metrics are written"
        )
    if config.control.group is not None:
        try:
            grp.getgrnam(config.control.group)
        except KeyError:
            notes.append(f"control.group: no group {config.control.group!r} on this machine")
    return notes


def _existing_parent(path: Path) -> Path:
    for candidate in (path.parent, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")
