"""Which store a database file and the -wal beside it belong to, read from their own bytes.

A -wal names no database: SQLite applies its frames by page number to whatever file it lies
beside, so the -wal of another store copied next to this one replays that store's pages onto
it (and a clean stop writes them in for good). So each edgectl store has a random store id in
its header (`PRAGMA application_id`, bytes 68-71 of page 1, checkpointed into the main file
right after the store is created), and every write transaction of edgectl rewrites page 1
(`Store.transaction`): each committed transaction in a -wal edgectl wrote holds its store's
page 1, and with it the store's id. A -wal whose committed frames hold another id, or no page
1 at all, is not this store's. `meta` keeps the id as text and the station id from the config.

Everything here only reads; a refusal changes nothing on disk. It reads the files before this
process opens them with SQLite: closing a descriptor of a database drops every POSIX lock the
process holds on it, SQLite's own included (the daemon opens its store once).
"""

from __future__ import annotations

import secrets
import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

from edgectl.errors import StoreError, StoreForeignError, StoreNewerSchemaError
from edgectl.store import faults

SQLITE_HEADER = b"SQLite format 3\x00"
_APPLICATION_ID_AT = 68
# A -wal's magic number says in which byte order its checksums are computed.
_WAL_MAGIC = {0x377F0682: "<", 0x377F0683: ">"}
_WAL_HEADER = 32
_FRAME_HEADER = 24


def wal_file(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


def mint_store_id() -> int:
    """A new random store id (never 0, which means "none yet")."""
    while True:
        value = secrets.randbits(32)
        if value:
            return value


def application_id(store_id: int) -> int:
    """The store id as `PRAGMA application_id` takes it (a signed 32-bit integer)."""
    return store_id - (1 << 32) if store_id >= 1 << 31 else store_id


def store_id_text(store_id: int) -> str:
    return f"{store_id:08x}"


def header_store_id(db: Path) -> int:
    """The store id in the main file's header (0: none yet, or an empty file). Raises
    StoreCorruptError when the file is not an SQLite database."""
    with db.open("rb") as handle:
        head = handle.read(100)
    if not head:
        return 0
    if len(head) < 100 or not head.startswith(SQLITE_HEADER):
        raise faults.corrupt(db, "no SQLite header", not_a_database=True)
    return int.from_bytes(head[_APPLICATION_ID_AT : _APPLICATION_ID_AT + 4], "big")


@dataclass(frozen=True, slots=True)
class WalContent:
    """What SQLite would apply from a -wal: its committed frames, and the store id in the
    newest committed copy of page 1 (None when no committed frame is page 1)."""

    committed_frames: int
    store_id: int | None


NO_WAL = WalContent(0, None)


def read_wal(wal: Path) -> WalContent:
    """The frames of a -wal that SQLite would replay, as SQLite finds them: a valid header,
    then frames with the header's salts and an unbroken checksum chain, up to the last commit
    frame. A missing, empty or invalid -wal replays nothing."""
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return NO_WAL
    if len(data) < _WAL_HEADER:
        return NO_WAL
    magic, _version, page_size, _seq, salt1, salt2, check1, check2 = struct.unpack_from(">8I", data)
    order = _WAL_MAGIC.get(magic)
    if order is None or page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        return NO_WAL
    sums = _checksum(data, 0, 24, (0, 0), order)
    if sums != (check1, check2):
        return NO_WAL
    committed, store_id, page_one = 0, None, None
    frames, offset = 0, _WAL_HEADER
    while offset + _FRAME_HEADER + page_size <= len(data):
        page, commit, frame_salt1, frame_salt2, sum1, sum2 = struct.unpack_from(">6I", data, offset)
        if page == 0 or (frame_salt1, frame_salt2) != (salt1, salt2):
            break
        sums = _checksum(data, offset, 8, sums, order)
        sums = _checksum(data, offset + _FRAME_HEADER, page_size, sums, order)
        if sums != (sum1, sum2):
            break
        frames += 1
        if page == 1:
            at = offset + _FRAME_HEADER + _APPLICATION_ID_AT
            page_one = int.from_bytes(data[at : at + 4], "big")
        if commit:
            committed, store_id = frames, page_one
        offset += _FRAME_HEADER + page_size
    return WalContent(committed, store_id)


def _checksum(
    data: bytes, start: int, length: int, sums: tuple[int, int], order: str
) -> tuple[int, int]:
    """SQLite's -wal checksum over data[start:start+length], continuing from `sums`."""
    words = struct.unpack_from(f"{order}{length // 4}I", data, start)
    s1, s2 = sums
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2


def check_wal(db: Path, header_id: int | None = None) -> None:
    """Refuse a -wal beside `db` that is not its store's own (StoreForeignError)."""
    wal = wal_file(db)
    content = read_wal(wal)
    if content.committed_frames == 0:
        return
    own = header_store_id(db) if header_id is None else header_id
    if own == 0:
        return  # a store without identity yet: `inspect` judges it by its station
    if content.store_id == own:
        return
    if content.store_id is None:
        whose = (
            f"{content.committed_frames} committed page(s), none of them carrying this store's"
            f" id {store_id_text(own)}"
        )
    else:
        whose = f"store id {store_id_text(content.store_id)}, not {store_id_text(own)}"
    raise foreign_wal(db, whose)


def foreign_wal(db: Path, whose: str) -> StoreForeignError:
    wal = wal_file(db)
    return StoreForeignError(
        f"{wal} holds changes of another store ({whose}): move {wal.name} away (keep it: it"
        f" may be that store's unsaved data) and start again; {db.name} itself is untouched",
        path=db,
    )


def foreign_station(db: Path, theirs: str, ours: str) -> StoreForeignError:
    return StoreForeignError(
        f"{db} belongs to station {theirs}, not to this station {ours} ([station].id): restore"
        " this station's own backup with `edgectl db restore FILE`, or move the file away to"
        " start with an empty store",
        path=db,
    )


def inspect(db: Path, *, station_id: str | None, schema_versions: int) -> None:
    """Every check a store must pass before it is opened for writing, all read-only: the
    -wal is its own, the schema is one this edgectl knows, the pages are sound, the station
    is this one. Raises the typed StoreError naming the cause; changes nothing."""
    try:
        _inspect(db, station_id, schema_versions)
    except OSError as exc:
        raise faults.translate(exc, db, doing="read") from exc


def _inspect(db: Path, station_id: str | None, schema_versions: int) -> None:
    if not db.exists():
        return
    header_id = header_store_id(db)
    check_wal(db, header_id)
    replayed = read_wal(wal_file(db)).committed_frames > 0
    if db.stat().st_size == 0 and not replayed:
        return  # an empty file: a new store
    # With nothing in a -wal to replay the main file is the whole store: read it as an
    # immutable file, so that not even an empty -wal or -shm is created beside it.
    uri = f"{db.resolve().as_uri()}?mode=ro" + ("" if replayed else "&immutable=1")
    meta: dict[str, str] = {}
    try:
        ro = sqlite3.connect(uri, uri=True, timeout=10.0)
        try:
            version = int(ro.execute("PRAGMA user_version").fetchone()[0])
            if version > schema_versions:
                raise StoreNewerSchemaError(
                    f"{db} has schema version {version}, newer than this edgectl knows"
                    f" ({schema_versions}): upgrade edgectl, or restore a backup this version"
                    " wrote",
                    path=db,
                )
            problems = [str(row[0]) for row in ro.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise faults.corrupt(db, "; ".join(problems[:3]))
            combined_id = int(ro.execute("PRAGMA application_id").fetchone()[0]) & 0xFFFFFFFF
            has_meta = ro.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            if has_meta:
                meta = {
                    str(key): str(value)
                    for key, value in ro.execute(
                        "SELECT key, value FROM meta WHERE key IN ('store_id', 'station_id')"
                    )
                }
        finally:
            ro.close()
    except StoreError:
        raise
    except sqlite3.Error as exc:
        raise faults.translate(exc, db, doing="read") from exc
    recorded = meta.get("store_id")
    if recorded is not None and recorded != store_id_text(combined_id):
        if read_wal(wal_file(db)).committed_frames:
            raise foreign_wal(db, f"its pages say store {recorded}, its header {combined_id:08x}")
        raise faults.corrupt(db, f"store id {recorded} in meta, {combined_id:08x} in the header")
    theirs = meta.get("station_id")
    if station_id is not None and theirs is not None and theirs != station_id:
        raise foreign_station(db, theirs, station_id)
