//! The read-model tables on each backend: loading rows, writing a batch
//! with its checkpoints in one transaction, resetting, digesting.

use std::collections::BTreeMap;

use eventstore::AnyStore;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Acquire, AssertSqlSafe, PgConnection, PgPool, Row as _, SqliteConnection, SqlitePool};

use crate::error::ProjectionError;
use crate::table::{Cache, Kind, Row, Table, Value};

/// Reads read-model rows (and checkpoints) through the store's pool.
#[derive(Debug, Clone)]
pub(crate) enum Reader {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

macro_rules! values_of {
    ($row:expr, $table:expr) => {{
        let row = $row;
        let mut values = Vec::with_capacity($table.columns.len());
        for (i, (_, kind)) in $table.columns.iter().enumerate() {
            let value = if kind.is_text() {
                row.try_get::<Option<String>, _>(i)?
                    .map_or(Value::Null, Value::Text)
            } else {
                row.try_get::<Option<i64>, _>(i)?
                    .map_or(Value::Null, Value::Int)
            };
            values.push(value);
        }
        values
    }};
}

pub(crate) fn pg_values(row: &PgRow, table: &Table) -> Result<Vec<Value>, sqlx::Error> {
    Ok(values_of!(row, table))
}

pub(crate) fn sqlite_values(row: &SqliteRow, table: &Table) -> Result<Vec<Value>, sqlx::Error> {
    Ok(values_of!(row, table))
}

impl Reader {
    pub fn of(store: &AnyStore) -> Self {
        match store {
            AnyStore::Postgres(s) => Self::Pg(s.pool().clone()),
            AnyStore::Sqlite(s) => Self::Sqlite(s.readers().clone()),
        }
    }

    /// Rows of `table` matching `filter` (SQL after WHERE, one text
    /// parameter), decoded.
    async fn select(
        &self,
        table: &Table,
        filter_pg: &str,
        filter_sqlite: &str,
        param: String,
    ) -> Result<Vec<Vec<Value>>, ProjectionError> {
        let columns = table.column_list();
        Ok(match self {
            Self::Pg(pool) => {
                let sql = format!("SELECT {columns} FROM {} WHERE {filter_pg}", table.name);
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(param)
                    .fetch_all(pool)
                    .await?;
                rows.iter()
                    .map(|r| pg_values(r, table))
                    .collect::<Result<_, _>>()?
            }
            Self::Sqlite(pool) => {
                let sql = format!("SELECT {columns} FROM {} WHERE {filter_sqlite}", table.name);
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(param)
                    .fetch_all(pool)
                    .await?;
                rows.iter()
                    .map(|r| sqlite_values(r, table))
                    .collect::<Result<_, _>>()?
            }
        })
    }

    /// Loads the rows of these keys that the cache does not know yet.
    pub async fn load<R: Row>(
        &self,
        cache: &mut Cache<R>,
        keys: Vec<String>,
    ) -> Result<(), ProjectionError> {
        let keys: Vec<String> = keys.into_iter().filter(|k| cache.misses(k)).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let table = R::TABLE;
        // One round trip for the whole batch: the keys go as a JSON array.
        let list = serde_json::to_string(&keys).unwrap_or_default();
        let rows = self
            .select(
                &table,
                &format!(
                    "{} IN (SELECT jsonb_array_elements_text($1::jsonb))",
                    table.key
                ),
                &format!("{} IN (SELECT value FROM json_each(?))", table.key),
                list,
            )
            .await?;
        let rows = rows
            .into_iter()
            .map(R::from_values)
            .collect::<Result<Vec<_>, _>>()?;
        cache.loaded(rows);
        cache.not_found(keys);
        Ok(())
    }

    /// Loads every row whose column has the value (the cache's own rows,
    /// newer, win).
    pub async fn load_where<'a, R: Row>(
        &self,
        cache: &mut Cache<R>,
        wheres: impl Iterator<Item = (&'static str, &'a str)>,
    ) -> Result<(), ProjectionError> {
        if cache.is_complete() {
            return Ok(());
        }
        let table = R::TABLE;
        for (column, value) in wheres {
            debug_assert!(table.columns.iter().any(|(c, _)| *c == column));
            let rows = self
                .select(
                    &table,
                    &format!("{column} = $1"),
                    &format!("{column} = ?"),
                    value.to_string(),
                )
                .await?;
            let rows = rows
                .into_iter()
                .map(R::from_values)
                .collect::<Result<Vec<_>, _>>()?;
            cache.loaded(rows);
        }
        Ok(())
    }

    /// Every projection's checkpoint.
    pub async fn checkpoints(&self) -> Result<BTreeMap<String, i64>, ProjectionError> {
        let sql = "SELECT name, position FROM projection_checkpoints";
        let rows: Vec<(String, i64)> = match self {
            Self::Pg(pool) => sqlx::query_as(sql).fetch_all(pool).await?,
            Self::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await?,
        };
        Ok(rows.into_iter().collect())
    }

    /// The highest global position stored (0 when empty).
    pub async fn head(&self) -> Result<i64, ProjectionError> {
        let sql = "SELECT COALESCE(MAX(global_position), 0) FROM events";
        Ok(match self {
            Self::Pg(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            Self::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        })
    }

    /// How many events are stored after `position` (counted up to `cap`).
    pub async fn count_after(&self, position: i64, cap: i64) -> Result<i64, ProjectionError> {
        let pg =
            "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE global_position > $1 LIMIT $2) s";
        let lite = "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE global_position > ? LIMIT ?)";
        Ok(match self {
            Self::Pg(pool) => {
                sqlx::query_scalar(pg)
                    .bind(position)
                    .bind(cap)
                    .fetch_one(pool)
                    .await?
            }
            Self::Sqlite(pool) => {
                sqlx::query_scalar(lite)
                    .bind(position)
                    .bind(cap)
                    .fetch_one(pool)
                    .await?
            }
        })
    }

    /// A SHA-256 of every row of the table, in key order.
    pub async fn digest(&self, table: &Table) -> Result<String, ProjectionError> {
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            table.column_list(),
            table.name,
            table.key
        );
        let rows: Vec<Vec<Value>> = match self {
            Self::Pg(pool) => sqlx::query(AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| pg_values(r, table))
                .collect::<Result<_, _>>()?,
            Self::Sqlite(pool) => sqlx::query(AssertSqlSafe(sql))
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| sqlite_values(r, table))
                .collect::<Result<_, _>>()?,
        };
        let mut hash = Sha256::new();
        for row in rows {
            for value in row {
                match value {
                    Value::Null => hash.update(b"n"),
                    Value::Int(i) => {
                        hash.update(b"i");
                        hash.update(i.to_be_bytes());
                    }
                    Value::Text(t) => {
                        hash.update(b"t");
                        hash.update((t.len() as u64).to_be_bytes());
                        hash.update(t.as_bytes());
                    }
                }
            }
            hash.update(b";");
        }
        Ok(hex::encode(hash.finalize()))
    }
}

/// A batch to write: each projection's checkpoint moves from `from` to
/// `to`, and the changed rows are upserted, in one transaction.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub checkpoints: Vec<Checkpoint>,
    pub rows: Vec<(Table, Vec<Vec<Value>>)>,
    /// Fail after the rows, before the commit (tests).
    pub fail: bool,
}

/// One checkpoint's move.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    pub name: &'static str,
    pub from: i64,
    pub to: i64,
    pub recorded_at: Option<String>,
}

const MOVE_CHECKPOINT_PG: &str = "UPDATE projection_checkpoints SET position = $1, \
     last_recorded_at = $2 WHERE name = $3 AND position = $4";
const MOVE_CHECKPOINT_SQLITE: &str = "UPDATE projection_checkpoints SET position = ?, \
     last_recorded_at = ? WHERE name = ? AND position = ?";

fn upsert_tail(table: &Table) -> String {
    let set = table
        .columns
        .iter()
        .filter(|(c, _)| *c != table.key)
        .map(|(c, _)| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("ON CONFLICT ({}) DO UPDATE SET {set}", table.key)
}

/// Writes a plan on PostgreSQL, on the connection that holds the lock (so
/// that nothing is written by a runner that lost it).
pub(crate) async fn write_pg(conn: &mut PgConnection, plan: &Plan) -> Result<(), ProjectionError> {
    let mut tx = conn.begin().await?;
    // The checkpoints first: their row locks order this batch against a
    // reset (which also takes them first) and against any other runner.
    for cp in &plan.checkpoints {
        let moved = sqlx::query(MOVE_CHECKPOINT_PG)
            .bind(cp.to)
            .bind(&cp.recorded_at)
            .bind(cp.name)
            .bind(cp.from)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() != 1 {
            return Err(ProjectionError::CheckpointMoved(cp.name));
        }
    }
    for (table, rows) in &plan.rows {
        if rows.is_empty() {
            continue;
        }
        let unnest = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, k))| {
                format!(
                    "${}::{}[]",
                    i + 1,
                    if k.is_text() { "text" } else { "int8" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO {} ({}) SELECT * FROM UNNEST({unnest}) {}",
            table.name,
            table.column_list(),
            upsert_tail(table)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (i, (_, kind)) in table.columns.iter().enumerate() {
            if kind.is_text() {
                let column: Vec<Option<&str>> = rows
                    .iter()
                    .map(|r| match &r[i] {
                        Value::Text(t) => Some(t.as_str()),
                        _ => None,
                    })
                    .collect();
                query = query.bind(column);
            } else {
                let column: Vec<Option<i64>> = rows
                    .iter()
                    .map(|r| match r[i] {
                        Value::Int(v) => Some(v),
                        _ => None,
                    })
                    .collect();
                query = query.bind(column);
            }
        }
        query.execute(&mut *tx).await?;
    }
    if plan.fail {
        return Err(ProjectionError::Injected);
    }
    tx.commit().await?;
    Ok(())
}

/// Bound parameters per SQLite statement (its limit is 32,766).
const SQLITE_VARIABLES: usize = 30_000;

/// Writes a plan on SQLite, on the store's writer connection (one writer
/// per file: appends and projections take turns).
pub(crate) async fn write_sqlite(
    conn: &mut SqliteConnection,
    plan: &Plan,
) -> Result<(), ProjectionError> {
    let mut tx = conn.begin().await?;
    for cp in &plan.checkpoints {
        let moved = sqlx::query(MOVE_CHECKPOINT_SQLITE)
            .bind(cp.to)
            .bind(&cp.recorded_at)
            .bind(cp.name)
            .bind(cp.from)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() != 1 {
            return Err(ProjectionError::CheckpointMoved(cp.name));
        }
    }
    for (table, rows) in &plan.rows {
        if rows.is_empty() {
            continue;
        }
        // Many rows per statement: each statement is a round trip to
        // SQLite's worker thread, the cost that dominates a rebuild.
        let per_statement = (SQLITE_VARIABLES / table.columns.len()).clamp(1, 500);
        let row_marks = format!("({})", vec!["?"; table.columns.len()].join(", "));
        for chunk in rows.chunks(per_statement) {
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {} {}",
                table.name,
                table.column_list(),
                vec![row_marks.as_str(); chunk.len()].join(", "),
                upsert_tail(table)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for row in chunk {
                for (value, (_, kind)) in row.iter().zip(table.columns) {
                    query = match value {
                        Value::Int(v) => query.bind(*v),
                        Value::Text(t) => query.bind(t.as_str()),
                        Value::Null if *kind == Kind::OptInt => query.bind(None::<i64>),
                        Value::Null => query.bind(None::<&str>),
                    };
                }
            }
            query.execute(&mut *tx).await?;
        }
    }
    if plan.fail {
        return Err(ProjectionError::Injected);
    }
    tx.commit().await?;
    Ok(())
}

/// Empties the tables of a projection and sets its checkpoint to 0, in
/// one transaction. The checkpoint is taken first, so that a runner's batch
/// in flight either commits before (and its rows are deleted here) or fails
/// its compare-and-set after.
pub(crate) async fn reset(
    store: &AnyStore,
    name: &'static str,
    tables: &[Table],
) -> Result<(), ProjectionError> {
    let reset_checkpoint =
        "UPDATE projection_checkpoints SET position = 0, last_recorded_at = NULL WHERE name = ";
    match store {
        AnyStore::Postgres(s) => {
            let mut tx = s.pool().begin().await?;
            sqlx::query(AssertSqlSafe(format!("{reset_checkpoint}$1")))
                .bind(name)
                .execute(&mut *tx)
                .await?;
            for table in tables {
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", table.name)))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        }
        AnyStore::Sqlite(s) => {
            s.with_writer(async |conn| {
                let mut tx = conn.begin().await?;
                sqlx::query(AssertSqlSafe(format!("{reset_checkpoint}?")))
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                for table in tables {
                    sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", table.name)))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            })
            .await
        }
    }
}
