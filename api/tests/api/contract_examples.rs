//! The node-agent contract's `x-invalid-examples`: each is signed and sent to
//! the server as an agent would send it, and must get exactly the documented
//! status and code, with the contract's error body, a message without Rust
//! formatting, and nothing recorded in the store. Also: the heartbeat says
//! the timings the contract promises.

use std::path::PathBuf;
use std::sync::Arc;

use api::AppState;
use api::enroll::Enrolment;
use api::files::BlobStore;
use axum::body::Body;
use axum::http::Request;
use contracts::node_agent;
use contracts::node_signing::{self, NodeSecret, SignedParts, headers};
use eventstore::{AnyStore, EventStore, SqliteStore};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

async fn state_with(config: orchestrator::Config) -> (AppState, PathBuf) {
    let dir = std::env::temp_dir().join(format!("flatrender-contract-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = AnyStore::Sqlite(SqliteStore::open(&dir.join("events.sqlite")).await.unwrap());
    let blobs = BlobStore::open(&dir.join("blobs"), 1024 * 1024)
        .await
        .unwrap();
    let state = AppState::open(store, blobs, Arc::new(eventstore::SystemClock), config)
        .await
        .unwrap();
    (state, dir)
}

/// A signed request as the reference agent builds it.
fn signed(
    enrolment: &Enrolment,
    method: &str,
    path: &str,
    query: &str,
    body: Vec<u8>,
) -> Request<Body> {
    let secret = NodeSecret::from_hex(&enrolment.secret_hex).unwrap();
    let node_id = enrolment.node_id.to_string();
    let key_id = enrolment.key_id.to_string();
    let nonce = Uuid::new_v4().simple().to_string();
    let digest = node_signing::content_sha256(&body);
    let timestamp = chrono::Utc::now().timestamp();
    let parts = SignedParts {
        method,
        path,
        query,
        node_id: &node_id,
        key_id: &key_id,
        timestamp,
        nonce: &nonce,
        content_sha256: &digest,
    };
    let signature = node_signing::sign_request(&secret, &parts);
    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    Request::builder()
        .method(method)
        .uri(uri)
        .header(headers::NODE, node_id)
        .header(headers::KEY_ID, key_id)
        .header(headers::TIMESTAMP, timestamp.to_string())
        .header(headers::NONCE, nonce)
        .header(headers::CONTENT_SHA256, digest)
        .header(headers::SIGNATURE, signature)
        .body(Body::from(body))
        .unwrap()
}

struct Answer {
    status: u16,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

async fn send(state: &AppState, request: Request<Body>) -> Answer {
    let response = api::router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        content_type,
        bytes,
    }
}

async fn events(state: &AppState) -> usize {
    state.store.read_all(0, 10_000).await.unwrap().len()
}

/// The body an example describes.
fn body_of(example: &Value) -> Vec<u8> {
    if let Some(size) = example.get("png") {
        return crate::png_of(
            size["width"].as_u64().unwrap() as u32,
            size["height"].as_u64().unwrap() as u32,
        );
    }
    if let Some(raw) = example["raw"].as_str() {
        return raw.as_bytes().to_vec();
    }
    let Some(body) = example.get("body") else {
        return Vec::new();
    };
    let mut body = body.clone();
    if let Some(fill) = example.get("fill") {
        let text = fill["char"]
            .as_str()
            .unwrap()
            .repeat(fill["length"].as_u64().unwrap() as usize);
        *body.pointer_mut(fill["pointer"].as_str().unwrap()).unwrap() = json!(text);
    }
    body.to_string().into_bytes()
}

fn capabilities() -> Vec<u8> {
    json!({
        "cores": 4, "memory_bytes": 8_589_934_592u64, "gpus": [],
        "renderers": [{ "name": "builtin", "version": "1" }], "tags": ["linux"], "node_class": "standard",
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn every_documented_invalid_example_gets_its_status_and_code_and_changes_nothing() {
    let (state, dir) = state_with(orchestrator::Config::default()).await;
    let now = chrono::Utc::now();
    let registered = api::enroll::enrol(&state.store, &state.vault, "render-01", now)
        .await
        .unwrap();
    let unregistered = api::enroll::enrol(&state.store, &state.vault, "render-02", now)
        .await
        .unwrap();
    let answer = send(
        &state,
        signed(
            &registered,
            "POST",
            "/v1/agent/register",
            "",
            capabilities(),
        ),
    )
    .await;
    assert_eq!(answer.status, 204);
    let mut sent = 0;
    let mut failures = Vec::new();
    for op in node_agent::operations() {
        let examples = op.spec()["x-invalid-examples"].as_array().unwrap();
        for example in examples {
            let what = format!("{} {}: {}", op.method, op.path, example["summary"]);
            let mut path = op.path.clone();
            let params = example.get("path");
            for (name, default) in [
                ("task_id", Uuid::new_v4().to_string()),
                ("frame", "1".to_string()),
                (
                    "sha256",
                    node_signing::content_sha256(Uuid::new_v4().as_bytes()),
                ),
            ] {
                let value = params
                    .and_then(|p| p[name].as_str())
                    .map_or(default, str::to_string);
                path = path.replace(&format!("{{{name}}}"), &value);
            }
            let node = match example["node"].as_str() {
                Some("unregistered") => &unregistered,
                None => &registered,
                Some(other) => panic!("{what}: unknown node {other}"),
            };
            let query = example["query"].as_str().unwrap_or("");
            let before = events(&state).await;
            let answer = send(
                &state,
                signed(node, &op.method, &path, query, body_of(example)),
            )
            .await;
            sent += 1;
            let expected_status = example["status"].as_u64().unwrap() as u16;
            let expected_code = example["code"].as_str().unwrap();
            let body = answer.json();
            let mut wrong = Vec::new();
            if answer.status != expected_status {
                wrong.push(format!(
                    "status {} instead of {expected_status}",
                    answer.status
                ));
            }
            if body["error"]["code"] != expected_code {
                wrong.push(format!(
                    "code {} instead of {expected_code}",
                    body["error"]["code"]
                ));
            }
            if let Err(problems) = node_agent::validate_response(
                &op.id,
                answer.status,
                answer.content_type.as_deref(),
                &answer.bytes,
            ) {
                wrong.push(format!("the answer breaks the contract: {problems:?}"));
            }
            let message = body["error"]["message"].as_str().unwrap_or("");
            for debug in ["Some(", "None", "Error {", "\\\""] {
                if message.contains(debug) {
                    wrong.push(format!("Rust formatting in the message: {message}"));
                }
            }
            if ["invalid_body", "invalid_query"].contains(&expected_code)
                && body["error"]["details"]["problems"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
            {
                wrong.push(format!("no problems named in {}", body["error"]["details"]));
            }
            if events(&state).await != before {
                wrong.push("the store changed".into());
            }
            if !wrong.is_empty() {
                failures.push(format!("{what}: {}", wrong.join("; ")));
            }
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
    assert!(sent >= 40, "only {sent} examples were sent");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_message_names_the_field_in_words() {
    let (state, dir) = state_with(orchestrator::Config::default()).await;
    let node = api::enroll::enrol(&state.store, &state.vault, "render-01", chrono::Utc::now())
        .await
        .unwrap();
    let mut body: Value = serde_json::from_slice(&capabilities()).unwrap();
    body["tags"] = json!(["linux", "Fast GPU"]);
    let answer = send(
        &state,
        signed(
            &node,
            "POST",
            "/v1/agent/register",
            "",
            body.to_string().into_bytes(),
        ),
    )
    .await;
    assert_eq!(answer.status, 400);
    let error = &answer.json()["error"];
    assert_eq!(error["details"]["problems"][0]["field"], "/tags/1");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("the body is not valid: `tags/1` does not match"),
        "{message}"
    );
    let answer = send(
        &state,
        signed(
            &node,
            "POST",
            "/v1/agent/claim",
            "wait_seconds=31",
            Vec::new(),
        ),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.json()["error"]["message"],
        "the query is not valid: `wait_seconds` is greater than the maximum of 30"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_heartbeat_says_the_lease_length_and_the_offline_period() {
    let config = orchestrator::Config {
        lease_ttl: chrono::Duration::seconds(45),
        offline_after: chrono::Duration::seconds(20),
        ..orchestrator::Config::default()
    };
    let (state, dir) = state_with(config).await;
    let node = api::enroll::enrol(&state.store, &state.vault, "render-01", chrono::Utc::now())
        .await
        .unwrap();
    let answer = send(
        &state,
        signed(&node, "POST", "/v1/agent/register", "", capabilities()),
    )
    .await;
    assert_eq!(answer.status, 204);
    for body in [Vec::new(), b"{\"leases\":[]}".to_vec()] {
        let answer = send(
            &state,
            signed(&node, "POST", "/v1/agent/heartbeat", "", body),
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            node_agent::validate_response(
                "heartbeat",
                200,
                answer.content_type.as_deref(),
                &answer.bytes
            ),
            Ok(())
        );
        assert_eq!(
            answer.json(),
            json!({ "stop": [], "lease_seconds": 45, "offline_after_seconds": 20 })
        );
    }
    // The claim's documented maximum is the server's.
    let (op, _) = node_agent::route("POST", "/v1/agent/claim").unwrap();
    assert_eq!(
        op.spec()["parameters"][0]["schema"]["maximum"],
        json!(api::node_api::MAX_CLAIM_WAIT_SECONDS)
    );
    std::fs::remove_dir_all(dir).unwrap();
}
