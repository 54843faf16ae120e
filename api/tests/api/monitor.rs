//! The web monitor's files: served with their policy, and written so that
//! the policy can hold (no inline script or style) and no string becomes
//! HTML. What the monitor does in a browser is `browser-tests/`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn get(path: &str, etag: Option<&str>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let (state, _dir) = crate::state().await;
    let mut request = Request::get(path);
    if let Some(tag) = etag {
        request = request.header("if-none-match", tag);
    }
    let response = api::router(state)
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

fn source(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("monitor")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn every_file_is_served_with_its_type_and_the_policy() {
    let names: Vec<&str> = api::monitor::asset_names().collect();
    // Every file in the folder is embedded (a new one must be listed).
    let mut on_disk: Vec<String> =
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("monitor"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    embedded.sort();
    assert_eq!(
        embedded, on_disk,
        "api/monitor/ and ASSETS in monitor.rs differ"
    );

    for name in names {
        let path = if name == "index.html" {
            "/monitor/".to_string()
        } else {
            format!("/monitor/{name}")
        };
        let (status, headers, body) = get(&path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body, source(name).into_bytes(), "{path} is the file");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert_eq!(csp, api::monitor::CSP);
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        let media = headers["content-type"].to_str().unwrap();
        let want = match name.rsplit('.').next().unwrap() {
            "html" => "text/html",
            "css" => "text/css",
            "js" => "text/javascript",
            "svg" => "image/svg+xml",
            other => panic!("unexpected file type {other}"),
        };
        assert!(media.starts_with(want), "{path}: {media}");
        // Revalidation answers 304 without the body.
        let tag = headers["etag"].to_str().unwrap().to_string();
        let (status, _, body) = get(&path, Some(&tag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
    }
}

#[tokio::test]
async fn the_root_leads_to_the_monitor_and_unknown_files_are_not_found() {
    let (status, headers, _) = get("/", None).await;
    assert!(status.is_redirection());
    assert_eq!(headers["location"], "/monitor/");
    for path in [
        "/monitor/nope.js",
        "/monitor/..%2fCargo.toml",
        "/monitor/%2e%2e",
    ] {
        let (status, _, body) = get(path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
}

#[test]
fn the_page_has_no_inline_script_or_style_and_builds_no_html_from_strings() {
    let html = source("index.html");
    for (at, _) in html.match_indices("<script") {
        let tag = &html[at..at + html[at..].find('>').unwrap()];
        assert!(tag.contains(" src="), "inline script: {tag}");
    }
    assert!(!html.contains("<style"), "inline style element");
    assert!(!html.contains("style="), "inline style attribute");
    for handler in ["onclick=", "onload=", "onerror=", "onsubmit="] {
        assert!(!html.contains(handler), "{handler} in index.html");
    }
    for name in api::monitor::asset_names().filter(|n| n.ends_with(".js")) {
        let js = source(name);
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setAttribute(\"style\"",
            "localStorage",
        ] {
            assert!(!js.contains(sink), "{name} uses {sink}");
        }
        // Requests go to this server's own API only.
        for line in js.lines().filter(|l| l.contains("fetch(")) {
            assert!(!line.contains("http"), "{name}: {line}");
        }
    }
}
