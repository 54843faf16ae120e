#![doc = include_str!("../README.md")]

pub mod app;
pub mod audit;
pub mod broker;
pub mod config;
pub mod contact_sheet;
pub mod demo;
pub mod enroll;
pub mod error;
pub mod files;
pub mod live;
pub mod metrics;
pub mod monitor;
pub mod node_api;
pub mod node_auth;
pub mod output_image;
pub mod public;
pub mod read_models;
pub mod reseller;
pub mod secrets;
pub mod seed;
pub mod server;
pub mod studio;
pub mod submission;
pub mod task_logs;
pub mod users;
pub mod webhooks;

pub use app::{AppState, router};
pub use error::ApiError;
