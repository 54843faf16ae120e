//! The renderers configured on this machine.

use std::collections::BTreeMap;

use super::params::check_token;
use super::{CancelToken, FrameJob, Progress, RenderError, RenderedFrame, Renderer};

/// The renderers this node is configured to run, by name. A job can only
/// name one of these; anything else is [`RenderError::UnknownRenderer`].
#[derive(Debug, Default)]
pub struct Renderers {
    by_name: BTreeMap<String, Box<dyn Renderer>>,
}

impl Renderers {
    /// An empty registry: this node runs nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `renderer` under its own [`Renderer::name`], returning the one it
    /// replaces, if any.
    pub fn register(&mut self, renderer: Box<dyn Renderer>) -> Option<Box<dyn Renderer>> {
        self.by_name.insert(renderer.name().to_owned(), renderer)
    }

    /// Adds `renderer` under a configured name (for example `blender-3.4`
    /// beside `blender-4.1`), returning the one it replaces, if any. The name
    /// must be a safe token ([`check_token`]).
    pub fn register_as(
        &mut self,
        name: &str,
        renderer: Box<dyn Renderer>,
    ) -> Result<Option<Box<dyn Renderer>>, RenderError> {
        check_token("renderer name", name)?;
        Ok(self.by_name.insert(name.to_owned(), renderer))
    }

    /// The renderer configured under `name`.
    pub fn get(&self, name: &str) -> Result<&dyn Renderer, RenderError> {
        self.by_name
            .get(name)
            .map(Box::as_ref)
            .ok_or_else(|| RenderError::UnknownRenderer {
                name: super::params::truncate(name, 64).to_owned(),
            })
    }

    /// The configured names, sorted (what the node advertises).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Looks up `name` and renders `job` with it.
    pub fn render(
        &self,
        name: &str,
        job: &FrameJob,
        progress: &mut dyn FnMut(Progress),
        cancel: &CancelToken,
    ) -> Result<RenderedFrame, RenderError> {
        self.get(name)?.render_frame(job, progress, cancel)
    }

    /// Looks up `name` and renders the frames `job.frame..=last` with it in
    /// one go ([`Renderer::render_frames_logged`]).
    #[allow(clippy::too_many_arguments)]
    pub fn render_frames_logged(
        &self,
        name: &str,
        job: &FrameJob,
        last: u32,
        on_frame: &mut dyn FnMut(u32, RenderedFrame),
        progress: &mut dyn FnMut(u32, Progress),
        log: &mut dyn FnMut(super::OutputStream, &str),
        cancel: &CancelToken,
    ) -> Result<(), RenderError> {
        self.get(name)?
            .render_frames_logged(job, last, on_frame, progress, log, cancel)
    }

    /// Looks up `name` and renders `job` with it, every printed line to `log`.
    pub fn render_logged(
        &self,
        name: &str,
        job: &FrameJob,
        progress: &mut dyn FnMut(Progress),
        log: &mut dyn FnMut(super::OutputStream, &str),
        cancel: &CancelToken,
    ) -> Result<RenderedFrame, RenderError> {
        self.get(name)?
            .render_frame_logged(job, progress, log, cancel)
    }
}
