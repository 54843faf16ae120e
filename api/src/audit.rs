//! The auditor's checks, as the `flatrender audit` commands run them.

use eventstore::{AuditReport, EventStore};

/// Verifies the whole store: versions, hash chains, catalog rows, and every
/// payload against its JSON Schema and the Rust type of its routing key.
pub async fn verify<S: EventStore>(
    store: &S,
    progress: impl FnMut(u64),
) -> anyhow::Result<AuditReport> {
    let validate = |key: &str, payload: &serde_json::Value| {
        contracts::validate_payload(key, payload)?;
        domain::check_payload(key, payload).map_err(|e| e.to_string())
    };
    Ok(eventstore::verify_all(store, validate, progress).await?)
}
