//! Reads of the read models for the API: every tenant-scoped read takes
//! the tenant and filters by it.

use eventstore::AnyStore;
use sqlx::AssertSqlSafe;

use crate::db::{Reader, pg_values, sqlite_values};
use crate::error::ProjectionError;
use crate::renders::{RenderRow, TenantRow};
use crate::table::{Row, Value};

/// A parameter of a read.
#[derive(Debug, Clone)]
pub enum Param {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
}

/// Binds every parameter, in order, whatever the backend.
macro_rules! bind_all {
    ($q:ident, $params:expr) => {
        for p in $params {
            $q = match p {
                Param::Text(t) => $q.bind(t.clone()),
                Param::Int(i) => $q.bind(*i),
            };
        }
    };
}

/// Rows of `R` after `WHERE <filter>` (PostgreSQL placeholders `$1`, `$2`,
/// …; SQLite gets the same numbered as `?1`, `?2`, …).
pub async fn rows<R: Row>(
    store: &AnyStore,
    filter: &str,
    params: &[Param],
) -> Result<Vec<R>, ProjectionError> {
    let table = R::TABLE;
    let sql = format!(
        "SELECT {} FROM {} WHERE {filter}",
        table.column_list(),
        table.name
    );
    let values: Vec<Vec<Value>> = match Reader::of(store) {
        Reader::Pg(pool) => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            bind_all!(q, params);
            q.fetch_all(&pool)
                .await?
                .iter()
                .map(|r| pg_values(r, &table))
                .collect::<Result<_, _>>()?
        }
        Reader::Sqlite(pool) => {
            let sql = sql.replace('$', "?");
            let mut q = sqlx::query(AssertSqlSafe(sql));
            bind_all!(q, params);
            q.fetch_all(&pool)
                .await?
                .iter()
                .map(|r| sqlite_values(r, &table))
                .collect::<Result<_, _>>()?
        }
    };
    values.into_iter().map(R::from_values).collect()
}

/// A count after `WHERE <filter>`, placeholders as in [`rows`].
pub async fn count(
    store: &AnyStore,
    table: &str,
    filter: &str,
    params: &[Param],
) -> Result<i64, ProjectionError> {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE {filter}");
    Ok(match Reader::of(store) {
        Reader::Pg(pool) => {
            let mut q = sqlx::query_scalar(AssertSqlSafe(sql));
            bind_all!(q, params);
            q.fetch_one(&pool).await?
        }
        Reader::Sqlite(pool) => {
            let mut q = sqlx::query_scalar(AssertSqlSafe(sql.replace('$', "?")));
            bind_all!(q, params);
            q.fetch_one(&pool).await?
        }
    })
}

/// One render of a tenant.
pub async fn render(
    store: &AnyStore,
    tenant: uuid::Uuid,
    render: uuid::Uuid,
) -> Result<Option<RenderRow>, ProjectionError> {
    let found = rows::<RenderRow>(
        store,
        "tenant_id = $1 AND render_id = $2",
        &[
            Param::Text(tenant.to_string()),
            Param::Text(render.to_string()),
        ],
    )
    .await?;
    Ok(found.into_iter().next())
}

/// A render of any tenant, by id (for the farm's operators only: every
/// other read names the tenant).
pub async fn render_of_any_tenant(
    store: &AnyStore,
    render: uuid::Uuid,
) -> Result<Option<RenderRow>, ProjectionError> {
    let found =
        rows::<RenderRow>(store, "render_id = $1", &[Param::Text(render.to_string())]).await?;
    Ok(found.into_iter().next())
}

/// One tenant.
pub async fn tenant(
    store: &AnyStore,
    tenant: uuid::Uuid,
) -> Result<Option<TenantRow>, ProjectionError> {
    let found =
        rows::<TenantRow>(store, "tenant_id = $1", &[Param::Text(tenant.to_string())]).await?;
    Ok(found.into_iter().next())
}
