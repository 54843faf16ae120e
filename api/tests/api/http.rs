use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn get(path: &str) -> (StatusCode, serde_json::Value) {
    let (state, dir) = crate::state().await;
    let response = api::router(state)
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    std::fs::remove_dir_all(dir).unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn health_and_readiness_answer() {
    assert_eq!(
        get("/healthz").await,
        (StatusCode::OK, serde_json::json!({ "status": "ok" }))
    );
    assert_eq!(
        get("/readyz").await,
        (StatusCode::OK, serde_json::json!({ "status": "ready" }))
    );
}

#[tokio::test]
async fn unknown_paths_get_the_contract_error_body() {
    let (status, body) = get("/v1/nothing/here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let error = &body["error"];
    assert_eq!(error["code"], "not_found");
    assert!(error["message"].is_string());
    assert!(error["details"].is_object());
    assert_eq!(error["trace_id"].as_str().map(str::len), Some(32));
}
