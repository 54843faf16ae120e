//! Projection `renders`: renders, their tasks and current frame outputs,
//! tenants (balance, quota, running tasks) and their usage per day.

use domain::render_job::{JobSubmitted, TaskStatus};
use domain::{RenderJobEvent, TenantEvent};

use crate::db::Reader;
use crate::error::ProjectionError;
use crate::event::{Decoded, Ev, Needs, time};
use crate::table::{Cache, Row, row};

row! {
    /// One render (`rm_renders`).
    pub struct RenderRow in "rm_renders" key render_id {
        pub render_id: String,
        pub tenant_id: String,
        pub name: String,
        pub status: String,
        pub paused: i64,
        pub priority: i64,
        pub renderer: String,
        pub scene_file_id: String,
        pub frame_start: i64,
        pub frame_end: i64,
        pub chunk_size: i64,
        pub spec: String,
        pub tasks_total: i64,
        pub tasks_done: i64,
        pub tasks_failed: i64,
        pub tasks_running: i64,
        pub frames_total: i64,
        pub frames_done: i64,
        pub frames_failed: i64,
        pub cost_minor: i64,
        pub uncovered_minor: i64,
        pub render_seconds: i64,
        pub last_error: Option<String>,
        pub submitted_at: String,
        pub updated_at: String,
        pub finished_at: Option<String>,
        pub last_position: i64,
    }
}

row! {
    /// One task of a render (`rm_tasks`).
    pub struct TaskRow in "rm_tasks" key task_id {
        pub task_id: String,
        pub render_id: String,
        pub tenant_id: String,
        pub task_index: i64,
        pub frame_start: i64,
        pub frame_end: i64,
        pub status: String,
        pub attempts: i64,
        pub failures: i64,
        pub node_id: Option<String>,
        pub lease_epoch: Option<i64>,
        pub frames_done: i64,
        pub render_seconds: i64,
        pub last_error: Option<String>,
        pub assigned_at: Option<String>,
        pub started_at: Option<String>,
        pub finished_at: Option<String>,
        pub updated_at: String,
    }
}

row! {
    /// The current output of one frame of a render (`rm_frames`).
    pub struct FrameRow in "rm_frames" key frame_key {
        pub frame_key: String,
        pub render_id: String,
        pub tenant_id: String,
        pub frame: i64,
        pub task_id: String,
        pub node_id: String,
        pub lease_epoch: i64,
        pub file_id: String,
        pub finished_at: String,
    }
}

row! {
    /// One tenant (`rm_tenants`).
    pub struct TenantRow in "rm_tenants" key tenant_id {
        pub tenant_id: String,
        pub name: String,
        pub status: String,
        pub weight: i64,
        pub max_running_tasks: i64,
        pub balance_minor: i64,
        pub added_minor: i64,
        pub charged_minor: i64,
        pub running_tasks: i64,
        pub created_at: String,
        pub updated_at: String,
        pub renders_total: i64,
    }
}

row! {
    /// A tenant's charges of one day (`rm_tenant_usage`).
    pub struct UsageRow in "rm_tenant_usage" key usage_key {
        pub usage_key: String,
        pub tenant_id: String,
        pub day: String,
        pub tasks: i64,
        pub render_seconds: i64,
        pub charged_minor: i64,
        pub uncovered_minor: i64,
        pub added_minor: i64,
        pub balance_minor: i64,
    }
}

/// The `renders` projection's rows.
#[derive(Debug, Default)]
pub(crate) struct Renders {
    renders: Cache<RenderRow>,
    tasks: Cache<TaskRow>,
    frames: Cache<FrameRow>,
    tenants: Cache<TenantRow>,
    usage: Cache<UsageRow>,
}

const RENDERS: &str = RenderRow::TABLE.name;
const TASKS: &str = TaskRow::TABLE.name;
const FRAMES: &str = FrameRow::TABLE.name;
const TENANTS: &str = TenantRow::TABLE.name;
const USAGE: &str = UsageRow::TABLE.name;

fn frame_key(render: impl ToString, frame: u32) -> String {
    format!("{}:{frame}", render.to_string())
}

/// Whether a task in this state holds a lease.
fn holds_lease(status: &str) -> bool {
    status == TaskStatus::Leased.as_str() || status == TaskStatus::Running.as_str()
}

impl Renders {
    pub const NAME: &'static str = "renders";

    pub fn tables() -> Vec<crate::table::Table> {
        vec![
            RenderRow::TABLE,
            TaskRow::TABLE,
            FrameRow::TABLE,
            TenantRow::TABLE,
            UsageRow::TABLE,
        ]
    }

    /// The rows `ev` will touch.
    pub fn needs(ev: &Ev, n: &mut Needs) {
        use RenderJobEvent as E;
        match &ev.event {
            Decoded::Render(e) => {
                n.key(RENDERS, e.stream_id());
                let task = match e {
                    E::TaskAssigned(x) => Some((x.task_id, x.tenant_id)),
                    E::TaskStarted(x) => Some((x.task_id, x.tenant_id)),
                    E::TaskProgressed(x) => Some((x.task_id, x.tenant_id)),
                    E::TaskCompleted(x) => Some((x.task_id, x.tenant_id)),
                    E::TaskFailed(x) => Some((x.task_id, x.tenant_id)),
                    E::TaskRequeued(x) => Some((x.task_id, x.tenant_id)),
                    E::TaskReleased(x) => Some((x.task_id, x.tenant_id)),
                    E::TaskRetried(x) => Some((x.task_id, x.tenant_id)),
                    _ => None,
                };
                if let Some((task, tenant)) = task {
                    n.key(TASKS, task);
                    n.key(TENANTS, tenant);
                }
                if let E::TaskProgressed(x) = e {
                    n.key(FRAMES, frame_key(x.job_id, x.frame));
                }
                if let E::Cancelled(x) = e {
                    n.rows_where(TASKS, "render_id", x.job_id);
                    n.key(TENANTS, x.tenant_id);
                }
                if let E::Submitted(x) = e {
                    n.key(TENANTS, x.tenant_id);
                }
            }
            Decoded::Tenant(e) => {
                let tenant = match e {
                    TenantEvent::Created(x) => x.tenant_id,
                    TenantEvent::Suspended(x) => x.tenant_id,
                    TenantEvent::Reactivated(x) => x.tenant_id,
                    TenantEvent::QuotaChanged(x) => x.tenant_id,
                    TenantEvent::CreditAdded(x) => x.tenant_id,
                    TenantEvent::CreditCharged(x) => x.tenant_id,
                };
                n.key(TENANTS, tenant);
                if let TenantEvent::CreditCharged(x) = e {
                    n.key(RENDERS, x.job_id);
                    n.key(
                        USAGE,
                        usage_key(&x.tenant_id.to_string(), &day(x.charged_at)),
                    );
                }
                if let TenantEvent::CreditAdded(x) = e {
                    n.key(USAGE, usage_key(&x.tenant_id.to_string(), &day(x.added_at)));
                }
            }
            _ => {}
        }
    }

    /// Loads what a batch needs that is not cached.
    pub async fn prefetch(&mut self, db: &Reader, n: &Needs) -> Result<(), ProjectionError> {
        db.load(&mut self.renders, n.keys_of(RENDERS)).await?;
        db.load_where(&mut self.tasks, n.wheres_of(TASKS)).await?;
        db.load(&mut self.tasks, n.keys_of(TASKS)).await?;
        db.load(&mut self.frames, n.keys_of(FRAMES)).await?;
        db.load(&mut self.tenants, n.keys_of(TENANTS)).await?;
        db.load(&mut self.usage, n.keys_of(USAGE)).await
    }

    /// The changed rows of every table.
    pub fn dirty(&self) -> Vec<(crate::table::Table, Vec<Vec<crate::table::Value>>)> {
        vec![
            (RenderRow::TABLE, self.renders.dirty_values()),
            (TaskRow::TABLE, self.tasks.dirty_values()),
            (FrameRow::TABLE, self.frames.dirty_values()),
            (TenantRow::TABLE, self.tenants.dirty_values()),
            (UsageRow::TABLE, self.usage.dirty_values()),
        ]
    }

    pub fn committed(&mut self, cap: usize) {
        self.renders.committed(cap);
        self.tasks.committed(cap);
        self.frames.committed(cap);
        self.tenants.committed(cap);
        self.usage.committed(cap);
    }

    pub fn forget(&mut self, empty: bool) {
        self.renders.forget(empty);
        self.tasks.forget(empty);
        self.frames.forget(empty);
        self.tenants.forget(empty);
        self.usage.forget(empty);
    }

    /// Applies one event.
    pub fn apply(&mut self, ev: &Ev) {
        match &ev.event {
            Decoded::Render(e) => self.apply_render(ev, e),
            Decoded::Tenant(e) => self.apply_tenant(ev, e),
            _ => {}
        }
    }

    /// Moves a task to `status`, keeping the counters of its render and
    /// tenant that depend on it.
    fn set_status(&mut self, task_id: &str, status: TaskStatus) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        let old = std::mem::replace(&mut task.status, status.as_str().to_string());
        if old == task.status {
            return;
        }
        let frames = task.frame_end - task.frame_start + 1;
        let (render_id, tenant_id) = (task.render_id.clone(), task.tenant_id.clone());
        let failed = TaskStatus::Failed.as_str();
        let running = |s: &str| i64::from(holds_lease(s));
        let delta_running = running(status.as_str()) - running(&old);
        let delta_failed = i64::from(status.as_str() == failed) - i64::from(old == failed);
        if let Some(render) = self.renders.get_mut(&render_id) {
            render.tasks_running += delta_running;
            render.tasks_failed += delta_failed;
            render.frames_failed += delta_failed * frames;
        }
        if delta_running != 0
            && let Some(tenant) = self.tenants.get_mut(&tenant_id)
        {
            tenant.running_tasks += delta_running;
        }
    }

    /// Sets a task's frames done, keeping its render's sum.
    fn set_frames_done(&mut self, task_id: &str, done: i64) {
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        let delta = done - std::mem::replace(&mut task.frames_done, done);
        let render_id = task.render_id.clone();
        if delta != 0
            && let Some(render) = self.renders.get_mut(&render_id)
        {
            render.frames_done += delta;
        }
    }

    fn apply_render(&mut self, ev: &Ev, e: &RenderJobEvent) {
        use RenderJobEvent as E;
        let at = &ev.recorded_at;
        match e {
            E::Submitted(x) => {
                self.renders.put(submitted(ev, x));
                if let Some(t) = self.tenants.get_mut(&x.tenant_id.to_string()) {
                    t.renders_total += 1;
                }
            }
            E::Split(x) => {
                for spec in &x.tasks {
                    self.tasks.put(TaskRow {
                        task_id: spec.task_id.to_string(),
                        render_id: x.job_id.to_string(),
                        tenant_id: x.tenant_id.to_string(),
                        task_index: spec.index.into(),
                        frame_start: spec.frames.start().into(),
                        frame_end: spec.frames.end().into(),
                        status: TaskStatus::Queued.as_str().into(),
                        updated_at: at.clone(),
                        ..TaskRow::default()
                    });
                }
                if let Some(r) = self.renders.get_mut(&x.job_id.to_string()) {
                    r.tasks_total = x.tasks.len() as i64;
                }
            }
            E::TaskAssigned(x) => {
                let task = x.task_id.to_string();
                self.set_frames_done(&task, 0);
                self.set_status(&task, TaskStatus::Leased);
                if let Some(t) = self.tasks.get_mut(&task) {
                    t.attempts = x.lease_epoch.into();
                    t.node_id = Some(x.node_id.to_string());
                    t.lease_epoch = Some(x.lease_epoch.into());
                    t.assigned_at = Some(time(x.assigned_at));
                    t.started_at = None;
                    t.finished_at = None;
                }
            }
            E::TaskStarted(x) => {
                let task = x.task_id.to_string();
                self.set_status(&task, TaskStatus::Running);
                if let Some(t) = self.tasks.get_mut(&task) {
                    t.started_at = Some(time(x.started_at));
                }
            }
            E::TaskProgressed(x) => {
                if let Some(file) = x.output_file_id {
                    self.set_frames_done(&x.task_id.to_string(), x.frames_done.into());
                    self.frames.put(FrameRow {
                        frame_key: frame_key(x.job_id, x.frame),
                        render_id: x.job_id.to_string(),
                        tenant_id: x.tenant_id.to_string(),
                        frame: x.frame.into(),
                        task_id: x.task_id.to_string(),
                        node_id: x.node_id.to_string(),
                        lease_epoch: x.lease_epoch.into(),
                        file_id: file.to_string(),
                        finished_at: time(x.finished_at),
                    });
                }
            }
            E::TaskCompleted(x) => {
                let task = x.task_id.to_string();
                let frames = self
                    .tasks
                    .get(&task)
                    .map_or(0, |t| t.frame_end - t.frame_start + 1);
                self.set_frames_done(&task, frames);
                self.set_status(&task, TaskStatus::Completed);
                let seconds = x.render_seconds as i64;
                if let Some(t) = self.tasks.get_mut(&task) {
                    t.render_seconds += seconds;
                    t.finished_at = Some(time(x.completed_at));
                }
                if let Some(r) = self.renders.get_mut(&x.job_id.to_string()) {
                    r.tasks_done += 1;
                    r.render_seconds += seconds;
                }
            }
            E::TaskFailed(x) => {
                let task = x.task_id.to_string();
                self.set_status(&task, TaskStatus::Failed);
                let seconds = x.render_seconds as i64;
                let error = Some(x.error.as_str().to_string());
                if let Some(t) = self.tasks.get_mut(&task) {
                    t.failures = x.failures.into();
                    t.render_seconds += seconds;
                    t.last_error = error.clone();
                    t.finished_at = Some(time(x.failed_at));
                }
                if let Some(r) = self.renders.get_mut(&x.job_id.to_string()) {
                    r.render_seconds += seconds;
                    r.last_error = error;
                }
            }
            E::TaskRequeued(x) => self.set_status(&x.task_id.to_string(), TaskStatus::Queued),
            E::TaskReleased(x) => self.set_status(&x.task_id.to_string(), TaskStatus::Queued),
            E::TaskRetried(x) => {
                let task = x.task_id.to_string();
                self.set_status(&task, TaskStatus::Queued);
                if let Some(t) = self.tasks.get_mut(&task) {
                    t.failures = 0;
                }
                if let Some(r) = self.renders.get_mut(&x.job_id.to_string())
                    && r.status == "failed"
                    && r.tasks_failed == 0
                {
                    r.status = if r.paused == 1 { "paused" } else { "active" }.into();
                    r.finished_at = None;
                }
            }
            E::Paused(x) => {
                if let Some(r) = self.renders.get_mut(&x.job_id.to_string()) {
                    r.status = "paused".into();
                    r.paused = 1;
                }
            }
            E::Resumed(x) => {
                if let Some(r) = self.renders.get_mut(&x.job_id.to_string()) {
                    r.status = "active".into();
                    r.paused = 0;
                }
            }
            E::Cancelled(x) => {
                let render = x.job_id.to_string();
                let open = self.tasks.matching(|t| {
                    t.render_id == render && t.status != TaskStatus::Completed.as_str()
                });
                for task in open {
                    self.set_status(&task, TaskStatus::Cancelled);
                }
                if let Some(r) = self.renders.get_mut(&render) {
                    r.status = "cancelled".into();
                    r.finished_at = Some(time(x.cancelled_at));
                }
            }
            E::PriorityChanged(x) => {
                if let Some(r) = self.renders.get_mut(&x.job_id.to_string()) {
                    r.priority = x.priority.get().into();
                }
            }
            E::Completed(x) => {
                if let Some(r) = self.renders.get_mut(&x.job_id.to_string()) {
                    r.status = "completed".into();
                    r.finished_at = Some(time(x.completed_at));
                }
            }
            E::Failed(x) => {
                if let Some(r) = self.renders.get_mut(&x.job_id.to_string()) {
                    r.status = "failed".into();
                    r.last_error = Some(x.error.as_str().to_string());
                    r.finished_at = Some(time(x.failed_at));
                }
            }
            E::Waiting(x) => {
                if let Some(r) = self.renders.get_mut(&x.job_id.to_string()) {
                    r.status = "waiting".into();
                }
            }
            E::Released(x) => {
                if let Some(r) = self.renders.get_mut(&x.job_id.to_string()) {
                    r.status = if r.paused == 1 { "paused" } else { "active" }.into();
                }
            }
            E::DependencyFailed(x) => {
                if let Some(r) = self.renders.get_mut(&x.job_id.to_string()) {
                    r.status = "failed".into();
                    r.last_error = Some(format!(
                        "dependency_failed: render {} {}",
                        x.dependency_id,
                        x.dependency_status.as_str()
                    ));
                    r.finished_at = Some(time(x.failed_at));
                }
            }
        }
        if let Some(r) = self.renders.get_mut(&e.stream_id().to_string()) {
            r.updated_at = at.clone();
            r.last_position = ev.position;
        }
        if let Some(task) = task_of(e)
            && let Some(t) = self.tasks.get_mut(&task)
        {
            t.updated_at = at.clone();
        }
    }

    fn apply_tenant(&mut self, ev: &Ev, e: &TenantEvent) {
        let at = &ev.recorded_at;
        let tenant = match e {
            TenantEvent::Created(x) => {
                self.tenants.put(TenantRow {
                    tenant_id: x.tenant_id.to_string(),
                    name: x.name.as_str().into(),
                    status: "active".into(),
                    weight: x.weight.get().into(),
                    max_running_tasks: x.max_running_tasks.into(),
                    created_at: time(x.created_at),
                    updated_at: at.clone(),
                    ..TenantRow::default()
                });
                return;
            }
            TenantEvent::Suspended(x) => x.tenant_id,
            TenantEvent::Reactivated(x) => x.tenant_id,
            TenantEvent::QuotaChanged(x) => x.tenant_id,
            TenantEvent::CreditAdded(x) => x.tenant_id,
            TenantEvent::CreditCharged(x) => x.tenant_id,
        };
        let key = tenant.to_string();
        // The day's row: charges, credit added, and the balance at its end.
        let credit_day = match e {
            TenantEvent::CreditCharged(x) => Some((day(x.charged_at), x.balance_after_minor.get())),
            TenantEvent::CreditAdded(x) => Some((day(x.added_at), x.balance_after_minor.get())),
            _ => None,
        };
        if let Some((day, balance)) = credit_day {
            let usage = usage_key(&key, &day);
            if self.usage.get(&usage).is_none() {
                self.usage.put(UsageRow {
                    usage_key: usage.clone(),
                    tenant_id: key.clone(),
                    day,
                    ..UsageRow::default()
                });
            }
            if let Some(u) = self.usage.get_mut(&usage) {
                u.balance_minor = balance;
                match e {
                    TenantEvent::CreditCharged(x) => {
                        u.tasks += 1;
                        u.render_seconds += x.render_seconds as i64;
                        u.charged_minor += x.amount_minor.get();
                        u.uncovered_minor += x.uncovered_minor.get();
                    }
                    TenantEvent::CreditAdded(x) => u.added_minor += x.amount_minor.get(),
                    _ => {}
                }
            }
        }
        if let TenantEvent::CreditCharged(x) = e
            && let Some(r) = self.renders.get_mut(&x.job_id.to_string())
        {
            r.cost_minor += x.amount_minor.get();
            r.uncovered_minor += x.uncovered_minor.get();
        }
        let Some(t) = self.tenants.get_mut(&key) else {
            return;
        };
        t.updated_at = at.clone();
        match e {
            TenantEvent::Suspended(_) => t.status = "suspended".into(),
            TenantEvent::Reactivated(_) => t.status = "active".into(),
            TenantEvent::QuotaChanged(x) => {
                t.weight = x.weight.get().into();
                t.max_running_tasks = x.max_running_tasks.into();
            }
            TenantEvent::CreditAdded(x) => {
                t.balance_minor = x.balance_after_minor.get();
                t.added_minor += x.amount_minor.get();
            }
            TenantEvent::CreditCharged(x) => {
                t.balance_minor = x.balance_after_minor.get();
                t.charged_minor += x.amount_minor.get();
            }
            TenantEvent::Created(_) => {}
        }
    }
}

fn task_of(e: &RenderJobEvent) -> Option<String> {
    use RenderJobEvent as E;
    let id = match e {
        E::TaskAssigned(x) => x.task_id,
        E::TaskStarted(x) => x.task_id,
        E::TaskProgressed(x) => x.task_id,
        E::TaskCompleted(x) => x.task_id,
        E::TaskFailed(x) => x.task_id,
        E::TaskRequeued(x) => x.task_id,
        E::TaskReleased(x) => x.task_id,
        E::TaskRetried(x) => x.task_id,
        _ => return None,
    };
    Some(id.to_string())
}

fn submitted(ev: &Ev, x: &JobSubmitted) -> RenderRow {
    let spec = serde_json::json!({
        "resolution": x.resolution,
        "samples": x.samples,
        "requirements": x.requirements,
        "max_retries": x.max_retries,
        "task_timeout_seconds": x.task_timeout_seconds,
        "stall_timeout_seconds": x.stall_timeout_seconds,
        "depends_on": x.depends_on,
    });
    RenderRow {
        render_id: x.job_id.to_string(),
        tenant_id: x.tenant_id.to_string(),
        name: x.name.as_str().into(),
        status: "active".into(),
        priority: x.priority.get().into(),
        renderer: x.renderer.as_str().into(),
        scene_file_id: x.scene_file_id.to_string(),
        frame_start: x.frames.start().into(),
        frame_end: x.frames.end().into(),
        chunk_size: x.chunk_size.get().into(),
        spec: spec.to_string(),
        frames_total: x.frames.len() as i64,
        submitted_at: time(x.submitted_at),
        updated_at: ev.recorded_at.clone(),
        last_position: ev.position,
        ..RenderRow::default()
    }
}

fn day(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

fn usage_key(tenant: &str, day: &str) -> String {
    format!("{tenant}:{day}")
}
