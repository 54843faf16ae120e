-- Node liveness per (node, orchestrator instance): each instance writes
-- when it heard each node and reads the other instances' rows only, so
-- that a node whose heartbeats go to one instance and whose other requests
-- go to another (a round-robin balancer) is never judged silent by either.
-- One time per node could not tell "another instance heard it" from "I
-- heard it myself" (the flaw this replaces: an instance that heard a claim
-- requeued a lease the other instance kept renewing). Not events: the old
-- rows are dropped, and the next tick of each instance writes them again.
DROP TABLE node_liveness;
CREATE TABLE node_liveness (
    node_id uuid NOT NULL,
    instance_id uuid NOT NULL,
    last_seen timestamptz NOT NULL,
    PRIMARY KEY (node_id, instance_id)
);
