//! One trace id per request: taken from a valid W3C `traceparent` or made
//! up, it is in the `X-Trace-Id` header, the error body, and the metadata
//! of every event the request causes — also of events group-committed by
//! the scheduler's batch committer on another task.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use eventstore::RecordedEvent;
use serde_json::json;
use tower::ServiceExt;

use crate::public::{Api, render_body};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-00f067aa0ba902b7-01")
}

async fn send(api: &Api, request: Request<Body>) -> (StatusCode, String, serde_json::Value) {
    let response = api::router(api.state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let trace = response
        .headers()
        .get("x-trace-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        trace,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn traces(events: &[RecordedEvent]) -> Vec<Option<String>> {
    events
        .iter()
        .map(|e| e.metadata["trace_id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_s_trace_id_is_in_its_header_its_error_body_and_its_events() {
    let api = Api::new().await;
    let scene = api.scene(api.a).await;
    let before = crate::log(&api.state.store).await.len();
    let submit = |trace: Option<&str>| {
        let mut request = Request::post("/v1/renders")
            .header("authorization", format!("Bearer {}", api.token(api.a)))
            .header("content-type", "application/json");
        if let Some(t) = trace {
            request = request.header("traceparent", t);
        }
        request
            .body(Body::from(render_body(&scene).to_string()))
            .unwrap()
    };
    // A valid traceparent: its trace id everywhere.
    let (status, header, body) = send(&api, submit(Some(&traceparent(TRACE)))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(header, TRACE);
    let log = crate::log(&api.state.store).await;
    let submitted = &log[before..];
    assert!(!submitted.is_empty());
    assert!(
        traces(submitted)
            .iter()
            .all(|t| t.as_deref() == Some(TRACE)),
        "{:?}",
        traces(submitted)
    );
    // None, or one that is not valid: a new id of its own.
    for given in [
        None,
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("garbage"),
    ] {
        let before = crate::log(&api.state.store).await.len();
        let (status, header, _) = send(&api, submit(given)).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(header.len(), 32, "{header}");
        assert_ne!(header, TRACE);
        let log = crate::log(&api.state.store).await;
        assert!(
            traces(&log[before..])
                .iter()
                .all(|t| t.as_deref() == Some(header.as_str()))
        );
    }
    // A refused request: the body's trace id is the request's.
    let bad = Request::post("/v1/renders")
        .header("authorization", format!("Bearer {}", api.token(api.a)))
        .header("content-type", "application/json")
        .header("traceparent", traceparent(TRACE))
        .body(Body::from(json!({ "renderer": 7 }).to_string()))
        .unwrap();
    let (status, header, body) = send(&api, bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(header, TRACE);
    assert_eq!(body["error"]["trace_id"], TRACE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_group_committed_on_another_task_keeps_its_request_s_trace_id() {
    let api = Api::new().await;
    let node = crate::builtin_node(&api.state.orchestrator, "traced").await;
    let scene = api.scene(api.a).await;
    let (status, body) = api
        .call(api.a, "POST", "/v1/renders", Some(render_body(&scene)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let before = crate::log(&api.state.store).await.len();
    let orch = api.state.orchestrator.clone();
    let claimed =
        orchestrator::trace::scope(
            TRACE.to_string(),
            async move { orch.claim(node).await.unwrap() },
        )
        .await;
    assert!(claimed.is_some());
    let log = crate::log(&api.state.store).await;
    let assigned: Vec<_> = log[before..]
        .iter()
        .filter(|e| e.routing_key == "render.task.assigned.v1")
        .collect();
    assert_eq!(assigned.len(), 1);
    assert_eq!(assigned[0].metadata["trace_id"], TRACE);
    // Work of the scheduler's own (no request) has none.
    assert_eq!(orchestrator::trace::current(), None);
}

#[test]
fn only_valid_traceparents_give_their_trace_id() {
    assert_eq!(
        api::app::w3c_trace_id(&traceparent(TRACE)).as_deref(),
        Some(TRACE)
    );
    for bad in [
        "",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e4736\n-00f067aa0ba902b7-01",
    ] {
        assert_eq!(api::app::w3c_trace_id(bad), None, "{bad:?}");
    }
}
