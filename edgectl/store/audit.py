"""The audit of manual actions: each one recorded before it is carried out, then its outcome."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edgectl.store.core import StoreCore


class Audit(StoreCore):
    """The audit table."""

    def audit_requested(
        self,
        action: str,
        args: Mapping[str, Any],
        *,
        client_user: str | None,
        peer_uid: int | None,
        peer_user: str | None,
        peer_pid: int | None,
    ) -> int:
        """Record a manual action before it is carried out; its outcome follows."""
        with self.transaction() as tx:
            cur = tx.execute(
                "INSERT INTO audit (action, args, client_user, peer_uid, peer_user, peer_pid,"
                " requested_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    action,
                    json.dumps(dict(args), sort_keys=True, default=str),
                    client_user,
                    peer_uid,
                    peer_user,
                    peer_pid,
                    self._clock(),
                ),
            )
            return int(cur.lastrowid or 0)

    def audit_finished(self, audit_id: int, outcome: str, message: str | None) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE audit SET outcome = ?, message = ?, finished_at = ? WHERE id = ?",
                (outcome, message, self._clock(), audit_id),
            )
