//! Benchmarks live in `benches/benches/`; see `benches/README.md`.

pub mod farm;

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

    /// The database's URL (for a server started on it).
    pub fn url(&self) -> String {
        let base = pg_url();
        let (head, query) = base
            .split_once('?')
            .map_or((base.as_str(), None), |(h, q)| (h, Some(q)));
        let root = head.rsplit_once('/').map_or(head, |(r, _)| r);
        match query {
            Some(q) => format!("{root}/{}?{q}", self.name),
            None => format!("{root}/{}", self.name),
        }
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

/// User + system CPU seconds of this process's threads whose name starts with `prefix`.
pub fn cpu_seconds_of_threads(prefix: &str) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... ; comm may contain spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After the comm: state is field 0; utime is field 11, stime field 12.
        let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        total += utime + stime;
    }
    total as f64 / ticks
}
