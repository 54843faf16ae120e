//! Signed node requests: a valid one is served; a replayed nonce, a stale
//! timestamp, a tampered body, a wrong node id or an unknown node is refused
//! with the contract's error body, and nothing changes in the store.

use std::sync::Arc;

use api::AppState;
use api::enroll::Enrolment;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use contracts::node_signing::{self, NodeSecret, SignedParts, headers};
use eventstore::{EventStore, ManualClock};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;
use uuid::Uuid;

fn capabilities() -> Vec<u8> {
    json!({
        "cores": 8,
        "memory_bytes": 17_179_869_184u64,
        "gpus": [],
        "renderers": [{ "name": "builtin", "version": "1" }],
        "tags": ["linux"],
        "node_class": "standard",
    })
    .to_string()
    .into_bytes()
}

/// A request as a node would send it.
#[derive(Clone)]
struct Signed {
    node_id: String,
    key_id: String,
    timestamp: i64,
    nonce: String,
    body: Vec<u8>,
    digest: String,
    signature: String,
}

fn sign(enrolment: &Enrolment, path: &str, timestamp: i64, body: Vec<u8>) -> Signed {
    let secret = NodeSecret::from_hex(&enrolment.secret_hex).unwrap();
    let node_id = enrolment.node_id.to_string();
    let key_id = enrolment.key_id.to_string();
    let nonce = Uuid::new_v4().simple().to_string();
    let digest = node_signing::content_sha256(&body);
    let parts = SignedParts {
        method: "POST",
        path,
        query: "",
        node_id: &node_id,
        key_id: &key_id,
        timestamp,
        nonce: &nonce,
        content_sha256: &digest,
    };
    let signature = node_signing::sign_request(&secret, &parts);
    Signed {
        node_id,
        key_id,
        timestamp,
        nonce,
        body,
        digest,
        signature,
    }
}

async fn send(state: &AppState, path: &str, s: &Signed) -> (StatusCode, serde_json::Value) {
    let request = Request::post(path)
        .header(headers::NODE, &s.node_id)
        .header(headers::KEY_ID, &s.key_id)
        .header(headers::TIMESTAMP, s.timestamp.to_string())
        .header(headers::NONCE, &s.nonce)
        .header(headers::CONTENT_SHA256, &s.digest)
        .header(headers::SIGNATURE, &s.signature)
        .body(Body::from(s.body.clone()))
        .unwrap();
    let response = api::router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

async fn setup() -> (AppState, std::path::PathBuf, Enrolment, i64) {
    let (mut state, dir) = crate::state().await;
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z")
        .unwrap()
        .to_utc();
    state.clock = Arc::new(ManualClock::new(now));
    let enrolment = api::enroll::enrol(&state.store, &state.vault, "render-01", now)
        .await
        .unwrap();
    (state, dir, enrolment, now.timestamp())
}

async fn events(state: &AppState) -> usize {
    state.store.read_all(0, 1000).await.unwrap().len()
}

#[tokio::test]
async fn a_signed_registration_records_the_node_without_its_secret() {
    let (state, dir, enrolment, now) = setup().await;
    let request = sign(&enrolment, "/v1/agent/register", now, capabilities());
    let (status, _) = send(&state, "/v1/agent/register", &request).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let stored = state.store.read_all(0, 100).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].routing_key, "node.registered.v1");
    assert_eq!(stored[0].stream_id, enrolment.node_id);
    let everything = serde_json::to_string(&(&stored[0].payload, &stored[0].metadata)).unwrap();
    assert!(
        everything.contains(&enrolment.key_id.to_string()),
        "the key id is recorded"
    );
    assert!(
        !everything.contains(&enrolment.secret_hex),
        "the secret is not"
    );
    // The same capabilities again change nothing. The first heartbeat
    // brings the node online (an event); later heartbeats are not events.
    let again = sign(&enrolment, "/v1/agent/register", now, capabilities());
    assert_eq!(
        send(&state, "/v1/agent/register", &again).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(events(&state).await, 1);
    for _ in 0..3 {
        let beat = sign(&enrolment, "/v1/agent/heartbeat", now, Vec::new());
        assert_eq!(
            send(&state, "/v1/agent/heartbeat", &beat).await.0,
            StatusCode::OK
        );
    }
    let stored = state.store.read_all(0, 100).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].routing_key, "node.online.v1");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn every_forged_or_replayed_request_is_refused_and_changes_nothing() {
    let (state, dir, enrolment, now) = setup().await;
    let other = api::enroll::enrol(&state.store, &state.vault, "render-02", chrono::Utc::now())
        .await
        .unwrap();
    let path = "/v1/agent/register";
    let valid = sign(&enrolment, path, now, capabilities());
    assert_eq!(send(&state, path, &valid).await.0, StatusCode::NO_CONTENT);
    let before = events(&state).await;

    let mut cases: Vec<(&str, Signed)> = vec![("replayed nonce", valid.clone())];
    cases.push((
        "stale timestamp",
        sign(&enrolment, path, now - 301, capabilities()),
    ));
    cases.push((
        "future timestamp",
        sign(&enrolment, path, now + 301, capabilities()),
    ));
    let mut tampered = sign(&enrolment, path, now, capabilities());
    tampered.body = replaced(&tampered.body, "\"cores\":8", "\"cores\":9");
    cases.push(("tampered body", tampered.clone()));
    tampered.digest = node_signing::content_sha256(&tampered.body);
    cases.push(("tampered body with its digest", tampered));
    let mut wrong_node = sign(&enrolment, path, now, capabilities());
    wrong_node.node_id = other.node_id.to_string();
    cases.push(("another node's id", wrong_node));
    let mut unknown = sign(&enrolment, path, now, capabilities());
    unknown.node_id = Uuid::new_v4().to_string();
    cases.push(("unknown node", unknown));
    let mut bad_signature = sign(&enrolment, path, now, capabilities());
    bad_signature.signature = format!("v1={}", "0".repeat(64));
    cases.push(("wrong signature", bad_signature));

    for (what, request) in cases {
        let (status, body) = send(&state, path, &request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
        assert!(body["error"]["trace_id"].is_string(), "{what}");
        assert_eq!(events(&state).await, before, "{what} changed the store");
    }
    // A correctly signed but invalid body is a 400, not a panic.
    let garbage = sign(&enrolment, path, now, b"{\"cores\": \"many\"}".to_vec());
    let (status, body) = send(&state, path, &garbage).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_body");
    assert_eq!(events(&state).await, before);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The bytes with one piece of text replaced (which must be there).
fn replaced(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.contains(from));
    text.replace(from, to).into_bytes()
}

#[tokio::test]
async fn forged_claims_and_reports_lease_nothing_and_a_stale_completion_is_a_409() {
    let (state, dir, enrolment, now) = setup().await;
    let register = sign(&enrolment, "/v1/agent/register", now, capabilities());
    assert_eq!(
        send(&state, "/v1/agent/register", &register).await.0,
        StatusCode::NO_CONTENT
    );
    let orch = &state.orchestrator;
    let tenant = api::seed::tenant(orch, "Studio", 1, 10, 1_000)
        .await
        .unwrap();
    let scene = api::seed::scene(orch, &state.blobs, tenant, "s.json", b"{}")
        .await
        .unwrap();
    let render = api::seed::Render {
        frames: (1, 1),
        chunk_size: 1,
        ..Default::default()
    };
    api::seed::submit(orch, tenant, scene, &render)
        .await
        .unwrap();
    let before = events(&state).await;
    let claim = "/v1/agent/claim";
    let mut forged = sign(&enrolment, claim, now, Vec::new());
    forged.signature = format!("v1={}", "0".repeat(64));
    let stale = sign(&enrolment, claim, now - 600, Vec::new());
    let mut other_body = sign(&enrolment, claim, now, Vec::new());
    other_body.body = b"{}".to_vec();
    for (what, request) in [
        ("forged", forged),
        ("stale", stale),
        ("tampered", other_body),
    ] {
        let (status, body) = send(&state, claim, &request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
        assert_eq!(events(&state).await, before, "{what} leased a task");
    }
    // A signed claim gets the task with the orchestrator's signature.
    let valid = sign(&enrolment, claim, now, Vec::new());
    let (status, assignment) = send(&state, claim, &valid).await;
    assert_eq!(status, StatusCode::OK);
    let secret = node_signing::NodeSecret::from_hex(&enrolment.secret_hex).unwrap();
    node_signing::verify_assignment(&secret, &assignment).unwrap();
    let mut altered = assignment.clone();
    altered["frames"]["end"] = serde_json::json!(99);
    assert!(node_signing::verify_assignment(&secret, &altered).is_err());
    // A completion presenting another epoch is refused with 409 and the contract body.
    let task_id = assignment["task_id"].as_str().unwrap();
    let path = format!("/v1/agent/tasks/{task_id}/complete");
    let late = sign(&enrolment, &path, now, b"{\"lease_epoch\":7}".to_vec());
    let before = events(&state).await;
    let (status, body) = send(&state, &path, &late).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "stale_lease");
    assert_eq!(events(&state).await, before);
    // The render is cancelled: finished, it leaves the scheduler's view.
    // A report on its task (from a node that did not hear of it yet) is
    // still a stale lease, told from an unknown task by the read model.
    let job = domain::JobId::new(assignment["job_id"].as_str().unwrap().parse().unwrap()).unwrap();
    orch.control(job, tenant, |at| domain::RenderJobCommand::Cancel {
        reason: None,
        at,
    })
    .await
    .unwrap();
    assert_eq!(
        orch.view_stats().await.jobs,
        0,
        "the cancelled render retired"
    );
    let mut runner =
        projections::Runner::new(state.store.clone(), projections::RunnerOptions::default());
    runner.catch_up(|_, _, _| {}).await.unwrap();
    let epoch = assignment["lease_epoch"].as_u64().unwrap();
    let body = format!("{{\"lease_epoch\":{epoch}}}").into_bytes();
    let before = events(&state).await;
    for operation in ["complete", "progress", "release"] {
        let path = format!("/v1/agent/tasks/{task_id}/{operation}");
        let report = sign(&enrolment, &path, now, body.clone());
        let (status, answer) = send(&state, &path, &report).await;
        assert_eq!(status, StatusCode::CONFLICT, "{operation}: {answer}");
        assert_eq!(answer["error"]["code"], "stale_lease", "{operation}");
    }
    let unknown = format!("/v1/agent/tasks/{}/complete", uuid::Uuid::new_v4());
    let report = sign(&enrolment, &unknown, now, body);
    let (status, answer) = send(&state, &unknown, &report).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["error"]["code"], "not_found");
    assert_eq!(events(&state).await, before, "nothing appended");
    std::fs::remove_dir_all(dir).unwrap();
}
