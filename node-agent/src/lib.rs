#![doc = include_str!("../README.md")]

pub mod agent;
pub mod capabilities;
pub mod client;
pub mod config;
pub mod renderer;

pub use renderer::{
    CancelToken, FrameJob, Progress, RenderError, RenderParams, RenderedFrame, Renderer, Renderers,
    Resolution,
};
