-- FlatRender event store, SQLite backend (the embedded default).
--
-- Same envelope as the PostgreSQL backend. SQLite runs one write transaction
-- at a time, and an append assigns its positions inside its write
-- transaction, so positions become visible in commit order: a reader that
-- follows global_position can never pass over a later-committing event.
-- The hash chain is computed by the store in Rust with the same formula as
-- PostgreSQL's append statement: hash = SHA-256(prev_hash || be64(stream_version) || digest).

CREATE TABLE events (
    -- strictly increasing; AUTOINCREMENT never reuses a position
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id BLOB NOT NULL,           -- UUID, 16 bytes
    stream_id BLOB NOT NULL,          -- UUID, 16 bytes
    stream_type TEXT NOT NULL,
    stream_version INTEGER NOT NULL CHECK (stream_version > 0),
    event_type TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    schema_version INTEGER NOT NULL CHECK (schema_version > 0),
    tenant_id BLOB,                   -- NULL for farm-wide streams such as nodes
    payload TEXT NOT NULL,            -- JSON
    metadata TEXT NOT NULL,           -- JSON: correlation_id, causation_id, actor, trace_id
    recorded_at TEXT NOT NULL,        -- RFC 3339, microseconds, UTC
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

CREATE INDEX events_tenant_position_idx ON events (tenant_id, global_position);

-- The log is append-only.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
