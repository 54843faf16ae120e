//! `blender`: Blender in background mode, one process per task's chunk of
//! frames (about two seconds of start-up per process, paid once).
//!
//! The executable comes from the node's own configuration, never from a
//! job. The command is built argument by argument with no shell:
//!
//! ```text
//! <blender> -b -Y <scene.blend> [-E <engine>] -o <output_dir>/frame_#### -F PNG -x 1
//!           [-t <threads>] [--python-expr <resolution/samples from integers>]
//!           (-f <N> | -s <first> -e <last> -a) [-- --cycles-device <device>]
//! ```
//!
//! Each frame is handed over as Blender reports it saved (`Saved: '<path>'`)
//! and its PNG decodes, while the next renders.
//!
//! `-Y` keeps Python scripts embedded in the (tenant's) scene file from
//! running. Engine and device are chosen from fixed tables by the job's
//! options; resolution and samples reach Blender only as formatted integers.
//! Blender runs in its own process group, killed as a whole on cancel or
//! timeout. A frame counts as rendered only when no `Error:` line was
//! printed, Blender exited successfully and the output decodes as a PNG.

mod output;
pub mod process;

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

pub use output::{BlenderLine, parse_line};

use super::params::truncate;
use super::{
    CancelToken, FrameJob, MAX_SAMPLES, MAX_SIDE, Progress, RenderError, RenderParams,
    RenderedFrame, Renderer,
};
use process::{Group, Stream};

/// Values of the `engine` option and the `-E` argument each becomes.
pub const ENGINES: &[(&str, &str)] = &[
    ("CYCLES", "CYCLES"),
    ("BLENDER_EEVEE", "BLENDER_EEVEE"),
    ("BLENDER_WORKBENCH", "BLENDER_WORKBENCH"),
];

/// Values of the `cycles_device` option and the `--cycles-device` argument
/// each becomes.
pub const CYCLES_DEVICES: &[(&str, &str)] = &[
    ("CPU", "CPU"),
    ("CUDA", "CUDA"),
    ("OPTIX", "OPTIX"),
    ("HIP", "HIP"),
    ("ONEAPI", "ONEAPI"),
    ("METAL", "METAL"),
];

/// The options a Blender job may carry.
const OPTIONS: &[&str] = &["engine", "cycles_device"];

/// How often the output loop wakes to check cancellation and the timeout.
const POLL: Duration = Duration::from_millis(50);
/// How long output is still read after Blender exits.
const DRAIN: Duration = Duration::from_secs(2);
/// At most this many error lines, each this long, make a failure reason.
const MAX_REASON_LINES: usize = 8;
const MAX_REASON_LINE: usize = 300;

/// The node's own Blender settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlenderConfig {
    /// The Blender executable (an absolute path, or a name looked up on
    /// `PATH`).
    pub executable: PathBuf,
    /// Render threads (`-t`); Blender's default (all cores) if absent.
    pub threads: Option<NonZeroU32>,
    /// A frame taking longer than this is killed and failed.
    pub timeout: Option<Duration>,
}

impl BlenderConfig {
    /// Blender at `executable`, all cores, no timeout.
    pub fn new(executable: impl Into<PathBuf>) -> Self {
        Self {
            executable: executable.into(),
            threads: None,
            timeout: None,
        }
    }
}

/// Blender in background mode. It takes resolution, samples, and the
/// options `engine` ([`ENGINES`]) and `cycles_device` ([`CYCLES_DEVICES`]).
#[derive(Debug, Clone)]
pub struct BlenderRenderer {
    config: BlenderConfig,
}

impl BlenderRenderer {
    /// A renderer running the Blender of `config`.
    pub fn new(config: BlenderConfig) -> Self {
        Self { config }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &BlenderConfig {
        &self.config
    }

    /// The exact command that renders `job`: validated first, no shell,
    /// stdin closed, stdout and stderr piped, in a new process group.
    pub fn command(&self, job: &FrameJob) -> Result<Command, RenderError> {
        self.command_for(job, job.frame)
    }

    /// The command that renders the frames `job.frame..=last` in one
    /// process (`-f N` for one frame, `-s first -e last -a` for more).
    pub fn command_for(&self, job: &FrameJob, last: u32) -> Result<Command, RenderError> {
        self.validate(&job.params)?;
        job.check()?;
        FrameJob {
            frame: last,
            ..job.clone()
        }
        .check()?;
        if last < job.frame {
            return Err(RenderError::invalid(format!(
                "frames {}..={last} are empty",
                job.frame
            )));
        }
        let dir = job.output_dir.to_str().ok_or_else(|| {
            RenderError::invalid("output directory is not valid UTF-8".to_owned())
        })?;
        if dir.contains('#') || dir.starts_with("//") {
            // `#` is Blender's frame placeholder, `//` its blend-relative prefix.
            return Err(RenderError::invalid(format!(
                "output directory {dir:?} contains '#' or starts with '//'"
            )));
        }
        let params = &job.params;
        let mut cmd = Command::new(&self.config.executable);
        cmd.arg("-b").arg("-Y").arg(&job.scene);
        if let Some(engine) = lookup(ENGINES, params.option("engine")) {
            cmd.args(["-E", engine]);
        }
        cmd.arg("-o")
            .arg(format!("{}/frame_####", dir.trim_end_matches('/')))
            .args(["-F", "PNG", "-x", "1"]);
        if let Some(threads) = self.config.threads {
            cmd.arg("-t").arg(threads.get().to_string());
        }
        if let Some(expr) = python_expr(params) {
            cmd.arg("--python-expr").arg(expr);
        }
        if last == job.frame {
            cmd.arg("-f").arg(job.frame.to_string());
        } else {
            cmd.arg("-s").arg(job.frame.to_string());
            cmd.arg("-e").arg(last.to_string());
            cmd.arg("-a");
        }
        if let Some(device) = lookup(CYCLES_DEVICES, params.option("cycles_device")) {
            cmd.args(["--", "--cycles-device", device]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        Ok(cmd)
    }
}

/// The fixed argument for an option value, if given.
fn lookup(table: &[(&str, &'static str)], value: Option<&str>) -> Option<&'static str> {
    let value = value?;
    table.iter().find(|(k, _)| *k == value).map(|(_, v)| *v)
}

/// A Python expression setting resolution and samples, built from integers
/// only; `None` when neither is given.
fn python_expr(params: &RenderParams) -> Option<String> {
    if params.resolution.is_none() && params.samples.is_none() {
        return None;
    }
    let mut lines = vec!["import bpy".to_owned(), "s = bpy.context.scene".to_owned()];
    if let Some(r) = params.resolution {
        let (w, h): (u32, u32) = (r.width, r.height);
        lines.push(format!("s.render.resolution_x = {w}"));
        lines.push(format!("s.render.resolution_y = {h}"));
        lines.push("s.render.resolution_percentage = 100".to_owned());
    }
    if let Some(n) = params.samples {
        let n: u32 = n;
        lines.push(format!("if hasattr(s, 'cycles'): s.cycles.samples = {n}"));
        lines.push(format!("s.eevee.taa_render_samples = {n}"));
    }
    Some(lines.join("\n"))
}

impl Renderer for BlenderRenderer {
    fn name(&self) -> &'static str {
        "blender"
    }

    fn validate(&self, params: &RenderParams) -> Result<(), RenderError> {
        params.check(MAX_SIDE, MAX_SAMPLES, OPTIONS)?;
        for (key, table) in [("engine", ENGINES), ("cycles_device", CYCLES_DEVICES)] {
            if let Some(value) = params.option(key)
                && lookup(table, Some(value)).is_none()
            {
                let known: Vec<&str> = table.iter().map(|(k, _)| *k).collect();
                return Err(RenderError::invalid(format!(
                    "{key} {value:?} is not one of {known:?}"
                )));
            }
        }
        Ok(())
    }

    fn render_frame_logged(
        &self,
        job: &FrameJob,
        progress: &mut dyn FnMut(Progress),
        log: &mut dyn FnMut(crate::renderer::OutputStream, &str),
        cancel: &CancelToken,
    ) -> Result<RenderedFrame, RenderError> {
        let mut done = None;
        self.render_frames_logged(
            job,
            job.frame,
            &mut |_, frame| done = Some(frame),
            &mut |_, p| progress(p),
            log,
            cancel,
        )?;
        done.ok_or_else(|| RenderError::OutputMissing {
            path: job.output_path(),
        })
    }

    #[tracing::instrument(skip_all, fields(first = job.frame, last, scene = %job.scene.display()))]
    fn render_frames_logged(
        &self,
        job: &FrameJob,
        last: u32,
        on_frame: &mut dyn FnMut(u32, RenderedFrame),
        progress: &mut dyn FnMut(u32, Progress),
        log: &mut dyn FnMut(crate::renderer::OutputStream, &str),
        cancel: &CancelToken,
    ) -> Result<(), RenderError> {
        let mut cmd = self.command_for(job, last)?;
        match std::fs::metadata(&job.scene) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(RenderError::SceneInvalid(format!(
                    "{} is not a file",
                    job.scene.display()
                )));
            }
            Err(e) => {
                return Err(RenderError::SceneInvalid(format!(
                    "cannot read {}: {e}",
                    job.scene.display()
                )));
            }
        }
        std::fs::create_dir_all(&job.output_dir)
            .map_err(|e| RenderError::io(format!("creating {}", job.output_dir.display()), e))?;
        // Files left by an earlier attempt must not pass for this one.
        let path_of = |frame: u32| job.output_dir.join(super::frame_file_name(frame));
        for frame in job.frame..=last {
            let out = path_of(frame);
            match std::fs::remove_file(&out) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(RenderError::io(
                        format!("removing stale {}", out.display()),
                        e,
                    ));
                }
            }
        }
        if cancel.is_cancelled() {
            return Err(RenderError::Cancelled);
        }

        let (mut group, lines) = Group::spawn(&mut cmd).map_err(|e| {
            RenderError::io(format!("starting {}", self.config.executable.display()), e)
        })?;
        // The frame Blender works on: the first not handed over yet.
        let mut next = job.frame;
        let mut frame_started = Instant::now();
        progress(next, Progress::new(0.0));
        let mut best = 0.0_f64;
        let mut errors: Vec<String> = Vec::new();
        let mut stderr_tail: Vec<String> = Vec::new();
        let mut drain_until: Option<Instant> = None;
        loop {
            match lines.recv_timeout(POLL) {
                Ok(line) => match (line.stream, {
                    log(line.stream, &line.text);
                    parse_line(&line.text)
                }) {
                    (Stream::Stdout, Some(BlenderLine::Progress(f))) if next <= last => {
                        // Keep the last percent for checking the output.
                        let f = f * 0.99;
                        if f > best {
                            best = f;
                            progress(next, Progress::new(f));
                        }
                    }
                    (Stream::Stdout, Some(BlenderLine::Saved(saved)))
                        if next <= last && std::path::Path::new(&saved) == path_of(next) =>
                    {
                        // Checked and handed over while the next renders.
                        let seconds = frame_started.elapsed().as_secs_f64();
                        let frame = match RenderedFrame::from_output(&path_of(next), seconds) {
                            Ok(frame) => frame,
                            Err(e) => {
                                group.kill();
                                return Err(e);
                            }
                        };
                        progress(next, Progress::new(1.0));
                        on_frame(next, frame);
                        next += 1;
                        best = 0.0;
                        frame_started = Instant::now();
                        if next <= last {
                            progress(next, Progress::new(0.0));
                        }
                    }
                    (_, Some(BlenderLine::Error(msg))) => {
                        tracing::warn!(message = %msg, "blender error line");
                        if errors.len() < MAX_REASON_LINES {
                            errors.push(truncate(&msg, MAX_REASON_LINE).to_owned());
                        }
                    }
                    (Stream::Stderr, _) if !line.text.trim().is_empty() => {
                        if stderr_tail.len() == MAX_REASON_LINES {
                            stderr_tail.remove(0);
                        }
                        stderr_tail.push(truncate(line.text.trim(), MAX_REASON_LINE).to_owned());
                    }
                    _ => {}
                },
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if cancel.is_cancelled() {
                tracing::info!("cancelled: killing blender's process group");
                group.kill();
                return Err(RenderError::Cancelled);
            }
            if let Some(limit) = self.config.timeout
                && drain_until.is_none()
                && frame_started.elapsed() > limit
            {
                group.kill();
                return Err(RenderError::RendererFailed {
                    reason: format!("frame {next} timed out after {} s", limit.as_secs_f64()),
                });
            }
            match drain_until {
                None if group.has_exited() => {
                    // Anything Blender left behind in its group goes now.
                    group.kill();
                    drain_until = Some(Instant::now() + DRAIN);
                }
                Some(t) if Instant::now() > t => break,
                _ => {}
            }
        }
        let status = group
            .finish()
            .map_err(|e| RenderError::io("waiting for blender", e))?;
        if !errors.is_empty() {
            return Err(RenderError::RendererFailed {
                reason: errors.join("; "),
            });
        }
        if !status.success() {
            let mut reason = format!("blender exited with {status}");
            if !stderr_tail.is_empty() {
                reason.push_str(": ");
                reason.push_str(&stderr_tail.join("; "));
            }
            return Err(RenderError::RendererFailed { reason });
        }
        // Frames whose `Saved:` line was not seen count only if their file
        // is there and decodes.
        for frame in next..=last {
            let seconds = frame_started.elapsed().as_secs_f64();
            let rendered = RenderedFrame::from_output(&path_of(frame), seconds)?;
            progress(frame, Progress::new(1.0));
            on_frame(frame, rendered);
            frame_started = Instant::now();
        }
        Ok(())
    }
}
