use std::time::Instant;

use node_agent::renderer::builtin::{BuiltinRenderer, DEMO_SCENE};
use node_agent::{CancelToken, RenderError, RenderParams, Renderer, Renderers, Resolution};

use crate::{decode, files_under, job, size};

fn demo_scene(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("demo.json");
    std::fs::write(&p, DEMO_SCENE).expect("write scene");
    p
}

#[test]
fn renders_frames_that_decode_with_the_right_size() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let scene = demo_scene(tmp.path());
    let out = tmp.path().join("out");
    let r = BuiltinRenderer::new();
    for frame in [1, 12, 24] {
        let mut reports = Vec::new();
        let done = r
            .render_frame(
                &job(&scene, frame, &out, size(64, 36, 2)),
                &mut |p| reports.push(p.fraction),
                &CancelToken::new(),
            )
            .expect("rendered");
        assert_eq!(done.path, out.join(format!("frame_{frame:04}.png")));
        assert_eq!((done.width, done.height), (64, 36));
        let (w, h, pixels) = decode(&done.path);
        assert_eq!((w, h, pixels.len()), (64, 36, 64 * 36 * 3));
        assert_eq!(
            done.size_bytes,
            std::fs::metadata(&done.path).expect("meta").len()
        );
        assert_eq!(done.sha256.len(), 64);
        assert!(reports.windows(2).all(|w| w[0] <= w[1]), "{reports:?}");
        assert_eq!(reports.last(), Some(&1.0));
        assert!(reports.len() >= 4, "progress per row band: {reports:?}");
        // Not a blank image: the scene has colour.
        assert!(
            pixels
                .chunks(3)
                .any(|p| u16::from(p[0]) > u16::from(p[2]) + 60),
            "a red sphere"
        );
    }
    // Nothing but the frames is left behind.
    assert_eq!(files_under(&out).len(), 3);
}

#[test]
fn same_inputs_give_the_same_bytes_and_frames_differ() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let scene = demo_scene(tmp.path());
    let r = BuiltinRenderer::new();
    let render = |frame, dir: &str| {
        r.render_frame(
            &job(&scene, frame, &tmp.path().join(dir), size(48, 27, 3)),
            &mut |_| {},
            &CancelToken::new(),
        )
        .expect("rendered")
    };
    let a = render(7, "a");
    let b = render(7, "b");
    assert_eq!(
        std::fs::read(&a.path).expect("a"),
        std::fs::read(&b.path).expect("b")
    );
    assert_eq!(a.sha256, b.sha256);
    let c = render(8, "a");
    assert_ne!(a.sha256, c.sha256, "the camera moves between frames");
}

#[test]
fn a_full_size_frame_is_fast() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let scene = demo_scene(tmp.path());
    let started = Instant::now();
    let done = BuiltinRenderer::new()
        .render_frame(
            &job(&scene, 1, &tmp.path().join("out"), RenderParams::default()),
            &mut |_| {},
            &CancelToken::new(),
        )
        .expect("rendered");
    let secs = started.elapsed().as_secs_f64();
    println!("320x180, 4 samples: {secs:.3} s (unoptimised test build)");
    assert_eq!((done.width, done.height), (320, 180));
    assert!(secs < 10.0, "{secs} s");
}

#[test]
fn cancel_stops_between_rows_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let scene = demo_scene(tmp.path());
    let out = tmp.path().join("out");
    let r = BuiltinRenderer::new();

    let cancel = CancelToken::new();
    let c = cancel.clone();
    let err = r
        .render_frame(
            &job(&scene, 3, &out, size(64, 64, 1)),
            &mut |p| {
                if p.fraction > 0.0 {
                    c.cancel();
                }
            },
            &cancel,
        )
        .expect_err("cancelled mid-frame");
    assert!(matches!(err, RenderError::Cancelled), "{err}");

    let cancel = CancelToken::new();
    cancel.cancel();
    let err = r
        .render_frame(&job(&scene, 3, &out, size(64, 64, 1)), &mut |_| {}, &cancel)
        .expect_err("cancelled before start");
    assert!(matches!(err, RenderError::Cancelled), "{err}");
    assert!(files_under(&out).is_empty());
}

#[test]
fn invalid_scenes_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let r = BuiltinRenderer::new();
    let mut bad_field: serde_json::Value = serde_json::from_str(DEMO_SCENE).expect("json");
    bad_field["objects"][1]["command"] = serde_json::json!("rm -rf /");
    let mut bad_number: serde_json::Value = serde_json::from_str(DEMO_SCENE).expect("json");
    bad_number["camera"]["keyframes"][0]["fov_degrees"] = serde_json::json!(0.0);
    let cases = [
        ("garbage.json", "not json at all".to_owned()),
        ("empty.json", "{}".to_owned()),
        ("field.json", bad_field.to_string()),
        ("number.json", bad_number.to_string()),
    ];
    for (name, text) in cases {
        let scene = tmp.path().join(name);
        std::fs::write(&scene, text).expect("write");
        let err = r
            .render_frame(
                &job(&scene, 1, &out, size(8, 8, 1)),
                &mut |_| {},
                &CancelToken::new(),
            )
            .expect_err(name);
        assert!(matches!(err, RenderError::SceneInvalid(_)), "{name}: {err}");
    }
    let missing = tmp.path().join("missing.json");
    let err = r
        .render_frame(
            &job(&missing, 1, &out, size(8, 8, 1)),
            &mut |_| {},
            &CancelToken::new(),
        )
        .expect_err("missing");
    assert!(matches!(err, RenderError::SceneInvalid(_)), "{err}");
    assert!(files_under(&out).is_empty());
}

#[test]
fn out_of_bounds_params_are_refused_before_anything_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let scene = demo_scene(tmp.path());
    let out = tmp.path().join("out");
    let r = BuiltinRenderer::new();
    let mut with_option = RenderParams::default();
    with_option.options.insert("quality".into(), "high".into());
    let cases = [
        size(0, 10, 1),
        size(10, 100_000, 1),
        size(10, 10, 0),
        size(10, 10, 100_000),
        RenderParams {
            resolution: Some(Resolution {
                width: 5000,
                height: 10,
            }),
            ..Default::default()
        },
        with_option,
    ];
    for params in cases {
        assert!(r.validate(&params).is_err(), "{params:?}");
        let err = r
            .render_frame(
                &job(&scene, 1, &out, params.clone()),
                &mut |_| {},
                &CancelToken::new(),
            )
            .expect_err("invalid");
        assert!(
            matches!(err, RenderError::InvalidParams(_)),
            "{params:?}: {err}"
        );
    }
    let relative = job(std::path::Path::new("demo.json"), 1, &out, size(8, 8, 1));
    assert!(
        r.render_frame(&relative, &mut |_| {}, &CancelToken::new())
            .is_err()
    );
    let far = job(&scene, u32::MAX, &out, size(8, 8, 1));
    assert!(matches!(
        r.render_frame(&far, &mut |_| {}, &CancelToken::new()),
        Err(RenderError::InvalidParams(_))
    ));
    assert!(!out.exists(), "nothing created");
}

#[test]
fn the_registry_runs_only_configured_renderers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let scene = demo_scene(tmp.path());
    let out = tmp.path().join("out");
    let mut renderers = Renderers::new();
    assert!(
        renderers
            .register(Box::new(BuiltinRenderer::new()))
            .is_none()
    );
    renderers
        .register_as("builtin-fast", Box::new(BuiltinRenderer::new()))
        .expect("safe name");
    assert!(
        renderers
            .register_as("../evil", Box::new(BuiltinRenderer::new()))
            .is_err()
    );
    assert_eq!(
        renderers.names().collect::<Vec<_>>(),
        ["builtin", "builtin-fast"]
    );
    let j = job(&scene, 2, &out, size(16, 9, 1));
    let done = renderers
        .render("builtin", &j, &mut |_| {}, &CancelToken::new())
        .expect("rendered");
    assert!(done.path.exists());
    let err = renderers
        .render("blender", &j, &mut |_| {}, &CancelToken::new())
        .expect_err("not configured");
    assert!(matches!(err, RenderError::UnknownRenderer { .. }), "{err}");
}
