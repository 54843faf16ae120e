-- Node credentials: the HMAC secrets render nodes sign their requests with.
-- Not events: secrets never enter the event log (node.registered and
-- node.secret_rotated carry the key id only). A revoked key signs nothing.
CREATE TABLE node_credentials (
    node_id BLOB NOT NULL,            -- UUID
    key_id BLOB NOT NULL,             -- UUID, sent as X-FlatRender-Key-Id
    secret BLOB NOT NULL CHECK (length(secret) >= 32),
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,         -- RFC 3339
    revoked_at TEXT,
    PRIMARY KEY (node_id, key_id)
);
