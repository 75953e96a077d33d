"""The outbox as the publisher sees it: what waits, in which order, what was taken."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgectl.errors import StoreUnwritableError
from edgectl.store.core import StoreCore
from edgectl.store.tx import PRIORITY_EVENT, PRIORITY_SALE, PRIORITY_TELEMETRY


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    stream: str
    priority: int
    payload: str
    created_at: str
    key: str | None
    topic: str | None
    retain: int
    correlation: bytes | None
    # Contract 1.1: the row's place in its guaranteed stream, or the version of its key of a
    # latest-value state (exactly one of the two is set).
    stream_seq: int | None = None
    version: int | None = None


_ROW_COLUMNS = (
    "seq, stream, priority, payload, created_at, key, topic, retain, correlation,"
    " stream_seq, version"
)


class Outbox(StoreCore):
    """The outbox read by the publisher: rows in turn by priority, deleted or marked sent once
    safe, acknowledged and replayed by stream."""

    def queue_event(
        self,
        stream: str,
        payload: dict[str, Any],
        *,
        priority: int = PRIORITY_EVENT,
        key: str | None = None,
        retain: bool = False,
    ) -> int:
        with self.transaction() as tx:
            message = tx.messages.shaped(stream, payload, key=key, retain=retain)
            return tx.outbox(message, priority, self._clock())

    def outbox_depth(self) -> int:
        """Rows waiting to be sent (not those the broker took that wait for the backend)."""
        return int(
            self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
        )

    def outbox_oldest(self) -> str | None:
        row = self._db.execute("SELECT created_at FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def outbox_after(self, cursors: dict[int, int], limit: int) -> list[OutboxRow]:
        """The next rows of each priority class past its cursor, interleaved.

        Each class is read in seq order; the classes take turns, more important first, so a
        backlog of old events replays in order while newer live state still gets through.
        """
        per_class: list[list[OutboxRow]] = []
        for priority in (PRIORITY_SALE, PRIORITY_EVENT, PRIORITY_TELEMETRY):
            cur = self._db.execute(
                f"SELECT {_ROW_COLUMNS} FROM outbox WHERE priority = ? AND seq > ?"
                " AND sent_at IS NULL ORDER BY seq LIMIT ?",
                (priority, cursors.get(priority, 0), limit),
            )
            per_class.append([OutboxRow(*row) for row in cur.fetchall()])
        merged: list[OutboxRow] = []
        while len(merged) < limit and any(per_class):
            for rows in per_class:
                if rows and len(merged) < limit:
                    merged.append(rows.pop(0))
        return merged

    def outbox_delete(self, seqs: list[int]) -> None:
        """Delete rows the broker acknowledged. On a store that cannot write they are kept
        and deleted with the next acknowledged ones: the publisher can do nothing better with
        the error, and a row not deleted is at worst sent again, with its msg_id."""
        seqs = self._undeleted + list(seqs)
        if not seqs:
            return
        try:
            with self.transaction() as tx:
                for start in range(0, len(seqs), 500):
                    chunk = seqs[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    tx.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", tuple(chunk))
        except StoreUnwritableError:
            self._undeleted = sorted(set(seqs))
            return
        self._undeleted = []

    def outbox_sent(self, seqs: list[int]) -> None:
        """With delivery = "backend": rows the broker acknowledged. A guaranteed row is kept,
        marked sent, until the backend acknowledges its seq (`outbox_ack`); a latest-value row
        is done. Kept for the next call when the store cannot write, as `outbox_delete`."""
        seqs = self._unsent + list(seqs)
        if not seqs:
            return
        now = self._clock()
        try:
            with self.transaction() as tx:
                for start in range(0, len(seqs), 500):
                    chunk = tuple(seqs[start : start + 500])
                    marks = ",".join("?" * len(chunk))
                    tx.execute(
                        f"DELETE FROM outbox WHERE seq IN ({marks}) AND stream_seq IS NULL", chunk
                    )
                    tx.execute(
                        f"UPDATE outbox SET sent_at = ? WHERE seq IN ({marks})", (now, *chunk)
                    )
        except StoreUnwritableError:
            self._unsent = sorted(set(seqs))
            return
        self._unsent = []

    def outbox_forget_sent(self) -> int:
        """With delivery = "broker": rows kept for a backend's ack under delivery = "backend"
        are done (the broker took them); how many were deleted."""
        with self.transaction() as tx:
            return tx.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL").rowcount

    def outbox_ack(self, stream: str, seq: int) -> dict[str, int]:
        """The backend holds every message of `stream` up to `seq`: delete them, raise the
        stream's watermark. `last_seq`, `acked_seq` (after), `removed`; an ack past the
        stream's last seq changes nothing (`ahead`: 1) — the backend counts another store."""
        with self.transaction() as tx:
            row = tx.execute(
                "SELECT last_seq, acked_seq FROM outbox_streams WHERE stream = ? AND key = ''",
                (stream,),
            ).fetchone()
            last, acked = (0, 0) if row is None else (int(row[0]), int(row[1]))
            if seq > last:
                return {"last_seq": last, "acked_seq": acked, "removed": 0, "ahead": 1}
            removed = tx.execute(
                "DELETE FROM outbox WHERE stream = ? AND stream_seq <= ?", (stream, seq)
            ).rowcount
            if seq > acked:
                tx.execute(
                    "UPDATE outbox_streams SET acked_seq = ? WHERE stream = ? AND key = ''",
                    (seq, stream),
                )
                acked = seq
            return {"last_seq": last, "acked_seq": acked, "removed": removed, "ahead": 0}

    def outbox_replay(self, stream: str, first: int, last: int) -> dict[str, int]:
        """Send the held messages of `stream` from seq `first` to `last` again (they become
        waiting, with their msg_ids). `asked` (the range cut at the stream's last seq),
        `held` (how many of those are still here and now waiting again), `last_seq`."""
        with self.transaction() as tx:
            row = tx.execute(
                "SELECT last_seq FROM outbox_streams WHERE stream = ? AND key = ''", (stream,)
            ).fetchone()
            top = 0 if row is None else int(row[0])
            end = min(last, top)
            asked = max(0, end - first + 1)
            held = 0
            if asked:
                held = tx.execute(
                    "SELECT COUNT(*) FROM outbox WHERE stream = ? AND stream_seq BETWEEN ? AND ?",
                    (stream, first, end),
                ).fetchone()[0]
                tx.execute(
                    "UPDATE outbox SET sent_at = NULL WHERE stream = ?"
                    " AND stream_seq BETWEEN ? AND ? AND sent_at IS NOT NULL",
                    (stream, first, end),
                )
            return {"asked": asked, "held": int(held), "last_seq": top}
