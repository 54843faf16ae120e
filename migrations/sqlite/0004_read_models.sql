-- Read models: projections of the event log (crate `projections`). Nothing
-- here is a source of truth: `flatrender projections rebuild` empties these
-- tables and replays the log into them. Each projection's rows and its
-- checkpoint are written in one transaction, so a row never reflects an
-- event twice or misses one. Ids are lower-case hyphenated UUID text and
-- times RFC 3339 UTC text with microseconds (they order as text), the same
-- on both backends so that one digest compares them.

CREATE TABLE projection_checkpoints (
    name TEXT PRIMARY KEY,            -- renders | nodes | files
    position INTEGER NOT NULL,         -- global position of the last event applied (0: none)
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
    paused INTEGER NOT NULL,           -- 1 while paused (a retried failed render returns to it)
    priority INTEGER NOT NULL,
    renderer TEXT NOT NULL,
    scene_file_id TEXT NOT NULL,
    frame_start INTEGER NOT NULL,
    frame_end INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    spec TEXT NOT NULL,               -- the submission (JSON): resolution, samples, requirements, max retries
    tasks_total INTEGER NOT NULL,
    tasks_done INTEGER NOT NULL,
    tasks_failed INTEGER NOT NULL,
    tasks_running INTEGER NOT NULL,    -- leased or rendering
    frames_total INTEGER NOT NULL,
    frames_done INTEGER NOT NULL,      -- frames with an output under their task's current lease, or of a completed task
    frames_failed INTEGER NOT NULL,    -- frames of failed tasks
    cost_minor INTEGER NOT NULL,       -- charged so far (minor units)
    uncovered_minor INTEGER NOT NULL,  -- render time the balance could not cover
    render_seconds INTEGER NOT NULL,
    last_error TEXT,
    submitted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT,
    last_position INTEGER NOT NULL     -- the last event that changed the row
);
CREATE INDEX rm_renders_tenant_submitted ON rm_renders (tenant_id, submitted_at, render_id);
CREATE INDEX rm_renders_tenant_status ON rm_renders (tenant_id, status, submitted_at);

CREATE TABLE rm_tasks (
    task_id TEXT PRIMARY KEY,
    render_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    task_index INTEGER NOT NULL,
    frame_start INTEGER NOT NULL,
    frame_end INTEGER NOT NULL,
    status TEXT NOT NULL,             -- queued | leased | running | completed | failed | cancelled
    attempts INTEGER NOT NULL,         -- leases granted (the last lease epoch)
    failures INTEGER NOT NULL,         -- since submission or the last retry
    node_id TEXT,                     -- the node of the current or last lease
    lease_epoch INTEGER,
    frames_done INTEGER NOT NULL,
    render_seconds INTEGER NOT NULL,
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
    frame INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    lease_epoch INTEGER NOT NULL,
    file_id TEXT NOT NULL,            -- the frame's current output
    finished_at TEXT NOT NULL
);
CREATE INDEX rm_frames_render ON rm_frames (render_id, frame);

CREATE TABLE rm_tenants (
    tenant_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,             -- active | suspended
    weight INTEGER NOT NULL,
    max_running_tasks INTEGER NOT NULL,
    balance_minor INTEGER NOT NULL,
    added_minor INTEGER NOT NULL,
    charged_minor INTEGER NOT NULL,
    running_tasks INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE rm_tenant_usage (
    usage_key TEXT PRIMARY KEY,       -- tenant id ":" day
    tenant_id TEXT NOT NULL,
    day TEXT NOT NULL,                -- YYYY-MM-DD (UTC) of the charge
    tasks INTEGER NOT NULL,
    render_seconds INTEGER NOT NULL,
    charged_minor INTEGER NOT NULL,
    uncovered_minor INTEGER NOT NULL
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
    current_lease_epoch INTEGER,
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
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    render_id TEXT,                   -- outputs: the render, task, node, frame and lease
    task_id TEXT,
    node_id TEXT,
    frame INTEGER,
    lease_epoch INTEGER,
    created_at TEXT NOT NULL,
    deleted_at TEXT
);
CREATE INDEX rm_files_tenant_sha ON rm_files (tenant_id, sha256);
