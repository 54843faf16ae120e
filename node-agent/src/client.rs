//! The agent's side of the node-agent API: every request signed with the
//! node's secret as `contracts/rest/node-agent.openapi.yaml` specifies.

use std::time::{SystemTime, UNIX_EPOCH};

use contracts::node_signing::{self, NodeSecret, SignedParts, headers};
use reqwest::{Method, StatusCode};
use uuid::Uuid;

/// Why a call to the orchestrator failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The orchestrator could not be reached or the transfer broke.
    #[error("orchestrator unreachable: {0}")]
    Unreachable(#[from] reqwest::Error),
    /// The orchestrator answered with the contract's error body.
    #[error("refused with {status}: {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The error code of the body.
        code: String,
        /// Its message.
        message: String,
    },
    /// Downloaded bytes do not hash to the digest they were asked by.
    #[error("downloaded file does not match its SHA-256")]
    Integrity,
    /// An assignment whose orchestrator signature does not verify: it is
    /// never run.
    #[error("the assignment's orchestrator signature does not verify")]
    BadAssignmentSignature,
    /// No randomness for a nonce.
    #[error("no randomness available for a nonce")]
    Random,
}

/// A lease as the agent presents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LeaseRef {
    /// The task.
    pub task_id: Uuid,
    /// The fencing token.
    pub lease_epoch: u32,
}

#[derive(Debug, serde::Deserialize)]
struct HeartbeatReply {
    #[serde(default)]
    stop: Vec<LeaseRef>,
}

/// Frames of an assignment (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frames {
    /// First frame.
    pub start: u32,
    /// Last frame.
    pub end: u32,
}

/// The scene of an assignment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scene {
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// Size.
    pub size_bytes: u64,
}

/// Typed renderer parameters of an assignment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    /// Width in pixels.
    #[serde(default)]
    pub width: Option<u32>,
    /// Height in pixels.
    #[serde(default)]
    pub height: Option<u32>,
    /// Samples per pixel.
    #[serde(default)]
    pub samples: Option<u32>,
}

/// A verified work assignment (the contract's `Assignment`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Assignment {
    /// The job.
    pub job_id: Uuid,
    /// The task.
    pub task_id: Uuid,
    /// The fencing token.
    pub lease_epoch: u32,
    /// When the lease ends unless renewed.
    pub lease_expires_at: String,
    /// The renderer, by name.
    pub renderer: String,
    /// Its parameters.
    pub params: Params,
    /// The frames.
    pub frames: Frames,
    /// The input scene.
    pub scene: Scene,
}

impl Assignment {
    /// The lease to present in reports.
    pub fn lease(&self) -> LeaseRef {
        LeaseRef {
            task_id: self.task_id,
            lease_epoch: self.lease_epoch,
        }
    }
}

/// A signed client of one orchestrator, for one node.
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base_url: String,
    node_id: String,
    key_id: String,
    secret: NodeSecret,
}

impl AgentClient {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str, node_id: Uuid, key_id: Uuid, secret: NodeSecret) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_string(),
            node_id: node_id.to_string(),
            key_id: key_id.to_string(),
            secret,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, ClientError> {
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
        let url = if query.is_empty() {
            format!("{}{path}", self.base_url)
        } else {
            format!("{}{path}?{query}", self.base_url)
        };
        let response = self
            .http
            .request(method, url)
            .header(headers::NODE, &self.node_id)
            .header(headers::KEY_ID, &self.key_id)
            .header(headers::TIMESTAMP, timestamp.to_string())
            .header(headers::NONCE, nonce)
            .header(headers::CONTENT_SHA256, digest)
            .header(headers::SIGNATURE, signature)
            .body(body)
            .send()
            .await?;
        if response.status().is_client_error() || response.status().is_server_error() {
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            return Err(ClientError::Refused {
                status,
                code: body["error"]["code"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_string(),
                message: body["error"]["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(response)
    }

    /// Reports the machine's capabilities (the contract's `Capabilities`).
    pub async fn register(&self, capabilities: &serde_json::Value) -> Result<(), ClientError> {
        let body = serde_json::to_vec(capabilities).unwrap_or_default();
        self.send(Method::POST, "/v1/agent/register", "", body)
            .await?;
        Ok(())
    }

    /// Says the node is alive and which leases it holds; returns those it
    /// must stop (revoked, requeued, or their job cancelled).
    pub async fn heartbeat(&self, held: &[LeaseRef]) -> Result<Vec<LeaseRef>, ClientError> {
        let body = serde_json::to_vec(&serde_json::json!({ "leases": held })).unwrap_or_default();
        let response = self
            .send(Method::POST, "/v1/agent/heartbeat", "", body)
            .await?;
        let body: HeartbeatReply = response.json().await?;
        Ok(body.stop)
    }

    /// Long-polls for work for up to `wait_seconds`; checks the
    /// orchestrator's signature on an assignment before returning it.
    pub async fn claim(&self, wait_seconds: u32) -> Result<Option<Assignment>, ClientError> {
        let query = format!("wait_seconds={wait_seconds}");
        let response = self
            .send(Method::POST, "/v1/agent/claim", &query, Vec::new())
            .await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let value: serde_json::Value = response.json().await?;
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
        self.send(Method::POST, &path, "", body).await?;
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

    /// Reports the task done; refused (409) when the lease is stale.
    pub async fn complete(&self, lease: LeaseRef) -> Result<(), ClientError> {
        let body = serde_json::json!({ "lease_epoch": lease.lease_epoch });
        self.task_call(lease.task_id, "complete", body).await
    }

    /// Reports the task failed with the renderer's error lines.
    pub async fn fail(&self, lease: LeaseRef, error: &str) -> Result<(), ClientError> {
        let body = serde_json::json!({ "lease_epoch": lease.lease_epoch, "error": error });
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
        let response = self.send(Method::PUT, &path, &query, png).await?;
        let body: serde_json::Value = response.json().await?;
        body["file_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or(ClientError::Refused {
                status: StatusCode::BAD_GATEWAY,
                code: "bad_reply".into(),
                message: "the upload reply names no file".into(),
            })
    }

    /// Downloads an input and checks it against its digest.
    pub async fn download(&self, sha256: &str) -> Result<Vec<u8>, ClientError> {
        let path = format!("/v1/agent/files/{sha256}");
        let bytes = self
            .send(Method::GET, &path, "", Vec::new())
            .await?
            .bytes()
            .await?;
        if node_signing::content_sha256(&bytes) != sha256 {
            return Err(ClientError::Integrity);
        }
        Ok(bytes.to_vec())
    }
}
