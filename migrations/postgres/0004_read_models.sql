-- Read models: projections of the event log (crate `projections`). Nothing
-- here is a source of truth: `flatrender projections rebuild` empties these
-- tables and replays the log into them. Each projection's rows and its
-- checkpoint are written in one transaction, so a row never reflects an
-- event twice or misses one. Ids are lower-case hyphenated UUID text and
-- times RFC 3339 UTC text with microseconds (they order as text), the same
-- on both backends so that one digest compares them.

CREATE TABLE projection_checkpoints (
    name TEXT PRIMARY KEY,            -- renders | nodes | files
    position BIGINT NOT NULL,         -- global position of the last event applied (0: none)
    last_recorded_at TEXT             -- when the store recorded that event
);
INSERT INTO projection_checkpoints (name, position) VALUES ('renders', 0), ('nodes', 0), ('files', 0);

-- projection `renders`: renders, their tasks, their current frame outputs,
-- tenants and their usage per day.
CREATE TABLE rm_renders (
    render_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,             -- active | paused | completed | failed | cancelled
    paused BIGINT NOT NULL,           -- 1 while paused (a retried failed render returns to it)
    priority BIGINT NOT NULL,
    renderer TEXT NOT NULL,
    scene_file_id TEXT NOT NULL,
    frame_start BIGINT NOT NULL,
    frame_end BIGINT NOT NULL,
    chunk_size BIGINT NOT NULL,
    spec TEXT NOT NULL,               -- the submission (JSON): resolution, samples, requirements, max retries
    tasks_total BIGINT NOT NULL,
    tasks_done BIGINT NOT NULL,
    tasks_failed BIGINT NOT NULL,
    tasks_running BIGINT NOT NULL,    -- leased or rendering
    frames_total BIGINT NOT NULL,
    frames_done BIGINT NOT NULL,      -- frames with an output under their task's current lease, or of a completed task
    frames_failed BIGINT NOT NULL,    -- frames of failed tasks
    cost_minor BIGINT NOT NULL,       -- charged so far (minor units)
    uncovered_minor BIGINT NOT NULL,  -- render time the balance could not cover
    render_seconds BIGINT NOT NULL,
    last_error TEXT,
    submitted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT,
    last_position BIGINT NOT NULL     -- the last event that changed the row
);
CREATE INDEX rm_renders_tenant_submitted ON rm_renders (tenant_id, submitted_at, render_id);
CREATE INDEX rm_renders_tenant_status ON rm_renders (tenant_id, status, submitted_at);

CREATE TABLE rm_tasks (
    task_id TEXT PRIMARY KEY,
    render_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    task_index BIGINT NOT NULL,
    frame_start BIGINT NOT NULL,
    frame_end BIGINT NOT NULL,
    status TEXT NOT NULL,             -- queued | leased | running | completed | failed | cancelled
    attempts BIGINT NOT NULL,         -- leases granted (the last lease epoch)
    failures BIGINT NOT NULL,         -- since submission or the last retry
    node_id TEXT,                     -- the node of the current or last lease
    lease_epoch BIGINT,
    frames_done BIGINT NOT NULL,
    render_seconds BIGINT NOT NULL,
    last_error TEXT,
    assigned_at TEXT,
    started_at TEXT,
    finished_at TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX rm_tasks_render ON rm_tasks (render_id, task_index);

CREATE TABLE rm_frames (
    frame_key TEXT PRIMARY KEY,       -- render id ":" frame number
    render_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    frame BIGINT NOT NULL,
    task_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    lease_epoch BIGINT NOT NULL,
    file_id TEXT NOT NULL,            -- the frame's current output
    finished_at TEXT NOT NULL
);
CREATE INDEX rm_frames_render ON rm_frames (render_id, frame);

CREATE TABLE rm_tenants (
    tenant_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,             -- active | suspended
    weight BIGINT NOT NULL,
    max_running_tasks BIGINT NOT NULL,
    balance_minor BIGINT NOT NULL,
    added_minor BIGINT NOT NULL,
    charged_minor BIGINT NOT NULL,
    running_tasks BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE rm_tenant_usage (
    usage_key TEXT PRIMARY KEY,       -- tenant id ":" day
    tenant_id TEXT NOT NULL,
    day TEXT NOT NULL,                -- YYYY-MM-DD (UTC) of the charge
    tasks BIGINT NOT NULL,
    render_seconds BIGINT NOT NULL,
    charged_minor BIGINT NOT NULL,
    uncovered_minor BIGINT NOT NULL
);
CREATE INDEX rm_tenant_usage_tenant ON rm_tenant_usage (tenant_id, day);

-- projection `nodes`
CREATE TABLE rm_nodes (
    node_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,             -- offline | online | draining | disabled | deregistered
    connectivity TEXT NOT NULL,       -- online | offline
    availability TEXT NOT NULL,       -- enabled | draining | disabled | deregistered
    capabilities TEXT NOT NULL,       -- JSON, as in node.registered.v1
    current_task_id TEXT,
    current_render_id TEXT,
    current_lease_epoch BIGINT,
    registered_at TEXT NOT NULL,
    last_event_at TEXT NOT NULL
);

-- projection `files`
CREATE TABLE rm_files (
    file_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    kind TEXT NOT NULL,               -- scene | input | output
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    render_id TEXT,                   -- outputs: the render, task, node, frame and lease
    task_id TEXT,
    node_id TEXT,
    frame BIGINT,
    lease_epoch BIGINT,
    created_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE INDEX rm_files_tenant_sha ON rm_files (tenant_id, sha256);
