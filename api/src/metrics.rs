//! `GET /metrics`: Prometheus (OpenMetrics text) for operators.
//!
//! Request latency per route is kept as it happens (a histogram per
//! method, route template and status); everything else is read when
//! scraped: the scheduler's view (queue depth and running tasks per
//! tenant, nodes by status), its counters (leases granted, lease expiries,
//! store append latency), the read models' lag and the relay's.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use eventstore::EventStore;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::app::AppState;
use crate::error::ApiError;

/// The labels of one request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    /// The route's template (`/v1/renders/{id}`), never the raw path.
    route: String,
    status: String,
}

type RouteFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn route_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// What the server keeps between scrapes.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: RouteFamily,
    /// Bearer token `/metrics` asks for (none: served to anyone who
    /// reaches it).
    token: Option<Arc<str>>,
    /// One scrape at a time (each reads the database).
    scrape: Arc<tokio::sync::Mutex<()>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Metrics {
    /// Metrics whose endpoint asks for `token`, when given.
    pub fn new(token: Option<String>) -> Self {
        Self {
            requests: Family::new_with_constructor(route_histogram as fn() -> Histogram),
            token: token.map(Arc::from),
            scrape: Arc::default(),
        }
    }
}

/// Times every request by its route (the middleware of the router).
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .requests
        .get_or_create(&RouteLabels {
            method,
            route,
            status: response.status().as_u16().to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = &state.metrics.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_token(given.as_bytes(), token.as_bytes()) {
            return Err(ApiError::Unauthorized("a valid metrics token is required"));
        }
    }
    let _one = state.metrics.scrape.lock().await;
    let snapshot = Snapshot {
        gauges: state.orchestrator.gauges().await,
        totals: state.orchestrator.counter_totals(),
        lags: projections::lag(&state.store)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?,
        relay: state.broker.as_ref().map(|b| b.status()),
        webhooks: state.dispatcher.as_ref().map(|d| d.counts()),
        head: *state.store.appended().borrow(),
    };
    let mut registry = Registry::with_prefix("flatrender");
    registry.register(
        "http_request_duration_seconds",
        "HTTP requests by method, route template and status, and how long they took",
        state.metrics.requests.clone(),
    );
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("metrics encoding: {e}")))?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        Body::from(text),
    )
        .into_response())
}

/// Compares a given token with the configured one in constant time (as
/// digests, so that neither length leaks either).
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let (a, b) = (sha2::Sha256::digest(given), sha2::Sha256::digest(expected));
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// Everything read at one scrape.
#[derive(Debug)]
struct Snapshot {
    gauges: orchestrator::Gauges,
    totals: orchestrator::CounterTotals,
    lags: Vec<projections::Lag>,
    relay: Option<relay::RelayStatus>,
    webhooks: Option<crate::webhooks::WebhookCounts>,
    head: i64,
}

fn gauge<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (S, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

fn plain(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    prometheus_client::metrics::gauge::ConstGauge::new(value).encode(metric)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    prometheus_client::metrics::counter::ConstCounter::new(value).encode(metric)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = &self.gauges;
        let by_tenant = |m: &std::collections::BTreeMap<domain::TenantId, u64>| {
            m.iter()
                .map(|(t, n)| ([("tenant_id", t.to_string())], *n as i64))
                .collect::<Vec<_>>()
        };
        gauge(
            &mut encoder,
            "queued_tasks",
            "Tasks waiting for a node, per tenant",
            by_tenant(&g.queued_by_tenant),
        )?;
        gauge(
            &mut encoder,
            "running_tasks",
            "Tasks leased or rendering, per tenant",
            by_tenant(&g.running_by_tenant),
        )?;
        gauge(
            &mut encoder,
            "nodes",
            "Registered nodes by status",
            g.nodes_by_status
                .iter()
                .map(|(s, n)| ([("status", s.to_string())], *n as i64)),
        )?;
        plain(
            &mut encoder,
            "log_head_position",
            "The highest global position known to be appended",
            self.head,
        )?;
        plain(
            &mut encoder,
            "scheduler_view_position",
            "The global position the scheduler's view has read up to",
            g.position,
        )?;
        counter(
            &mut encoder,
            "leases_granted",
            "Leases this instance granted since it started",
            self.totals.leases_granted,
        )?;
        counter(
            &mut encoder,
            "claims_empty",
            "Claims this instance answered without a task since it started",
            self.totals.claims_empty,
        )?;
        counter(
            &mut encoder,
            "scheduler_batches_pipelined",
            "Batches of claims and reports decided while the batch before was being appended",
            self.totals.batches_pipelined,
        )?;
        counter(
            &mut encoder,
            "scheduler_batches_discarded",
            "Pipelined batches decided again because the store refused the batch before them",
            self.totals.batches_discarded,
        )?;
        counter(
            &mut encoder,
            "lease_expiries",
            "Leases this instance requeued because they expired, since it started",
            self.totals.lease_expiries,
        )?;
        gauge(
            &mut encoder,
            "projection_lag_events",
            "Events a read model has still to apply",
            self.lags
                .iter()
                .map(|l| ([("projection", l.name.clone())], l.events_behind)),
        )?;
        let mut lag_seconds = encoder.encode_descriptor(
            "projection_lag_seconds",
            "How old the oldest event a read model has still to apply is",
            None,
            MetricType::Gauge,
        )?;
        for l in &self.lags {
            lag_seconds
                .encode_family(&[("projection", l.name.clone())])?
                .encode_gauge(&l.seconds_behind)?;
        }
        if let Some(r) = &self.relay {
            plain(
                &mut encoder,
                "relay_lag_events",
                "Global positions between the log's head and the last event the broker confirmed",
                (r.head.max(self.head) - r.position).max(0),
            )?;
            plain(
                &mut encoder,
                "relay_active",
                "1 when this instance's relay holds the database's relay lock",
                i64::from(r.active),
            )?;
            plain(
                &mut encoder,
                "relay_connected",
                "1 when this instance's relay is connected to the broker",
                i64::from(r.connected),
            )?;
            counter(
                &mut encoder,
                "relay_confirmed_messages",
                "Messages the broker confirmed to this instance's relay since it started",
                r.confirmed,
            )?;
            counter(
                &mut encoder,
                "relay_retries",
                "Batches this instance's relay published again (nack, lost connection, error)",
                r.retries,
            )?;
        }
        if let Some(w) = &self.webhooks {
            counter(
                &mut encoder,
                "webhook_deliveries",
                "Notifications this instance delivered (a 2xx answer)",
                w.delivered,
            )?;
            counter(
                &mut encoder,
                "webhook_failed_attempts",
                "Delivery attempts that failed on this instance (status, timeout, refused address)",
                w.failed_attempts,
            )?;
            counter(
                &mut encoder,
                "webhook_abandoned",
                "Notifications this instance gave up on after the last attempt",
                w.abandoned,
            )?;
        }
        let a = &self.totals.append_latency;
        let mut buckets: Vec<(f64, u64)> = orchestrator::LATENCY_BOUNDS
            .iter()
            .copied()
            .zip(a.buckets.iter().copied())
            .collect();
        buckets.push((f64::MAX, a.buckets[a.buckets.len() - 1]));
        encoder
            .encode_descriptor(
                "store_append_duration_seconds",
                "How long the event store took to answer this instance's appends",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(a.sum_seconds, a.count(), &buckets, None)?;
        Ok(())
    }
}
