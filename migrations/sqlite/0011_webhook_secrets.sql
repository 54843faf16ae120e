-- Webhook endpoints' signing secrets (issue 13): the server signs every
-- notification with its endpoint's secret, so it must read it back; it is
-- kept here sealed under the master key (see eventstore/src/vault.rs),
-- never in the log (notification.endpoint.registered.v1 carries the key id
-- only).
CREATE TABLE webhook_secrets (
    endpoint_id BLOB NOT NULL,
    secret_key_id BLOB NOT NULL,
    secret BLOB NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (endpoint_id, secret_key_id)
);
