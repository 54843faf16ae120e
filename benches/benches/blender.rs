//! Blender chunks: render seconds per frame when a task's frames are
//! rendered one Blender process per frame (`-f N`, the agent before issue
//! 14) and one process per chunk (`-s a -e b -a`, the agent now), for
//! chunks of 1, 5 and 10 frames, through the agent's own renderer, on a
//! scene made by Blender's own Python (`node-agent/tests/make_scene.py`,
//! Cycles on the CPU).
//!
//! `cargo bench -p benches --bench blender`. Sizes: `FLATRENDER_BENCH_FRAMES`
//! (default 10 frames per measurement), `FLATRENDER_BENCH_WIDTH` ×
//! `FLATRENDER_BENCH_HEIGHT` (320 × 180), `FLATRENDER_BENCH_SAMPLES` (16).
//! Under `cargo test` it renders 2 frames at 32 × 18 with 1 sample. Without
//! `blender` on `PATH` it says so and stops (with
//! `FLATRENDER_REQUIRE_SERVICES=1` that is a failure).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use node_agent::renderer::blender::{BlenderConfig, BlenderRenderer};
use node_agent::{CancelToken, FrameJob, RenderParams, Renderer, Resolution};

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn find_blender() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("blender"))
        .find(|p| p.is_file())
}

/// Seconds to render `frames` frames in chunks of `chunk`, either one
/// process per chunk or one process per frame.
fn measure(
    r: &BlenderRenderer,
    scene: &Path,
    out: &Path,
    params: &RenderParams,
    frames: u32,
    chunk: u32,
    per_frame: bool,
) -> f64 {
    let started = Instant::now();
    let mut first = 1;
    while first <= frames {
        let last = (first + chunk - 1).min(frames);
        let job = FrameJob {
            scene: scene.to_owned(),
            frame: first,
            output_dir: out.to_owned(),
            params: params.clone(),
        };
        let mut handed = 0;
        if per_frame {
            for frame in first..=last {
                let one = FrameJob {
                    frame,
                    ..job.clone()
                };
                r.render_frame(&one, &mut |_| {}, &CancelToken::new())
                    .unwrap_or_else(|e| panic!("frame {frame}: {e}"));
                handed += 1;
            }
        } else {
            r.render_frames_logged(
                &job,
                last,
                &mut |_, _| handed += 1,
                &mut |_, _| {},
                &mut |_, _| {},
                &CancelToken::new(),
            )
            .unwrap_or_else(|e| panic!("frames {first}-{last}: {e}"));
        }
        assert_eq!(handed, last - first + 1);
        first = last + 1;
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let Some(blender) = find_blender() else {
        assert!(
            std::env::var("FLATRENDER_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "FLATRENDER_REQUIRE_SERVICES=1 but `blender` is not on PATH"
        );
        println!("!!! SKIPPED: blender not installed");
        return;
    };
    let (frames, width, height, samples) = if full {
        (
            env_or("FLATRENDER_BENCH_FRAMES", 10),
            env_or("FLATRENDER_BENCH_WIDTH", 320),
            env_or("FLATRENDER_BENCH_HEIGHT", 180),
            env_or("FLATRENDER_BENCH_SAMPLES", 16),
        )
    } else {
        (2, 32, 18, 1)
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let scene = tmp.path().join("cube.blend");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node-agent/tests/make_scene.py");
    let made = Command::new(&blender)
        .args(["-b", "--factory-startup", "--python"])
        .arg(&script)
        .arg("--")
        .arg(&scene)
        .arg("CYCLES")
        .output()
        .expect("run blender to build the scene");
    assert!(
        made.status.success() && scene.is_file(),
        "make_scene.py failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let r = BlenderRenderer::new(BlenderConfig::new(&blender));
    let mut params = RenderParams {
        resolution: Some(Resolution { width, height }),
        samples: Some(samples),
        ..RenderParams::default()
    };
    params.options.insert("cycles_device".into(), "CPU".into());
    let out = tmp.path().join("out");
    println!(
        "FlatRender Blender chunks: {frames} frames, {width}×{height}, Cycles CPU, {samples} samples"
    );
    println!(
        "| chunk | process per frame: s/frame | process per chunk: s/frame | per chunk ÷ per frame |"
    );
    println!(
        "|------:|---------------------------:|---------------------------:|----------------------:|"
    );
    let chunks: &[u32] = if full { &[1, 5, 10] } else { &[2] };
    for &chunk in chunks {
        let per_frame = measure(&r, &scene, &out, &params, frames, chunk, true) / f64::from(frames);
        let per_chunk =
            measure(&r, &scene, &out, &params, frames, chunk, false) / f64::from(frames);
        println!(
            "| {chunk:>5} | {per_frame:>26.2} | {per_chunk:>26.2} | {:>21.2} |",
            per_chunk / per_frame
        );
    }
}
