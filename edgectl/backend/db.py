"""The ingest worker's PostgreSQL side: store a batch once by msg_id, keep the watermarks and
gaps, and pick the acks and replays that are due. psycopg 3, async.

Every worker of a group runs the same code against the same tables; what keeps them from
stepping on each other is PostgreSQL's row locks:

- a batch locks the `watermarks` row of each (station, stream) it touches, in sorted order
  (so two workers cannot deadlock), before it looks at `seqs`; contiguity and gaps of a
  stream are therefore computed by one transaction at a time, whichever worker got which
  message of it;
- acks, replays and probes are picked with ``FOR UPDATE SKIP LOCKED`` and marked as sent in
  the same transaction, so one worker sends each, and a worker killed before it sent them
  leaves them to be picked again when their retry time comes.

Nothing is acknowledged (neither the broker's PUBACK nor the station's `ack`) before the
transaction that stored it committed: that is the caller's rule, and `ingest` returns only
after the commit.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from importlib import resources
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from edgectl.backend.verify import Verdict
from edgectl.cloud.contract import GUARANTEED_STREAMS, SEQ_MAX

__all__ = ["Answer", "Database", "DueCommand", "IngestStats", "MessageFault"]

_SCHEMA_LOCK: Final = 0x6564_6765  # "edge": one worker at a time creates schema and tables
_REPLAY_BACKOFF_MAX_S: Final = 300.0
_PICK_LIMIT: Final = 500

# Errors that belong to one message (a value PostgreSQL will not take): it goes to rejects.
MessageFault: Final = (psycopg.errors.DataError, psycopg.errors.IntegrityError)


@dataclass
class IngestStats:
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    answers: list[Answer] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Answer:
    """A result that may answer one of our commands: handled after the batch committed."""

    cmd_id: str
    status: str
    code: str


@dataclass(frozen=True, slots=True)
class DueCommand:
    """An ack or a replay a worker has taken on to send (already recorded in `commands`)."""

    cmd_id: str
    station: str
    type: str  # ack | replay
    stream: str
    seq: int = 0
    from_seq: int = 0
    to_seq: int = 0


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _ts(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class Database:
    """One async connection in the worker's schema. Use ``await Database.open(…)``."""

    def __init__(self, conn: psycopg.AsyncConnection[dict[str, Any]], worker: str) -> None:
        self.conn = conn
        self.worker = worker
        self._known_stations: set[str] = set()

    @classmethod
    async def open(cls, dsn: str, schema: str, worker: str) -> Database:
        conn = await psycopg.AsyncConnection.connect(
            dsn, row_factory=dict_row, application_name=f"edgectl ingest {worker}"[:63]
        )
        try:
            # CREATE … IF NOT EXISTS is not safe against a concurrent creator (a unique
            # violation on the catalogue): workers of a pool starting together take turns.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            await conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
            await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        return cls(conn, worker)

    async def close(self) -> None:
        await self.conn.close()

    async def create_tables(self) -> None:
        ddl = resources.files("edgectl.backend").joinpath("schema.sql").read_text("utf-8")
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            await self.conn.execute(ddl.encode())

    # ------------------------------------------------------------------ ingest

    async def ingest(self, batch: Sequence[Verdict]) -> IngestStats:
        """Store a batch in one transaction; returns after the commit. A message PostgreSQL
        refuses (`MessageFault`) is retried alone and, if it fails alone, rejected."""
        await self._meet(batch)
        stats = IngestStats()
        try:
            async with self.conn.transaction():
                await self._apply(batch, stats)
            return stats
        except MessageFault:
            pass
        stats = IngestStats()
        for verdict in batch:
            try:
                async with self.conn.transaction():
                    await self._apply([verdict], stats)
            except MessageFault as exc:
                refused = Verdict(
                    verdict.topic,
                    verdict.payload,
                    f"PostgreSQL refused it: {str(exc).splitlines()[0]}",
                    station=verdict.station,
                    kind=verdict.kind,
                    seq=verdict.seq,
                    msg_id=verdict.msg_id,
                )
                async with self.conn.transaction():
                    await self._apply([refused], stats)
        return stats

    async def _meet(self, batch: Sequence[Verdict]) -> None:
        """Create the rows of stations not seen before, in a transaction of their own (so the
        batch itself only ever locks rows that exist, in one order)."""
        new = sorted({v.station for v in batch if v.station} - self._known_stations)
        if not new:
            return
        async with self.conn.transaction(), self.conn.cursor() as cur:
            for station in new:
                await cur.execute(
                    "INSERT INTO stations (station) VALUES (%s) ON CONFLICT DO NOTHING", (station,)
                )
                await cur.executemany(
                    "INSERT INTO watermarks (station, stream) VALUES (%s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [(station, stream) for stream in GUARANTEED_STREAMS],
                )
        self._known_stations.update(new)

    async def _apply(self, batch: Sequence[Verdict], stats: IngestStats) -> None:
        async with self.conn.cursor() as cur:
            await self._apply_with(cur, batch, stats)

    async def _apply_with(
        self, cur: psycopg.AsyncCursor[Any], batch: Sequence[Verdict], stats: IngestStats
    ) -> None:
        keys = sorted({(v.station, v.kind) for v in batch if v.slot and v.station and v.kind})
        # Heartbeats first (station rows, sorted), then the watermarks (sorted): one lock order.
        beats = {
            v.station: v.body["data"]
            for v in batch
            if v.ok and v.kind == "heartbeat" and v.station and v.body
        }
        for station in sorted(beats):
            await cur.execute(
                "UPDATE stations SET last_heartbeat_at = clock_timestamp(), uptime_s = %s,"
                " outbox_depth = %s WHERE station = %s",
                (beats[station]["uptime_s"], beats[station]["outbox_depth"], station),
            )
        marks: dict[tuple[str, str], dict[str, Any]] = {}
        for station, stream in keys:
            await cur.execute(
                "SELECT * FROM watermarks WHERE station = %s AND stream = %s FOR UPDATE",
                (station, stream),
            )
            row = await cur.fetchone()
            assert row is not None, "created by _meet"
            marks[(station, stream)] = row
        touched: set[tuple[str, str]] = set()
        seen: set[tuple[str, str]] = set()
        for v in batch:
            if not v.ok:
                await self._reject(cur, v)
                stats.rejected += 1
                if v.slot and v.station and v.kind and v.seq is not None:
                    await cur.execute(
                        "INSERT INTO seqs (station, stream, seq, state, msg_id)"
                        " VALUES (%s, %s, %s, 'rejected', %s) ON CONFLICT DO NOTHING",
                        (v.station, v.kind, v.seq, v.msg_id),
                    )
                    touched.add((v.station, v.kind))
                continue
            if v.kind == "heartbeat":
                continue
            assert v.body is not None and v.station is not None and v.kind is not None
            if not v.slot:  # latest-value state: stored once, no sequence
                if await self._event(cur, v):
                    stats.stored += 1
                else:
                    stats.duplicates += 1
                continue
            key = (v.station, v.kind)
            assert v.seq is not None and v.msg_id is not None
            await cur.execute(
                "SELECT state, msg_id FROM seqs WHERE station = %s AND stream = %s AND seq = %s",
                (v.station, v.kind, v.seq),
            )
            slot = await cur.fetchone()
            if slot is not None and slot["state"] == "stored":
                if slot["msg_id"] == v.msg_id:
                    stats.duplicates += 1
                else:
                    await self._reject(
                        cur,
                        v,
                        f"seq {v.seq} of {v.kind} is held by message {slot['msg_id']}: a "
                        "rebuilt station store? (the next ack tells)",
                    )
                    stats.rejected += 1
                    await cur.execute(
                        "UPDATE watermarks SET suspect_at = clock_timestamp()"
                        " WHERE station = %s AND stream = %s",
                        key,
                    )
                    # The answer to our own ack may itself be such a message (a rebuilt
                    # store's result stream starts again at 1): it still answers, else the
                    # ack that would tell of the rebuild is never heard.
                    answer = await self._own_answer(cur, v)
                    if answer is not None:
                        stats.answers.append(answer)
                continue
            if not await self._event(cur, v):
                stats.duplicates += 1  # known by msg_id from before a store rebuild
                continue
            await self._typed(cur, v)
            await cur.execute(
                "INSERT INTO seqs (station, stream, seq, state, msg_id)"
                " VALUES (%s, %s, %s, 'stored', %s) ON CONFLICT (station, stream, seq)"
                " DO UPDATE SET state = 'stored', msg_id = EXCLUDED.msg_id",
                (v.station, v.kind, v.seq, v.msg_id),
            )
            stats.stored += 1
            touched.add(key)
            answer = await self._own_answer(cur, v)
            if answer is not None:
                stats.answers.append(answer)
            else:
                seen.add(key)
        for key in sorted(touched):
            await self._settle(cur, key, marks[key])
        for key in sorted(seen):
            await cur.execute(
                "UPDATE watermarks SET last_seen_at = clock_timestamp()"
                " WHERE station = %s AND stream = %s",
                key,
            )

    async def _own_answer(self, cur: psycopg.AsyncCursor[Any], v: Verdict) -> Answer | None:
        """The station's answer to one of our own acks or replays, if `v` is one."""
        if v.kind != "result" or v.body is None:
            return None
        data = v.body["data"]
        if not isinstance(data.get("cmd_id"), str):
            return None
        await cur.execute("SELECT 1 FROM commands WHERE cmd_id = %s", (data["cmd_id"],))
        if await cur.fetchone() is None:
            return None
        return Answer(data["cmd_id"], data["status"], data["code"])

    async def _event(self, cur: psycopg.AsyncCursor[Any], v: Verdict) -> bool:
        """Insert the raw event; False if its msg_id is already stored."""
        body = v.body
        assert body is not None
        await cur.execute(
            "INSERT INTO events (msg_id, station, kind, seq, version, topic, sent_at, worker,"
            " payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (msg_id) DO NOTHING RETURNING msg_id",
            (
                uuid.UUID(body["msg_id"]),
                v.station,
                v.kind,
                body["seq"],
                body["version"],
                v.topic,
                _ts(body["ts"]),
                self.worker,
                Jsonb(body),
            ),
        )
        return await cur.fetchone() is not None

    async def _typed(self, cur: psycopg.AsyncCursor[Any], v: Verdict) -> None:
        body = v.body
        assert body is not None
        d = body["data"]
        msg_id = uuid.UUID(body["msg_id"])
        if v.kind == "sale":
            await cur.execute(
                "INSERT INTO sales (msg_id, station, seq, sale_id, uid, pump, nozzle, grade,"
                " volume, amount, unit_price, currency, authorized_by, order_id, price_set_id,"
                " total_volume_before, total_amount_before, total_volume_after,"
                " total_amount_after, ended_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    msg_id,
                    v.station,
                    v.seq,
                    d["sale_id"],
                    d["uid"],
                    d["pump"],
                    d["nozzle"],
                    d["grade"],
                    _dec(d["volume"]),
                    _dec(d["amount"]),
                    _dec(d["unit_price"]),
                    d["currency"],
                    d["authorized_by"],
                    d["order_id"],
                    d["price_set_id"],
                    _dec(d["total_volume_before"]),
                    _dec(d["total_amount_before"]),
                    _dec(d["total_volume_after"]),
                    _dec(d["total_amount_after"]),
                    _ts(d["ended_at"]),
                ),
            )
        elif v.kind == "order":
            sale = d["sale"]
            await cur.execute(
                "INSERT INTO orders (msg_id, station, seq, order_id, pump, status, preset_type,"
                " preset_value, currency, reason, authorized_at, expires_at, sale_uid, at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (
                    msg_id,
                    v.station,
                    v.seq,
                    d["order_id"],
                    d["pump"],
                    d["status"],
                    d["preset"]["type"],
                    _dec(d["preset"]["value"]),
                    d["currency"],
                    d["reason"],
                    _ts(d["authorized_at"]),
                    _ts(d["expires_at"]),
                    sale["uid"] if sale else None,
                    _ts(body["ts"]),
                ),
            )
        elif v.kind == "alarm":
            await cur.execute(
                "INSERT INTO alarms (msg_id, station, seq, alarm_id, kind, severity, pump,"
                " nozzle, message, raised_at, cleared_at) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (
                    msg_id,
                    v.station,
                    v.seq,
                    d["alarm_id"],
                    d["kind"],
                    d["severity"],
                    d["pump"],
                    d["nozzle"],
                    d["message"],
                    _ts(d["raised_at"]),
                    _ts(d["cleared_at"]),
                ),
            )
        elif v.kind == "delivery":
            await cur.execute(
                "INSERT INTO deliveries (msg_id, station, seq, delivery_id, tank, source,"
                " start_at, end_at, start_volume, end_volume, delivered, delivered_tc,"
                " dispensed_during) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (
                    msg_id,
                    v.station,
                    v.seq,
                    d["delivery_id"],
                    d["tank"],
                    d["source"],
                    _ts(d["start_at"]),
                    _ts(d["end_at"]),
                    _dec(d["start_volume"]),
                    _dec(d["end_volume"]),
                    _dec(d["delivered"]),
                    _dec(d["delivered_tc"]),
                    _dec(d["dispensed_during"]),
                ),
            )

    async def _reject(
        self, cur: psycopg.AsyncCursor[Any], v: Verdict, reason: str | None = None
    ) -> None:
        digest = hashlib.sha256(v.topic.encode() + b"\n" + v.payload).hexdigest()
        await cur.execute(
            "INSERT INTO rejects (digest, topic, station, kind, seq, msg_id, reason, payload,"
            " worker) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                digest,
                v.topic,
                v.station,
                v.kind,
                v.seq,
                v.msg_id,
                reason or v.reason or "rejected",
                v.payload.decode("utf-8", "replace").replace("\x00", "\ufffd"),
                self.worker,
            ),
        )

    async def _settle(
        self, cur: psycopg.AsyncCursor[Any], key: tuple[str, str], mark: dict[str, Any]
    ) -> None:
        """Advance the contiguous watermark over `seqs` and make `gaps` the missing ranges
        between it and the highest seq held. The caller holds the watermark row's lock."""
        station, stream = key
        low = int(mark["contiguous_seq"])
        # The run that starts at low + 1 is where seq - row_number() stays equal to low.
        await cur.execute(
            "SELECT coalesce(max(seq), %(low)s) AS top FROM (SELECT seq, seq - row_number()"
            " OVER (ORDER BY seq) AS d FROM seqs WHERE station = %(s)s AND stream = %(t)s"
            " AND seq > %(low)s) run WHERE d = %(low)s",
            {"low": low, "s": station, "t": stream},
        )
        row = await cur.fetchone()
        contiguous = int(row["top"]) if row else low
        await cur.execute(
            "SELECT coalesce(max(seq), 0) AS top FROM seqs WHERE station = %s AND stream = %s",
            key,
        )
        row = await cur.fetchone()
        highest = max(int(row["top"]) if row else 0, contiguous)
        await cur.execute(
            "UPDATE watermarks SET contiguous_seq = %s, highest_seq = %s"
            " WHERE station = %s AND stream = %s",
            (contiguous, highest, station, stream),
        )
        mark["contiguous_seq"], mark["highest_seq"] = contiguous, highest
        missing: list[tuple[int, int]] = []
        if highest > contiguous:
            await cur.execute(
                "SELECT prev + 1 AS lo, seq - 1 AS hi FROM (SELECT seq, lag(seq, 1, %(low)s)"
                " OVER (ORDER BY seq) AS prev FROM seqs WHERE station = %(s)s AND stream = %(t)s"
                " AND seq > %(low)s) held WHERE seq > prev + 1 ORDER BY lo",
                {"low": contiguous, "s": station, "t": stream},
            )
            missing = [(int(r["lo"]), int(r["hi"])) for r in await cur.fetchall()]
        await self._regap(cur, key, missing)

    async def _regap(
        self,
        cur: psycopg.AsyncCursor[Any],
        key: tuple[str, str],
        missing: Sequence[tuple[int, int]],
        outcome: str = "filled",
    ) -> None:
        """Replace a stream's open gaps by `missing`; each new range keeps the age and replay
        count of the old ones it overlaps; an old one overlapping none is closed."""
        await cur.execute("DELETE FROM gaps WHERE station = %s AND stream = %s RETURNING *", key)
        old = list(await cur.fetchall())
        for lo, hi in missing:
            over = [g for g in old if g["from_seq"] <= hi and g["to_seq"] >= lo]
            await cur.execute(
                "INSERT INTO gaps (station, stream, from_seq, to_seq, first_seen,"
                " last_replay_requested, replays) VALUES (%s, %s, %s, %s,"
                " coalesce(%s, clock_timestamp()), %s, %s)",
                (
                    *key,
                    lo,
                    hi,
                    min((g["first_seen"] for g in over), default=None),
                    max(
                        (g["last_replay_requested"] for g in over if g["last_replay_requested"]),
                        default=None,
                    ),
                    max((g["replays"] for g in over), default=0),
                ),
            )
        closed = [
            g
            for g in old
            if not any(g["from_seq"] <= hi and g["to_seq"] >= lo for lo, hi in missing)
        ]
        if closed:
            await cur.executemany(
                "INSERT INTO gap_history (station, stream, from_seq, to_seq, first_seen,"
                " closed_at, replays, outcome) VALUES (%s, %s, %s, %s, %s, clock_timestamp(),"
                " %s, %s)",
                [
                    (
                        g["station"],
                        g["stream"],
                        g["from_seq"],
                        g["to_seq"],
                        g["first_seen"],
                        g["replays"],
                        outcome,
                    )
                    for g in closed
                ],
            )

    # ------------------------------------------------------------------ answers

    async def answered(self, answers: Iterable[Answer]) -> list[str]:
        """Apply the station's answers to our acks and replays; what happened, for the log."""
        notes: list[str] = []
        for answer in answers:
            async with self.conn.transaction(), self.conn.cursor() as cur:
                await cur.execute(
                    "UPDATE commands SET answered_at = clock_timestamp(), status = %s, code = %s"
                    " WHERE cmd_id = %s AND answered_at IS NULL RETURNING *",
                    (answer.status, answer.code, answer.cmd_id),
                )
                cmd = await cur.fetchone()
                if cmd is None:
                    continue  # answered before (a re-sent result), or not ours
                note = await self._answer(cur, cmd, answer.code)
                if note:
                    notes.append(note)
        return notes

    async def _answer(self, cur: psycopg.AsyncCursor[Any], cmd: dict[str, Any], code: str) -> str:
        station, stream = cmd["station"], cmd["stream"]
        key = (station, stream)
        await cur.execute(
            "SELECT * FROM watermarks WHERE station = %s AND stream = %s FOR UPDATE", key
        )
        mark = await cur.fetchone()
        if mark is None or mark["generation"] != cmd["generation"]:
            return ""  # about a store this station has since replaced
        if cmd["type"] == "ack":
            if code == "ok":
                await cur.execute(
                    "UPDATE watermarks SET acked_seq = greatest(acked_seq, %s),"
                    " acked_at = clock_timestamp(), suspect_at = NULL"
                    " WHERE station = %s AND stream = %s",
                    (cmd["seq"], station, stream),
                )
                return ""
            if code == "beyond_stream":
                await self._rebuilt(cur, station)
                return (
                    f"{station}: its store was rebuilt ({stream} is behind our ack): "
                    "watermarks forgotten"
                )
            return f"{station}: ack {stream} {cmd['seq']} answered {code}"
        # A replay. For a probe (past the top) beyond_stream means: nothing is missing.
        if code == "unknown" and cmd["purpose"] == "gap":
            await self._lost(cur, key, mark, int(cmd["from_seq"]), int(cmd["to_seq"]))
            return f"{station}: {stream} {cmd['from_seq']}..{cmd['to_seq']} given up by the station"
        if code == "beyond_stream" and cmd["purpose"] == "gap":
            await self._rebuilt(cur, station)
            return (
                f"{station}: its store was rebuilt ({stream} is behind our gap): "
                "watermarks forgotten"
            )
        return ""

    async def _lost(
        self,
        cur: psycopg.AsyncCursor[Any],
        key: tuple[str, str],
        mark: dict[str, Any],
        lo: int,
        hi: int,
    ) -> None:
        """The station holds none of lo..hi any more: what we lack of it is lost; the stream
        goes on past it."""
        hi = min(hi, int(mark["highest_seq"]))
        if hi < lo:
            return
        await cur.execute(
            "INSERT INTO seqs (station, stream, seq, state) SELECT %s, %s, n, 'lost'"
            " FROM generate_series(%s::bigint, %s::bigint) AS n ON CONFLICT DO NOTHING",
            (*key, lo, hi),
        )
        await cur.execute("SELECT * FROM gaps WHERE station = %s AND stream = %s", key)
        before = list(await cur.fetchall())
        await self._settle(cur, key, mark)
        await cur.execute("SELECT from_seq FROM gaps WHERE station = %s AND stream = %s", key)
        still = {r["from_seq"] for r in await cur.fetchall()}
        # _settle closed them as "filled"; say what really happened.
        for g in before:
            if g["from_seq"] not in still and lo <= g["from_seq"] <= hi:
                await cur.execute(
                    "UPDATE gap_history SET outcome = 'lost' WHERE station = %s AND stream = %s"
                    " AND from_seq = %s AND first_seen = %s",
                    (*key, g["from_seq"], g["first_seen"]),
                )

    async def _rebuilt(self, cur: psycopg.AsyncCursor[Any], station: str) -> None:
        """The station's store was rebuilt: its streams start again at 1. Forget what we
        counted of the old one (its events stay, by msg_id)."""
        await cur.execute(
            "SELECT stream FROM watermarks WHERE station = %s ORDER BY stream FOR UPDATE",
            (station,),
        )
        await cur.execute("DELETE FROM gaps WHERE station = %s RETURNING *", (station,))
        for g in await cur.fetchall():
            await cur.execute(
                "INSERT INTO gap_history (station, stream, from_seq, to_seq, first_seen,"
                " closed_at, replays, outcome) VALUES (%s, %s, %s, %s, %s, clock_timestamp(),"
                " %s, 'store_rebuilt')",
                (station, g["stream"], g["from_seq"], g["to_seq"], g["first_seen"], g["replays"]),
            )
        await cur.execute("DELETE FROM seqs WHERE station = %s", (station,))
        await cur.execute(
            "UPDATE watermarks SET contiguous_seq = 0, highest_seq = 0, ack_sent_seq = 0,"
            " ack_sent_at = NULL, acked_seq = 0, acked_at = NULL, probe_at = NULL,"
            " suspect_at = NULL, generation = generation + 1 WHERE station = %s",
            (station,),
        )

    # ------------------------------------------------------------------ what to send

    async def due(
        self,
        *,
        ack_every: int,
        ack_interval_s: float,
        answer_timeout_s: float,
        gap_grace_s: float,
        replay_interval_s: float,
        quiet_s: float,
        probe_interval_s: float,
    ) -> list[DueCommand]:
        """The acks, gap replays and probes due now, recorded as sent by this worker. The
        caller sends them after this returned (committed)."""
        out: list[DueCommand] = []
        rows: list[tuple[Any, ...]] = []
        async with self.conn.transaction(), self.conn.cursor() as cur:
            # Acks: enough new messages, or old enough; for the result stream only when more
            # than the answer to our last ack of it came (else each ack of the result stream
            # would call for the next one: one result stays outstanding, as the contract says);
            # and again when an ack went unanswered, or a seq was claimed twice (the answer
            # tells whether the store was rebuilt).
            await cur.execute(
                "SELECT station, stream, contiguous_seq, generation FROM watermarks WHERE"
                " (contiguous_seq > ack_sent_seq AND (contiguous_seq - ack_sent_seq >= %(every)s"
                "  OR (coalesce(ack_sent_at, '-infinity') < clock_timestamp() - %(interval)s"
                "      AND (stream <> 'result' OR contiguous_seq - ack_sent_seq > 1))))"
                " OR (acked_seq < ack_sent_seq"
                "     AND ack_sent_at < clock_timestamp() - %(timeout)s)"
                " OR (suspect_at IS NOT NULL"
                "     AND coalesce(ack_sent_at, '-infinity') < suspect_at)"
                " ORDER BY station, stream LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
                {
                    "every": ack_every,
                    "interval": _interval(ack_interval_s),
                    "timeout": _interval(answer_timeout_s),
                    "limit": _PICK_LIMIT,
                },
            )
            for m in await cur.fetchall():
                cmd = DueCommand(
                    _cmd_id(), m["station"], "ack", m["stream"], seq=m["contiguous_seq"]
                )
                out.append(cmd)
                rows.append((cmd, "ack", m["generation"]))
                await cur.execute(
                    "UPDATE watermarks SET ack_sent_seq = contiguous_seq,"
                    " ack_sent_at = clock_timestamp() WHERE station = %s AND stream = %s",
                    (m["station"], m["stream"]),
                )
            # Gap replays: after the grace, then with a doubling wait.
            await cur.execute(
                "SELECT g.station, g.stream, g.from_seq, g.to_seq, w.generation FROM gaps g"
                " JOIN watermarks w USING (station, stream)"
                " WHERE g.first_seen < clock_timestamp() - %(grace)s"
                " AND (g.last_replay_requested IS NULL OR g.last_replay_requested"
                "      < clock_timestamp() - least(%(every)s * power(2, least(g.replays, 8)),"
                "                                  %(cap)s) * interval '1 second')"
                " ORDER BY g.station, g.stream, g.from_seq LIMIT %(limit)s"
                " FOR UPDATE OF g SKIP LOCKED",
                {
                    "grace": _interval(gap_grace_s),
                    "every": replay_interval_s,
                    "cap": _REPLAY_BACKOFF_MAX_S,
                    "limit": _PICK_LIMIT,
                },
            )
            for g in await cur.fetchall():
                cmd = DueCommand(
                    _cmd_id(),
                    g["station"],
                    "replay",
                    g["stream"],
                    from_seq=g["from_seq"],
                    to_seq=g["to_seq"],
                )
                out.append(cmd)
                rows.append((cmd, "gap", g["generation"]))
                await cur.execute(
                    "UPDATE gaps SET last_replay_requested = clock_timestamp(),"
                    " replays = replays + 1 WHERE station = %s AND stream = %s AND from_seq = %s",
                    (g["station"], g["stream"], g["from_seq"]),
                )
            # Probes: a quiet stream with no gap, once per quiet spell and then every
            # probe_interval (ten times that for a stream never seen), finds a lost last
            # message (and a stream whose every message was lost).
            await cur.execute(
                "SELECT station, stream, contiguous_seq, generation FROM watermarks"
                " WHERE contiguous_seq = highest_seq"
                " AND coalesce(last_seen_at, created_at) < clock_timestamp() - %(quiet)s"
                " AND (probe_at IS NULL OR probe_at < coalesce(last_seen_at, '-infinity')"
                "      OR probe_at < clock_timestamp() - %(every)s"
                "         * CASE WHEN highest_seq = 0 THEN 10 ELSE 1 END)"
                " ORDER BY station, stream LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
                {
                    "quiet": _interval(quiet_s),
                    "every": _interval(probe_interval_s),
                    "limit": _PICK_LIMIT,
                },
            )
            for m in await cur.fetchall():
                cmd = DueCommand(
                    _cmd_id(),
                    m["station"],
                    "replay",
                    m["stream"],
                    from_seq=int(m["contiguous_seq"]) + 1,
                    to_seq=SEQ_MAX,
                )
                out.append(cmd)
                rows.append((cmd, "probe", m["generation"]))
                await cur.execute(
                    "UPDATE watermarks SET probe_at = clock_timestamp()"
                    " WHERE station = %s AND stream = %s",
                    (m["station"], m["stream"]),
                )
            if rows:
                await cur.executemany(
                    "INSERT INTO commands (cmd_id, station, type, purpose, stream, seq, from_seq,"
                    " to_seq, generation, sent_at, worker) VALUES (%s, %s, %s, %s, %s, %s, %s,"
                    " %s, %s, clock_timestamp(), %s)",
                    [
                        (
                            c.cmd_id,
                            c.station,
                            c.type,
                            purpose,
                            c.stream,
                            c.seq if c.type == "ack" else None,
                            c.from_seq if c.type == "replay" else None,
                            c.to_seq if c.type == "replay" else None,
                            generation,
                            self.worker,
                        )
                        for c, purpose, generation in rows
                    ],
                )
        return out


def _interval(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)


def _cmd_id() -> str:
    return f"bk-{uuid.uuid4().hex}"
