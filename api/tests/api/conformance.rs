//! Contract conformance of real exchanges: a recorder wraps the router of a
//! test server and keeps every `/v1/agent/*` request and answer; `check`
//! then holds each one against `contracts/rest/node-agent.openapi.yaml`
//! (operation, path parameters, query, JSON request body; status, content
//! type and body of the answer by status), so that what the real agent and
//! server exchange cannot drift from the document.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use contracts::node_agent;

/// One request and its answer, as they crossed the wire.
#[derive(Debug, Clone)]
pub struct Exchange {
    method: String,
    path: String,
    query: Option<String>,
    request_body: Vec<u8>,
    status: u16,
    content_type: Option<String>,
    response_body: Vec<u8>,
}

/// The exchanges of one server.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Exchange>>>);

async fn record(recorder: Recorder, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(request_body) = axum::body::to_bytes(body, usize::MAX).await else {
        // The client went away while sending: nothing was exchanged.
        return next.run(Request::from_parts(parts, Body::empty())).await;
    };
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let response = next
        .run(Request::from_parts(parts, Body::from(request_body.clone())))
        .await;
    let (response_parts, body) = response.into_parts();
    let response_body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if path.starts_with("/v1/agent/") {
        recorder
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Exchange {
                method,
                path,
                query,
                request_body: request_body.to_vec(),
                status: response_parts.status.as_u16(),
                content_type: response_parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                response_body: response_body.to_vec(),
            });
    }
    Response::from_parts(response_parts, Body::from(response_body))
}

impl Recorder {
    /// The router, with every exchange recorded.
    pub fn wrap(&self, router: Router) -> Router {
        let recorder = self.clone();
        router.layer(axum::middleware::from_fn(move |request, next| {
            record(recorder.clone(), request, next)
        }))
    }

    /// Panics unless every recorded exchange conforms to the contract and
    /// each of `seen` (operation ids) was answered with success at least once.
    pub fn check(&self, seen: &[&str]) {
        let exchanges = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut wrong = Vec::new();
        let mut succeeded = std::collections::BTreeMap::<String, usize>::new();
        for e in &exchanges {
            let what = format!("{} {} -> {}", e.method, e.path, e.status);
            let Some((op, params)) = node_agent::route(&e.method, &e.path) else {
                wrong.push(format!("{what}: no operation of the contract"));
                continue;
            };
            for (name, value) in &params {
                if let Err(p) = node_agent::validate_path_parameter(&op.id, name, value) {
                    wrong.push(format!("{what}: path parameter {name}: {p:?}"));
                }
            }
            if let Err(p) = node_agent::parse_query(&op.id, e.query.as_deref()) {
                wrong.push(format!("{what}: query {:?}: {p:?}", e.query));
            }
            // Bodies other than JSON (uploaded frames) are the server's to judge.
            let binary = op.spec()["requestBody"]["content"]
                .as_object()
                .is_some_and(|c| !c.contains_key("application/json"));
            if !binary && let Err(p) = node_agent::request_body(&op.id, &e.request_body) {
                wrong.push(format!(
                    "{what}: request body {}: {p:?}",
                    String::from_utf8_lossy(&e.request_body)
                ));
            }
            if let Err(p) = node_agent::validate_response(
                &op.id,
                e.status,
                e.content_type.as_deref(),
                &e.response_body,
            ) {
                wrong.push(format!(
                    "{what}: answer {}: {p:?}",
                    String::from_utf8_lossy(&e.response_body[..e.response_body.len().min(500)])
                ));
            }
            if (200..300).contains(&e.status) {
                *succeeded.entry(op.id.clone()).or_default() += 1;
            }
        }
        for id in seen {
            if !succeeded.contains_key(*id) {
                wrong.push(format!("`{id}` never succeeded (seen: {succeeded:?})"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} of {} exchanges break the node-agent contract:\n{}",
            wrong.len(),
            exchanges.len(),
            wrong.join("\n")
        );
    }
}

/// The check can fail: an exchange off the contract, or an operation that
/// never succeeded, is reported.
#[test]
fn the_check_refuses_what_the_contract_does_not_say() {
    let exchange = |method: &str, path: &str, status: u16, body: &str| Exchange {
        method: method.into(),
        path: path.into(),
        query: None,
        request_body: Vec::new(),
        status,
        content_type: Some("application/json".into()),
        response_body: body.as_bytes().to_vec(),
    };
    let error = r#"{"error":{"code":"unauthorized","message":"m","details":{},"trace_id":"00000000000000000000000000000000"}}"#;
    let good = Recorder::default();
    good.0
        .lock()
        .unwrap()
        .push(exchange("POST", "/v1/agent/claim", 401, error));
    good.check(&[]);
    for (what, bad, seen) in [
        (
            "an undocumented status",
            exchange("POST", "/v1/agent/claim", 418, error),
            vec![],
        ),
        (
            "a wrong code",
            exchange(
                "POST",
                "/v1/agent/claim",
                401,
                &error.replace("unauthorized", "nope"),
            ),
            vec![],
        ),
        (
            "the old heartbeat reply",
            exchange("POST", "/v1/agent/heartbeat", 200, r#"{"stop":[]}"#),
            vec![],
        ),
        (
            "no such operation",
            exchange("GET", "/v1/agent/claim", 401, error),
            vec![],
        ),
        (
            "a missing success",
            exchange("POST", "/v1/agent/claim", 401, error),
            vec!["claim"],
        ),
    ] {
        let recorder = Recorder::default();
        recorder.0.lock().unwrap().push(bad);
        let result = std::panic::catch_unwind(|| recorder.check(&seen));
        assert!(result.is_err(), "{what} passed");
    }
}
