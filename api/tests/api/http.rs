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

/// Every path of the node-agent contract is served, and only to signed
/// requests: an unsigned call gets 401 with the contract's body, never 404.
#[tokio::test]
async fn every_node_agent_contract_path_is_served_and_signed() {
    let yaml: serde_yaml::Value = serde_yaml::from_str(include_str!(
        "../../../contracts/rest/node-agent.openapi.yaml"
    ))
    .unwrap();
    let paths = yaml["paths"].as_mapping().unwrap();
    assert!(paths.len() >= 9);
    let (state, dir) = crate::state().await;
    let app = api::router(state);
    for (path, methods) in paths {
        let path = path
            .as_str()
            .unwrap()
            .replace("{task_id}", "7e6d5c4b-3a29-4817-a6b5-c4d3e2f1a0b9")
            .replace("{sha256}", &"a".repeat(64))
            .replace("{frame}", "1");
        for (method, _) in methods.as_mapping().unwrap() {
            let method = method.as_str().unwrap().to_uppercase();
            let request = Request::builder()
                .method(method.as_str())
                .uri(&path)
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}
