//! What a renderer is asked to do, what it reports while doing it, and what
//! it hands back.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::RenderError;
use super::params::{MAX_FRAME, RenderParams};

/// One frame to render. The paths are the agent's own (the scene already
/// downloaded and checked, the output directory chosen by the agent); only
/// `frame` and `params` come from the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameJob {
    /// The scene file on local disk (absolute).
    pub scene: PathBuf,
    /// The frame number, `0..=MAX_FRAME`.
    pub frame: u32,
    /// The directory the frame is written to (absolute; created if missing).
    pub output_dir: PathBuf,
    /// The job's typed parameters.
    pub params: RenderParams,
}

impl FrameJob {
    /// Where the frame is written: `<output_dir>/frame_<NNNN>.png`, the
    /// frame number zero-padded to at least four digits (Blender's `####`).
    pub fn output_path(&self) -> PathBuf {
        self.output_dir.join(frame_file_name(self.frame))
    }

    /// The checks every renderer applies to the job itself: absolute paths,
    /// the frame number in range.
    pub fn check(&self) -> Result<(), RenderError> {
        if self.frame > MAX_FRAME {
            return Err(RenderError::invalid(format!(
                "frame {} is above {MAX_FRAME}",
                self.frame
            )));
        }
        if !self.scene.is_absolute() {
            return Err(RenderError::SceneInvalid(format!(
                "scene path {} is not absolute",
                self.scene.display()
            )));
        }
        if !self.output_dir.is_absolute() {
            return Err(RenderError::invalid(format!(
                "output directory {} is not absolute",
                self.output_dir.display()
            )));
        }
        Ok(())
    }
}

/// The file name of a frame: `frame_0007.png`, `frame_12345.png`.
pub fn frame_file_name(frame: u32) -> String {
    format!("frame_{frame:04}.png")
}

/// How far a frame is, reported by a renderer while it works.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Fraction done, `0.0..=1.0`, never decreasing within one frame.
    pub fraction: f64,
}

impl Progress {
    /// A progress report; the fraction is clamped into `0.0..=1.0` (NaN is 0).
    pub fn new(fraction: f64) -> Self {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        Self { fraction }
    }
}

/// A frame that exists on disk and decodes as a PNG image.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedFrame {
    /// The PNG file.
    pub path: PathBuf,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size_bytes: u64,
    /// Image width in pixels, as decoded.
    pub width: u32,
    /// Image height in pixels, as decoded.
    pub height: u32,
    /// Wall-clock time the renderer took, in seconds.
    pub render_seconds: f64,
}

/// Output files larger than this are refused (1 GiB).
const MAX_OUTPUT_BYTES: u64 = 1 << 30;

impl RenderedFrame {
    /// Checks the file at `path` — it must exist and decode completely as a
    /// PNG image (every row, every checksum) — and describes it. This is the
    /// only way a frame counts as rendered: a renderer's exit status proves
    /// nothing.
    pub fn from_output(path: &Path, render_seconds: f64) -> Result<Self, RenderError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RenderError::OutputMissing {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(RenderError::io(format!("reading {}", path.display()), e)),
        };
        let not_image = |reason: String| RenderError::OutputNotAnImage {
            path: path.to_owned(),
            reason,
        };
        if !meta.is_file() {
            return Err(not_image("not a regular file".into()));
        }
        if meta.len() > MAX_OUTPUT_BYTES {
            return Err(not_image(format!("{} bytes is too large", meta.len())));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| RenderError::io(format!("reading {}", path.display()), e))?;
        let (width, height) = decode_png(&bytes).map_err(not_image)?;
        Ok(Self {
            path: path.to_owned(),
            sha256: hex::encode(Sha256::digest(&bytes)),
            size_bytes: bytes.len() as u64,
            width,
            height,
            render_seconds,
        })
    }
}

/// Decodes the whole image row by row (so memory stays one row) and returns
/// its size.
fn decode_png(bytes: &[u8]) -> Result<(u32, u32), String> {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (width, height) = {
        let info = reader.info();
        (info.width, info.height)
    };
    let mut rows = 0u32;
    while reader.next_row().map_err(|e| e.to_string())?.is_some() {
        rows += 1;
    }
    if rows < height {
        return Err(format!("only {rows} of {height} rows decoded"));
    }
    Ok((width, height))
}
