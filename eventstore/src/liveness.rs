//! Node liveness beside the event log (never in it): when each render node
//! was last heard from, one row per node and orchestrator instance, so that
//! every instance can tell what the others heard from what it heard itself.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::any::AnyStore;
use crate::error::StoreError;
use crate::hashing::{format_time, truncate_to_micros};

/// Rows per SQLite upsert statement.
const SQLITE_CHUNK: usize = 500;

impl AnyStore {
    /// Records when `instance` heard from nodes; a time older than the one
    /// stored for that node and instance changes nothing.
    pub async fn record_liveness(
        &self,
        instance: Uuid,
        seen: &[(Uuid, DateTime<Utc>)],
    ) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        // One row per node (an upsert may not touch a row twice).
        let mut latest: std::collections::HashMap<Uuid, DateTime<Utc>> =
            std::collections::HashMap::with_capacity(seen.len());
        for (node_id, at) in seen {
            let t = latest.entry(*node_id).or_insert(*at);
            *t = (*t).max(*at);
        }
        let seen: Vec<(Uuid, DateTime<Utc>)> = latest.into_iter().collect();
        match self {
            AnyStore::Postgres(s) => {
                let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = seen.iter().copied().unzip();
                sqlx::query(
                    "INSERT INTO node_liveness (node_id, instance_id, last_seen) \
                     SELECT node_id, $3, last_seen FROM unnest($1::uuid[], $2::timestamptz[]) AS t(node_id, last_seen) \
                     ON CONFLICT (node_id, instance_id) DO UPDATE \
                     SET last_seen = GREATEST(node_liveness.last_seen, excluded.last_seen)",
                )
                .bind(ids)
                .bind(times)
                .bind(instance)
                .execute(s.pool())
                .await?;
            }
            AnyStore::Sqlite(s) => {
                s.with_writer(async |conn| {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    for chunk in seen.chunks(SQLITE_CHUNK) {
                        let sql = format!(
                            "INSERT INTO node_liveness (node_id, instance_id, last_seen) VALUES {} \
                             ON CONFLICT (node_id, instance_id) DO UPDATE \
                             SET last_seen = max(last_seen, excluded.last_seen)",
                            vec!["(?, ?, ?)"; chunk.len()].join(", ")
                        );
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                        for (node_id, at) in chunk {
                            query = query
                                .bind(*node_id)
                                .bind(instance)
                                .bind(format_time(truncate_to_micros(*at)));
                        }
                        query.execute(&mut *tx).await?;
                    }
                    tx.commit().await
                })
                .await?;
            }
        }
        Ok(())
    }

    /// When each node was last heard from by an instance other than
    /// `instance` (the latest of their rows).
    pub async fn liveness(&self, instance: Uuid) -> Result<Vec<(Uuid, DateTime<Utc>)>, StoreError> {
        match self {
            AnyStore::Postgres(s) => Ok(sqlx::query_as(
                "SELECT node_id, max(last_seen) FROM node_liveness WHERE instance_id <> $1 GROUP BY node_id",
            )
            .bind(instance)
            .fetch_all(s.pool())
            .await?),
            AnyStore::Sqlite(s) => {
                // Times are stored in one fixed-width UTC format: the text's
                // maximum is the latest time.
                let rows: Vec<(Uuid, String)> = sqlx::query_as(
                    "SELECT node_id, max(last_seen) FROM node_liveness WHERE instance_id <> ? GROUP BY node_id",
                )
                .bind(instance)
                .fetch_all(s.readers())
                .await?;
                rows.into_iter()
                    .map(|(id, text)| {
                        DateTime::parse_from_rfc3339(&text)
                            .map(|t| (id, t.with_timezone(&Utc)))
                            .map_err(|e| StoreError::Corrupt(format!("node_liveness: {e}")))
                    })
                    .collect()
            }
        }
    }
}
