//! The node-agent API (`/v1/agent/...`): what render nodes call, every
//! request signed (see [`crate::node_auth`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::node::Capabilities;
use domain::{Aggregate, Label, Node, NodeCommand, NodeEvent, NodeId, SecretKeyId};
use eventstore::{
    Actor, AppendRequest, AsOf, EventMetadata, EventStore, ExpectedVersion, NewEvent,
};
use serde_json::json;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::node_auth::SignedNode;

fn bad_body(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_body",
        message: format!("the body is not valid: {e}"),
        details: json!({}),
    }
}

/// The node's aggregate and its stream version.
async fn load_node(state: &AppState, node_id: Uuid) -> Result<(Node, u64), ApiError> {
    let stored = state.store.read_stream_as_of(node_id, AsOf::End).await?;
    let events = stored
        .iter()
        .map(|e| e.to_domain::<NodeEvent>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("undecodable node event: {e}")))?;
    Ok((Node::replay(&events), stored.len() as u64))
}

/// `POST /v1/agent/register`: the node reports its capabilities; the first
/// time it is registered (`node.registered`), later only changes are
/// recorded (`node.capabilities_changed`).
pub async fn register(
    State(state): State<AppState>,
    node: SignedNode,
) -> Result<Response, ApiError> {
    let capabilities: Capabilities = serde_json::from_slice(&node.body).map_err(bad_body)?;
    let node_id = NodeId::new(node.node_id).map_err(|e| ApiError::BadRequest {
        code: "invalid_node",
        message: e.to_string(),
        details: json!({}),
    })?;
    let at = state.clock.now();
    let (current, version) = load_node(&state, node.node_id).await?;
    let command = if version == 0 {
        NodeCommand::Register {
            node_id,
            name: Label::parse(node.name.clone()).map_err(bad_body)?,
            capabilities,
            secret_key_id: SecretKeyId::new(node.key_id).map_err(bad_body)?,
            at,
        }
    } else {
        NodeCommand::ChangeCapabilities { capabilities, at }
    };
    let events = current.decide(command)?;
    if !events.is_empty() {
        let metadata = EventMetadata {
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: Actor::Node { id: node.node_id },
            trace_id: None,
        };
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        state
            .store
            .append(AppendRequest {
                stream_id: node.node_id,
                stream_type: "node".into(),
                tenant_id: None,
                expected,
                events: events
                    .iter()
                    .map(|e| NewEvent::from_domain(Uuid::new_v4(), e, metadata.clone()))
                    .collect(),
            })
            .await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/agent/heartbeat`: liveness only (heartbeats are not events).
pub async fn heartbeat(State(state): State<AppState>, node: SignedNode) -> Json<serde_json::Value> {
    let now = state.clock.now();
    state
        .liveness
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(node.node_id, now);
    Json(json!({ "stop": [] }))
}

/// `GET /v1/agent/files/{sha256}`: an input by its digest.
pub async fn download(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    _node: SignedNode,
) -> Result<Response, ApiError> {
    match state.blobs.get(&sha256).await {
        Ok(Some(bytes)) => {
            Ok(([("content-type", "application/octet-stream")], bytes).into_response())
        }
        Ok(None) => Err(ApiError::NotFound),
        Err(crate::files::FileError::BadDigest) => Err(ApiError::BadRequest {
            code: "invalid_digest",
            message: "a file is named by its lower-case hex SHA-256".into(),
            details: json!({}),
        }),
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}
