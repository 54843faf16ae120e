//! One delivery attempt: the signed POST, its outcome as a command, and
//! the backoff before the next attempt.

use std::sync::Arc;

use chrono::Utc;
use domain::EndpointId;
use domain::notification::{NotificationCommand, NotificationKind};

use super::Dispatcher;
use crate::webhooks::{guard, sign};

/// What is delivered: the Standard Webhooks payload shape.
fn body(n: &domain::notification::NotificationRequested) -> Vec<u8> {
    let kind = match n.kind {
        NotificationKind::RenderCompleted => "render.completed",
        NotificationKind::RenderFailed => "render.failed",
        NotificationKind::RenderCancelled => "render.cancelled",
        NotificationKind::CreditLow => "tenant.credit_low",
    };
    serde_json::to_vec(&serde_json::json!({
        "type": kind,
        "timestamp": n.requested_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {
            "notification_id": n.notification_id,
            "tenant_id": n.tenant_id,
            "render_id": n.job_id,
            "balance_minor": n.balance_minor,
        },
    }))
    .unwrap_or_default()
}

impl Dispatcher {
    /// One attempt, and the command that records it.
    pub(super) async fn attempt(
        &self,
        endpoint: EndpointId,
        n: &domain::notification::Notification,
        url: &str,
    ) -> NotificationCommand {
        let attempt = n.attempts + 1;
        let outcome = self.post(endpoint, n, url).await;
        let at = Utc::now();
        match outcome {
            Ok(status) => {
                self.counts.lock().expect("counts").delivered += 1;
                NotificationCommand::RecordDelivery {
                    notification_id: n.requested.notification_id,
                    status_code: status,
                    at,
                }
            }
            Err((status, error)) => {
                let last = attempt >= self.config.max_attempts;
                {
                    let mut c = self.counts.lock().expect("counts");
                    c.failed_attempts += 1;
                    if last {
                        c.abandoned += 1;
                    }
                }
                NotificationCommand::RecordFailedAttempt {
                    notification_id: n.requested.notification_id,
                    status_code: status,
                    error: domain::Note::parse(error.chars().take(200).collect::<String>())
                        .unwrap_or_else(|_| domain::Note::parse("failed").expect("note")),
                    next_attempt_at: (!last).then(|| at + self.backoff(attempt)),
                    at,
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> chrono::Duration {
        let base = self.config.first_retry.as_millis() as u64;
        let exp = base
            .saturating_mul(1u64 << (attempt - 1).min(20))
            .min(3_600_000);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        // Between 75 % and 125 %.
        let jittered = exp * 3 / 4 + exp / 2 * (nanos % 1000) / 1000;
        chrono::Duration::milliseconds(jittered as i64)
    }

    /// The signed POST: `Ok(status)` for a 2xx, else the status (if any)
    /// and why.
    async fn post(
        &self,
        endpoint: EndpointId,
        n: &domain::notification::Notification,
        url: &str,
    ) -> Result<u16, (Option<u16>, String)> {
        let parsed = reqwest::Url::parse(url).map_err(|e| (None, e.to_string()))?;
        let (host, addr) = guard::resolve(&parsed, self.config.allow_private)
            .await
            .map_err(|e| (None, e.to_string()))?;
        let reg = self.registry.lock().await;
        let key_id = reg
            .endpoints
            .get(&endpoint)
            .and_then(|e| e.registration())
            .map(|r| r.secret_key_id.as_uuid());
        drop(reg);
        let Some(key_id) = key_id else {
            return Err((None, "the endpoint is gone".into()));
        };
        let cached = self
            .secrets
            .lock()
            .expect("secrets")
            .get(&(endpoint, key_id))
            .cloned();
        let secret = match cached {
            Some(s) => s,
            None => match self
                .store
                .webhook_secret(endpoint.as_uuid(), key_id, &self.vault)
                .await
            {
                Ok(Some(s)) => {
                    let s = Arc::new(s);
                    self.secrets
                        .lock()
                        .expect("secrets")
                        .insert((endpoint, key_id), s.clone());
                    s
                }
                Ok(None) => return Err((None, "the endpoint has no secret".into())),
                Err(e) => return Err((None, format!("its secret does not open: {e}"))),
            },
        };
        let client = self.client(&host, addr).map_err(|e| (None, e))?;
        let body = body(&n.requested);
        let id = n.requested.notification_id.to_string();
        let timestamp = Utc::now().timestamp();
        let response = client
            .post(parsed)
            .header("content-type", "application/json")
            .header("user-agent", "FlatRender-Webhooks/1")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                sign::signature(&secret, &id, timestamp, &body),
            )
            .body(body)
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
            Ok(r) => Err((
                Some(r.status().as_u16()),
                format!("answered {}", r.status()),
            )),
            Err(e) if e.is_timeout() => Err((None, "timed out".into())),
            Err(e) => Err((None, format!("could not send: {e}"))),
        }
    }

    /// The client for `host` pinned to `addr` (checked by the guard), kept
    /// for its connections.
    fn client(&self, host: &str, addr: std::net::SocketAddr) -> Result<reqwest::Client, String> {
        let mut clients = self.clients.lock().expect("clients");
        if let Some(c) = clients.get(&(host.to_string(), addr)) {
            return Ok(c.clone());
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.config.timeout)
            .resolve(host, addr)
            .build()
            .map_err(|e| e.to_string())?;
        if clients.len() > 10_000 {
            clients.clear();
        }
        clients.insert((host.to_string(), addr), client.clone());
        Ok(client)
    }
}
