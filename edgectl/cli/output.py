"""Shared by the technician commands: finding the daemon, tables or JSON, one-sentence errors."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, TypeAlias

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from edgectl.config import Config, load_config
from edgectl.control.client import ControlClient, DaemonNotRunning
from edgectl.control.protocol import to_jsonable
from edgectl.errors import ConfigError, EdgectlError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = Path("/etc/edgectl/station.toml")
CONFIG_ENV = "EDGECTL_CONFIG"

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[argparse.Namespace], int]

EXIT_TEXT = "exit status: 0 done, 1 failed (one line on stderr says why), 2 usage error."


# --------------------------------------------------------------------------- parsers


def add_command(
    sub: Subparsers,
    name: str,
    *,
    help: str,
    description: str,
    example: str,
    func: Handler,
    daemon: bool = True,
    json_output: bool = True,
    exits: str = EXIT_TEXT,
    label: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand with its example and exit statuses in --help, and the common options.
    `label` names it in error messages when it is below another command ("db backup")."""
    parser = sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=f"{example.rstrip()}\n\n{exits}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser, daemon=daemon, json_output=json_output)
    parser.set_defaults(func=guarded(label or name, func))
    return parser


def add_common(
    parser: argparse.ArgumentParser, *, daemon: bool = True, json_output: bool = True
) -> None:
    where = parser.add_argument_group("where the station is")
    where.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help=f"station config (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})",
    )
    if daemon:
        where.add_argument(
            "--socket",
            metavar="PATH",
            type=Path,
            help="the daemon's control socket (default: [control].socket of the config)",
        )
    if json_output:
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def guarded(name: str, func: Handler) -> Handler:
    """Run a handler so that any failure is one sentence on stderr and exit status 1."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except BrokenPipeError:
            raise  # the reader left (`| head`): the entry point ends quietly
        except (DaemonNotRunning, StationUnreachable) as exc:
            return fail(None, str(exc))
        except (EdgectlError, OSError, sqlite3.Error) as exc:
            return fail(name, _sentence(exc))
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # a bug: still no traceback for the technician
            return fail(name, f"internal error ({type(exc).__name__}: {exc})")

    return run


def fail(name: str | None, message: str) -> int:
    prefix = f"edgectl {name}: " if name else ""
    print(f"{prefix}{message}", file=sys.stderr)
    return EXIT_FAILED


def note(message: str) -> None:
    print(message, file=sys.stderr)


def _sentence(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- files


class PathProblem(EdgectlError):
    """A file the user named cannot be written; the message names it as given, and why."""

    code = "path"


def check_writable(path: Path) -> None:
    """Refuse, before any work, a destination that cannot be written."""
    parent = path.parent
    if path.is_dir():
        raise PathProblem(f"{path} is a folder: give a file name (e.g. {path / 'sales.csv'})")
    if not parent.exists():
        raise PathProblem(f"cannot write {path}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise PathProblem(f"cannot write {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PathProblem(f"cannot write {path}: no permission to create files in {parent}")


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A file written whole beside `path` and then moved onto it, so a half-written one is
    never left there; a failure names `path` (not the file beside it) and why."""
    check_writable(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        yield partial
        os.replace(partial, path)
    except OSError as exc:
        raise PathProblem(f"cannot write {path}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        raise PathProblem(f"cannot write {path}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the station


class StationUnreachable(EdgectlError):
    """Neither the daemon nor its database can be reached; the message says both."""

    code = "unreachable"


@dataclass
class Target:
    """Where the commands find the station: its config (if readable) and its socket."""

    config_path: Path
    config: Config | None
    config_error: str | None
    socket: Path

    def require_config(self) -> Config:
        if self.config is None:
            raise EdgectlError(self.config_error or f"cannot read {self.config_path}")
        return self.config

    def client(self) -> ControlClient:
        return ControlClient(self.socket)


def target(args: argparse.Namespace) -> Target:
    """The station the command is about. Its config names the daemon's socket and store, so
    without `--socket` a config that cannot be used is the error (`ConfigError`, exit status
    1 as `config check` gives it), never "edgectl is not running" at a default socket."""
    named = args.config or os.environ.get(CONFIG_ENV)
    path = Path(named or DEFAULT_CONFIG)
    config: Config | None = None
    problem: str | None = None
    try:
        config = load_config(path)
    except ConfigError as exc:
        if getattr(args, "socket", None) is None:
            hint = "" if named else f" (give --config FILE, or set {CONFIG_ENV})"
            raise ConfigError(f"{exc}{hint}") from None
        problem = str(exc)
    socket = getattr(args, "socket", None)
    if socket is None:
        assert config is not None
        socket = config.control.socket
    return Target(path, config, problem, Path(socket))


def call(args: argparse.Namespace, op: str, op_args: dict[str, Any] | None = None) -> Any:
    """One request to the running daemon."""
    with target(args).client() as client:
        return client.call(op, op_args)


# --------------------------------------------------------------------------- output


def console(*, stderr: bool = False) -> Console:
    """Colour and live updates only on a terminal; plain, wide text in a pipe or a file."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return Console(
        file=stream,
        highlight=False,
        width=None if tty else 200,
        force_terminal=None if tty else False,
        no_color=not tty or None,
    )


def print_json(value: Any) -> None:
    print(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False))


def print_json_line(value: Any) -> None:
    print(json.dumps(to_jsonable(value), separators=(",", ":"), ensure_ascii=False), flush=True)


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    right: Iterable[str] = (),
    optional: Sequence[str] = (),
    decimals: Mapping[str, int] | None = None,
) -> Fitted:
    """Rows as a table that fits the width it is printed at (an 80-column ssh session too):
    no cell is ever wrapped or cut. Too wide, it leaves out the `optional` columns in that
    order; still too wide, each row becomes a block of `column  value` lines.

    Numbers in a right-aligned column all get the same decimals: those `decimals` names for
    the column, else the most any of its values has (747.1391 is not printed beside 1446.1).
    """
    aligned = set(right)
    cells = [[cell(value) for value in row] for row in rows]
    for index, column in enumerate(columns):
        if column in aligned:
            _align_decimals(cells, index, (decimals or {}).get(column))
    return Fitted(title, tuple(columns), cells, aligned, tuple(optional))


class Fitted:
    """A table that chooses its layout when printed, from the width it is given."""

    def __init__(
        self,
        title: str | None,
        columns: tuple[str, ...],
        cells: list[list[str]],
        right: set[str],
        optional: tuple[str, ...],
    ) -> None:
        self.title = title
        self.columns = columns
        self.cells = cells
        self.right = right
        self.optional = optional
        self.caption: str | None = None  # a line under the table

    @property
    def row_count(self) -> int:
        return len(self.cells)

    def grid(self, shown: Sequence[str], width: int) -> Table:
        grid = Table(
            title=self.title,
            box=box.SIMPLE_HEAD,
            title_justify="left",
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
            # A title is laid out at the table's width: keep it on one line.
            min_width=min(max(cell_len(self.title or ""), cell_len(self.caption or "")), width),
            caption=self.caption,
            caption_justify="left",
        )
        for column in shown:
            grid.add_column(
                column, justify="right" if column in self.right else "left", no_wrap=True
            )
        keep = [self.columns.index(column) for column in shown]
        for row in self.cells:
            grid.add_row(*(row[i] for i in keep))
        return grid

    def layout(self, console: Console, width: int) -> Table | Group:
        """The widest layout that fits `width`."""
        shown = list(self.columns)
        leave_out = [c for c in self.optional if c in shown]
        # Measured with room to spare: a measurement is clamped to the width it is given.
        unbounded = console.options.update_width(_UNBOUNDED)
        while True:
            grid = self.grid(shown, width)
            if Measurement.get(console, unbounded, grid).maximum <= width:
                return grid
            if not leave_out:
                return self.stacked(width)
            shown.remove(leave_out.pop(0))

    def stacked(self, width: int) -> Group:
        """Each row as a block: its first cell as a heading, then `column  value` lines; a
        value too long to stand beside its column's name goes on the next line, indented."""
        blocks: list[Any] = [Text(self.title, style="italic")] if self.title else []
        if self.caption:
            blocks.append(Text(self.caption, style="dim"))
        names = self.columns[1:]
        name_width = max((cell_len(n) for n in names), default=0)
        for row in self.cells:
            blocks.append(Text.from_markup(f"{escape(self.columns[0])} {row[0]}", style="bold"))
            for name, value in zip(names, row[1:], strict=True):
                text = Text.from_markup(value)
                if name_width + 2 + text.cell_len <= width:
                    blocks.append(Text(name.ljust(name_width) + "  ", style="dim") + text)
                else:
                    blocks += [Text(name, style="dim"), Text("  ") + text]
        return Group(*blocks)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.layout(console, options.max_width)


_UNBOUNDED = 10_000
_NUMBER = re.compile(r"-?\d+(?:\.(\d+))?")


def _align_decimals(cells: list[list[str]], index: int, places: int | None) -> None:
    """Give every number in column `index` the same number of decimals."""
    found = [_NUMBER.fullmatch(row[index]) for row in cells]
    if places is None:
        places = max((len(m.group(1) or "") for m in found if m), default=0)
    step = Decimal(1).scaleb(-places)
    for row, match in zip(cells, found, strict=True):
        if match:
            row[index] = str(Decimal(row[index]).quantize(step, rounding=ROUND_HALF_EVEN))


class Markup(str):
    """Text holding our own rich markup; everything else printed is escaped first."""


def cell(value: Any) -> str:
    if isinstance(value, Markup):
        return value
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return escape(str(to_jsonable(value)))


def esc(value: Any) -> str:
    """A value from the station or the user, safe inside a markup string."""
    return escape(str(value))


def yes_no(flag: bool, good: str = "yes", bad: str = "no") -> Markup:
    return Markup(f"[green]{good}[/]" if flag else f"[bold red]{bad}[/]")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def local_time(stamp: str | None) -> str:
    """A stored UTC time as the technician's local wall clock, with its zone: the one time
    convention of the CLI and the demo (docs/operations.md)."""
    if not stamp:
        return "-"
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def local_clock(stamp: str) -> str:
    """The wall-clock part of `local_time` (HH:MM:SS), where the day and zone go without
    saying (a live view, an age beside it)."""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return moment.astimezone().strftime("%H:%M:%S")


# --------------------------------------------------------------------------- argument types

_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since(text: str) -> str:
    """--since: 30m, 2h, 7d, today, yesterday, 2026-11-24 or 2026-11-24T08:00 (local time);
    returned as the store's UTC timestamp format."""
    now = datetime.now().astimezone()
    value = text.strip().lower()
    moment: datetime
    relative = _RELATIVE.fullmatch(value)
    if relative:
        moment = now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    elif value in ("today", "yesterday"):
        day = now.date() - timedelta(days=1 if value == "yesterday" else 0)
        moment = datetime.combine(day, time()).astimezone()
    else:
        try:
            parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a time: use 30m, 2h, 7d, today, yesterday, "
                "2026-11-24 or 2026-11-24T08:00"
            ) from None
        moment = parsed if parsed.tzinfo else parsed.astimezone()
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pump_number(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pump number") from None
    if not 1 <= number <= 99:
        raise argparse.ArgumentTypeError(f"pump numbers are 1..99, not {number}")
    return number


def positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is not at least 1")
    return number
