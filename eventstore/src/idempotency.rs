//! `Idempotency-Key` of the reseller API, beside the log: a request
//! reserves its key before it runs and keeps its answer once answered, so
//! that a retry (to any instance) answers the first answer and changes
//! nothing. Keys are per tenant; a reservation whose request never
//! answered (the instance died) is taken over after [`STALE_AFTER`]; keys
//! are forgotten after [`KEEP_FOR`].

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::any::AnyStore;
use crate::error::StoreError;
use crate::hashing::format_time;

/// How long a reservation without an answer holds its key.
pub const STALE_AFTER: Duration = Duration::seconds(60);
/// How long a key is remembered.
pub const KEEP_FOR: Duration = Duration::hours(24);

/// A kept answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The HTTP status.
    pub status: u16,
    /// Its content type.
    pub content_type: Option<String>,
    /// Its body.
    pub body: Vec<u8>,
}

/// What a request with an idempotency key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// The key is reserved for this request: run it, then
    /// [`AnyStore::idempotency_finish`] or [`AnyStore::idempotency_abandon`].
    Run,
    /// The same request was answered: answer this.
    Answered(StoredAnswer),
    /// The same request is still running elsewhere.
    InProgress,
    /// The key was used for another request.
    Reused,
}

type Row = (String, Option<i64>, Option<String>, Option<Vec<u8>>);

impl AnyStore {
    /// Reserves `key` of `tenant` for the request whose digest is
    /// `request_hash`, or says what became of an earlier use of it.
    pub async fn idempotency_begin(
        &self,
        tenant: Uuid,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<IdempotencyBegin, StoreError> {
        let now_text = format_time(now);
        let expired = format_time(now - KEEP_FOR);
        let stale = format_time(now - STALE_AFTER);
        let forget =
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND created_at < $3";
        let reserve = "INSERT INTO idempotency_keys (tenant_id, key, request_hash, created_at) \
                       VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
        let read = "SELECT request_hash, CAST(status AS BIGINT), content_type, body \
                    FROM idempotency_keys WHERE tenant_id = $1 AND key = $2";
        let take_over = "UPDATE idempotency_keys SET created_at = $3 \
                         WHERE tenant_id = $1 AND key = $2 AND status IS NULL AND created_at < $4";
        let (reserved, row, taken): (u64, Option<Row>, u64) = match self {
            AnyStore::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                sqlx::query(forget)
                    .bind(tenant)
                    .bind(key)
                    .bind(now - KEEP_FOR)
                    .execute(&mut *tx)
                    .await?;
                let reserved = sqlx::query(reserve)
                    .bind(tenant)
                    .bind(key)
                    .bind(request_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let mut taken = 0;
                let mut row: Option<Row> = None;
                if reserved == 0 {
                    row = sqlx::query_as(read)
                        .bind(tenant)
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if matches!(&row, Some((h, None, ..)) if h == request_hash) {
                        taken = sqlx::query(take_over)
                            .bind(tenant)
                            .bind(key)
                            .bind(now)
                            .bind(now - STALE_AFTER)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                    }
                }
                tx.commit().await?;
                (reserved, row, taken)
            }
            AnyStore::Sqlite(s) => {
                s.with_writer(async |conn| -> Result<_, sqlx::Error> {
                    sqlx::query(forget)
                        .bind(tenant)
                        .bind(key)
                        .bind(&expired)
                        .execute(&mut *conn)
                        .await?;
                    let reserved = sqlx::query(reserve)
                        .bind(tenant)
                        .bind(key)
                        .bind(request_hash)
                        .bind(&now_text)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    let mut taken = 0;
                    let mut row: Option<Row> = None;
                    if reserved == 0 {
                        row = sqlx::query_as(read)
                            .bind(tenant)
                            .bind(key)
                            .fetch_optional(&mut *conn)
                            .await?;
                        if matches!(&row, Some((h, None, ..)) if h == request_hash) {
                            taken = sqlx::query(take_over)
                                .bind(tenant)
                                .bind(key)
                                .bind(&now_text)
                                .bind(&stale)
                                .execute(&mut *conn)
                                .await?
                                .rows_affected();
                        }
                    }
                    Ok((reserved, row, taken))
                })
                .await?
            }
        };
        if reserved == 1 || taken == 1 {
            return Ok(IdempotencyBegin::Run);
        }
        Ok(match row {
            // Gone between the insert and the read: a stale key forgotten.
            None => IdempotencyBegin::InProgress,
            Some((hash, _, _, _)) if hash != request_hash => IdempotencyBegin::Reused,
            Some((_, Some(status), content_type, body)) => {
                IdempotencyBegin::Answered(StoredAnswer {
                    status: u16::try_from(status)
                        .map_err(|_| StoreError::Corrupt("idempotency_keys: status".into()))?,
                    content_type,
                    body: body.unwrap_or_default(),
                })
            }
            Some(_) => IdempotencyBegin::InProgress,
        })
    }

    /// Keeps the answer of the request that reserved `key`.
    pub async fn idempotency_finish(
        &self,
        tenant: Uuid,
        key: &str,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5 \
                   WHERE tenant_id = $1 AND key = $2";
        let status = i64::from(answer.status);
        match self {
            AnyStore::Postgres(s) => {
                sqlx::query(sql)
                    .bind(tenant)
                    .bind(key)
                    .bind(status as i32)
                    .bind(&answer.content_type)
                    .bind(&answer.body)
                    .execute(s.pool())
                    .await?;
            }
            AnyStore::Sqlite(s) => {
                s.with_writer(async |conn| {
                    sqlx::query(sql)
                        .bind(tenant)
                        .bind(key)
                        .bind(status)
                        .bind(&answer.content_type)
                        .bind(&answer.body)
                        .execute(&mut *conn)
                        .await
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Frees `key` (its request failed with nothing to keep: a retry runs
    /// it again).
    pub async fn idempotency_abandon(&self, tenant: Uuid, key: &str) -> Result<(), StoreError> {
        let sql =
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND status IS NULL";
        match self {
            AnyStore::Postgres(s) => {
                sqlx::query(sql)
                    .bind(tenant)
                    .bind(key)
                    .execute(s.pool())
                    .await?;
            }
            AnyStore::Sqlite(s) => {
                s.with_writer(async |conn| {
                    sqlx::query(sql)
                        .bind(tenant)
                        .bind(key)
                        .execute(&mut *conn)
                        .await
                })
                .await?;
            }
        }
        Ok(())
    }
}

impl AnyStore {
    /// Spends `nonce` in `scope` (e.g. one API key) until `expires_at`:
    /// `false` if it was spent before and has not expired (a replay), on
    /// this instance or any other sharing the database. Expired nonces of
    /// the scope are forgotten on the way.
    pub async fn spend_nonce(
        &self,
        scope: &str,
        nonce: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let forget = "DELETE FROM spent_nonces WHERE scope = $1 AND expires_at < $2";
        let spend = "INSERT INTO spent_nonces (scope, nonce, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING";
        let spent = match self {
            AnyStore::Postgres(s) => {
                sqlx::query(forget)
                    .bind(scope)
                    .bind(now)
                    .execute(s.pool())
                    .await?;
                sqlx::query(spend)
                    .bind(scope)
                    .bind(nonce)
                    .bind(expires_at)
                    .execute(s.pool())
                    .await?
                    .rows_affected()
            }
            AnyStore::Sqlite(s) => {
                let (now, expires_at) = (format_time(now), format_time(expires_at));
                s.with_writer(async |conn| -> Result<u64, sqlx::Error> {
                    sqlx::query(forget)
                        .bind(scope)
                        .bind(&now)
                        .execute(&mut *conn)
                        .await?;
                    Ok(sqlx::query(spend)
                        .bind(scope)
                        .bind(nonce)
                        .bind(&expires_at)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected())
                })
                .await?
            }
        };
        Ok(spent == 1)
    }
}
