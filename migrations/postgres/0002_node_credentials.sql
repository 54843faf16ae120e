-- Node credentials: the HMAC secrets render nodes sign their requests with.
--
-- Not events: secrets never enter the event log (node.registered and
-- node.secret_rotated carry the key id only). A node may hold several keys
-- during a rotation; a revoked key signs nothing.
CREATE TABLE node_credentials (
    node_id uuid NOT NULL,
    -- the id carried by the X-FlatRender-Key-Id header and by the events
    key_id uuid NOT NULL,
    -- 32 random bytes, the HMAC-SHA256 key
    secret bytea NOT NULL CHECK (octet_length(secret) >= 32),
    -- the operator's name for the node
    name text NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,
    PRIMARY KEY (node_id, key_id)
);
