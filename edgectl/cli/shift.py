"""`edgectl shift open|close|list`: an attendant's shift, from its opening to its closing, each
end recording every nozzle's electronic totals at that moment (the shift report's totals
check holds them against the shift's sales).

With the daemon running it takes the totals (asking each idle pump, edgectl/shifts.py) and
records the shift, audited as every manual action. Without it the CLI records the shift
itself, with the store's last recorded totals and its own audit row, holding the daemon's
store lock meanwhile so that no daemon starts on the store halfway; the output says which.
"""

from __future__ import annotations

import argparse
import getpass
import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgectl import shifts
from edgectl.cli import output
from edgectl.cli.actions import user_name
from edgectl.cli.books import fixed, narrow, short_time, zone_note
from edgectl.cli.output import Subparsers
from edgectl.cli.records import fetch
from edgectl.cloud.messages import ContractMessages
from edgectl.config import Config
from edgectl.control.client import DaemonNotRunning
from edgectl.errors import EdgectlError, StoreMissingError
from edgectl.instance import InstanceLock, StoreInUseError
from edgectl.store import files
from edgectl.store.store import Store, lock_path

EXAMPLE = """\
examples:
  edgectl shift open                 # at the start of a shift: the nozzles' totals now
  edgectl shift close                # at its end
  edgectl shift list
  edgectl report shift               # the shift's report (the open one, else the last)

One shift is open at a time. With the daemon running, each idle pump is asked for its totals
(a busy or offline pump gives the store's last); without it, the store's last recorded totals
are taken. The output says which, per nozzle. Opening and closing are recorded in the audit.
"""


def register(sub: Subparsers) -> None:
    shift = sub.add_parser(
        "shift",
        help="open or close a shift, recording each nozzle's totals (audited)",
        description="Open or close an attendant's shift; each records every nozzle's "
        "electronic totals at that moment.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = shift.add_subparsers(dest="shift_action", metavar="open|close|list", required=True)
    for action, verb in (("open", "start"), ("close", "end")):
        output.add_command(
            actions,
            action,
            help=f"{verb} a shift with each nozzle's totals now (audited)",
            description=f"{verb.capitalize()} a shift, recording each nozzle's totals now.",
            example=EXAMPLE,
            func=run_open if action == "open" else run_close,
            label=f"shift {action}",
        )
    listing = output.add_command(
        actions,
        "list",
        help="the shifts recorded",
        description="List the shifts, oldest first: when each was opened and closed, by whom.",
        example=EXAMPLE,
        func=run_list,
        label="shift list",
    )
    listing.add_argument(
        "--limit", type=output.positive_int, metavar="N", help="at most N rows (default 50)"
    )
    listing.add_argument("--all", action="store_true", help="every row, however many")


def run_open(args: argparse.Namespace) -> int:
    return _record(args, "open")


def run_close(args: argparse.Namespace) -> int:
    return _record(args, "close")


def _record(args: argparse.Namespace, moment: str) -> int:
    station = output.target(args)
    user = user_name()
    try:
        with station.client() as client:
            result = client.call(f"shift_{moment}", {"user": user})
    except DaemonNotRunning as exc:
        if station.config is None:
            raise output.StationUnreachable(
                f"{exc}, and its database cannot be found: {station.config_error}"
            ) from None
        output.note(f"{exc}; recording the shift in {station.config.store.path} itself")
        try:
            result = record_offline(station.config, moment, user)
        except StoreInUseError as busy:
            raise EdgectlError(
                f"{busy}, yet nothing answers at {station.socket}: give the daemon's socket"
                " with --socket (or check [control].socket in the config)"
            ) from None
    if args.json:
        output.print_json(result)
        return output.EXIT_OK
    out = output.console()
    shift = result["shift"]
    at = shift["opened_at"] if moment == "open" else shift["closed_at"]
    verb = "opened" if moment == "open" else "closed"
    out.print(f"shift {shift['id']} {verb} at {short_time(at)}; {zone_note()}")
    out.print(f"nozzle totals: {output.esc(result['totals_from'])}")
    out.print(totals_table(result["totals"]))
    if moment == "close":
        out.print(f"its report: edgectl report shift {shift['id']}")
    return output.EXIT_OK


def totals_table(totals: list[dict[str, Any]]) -> Any:
    grid = narrow(
        None,
        (
            ("pump", True),
            ("noz", True),
            ("grade", False),
            ("volume L", True),
            ("amount", True),
            ("from", False),
            ("read", False),
        ),
    )
    for t in totals:
        grid.add_row(
            str(t["pump"]),
            str(t["nozzle"]),
            output.esc(t["grade"] or "-"),
            fixed(t["volume"]),
            fixed(t["amount"]),
            {"pump": "pump", "store": "store", "none": "never read"}.get(t["source"], "?"),
            short_time(t["read_at"]),
        )
    return grid


def record_offline(config: Config, moment: str, user: str) -> dict[str, Any]:
    """The shift recorded by the CLI itself, with the store's last totals, audited."""
    with _store(config) as store:
        totals = shifts.stored_totals(store.reader, config)
        audit_id = store.audit_requested(
            f"shift_{moment}",
            {"daemon": "not running"},
            client_user=user,
            peer_uid=os.getuid(),
            peer_user=_own_name(),
            peer_pid=os.getpid(),
        )
        try:
            record = store.open_shift if moment == "open" else store.close_shift
            shift = record(user, totals)
        except EdgectlError as exc:
            store.audit_finished(audit_id, "failed", str(exc))
            raise
        answer = shifts.result(moment, shift, totals, "database")
        store.audit_finished(audit_id, "ok", answer["message"])
    return answer


@contextmanager
def _store(config: Config) -> Iterator[Store]:
    """The store opened for writing, under the daemon's own lock; its files keep their owner
    (the daemon's user) when root writes them."""
    path = config.store.path
    if not path.is_file():
        raise StoreMissingError(
            f"no database at {path}: check [store].path in the config", path=path
        )
    made_lock = not lock_path(path).exists()
    lock = InstanceLock.take(path)
    try:
        lock.require()
        owner = files.Ownership.of(path)
        store = Store(path, station_id=config.station.id, messages=ContractMessages())
        try:
            yield store
        finally:
            store.close()
            _keep_owner(path, owner, made_lock)
    finally:
        lock.release()


def _keep_owner(path: Path, owner: files.Ownership, made_lock: bool) -> None:
    """Root wrote the store: what it made beside it (a -wal or -shm left behind, the lock
    file) goes to the store's owner, or the daemon could not open them next time."""
    if os.geteuid() != 0 or owner.uid == 0:
        return
    made = [*files.side_files(path)] + ([lock_path(path)] if made_lock else [])
    for side in made:
        if side.exists():
            owner.give(side)


def _own_name() -> str | None:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return getpass.getuser()


def run_list(args: argparse.Namespace) -> int:
    limit = None if args.all else (args.limit or 50)
    rows, source = fetch(
        args, "shifts", {"limit": args.limit, "all": args.all}, lambda r: r.shifts(limit=limit)
    )
    if args.json:
        output.print_json({"source": source, "shifts": rows})
        return output.EXIT_OK
    out = output.console()
    if not rows:
        out.print("no shift recorded yet (edgectl shift open starts one)")
        return output.EXIT_OK
    grid = narrow(
        None,
        (("shift", True), ("opened", False), ("by", False), ("closed", False), ("by", False)),
    )
    for r in rows:
        grid.add_row(
            str(r["id"]),
            short_time(r["opened_at"]),
            output.esc(r["opened_by"] or "-"),
            short_time(r["closed_at"]) if r["closed_at"] else "open",
            output.esc(r["closed_by"] or "-"),
        )
    grid.columns[2].max_width = grid.columns[4].max_width = 20
    out.print(grid)
    return output.EXIT_OK
