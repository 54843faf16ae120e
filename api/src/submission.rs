//! A render submission checked before anything is appended: the render's
//! values, a renderer some node offers or the server knows, and a scene the
//! renderer can read — so that a bad submission is refused at once, with
//! nothing recorded, instead of waiting forever or failing on a node.

use domain::TenantId;
use orchestrator::Orchestrator;

use crate::files::BlobStore;
use crate::seed::Render;

/// The renderers the server knows without a node offering them: those the
/// `flatrender-node` agent ships.
pub const KNOWN_RENDERERS: &[&str] = &["builtin", "blender"];

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A value of the render is out of bounds.
    #[error("invalid render: {0}")]
    Invalid(String),
    /// No registered node offers the renderer and the server does not know it.
    #[error(
        "unknown renderer `{0}`: no registered node offers it and the server knows only {known}",
        known = KNOWN_RENDERERS.join(", ")
    )]
    UnknownRenderer(String),
    /// The scene is not one the renderer reads.
    #[error("not a {renderer} scene: {reason}")]
    NotAScene {
        /// The renderer.
        renderer: String,
        /// Why.
        reason: String,
    },
    /// Storing or recording failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Checks that `bytes` are a scene `renderer` reads: a builtin scene parses
/// (JSON, every value in bounds); a `.blend` starts with Blender's header
/// (or is a gzip- or zstd-compressed one).
pub fn check_scene(renderer: &str, bytes: &[u8]) -> Result<(), SubmitError> {
    let refuse = |reason: String| SubmitError::NotAScene {
        renderer: renderer.to_owned(),
        reason,
    };
    match renderer {
        "builtin" => node_agent::renderer::builtin::Scene::parse(bytes)
            .map(|_| ())
            .map_err(|e| refuse(e.to_string())),
        "blender" => {
            const GZIP: &[u8] = &[0x1f, 0x8b];
            const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
            if bytes.starts_with(b"BLENDER") || bytes.starts_with(GZIP) || bytes.starts_with(ZSTD) {
                Ok(())
            } else {
                Err(refuse(
                    "a .blend file starts with `BLENDER` (or is gzip- or zstd-compressed)".into(),
                ))
            }
        }
        // A renderer a node offers that the server does not know: the
        // node is the judge.
        _ => Ok(()),
    }
}

/// Checks the render's values without recording anything.
fn check_render(render: &Render) -> Result<(), SubmitError> {
    let invalid = |e: domain::ValidationError| SubmitError::Invalid(e.to_string());
    domain::FrameRange::new(render.frames.0, render.frames.1).map_err(invalid)?;
    domain::ChunkSize::new(render.chunk_size).map_err(invalid)?;
    domain::Priority::new(render.priority).map_err(invalid)?;
    domain::Identifier::parse(render.renderer.clone()).map_err(invalid)?;
    if let Some((w, h)) = render.resolution {
        domain::render_job::Resolution::new(w, h).map_err(invalid)?;
    }
    Ok(())
}

/// Checks the render, its renderer and its scene, then stores the scene and
/// submits the render. A refusal records nothing.
pub async fn submit(
    orch: &Orchestrator,
    blobs: &BlobStore,
    tenant_id: TenantId,
    scene_name: &str,
    scene: &[u8],
    render: &Render,
) -> Result<domain::JobId, SubmitError> {
    check_render(render)?;
    let offered = orch.renderer_offered(&render.renderer).await;
    if !offered && !KNOWN_RENDERERS.contains(&render.renderer.as_str()) {
        return Err(SubmitError::UnknownRenderer(render.renderer.clone()));
    }
    check_scene(&render.renderer, scene)?;
    let file = crate::seed::scene(orch, blobs, tenant_id, scene_name, scene).await?;
    Ok(crate::seed::submit(orch, tenant_id, file, render).await?)
}
