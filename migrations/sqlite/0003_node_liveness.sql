-- When each render node was last heard from, shared by the orchestrator
-- instances of a farm (see the PostgreSQL migration). Not events.
CREATE TABLE node_liveness (
    node_id BLOB PRIMARY KEY,         -- UUID
    last_seen TEXT NOT NULL           -- RFC 3339, microseconds, UTC (orders as text)
);
