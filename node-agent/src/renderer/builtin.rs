//! `builtin`: a deterministic CPU ray tracer of a JSON [`Scene`] (spheres and
//! planes; diffuse, Blinn-Phong highlights and mirror reflection; point and
//! directional lights with hard shadows; stratified samples with a per-pixel
//! hash jitter; gamma 2.2), written as 8-bit RGB PNG. The same scene, frame
//! and parameters give a byte-identical file from the same build.

mod math;
mod scene;
mod tracer;

use std::io::Write;
use std::time::Instant;

pub use scene::{
    Camera, CameraKey, Checker, Light, MAX_BUILTIN_SAMPLES, MAX_BUILTIN_SIDE, MAX_DEPTH,
    MAX_KEYFRAMES, MAX_LIGHTS, MAX_OBJECTS, MAX_SCENE_BYTES, Material, Object, PositionKey, Scene,
};

use super::{CancelToken, FrameJob, Progress, RenderError, RenderParams, RenderedFrame, Renderer};

/// The bundled sample scene: coloured spheres on a checker plane, the camera
/// orbiting once over frames 1..=48 while two spheres bounce.
pub const DEMO_SCENE: &str = include_str!("../../scenes/demo.json");

/// The frames the demo scene is animated over.
pub const DEMO_FRAMES: std::ops::RangeInclusive<u32> = 1..=48;

/// Rows per progress report.
const ROWS_PER_REPORT: u32 = 8;

/// The builtin ray tracer. It takes resolution and samples, and no options.
#[derive(Debug, Clone, Default)]
pub struct BuiltinRenderer;

impl BuiltinRenderer {
    /// The builtin renderer.
    pub fn new() -> Self {
        Self
    }
}

impl Renderer for BuiltinRenderer {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn validate(&self, params: &RenderParams) -> Result<(), RenderError> {
        params.check(MAX_BUILTIN_SIDE, MAX_BUILTIN_SAMPLES, &[])
    }

    /// Prints a line per progress report (`Fra:7 | Row 64/128 | 16
    /// samples`), one when it starts and one when the frame is saved.
    #[tracing::instrument(skip_all, fields(frame = job.frame, scene = %job.scene.display()))]
    fn render_frame_logged(
        &self,
        job: &FrameJob,
        progress: &mut dyn FnMut(Progress),
        log: &mut dyn FnMut(crate::renderer::OutputStream, &str),
        cancel: &CancelToken,
    ) -> Result<RenderedFrame, RenderError> {
        use crate::renderer::OutputStream::Stdout;
        self.validate(&job.params)?;
        job.check()?;
        let started = Instant::now();
        let bytes = read_scene(&job.scene)?;
        let scene = Scene::parse(&bytes)?;
        let (width, height) = job
            .params
            .resolution
            .map_or((scene.width, scene.height), |r| (r.width, r.height));
        let samples = job.params.samples.unwrap_or(scene.samples);

        let posed = tracer::Posed::new(&scene, job.frame);
        let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
        progress(Progress::new(0.0));
        log(
            Stdout,
            &format!(
                "Fra:{} | Rendering {width}x{height} with {samples} samples",
                job.frame
            ),
        );
        for y in 0..height {
            if cancel.is_cancelled() {
                return Err(RenderError::Cancelled);
            }
            posed.render_row(y, width, height, samples, &mut pixels);
            if (y + 1) % ROWS_PER_REPORT == 0 && y + 1 < height {
                // Leave the last bit for writing the file.
                progress(Progress::new(0.99 * f64::from(y + 1) / f64::from(height)));
                log(
                    Stdout,
                    &format!("Fra:{} | Row {}/{height}", job.frame, y + 1),
                );
            }
        }
        if cancel.is_cancelled() {
            return Err(RenderError::Cancelled);
        }
        let png = encode_png(width, height, &pixels)?;
        let path = job.output_path();
        write_atomically(&path, &png)?;
        let frame = RenderedFrame::from_output(&path, started.elapsed().as_secs_f64())?;
        progress(Progress::new(1.0));
        log(
            Stdout,
            &format!(
                "Fra:{} | Saved {} ({:.2} s)",
                job.frame,
                crate::renderer::frame_file_name(job.frame),
                frame.render_seconds
            ),
        );
        tracing::debug!(
            width,
            height,
            samples,
            seconds = frame.render_seconds,
            "frame rendered"
        );
        Ok(frame)
    }
}

fn read_scene(path: &std::path::Path) -> Result<Vec<u8>, RenderError> {
    let file = std::fs::File::open(path)
        .map_err(|e| RenderError::SceneInvalid(format!("cannot open {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    // One byte over the limit is enough to know it is too big.
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_SCENE_BYTES as u64 + 1),
        &mut bytes,
    )
    .map_err(|e| RenderError::SceneInvalid(format!("cannot read {}: {e}", path.display())))?;
    Ok(bytes)
}

fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>, RenderError> {
    let fail = |e: png::EncodingError| RenderError::RendererFailed {
        reason: format!("PNG encoding failed: {e}"),
    };
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(rgb).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

/// Writes `path` through a temporary file in the same directory, so that a
/// frame file, when it exists, is complete.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), RenderError> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| RenderError::io(format!("creating {}", dir.display()), e))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        RenderError::io(format!("writing {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_scene_parses() {
        let s = Scene::parse(DEMO_SCENE.as_bytes()).expect("demo scene is valid");
        assert!(s.objects.len() >= 4);
        let last = s.camera.keyframes.last().map(|k| k.frame);
        assert_eq!(last, Some(*DEMO_FRAMES.end()));
    }

    #[test]
    fn unknown_fields_and_bounds_are_refused() {
        let mut v: serde_json::Value = serde_json::from_str(DEMO_SCENE).expect("json");
        v["shader"] = serde_json::json!("rm -rf /");
        let err = Scene::parse(v.to_string().as_bytes()).expect_err("unknown field");
        assert!(matches!(err, RenderError::SceneInvalid(_)), "{err}");

        let mut v: serde_json::Value = serde_json::from_str(DEMO_SCENE).expect("json");
        v["objects"][0]["radius"] = serde_json::json!(-1.0);
        assert!(Scene::parse(v.to_string().as_bytes()).is_err());

        let mut v: serde_json::Value = serde_json::from_str(DEMO_SCENE).expect("json");
        v["objects"][0]["material"]["bogus"] = serde_json::json!(1);
        assert!(Scene::parse(v.to_string().as_bytes()).is_err());

        let mut v: serde_json::Value = serde_json::from_str(DEMO_SCENE).expect("json");
        v["lights"][0]["extra"] = serde_json::json!(1);
        assert!(Scene::parse(v.to_string().as_bytes()).is_err());

        let mut v: serde_json::Value = serde_json::from_str(DEMO_SCENE).expect("json");
        v["width"] = serde_json::json!(100_000);
        assert!(Scene::parse(v.to_string().as_bytes()).is_err());

        let big = vec![b' '; MAX_SCENE_BYTES + 1];
        assert!(Scene::parse(&big).is_err());
    }
}
