-- How far each follower of the log beside the store has gone (issue 13):
-- the relay to RabbitMQ (name `amqp:<exchange>`: the global position
-- of the last event the broker confirmed, advanced only after the confirm
-- (at-least-once: a crash between the confirm and this write publishes the
-- batch again; consumers deduplicate by message_id = event id)) and the
-- webhook dispatcher (name `webhooks`: the last event it turned into
-- notification requests). Written
-- with compare-and-set on the old position by the one holder of that
-- follower's advisory lock, on the lock's own connection. Not events.
CREATE TABLE follower_checkpoints (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
