//! What `/metrics` reads of the scheduler: gauges read from the view when
//! asked, and counters of what this instance did since it started.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use domain::TenantId;
use domain::node::{Availability, Connectivity};

use crate::Orchestrator;

/// What this instance did since it started (Prometheus counters).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub leases_granted: AtomicU64,
    pub claims_empty: AtomicU64,
    pub lease_expiries: AtomicU64,
    pub batches_pipelined: AtomicU64,
    pub batches_discarded: AtomicU64,
    pub append: Latency,
}

/// The upper bounds, in seconds, of the append latency histogram's
/// buckets (the last bucket, above them, is `+Inf`).
pub const LATENCY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A histogram of durations kept in atomics (no lock on the append path).
#[derive(Debug, Default)]
pub(crate) struct Latency {
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Latency {
    pub fn record(&self, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram as read: how many observations fell in each bucket (not
/// cumulative; bucket `i` is `<= LATENCY_BOUNDS[i]`, the last `+Inf`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySnapshot {
    /// Observations per bucket.
    pub buckets: [u64; LATENCY_BOUNDS.len() + 1],
    /// The sum of every observation.
    pub sum_seconds: f64,
}

impl LatencySnapshot {
    /// How many observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The scheduler's view right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Queued tasks per tenant (tenants with none are absent).
    pub queued_by_tenant: BTreeMap<TenantId, u64>,
    /// Leased or running tasks per tenant (tenants with none are absent).
    pub running_by_tenant: BTreeMap<TenantId, u64>,
    /// Registered nodes by `online`, `offline`, `draining`, `disabled`
    /// (every status present, 0 included).
    pub nodes_by_status: BTreeMap<&'static str, u64>,
    /// The log position the view has read up to.
    pub position: i64,
}

/// Counter totals since this instance started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CounterTotals {
    /// Leases this instance granted (claims answered with a task).
    pub leases_granted: u64,
    /// Claims this instance answered without a task (a waiting claim that
    /// is not woken makes none while it waits).
    pub claims_empty: u64,
    /// Leases this instance ended because they expired.
    pub lease_expiries: u64,
    /// Batches of claims and reports decided while the batch before was
    /// being appended (pipelined group commit).
    pub batches_pipelined: u64,
    /// Pipelined batches decided again because the store refused the
    /// batch they were decided after (another instance wrote its streams).
    pub batches_discarded: u64,
    /// How long the store took to answer this instance's appends (a
    /// group-committed batch counts once).
    pub append_latency: LatencySnapshot,
}

impl Orchestrator {
    /// The view's gauges (one pass over the live jobs and nodes).
    pub async fn gauges(&self) -> Gauges {
        let st = self.inner.state.lock().await;
        let mut out = Gauges {
            position: st.position,
            ..Gauges::default()
        };
        for entry in st.jobs.values() {
            if entry.queue.is_empty() {
                continue;
            }
            if let Some(submitted) = entry.job.submission() {
                *out.queued_by_tenant.entry(submitted.tenant_id).or_default() +=
                    entry.queue.len() as u64;
            }
        }
        for (tenant, n) in &st.running {
            if *n > 0 {
                out.running_by_tenant.insert(*tenant, u64::from(*n));
            }
        }
        for status in ["online", "offline", "draining", "disabled"] {
            out.nodes_by_status.insert(status, 0);
        }
        for (node, _) in st.nodes.values() {
            if node.registration().is_none() || node.is_deregistered() {
                continue;
            }
            let status = match (node.connectivity(), node.availability()) {
                (_, Availability::Disabled) => "disabled",
                (Connectivity::Offline, _) => "offline",
                (Connectivity::Online, Availability::Draining) => "draining",
                (Connectivity::Online, Availability::Enabled) => "online",
            };
            *out.nodes_by_status.entry(status).or_default() += 1;
        }
        out
    }

    /// What this instance did since it started.
    pub fn counter_totals(&self) -> CounterTotals {
        let c = &self.inner.counters;
        CounterTotals {
            leases_granted: c.leases_granted.load(Ordering::Relaxed),
            claims_empty: c.claims_empty.load(Ordering::Relaxed),
            lease_expiries: c.lease_expiries.load(Ordering::Relaxed),
            batches_pipelined: c.batches_pipelined.load(Ordering::Relaxed),
            batches_discarded: c.batches_discarded.load(Ordering::Relaxed),
            append_latency: c.append.snapshot(),
        }
    }

    pub(crate) fn count_lease_granted(&self) {
        self.inner
            .counters
            .leases_granted
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_claim_empty(&self) {
        self.inner
            .counters
            .claims_empty
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_pipelined(&self) {
        self.inner
            .counters
            .batches_pipelined
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_discarded(&self) {
        self.inner
            .counters
            .batches_discarded
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_append(&self, took: std::time::Duration) {
        self.inner.counters.append.record(took);
    }

    pub(crate) fn count_lease_expired(&self) {
        self.inner
            .counters
            .lease_expiries
            .fetch_add(1, Ordering::Relaxed);
    }
}
