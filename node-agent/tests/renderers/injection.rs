//! Parameters crafted as shell injection do nothing but fail validation.

use std::os::unix::fs::PermissionsExt;

use node_agent::renderer::blender::{BlenderConfig, BlenderRenderer};
use node_agent::renderer::builtin::{BuiltinRenderer, DEMO_SCENE};
use node_agent::{CancelToken, RenderError, RenderParams, Renderer};

use crate::{files_under, job, spawn_lock};

const PAYLOADS: &[&str] = &[
    "; rm -rf /",
    "$(touch x)",
    "`touch x`",
    "../../etc/passwd",
    "CPU; touch x",
    "CPU && touch x",
    "CPU | touch x",
    "CPU\ntouch x",
    "a b",
    "/etc/passwd",
    "--python-expr=import os",
    "'",
    "\"",
    "",
];

#[test]
fn injection_shaped_params_fail_validation_and_nothing_runs() {
    let _lock = spawn_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let scene = tmp.path().join("scene.json");
    std::fs::write(&scene, DEMO_SCENE).expect("scene");
    let blend = tmp.path().join("scene.blend");
    std::fs::write(&blend, b"BLENDER").expect("blend");
    // A "blender" that leaves a mark if it is ever started.
    let marker = tmp.path().join("blender-ran");
    let fake = tmp.path().join("fake-blender");
    std::fs::write(&fake, format!("#!/bin/sh\ntouch '{}'\n", marker.display())).expect("fake");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let builtin = BuiltinRenderer::new();
    let blender = BlenderRenderer::new(BlenderConfig::new(&fake));
    let renderers: [(&dyn Renderer, &std::path::Path); 2] =
        [(&builtin, &scene), (&blender, &blend)];
    let out = tmp.path().join("out");
    let cwd_before = files_under(&std::env::current_dir().expect("cwd"));

    for payload in PAYLOADS {
        let as_values = ["engine", "cycles_device", "quality"].map(|key| {
            let mut p = RenderParams::default();
            p.options.insert(key.to_owned(), (*payload).to_owned());
            p
        });
        let mut as_key = RenderParams::default();
        as_key
            .options
            .insert((*payload).to_owned(), "CPU".to_owned());
        for params in as_values.iter().chain([&as_key]) {
            for (r, scene) in renderers {
                let err = r.validate(params).expect_err(payload);
                assert!(
                    matches!(err, RenderError::InvalidParams(_)),
                    "{payload:?}: {err}"
                );
                let err = r
                    .render_frame(
                        &job(scene, 1, &out, params.clone()),
                        &mut |_| {},
                        &CancelToken::new(),
                    )
                    .expect_err(payload);
                assert!(
                    matches!(err, RenderError::InvalidParams(_)),
                    "{payload:?}: {err}"
                );
            }
            assert!(
                blender
                    .command(&job(&blend, 1, &out, params.clone()))
                    .is_err()
            );
        }
    }
    assert!(!marker.exists(), "blender was never started");
    assert!(!out.exists(), "no output directory was created");
    assert!(!tmp.path().join("x").exists());
    assert_eq!(
        files_under(&std::env::current_dir().expect("cwd")).len(),
        cwd_before.len(),
        "nothing created in the working directory"
    );
}

#[test]
fn params_json_is_typed_and_closed() {
    for bad in [
        r#"{"command": "blender -b x.blend; rm -rf /"}"#,
        r#"{"samples": "$(touch x)"}"#,
        r#"{"samples": -1}"#,
        r#"{"resolution": {"width": 10}}"#,
        r#"{"resolution": {"width": 10, "height": 10, "depth": 3}}"#,
        r#"{"options": {"engine": 3}}"#,
    ] {
        assert!(serde_json::from_str::<RenderParams>(bad).is_err(), "{bad}");
    }
    let ok: RenderParams = serde_json::from_str(
        r#"{"resolution": {"width": 64, "height": 32}, "samples": 8, "options": {"cycles_device": "CPU"}}"#,
    )
    .expect("valid params");
    assert_eq!(ok.samples, Some(8));
}
