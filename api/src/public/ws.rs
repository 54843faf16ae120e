//! The WebSocket contract (`contracts/websocket/render-progress.md`):
//! `GET /v1/ws/renders/{render_id}?token=…[&after=N]` for one render and
//! `GET /v1/ws/renders?token=…[&after=N]` for every render of the tenant.
//!
//! The token is checked, and the render found in the caller's tenant,
//! before the upgrade (the contract's error body otherwise). A session
//! starts watching the live feed, then sends what the feed has already
//! passed: a snapshot folded from the stored events up to the feed's
//! position, or with `?after=`, every stored event after that position
//! read from the store; then what the feed sends. So a client that
//! reconnects with the position of the last event it saw misses nothing
//! and sees nothing twice.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message as Frame, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use domain::TenantId;
use eventstore::{EventStore, RecordedEvent};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use uuid::Uuid;

use super::auth::Caller;
use super::{field, query};
use crate::app::AppState;
use crate::error::ApiError;
use crate::live::{Kind, Topic, messages};

/// A send that does not complete within this is a slow client.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server pings.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// A client not heard from (a pong, or any frame) for this long is closed.
pub const SILENT_LIMIT: Duration = Duration::from_secs(60);
/// The most renders a tenant's snapshot lists (oldest unfinished first).
pub const SNAPSHOT_RENDERS: usize = 200;
/// The most messages written to a client before one flush.
const BURST: usize = 256;
/// The largest message a client may send.
const MAX_CLIENT_MESSAGE: usize = 4096;

/// Close codes (documented in the contract).
pub mod close {
    /// The client fell behind: reconnect with `?after=` the last position.
    pub const SLOW_CLIENT: u16 = 4001;
    /// The client did not answer pings.
    pub const PING_TIMEOUT: u16 = 4002;
    /// A client message the contract does not know.
    pub const POLICY: u16 = 1008;
    /// The server is going away.
    pub const GOING_AWAY: u16 = 1001;
}

/// `?token=&after=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsParams {
    token: Option<String>,
    after: Option<i64>,
    /// `GET /v1/ws/renders` only, operators only: every tenant's renders.
    all_tenants: Option<bool>,
}

#[derive(Debug, Clone, Copy)]
enum Scope {
    Render(Uuid),
    Tenant,
    /// Every tenant's renders (operators).
    Farm,
}

/// `GET /v1/ws/renders/{render_id}`.
pub async fn render(
    State(state): State<AppState>,
    Path(render): Path<String>,
    params: Result<Query<WsParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (caller, after, all_tenants) = checked(&state, params).await?;
    if all_tenants {
        return Err(super::field(
            "all_tenants",
            "only GET /v1/ws/renders takes all_tenants",
        ));
    }
    let (render_id, _) = super::render_of(&state, &caller, &render).await?;
    upgraded(
        state,
        upgrade,
        Scope::Render(render_id),
        caller.tenant_id,
        after,
    )
}

/// `GET /v1/ws/renders`: every render of the caller's tenant.
pub async fn tenant(
    State(state): State<AppState>,
    params: Result<Query<WsParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (caller, after, all_tenants) = checked(&state, params).await?;
    let scope = if all_tenants {
        caller.operates()?;
        Scope::Farm
    } else {
        Scope::Tenant
    };
    upgraded(state, upgrade, scope, caller.tenant_id, after)
}

async fn checked(
    state: &AppState,
    params: Result<Query<WsParams>, QueryRejection>,
) -> Result<(Caller, Option<i64>, bool), ApiError> {
    let p = query(params)?;
    let token = p
        .token
        .ok_or(ApiError::Unauthorized("a token is required: ?token=<JWT>"))?;
    let caller = Caller::from_token(state, &token).await?;
    if p.after.is_some_and(|a| a < 0) {
        return Err(field("after", "after is a global position, 0 or more"));
    }
    Ok((caller, p.after, p.all_tenants == Some(true)))
}

fn upgraded(
    state: AppState,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    scope: Scope,
    tenant: TenantId,
    after: Option<i64>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| ApiError::BadRequest {
        code: "websocket_required",
        message: format!("this is a WebSocket endpoint: {e}"),
        details: json!({}),
    })?;
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            Session::new(state, scope, tenant).run(socket, after).await;
        }))
}

/// Which tasks' log lines a client follows.
#[derive(Debug, Default)]
struct Follow {
    all: bool,
    tasks: HashSet<Uuid>,
}

impl Follow {
    fn wants(&self, task: Option<Uuid>) -> bool {
        self.all || task.is_some_and(|t| self.tasks.contains(&t))
    }
}

struct Session {
    state: AppState,
    scope: Scope,
    tenant: TenantId,
    follow: Arc<Mutex<Follow>>,
}

type Sink = futures_util::stream::SplitSink<WebSocket, Frame>;

/// Why a session ends.
enum End {
    Closed,
    Close(u16, String),
}

impl Session {
    fn new(state: AppState, scope: Scope, tenant: TenantId) -> Self {
        Self {
            state,
            scope,
            tenant,
            follow: Arc::default(),
        }
    }

    fn topic(&self) -> Topic {
        match self.scope {
            Scope::Render(id) => Topic::Render(id),
            Scope::Tenant => Topic::Tenant(self.tenant.as_uuid()),
            Scope::Farm => Topic::Farm,
        }
    }

    fn includes(&self, event: &RecordedEvent) -> bool {
        let render = event.stream_type == "render_job";
        match self.scope {
            Scope::Render(id) => render && event.stream_id == id,
            Scope::Tenant => render && event.tenant_id == Some(self.tenant.as_uuid()),
            Scope::Farm => render || event.stream_type == "node",
        }
    }

    async fn run(self, socket: WebSocket, after: Option<i64>) {
        let (mut sink, mut stream) = socket.split();
        let mut watch = self.state.live.watch(self.topic());
        let (heard_tx, mut heard) = tokio::sync::watch::channel(Instant::now());
        let (ended_tx, mut ended) = tokio::sync::oneshot::channel::<End>();
        let follow = self.follow.clone();
        // The client's frames: log follows, pongs (any frame counts as a
        // sign of life), its close.
        let reader = eventstore::task::spawn_named("ws-reader", async move {
            let end = loop {
                match stream.next().await {
                    None | Some(Err(_)) | Some(Ok(Frame::Close(_))) => break End::Closed,
                    Some(Ok(Frame::Text(text))) => {
                        let _ = heard_tx.send(Instant::now());
                        if let Err(message) = client_message(&follow, text.as_str()) {
                            break End::Close(close::POLICY, message);
                        }
                    }
                    Some(Ok(_)) => {
                        let _ = heard_tx.send(Instant::now());
                    }
                }
            };
            let _ = ended_tx.send(end);
        });
        let from = watch.from_position;
        let end = match self.catch_up(&mut sink, after, from).await {
            Err(end) => end,
            Ok(floor) => {
                self.live(&mut sink, &mut watch, floor, &mut heard, &mut ended)
                    .await
            }
        };
        reader.abort();
        if let End::Close(code, reason) = end {
            let frame = Frame::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            }));
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(frame)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }

    /// What the feed passed before this session watched it: a snapshot,
    /// or the stored events after `after`. Answers the position after which
    /// the feed's events are to be sent.
    async fn catch_up(&self, sink: &mut Sink, after: Option<i64>, from: i64) -> Result<i64, End> {
        let Some(after) = after else {
            let snapshot = self.snapshot(from).await.map_err(|e| {
                tracing::warn!(error = %e, "a WebSocket snapshot could not be read");
                End::Close(1011, "the snapshot could not be read; reconnect".into())
            })?;
            send(sink, snapshot.to_string().into()).await?;
            return Ok(from);
        };
        let mut position = after;
        while position < from {
            let batch = self
                .state
                .store
                .read_all(position, eventstore::store::READ_BATCH)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "a WebSocket catch-up could not read the store");
                    End::Close(1011, format!("reconnect with ?after={position}"))
                })?;
            let Some(last) = batch.last().map(|e| e.global_position) else {
                break;
            };
            for event in batch.iter().filter(|e| e.global_position <= from) {
                if self.includes(event)
                    && let Some(message) = messages::message(event)
                {
                    send(sink, message.to_string().into()).await?;
                }
            }
            position = last;
        }
        Ok(from.max(after))
    }

    /// The state up to `position`: the render and its tasks, or the
    /// tenant's unfinished renders.
    async fn snapshot(&self, position: i64) -> Result<Value, eventstore::StoreError> {
        match self.scope {
            Scope::Render(id) => {
                let events = stream_until(&self.state.store, id, position).await?;
                Ok(messages::render_snapshot(id, &events, position))
            }
            Scope::Tenant | Scope::Farm => {
                let tenant = match self.scope {
                    Scope::Farm => None,
                    _ => Some(self.tenant),
                };
                let jobs = self
                    .state
                    .orchestrator
                    .unfinished_jobs_of(tenant, SNAPSHOT_RENDERS)
                    .await;
                let mut renders = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let id = job.as_uuid();
                    let events = stream_until(&self.state.store, id, position).await?;
                    if events.is_empty() {
                        continue;
                    }
                    let snapshot = messages::render_snapshot(id, &events, position);
                    renders.push(snapshot["render"].clone());
                }
                Ok(json!({ "type": "snapshot", "position": position, "renders": renders }))
            }
        }
    }

    /// Whether a feed message goes to this client: not already sent (at or
    /// below the catch-up's position), and log lines only of followed tasks.
    fn wanted(&self, message: &crate::live::Message, floor: i64) -> bool {
        if message.position.is_some_and(|p| p <= floor) {
            return false;
        }
        message.kind != Kind::Log
            || self
                .follow
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .wants(message.task_id)
    }

    /// The feed's messages, pings, until the client goes or falls behind.
    async fn live(
        &self,
        sink: &mut Sink,
        watch: &mut crate::live::Watch,
        floor: i64,
        heard: &mut tokio::sync::watch::Receiver<Instant>,
        ended: &mut tokio::sync::oneshot::Receiver<End>,
    ) -> End {
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        let mut last_position = floor;
        loop {
            tokio::select! {
                received = watch.receiver.recv() => {
                    // What is already waiting goes out with it: one write
                    // (and one wake-up) for a burst, not one per message.
                    let mut next = Some(received);
                    let mut fed = 0;
                    while let Some(received) = next.take() {
                        match received {
                            Ok(message) => {
                                if self.wanted(&message, floor) {
                                    if let Err(end) = feed(sink, message.text.clone()).await {
                                        return end;
                                    }
                                    fed += 1;
                                    if let Some(p) = message.position {
                                        last_position = p;
                                    }
                                }
                            }
                            Err(RecvError::Lagged(_)) => {
                                return End::Close(
                                    close::SLOW_CLIENT,
                                    format!("too slow; reconnect with ?after={last_position}"),
                                );
                            }
                            Err(RecvError::Closed) => {
                                return End::Close(close::GOING_AWAY, "the server is going away".into());
                            }
                        }
                        if fed < BURST {
                            next = match watch.receiver.try_recv() {
                                Ok(m) => Some(Ok(m)),
                                Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                                Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                                Err(TryRecvError::Empty) => None,
                            };
                        }
                    }
                    if fed > 0
                        && let Err(end) = flush(sink).await
                    {
                        return end;
                    }
                }
                _ = ping.tick() => {
                    if heard.borrow().elapsed() > SILENT_LIMIT {
                        return End::Close(close::PING_TIMEOUT, "no answer to pings".into());
                    }
                    if let Err(end) = send_frame(sink, Frame::Ping(Default::default())).await {
                        return end;
                    }
                }
                end = &mut *ended => return end.unwrap_or(End::Closed),
            }
        }
    }
}

/// A client's message: `follow_logs` / `unfollow_logs`, with a `task_id`
/// or without (every task).
fn client_message(follow: &Mutex<Follow>, text: &str) -> Result<(), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ClientMessage {
        #[serde(rename = "type")]
        kind: String,
        task_id: Option<Uuid>,
    }
    let m: ClientMessage = serde_json::from_str(text)
        .map_err(|_| "not a client message of the contract".to_string())?;
    let mut f = follow.lock().unwrap_or_else(|e| e.into_inner());
    match (m.kind.as_str(), m.task_id) {
        ("follow_logs", Some(task)) => {
            f.tasks.insert(task);
        }
        ("follow_logs", None) => f.all = true,
        ("unfollow_logs", Some(task)) => {
            f.tasks.remove(&task);
        }
        ("unfollow_logs", None) => {
            f.all = false;
            f.tasks.clear();
        }
        _ => {
            return Err(format!(
                "unknown message type {:?}",
                m.kind.chars().take(40).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// A stream's events up to `position`.
async fn stream_until(
    store: &eventstore::AnyStore,
    stream: Uuid,
    position: i64,
) -> Result<Vec<RecordedEvent>, eventstore::StoreError> {
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let batch = store
            .read_stream(stream, from, eventstore::store::READ_BATCH)
            .await?;
        let full = batch.len() == eventstore::store::READ_BATCH;
        for event in batch {
            from = event.stream_version + 1;
            if event.global_position <= position {
                out.push(event);
            }
        }
        if !full {
            return Ok(out);
        }
    }
}

async fn send(sink: &mut Sink, text: Utf8Bytes) -> Result<(), End> {
    send_frame(sink, Frame::Text(text)).await
}

/// Queues a text frame without flushing (bounded by [`SEND_TIMEOUT`]).
async fn feed(sink: &mut Sink, text: Utf8Bytes) -> Result<(), End> {
    within(sink.feed(Frame::Text(text))).await
}

async fn flush(sink: &mut Sink) -> Result<(), End> {
    within(sink.flush()).await
}

async fn within(io: impl std::future::Future<Output = Result<(), axum::Error>>) -> Result<(), End> {
    match tokio::time::timeout(SEND_TIMEOUT, io).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Closed),
        Err(_) => Err(End::Close(
            close::SLOW_CLIENT,
            "too slow; reconnect with ?after= the last position received".into(),
        )),
    }
}

async fn send_frame(sink: &mut Sink, frame: Frame) -> Result<(), End> {
    within(sink.send(frame)).await
}
