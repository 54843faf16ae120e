-- Password verifiers of public-API users (argon2id, PHC strings), set by
-- `flatrender user create --password-stdin`. Not events: a verifier in
-- the log would be readable by every auditor and open to offline guessing
-- (identity.user.registered records the user; the password never enters
-- the log), as node secrets live in node_credentials. E-mail addresses are
-- stored lower case and are unique among users with a password.
CREATE TABLE user_passwords (
    user_id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL,
    email TEXT NOT NULL UNIQUE,
    verifier TEXT NOT NULL,
    set_at TIMESTAMPTZ NOT NULL
);
