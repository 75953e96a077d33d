-- The reference ingest worker's PostgreSQL tables (edgectl/backend, docs/mqtt.md "The reference
-- consumer"). Run in the worker's own schema (search_path), under an advisory lock, by every
-- worker at start: every statement is idempotent. Money and volumes are numeric, which keeps
-- the places the dispenser showed ("40.00" stays 40.00).

-- Every stored station message, once, by msg_id: the raw envelope as it came.
CREATE TABLE IF NOT EXISTS events (
    msg_id      uuid PRIMARY KEY,
    station     text        NOT NULL,
    kind        text        NOT NULL,          -- the stream of a guaranteed kind
    seq         bigint      NOT NULL,          -- 0 outside the sequences
    version     bigint,                        -- latest-value kinds only
    topic       text        NOT NULL,
    sent_at     timestamptz NOT NULL,          -- the envelope's ts: when the station recorded it
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker      text        NOT NULL,
    payload     jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS events_station_kind_seq ON events (station, kind, seq);

CREATE TABLE IF NOT EXISTS sales (
    msg_id              uuid PRIMARY KEY REFERENCES events,
    station             text        NOT NULL,
    seq                 bigint      NOT NULL,
    sale_id             bigint      NOT NULL,
    uid                 text        NOT NULL,
    pump                integer     NOT NULL,
    nozzle              integer     NOT NULL,
    grade               text        NOT NULL,
    volume              numeric     NOT NULL,
    amount              numeric     NOT NULL,
    unit_price          numeric     NOT NULL,
    currency            text        NOT NULL,
    authorized_by       text        NOT NULL,
    order_id            text,
    price_set_id        text,
    total_volume_before numeric,
    total_amount_before numeric,
    total_volume_after  numeric,
    total_amount_after  numeric,
    ended_at            timestamptz NOT NULL,
    UNIQUE (station, uid)
);

-- Every step of every pay-at-pump order (accepted, authorized, fuelling, then a final one).
CREATE TABLE IF NOT EXISTS orders (
    msg_id        uuid PRIMARY KEY REFERENCES events,
    station       text        NOT NULL,
    seq           bigint      NOT NULL,
    order_id      text        NOT NULL,
    pump          integer     NOT NULL,
    status        text        NOT NULL,
    preset_type   text        NOT NULL,
    preset_value  numeric     NOT NULL,
    currency      text        NOT NULL,
    reason        text,
    authorized_at timestamptz,
    expires_at    timestamptz,
    sale_uid      text,
    at            timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_station_order ON orders (station, order_id);

-- Alarms as raised and as cleared: one row per message (an alarm_id has one or two).
CREATE TABLE IF NOT EXISTS alarms (
    msg_id     uuid PRIMARY KEY REFERENCES events,
    station    text        NOT NULL,
    seq        bigint      NOT NULL,
    alarm_id   bigint      NOT NULL,
    kind       text        NOT NULL,
    severity   text        NOT NULL,
    pump       integer,
    nozzle     integer,
    message    text        NOT NULL,
    raised_at  timestamptz NOT NULL,
    cleared_at timestamptz
);
CREATE INDEX IF NOT EXISTS alarms_station_alarm ON alarms (station, alarm_id);

CREATE TABLE IF NOT EXISTS deliveries (
    msg_id           uuid PRIMARY KEY REFERENCES events,
    station          text        NOT NULL,
    seq              bigint      NOT NULL,
    delivery_id      bigint      NOT NULL,
    tank             integer     NOT NULL,
    source           text        NOT NULL,
    start_at         timestamptz NOT NULL,
    end_at           timestamptz NOT NULL,
    start_volume     numeric     NOT NULL,
    end_volume       numeric     NOT NULL,
    delivered        numeric     NOT NULL,
    delivered_tc     numeric     NOT NULL,
    dispensed_during numeric
);

-- Which seqs of each (station, stream) the backend holds: stored, rejected (it came, failed
-- the schemas, and is in `rejects`) or lost (the station no longer holds it: replay answered
-- `unknown`). Contiguity is computed over this table; a rebuilt store empties it for its
-- station.
CREATE TABLE IF NOT EXISTS seqs (
    station text   NOT NULL,
    stream  text   NOT NULL,
    seq     bigint NOT NULL,
    state   text   NOT NULL CHECK (state IN ('stored', 'rejected', 'lost')),
    msg_id  text,
    PRIMARY KEY (station, stream, seq)
);

-- One row per (station, guaranteed stream). Its row lock serializes every worker's work on
-- that stream.
CREATE TABLE IF NOT EXISTS watermarks (
    station        text        NOT NULL,
    stream         text        NOT NULL,
    contiguous_seq bigint      NOT NULL DEFAULT 0,  -- every seq up to it is held
    highest_seq    bigint      NOT NULL DEFAULT 0,
    ack_sent_seq   bigint      NOT NULL DEFAULT 0,  -- the last ack sent
    ack_sent_at    timestamptz,
    acked_seq      bigint      NOT NULL DEFAULT 0,  -- the last ack the station answered ok
    acked_at       timestamptz,
    last_seen_at   timestamptz,                     -- the last message (not our own answers)
    probe_at       timestamptz,                     -- the last replay probe past the top
    suspect_at     timestamptz,                     -- a new msg_id at a held seq: re-ack
    generation     integer     NOT NULL DEFAULT 1,  -- + 1 at each rebuilt store
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (station, stream)
);

-- Open gaps only: missing seqs between contiguous_seq and highest_seq, as ranges.
CREATE TABLE IF NOT EXISTS gaps (
    station               text        NOT NULL,
    stream                text        NOT NULL,
    from_seq              bigint      NOT NULL,
    to_seq                bigint      NOT NULL,
    first_seen            timestamptz NOT NULL,
    last_replay_requested timestamptz,
    replays               integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (station, stream, from_seq)
);

-- Gaps once closed: filled (the messages came), lost (the station had given them up) or
-- store_rebuilt (the station started its streams again).
CREATE TABLE IF NOT EXISTS gap_history (
    station    text        NOT NULL,
    stream     text        NOT NULL,
    from_seq   bigint      NOT NULL,
    to_seq     bigint      NOT NULL,
    first_seen timestamptz NOT NULL,
    closed_at  timestamptz NOT NULL,
    replays    integer     NOT NULL,
    outcome    text        NOT NULL
);

-- Messages that failed the contract's schemas (or PostgreSQL): kept, visible, never retried.
CREATE TABLE IF NOT EXISTS rejects (
    digest      text PRIMARY KEY,                  -- sha256 of topic and payload: once each
    topic       text        NOT NULL,
    station     text,
    kind        text,
    seq         bigint,
    msg_id      text,
    reason      text        NOT NULL,
    payload     text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker      text        NOT NULL
);

-- The ack and replay commands the workers sent, and the station's answers.
CREATE TABLE IF NOT EXISTS commands (
    cmd_id      text PRIMARY KEY,
    station     text        NOT NULL,
    type        text        NOT NULL,              -- ack | replay
    purpose     text        NOT NULL,              -- ack | gap | probe
    stream      text        NOT NULL,
    seq         bigint,
    from_seq    bigint,
    to_seq      bigint,
    generation  integer     NOT NULL,
    sent_at     timestamptz NOT NULL,
    worker      text        NOT NULL,
    answered_at timestamptz,
    status      text,
    code        text
);
CREATE INDEX IF NOT EXISTS commands_unanswered ON commands (sent_at) WHERE answered_at IS NULL;

CREATE TABLE IF NOT EXISTS stations (
    station           text PRIMARY KEY,
    first_seen        timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_heartbeat_at timestamptz,
    uptime_s          bigint,
    outbox_depth      integer
);
