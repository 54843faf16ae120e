-- FlatRender event store, PostgreSQL backend.
--
-- `events` is the only source of truth: an append-only log of every change.
-- Every row is one event with the envelope of SPEC §1. Rows are never updated
-- or deleted (a trigger refuses it); read models are projections elsewhere.
--
-- Gap safety. A reader that follows `global_position` must never pass over an
-- event whose transaction commits after a higher position became visible.
-- So positions are not taken from a sequence: an event's position is its
-- writing transaction's id (xid8, never reused, increasing) times 65536 plus
-- its index in the append. Positions are therefore ordered like transaction
-- ids, and a reader only reads positions below `xmin * 65536`, where xmin is
-- the oldest transaction still running in its snapshot: every transaction
-- below xmin has ended, and every one still running will write only positions
-- above anything the reader can see. Positions are strictly increasing and
-- unique, not dense. One append per transaction (the store runs each append as
-- its own statement); at most 65536 events per append.

CREATE TABLE events (
    -- xid * 65536 + index in the append (see "Gap safety" above)
    global_position bigint PRIMARY KEY,
    -- UUID v4 chosen by the writer; appending the same id twice is a no-op
    event_id uuid NOT NULL,
    -- the aggregate instance (tenant, render job, node, file, identity, endpoint)
    stream_id uuid NOT NULL,
    -- the aggregate kind, e.g. `render_job`; one per stream
    stream_type text NOT NULL,
    -- 1, 2, 3, ... with no gaps within a stream
    stream_version bigint NOT NULL CHECK (stream_version > 0),
    -- e.g. `render.job.submitted`; with schema_version it names a catalog row
    event_type text NOT NULL,
    -- e.g. `render.job.submitted.v1`, from contracts/events/README.md
    routing_key text NOT NULL,
    schema_version integer NOT NULL CHECK (schema_version > 0),
    -- the owning tenant; NULL for farm-wide streams such as nodes
    tenant_id uuid,
    -- the event's payload, valid against contracts/events/<domain>.yaml
    payload jsonb NOT NULL,
    -- correlation_id, causation_id, actor, trace_id
    metadata jsonb NOT NULL,
    -- when the store recorded it (microseconds, UTC)
    recorded_at timestamptz NOT NULL,
    -- per-stream hash chain: hash = SHA-256(prev_hash || int8(stream_version) || digest),
    -- digest = SHA-256 of the canonical encoding of the envelope (see eventstore/src/hashing.rs)
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

-- Auditors replay one tenant's history in order.
CREATE INDEX events_tenant_position_idx ON events (tenant_id, global_position);

-- The log is append-only.
CREATE FUNCTION fr_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only' USING ERRCODE = 'FR003';
END $$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION fr_events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION fr_events_append_only();

-- Appends are one statement, eventstore::postgres::APPEND_SQL: it reads the
-- stream head, checks the expected version and the owner, chains the hashes
-- and inserts; a concurrent append to the same stream loses on
-- events_stream_version_key.
