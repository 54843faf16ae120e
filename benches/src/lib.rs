//! Benchmarks live in `benches/benches/`; see `benches/README.md`.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};

/// The PostgreSQL server benchmarks use: `FLATRENDER_BENCH_DATABASE_URL`,
/// else `FLATRENDER_TEST_DATABASE_URL`, else the local default.
pub fn pg_url() -> String {
    std::env::var("FLATRENDER_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("FLATRENDER_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database for one benchmark, dropped by [`FreshPg::drop_now`].
#[derive(Debug)]
pub struct FreshPg {
    admin: PgConnectOptions,
    name: String,
    /// The store on it.
    pub store: eventstore::PgStore,
}

impl FreshPg {
    /// Creates the database and opens the store (`max_connections` pooled).
    pub async fn create(max_connections: u32) -> Self {
        let admin = PgConnectOptions::from_str(&pg_url()).expect("database url");
        let name = format!("fr_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin.connect().await.expect("connect to PostgreSQL");
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create database");
        conn.close().await.expect("close");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(eventstore::postgres::tuned(admin.clone().database(&name)))
            .await
            .expect("connect");
        let store = eventstore::PgStore::from_pool(
            pool,
            eventstore::PgOptions {
                max_connections,
                listen: false,
            },
            Arc::new(eventstore::SystemClock),
        )
        .await
        .expect("store");
        Self { admin, name, store }
    }

    /// Closes the store and drops the database.
    pub async fn drop_now(self) {
        self.store.pool().close().await;
        let mut conn = self.admin.connect().await.expect("connect");
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .await
        .expect("drop database");
    }
}
