-- Snapshots of a follower's in-memory view beside the log (issue 14): the
-- scheduler writes its view (name `scheduler`) with the global position it
-- covers and the id and hash-chain link of the event at that position, so
-- that a start reads the snapshot and replays only the newer events. A
-- snapshot is verified before use (its body's SHA-256, its format, and the
-- event at its position must still carry that id and hash); one that does
-- not verify is ignored and the view is rebuilt from the log. Deleting a
-- row only makes the next start slower. Not events.
CREATE TABLE view_snapshots (
    name TEXT PRIMARY KEY,
    format INTEGER NOT NULL,
    position INTEGER NOT NULL,
    event_id BLOB NOT NULL,           -- UUID, 16 bytes
    event_hash BLOB NOT NULL,
    body BLOB NOT NULL,
    body_sha256 BLOB NOT NULL,
    written_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
