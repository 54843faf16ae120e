//! What the WebSocket sends (`contracts/websocket/render-progress.md`):
//! one message per stored event of a render's stream, built from the
//! event alone (so that a catch-up read and the live feed give the same
//! bytes), and the snapshot a connection starts with.

use domain::Aggregate;
use domain::render_job::{RenderJob, RenderJobEvent, TaskStatus};
use eventstore::RecordedEvent;
use serde_json::{Value, json};

/// The message of a stored event of a `render_job` stream, or `None` for
/// any other stream. Every event of a render's stream has exactly one.
/// The message of a stored event a watcher may get: a render's
/// ([`event_message`]) or a node's ([`node_message`], farm watchers only).
pub fn message(event: &RecordedEvent) -> Option<Value> {
    event_message(event).or_else(|| node_message(event))
}

/// The `node.status` message of a node's event: what it changed of the
/// node's connectivity and availability (null: unchanged).
pub fn node_message(event: &RecordedEvent) -> Option<Value> {
    if event.stream_type != "node" {
        return None;
    }
    let (connectivity, availability) = match event.event_type.as_str() {
        "node.registered" => (json!("offline"), json!("enabled")),
        "node.online" => (json!("online"), Value::Null),
        "node.offline" => (json!("offline"), Value::Null),
        "node.drained" => (Value::Null, json!("draining")),
        "node.enabled" => (Value::Null, json!("enabled")),
        "node.disabled" => (Value::Null, json!("disabled")),
        "node.deregistered" => (Value::Null, json!("deregistered")),
        _ => (Value::Null, Value::Null),
    };
    Some(json!({
        "type": "node.status",
        "position": event.global_position,
        "node_id": event.stream_id,
        "routing_key": event.routing_key,
        "at": projections::time(event.recorded_at),
        "name": event.payload.get("name").cloned().unwrap_or(Value::Null),
        "connectivity": connectivity,
        "availability": availability,
    }))
}

pub fn event_message(event: &RecordedEvent) -> Option<Value> {
    if event.stream_type != "render_job" {
        return None;
    }
    let p = &event.payload;
    let field = |name: &str| p.get(name).cloned().unwrap_or(Value::Null);
    let mut message = match event.event_type.as_str() {
        "render.job.submitted" => json!({
            "type": "render.status",
            "status": "active",
            "reason": null,
        }),
        "render.job.split" => {
            let tasks: Vec<Value> = p
                .get("tasks")
                .and_then(Value::as_array)
                .map(|tasks| {
                    tasks
                        .iter()
                        .map(|t| {
                            json!({
                                "task_id": t.get("task_id"),
                                "index": t.get("index"),
                                "frames": t.get("frames"),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({ "type": "render.split", "tasks": tasks })
        }
        "render.task.assigned" => json!({
            "type": "task.assigned",
            "task_id": field("task_id"),
            "node_id": field("node_id"),
            "attempt": field("lease_epoch"),
            "frames": field("frames"),
        }),
        "render.task.started" => json!({
            "type": "task.started",
            "task_id": field("task_id"),
            "node_id": field("node_id"),
            "attempt": field("lease_epoch"),
        }),
        "render.task.progressed" => json!({
            "type": "frame.done",
            "task_id": field("task_id"),
            "node_id": field("node_id"),
            "attempt": field("lease_epoch"),
            "frame": field("frame"),
            "file_id": field("output_file_id"),
            "url": p.get("frame").map(|f| format!("/v1/renders/{}/frames/{f}", event.stream_id)),
        }),
        "render.task.completed" => json!({
            "type": "task.completed",
            "task_id": field("task_id"),
            "node_id": field("node_id"),
            "attempt": field("lease_epoch"),
            "render_seconds": field("render_seconds"),
        }),
        "render.task.failed" => json!({
            "type": "task.failed",
            "task_id": field("task_id"),
            "node_id": field("node_id"),
            "attempt": field("lease_epoch"),
            "reason": field("error"),
            "cause": field("cause"),
            "failures": field("failures"),
        }),
        "render.task.requeued" => json!({
            "type": "task.requeued",
            "task_id": field("task_id"),
            "node_id": field("node_id"),
            "attempt": field("lease_epoch"),
            "reason": field("reason"),
        }),
        "render.task.released" => json!({
            "type": "task.requeued",
            "task_id": field("task_id"),
            "node_id": field("node_id"),
            "attempt": field("lease_epoch"),
            "reason": "released",
        }),
        "render.task.retried" => json!({
            "type": "task.requeued",
            "task_id": field("task_id"),
            "node_id": null,
            "attempt": null,
            "reason": "retried",
        }),
        "render.job.paused" => status("paused", Value::Null),
        "render.job.resumed" => status("active", Value::Null),
        "render.job.cancelled" => status("cancelled", field("reason")),
        "render.job.completed" => status("completed", Value::Null),
        "render.job.failed" => status("failed", field("error")),
        "render.job.waiting" => status("waiting", Value::Null),
        "render.job.released" => status("active", Value::Null),
        "render.job.dependency_failed" => status(
            "failed",
            json!(format!(
                "dependency_failed: render {} {}",
                p.get("dependency_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                p.get("dependency_status")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )),
        ),
        "render.job.priority_changed" => json!({
            "type": "render.priority",
            "priority": field("priority"),
        }),
        // An event type added later that no message names yet.
        _ => json!({ "type": "render.event" }),
    };
    let object = message.as_object_mut()?;
    object.insert("position".into(), json!(event.global_position));
    object.insert("render_id".into(), json!(event.stream_id));
    object.insert("routing_key".into(), json!(event.routing_key));
    object.insert("at".into(), json!(projections::time(event.recorded_at)));
    Some(message)
}

fn status(status: &str, reason: Value) -> Value {
    json!({ "type": "render.status", "status": status, "reason": reason })
}

/// The render and its tasks as `events` (the stream up to `position`)
/// leave them: the snapshot a connection to one render starts with.
pub fn render_snapshot(render_id: uuid::Uuid, events: &[RecordedEvent], position: i64) -> Value {
    let mut job = RenderJob::default();
    for event in events {
        match event.to_domain::<RenderJobEvent>() {
            Ok(e) => job = job.evolve(&e),
            Err(e) => {
                tracing::error!(event_id = %event.event_id, error = %e, "undecodable event left out of a snapshot");
            }
        }
    }
    let tasks: Vec<Value> = job
        .tasks()
        .map(|t| {
            let done = if t.status == TaskStatus::Completed {
                t.frames.len()
            } else {
                t.frames_done.len() as u64
            };
            json!({
                "task_id": t.id,
                "index": t.index,
                "frames": { "start": t.frames.start(), "end": t.frames.end() },
                "status": t.status.as_str(),
                "node_id": t.lease.map(|l| l.node_id),
                "attempt": t.last_epoch,
                "frames_done": done,
            })
        })
        .collect();
    let frames_done: u64 = job.current_outputs().count() as u64;
    let submission = job.submission();
    json!({
        "type": "snapshot",
        "position": position,
        "render": {
            "render_id": render_id,
            "name": submission.map(|s| s.name.as_str().to_owned()),
            "status": job.status().as_str(),
            "priority": job.priority().map(|p| p.get()),
            "frames_total": submission.map(|s| s.frames.len()),
            "frames_done": frames_done,
        },
        "tasks": tasks,
    })
}
