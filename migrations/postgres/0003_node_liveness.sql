-- When each render node was last heard from, shared by the orchestrator
-- instances of a farm.
--
-- Not events: heartbeats are not part of the history. Each instance keeps
-- liveness in memory and writes what it heard here every tick, so that an
-- instance a node does not talk to neither ends that node's live leases nor
-- waits forever on a node that fell silent. Only ever moves forward.
CREATE TABLE node_liveness (
    node_id uuid PRIMARY KEY,
    last_seen timestamptz NOT NULL
);
