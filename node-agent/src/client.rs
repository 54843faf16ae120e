//! The agent's side of the node-agent API: every request signed with the
//! node's secret as `contracts/rest/node-agent.openapi.yaml` specifies.
//!
//! A client knows one or more orchestrator URLs ([`ServerUrls`]) and sends
//! each request to the current one. A connection failure, a timeout or a
//! 502/503/504 answer moves it on to the next URL (round robin) for the
//! next request; otherwise it stays on the URL that works. Every URL is
//! signed the same way: the signature covers the method, path and query,
//! not the host.

mod error;
mod urls;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use contracts::node_signing::{self, NodeSecret, SignedParts, headers};
use reqwest::{Method, StatusCode};
use tokio::sync::watch;
use uuid::Uuid;

pub use error::ClientError;
use error::error_body;
pub use urls::{ServerUrlError, ServerUrls};
use wire::HeartbeatReply;
pub use wire::{Assignment, Frames, LeaseRef, MAX_FAILURE_CHARS, Params, Scene, failure_text};

/// How long connecting to an orchestrator may take before it counts as
/// unreachable (and the client moves on to the next URL).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take; a claim adds its long-poll wait.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an upload or a download may take.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// A signed client of the orchestrator, for one node. Clones share the
/// current URL and the [`AgentClient::successes`] signal.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    servers: Arc<Servers>,
    node_id: String,
    key_id: String,
    secret: NodeSecret,
    successes: Arc<watch::Sender<u64>>,
}

/// The URLs and which one requests go to.
#[derive(Debug)]
struct Servers {
    urls: Vec<String>,
    current: AtomicUsize,
}

impl Servers {
    fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst) % self.urls.len()
    }

    /// The URL at `index` failed: the next request goes to the next one,
    /// unless a concurrent request already moved on.
    fn failed(&self, index: usize) {
        let next = (index + 1) % self.urls.len();
        if next != index
            && self
                .current
                .compare_exchange(index, next, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            tracing::warn!(
                failed = %self.urls[index],
                next = %self.urls[next],
                "moving on to the next orchestrator URL"
            );
        }
    }
}

/// An answered request (2xx), with the URL it came from.
struct Answer<'a> {
    client: &'a AgentClient,
    index: usize,
    response: reqwest::Response,
}

impl Answer<'_> {
    fn url(&self) -> String {
        self.client.servers.urls[self.index].clone()
    }

    async fn bytes(self) -> Result<Vec<u8>, ClientError> {
        let url = self.url();
        match self.response.bytes().await {
            Ok(bytes) => Ok(bytes.to_vec()),
            Err(source) => {
                self.client.servers.failed(self.index);
                Err(ClientError::Unreachable { url, source })
            }
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, ClientError> {
        let url = self.url();
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadReply {
            url,
            message: e.to_string(),
        })
    }
}

impl AgentClient {
    /// A client of the one orchestrator at `base_url` (e.g.
    /// `http://127.0.0.1:8080`), taken as it is.
    pub fn new(base_url: &str, node_id: Uuid, key_id: Uuid, secret: NodeSecret) -> Self {
        let urls = ServerUrls(vec![base_url.trim_end_matches('/').to_string()]);
        Self::with_servers(urls, node_id, key_id, secret)
    }

    /// A client of the orchestrator instances at `urls`, starting with the
    /// first and failing over as the module documentation says.
    pub fn with_servers(urls: ServerUrls, node_id: Uuid, key_id: Uuid, secret: NodeSecret) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            http,
            servers: Arc::new(Servers {
                urls: urls.0,
                current: AtomicUsize::new(0),
            }),
            node_id: node_id.to_string(),
            key_id: key_id.to_string(),
            secret,
            successes: Arc::new(watch::channel(0).0),
        }
    }

    /// The URL the next request goes to.
    pub fn current_server(&self) -> &str {
        &self.servers.urls[self.servers.current()]
    }

    /// A receiver that is marked changed each time any request (by this
    /// client or a clone) is answered with success: the orchestrator is
    /// back, so whoever is backing off may stop waiting.
    pub fn successes(&self) -> watch::Receiver<u64> {
        self.successes.subscribe()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer<'_>, ClientError> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|_| ClientError::Random)?;
        let nonce = hex::encode(raw);
        let digest = node_signing::content_sha256(&body);
        let parts = SignedParts {
            method: method.as_str(),
            path,
            query,
            node_id: &self.node_id,
            key_id: &self.key_id,
            timestamp,
            nonce: &nonce,
            content_sha256: &digest,
        };
        let signature = node_signing::sign_request(&self.secret, &parts);
        let index = self.servers.current();
        let base = &self.servers.urls[index];
        let url = if query.is_empty() {
            format!("{base}{path}")
        } else {
            format!("{base}{path}?{query}")
        };
        let sent = self
            .http
            .request(method, url)
            .timeout(timeout)
            .header(headers::NODE, &self.node_id)
            .header(headers::KEY_ID, &self.key_id)
            .header(headers::TIMESTAMP, timestamp.to_string())
            .header(headers::NONCE, nonce)
            .header(headers::CONTENT_SHA256, digest)
            .header(headers::SIGNATURE, signature)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(source) => {
                self.servers.failed(index);
                return Err(ClientError::Unreachable {
                    url: base.clone(),
                    source,
                });
            }
        };
        let status = response.status();
        if !status.is_client_error() && !status.is_server_error() {
            if status.is_success() {
                self.successes.send_modify(|n| *n = n.wrapping_add(1));
            }
            return Ok(Answer {
                client: self,
                index,
                response,
            });
        }
        if matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ) {
            self.servers.failed(index);
        }
        let text = response.bytes().await.unwrap_or_default();
        let (code, message, trace_id) = error_body(status, &text);
        let url = base.clone();
        Err(if status.is_server_error() {
            ClientError::ServerError {
                url,
                status,
                code,
                message,
                trace_id,
            }
        } else {
            ClientError::Refused {
                url,
                status,
                code,
                message,
                trace_id,
            }
        })
    }

    /// Reports the machine's capabilities (the contract's `Capabilities`).
    pub async fn register(&self, capabilities: &serde_json::Value) -> Result<(), ClientError> {
        let body = serde_json::to_vec(capabilities).unwrap_or_default();
        self.send(
            Method::POST,
            "/v1/agent/register",
            "",
            body,
            REQUEST_TIMEOUT,
        )
        .await?;
        Ok(())
    }

    /// Says the node is alive and which leases it holds; returns those it
    /// must stop (revoked, requeued, or their job cancelled).
    pub async fn heartbeat(&self, held: &[LeaseRef]) -> Result<Vec<LeaseRef>, ClientError> {
        let body = serde_json::to_vec(&serde_json::json!({ "leases": held })).unwrap_or_default();
        let reply: HeartbeatReply = self
            .send(
                Method::POST,
                "/v1/agent/heartbeat",
                "",
                body,
                REQUEST_TIMEOUT,
            )
            .await?
            .json()
            .await?;
        Ok(reply.stop)
    }

    /// Long-polls for work for up to `wait_seconds`; checks the
    /// orchestrator's signature on an assignment before returning it.
    pub async fn claim(&self, wait_seconds: u32) -> Result<Option<Assignment>, ClientError> {
        let query = format!("wait_seconds={wait_seconds}");
        let timeout = REQUEST_TIMEOUT + Duration::from_secs(u64::from(wait_seconds));
        let answer = self
            .send(Method::POST, "/v1/agent/claim", &query, Vec::new(), timeout)
            .await?;
        if answer.response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let value: serde_json::Value = answer.json().await?;
        if node_signing::verify_assignment(&self.secret, &value).is_err() {
            return Err(ClientError::BadAssignmentSignature);
        }
        let assignment: Assignment =
            serde_json::from_value(value).map_err(|_| ClientError::BadAssignmentSignature)?;
        Ok(Some(assignment))
    }

    async fn task_call(
        &self,
        task_id: Uuid,
        what: &str,
        body: serde_json::Value,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/agent/tasks/{task_id}/{what}");
        let body = serde_json::to_vec(&body).unwrap_or_default();
        self.send(Method::POST, &path, "", body, REQUEST_TIMEOUT)
            .await?;
        Ok(())
    }

    /// Reports progress: with a frame, that frame finished (and its stored
    /// output); without one, that rendering started or goes on.
    pub async fn progress(
        &self,
        lease: LeaseRef,
        frame: Option<u32>,
        output_file_id: Option<Uuid>,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({
            "lease_epoch": lease.lease_epoch,
            "frame": frame,
            "output_file_id": output_file_id,
        });
        self.task_call(lease.task_id, "progress", body).await
    }

    /// Reports how far the renderer is within `frame` (0 to 100): sent to
    /// the server's watchers, never stored.
    pub async fn progress_percent(
        &self,
        lease: LeaseRef,
        frame: u32,
        percent: f64,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({
            "lease_epoch": lease.lease_epoch,
            "rendering_frame": frame,
            "percent": (percent.clamp(0.0, 100.0) * 10.0).round() / 10.0,
        });
        self.task_call(lease.task_id, "progress", body).await
    }

    /// Sends lines of the renderer's output for the attempt's log: each
    /// `(stream, text)`, `stream` being `stdout` or `stderr`.
    pub async fn logs(&self, lease: LeaseRef, lines: &[(&str, String)]) -> Result<(), ClientError> {
        let lines: Vec<serde_json::Value> = lines
            .iter()
            .map(|(stream, text)| serde_json::json!({ "stream": stream, "text": text }))
            .collect();
        let body = serde_json::json!({ "lease_epoch": lease.lease_epoch, "lines": lines });
        self.task_call(lease.task_id, "logs", body).await
    }

    /// Reports the task done; refused (409) when the lease is stale.
    pub async fn complete(&self, lease: LeaseRef) -> Result<(), ClientError> {
        let body = serde_json::json!({ "lease_epoch": lease.lease_epoch });
        self.task_call(lease.task_id, "complete", body).await
    }

    /// Reports the task failed with the renderer's error lines (as the
    /// contract takes them: see [`failure_text`]).
    pub async fn fail(&self, lease: LeaseRef, error: &str) -> Result<(), ClientError> {
        self.fail_with(lease, error, None).await
    }

    /// [`AgentClient::fail`], with the cause when the agent stopped the
    /// task for one of the render's timeouts (`timed_out`, `stalled`).
    pub async fn fail_with(
        &self,
        lease: LeaseRef,
        error: &str,
        cause: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut body =
            serde_json::json!({ "lease_epoch": lease.lease_epoch, "error": failure_text(error) });
        if let Some(cause) = cause {
            body["cause"] = serde_json::json!(cause);
        }
        self.task_call(lease.task_id, "fail", body).await
    }

    /// Gives the task back.
    pub async fn release(&self, lease: LeaseRef) -> Result<(), ClientError> {
        let body = serde_json::json!({ "lease_epoch": lease.lease_epoch });
        self.task_call(lease.task_id, "release", body).await
    }

    /// Uploads a rendered frame; returns the stored output's file id.
    pub async fn upload_output(
        &self,
        lease: LeaseRef,
        frame: u32,
        png: Vec<u8>,
    ) -> Result<Uuid, ClientError> {
        let path = format!("/v1/agent/outputs/{}/{frame}", lease.task_id);
        let query = format!("lease_epoch={}", lease.lease_epoch);
        let answer = self
            .send(Method::PUT, &path, &query, png, TRANSFER_TIMEOUT)
            .await?;
        let url = answer.url();
        let body: serde_json::Value = answer.json().await?;
        body["file_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or(ClientError::BadReply {
                url,
                message: "the upload reply names no file".into(),
            })
    }

    /// Downloads an input and checks it against its digest.
    pub async fn download(&self, sha256: &str) -> Result<Vec<u8>, ClientError> {
        let path = format!("/v1/agent/files/{sha256}");
        let bytes = self
            .send(Method::GET, &path, "", Vec::new(), TRANSFER_TIMEOUT)
            .await?
            .bytes()
            .await?;
        if node_signing::content_sha256(&bytes) != sha256 {
            return Err(ClientError::Integrity);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_text_is_what_the_contract_takes() {
        let blender = format!(
            "\x1b[31mError: {}\r\nFra:1 Mem:12M\ttotal\u{9b}\n\n",
            "x".repeat(1500)
        );
        for raw in [blender.as_str(), "", " \r\n\t ", "boom", &"é".repeat(1001)] {
            let text = failure_text(raw);
            let body = serde_json::json!({ "lease_epoch": 1, "error": text });
            assert!(
                contracts::node_agent::validate_schema("FailReport", &body).is_ok(),
                "{raw:?} became {text:?}, which the contract refuses"
            );
            assert!(text.chars().count() <= MAX_FAILURE_CHARS);
        }
        // The end of the output is kept; terminal escapes are not.
        let text = failure_text(&blender);
        assert!(text.ends_with("Fra:1 Mem:12M\ttotal"), "{text}");
        assert!(!text.contains('\x1b') && !text.contains('\r'));
        assert_eq!(failure_text("  boom\n"), "boom");
    }

    #[test]
    fn urls_are_split_checked_and_deduplicated() {
        let urls = ServerUrls::parse([
            "http://a:8080/, http://b:8080",
            "",
            "http://a:8080",
            "http://c:8080/prefix",
        ])
        .unwrap();
        assert_eq!(
            urls.as_slice(),
            ["http://a:8080", "http://b:8080", "http://c:8080/prefix"]
        );
        assert_eq!(
            urls.to_string(),
            "http://a:8080,http://b:8080,http://c:8080/prefix"
        );
    }

    #[test]
    fn unusable_urls_are_refused_with_the_reason() {
        assert_eq!(ServerUrls::parse(["", " , "]), Err(ServerUrlError::Empty));
        assert_eq!(
            ServerUrls::parse(Vec::<String>::new()),
            Err(ServerUrlError::Empty)
        );
        for (url, reason) in [
            ("127.0.0.1:8080", "is not a URL"),
            ("localhost:8080", "must start with http://"),
            ("ftp://a:21", "must start with http://"),
            ("https://a:443", "no TLS"),
            ("http://user:pw@a:8080", "user name or password"),
            ("http://a:8080/?x=1", "query"),
            ("http://a:8080#top", "fragment"),
        ] {
            match ServerUrls::parse(["http://ok:1", url]) {
                Err(ServerUrlError::Invalid {
                    url: bad,
                    reason: why,
                }) => {
                    assert_eq!(bad, url);
                    assert!(why.contains(reason), "{url}: {why}");
                }
                other => panic!("{url} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn error_bodies_are_read_as_the_contract_says() {
        let body =
            br#"{"error":{"code":"internal","message":"boom","details":{},"trace_id":"t-1"}}"#;
        assert_eq!(
            error_body(StatusCode::INTERNAL_SERVER_ERROR, body),
            ("internal".into(), "boom".into(), "t-1".into())
        );
        assert_eq!(
            error_body(
                StatusCode::BAD_GATEWAY,
                b"<html>\n <b>Bad</b> gateway</html>"
            ),
            (
                "bad_gateway".into(),
                "<html> <b>Bad</b> gateway</html>".into(),
                String::new()
            )
        );
        assert_eq!(
            error_body(StatusCode::SERVICE_UNAVAILABLE, b""),
            (
                "service_unavailable".into(),
                "(no error body)".into(),
                String::new()
            )
        );
    }

    #[test]
    fn answers_and_refusals_read_apart() {
        let server = ClientError::ServerError {
            url: "http://a:8080".into(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal".into(),
            message: "boom".into(),
            trace_id: "t-1".into(),
        };
        assert_eq!(
            server.to_string(),
            "orchestrator answered 500 internal: boom (at http://a:8080, trace_id t-1)"
        );
        assert!(server.is_transient());
        let refused = ClientError::Refused {
            url: "http://a:8080".into(),
            status: StatusCode::CONFLICT,
            code: "stale_lease".into(),
            message: "not yours".into(),
            trace_id: String::new(),
        };
        assert_eq!(
            refused.to_string(),
            "orchestrator refused the request with 409 stale_lease: not yours (at http://a:8080)"
        );
        assert!(!refused.is_transient());
    }

    #[tokio::test]
    async fn a_dead_url_is_unreachable_and_the_next_request_goes_to_the_next_url() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let urls = ServerUrls::parse([dead_url.as_str(), "http://127.0.0.1:1"]).unwrap();
        let secret = NodeSecret::from_bytes(vec![7; 32]).unwrap();
        let client = AgentClient::with_servers(urls, Uuid::new_v4(), Uuid::new_v4(), secret);
        assert_eq!(client.current_server(), dead_url);
        let error = client.heartbeat(&[]).await.unwrap_err();
        assert!(matches!(&error, ClientError::Unreachable { url, .. } if *url == dead_url));
        assert!(
            error
                .to_string()
                .starts_with(&format!("orchestrator unreachable at {dead_url}: ")),
            "{error}"
        );
        assert!(error.is_transient());
        assert_eq!(client.clone().current_server(), "http://127.0.0.1:1");
        let _ = client.heartbeat(&[]).await;
        assert_eq!(client.current_server(), dead_url, "round robin");
    }
}
