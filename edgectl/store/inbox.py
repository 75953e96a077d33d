"""The command inbox: each command persisted before it acts, its result stored and queued."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from edgectl.errors import StoreUnwritableError
from edgectl.store import faults
from edgectl.store.core import StoreCore
from edgectl.store.tx import PRIORITY_SALE


class Inbox(StoreCore):
    """The inbox table: a command seen once, its result kept for a repeat."""

    def command_result(self, cmd_id: str) -> dict[str, Any] | None:
        """The stored outcome of a command already received, or None if it is new."""
        rows = self.query("SELECT * FROM inbox WHERE cmd_id = ?", (cmd_id,))
        return rows[0] if rows else None

    def peek_command(self, cmd_id: str) -> dict[str, Any] | None:
        """`command_result` for the event-loop thread: its own read-only connection sees only
        committed rows and never waits for the store thread (WAL), so a new command costs no
        store-thread hop. The commands before it are committed: they are handled one at a
        time, and the `INSERT OR IGNORE` that persists one settles any race with a restart."""
        try:
            row = self._peek.execute("SELECT * FROM inbox WHERE cmd_id = ?", (cmd_id,)).fetchone()
        except sqlite3.Error as exc:
            raise faults.translate(exc, self.path, doing="read") from exc
        return None if row is None else dict(row)

    def receive_command(self, cmd_id: str, type_: str, payload: str) -> bool:
        """Persist a command before anything acts on it; False when the id was seen before."""
        with self.transaction() as tx:
            cur = tx.execute(
                "INSERT OR IGNORE INTO inbox (cmd_id, type, payload, received_at)"
                " VALUES (?, ?, ?, ?)",
                (cmd_id, type_, payload, self._clock()),
            )
            return cur.rowcount == 1

    def finish_command(
        self,
        cmd_id: str,
        result: dict[str, Any],
        *,
        topic: str | None = None,
        correlation: bytes | None = None,
        payload: str = "{}",
    ) -> None:
        """Store a command's result and queue it for the cloud, in one transaction.

        `payload` is the command, kept when it was not persisted before (refused before it
        acted): a repeat of it is then compared with it, as for any other command."""
        now = self._clock()
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO inbox (cmd_id, type, payload, received_at, status, code, message,"
                " result, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (cmd_id) DO UPDATE SET status = excluded.status,"
                " code = excluded.code, message = excluded.message, result = excluded.result,"
                " completed_at = excluded.completed_at",
                (
                    cmd_id,
                    result.get("type", ""),
                    payload,
                    now,
                    result.get("status"),
                    result.get("code"),
                    result.get("message"),
                    json.dumps(result, separators=(",", ":")),
                    now,
                ),
            )
            message = tx.messages.shaped("result", result)
            tx.outbox(message, PRIORITY_SALE, now, topic=topic, correlation=correlation)

    def queue_result(
        self, result: dict[str, Any], *, topic: str | None = None, correlation: bytes | None = None
    ) -> None:
        """Queue a result without storing it in the inbox (a command that could not be parsed)."""
        with self.transaction() as tx:
            message = tx.messages.shaped("result", result)
            tx.outbox(message, PRIORITY_SALE, self._clock(), topic=topic, correlation=correlation)

    def purge_inbox(self, before: str) -> int:
        """Forget answered commands received before `before`. Housekeeping: on a store that
        cannot write it purges nothing (0) and the next purge catches up."""
        try:
            with self.transaction() as tx:
                return tx.execute(
                    "DELETE FROM inbox WHERE received_at < ? AND completed_at IS NOT NULL",
                    (before,),
                ).rowcount
        except StoreUnwritableError:
            return 0
