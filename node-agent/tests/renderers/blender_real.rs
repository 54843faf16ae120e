//! The real Blender, when installed: a tiny scene built with Blender's own
//! Python, two frames rendered through the renderer one process each, then
//! three as one chunk in one process.

use std::path::{Path, PathBuf};
use std::process::Command;

use node_agent::renderer::blender::{BlenderConfig, BlenderRenderer};
use node_agent::{CancelToken, Renderer};

use crate::{decode, job, size, spawn_lock};

/// `blender` on `PATH`, if any.
fn find_blender() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("blender"))
        .find(|p| p.is_file())
}

#[test]
fn real_blender_renders_frames_that_decode() {
    let Some(blender) = find_blender() else {
        if std::env::var("FLATRENDER_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!(
                "FLATRENDER_REQUIRE_SERVICES=1 but `blender` is not on PATH: install it (apt-get install -y blender)"
            );
        }
        println!("!!! SKIPPED: blender not installed");
        return;
    };
    let _lock = spawn_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let scene = tmp.path().join("cube.blend");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/make_scene.py");
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
        "make_scene.py failed: {}\n{}",
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr)
    );

    let mut config = BlenderConfig::new(&blender);
    config.threads = std::num::NonZeroU32::new(1);
    config.timeout = Some(std::time::Duration::from_secs(120));
    let r = BlenderRenderer::new(config);
    let out = tmp.path().join("out");
    let mut params = size(32, 32, 4);
    params.options.insert("cycles_device".into(), "CPU".into());
    let mut pixels = Vec::new();
    for frame in [1, 3] {
        let mut reports = Vec::new();
        let done = r
            .render_frame(
                &job(&scene, frame, &out, params.clone()),
                &mut |p| reports.push(p.fraction),
                &CancelToken::new(),
            )
            .unwrap_or_else(|e| panic!("frame {frame}: {e}"));
        assert_eq!(done.path, out.join(format!("frame_{frame:04}.png")));
        let (w, h, px) = decode(&done.path);
        assert_eq!((w, h), (32, 32));
        assert!(
            reports.iter().any(|&f| f > 0.0 && f < 1.0),
            "progress parsed from Blender's own output: {reports:?}"
        );
        println!(
            "frame {frame}: {} bytes in {:.2} s, progress {reports:?}",
            done.size_bytes, done.render_seconds
        );
        pixels.push(px);
    }
    assert_ne!(
        pixels[0], pixels[1],
        "the cube turns between frames 1 and 3"
    );
    // The same frames as one chunk, in one process: each handed over as
    // Blender saves it, with the pixels of the frame-by-frame renders.
    let chunk_out = tmp.path().join("chunk");
    let mut handed = Vec::new();
    r.render_frames_logged(
        &job(&scene, 1, &chunk_out, params.clone()),
        3,
        &mut |frame, done| handed.push((frame, decode(&done.path).2)),
        &mut |_, _| {},
        &mut |_, _| {},
        &CancelToken::new(),
    )
    .unwrap_or_else(|e| panic!("chunk 1-3: {e}"));
    let frames: Vec<u32> = handed.iter().map(|(f, _)| *f).collect();
    assert_eq!(frames, [1, 2, 3]);
    assert_eq!(handed[0].1, pixels[0], "frame 1 as in its own process");
    assert_eq!(handed[2].1, pixels[1], "frame 3 as in its own process");
}
