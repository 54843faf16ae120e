//! Slow, greedy and sloppy clients, against the real server on a socket
//! (`api::server::serve` with short, test-sized timeouts): connections that
//! stall in their head or body, or idle, are dropped while others are
//! served; the connection limit holds; bodies over their limit are refused
//! before they are read; uploads are streamed to disk and count only as
//! complete PNGs; and the contract's error body comes with 405, 408, 413,
//! 422 and 503.
//!
//! The bounds below are generous on purpose: they tell "dropped" from
//! "held forever", not how fast anything is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use api::AppState;
use api::enroll::Enrolment;
use api::server::ServerLimits;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use contracts::node_signing::{self, NodeSecret, SignedParts, headers};
use domain::{LeaseRef, NodeId, TaskId};
use eventstore::{AnyStore, EventStore};
use http_body_util::BodyExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;
use uuid::Uuid;

/// Long enough for any of the test server's timeouts to have fired.
const DROPPED_WITHIN: Duration = Duration::from_secs(15);

fn test_limits() -> ServerLimits {
    ServerLimits {
        max_connections: 64,
        header_read_timeout: Duration::from_millis(500),
        body_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(5),
    }
}

/// The server on a socket, stopped when dropped.
struct Running {
    state: AppState,
    dir: PathBuf,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Running {
    async fn start(limits: ServerLimits) -> Self {
        Self::start_with(limits, crate::state().await).await
    }

    async fn start_with(limits: ServerLimits, (state, dir): (AppState, PathBuf)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = api::router(state.clone());
        let server = tokio::spawn(api::server::serve(listener, app, limits, async {
            let _ = stopped.await;
        }));
        Self {
            state,
            dir,
            addr,
            stop: Some(stop),
            server: Some(server),
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// A plain request on a new connection answers.
    async fn answers_healthz(&self) -> bool {
        let mut stream = self.connect().await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        matches!(
            tokio::time::timeout(DROPPED_WITHIN, read_response(&mut stream)).await,
            Ok(Some((200, _)))
        )
    }

    fn temporaries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("blobs").join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    async fn events(&self) -> usize {
        self.state.store.read_all(0, 10_000).await.unwrap().len()
    }
}

/// Reads one response (status and JSON body, `Null` when there is none);
/// `None` when the connection closes (or breaks) before a whole one.
async fn read_response(stream: &mut TcpStream) -> Option<(u16, serde_json::Value)> {
    read_half_response(stream).await
}

async fn read_half_response(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Option<(u16, serde_json::Value)> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length])
        .unwrap_or(serde_json::Value::Null);
    Some((status, body))
}

/// Whether the server closes the connection (end of stream or reset)
/// within the bound; whatever it sends before is discarded.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> bool {
    let drain = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(bound, drain).await.is_ok()
}

fn capabilities() -> serde_json::Value {
    json!({
        "cores": 8,
        "memory_bytes": 17_179_869_184u64,
        "gpus": [],
        "renderers": [{ "name": "builtin", "version": "1" }],
        "tags": ["linux"],
        "node_class": "standard",
    })
}

/// The head of a signed request (through the blank line), for a body with
/// the given SHA-256; `extra` are further header lines (each ending in
/// `\r\n`).
fn signed_head(
    node: &Enrolment,
    method: &str,
    path: &str,
    query: &str,
    digest: &str,
    extra: &str,
) -> String {
    let secret = NodeSecret::from_hex(&node.secret_hex).unwrap();
    let node_id = node.node_id.to_string();
    let key_id = node.key_id.to_string();
    let nonce = Uuid::new_v4().simple().to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let parts = SignedParts {
        method,
        path,
        query,
        node_id: &node_id,
        key_id: &key_id,
        timestamp,
        nonce: &nonce,
        content_sha256: digest,
    };
    let signature = node_signing::sign_request(&secret, &parts);
    let target = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    format!(
        "{method} {target} HTTP/1.1\r\nHost: test\r\n{}: {node_id}\r\n{}: {key_id}\r\n{}: {timestamp}\r\n{}: {nonce}\r\n{}: {digest}\r\n{}: {signature}\r\n{extra}\r\n",
        headers::NODE,
        headers::KEY_ID,
        headers::TIMESTAMP,
        headers::NONCE,
        headers::CONTENT_SHA256,
        headers::SIGNATURE,
    )
}

/// A complete signed request with its body.
fn signed_request(node: &Enrolment, method: &str, path: &str, query: &str, body: &[u8]) -> Vec<u8> {
    let digest = node_signing::content_sha256(body);
    let extra = format!("Content-Length: {}\r\n", body.len());
    let mut request = signed_head(node, method, path, query, &digest, &extra).into_bytes();
    request.extend_from_slice(body);
    request
}

/// An enrolled, registered, online node holding a started lease on a
/// one-frame task (frame 1) of a render at `resolution`.
async fn started_lease(state: &AppState, resolution: Option<(u32, u32)>) -> (Enrolment, LeaseRef) {
    let enrolment = api::enroll::enrol(&state.store, &state.vault, "render-01", chrono::Utc::now())
        .await
        .unwrap();
    let orch = &state.orchestrator;
    let node_id = NodeId::new(enrolment.node_id).unwrap();
    orch.register_node(
        node_id,
        domain::Label::parse("render-01").unwrap(),
        serde_json::from_value(capabilities()).unwrap(),
        domain::SecretKeyId::new(enrolment.key_id).unwrap(),
    )
    .await
    .unwrap();
    orch.heartbeat(node_id, &[]).await.unwrap();
    let tenant = api::seed::tenant(orch, "Studio", 1, 10, 1_000)
        .await
        .unwrap();
    let scene = api::seed::scene(orch, &state.blobs, tenant, "s.json", b"{}")
        .await
        .unwrap();
    let render = api::seed::Render {
        frames: (1, 1),
        chunk_size: 1,
        resolution,
        ..Default::default()
    };
    api::seed::submit(orch, tenant, scene, &render)
        .await
        .unwrap();
    let assignment = orch.claim(node_id).await.unwrap().expect("a task");
    let lease = LeaseRef {
        task_id: TaskId::new(assignment.task_id).unwrap(),
        node_id,
        lease_epoch: assignment.lease_epoch,
    };
    orch.start(lease).await.unwrap();
    (enrolment, lease)
}

fn upload_path(lease: &LeaseRef) -> (String, String) {
    (
        format!("/v1/agent/outputs/{}/1", lease.task_id),
        format!("lease_epoch={}", lease.lease_epoch),
    )
}

/// Bytes that look random (no randomness needed).
fn noise(n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect()
}

fn blob_exists(dir: &Path, bytes: &[u8]) -> bool {
    let digest = node_signing::content_sha256(bytes);
    dir.join("blobs").join(&digest[..2]).join(&digest).exists()
}

async fn send(server: &Running, request: &[u8]) -> (u16, serde_json::Value) {
    let mut stream = server.connect().await;
    stream.write_all(request).await.unwrap();
    tokio::time::timeout(DROPPED_WITHIN, read_response(&mut stream))
        .await
        .expect("an answer")
        .expect("a whole response")
}

#[tokio::test]
async fn half_a_head_and_idle_connections_are_dropped_while_others_are_served() {
    let server = Running::start(test_limits()).await;
    let mut half = server.connect().await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .await
        .unwrap();
    let mut silent = server.connect().await;
    let mut kept_alive = server.connect().await;
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut kept_alive).await.unwrap().0, 200);
    assert!(
        server.answers_healthz().await,
        "others are served meanwhile"
    );
    assert!(
        closed_within(&mut half, DROPPED_WITHIN).await,
        "half a head is dropped"
    );
    assert!(
        closed_within(&mut silent, DROPPED_WITHIN).await,
        "a connection that sends nothing is dropped"
    );
    assert!(
        closed_within(&mut kept_alive, DROPPED_WITHIN).await,
        "an idle kept-alive connection is dropped"
    );
    assert!(server.answers_healthz().await);
}

#[tokio::test]
async fn a_signed_body_that_never_comes_is_answered_408_and_the_connection_closed() {
    let server = Running::start(test_limits()).await;
    let node = api::enroll::enrol(
        &server.state.store,
        &server.state.vault,
        "render-01",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let body = br#"{"leases":[]}"#;
    let head = signed_head(
        &node,
        "POST",
        "/v1/agent/heartbeat",
        "",
        &node_signing::content_sha256(body),
        &format!("Content-Length: {}\r\n", body.len()),
    );
    let mut stalled = server.connect().await;
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&body[..3]).await.unwrap();
    assert!(
        server.answers_healthz().await,
        "others are served meanwhile"
    );
    let (status, error) = tokio::time::timeout(DROPPED_WITHIN, read_response(&mut stalled))
        .await
        .expect("the server gives up on the body")
        .expect("with an answer");
    assert_eq!(status, 408);
    assert_eq!(error["error"]["code"], "request_timeout");
    assert!(error["error"]["trace_id"].is_string());
    assert!(closed_within(&mut stalled, DROPPED_WITHIN).await);
}

#[tokio::test]
async fn a_declared_body_over_its_limit_is_refused_before_it_is_sent() {
    let server = Running::start(test_limits()).await;
    let node = api::enroll::enrol(
        &server.state.store,
        &server.state.vault,
        "render-01",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let task = Uuid::new_v4();
    let cases = [
        (
            "PUT",
            format!("/v1/agent/outputs/{task}/1"),
            "lease_epoch=1",
            10u64 << 30,
        ),
        (
            "POST",
            "/v1/agent/heartbeat".to_string(),
            "",
            api::node_auth::MAX_SIGNED_BODY as u64 + 1,
        ),
    ];
    for (method, path, query, length) in cases {
        let head = signed_head(
            &node,
            method,
            &path,
            query,
            &"0".repeat(64),
            &format!("Content-Length: {length}\r\n"),
        );
        let mut stream = server.connect().await;
        stream.write_all(head.as_bytes()).await.unwrap();
        let (status, error) = tokio::time::timeout(DROPPED_WITHIN, read_response(&mut stream))
            .await
            .expect("refused without waiting for the body")
            .expect("with an answer");
        assert_eq!(status, 413, "{method} {path}");
        assert_eq!(error["error"]["code"], "payload_too_large");
        assert!(closed_within(&mut stream, DROPPED_WITHIN).await);
    }
    assert!(server.temporaries().is_empty());
}

#[tokio::test]
async fn an_upload_over_the_limit_stalled_or_broken_off_leaves_nothing_behind() {
    let server = Running::start(test_limits()).await;
    let (node, lease) = started_lease(&server.state, None).await;
    let (path, query) = upload_path(&lease);
    let before = server.events().await;
    let limit = server.state.blobs.max_bytes() as usize;
    let big = noise(limit + 64 * 1024);

    // Over the limit without a declared length: counted while streaming.
    let head = signed_head(
        &node,
        "PUT",
        &path,
        &query,
        &node_signing::content_sha256(&big),
        "Transfer-Encoding: chunked\r\n",
    );
    let (mut reading, mut writing) = server.connect().await.into_split();
    writing.write_all(head.as_bytes()).await.unwrap();
    // The body goes out while the answer is awaited: the server answers
    // as soon as the count passes the limit and stops reading.
    let chunks = big.clone();
    let sender = tokio::spawn(async move {
        for chunk in chunks.chunks(64 * 1024) {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(chunk);
            framed.extend_from_slice(b"\r\n");
            if writing.write_all(&framed).await.is_err() {
                return;
            }
        }
        let _ = writing.write_all(b"0\r\n\r\n").await;
    });
    let (status, error) = tokio::time::timeout(DROPPED_WITHIN, read_half_response(&mut reading))
        .await
        .expect("an answer to the oversized upload")
        .expect("a whole response");
    sender.abort();
    assert_eq!(status, 413);
    assert_eq!(error["error"]["code"], "payload_too_large");
    assert!(
        server.temporaries().is_empty(),
        "{:?}",
        server.temporaries()
    );

    // A body that stalls half way.
    let png = crate::png_of(16, 9);
    let head = signed_head(
        &node,
        "PUT",
        &path,
        &query,
        &node_signing::content_sha256(&png),
        &format!("Content-Length: {}\r\n", png.len()),
    );
    let mut stalled = server.connect().await;
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&png[..png.len() / 2]).await.unwrap();
    let (status, _) = tokio::time::timeout(DROPPED_WITHIN, read_response(&mut stalled))
        .await
        .expect("the server gives up on the body")
        .expect("with an answer");
    assert_eq!(status, 408);
    assert!(server.temporaries().is_empty());

    // A client that goes away half way.
    let head = signed_head(
        &node,
        "PUT",
        &path,
        &query,
        &node_signing::content_sha256(&big),
        &format!("Content-Length: {}\r\n", big.len()),
    );
    let mut gone = server.connect().await;
    gone.write_all(head.as_bytes()).await.unwrap();
    gone.write_all(&big[..big.len() / 2]).await.unwrap();
    gone.flush().await.unwrap();
    drop(gone);
    let deadline = tokio::time::Instant::now() + DROPPED_WITHIN;
    while !server.temporaries().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a broken-off upload left {:?}",
            server.temporaries()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.events().await, before, "nothing was recorded");
    assert!(!blob_exists(&server.dir, &big));
}

#[tokio::test]
async fn only_a_complete_png_of_the_renders_resolution_counts_as_a_frame() {
    let server = Running::start(test_limits()).await;
    let (node, lease) = started_lease(&server.state, Some((16, 9))).await;
    let (path, query) = upload_path(&lease);
    let png = crate::png_of(16, 9);
    let mut signature_and_noise = png[..8].to_vec();
    signature_and_noise.extend(noise(4096));
    let mut truncated = png.clone();
    truncated.truncate(png.len() - 12);
    let before = server.events().await;
    for (what, bytes) in [
        ("the PNG signature alone", png[..8].to_vec()),
        ("the signature and random bytes", signature_and_noise),
        ("a truncated PNG", truncated),
        ("a PNG of another size", crate::png_of(32, 18)),
    ] {
        let (status, error) = send(
            &server,
            &signed_request(&node, "PUT", &path, &query, &bytes),
        )
        .await;
        assert_eq!(status, 422, "{what}");
        assert_eq!(error["error"]["code"], "invalid_output", "{what}");
        assert!(error["error"]["trace_id"].is_string(), "{what}");
        assert_eq!(server.events().await, before, "{what} was recorded");
        assert!(!blob_exists(&server.dir, &bytes), "{what} was stored");
        assert!(
            server.temporaries().is_empty(),
            "{what} left a temporary file"
        );
    }
    // The real frame is stored and recorded.
    let (status, stored) = send(&server, &signed_request(&node, "PUT", &path, &query, &png)).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["sha256"], node_signing::content_sha256(&png));
    assert!(blob_exists(&server.dir, &png));
    assert_eq!(server.events().await, before + 1);
    assert!(server.temporaries().is_empty());
}

#[tokio::test]
async fn the_connection_limit_queues_new_connections_and_serves_the_admitted() {
    let limits = ServerLimits {
        max_connections: 2,
        idle_timeout: Duration::from_secs(60),
        header_read_timeout: Duration::from_secs(60),
        ..test_limits()
    };
    let server = Running::start(limits).await;
    let mut first = server.connect().await;
    let mut second = server.connect().await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";
    // Both are admitted (each answers), and stay open.
    for stream in [&mut first, &mut second] {
        stream.write_all(request).await.unwrap();
        assert_eq!(read_response(stream).await.unwrap().0, 200);
    }
    let mut third = server.connect().await;
    third.write_all(request).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(700), read_response(&mut third))
            .await
            .is_err(),
        "a third connection is not served while two are open"
    );
    // The admitted ones keep being served.
    second.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut second).await.unwrap().0, 200);
    drop(first);
    let (status, _) = tokio::time::timeout(DROPPED_WITHIN, read_response(&mut third))
        .await
        .expect("served once a connection closed")
        .expect("a whole response");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish_then_stops() {
    let limits = ServerLimits {
        body_read_timeout: Duration::from_secs(30),
        ..test_limits()
    };
    let mut server = Running::start(limits).await;
    let node = api::enroll::enrol(
        &server.state.store,
        &server.state.vault,
        "render-01",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let body = capabilities().to_string().into_bytes();
    let request = signed_request(&node, "POST", "/v1/agent/register", "", &body);
    let split = request.len() - body.len() / 2;
    let mut in_flight = server.connect().await;
    in_flight.write_all(&request[..split]).await.unwrap();
    // Let the server take the head before it is told to stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = server.stop.take().unwrap().send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    in_flight.write_all(&request[split..]).await.unwrap();
    let (status, _) = tokio::time::timeout(DROPPED_WITHIN, read_response(&mut in_flight))
        .await
        .expect("an answer")
        .expect("a whole response");
    assert_eq!(status, 204);
    assert!(closed_within(&mut in_flight, DROPPED_WITHIN).await);
    let served = server.server.take().unwrap();
    tokio::time::timeout(DROPPED_WITHIN, served)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "no longer listening"
    );
}

async fn oneshot(state: &AppState, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = api::router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn a_wrong_method_gets_405_with_the_contract_error_body() {
    let (state, dir) = crate::state().await;
    for (method, path) in [
        ("GET", "/v1/agent/claim"),
        ("DELETE", "/v1/agent/heartbeat"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let (status, body) = oneshot(&state, request).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(body["error"]["code"], "method_not_allowed");
        assert!(body["error"]["message"].is_string());
        assert!(body["error"]["details"].is_object());
        assert_eq!(body["error"]["trace_id"].as_str().map(str::len), Some(32));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn upper_case_signatures_and_ids_are_refused_and_change_nothing() {
    let server = Running::start(test_limits()).await;
    let node = api::enroll::enrol(
        &server.state.store,
        &server.state.vault,
        "render-01",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let body = capabilities().to_string().into_bytes();
    let path = "/v1/agent/register";
    let valid = String::from_utf8(signed_request(&node, "POST", path, "", &body)).unwrap();
    let signature_line = valid
        .lines()
        .find(|l| l.starts_with(headers::SIGNATURE))
        .unwrap()
        .to_string();
    let (name, value) = signature_line.split_once(": ").unwrap();
    let upper = valid.replace(
        &signature_line,
        &format!(
            "{name}: v1={}",
            value.trim_start_matches("v1=").to_uppercase()
        ),
    );
    // Ids in upper case, signed exactly as sent.
    let secret = NodeSecret::from_hex(&node.secret_hex).unwrap();
    let node_text = node.node_id.to_string().to_uppercase();
    let key_text = node.key_id.to_string().to_uppercase();
    let digest = node_signing::content_sha256(&body);
    let nonce = Uuid::new_v4().simple().to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let signature = node_signing::sign_request(
        &secret,
        &SignedParts {
            method: "POST",
            path,
            query: "",
            node_id: &node_text,
            key_id: &key_text,
            timestamp,
            nonce: &nonce,
            content_sha256: &digest,
        },
    );
    let mut ids = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\n{}: {node_text}\r\n{}: {key_text}\r\n{}: {timestamp}\r\n{}: {nonce}\r\n{}: {digest}\r\n{}: {signature}\r\nContent-Length: {}\r\n\r\n",
        headers::NODE,
        headers::KEY_ID,
        headers::TIMESTAMP,
        headers::NONCE,
        headers::CONTENT_SHA256,
        headers::SIGNATURE,
        body.len(),
    )
    .into_bytes();
    ids.extend_from_slice(&body);
    let before = server.events().await;
    for (what, request) in [
        ("upper-case signature", upper.into_bytes()),
        ("upper-case ids", ids),
    ] {
        let (status, error) = send(&server, &request).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(error["error"]["code"], "unauthorized", "{what}");
        assert_eq!(server.events().await, before, "{what} changed the store");
    }
    // The same request in lower case is served.
    let (status, _) = send(&server, &signed_request(&node, "POST", path, "", &body)).await;
    assert_eq!(status, 204);
}

async fn readyz(state: &AppState) -> (StatusCode, serde_json::Value) {
    oneshot(state, Request::get("/readyz").body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn readiness_is_503_with_the_error_body_while_the_store_does_not_answer() {
    let (state, dir) = crate::state().await;
    assert_eq!(readyz(&state).await.0, StatusCode::OK);
    let AnyStore::Sqlite(sqlite) = &state.store else {
        unreachable!("the test state is SQLite")
    };
    sqlite.readers().close().await;
    let (status, body) = readyz(&state).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "not_ready");
    assert!(body["error"]["trace_id"].is_string());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn readiness_is_503_while_a_migration_of_this_binary_is_not_applied() {
    use sqlx::{ConnectOptions, Executor};
    let (state, dir) = crate::state().await;
    assert_eq!(readyz(&state).await.0, StatusCode::OK);
    assert_eq!(
        state.store.missing_migrations().await.unwrap(),
        Vec::<i64>::new()
    );
    // Someone rolled the database's record back by one migration.
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("events.sqlite"))
        .connect()
        .await
        .unwrap();
    conn.execute(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .await
    .unwrap();
    let (status, body) = readyz(&state).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "not_ready");
    assert_eq!(state.store.missing_migrations().await.unwrap().len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_needs_the_broker_when_a_relay_is_configured() {
    let (state, dir) = crate::state().await;
    // Nothing listens on port 1.
    let away = std::sync::Arc::new(api::broker::Broker::spawn(
        &state.store,
        "amqp://guest:guest@127.0.0.1:1/%2f",
        "flatrender.test.away",
    ));
    let refused = state.clone().with_broker(away.clone());
    let (status, body) = readyz(&refused).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "not_ready");
    assert!(
        !body.to_string().contains("guest"),
        "the broker's credentials are not in the error body: {body}"
    );
    away.stop().await;
    if let Some(url) = crate::amqp_url() {
        let exchange = format!("flatrender.test.{}", Uuid::new_v4().simple());
        let broker = std::sync::Arc::new(api::broker::Broker::spawn(&state.store, &url, &exchange));
        let ready = state.clone().with_broker(broker.clone());
        assert_eq!(readyz(&ready).await.0, StatusCode::OK);
        // And it publishes: the store's events reach the exchange.
        let tenant = domain::TenantId::new(Uuid::new_v4()).unwrap();
        state
            .orchestrator
            .tenant_command(
                tenant,
                domain::TenantCommand::Create {
                    tenant_id: tenant,
                    name: domain::Label::parse("Studio").unwrap(),
                    weight: domain::ShareWeight::new(1).unwrap(),
                    max_running_tasks: 4,
                    at: chrono::Utc::now(),
                },
            )
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while broker.status().position < *state.store.appended().borrow() {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                broker.status()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(broker.status().confirmed > 0);
        broker.stop().await;
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A `flatrender serve` with `FLATRENDER_LOG_FORMAT=json` writes one JSON
/// object per log line, and a refused request's log line carries the trace
/// id its error body has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_trace_id_of_the_error_body() {
    let dir = crate::faults::temp_dir("json-logs");
    let port = crate::faults::free_port();
    let serve = crate::faults::Serve::start_with(
        &dir,
        None,
        port,
        &[("FLATRENDER_LOG_FORMAT", "json"), ("RUST_LOG", "info")],
    )
    .await;
    let response = reqwest::get(format!("{}/v1/tenant", serve.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    let trace = body["error"]["trace_id"].as_str().unwrap().to_string();
    let path = dir.join(format!("serve-{port}.log"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if lines
            .iter()
            .any(|l| l["fields"]["trace_id"].as_str() == Some(trace.as_str()))
        {
            assert!(
                lines
                    .iter()
                    .all(|l| l["level"].is_string() && l["timestamp"].is_string())
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line with trace id {trace}:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(serve);
    let _ = std::fs::remove_dir_all(dir);
}

/// The same against PostgreSQL, whose database goes away under the server.
#[tokio::test]
async fn readiness_is_503_when_the_postgresql_database_is_gone() {
    use sqlx::{ConnectOptions, Connection, Executor};
    let Ok(url) = std::env::var("FLATRENDER_TEST_DATABASE_URL") else {
        if std::env::var("FLATRENDER_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("FLATRENDER_REQUIRE_SERVICES=1 but FLATRENDER_TEST_DATABASE_URL is not set");
        }
        eprintln!(
            "!!! SKIPPED: FLATRENDER_TEST_DATABASE_URL is not set; PostgreSQL tests did not run"
        );
        return;
    };
    let admin: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let name = format!("fr_test_{}", Uuid::new_v4().simple());
    let mut conn = admin.connect().await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let db_url = admin.clone().database(&name).to_url_lossy().to_string();
    let dir = std::env::temp_dir().join(format!("flatrender-api-test-{}", Uuid::new_v4()));
    let store = AnyStore::open(Some(&db_url), &dir).await.unwrap();
    let blobs = api::files::BlobStore::open(&dir.join("blobs"), 1024)
        .await
        .unwrap();
    let state = AppState::open(
        store,
        blobs,
        std::sync::Arc::new(eventstore::SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .unwrap();
    assert_eq!(readyz(&state).await.0, StatusCode::OK);
    conn.execute(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .await
    .unwrap();
    let (status, body) = readyz(&state).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "not_ready");
    conn.close().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_replayed_upload_is_refused_before_its_body_is_read() {
    let server = Running::start(test_limits()).await;
    let (node, lease) = started_lease(&server.state, None).await;
    let (path, query) = upload_path(&lease);
    let png = crate::png_of(4, 4);
    let request = signed_request(&node, "PUT", &path, &query, &png);
    let (status, _) = send(&server, &request).await;
    assert_eq!(status, 201);
    let before = server.events().await;
    // The same signed head again, its body never sent: refused at once
    // (not a 408 after waiting for the body), nothing written.
    let head = &request[..request.len() - png.len()];
    let (status, error) = send(&server, head).await;
    assert_eq!(status, 401, "{error}");
    assert_eq!(error["error"]["code"], "unauthorized");
    assert_eq!(server.events().await, before);
    assert!(server.temporaries().is_empty());
}

#[tokio::test]
async fn a_client_that_stops_reading_an_answer_is_cut_off_and_frees_its_connection() {
    const SCENE: usize = 48 << 20;
    let limits = ServerLimits {
        max_connections: 1,
        ..test_limits()
    };
    let server = Running::start_with(limits, crate::state_with(SCENE as u64 + 1).await).await;
    // A node holding a lease on a job whose scene is larger than the
    // sockets' buffers.
    let (node, _) = started_lease(&server.state, None).await;
    let orch = &server.state.orchestrator;
    let tenant = api::seed::tenant(orch, "Big", 1, 10, 1_000).await.unwrap();
    let scene_bytes = noise(SCENE);
    let scene = api::seed::scene(orch, &server.state.blobs, tenant, "big.json", &scene_bytes)
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
    let node_id = NodeId::new(node.node_id).unwrap();
    orch.claim(node_id)
        .await
        .unwrap()
        .expect("the big job's task");
    let digest = node_signing::content_sha256(&scene_bytes);
    let path = format!("/v1/agent/files/{digest}");
    let empty = node_signing::content_sha256(b"");
    let head = signed_head(&node, "GET", &path, "", &empty, "");
    let mut stream = server.connect().await;
    stream.write_all(head.as_bytes()).await.unwrap();
    // Read the start of the answer, then stop reading.
    let mut start = vec![0u8; 64 * 1024];
    let n = stream.read(&mut start).await.unwrap();
    assert!(String::from_utf8_lossy(&start[..n]).starts_with("HTTP/1.1 200"));
    // Past the idle timeout and the grace, the server has closed it: the
    // rest of the body never comes, and the one connection it serves is
    // free for others.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut received = n;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match tokio::time::timeout(DROPPED_WITHIN, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(k)) => received += k,
            Err(_) => panic!("the stalled download was never closed"),
        }
    }
    assert!(
        received < SCENE,
        "the whole answer ({received} bytes) came to a client that stopped reading"
    );
    assert!(
        server.answers_healthz().await,
        "the connection was not freed"
    );
}
