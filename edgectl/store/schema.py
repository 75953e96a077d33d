"""SQLite schema of the station store, as numbered migrations applied at open."""

from __future__ import annotations

# Each entry moves the database from user_version i to i + 1. Never edit a shipped
# migration: add a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE authorizations (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        pump           INTEGER NOT NULL,
        source         TEXT NOT NULL,
        state          TEXT NOT NULL,
        nozzles        TEXT NOT NULL,
        preset_amount  TEXT,
        preset_volume  TEXT,
        order_id       TEXT,
        requested_by   TEXT,
        reason         TEXT,
        sale_id        INTEGER,
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL
    );
    CREATE INDEX authorizations_open ON authorizations(pump)
        WHERE state IN ('requested', 'authorized', 'fuelling');

    CREATE TABLE sales (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        uid                 TEXT NOT NULL UNIQUE,
        pump                INTEGER NOT NULL,
        nozzle              INTEGER NOT NULL,
        grade               TEXT NOT NULL,
        volume              TEXT NOT NULL,
        amount              TEXT NOT NULL,
        unit_price          TEXT NOT NULL,
        currency            TEXT NOT NULL,
        authorization_id    INTEGER UNIQUE,
        price_set_id        TEXT,
        total_volume_before TEXT,
        total_volume_after  TEXT,
        total_amount_before TEXT,
        total_amount_after  TEXT,
        state               TEXT NOT NULL DEFAULT 'payable',
        ended_at            TEXT NOT NULL,
        recorded_at         TEXT NOT NULL
    );
    CREATE INDEX sales_by_time ON sales(recorded_at);
    CREATE INDEX sales_by_pump ON sales(pump, recorded_at);

    CREATE TABLE nozzle_totals (
        pump       INTEGER NOT NULL,
        nozzle     INTEGER NOT NULL,
        volume     TEXT NOT NULL,
        amount     TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (pump, nozzle)
    );

    CREATE TABLE alarms (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        kind       TEXT NOT NULL,
        severity   TEXT NOT NULL,
        pump       INTEGER,
        nozzle     INTEGER,
        message    TEXT NOT NULL,
        detail     TEXT NOT NULL DEFAULT '{}',
        raised_at  TEXT NOT NULL,
        cleared_at TEXT
    );

    CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        stream     TEXT NOT NULL,
        priority   INTEGER NOT NULL,
        payload    TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    """,
    """
    ALTER TABLE outbox ADD COLUMN key TEXT;
    ALTER TABLE outbox ADD COLUMN topic TEXT;
    ALTER TABLE outbox ADD COLUMN retain INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN correlation BLOB;
    CREATE INDEX outbox_by_class ON outbox(priority, seq);
    CREATE INDEX outbox_by_key ON outbox(stream, key) WHERE key IS NOT NULL;

    CREATE TABLE inbox (
        cmd_id       TEXT PRIMARY KEY,
        type         TEXT NOT NULL,
        payload      TEXT NOT NULL,
        received_at  TEXT NOT NULL,
        status       TEXT,
        code         TEXT,
        message      TEXT,
        result       TEXT,
        completed_at TEXT
    );
    CREATE INDEX inbox_by_time ON inbox(received_at);

    CREATE TABLE orders (
        order_id         TEXT PRIMARY KEY,
        cmd_id           TEXT NOT NULL,
        pump             INTEGER NOT NULL,
        status           TEXT NOT NULL,
        preset_type      TEXT NOT NULL,
        preset_value     TEXT NOT NULL,
        currency         TEXT NOT NULL,
        grades           TEXT NOT NULL DEFAULT '[]',
        nozzles          TEXT NOT NULL DEFAULT '[]',
        payment_method   TEXT,
        expires_at       TEXT,
        authorization_id INTEGER,
        sale_id          INTEGER,
        reason           TEXT,
        authorized_at    TEXT,
        cleared_at       TEXT,
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL
    );
    CREATE INDEX orders_open ON orders(pump)
        WHERE status IN ('accepted', 'authorized', 'fuelling');

    ALTER TABLE authorizations ADD COLUMN expires_at TEXT;
    ALTER TABLE sales ADD COLUMN order_id TEXT;
    ALTER TABLE sales ADD COLUMN cleared_at TEXT;

    CREATE TABLE price_sets (
        price_set_id TEXT PRIMARY KEY,
        prices       TEXT NOT NULL,
        effective_at TEXT,
        received_at  TEXT NOT NULL,
        activated_at TEXT
    );
    CREATE TABLE price_applied (
        price_set_id TEXT NOT NULL,
        pump         INTEGER NOT NULL,
        status       TEXT NOT NULL,
        reason       TEXT,
        applied_at   TEXT NOT NULL,
        PRIMARY KEY (price_set_id, pump)
    );
    """,
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO meta (key, value) VALUES ('epoch', lower(hex(randomblob(8))));
    """,
    # The manual actions taken through the control socket (authorize, stop, price): who
    # asked (the name the CLI sent, and the uid the kernel vouches for), what, and how it went.
    """
    CREATE TABLE audit (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        action       TEXT NOT NULL,
        args         TEXT NOT NULL DEFAULT '{}',
        client_user  TEXT,
        peer_uid     INTEGER,
        peer_user    TEXT,
        peer_pid     INTEGER,
        outcome      TEXT NOT NULL DEFAULT 'requested',
        message      TEXT,
        requested_at TEXT NOT NULL,
        finished_at  TEXT
    );
    CREATE INDEX audit_by_time ON audit(requested_at);
    """,
    # Tank gauging (issue 4): the latest reading per tank plus a throttled history, deliveries
    # (one per gauge, tank and start, so a console's repeated list is taken once), and the
    # daily reconciliation. Volumes are decimal text in litres; times are UTC ISO text.
    """
    CREATE TABLE tank_latest (
        tank         INTEGER PRIMARY KEY,
        at           TEXT NOT NULL,
        height_mm    TEXT NOT NULL,
        water_mm     TEXT NOT NULL,
        temperature_c TEXT NOT NULL,
        gross_l      TEXT NOT NULL,
        water_l      TEXT NOT NULL,
        product_l    TEXT NOT NULL,
        net_l        TEXT NOT NULL,
        ullage_l     TEXT NOT NULL,
        fill_pct     TEXT NOT NULL
    );
    CREATE TABLE tank_readings (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        tank         INTEGER NOT NULL,
        at           TEXT NOT NULL,
        height_mm    TEXT NOT NULL,
        water_mm     TEXT NOT NULL,
        temperature_c TEXT NOT NULL,
        gross_l      TEXT NOT NULL,
        water_l      TEXT NOT NULL,
        product_l    TEXT NOT NULL,
        net_l        TEXT NOT NULL,
        ullage_l     TEXT NOT NULL,
        fill_pct     TEXT NOT NULL
    );
    CREATE INDEX tank_readings_by_time ON tank_readings(tank, at);
    CREATE TABLE deliveries (
        id                  INTEGER PRIMARY KEY AUTOINCREMENT,
        gauge               TEXT NOT NULL,
        tank                INTEGER NOT NULL,
        source              TEXT NOT NULL,
        start_at            TEXT NOT NULL,
        end_at              TEXT NOT NULL,
        start_volume        TEXT NOT NULL,
        end_volume          TEXT NOT NULL,
        start_volume_tc     TEXT NOT NULL,
        end_volume_tc       TEXT NOT NULL,
        dispensed_during    TEXT,
        dispensed_during_tc TEXT,
        delivered           TEXT NOT NULL,
        delivered_tc        TEXT NOT NULL,
        recorded_at         TEXT NOT NULL,
        UNIQUE (gauge, tank, start_at)
    );
    CREATE TABLE reconciliations (
        tank                 INTEGER NOT NULL,
        day                  TEXT NOT NULL,
        opening              TEXT NOT NULL,
        deliveries           TEXT NOT NULL,
        sales                TEXT NOT NULL,
        closing              TEXT NOT NULL,
        variance             TEXT NOT NULL,
        cumulative_variance  TEXT NOT NULL,
        period_throughput    TEXT NOT NULL,
        flagged              INTEGER NOT NULL,
        recorded_at          TEXT NOT NULL,
        PRIMARY KEY (tank, day)
    );
    CREATE INDEX alarms_open_by_kind ON alarms(kind) WHERE cleared_at IS NULL;
    """,
    # Device history (issue 11.2): each pump's, line's and gauge's state, its transitions
    # and errors (bounded per device), and its error counts per 10 minutes (kept 48 h).
    """
    CREATE TABLE device_state (
        device        TEXT PRIMARY KEY,
        kind          TEXT NOT NULL,
        online        INTEGER,
        fault         TEXT,
        reason        TEXT,
        last_seen_at  TEXT,
        offline_since TEXT,
        online_since  TEXT,
        updated_at    TEXT NOT NULL
    );
    CREATE TABLE device_events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        device  TEXT NOT NULL,
        at      TEXT NOT NULL,
        event   TEXT NOT NULL,
        kind    TEXT,
        count   INTEGER NOT NULL DEFAULT 1,
        message TEXT
    );
    CREATE INDEX device_events_by_device ON device_events(device, id);
    CREATE TABLE device_counts (
        device TEXT NOT NULL,
        bucket TEXT NOT NULL,
        kind   TEXT NOT NULL,
        count  INTEGER NOT NULL,
        PRIMARY KEY (device, bucket, kind)
    );
    """,
    # Cloud contract 1.1 (issue 12.2, 12.5): a gap-free sequence per guaranteed stream and a
    # version per key of latest-value state, both counted in outbox_streams in the same
    # transaction as the row; sent_at marks a row the broker took that waits for the backend's
    # ack ([cloud] delivery = "backend"). Rows queued before the upgrade are numbered in order.
    """
    ALTER TABLE outbox ADD COLUMN stream_seq INTEGER;
    ALTER TABLE outbox ADD COLUMN version INTEGER;
    ALTER TABLE outbox ADD COLUMN sent_at TEXT;
    CREATE TABLE outbox_streams (
        stream    TEXT NOT NULL,
        key       TEXT NOT NULL DEFAULT '',
        last_seq  INTEGER NOT NULL,
        acked_seq INTEGER NOT NULL DEFAULT 0,
        dropped   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (stream, key)
    );
    UPDATE outbox SET stream_seq = numbered.n FROM (
        SELECT seq AS row_seq, ROW_NUMBER() OVER (PARTITION BY stream ORDER BY seq) AS n
        FROM outbox WHERE stream NOT IN ('pump_state', 'prices', 'inventory')
    ) AS numbered WHERE outbox.seq = numbered.row_seq;
    UPDATE outbox SET version = 1 WHERE stream IN ('pump_state', 'prices', 'inventory');
    INSERT INTO outbox_streams (stream, key, last_seq)
        SELECT stream, '', MAX(stream_seq) FROM outbox WHERE stream_seq IS NOT NULL
        GROUP BY stream;
    INSERT INTO outbox_streams (stream, key, last_seq)
        SELECT stream, COALESCE(key, ''), 1 FROM outbox WHERE version IS NOT NULL
        GROUP BY stream, COALESCE(key, '');
    CREATE UNIQUE INDEX outbox_by_stream_seq ON outbox(stream, stream_seq)
        WHERE stream_seq IS NOT NULL;
    CREATE INDEX outbox_waiting ON outbox(priority, seq) WHERE sent_at IS NULL;
    """,
    # Shifts (issue 16.2): each opened and closed with `edgectl shift open|close`, at most one
    # open at a time; at each end every nozzle's electronic totals as then known, and where
    # they came from: asked of the pump ("pump") or the store's last ("store"); null figures
    # for a nozzle whose totals were never read.
    """
    CREATE TABLE shifts (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        opened_at    TEXT NOT NULL,
        opened_by    TEXT,
        closed_at    TEXT,
        closed_by    TEXT
    );
    CREATE UNIQUE INDEX shifts_one_open ON shifts((closed_at IS NULL)) WHERE closed_at IS NULL;
    CREATE TABLE shift_totals (
        shift   INTEGER NOT NULL REFERENCES shifts(id),
        moment  TEXT NOT NULL CHECK (moment IN ('open', 'close')),
        pump    INTEGER NOT NULL,
        nozzle  INTEGER NOT NULL,
        grade   TEXT,
        volume  TEXT,
        amount  TEXT,
        source  TEXT NOT NULL,
        read_at TEXT,
        PRIMARY KEY (shift, moment, pump, nozzle)
    );
    """,
    # The dispenser's own number for a stored sale (IFSF TR_Seq_Nb, issue 15.4), part of the
    # sale's identity: looked up among the pump's recent sales (store/sales.py). And
    # `reset_pending`: 1 from the sale's commit until its pump was reset after it (or
    # authorized again): the pump may still hold that fill, so the same figures read there
    # with no totals to name them are that sale.
    """
    ALTER TABLE sales ADD COLUMN dispenser_ref TEXT;
    CREATE INDEX sales_by_dispenser_ref ON sales(pump, dispenser_ref)
        WHERE dispenser_ref IS NOT NULL;
    ALTER TABLE sales ADD COLUMN reset_pending INTEGER;
    CREATE INDEX sales_reset_pending ON sales(pump) WHERE reset_pending IS NOT NULL;
    """,
)
