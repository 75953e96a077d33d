"""Read-only queries over any connection to a store: the technician's screens, reports, metrics."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from edgectl.errors import StoreMissingError
from edgectl.store import faults
from edgectl.store.rows import as_aware, device_bucket, where_clause

# meta keys `sales_purged:<grade>` = "<sales> <litres>": what retention deleted, kept so that
# the sales and litres sold per grade since the store began never go down.
PURGED_SALES_KEY = "sales_purged:"


class StoreReader:
    """Read-only queries for the technician's screens, over any connection to a store.

    The daemon runs them on its own connection (through its store thread); the CLI runs them
    on a read-only connection of its own when the daemon is not running (`open_read_only`).
    Lists are capped by `limit` and come oldest first, the newest `limit` rows when capped.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        unrecorded_alarms: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        """`unrecorded_alarms`: alarms not in the table yet (the running store's own while
        it cannot write), listed as active alarms."""
        self._db = db
        self._unrecorded_alarms = unrecorded_alarms

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        cur = self._db.execute(sql, params)
        names = [column[0] for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def sales(
        self, *, since: str | None = None, pump: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        where, params = where_clause(("recorded_at >=", since), ("pump =", pump))
        return self._newest(f"SELECT * FROM sales{where}", params, "id", limit)

    def orders(
        self, *, status: str | None = None, since: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        where, params = where_clause(("status =", status), ("created_at >=", since))
        return self._newest(f"SELECT * FROM orders{where}", params, "created_at", limit)

    def alarms(
        self, *, active_only: bool = False, limit: int | None = None
    ) -> list[dict[str, Any]]:
        where = " WHERE cleared_at IS NULL" if active_only else ""
        rows = self._newest(f"SELECT * FROM alarms{where}", (), "id", limit)
        rows += self._unrecorded_alarms()  # the newest, whatever the table holds
        return rows if limit is None else rows[-limit:]

    def audit(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        return self._newest("SELECT * FROM audit", (), "id", limit)

    def outbox(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The oldest rows held: waiting for the broker, or (sent_at set) for the backend's
        ack (payload size, not payload)."""
        sql = (
            "SELECT seq, stream, stream_seq, version, priority, created_at, sent_at, key, topic,"
            " retain, length(payload) AS bytes FROM outbox ORDER BY seq"
        )
        if limit is None:
            return self._rows(sql)
        return self._rows(sql + " LIMIT ?", (limit,))

    def outbox_summary(self) -> dict[str, Any]:
        """`depth` rows held, `waiting` of them not sent yet, the oldest row's time, rows per
        stream, and per guaranteed stream its sequence: `last_seq`, the backend's `acked_seq`,
        `unacked` rows held (sent or not) and the oldest one's time, `dropped` over quota."""
        depth, oldest = self._db.execute(
            "SELECT COUNT(*), (SELECT created_at FROM outbox ORDER BY seq LIMIT 1) FROM outbox"
        ).fetchone()
        waiting = self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()
        streams = {
            str(stream): int(count)
            for stream, count in self._db.execute(
                "SELECT stream, COUNT(*) FROM outbox GROUP BY stream ORDER BY stream"
            )
        }
        sequences: dict[str, dict[str, Any]] = {}
        for row in self._rows(
            "SELECT s.stream, s.last_seq, s.acked_seq, s.dropped,"
            " (SELECT COUNT(*) FROM outbox o WHERE o.stream = s.stream"
            " AND o.stream_seq IS NOT NULL) AS unacked,"
            " (SELECT COUNT(*) FROM outbox o WHERE o.stream = s.stream AND o.sent_at IS NOT NULL)"
            " AS sent,"
            " (SELECT MIN(created_at) FROM outbox o WHERE o.stream = s.stream"
            " AND o.stream_seq IS NOT NULL) AS oldest_unacked_at"
            " FROM outbox_streams s WHERE s.key = '' ORDER BY s.stream"
        ):
            sequences[str(row.pop("stream"))] = row
        return {
            "depth": int(depth),
            "waiting": int(waiting[0]),
            "oldest_at": oldest,
            "streams": streams,
            "sequences": sequences,
        }

    def metrics_figures(self, after_sale: int) -> dict[str, Any]:
        """What the metrics read from the store, in one short visit: the outbox's rows held
        and its oldest row's time, and the sales after id `after_sale` by grade (count,
        litres, highest id), so each scrape reads only the sales new since the last."""
        depth, oldest = self._db.execute(
            "SELECT COUNT(*), (SELECT created_at FROM outbox ORDER BY seq LIMIT 1) FROM outbox"
        ).fetchone()
        sales = [
            (str(grade), int(count), float(litres), int(last))
            for grade, count, litres, last in self._db.execute(
                "SELECT grade, COUNT(*), total(volume), MAX(id) FROM sales WHERE id > ?"
                " GROUP BY grade ORDER BY grade",
                (after_sale,),
            )
        ]
        return {"outbox_depth": int(depth), "outbox_oldest_at": oldest, "sales": sales}

    def purged_sales(self) -> dict[str, tuple[int, float]]:
        """Sales and litres per grade of the sales retention deleted (`purge_old_records`):
        with the sales still held, what the store has sold since it began."""
        found: dict[str, tuple[int, float]] = {}
        for key, value in self._db.execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?",
            (len(PURGED_SALES_KEY), PURGED_SALES_KEY),
        ):
            count, litres = str(value).split()
            found[str(key).removeprefix(PURGED_SALES_KEY)] = (int(count), float(litres))
        return found

    def newest_record_at(self) -> str | None:
        """When the newest sale, alarm or outbox message was written (for the clock check)."""
        row = self._db.execute(
            "SELECT MAX(t) FROM (SELECT MAX(recorded_at) AS t FROM sales"
            " UNION ALL SELECT MAX(raised_at) FROM alarms"
            " UNION ALL SELECT MAX(created_at) FROM outbox)"
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def device_history(
        self, *, now: datetime, device: str | None = None, last: int = 10
    ) -> list[dict[str, Any]]:
        """Each device's state, its error counts by kind over the hour and the day before
        `now` (10-minute buckets: a count may be up to 10 minutes older), and its `last`
        newest events, newest first; one device, or all in their order of appearance."""
        where, params = where_clause(("device =", device))
        states = self._rows(f"SELECT * FROM device_state{where} ORDER BY rowid", params)
        hour = device_bucket(now - timedelta(hours=1))
        day = device_bucket(now - timedelta(days=1))
        for state in states:
            name = state["device"]
            for label, since in (("errors_last_hour", hour), ("errors_last_day", day)):
                state[label] = {
                    str(kind): int(n)
                    for kind, n in self._db.execute(
                        "SELECT kind, SUM(count) FROM device_counts WHERE device = ?"
                        " AND bucket >= ? GROUP BY kind ORDER BY kind",
                        (name, since),
                    )
                }
            state["events"] = self._rows(
                "SELECT at, event, kind, count, message FROM device_events WHERE device = ?"
                " ORDER BY id DESC LIMIT ?",
                (name, last),
            )
        return states

    # -- the records of issue 16: deliveries, reconciliations, totals, shifts, reports
    def deliveries(
        self, *, since: str | None = None, tank: int | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Deliveries that ended at or after `since` (any ISO time), oldest first."""
        rows = self._rows(
            "SELECT * FROM deliveries WHERE (? IS NULL OR tank = ?) ORDER BY end_at, id",
            (tank, tank),
        )
        if since is not None:
            cut = as_aware(since)
            rows = [r for r in rows if as_aware(r["end_at"]) >= cut]
        return rows if limit is None else rows[-limit:]

    def reconciliations(
        self, *, tank: int | None = None, since_day: str | None = None
    ) -> list[dict[str, Any]]:
        """The kept daily reconciliations from `since_day` (YYYY-MM-DD) on, by day and tank."""
        where, params = where_clause(("tank =", tank), ("day >=", since_day))
        return self._rows(f"SELECT * FROM reconciliations{where} ORDER BY day, tank", params)

    def tank_latest(self) -> dict[int, dict[str, Any]]:
        """Each tank's last plausible reading kept by the daemon, by tank number."""
        return {int(r["tank"]): r for r in self._rows("SELECT * FROM tank_latest ORDER BY tank")}

    def nozzle_totals(self) -> list[dict[str, Any]]:
        """Each nozzle's electronic totals as last read (`updated_at`), with its last sale
        that carried totals and its last totals alarm (`totals_mismatch`: a sale that did not
        match them; `missed_sale`: totals that moved with no sale), by pump and nozzle."""
        totals = self._rows("SELECT * FROM nozzle_totals ORDER BY pump, nozzle")
        for row in totals:
            sale = self._rows(
                "SELECT id, ended_at, recorded_at, volume, amount, total_volume_before,"
                " total_volume_after, total_amount_before, total_amount_after FROM sales"
                " WHERE pump = ? AND nozzle = ? AND total_volume_after IS NOT NULL"
                " ORDER BY id DESC LIMIT 1",
                (row["pump"], row["nozzle"]),
            )
            alarm = self._rows(
                "SELECT id, kind, severity, message, raised_at, cleared_at FROM alarms"
                " WHERE pump = ? AND nozzle = ? AND kind IN ('totals_mismatch', 'missed_sale')"
                " ORDER BY id DESC LIMIT 1",
                (row["pump"], row["nozzle"]),
            )
            row["last_sale"] = sale[0] if sale else None
            row["last_alarm"] = alarm[0] if alarm else None
        return totals

    def shifts(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The shifts, oldest first (without their totals)."""
        return self._newest("SELECT * FROM shifts", (), "id", limit)

    def shift(self, shift_id: int | None = None) -> dict[str, Any] | None:
        """One shift with its nozzles' totals at opening and closing (`open_totals`,
        `close_totals`); without an id the open shift, else the last one; None if none."""
        if shift_id is None:
            found = self._rows(
                "SELECT * FROM shifts ORDER BY closed_at IS NULL DESC, id DESC LIMIT 1"
            )
        else:
            found = self._rows("SELECT * FROM shifts WHERE id = ?", (shift_id,))
        if not found:
            return None
        shift = found[0]
        for moment in ("open", "close"):
            shift[f"{moment}_totals"] = self._rows(
                "SELECT pump, nozzle, grade, volume, amount, source, read_at FROM shift_totals"
                " WHERE shift = ? AND moment = ? ORDER BY pump, nozzle",
                (shift["id"], moment),
            )
        return shift

    def period_rows(self, start: str, end: str) -> dict[str, list[dict[str, Any]]]:
        """What a report of the time from `start` to `end` (ISO) reads, coarsely: rows of the
        UTC dates around it (the caller cuts the period out by time). Sales carry the source
        of their authorization (`authorized_by`: auto, attendant, cloud; null without one);
        readings reach back one day for each tank's opening; alarms are those raised before
        the end and not cleared before the start; reconciliations are the kept days of the
        months the period touches, up to its last day."""
        first = (as_aware(start) - timedelta(days=1)).date().isoformat()
        last = (as_aware(end) + timedelta(days=1)).date().isoformat()
        span = (first, last)
        month = first[:8] + "01"
        return {
            "sales": self._rows(
                "SELECT s.*, a.source AS authorized_by FROM sales s LEFT JOIN authorizations a"
                " ON a.id = s.authorization_id WHERE substr(s.ended_at, 1, 10) BETWEEN ? AND ?"
                " ORDER BY s.id",
                span,
            ),
            "readings": self._rows(
                "SELECT tank, at, net_l, product_l, gross_l, fill_pct FROM tank_readings"
                " WHERE substr(at, 1, 10) BETWEEN ? AND ? ORDER BY tank, id",
                span,
            ),
            "deliveries": self._rows(
                "SELECT * FROM deliveries WHERE substr(end_at, 1, 10) BETWEEN ? AND ?"
                " ORDER BY end_at, id",
                span,
            ),
            "alarms": self._rows(
                "SELECT * FROM alarms WHERE substr(raised_at, 1, 10) <= ?"
                " AND (cleared_at IS NULL OR substr(cleared_at, 1, 10) >= ?) ORDER BY id",
                (last, first),
            ),
            "reconciliations": self._rows(
                "SELECT * FROM reconciliations WHERE day BETWEEN ? AND ? ORDER BY day, tank",
                (month, last),
            ),
        }

    def _newest(
        self, sql: str, params: tuple[Any, ...], order: str, limit: int | None
    ) -> list[dict[str, Any]]:
        if limit is None:
            return self._rows(f"{sql} ORDER BY {order}", params)
        rows = self._rows(f"{sql} ORDER BY {order} DESC LIMIT ?", (*params, limit))
        rows.reverse()
        return rows


def open_read_only(path: Path | str) -> sqlite3.Connection:
    """A read-only connection to a store file, for tools that must not change it.

    WAL lets it read while the daemon writes. A missing file is an error here, never a new
    empty database.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreMissingError(
            f"no database at {path}: check [store].path in the config", path=path
        )
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise faults.translate(exc, path, doing="read") from exc
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        db.close()
        raise faults.translate(exc, path, doing="read") from exc
    return db
