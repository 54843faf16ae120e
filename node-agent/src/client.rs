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
    /// No randomness for a nonce.
    #[error("no randomness available for a nonce")]
    Random,
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

    /// Says the node is alive; returns the tasks it must stop.
    pub async fn heartbeat(&self) -> Result<Vec<Uuid>, ClientError> {
        let response = self
            .send(Method::POST, "/v1/agent/heartbeat", "", Vec::new())
            .await?;
        let body: serde_json::Value = response.json().await?;
        Ok(body["stop"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|v| v.as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default())
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
