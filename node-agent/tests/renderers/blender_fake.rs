//! The Blender renderer against fake `blender` executables: the exact
//! command, progress, and every way a frame can fail to exist.

use std::num::NonZeroU32;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use node_agent::renderer::blender::{BlenderConfig, BlenderRenderer};
use node_agent::{CancelToken, FrameJob, RenderError, RenderParams, Renderer};

use crate::{job, size, spawn_lock};

/// A temporary directory with a scene, an output directory and a PNG
/// fixture the fakes can copy.
struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("scene.blend"), b"BLENDER-v304").expect("scene");
        let mut png_bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png_bytes, 4, 3);
            enc.set_color(png::ColorType::Rgb);
            let mut w = enc.write_header().expect("header");
            w.write_image_data(&[200; 4 * 3 * 3]).expect("data");
        }
        std::fs::write(tmp.path().join("fixture.png"), png_bytes).expect("fixture");
        Self { tmp }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn job(&self, frame: u32, params: RenderParams) -> FrameJob {
        job(&self.path("scene.blend"), frame, &self.path("out"), params)
    }

    /// A fake blender running `body` under /bin/sh, recording its arguments.
    fn blender(&self, body: &str) -> BlenderRenderer {
        self.blender_with(body, |_| {})
    }

    fn blender_with(&self, body: &str, tweak: impl FnOnce(&mut BlenderConfig)) -> BlenderRenderer {
        let exe = self.path("fake-blender");
        let args = self.path("args.txt");
        let script = format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{}'\n{body}\n",
            args.display()
        );
        std::fs::write(&exe, script).expect("fake");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut config = BlenderConfig::new(exe);
        tweak(&mut config);
        BlenderRenderer::new(config)
    }

    fn received_args(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("args.txt"))
            .expect("the fake ran")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn strings(cmd: &std::process::Command) -> Vec<String> {
    cmd.get_args()
        .map(|a| a.to_str().expect("utf-8").to_owned())
        .collect()
}

#[test]
fn the_command_is_exact_and_needs_no_shell() {
    let r = BlenderRenderer::new(BlenderConfig {
        executable: "/opt/blender/blender".into(),
        threads: NonZeroU32::new(2),
        timeout: None,
    });
    let plain = job(
        Path::new("/data/in/ab12.blend"),
        7,
        Path::new("/data/out/task-1"),
        RenderParams::default(),
    );
    let cmd = r.command(&plain).expect("command");
    assert_eq!(cmd.get_program(), "/opt/blender/blender");
    assert_eq!(cmd.get_envs().count(), 0, "environment untouched");
    assert_eq!(
        strings(&cmd),
        [
            "-b",
            "-Y",
            "/data/in/ab12.blend",
            "-o",
            "/data/out/task-1/frame_####",
            "-F",
            "PNG",
            "-x",
            "1",
            "-t",
            "2",
            "-f",
            "7"
        ]
    );

    let mut params = size(64, 32, 16);
    params.options.insert("engine".into(), "CYCLES".into());
    params.options.insert("cycles_device".into(), "CPU".into());
    let full = job(
        Path::new("/data/in/ab12.blend"),
        12345,
        Path::new("/data/out/task-1/"),
        params,
    );
    let args = strings(&r.command(&full).expect("command"));
    let expr = "import bpy\ns = bpy.context.scene\ns.render.resolution_x = 64\ns.render.resolution_y = 32\ns.render.resolution_percentage = 100\nif hasattr(s, 'cycles'): s.cycles.samples = 16\ns.eevee.taa_render_samples = 16";
    assert_eq!(
        args,
        [
            "-b",
            "-Y",
            "/data/in/ab12.blend",
            "-E",
            "CYCLES",
            "-o",
            "/data/out/task-1/frame_####",
            "-F",
            "PNG",
            "-x",
            "1",
            "-t",
            "2",
            "--python-expr",
            expr,
            "-f",
            "12345",
            "--",
            "--cycles-device",
            "CPU"
        ]
    );
}

#[test]
fn unsafe_paths_and_values_are_refused() {
    let r = BlenderRenderer::new(BlenderConfig::new("blender"));
    let scene = Path::new("/data/in/a.blend");
    for out in ["/data/out/#1", "//relative-to-blend", "relative/out"] {
        let j = job(scene, 1, Path::new(out), RenderParams::default());
        assert!(r.command(&j).is_err(), "{out}");
    }
    let j = job(
        Path::new("-P evil.py"),
        1,
        Path::new("/out"),
        RenderParams::default(),
    );
    assert!(r.command(&j).is_err(), "scene must be absolute");
    let mut params = RenderParams::default();
    params.options.insert("engine".into(), "cycles".into());
    let j = job(scene, 1, Path::new("/out"), params);
    assert!(matches!(r.command(&j), Err(RenderError::InvalidParams(_))));
}

#[test]
fn progress_is_parsed_and_the_output_checked() {
    let _lock = spawn_lock();
    let fx = Fixture::new();
    let out = fx.path("out/frame_0003.png");
    let r = fx.blender(&format!(
        "echo 'Blender 3.4.1 (fake)'\n\
         echo 'Fra:3 Mem:9M | Time:00:00.01 | Scene, ViewLayer | Updating Lights'\n\
         echo 'Fra:3 Mem:9M | Time:00:00.02 | Scene, ViewLayer | Sample 1/4'\n\
         echo 'Fra:3 Mem:9M | Time:00:00.03 | Scene, ViewLayer | Sample 2/4'\n\
         echo 'Fra:3 Mem:9M | Time:00:00.04 | Scene, ViewLayer | Sample 4/4'\n\
         cp '{}' '{}'\n\
         echo \"Saved: '{}'\"\n",
        fx.path("fixture.png").display(),
        out.display(),
        out.display()
    ));
    let mut reports = Vec::new();
    let done = r
        .render_frame(
            &fx.job(3, RenderParams::default()),
            &mut |p| reports.push(p.fraction),
            &CancelToken::new(),
        )
        .expect("rendered");
    assert_eq!(done.path, out);
    assert_eq!((done.width, done.height), (4, 3));
    let expected = [0.0, 0.25 * 0.99, 0.5 * 0.99, 0.99, 1.0];
    assert_eq!(reports.len(), expected.len(), "{reports:?}");
    for (got, want) in reports.iter().zip(expected) {
        assert!((got - want).abs() < 1e-9, "{reports:?}");
    }
    let args = fx.received_args();
    assert_eq!(args[2], fx.path("scene.blend").to_str().expect("utf-8"));
    assert_eq!(args[args.len() - 2..], ["-f", "3"]);
}

#[test]
fn a_missing_output_is_output_missing_even_after_exit_zero() {
    let _lock = spawn_lock();
    let fx = Fixture::new();
    // A stale file from an earlier attempt must not count.
    std::fs::create_dir_all(fx.path("out")).expect("out");
    std::fs::copy(fx.path("fixture.png"), fx.path("out/frame_0001.png")).expect("stale");
    let r = fx.blender("echo 'Fra:1 | Sample 4/4'\nexit 0");
    let err = r
        .render_frame(
            &fx.job(1, RenderParams::default()),
            &mut |_| {},
            &CancelToken::new(),
        )
        .expect_err("no output");
    assert!(matches!(err, RenderError::OutputMissing { .. }), "{err}");
}

#[test]
fn an_output_that_is_not_a_png_is_refused() {
    let _lock = spawn_lock();
    let fx = Fixture::new();
    let out = fx.path("out/frame_0001.png");
    let fixture = std::fs::read(fx.path("fixture.png")).expect("fixture");
    std::fs::write(fx.path("half.png"), &fixture[..fixture.len() - 20]).expect("half");
    for body in [
        format!("echo 'not an image' > '{}'", out.display()),
        format!("cp '{}' '{}'", fx.path("half.png").display(), out.display()),
    ] {
        let r = fx.blender(&body);
        let err = r
            .render_frame(
                &fx.job(1, RenderParams::default()),
                &mut |_| {},
                &CancelToken::new(),
            )
            .expect_err("not an image");
        assert!(
            matches!(err, RenderError::OutputNotAnImage { .. }),
            "{body}: {err}"
        );
    }
}

#[test]
fn error_lines_and_exit_status_are_the_failure_reason() {
    let _lock = spawn_lock();
    let fx = Fixture::new();
    let out = fx.path("out/frame_0001.png");
    // Blender prints the error and exits 0; even a file it then wrote (the
    // default scene, say) does not count.
    let r = fx.blender(&format!(
        "echo \"Error: Cannot read file '/x.blend': No such file or directory\"\n\
         cp '{}' '{}'\nexit 0",
        fx.path("fixture.png").display(),
        out.display()
    ));
    let err = r
        .render_frame(
            &fx.job(1, RenderParams::default()),
            &mut |_| {},
            &CancelToken::new(),
        )
        .expect_err("error line");
    match err {
        RenderError::RendererFailed { reason } => {
            assert_eq!(
                reason,
                "Cannot read file '/x.blend': No such file or directory"
            );
        }
        other => panic!("{other}"),
    }

    let r = fx.blender("echo 'Traceback: boom' >&2\nexit 3");
    let err = r
        .render_frame(
            &fx.job(1, RenderParams::default()),
            &mut |_| {},
            &CancelToken::new(),
        )
        .expect_err("exit 3");
    match err {
        RenderError::RendererFailed { reason } => {
            assert!(reason.contains("exit status: 3"), "{reason}");
            assert!(reason.contains("Traceback: boom"), "{reason}");
        }
        other => panic!("{other}"),
    }

    let err = fx
        .blender("exit 0")
        .render_frame(
            &job(
                &fx.path("nope.blend"),
                1,
                &fx.path("out"),
                RenderParams::default(),
            ),
            &mut |_| {},
            &CancelToken::new(),
        )
        .expect_err("missing scene");
    assert!(matches!(err, RenderError::SceneInvalid(_)), "{err}");
}

/// Whether a process is gone (or a zombie nobody has reaped yet).
fn is_dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn cancel_kills_the_whole_process_group() {
    let _lock = spawn_lock();
    let fx = Fixture::new();
    let pidfile = fx.path("grandchild.pid");
    let r = fx.blender(&format!(
        "sleep 60 &\necho $! > '{}'\necho 'Fra:1 | Sample 1/100'\nwait",
        pidfile.display()
    ));
    let cancel = CancelToken::new();
    let c = cancel.clone();
    let started = Instant::now();
    let err = r
        .render_frame(
            &fx.job(1, RenderParams::default()),
            &mut |p| {
                if p.fraction > 0.0 {
                    c.cancel();
                }
            },
            &cancel,
        )
        .expect_err("cancelled");
    assert!(matches!(err, RenderError::Cancelled), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid = std::fs::read_to_string(&pidfile).expect("pid");
    let pid = pid.trim();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_dead(pid) {
        assert!(Instant::now() < deadline, "grandchild {pid} survived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_frame_over_its_time_limit_is_killed() {
    let _lock = spawn_lock();
    let fx = Fixture::new();
    let r = fx.blender_with("sleep 30", |c| {
        c.timeout = Some(Duration::from_millis(300));
    });
    let started = Instant::now();
    let err = r
        .render_frame(
            &fx.job(1, RenderParams::default()),
            &mut |_| {},
            &CancelToken::new(),
        )
        .expect_err("timeout");
    assert!(
        matches!(&err, RenderError::RendererFailed { reason } if reason.contains("timed out")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A fake that renders frames `first..=last` as Blender's `-a` does: each
/// frame's progress, its file, its `Saved:` line; after frame `first` it
/// waits (up to 5 s) for `gate` to exist before going on.
fn chunk_script(fx: &Fixture, first: u32, last: u32, gate: &Path) -> String {
    let mut body = format!("echo run >> '{}'\n", fx.path("runs.txt").display());
    for frame in first..=last {
        let out = fx.path(&format!("out/frame_{frame:04}.png"));
        body.push_str(&format!(
            "echo 'Fra:{frame} Mem:9M | Time:00:00.01 | Scene, ViewLayer | Sample 2/4'\n\
             cp '{}' '{}'\n\
             echo \"Saved: '{}'\"\n",
            fx.path("fixture.png").display(),
            out.display(),
            out.display()
        ));
        if frame == first {
            body.push_str(&format!(
                "i=0; while [ ! -e '{}' ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done\n\
                 [ -e '{}' ] || exit 3\n",
                gate.display(),
                gate.display()
            ));
        }
    }
    body
}

#[test]
fn a_chunk_renders_in_one_process_and_hands_over_each_frame_as_it_is_saved() {
    let _lock = spawn_lock();
    let fx = Fixture::new();
    let gate = fx.path("frame-2-received");
    let r = fx.blender(&chunk_script(&fx, 2, 4, &gate));
    let mut handed = Vec::new();
    let mut progress = Vec::new();
    r.render_frames_logged(
        &fx.job(2, RenderParams::default()),
        4,
        &mut |frame, rendered| {
            assert_eq!(rendered.path, fx.path(&format!("out/frame_{frame:04}.png")));
            assert_eq!((rendered.width, rendered.height), (4, 3));
            // The fake goes on only once frame 2 was handed over: frames
            // come out while Blender still runs, not after it exits.
            std::fs::write(&gate, b"").expect("gate");
            handed.push(frame);
        },
        &mut |frame, p| progress.push((frame, p.fraction)),
        &mut |_, _| {},
        &CancelToken::new(),
    )
    .expect("rendered");
    assert_eq!(handed, [2, 3, 4]);
    let runs = std::fs::read_to_string(fx.path("runs.txt")).expect("runs");
    assert_eq!(runs.lines().count(), 1, "one Blender process for the chunk");
    let args = fx.received_args();
    assert_eq!(args[args.len() - 5..], ["-s", "2", "-e", "4", "-a"]);
    for frame in 2..=4 {
        let mine: Vec<f64> = progress
            .iter()
            .filter(|(f, _)| *f == frame)
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(mine.first(), Some(&0.0), "frame {frame}: {progress:?}");
        assert_eq!(mine.last(), Some(&1.0), "frame {frame}: {progress:?}");
        assert!(mine.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    }
}

#[test]
fn a_chunk_missing_a_frame_fails_after_handing_over_those_it_has() {
    let _lock = spawn_lock();
    let fx = Fixture::new();
    let gate = fx.path("gate");
    std::fs::write(&gate, b"").expect("gate");
    // Frames 1 and 2 are saved; 3 never is, and Blender exits 0.
    let r = fx.blender(&chunk_script(&fx, 1, 2, &gate));
    let mut handed = Vec::new();
    let err = r
        .render_frames_logged(
            &fx.job(1, RenderParams::default()),
            3,
            &mut |frame, _| handed.push(frame),
            &mut |_, _| {},
            &mut |_, _| {},
            &CancelToken::new(),
        )
        .expect_err("frame 3 is missing");
    assert_eq!(handed, [1, 2]);
    assert!(
        matches!(&err, RenderError::OutputMissing { path } if path.ends_with("frame_0003.png")),
        "{err}"
    );
}

#[test]
fn cancelling_a_chunk_kills_blender_after_the_frames_already_saved() {
    let _lock = spawn_lock();
    let fx = Fixture::new();
    let pidfile = fx.path("grandchild.pid");
    let gate = fx.path("never");
    let script = format!(
        "sleep 60 &\necho $! > '{}'\n{}",
        pidfile.display(),
        chunk_script(&fx, 1, 5, &gate)
    );
    let r = fx.blender(&script);
    let cancel = CancelToken::new();
    let c = cancel.clone();
    let started = Instant::now();
    let mut handed = Vec::new();
    let err = r
        .render_frames_logged(
            &fx.job(1, RenderParams::default()),
            5,
            &mut |frame, _| {
                handed.push(frame);
                c.cancel();
            },
            &mut |_, _| {},
            &mut |_, _| {},
            &cancel,
        )
        .expect_err("cancelled");
    assert!(matches!(err, RenderError::Cancelled), "{err}");
    assert_eq!(handed, [1]);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "killed, not waited for"
    );
    let pid = std::fs::read_to_string(&pidfile).expect("pid");
    let pid = pid.trim();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_dead(pid) {
        assert!(Instant::now() < deadline, "grandchild {pid} survived");
        std::thread::sleep(Duration::from_millis(20));
    }
}
