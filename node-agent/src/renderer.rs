//! Renderers: the [`Renderer`] trait, its typed inputs and outputs, the
//! [`Renderers`] registry of what this machine is configured to run, and the
//! two implementations, [`builtin`] and [`blender`].

pub mod blender;
pub mod builtin;
mod cancel;
mod error;
mod job;
mod params;
mod registry;

pub use blender::process::Stream as OutputStream;
pub use cancel::CancelToken;
pub use error::RenderError;
pub use job::{FrameJob, Progress, RenderedFrame, frame_file_name};
pub use params::{
    MAX_FRAME, MAX_OPTIONS, MAX_SAMPLES, MAX_SIDE, MAX_TOKEN_LEN, RenderParams, Resolution,
    check_token,
};
pub use registry::Renderers;

/// A way of turning a scene into PNG frames.
///
/// Implementations promise:
/// - [`Renderer::render_frame`] calls [`Renderer::validate`] and
///   [`FrameJob::check`] first, and runs or creates nothing when they fail;
/// - nothing from the job reaches a shell or becomes a free-form argument;
/// - `Ok` only when the output file exists and decodes as a PNG image
///   ([`RenderedFrame::from_output`]);
/// - `cancel` is honoured promptly with [`RenderError::Cancelled`].
pub trait Renderer: Send + Sync + std::fmt::Debug {
    /// The renderer's kind, as jobs name it (`"builtin"`, `"blender"`).
    fn name(&self) -> &'static str;

    /// Rejects parameters this renderer cannot take: out of bounds, unknown
    /// options, unsafe characters.
    fn validate(&self, params: &RenderParams) -> Result<(), RenderError>;

    /// Renders one frame to [`FrameJob::output_path`], reporting progress
    /// (fractions `0..=1`, non-decreasing) as it goes and handing `log`
    /// every line the renderer prints, as printed (for the task's log).
    fn render_frame_logged(
        &self,
        job: &FrameJob,
        progress: &mut dyn FnMut(Progress),
        log: &mut dyn FnMut(OutputStream, &str),
        cancel: &CancelToken,
    ) -> Result<RenderedFrame, RenderError>;

    /// Renders the frames `job.frame..=last` (a task's chunk), handing each
    /// to `on_frame` as soon as it is written and checked, in order;
    /// `progress` hears the frame it concerns. The default renders frame by
    /// frame with [`Renderer::render_frame_logged`]; a renderer that pays a
    /// start-up per process (Blender) renders the whole chunk in one.
    /// `Ok` only when every frame was handed over.
    fn render_frames_logged(
        &self,
        job: &FrameJob,
        last: u32,
        on_frame: &mut dyn FnMut(u32, RenderedFrame),
        progress: &mut dyn FnMut(u32, Progress),
        log: &mut dyn FnMut(OutputStream, &str),
        cancel: &CancelToken,
    ) -> Result<(), RenderError> {
        for frame in job.frame..=last {
            if cancel.is_cancelled() {
                return Err(RenderError::Cancelled);
            }
            let one = FrameJob {
                frame,
                ..job.clone()
            };
            let rendered =
                self.render_frame_logged(&one, &mut |p| progress(frame, p), log, cancel)?;
            on_frame(frame, rendered);
        }
        Ok(())
    }

    /// [`Renderer::render_frame_logged`] without the printed lines.
    fn render_frame(
        &self,
        job: &FrameJob,
        progress: &mut dyn FnMut(Progress),
        cancel: &CancelToken,
    ) -> Result<RenderedFrame, RenderError> {
        self.render_frame_logged(job, progress, &mut |_, _| {}, cancel)
    }
}
