//! `/v1/renders`: submit (idempotent), list, show, tasks, history, frames,
//! and the controls (pause, resume, cancel, retry failed tasks).

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::render_job::{JobSubmitted, Requirements, Resolution};
use domain::{
    ChunkSize, FileId, FrameRange, Identifier, JobId, Label, Priority, RenderJobCommand, SubmitJob,
    ValidationError,
};
use eventstore::EventStore;
use projections::query::{Param, count, rows};
use projections::{FrameRow, RenderRow, TaskRow};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::auth::Caller;
use super::{Page, body, field, id, page_of, query, read_failed};
use crate::app::AppState;
use crate::error::ApiError;
use crate::submission::KNOWN_RENDERERS;

/// The media type of a builtin scene upload.
pub const SCENE_JSON: &str = "application/vnd.flatrender.scene+json";
/// The media type of a `.blend` upload.
pub const BLEND: &str = "application/x-blender";

const STATUSES: [&str; 6] = [
    "waiting",
    "active",
    "paused",
    "completed",
    "failed",
    "cancelled",
];

/// What the read model keeps of a submission beside its columns.
#[derive(Debug, Default, Deserialize)]
struct Spec {
    resolution: Option<ResolutionBody>,
    samples: Option<u32>,
    #[serde(default)]
    requirements: Requirements,
    #[serde(default)]
    max_retries: u32,
    #[serde(default)]
    task_timeout_seconds: Option<u32>,
    #[serde(default)]
    stall_timeout_seconds: Option<u32>,
    #[serde(default)]
    depends_on: Vec<Uuid>,
}

/// A frame range as the API shows it.
#[derive(Debug, Serialize)]
struct FramesView {
    start: i64,
    end: i64,
}

/// A render's task counts.
#[derive(Debug, Serialize)]
struct TaskCounts {
    total: i64,
    completed: i64,
    failed: i64,
    running: i64,
}

/// A render as the API shows it (serialized straight from the row: a
/// list page builds no intermediate JSON tree).
#[derive(Debug, Serialize)]
pub(crate) struct RenderView<'a> {
    id: &'a str,
    tenant_id: &'a str,
    name: &'a str,
    status: &'a str,
    priority: i64,
    renderer: &'a str,
    scene_file_id: &'a str,
    frames: FramesView,
    chunk_size: i64,
    resolution: Option<ResolutionBody>,
    samples: Option<u32>,
    requirements: Requirements,
    max_retries: u32,
    task_timeout_seconds: Option<u32>,
    stall_timeout_seconds: Option<u32>,
    depends_on: Vec<Uuid>,
    tasks: TaskCounts,
    frames_total: i64,
    frames_done: i64,
    frames_failed: i64,
    progress: f64,
    cost_minor: i64,
    uncovered_minor: i64,
    render_seconds: i64,
    last_error: Option<&'a str>,
    submitted_at: &'a str,
    updated_at: &'a str,
    finished_at: Option<&'a str>,
}

/// A render as the API shows it.
fn render_view(r: &RenderRow) -> RenderView<'_> {
    let spec: Spec = serde_json::from_str(&r.spec).unwrap_or_default();
    RenderView {
        id: &r.render_id,
        tenant_id: &r.tenant_id,
        name: &r.name,
        status: &r.status,
        priority: r.priority,
        renderer: &r.renderer,
        scene_file_id: &r.scene_file_id,
        frames: FramesView {
            start: r.frame_start,
            end: r.frame_end,
        },
        chunk_size: r.chunk_size,
        resolution: spec.resolution,
        samples: spec.samples,
        requirements: spec.requirements,
        max_retries: spec.max_retries,
        task_timeout_seconds: spec.task_timeout_seconds,
        stall_timeout_seconds: spec.stall_timeout_seconds,
        depends_on: spec.depends_on,
        tasks: TaskCounts {
            total: r.tasks_total,
            completed: r.tasks_done,
            failed: r.tasks_failed,
            running: r.tasks_running,
        },
        frames_total: r.frames_total,
        frames_done: r.frames_done,
        frames_failed: r.frames_failed,
        progress: if r.frames_total > 0 {
            r.frames_done as f64 / r.frames_total as f64
        } else {
            0.0
        },
        cost_minor: r.cost_minor,
        uncovered_minor: r.uncovered_minor,
        render_seconds: r.render_seconds,
        last_error: r.last_error.as_deref(),
        submitted_at: &r.submitted_at,
        updated_at: &r.updated_at,
        finished_at: r.finished_at.as_deref(),
    }
}

/// A JSON answer serialized straight from `value`.
fn json_bytes(value: &impl Serialize) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A page of renders as the contract has it.
#[derive(Debug, Serialize)]
struct RenderPage<'a> {
    items: Vec<RenderView<'a>>,
    page: i64,
    page_size: i64,
    total: i64,
}

fn task_json(t: &TaskRow) -> Value {
    json!({
        "id": t.task_id,
        "index": t.task_index,
        "frames": { "start": t.frame_start, "end": t.frame_end },
        "status": t.status,
        "attempts": t.attempts,
        "failures": t.failures,
        "node_id": t.node_id,
        "frames_done": t.frames_done,
        "render_seconds": t.render_seconds,
        "last_error": t.last_error,
        "assigned_at": t.assigned_at,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "updated_at": t.updated_at,
    })
}

/// The tenant's render, or 404 (another tenant's render is not found).
pub(crate) async fn owned(
    state: &AppState,
    caller: &Caller,
    render: &str,
) -> Result<RenderRow, ApiError> {
    let render = id(render, "render_id")?;
    let scope = super::scope_of(state, caller, render).await?;
    projections::query::render(&state.store, scope.as_uuid(), render)
        .await
        .map_err(read_failed)?
        .ok_or(ApiError::NotFound)
}

/// `GET /v1/renders` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Operators only: every tenant's renders.
    all_tenants: Option<bool>,
    status: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    name_contains: Option<String>,
    page: Option<u32>,
    page_size: Option<u32>,
}

fn time_param(name: &str, text: &str) -> Result<String, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| projections::time(t.with_timezone(&chrono::Utc)))
        .map_err(|_| field(name, "an ISO 8601 time with a time zone"))
}

/// `GET /v1/renders`: the tenant's renders, newest first.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    let paging = Page::checked(p.page, p.page_size)?;
    let farm = p.all_tenants == Some(true);
    if farm {
        caller.operates()?;
    }
    let (mut filter, mut params) = if farm {
        ("1 = 1".to_string(), Vec::new())
    } else {
        (
            "tenant_id = $1".to_string(),
            vec![Param::Text(caller.tenant_id.to_string())],
        )
    };
    let base = params.len();
    let mut add = |clause: &str, value: Param| {
        params.push(value);
        filter.push_str(&format!(" AND {clause} ${}", params.len()));
    };
    if let Some(status) = &p.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(field(
                "status",
                "one of active, paused, completed, failed, cancelled",
            ));
        }
        add("status =", Param::Text(status.clone()));
    }
    if let Some(after) = &p.created_after {
        add(
            "submitted_at >=",
            Param::Text(time_param("created_after", after)?),
        );
    }
    if let Some(before) = &p.created_before {
        add(
            "submitted_at <",
            Param::Text(time_param("created_before", before)?),
        );
    }
    if let Some(name) = &p.name_contains {
        let escaped = name
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        add("LOWER(name) LIKE", Param::Text(format!("%{escaped}%")));
        filter.push_str(" ESCAPE '\\'");
    }
    let unfiltered = params.len() == base && !farm;
    let total = if unfiltered {
        // Kept by the projection: no count of every render of the tenant.
        projections::query::tenant(&state.store, caller.tenant_id.as_uuid())
            .await
            .map_err(read_failed)?
            .map_or(0, |t| t.renders_total)
    } else {
        count(&state.store, "rm_renders", &filter, &params)
            .await
            .map_err(read_failed)?
    };
    let (_, size, offset) = paging;
    let n = params.len();
    params.push(Param::Int(size));
    params.push(Param::Int(offset));
    let page_filter = format!(
        "{filter} ORDER BY submitted_at DESC, render_id LIMIT ${} OFFSET ${}",
        n + 1,
        n + 2
    );
    let found = rows::<RenderRow>(&state.store, &page_filter, &params)
        .await
        .map_err(read_failed)?;
    json_bytes(&RenderPage {
        items: found.iter().map(render_view).collect(),
        page: paging.0,
        page_size: paging.1,
        total,
    })
}

/// `GET /v1/renders/{id}`.
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(render): Path<String>,
) -> Result<Response, ApiError> {
    let r = owned(&state, &caller, &render).await?;
    json_bytes(&render_view(&r))
}

/// A page of a render's rows of `R` (tasks, frames) in `order`, and how
/// many there are.
async fn rows_of_render<R: projections::Row>(
    state: &AppState,
    r: &RenderRow,
    order: &str,
    (_, size, offset): (i64, i64, i64),
) -> Result<(Vec<R>, i64), ApiError> {
    let params = vec![
        Param::Text(r.tenant_id.clone()),
        Param::Text(r.render_id.clone()),
    ];
    let filter = "tenant_id = $1 AND render_id = $2";
    let total = count(&state.store, R::TABLE.name, filter, &params)
        .await
        .map_err(read_failed)?;
    let mut paged = params;
    paged.extend([Param::Int(size), Param::Int(offset)]);
    let found = rows::<R>(
        &state.store,
        &format!("{filter} ORDER BY {order} LIMIT $3 OFFSET $4"),
        &paged,
    )
    .await
    .map_err(read_failed)?;
    Ok((found, total))
}

/// `GET /v1/renders/{id}/tasks`, in task order.
pub async fn tasks(
    State(state): State<AppState>,
    caller: Caller,
    Path(render): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let paging = query(page)?.get()?;
    let r = owned(&state, &caller, &render).await?;
    let (found, total) = rows_of_render::<TaskRow>(&state, &r, "task_index", paging).await?;
    Ok(Json(page_of(
        found.iter().map(task_json).collect(),
        paging,
        total,
    )))
}

/// `GET /v1/renders/{id}/frames`: each frame's current output, in frame order.
pub async fn frames(
    State(state): State<AppState>,
    caller: Caller,
    Path(render): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let paging = query(page)?.get()?;
    let r = owned(&state, &caller, &render).await?;
    let (found, total) = rows_of_render::<FrameRow>(&state, &r, "frame", paging).await?;
    let items = found
        .iter()
        .map(|f| {
            json!({
                "frame": f.frame,
                "file_id": f.file_id,
                "task_id": f.task_id,
                "node_id": f.node_id,
                "finished_at": f.finished_at,
                "url": format!("/v1/renders/{}/frames/{}", f.render_id, f.frame),
            })
        })
        .collect();
    Ok(Json(page_of(items, paging, total)))
}

/// `GET /v1/renders/{id}/events?after=<version>&limit=`: the render's
/// history, in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/renders/{id}/events`.
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(render): Path<String>,
    params: Result<Query<EventsParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let p = query(params)?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(field("limit", "limit is 1 to 500"));
    }
    let r = owned(&state, &caller, &render).await?;
    let stream = Uuid::parse_str(&r.render_id).map_err(|e| ApiError::Internal(e.into()))?;
    let events = state
        .store
        .read_stream(stream, p.after.unwrap_or(0) + 1, limit)
        .await?;
    let next = events.last().map(|e| e.stream_version);
    let items: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "version": e.stream_version,
                "global_position": e.global_position,
                "routing_key": e.routing_key,
                "recorded_at": projections::time(e.recorded_at),
                "payload": e.payload,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items, "next_after": next })))
}

async fn control(
    state: &AppState,
    caller: &Caller,
    render: &str,
    command: impl Fn(chrono::DateTime<chrono::Utc>) -> RenderJobCommand,
) -> Result<Json<Value>, ApiError> {
    caller.may_change()?;
    let render = id(render, "render_id")?;
    let scope = super::scope_of(state, caller, render).await?;
    let job = JobId::new(render).map_err(|_| ApiError::NotFound)?;
    state.orchestrator.control(job, scope, command).await?;
    let status = state
        .orchestrator
        .job_progress(job)
        .await
        .map_or("unknown", |p| p.status);
    Ok(Json(json!({ "id": render, "status": status })))
}

/// `POST /v1/renders/{id}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(render): Path<String>,
) -> Result<Json<Value>, ApiError> {
    control(&state, &caller, &render, |at| RenderJobCommand::Pause {
        at,
    })
    .await
}

/// `POST /v1/renders/{id}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(render): Path<String>,
) -> Result<Json<Value>, ApiError> {
    control(&state, &caller, &render, |at| RenderJobCommand::Resume {
        at,
    })
    .await
}

/// `POST /v1/renders/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(render): Path<String>,
) -> Result<Json<Value>, ApiError> {
    control(&state, &caller, &render, |at| RenderJobCommand::Cancel {
        reason: None,
        at,
    })
    .await
}

/// `POST /v1/renders/{id}/retry`: every failed task queued again.
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(render): Path<String>,
) -> Result<Json<Value>, ApiError> {
    control(&state, &caller, &render, |at| {
        RenderJobCommand::RetryFailedTasks { at }
    })
    .await
}

/// `POST /v1/renders/{id}/priority`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityBody {
    priority: u8,
}

/// `POST /v1/renders/{id}/priority`: queued tasks are picked by the new
/// priority from now on.
pub async fn priority(
    State(state): State<AppState>,
    caller: Caller,
    Path(render): Path<String>,
    request: Result<Json<PriorityBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(request)?;
    let priority = Priority::new(b.priority).map_err(|e| field("priority", &e.reason))?;
    control(&state, &caller, &render, move |at| {
        RenderJobCommand::ChangePriority { priority, at }
    })
    .await
}

/// A frame range in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FramesBody {
    start: u32,
    end: u32,
}

/// A resolution in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResolutionBody {
    width: u32,
    height: u32,
}

/// `POST /v1/renders`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    name: Option<String>,
    scene_file_id: Uuid,
    renderer: String,
    frames: FramesBody,
    #[serde(default = "one")]
    chunk_size: u32,
    #[serde(default = "fifty")]
    priority: u8,
    resolution: Option<ResolutionBody>,
    samples: Option<u32>,
    #[serde(default = "three")]
    max_retries: u32,
    #[serde(default)]
    requirements: Requirements,
    task_timeout_seconds: Option<u32>,
    stall_timeout_seconds: Option<u32>,
    #[serde(default)]
    depends_on: Vec<Uuid>,
}

fn one() -> u32 {
    1
}
fn fifty() -> u8 {
    50
}
fn three() -> u32 {
    3
}

fn invalid(e: ValidationError) -> ApiError {
    field(e.field, &e.reason)
}

/// The id a render submitted with this key gets: the same key of the same
/// tenant always names the same render, so a retried submission finds it
/// (and two racing ones meet at the store's no-stream check).
fn idempotent_id(tenant: Uuid, key: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"flatrender.idempotency.v1\0")
        .chain_update(tenant.as_bytes())
        .chain_update(key.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| (0x21..=0x7e).contains(&b)))
        .map(|k| Some(k.to_string()))
        .ok_or_else(|| ApiError::BadRequest {
            code: "invalid_idempotency_key",
            message: "Idempotency-Key is 1 to 255 visible ASCII characters".into(),
            details: json!({ "header": "Idempotency-Key" }),
        })
}

/// The answer to a submission: the same for every retry of it.
fn submitted_json(s: &JobSubmitted, schedulable: Option<String>) -> Value {
    json!({
        "id": s.job_id,
        "name": s.name,
        "status": if s.depends_on.is_empty() { "active" } else { "waiting" },
        "renderer": s.renderer,
        "scene_file_id": s.scene_file_id,
        "frames": { "start": s.frames.start(), "end": s.frames.end() },
        "chunk_size": s.chunk_size.get(),
        "priority": s.priority.get(),
        "resolution": s.resolution,
        "samples": s.samples,
        "max_retries": s.max_retries,
        "requirements": s.requirements,
        "task_timeout_seconds": s.task_timeout_seconds,
        "stall_timeout_seconds": s.stall_timeout_seconds,
        "depends_on": s.depends_on,
        "submitted_at": projections::time(s.submitted_at),
        "schedulable": schedulable.is_none(),
        "unschedulable_reason": schedulable,
    })
}

/// Whether the stored submission is the one this body asks for.
fn same_submission(stored: &JobSubmitted, wanted: &SubmitJob) -> bool {
    stored.tenant_id == wanted.tenant_id
        && stored.name == wanted.name
        && stored.scene_file_id == wanted.scene_file_id
        && stored.renderer == wanted.renderer
        && stored.frames == wanted.frames
        && stored.chunk_size == wanted.chunk_size
        && stored.resolution == wanted.resolution
        && stored.samples == wanted.samples
        && stored.priority == wanted.priority
        && stored.requirements == wanted.requirements
        && stored.max_retries == wanted.max_retries
        && stored.task_timeout_seconds == wanted.task_timeout_seconds
        && stored.stall_timeout_seconds == wanted.stall_timeout_seconds
        && stored.depends_on == wanted.depends_on
}

/// `POST /v1/renders`: checks everything before anything is appended; an
/// `Idempotency-Key` makes a retry answer the first submission's response
/// (and the same key with another body a 422).
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    request: Result<Json<SubmitBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    caller.may_change()?;
    let key = idempotency_key(&headers)?;
    let b = body(request)?;
    let tenant = caller.tenant_id;
    let job_id = match &key {
        Some(k) => idempotent_id(tenant.as_uuid(), k),
        None => Uuid::new_v4(),
    };
    let job_id = JobId::new(job_id).map_err(|e| ApiError::Internal(e.into()))?;
    let name = b
        .name
        .clone()
        .unwrap_or_else(|| format!("render {}", &job_id.to_string()[..8]));
    let wanted = SubmitJob {
        job_id,
        tenant_id: tenant,
        name: Label::parse(name).map_err(|e| field("name", &e.reason))?,
        scene_file_id: FileId::new(b.scene_file_id)
            .map_err(|_| field("scene_file_id", "not a file id"))?,
        renderer: Identifier::parse(b.renderer.clone())
            .map_err(|e| field("renderer", &e.reason))?,
        frames: FrameRange::new(b.frames.start, b.frames.end)
            .map_err(|e| field("frames", &e.reason))?,
        chunk_size: ChunkSize::new(b.chunk_size).map_err(|e| field("chunk_size", &e.reason))?,
        resolution: b
            .resolution
            .map(|r| Resolution::new(r.width, r.height))
            .transpose()
            .map_err(|e| field("resolution", &e.reason))?,
        samples: b.samples,
        priority: Priority::new(b.priority).map_err(|e| field("priority", &e.reason))?,
        requirements: b.requirements.clone(),
        max_retries: b.max_retries,
        task_timeout_seconds: b.task_timeout_seconds,
        stall_timeout_seconds: b.stall_timeout_seconds,
        depends_on: b
            .depends_on
            .iter()
            .map(|d| JobId::new(*d))
            .collect::<Result<_, _>>()
            .map_err(|e| field("depends_on", &e.reason))?,
        at: state.clock.now(),
    };
    // A retry of a submission already taken.
    if key.is_some()
        && let Some(response) = replay(&state, &wanted).await?
    {
        return Ok(response);
    }
    let renderer = wanted.renderer.as_str().to_string();
    let offered = state.orchestrator.renderer_offered(&renderer).await;
    if !offered && !KNOWN_RENDERERS.contains(&renderer.as_str()) {
        return Err(ApiError::Unprocessable {
            code: "unknown_renderer",
            message: format!(
                "no registered node offers the renderer `{renderer}` and the server knows only {}",
                KNOWN_RENDERERS.join(", ")
            ),
            details: json!({ "field": "renderer" }),
        });
    }
    let scene = state
        .orchestrator
        .upload_of(tenant, wanted.scene_file_id)
        .await
        .ok_or(ApiError::NotFound)?;
    let reads = match renderer.as_str() {
        "builtin" => scene.content_type == SCENE_JSON,
        "blender" => scene.content_type == BLEND,
        _ => true,
    };
    if !reads {
        return Err(ApiError::Unprocessable {
            code: "not_a_scene",
            message: format!(
                "file {} is not a scene the {renderer} renderer reads",
                wanted.scene_file_id
            ),
            details: json!({ "field": "scene_file_id" }),
        });
    }
    match state.orchestrator.submit(wanted.clone()).await {
        Ok(()) => {}
        Err(e) => {
            // A concurrent retry with the same key got there first.
            if key.is_some()
                && let Some(response) = replay(&state, &wanted).await?
            {
                return Ok(response);
            }
            return Err(match e {
                orchestrator::OrchestratorError::Domain(domain::DomainError::Validation(v)) => {
                    invalid(v)
                }
                other => other.into(),
            });
        }
    }
    let stored = state.orchestrator.submission(job_id).await.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("a submitted render is not in the view"))
    })?;
    let why =
        (!offered).then(|| format!("no registered node offers the renderer `{renderer}` yet"));
    Ok((StatusCode::CREATED, Json(submitted_json(&stored, why))).into_response())
}

/// The first response to a submission with this key, if it was taken;
/// 422 if the key was used for another submission.
async fn replay(state: &AppState, wanted: &SubmitJob) -> Result<Option<Response>, ApiError> {
    let Some(stored) = state.orchestrator.submission(wanted.job_id).await else {
        return Ok(None);
    };
    if !same_submission(&stored, wanted) {
        return Err(ApiError::Unprocessable {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used for a different submission".into(),
            details: json!({ "header": "Idempotency-Key" }),
        });
    }
    let offered = state
        .orchestrator
        .renderer_offered(stored.renderer.as_str())
        .await;
    let why = (!offered).then(|| {
        format!(
            "no registered node offers the renderer `{}` yet",
            stored.renderer
        )
    });
    Ok(Some(
        (StatusCode::CREATED, Json(submitted_json(&stored, why))).into_response(),
    ))
}

/// A body for streaming responses.
pub(crate) fn attachment(content_type: &str, size: u64, name: &str, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}
