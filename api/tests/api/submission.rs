//! A submission is checked before anything is recorded: an unknown
//! renderer, a scene the renderer cannot read and out-of-bounds values are
//! refused with nothing appended (not even the scene's upload).

use api::seed::Render;
use api::submission::{SubmitError, check_scene, submit};

#[tokio::test]
async fn bad_submissions_are_refused_and_record_nothing() {
    let (state, dir) = crate::state().await;
    let orch = &state.orchestrator;
    let tenant = api::seed::tenant(orch, "Studio", 1, 10, 1_000)
        .await
        .unwrap();
    let demo = node_agent::renderer::builtin::DEMO_SCENE.as_bytes();
    let before = crate::log(&state.store).await.len();
    let cases: Vec<(&str, &[u8], Render)> = vec![
        (
            "an unknown renderer",
            demo,
            Render {
                renderer: "evil".into(),
                ..Render::default()
            },
        ),
        (
            "random bytes as a builtin scene",
            b"\x00\x9f\x13garbage",
            Render::default(),
        ),
        (
            "random bytes as a .blend",
            b"not a blend file",
            Render {
                renderer: "blender".into(),
                ..Render::default()
            },
        ),
        (
            "a reversed frame range",
            demo,
            Render {
                frames: (10, 1),
                ..Render::default()
            },
        ),
        (
            "a chunk size of 0",
            demo,
            Render {
                chunk_size: 0,
                ..Render::default()
            },
        ),
        (
            "a priority over 100",
            demo,
            Render {
                priority: 101,
                ..Render::default()
            },
        ),
    ];
    for (what, scene, render) in cases {
        let refused = submit(orch, &state.blobs, tenant, "scene", scene, &render).await;
        match (what, refused) {
            ("an unknown renderer", Err(SubmitError::UnknownRenderer(name))) => {
                assert_eq!(name, "evil");
            }
            (w, Err(SubmitError::NotAScene { .. })) if w.starts_with("random bytes") => {}
            (_, Err(SubmitError::Invalid(_))) => {}
            (what, other) => panic!("{what}: {other:?}"),
        }
        assert_eq!(
            crate::log(&state.store).await.len(),
            before,
            "{what} recorded something"
        );
    }
    // A valid one goes through; so does a renderer a registered node
    // offers though the server does not know it.
    submit(
        orch,
        &state.blobs,
        tenant,
        "demo.json",
        demo,
        &Render::default(),
    )
    .await
    .unwrap();
    assert!(check_scene("blender", b"BLENDER-v304RENDH").is_ok());
    let node = domain::NodeId::new(uuid::Uuid::new_v4()).unwrap();
    let capabilities = serde_json::from_value(serde_json::json!({
        "cores": 4, "memory_bytes": 1024, "gpus": [], "tags": [], "node_class": "standard",
        "renderers": [{ "name": "custom", "version": "1" }],
    }))
    .unwrap();
    orch.register_node(
        node,
        domain::Label::parse("render-01").unwrap(),
        capabilities,
        domain::SecretKeyId::new(uuid::Uuid::new_v4()).unwrap(),
    )
    .await
    .unwrap();
    let custom = Render {
        renderer: "custom".into(),
        ..Render::default()
    };
    submit(
        orch,
        &state.blobs,
        tenant,
        "scene.bin",
        b"anything",
        &custom,
    )
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
