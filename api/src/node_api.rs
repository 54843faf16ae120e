//! The node-agent API (`/v1/agent/...`): what render nodes call, every
//! request signed (see [`crate::node_auth`]).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use contracts::node_agent::{self as contract, Problem};
use contracts::node_signing;
use domain::node::Capabilities;
use domain::{
    ContentType, FileId, FileName, Label, LeaseRef, NodeId, Note, SecretKeyId, Sha256Digest, TaskId,
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::node_auth::{SignedNode, SignedUpload};

/// The contract's 400 for a body or query that breaks its schema: the
/// message names each field, `details.problems` lists them.
fn invalid(code: &'static str, what: &str, problems: &[Problem]) -> ApiError {
    ApiError::BadRequest {
        code,
        message: format!("{what}: {}", contract::describe(problems)),
        details: json!({ "problems": problems.iter().map(Problem::to_json).collect::<Vec<_>>() }),
    }
}

fn bad_body(e: impl std::fmt::Display) -> ApiError {
    let problem = Problem {
        field: String::new(),
        message: e.to_string(),
    };
    invalid("invalid_body", "the body is not valid", &[problem])
}

/// `POST /v1/agent/register`: the node reports its capabilities; the first
/// time it is registered (`node.registered`), later only changes are
/// recorded (`node.capabilities_changed`).
pub async fn register(
    State(state): State<AppState>,
    node: SignedNode,
) -> Result<Response, ApiError> {
    let capabilities: Capabilities = parse_body(&node, "register")?;
    let node_id = NodeId::new(node.node_id).map_err(|e| ApiError::BadRequest {
        code: "invalid_node",
        message: e.to_string(),
        details: json!({}),
    })?;
    // A node registered by another instance is known once the view catches up.
    state.orchestrator.catch_up().await?;
    state
        .orchestrator
        .register_node(
            node_id,
            Label::parse(node.name.clone()).map_err(bad_body)?,
            capabilities,
            SecretKeyId::new(node.key_id).map_err(bad_body)?,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn node_id_of(node: &SignedNode) -> Result<NodeId, ApiError> {
    NodeId::new(node.node_id).map_err(|e| ApiError::BadRequest {
        code: "invalid_node",
        message: e.to_string(),
        details: json!({}),
    })
}

fn task_id_of(text: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(text).map_err(|_| ApiError::NotFound)
}

/// A lease as nodes present it in bodies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireLease {
    task_id: Uuid,
    lease_epoch: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    #[serde(default)]
    leases: Vec<WireLease>,
}

/// The JSON body of a request for `operation`: checked against the
/// contract's schema first (400 `invalid_body` naming each field; an empty
/// optional body is `{}`), then parsed into the strict Rust type.
fn parse_body<T: serde::de::DeserializeOwned>(
    node: &SignedNode,
    operation: &str,
) -> Result<T, ApiError> {
    let value = contract::request_body(operation, &node.body)
        .map_err(|problems| invalid("invalid_body", "the body is not valid", &problems))?;
    serde_json::from_value(value).map_err(bad_body)
}

/// `POST /v1/agent/heartbeat`: keeps the node online and renews the leases
/// it holds (not an event); answers the leases it must stop.
pub async fn heartbeat(
    State(state): State<AppState>,
    node: SignedNode,
) -> Result<Json<serde_json::Value>, ApiError> {
    let node_id = node_id_of(&node)?;
    let body: HeartbeatBody = parse_body(&node, "heartbeat")?;
    let held = body
        .leases
        .iter()
        .map(|l| {
            Ok(LeaseRef {
                task_id: TaskId::new(l.task_id).map_err(bad_body)?,
                node_id,
                lease_epoch: l.lease_epoch,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let stop = state.orchestrator.heartbeat(node_id, &held).await?;
    let stop: Vec<_> = stop
        .iter()
        .map(|l| json!({ "task_id": l.task_id, "lease_epoch": l.lease_epoch }))
        .collect();
    // The timings the node must keep, in whole seconds (rounded up).
    let seconds = |d: chrono::Duration| (d.num_milliseconds().max(1) + 999) / 1000;
    let config = state.orchestrator.config();
    Ok(Json(json!({
        "stop": stop,
        "lease_seconds": seconds(config.lease_ttl),
        "offline_after_seconds": seconds(config.offline_after),
    })))
}

/// The longest a claim may wait for work.
pub const MAX_CLAIM_WAIT_SECONDS: u64 = 30;

/// The query of a request for `operation`, checked against the contract:
/// an unknown, repeated, malformed or out-of-range parameter (or a missing
/// required one) is the contract's 400 `invalid_query` (parsed after
/// authentication, never a bare rejection).
fn query_of(
    raw: &Option<String>,
    operation: &str,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, ApiError> {
    contract::parse_query(operation, raw.as_deref())
        .map_err(|problems| invalid("invalid_query", "the query is not valid", &problems))
}

/// An integer query parameter; absent is `None`. The whole query is checked
/// against the contract of the operation that declares `name` (see
/// [`query_of`]).
fn query_u64(raw: &Option<String>, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(operation) = contract::operations()
        .iter()
        .find(|o| o.parameter_names("query").iter().any(|n| n == name))
    else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "the contract declares no query parameter {name}"
        )));
    };
    Ok(query_of(raw, &operation.id)?
        .get(name)
        .and_then(serde_json::Value::as_u64))
}

/// `POST /v1/agent/claim?wait_seconds=N`: a lease on the best task for this
/// node, signed with the node's secret, or 204 when none came within the wait.
pub async fn claim(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    node: SignedNode,
) -> Result<Response, ApiError> {
    let node_id = node_id_of(&node)?;
    // A claim has no body; the wait is in the query (absent: no wait).
    contract::request_body("claim", &node.body)
        .map_err(|problems| invalid("invalid_body", "the body is not valid", &problems))?;
    let wait = query_of(&query, "claim")?
        .get("wait_seconds")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
        .min(MAX_CLAIM_WAIT_SECONDS);
    // Waits queued in the scheduler: woken only when a task this node can
    // run appears (work from other instances arrives through the view's
    // follower), never polled.
    let claimed = state
        .orchestrator
        .claim_waiting(node_id, std::time::Duration::from_secs(wait))
        .await?;
    let Some(assignment) = claimed else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let mut value = serde_json::to_value(&assignment).map_err(|e| ApiError::Internal(e.into()))?;
    let signature = node_signing::sign_assignment(&node.secret, &value);
    value["orchestrator_signature"] = json!(signature);
    Ok(Json(value).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    lease_epoch: u32,
    #[serde(default)]
    frame: Option<u32>,
    #[serde(default)]
    output_file_id: Option<Uuid>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    rendering_frame: Option<u32>,
    #[serde(default)]
    percent: Option<f64>,
    #[serde(default)]
    cause: Option<domain::render_job::FailureCause>,
}

/// The lease a report for `operation` presents: the body checked against the
/// contract (400), then the task id of the path (404 unless of its form).
fn lease_of(
    node: &SignedNode,
    task_id: &str,
    operation: &str,
) -> Result<(LeaseRef, LeaseBody), ApiError> {
    let body: LeaseBody = parse_body(node, operation)?;
    contract::validate_path_parameter(operation, "task_id", task_id)
        .map_err(|_| ApiError::NotFound)?;
    let lease = LeaseRef {
        task_id: task_id_of(task_id)?,
        node_id: node_id_of(node)?,
        lease_epoch: body.lease_epoch,
    };
    Ok((lease, body))
}

/// The scheduler's answer about a lease, with a task its view no longer
/// holds told apart from one no render has: the view keeps only renders
/// that are not finished, so a report on a task of a finished render (a
/// node that did not hear of the cancellation yet) is found in the read
/// model and refused as a stale lease (409), as the contract says; a task
/// no render has is 404.
async fn about_lease<T>(
    state: &AppState,
    lease: LeaseRef,
    result: Result<T, orchestrator::OrchestratorError>,
) -> Result<T, ApiError> {
    match result {
        Err(orchestrator::OrchestratorError::NotFound("task")) => {
            let known = projections::query::rows::<projections::TaskRow>(
                &state.store,
                "task_id = $1",
                &[projections::query::Param::Text(lease.task_id.to_string())],
            )
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
            Err(if known.is_empty() {
                ApiError::NotFound
            } else {
                ApiError::Domain(domain::DomainError::StaleLease {
                    task_id: lease.task_id,
                    presented: lease.lease_epoch,
                    current: None,
                })
            })
        }
        other => other.map_err(ApiError::from),
    }
}

/// `POST /v1/agent/tasks/{task_id}/progress`: without a frame, the node
/// started (or goes on); with one, that frame is finished (an event).
pub async fn progress(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    node: SignedNode,
) -> Result<StatusCode, ApiError> {
    let (lease, body) = lease_of(&node, &task_id, "progress")?;
    // The schema allows `percent` only with `rendering_frame` and without
    // `frame`; `rendering_frame` alone means nothing.
    if let Some(percent) = body.percent {
        return match (body.frame, body.rendering_frame) {
            (None, Some(frame)) => fine_progress(&state, lease, frame, percent).await,
            _ => Err(bad_body(
                "percent comes with rendering_frame, without frame",
            )),
        };
    }
    let output = body
        .output_file_id
        .map(FileId::new)
        .transpose()
        .map_err(bad_body)?;
    let reported = state.orchestrator.progress(lease, body.frame, output).await;
    about_lease(&state, lease, reported).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Fine progress within a frame: checked against the lease (which it
/// renews), sent to WebSocket watchers, never stored.
async fn fine_progress(
    state: &AppState,
    lease: LeaseRef,
    frame: u32,
    percent: f64,
) -> Result<StatusCode, ApiError> {
    let heard = state.orchestrator.heard_on_lease(lease).await;
    let (job_id, tenant_id) = about_lease(state, lease, heard).await?;
    let render = job_id.as_uuid();
    state.live.publish(
        tenant_id.as_uuid(),
        render,
        crate::live::Kind::Progress,
        lease.task_id.as_uuid(),
        &json!({
            "type": "progress",
            "render_id": render,
            "task_id": lease.task_id,
            "node_id": lease.node_id,
            "attempt": lease.lease_epoch,
            "frame": frame,
            "percent": (percent * 10.0).round() / 10.0,
        }),
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogBody {
    lease_epoch: u32,
    lines: Vec<crate::task_logs::LogLine>,
}

/// `POST /v1/agent/tasks/{task_id}/logs`: lines of the renderer's output,
/// appended to the attempt's log before the answer (so that what was
/// answered is kept if the node dies next) and sent to the watchers that
/// follow the task's log.
pub async fn logs(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    node: SignedNode,
) -> Result<StatusCode, ApiError> {
    let body: LogBody = parse_body(&node, "logs")?;
    contract::validate_path_parameter("logs", "task_id", &task_id)
        .map_err(|_| ApiError::NotFound)?;
    let lease = LeaseRef {
        task_id: task_id_of(&task_id)?,
        node_id: node_id_of(&node)?,
        lease_epoch: body.lease_epoch,
    };
    let heard = state.orchestrator.heard_on_lease(lease).await;
    let (job_id, tenant_id) = about_lease(&state, lease, heard).await?;
    let attempt = crate::task_logs::Attempt {
        tenant_id: tenant_id.as_uuid(),
        render_id: job_id.as_uuid(),
        task_id: lease.task_id.as_uuid(),
        attempt: lease.lease_epoch,
    };
    let appended = state
        .logs
        .append(attempt, &body.lines)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    if appended.dropped > 0 {
        tracing::debug!(task_id = %lease.task_id, dropped = appended.dropped, "task log full; lines dropped");
    }
    state.live.publish(
        attempt.tenant_id,
        attempt.render_id,
        crate::live::Kind::Log,
        attempt.task_id,
        &json!({
            "type": "log",
            "render_id": attempt.render_id,
            "task_id": attempt.task_id,
            "attempt": attempt.attempt,
            "lines": body.lines,
        }),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/agent/tasks/{task_id}/complete`: refused (409) on a stale lease.
pub async fn complete(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    node: SignedNode,
) -> Result<StatusCode, ApiError> {
    let (lease, _) = lease_of(&node, &task_id, "complete")?;
    let completed = state.orchestrator.complete(lease).await;
    about_lease(&state, lease, completed).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/agent/tasks/{task_id}/fail`: the renderer's error lines.
pub async fn fail(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    node: SignedNode,
) -> Result<StatusCode, ApiError> {
    let (lease, body) = lease_of(&node, &task_id, "fail")?;
    // The contract requires `error`: 1 to 1000 characters, not blank, no
    // control characters but newline and tab; longer is refused, not cut.
    let note = Note::parse(body.error.unwrap_or_default()).map_err(bad_body)?;
    let failed = state.orchestrator.fail_with(lease, note, body.cause).await;
    about_lease(&state, lease, failed).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/agent/tasks/{task_id}/release`: the node gives the task back.
pub async fn release(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    node: SignedNode,
) -> Result<StatusCode, ApiError> {
    let (lease, _) = lease_of(&node, &task_id, "release")?;
    let released = state.orchestrator.release(lease).await;
    about_lease(&state, lease, released).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/agent/outputs/{task_id}/{frame}?lease_epoch=N`: a rendered
/// frame, stored by its SHA-256 (`file.output_stored.v1`) while the node
/// holds the lease. The lease and frame are checked before the body is
/// read; the body is streamed to a temporary file and counts only as a PNG
/// that decodes completely, of the render's resolution when it set one
/// (422 `invalid_output` otherwise).
pub async fn upload_output(
    State(state): State<AppState>,
    Path((task_id, frame)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    upload: SignedUpload,
) -> Result<Response, ApiError> {
    let frame: u32 = frame.parse().map_err(|_| ApiError::NotFound)?;
    let lease_epoch = query_u64(&query, "lease_epoch")?
        .and_then(|e| u32::try_from(e).ok())
        .ok_or_else(|| ApiError::BadRequest {
            code: "invalid_query",
            message: "lease_epoch is required".into(),
            details: json!({ "parameter": "lease_epoch" }),
        })?;
    let lease = LeaseRef {
        task_id: task_id_of(&task_id)?,
        node_id: NodeId::new(upload.node_id).map_err(|e| ApiError::BadRequest {
            code: "invalid_node",
            message: e.to_string(),
            details: json!({}),
        })?,
        lease_epoch,
    };
    let checked = state.orchestrator.check_upload(lease, frame).await;
    let expected_size = about_lease(&state, lease, checked).await?;
    let temp = upload.receive(&state).await?;
    let path = temp.path().to_path_buf();
    tokio::task::spawn_blocking(move || crate::output_image::check_png(&path, expected_size))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| match e {
            crate::output_image::OutputImageError::Io(e) => ApiError::Internal(e.into()),
            refused => ApiError::Unprocessable {
                code: "invalid_output",
                message: refused.to_string(),
                details: json!({}),
            },
        })?;
    let stored = temp
        .store()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let output = orchestrator::FileOutput {
        name: FileName::parse(node_agent::renderer::frame_file_name(frame)).map_err(bad_body)?,
        content_type: ContentType::parse("image/png").map_err(bad_body)?,
        size_bytes: stored.size_bytes,
        sha256: Sha256Digest::parse(stored.sha256.clone()).map_err(bad_body)?,
    };
    // The lease is checked again as the output is recorded.
    let recorded = state.orchestrator.record_output(lease, frame, output).await;
    let file_id = about_lease(&state, lease, recorded).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "file_id": file_id, "sha256": stored.sha256, "size_bytes": stored.size_bytes }),
        ),
    )
        .into_response())
}

/// `GET /v1/agent/files/{sha256}`: an input by its digest.
pub async fn download(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    node: SignedNode,
) -> Result<Response, ApiError> {
    // A node reads only the inputs of tasks it holds a lease on.
    if !state
        .orchestrator
        .may_read_input(node_id_of(&node)?, &sha256)
        .await
    {
        return Err(ApiError::NotFound);
    }
    // Streamed from disk, checked against its digest on the way (a
    // corrupted blob's response is cut short; the agent checks it too).
    match state.blobs.read_stream(&sha256).await {
        Ok(Some((size, stream))) => Ok((
            [
                (
                    axum::http::header::CONTENT_TYPE,
                    "application/octet-stream".to_owned(),
                ),
                (axum::http::header::CONTENT_LENGTH, size.to_string()),
            ],
            axum::body::Body::from_stream(stream),
        )
            .into_response()),
        Ok(None) => Err(ApiError::NotFound),
        Err(crate::files::FileError::BadDigest) => Err(ApiError::BadRequest {
            code: "invalid_digest",
            message: "a file is named by its lower-case hex SHA-256".into(),
            details: json!({}),
        }),
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}
