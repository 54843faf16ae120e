#![doc = include_str!("../README.md")]

mod db;
pub mod error;
mod event;
mod files;
mod nodes;
pub mod query;
mod renders;
mod runner;
mod table;

pub use error::ProjectionError;
pub use event::time;
pub use files::FileRow;
pub use nodes::NodeRow;
pub use renders::{FrameRow, RenderRow, TaskRow, TenantRow, UsageRow};
pub use runner::{
    LOCK_KEY, Lag, PROJECTIONS, Runner, RunnerOptions, count_events, digest, lag, reset, tables_of,
};
pub use table::{Kind, Row, Table, Value};
