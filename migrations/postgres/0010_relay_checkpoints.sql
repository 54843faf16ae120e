-- How far each relay has published the log (issue 13): the global position
-- of the last event the broker confirmed, advanced only after the confirm
-- (at-least-once: a crash between the confirm and this write publishes the
-- batch again; consumers deduplicate by message_id = event id). Written
-- with compare-and-set on the old position by the one relay holding the
-- relay's advisory lock, on the lock's own connection. Not events.
CREATE TABLE relay_checkpoints (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
