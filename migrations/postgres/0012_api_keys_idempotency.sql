-- The reseller API (issue 13).
--
-- API keys' secrets: the server checks each request's HMAC with the key's
-- secret, so it must read it back; it is kept here sealed under the master
-- key (see eventstore/src/vault.rs), bound to its row, never in the log
-- (identity.api_key.issued.v1 carries the key's id, prefix and hash). The
-- key's state (active, revoked, expired) is its owner's identity stream.
CREATE TABLE api_key_secrets (
    api_key_id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    user_id uuid NOT NULL,
    secret bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Idempotency-Key of reseller POSTs: a request reserves its key (status
-- NULL) before it runs, and keeps its answer once answered; a retry with
-- the same key and request answers the kept answer.
CREATE TABLE idempotency_keys (
    tenant_id uuid NOT NULL,
    key text NOT NULL,
    request_hash text NOT NULL,
    status integer,
    content_type text,
    body bytea,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- Nonces of signed reseller requests, shared by every instance so that a
-- request replayed to another instance behind a balancer is refused too;
-- a nonce is kept until its request's timestamp leaves the window.
CREATE TABLE spent_nonces (
    scope text NOT NULL,
    nonce text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (scope, nonce)
);
