//! What the in-process scheduler benchmarks share: a node's capabilities,
//! a frame's output, one task from claim to completion.

use domain::node::{Capabilities, RendererInfo};
use domain::{Identifier, Label, LeaseRef, NodeId, SecretKeyId, TaskId};
use orchestrator::Orchestrator;
use uuid::Uuid;

/// A 16-core CPU node with the builtin renderer.
pub fn capabilities() -> Capabilities {
    Capabilities {
        cores: 16,
        memory_bytes: 64 << 30,
        gpus: vec![],
        renderers: vec![RendererInfo {
            name: Identifier::parse("builtin").expect("id"),
            version: Identifier::parse("1").expect("id"),
        }],
        tags: vec![],
        node_class: Identifier::parse("standard").expect("id"),
    }
}

/// Registers node number `n` with [`capabilities`] and brings it online.
pub async fn online_node(orch: &Orchestrator, n: usize) -> NodeId {
    let node = NodeId::new(Uuid::new_v4()).expect("id");
    orch.register_node(
        node,
        Label::parse(format!("node-{n}")).expect("label"),
        capabilities(),
        SecretKeyId::new(Uuid::new_v4()).expect("id"),
    )
    .await
    .expect("register");
    orch.heartbeat(node, &[]).await.expect("online");
    node
}

/// What a node stores for a frame (the bytes are not looked at here).
pub fn frame_output(frame: u32) -> orchestrator::FileOutput {
    orchestrator::FileOutput {
        name: domain::FileName::parse(format!("frame_{frame:04}.png")).expect("name"),
        content_type: domain::ContentType::parse("image/png").expect("type"),
        size_bytes: 100,
        sha256: domain::Sha256Digest::parse(format!("{:064x}", u128::from(frame) + 1))
            .expect("digest"),
    }
}

/// Renders a leased task the way an agent reports it: start, store and
/// report every frame's output, complete (a task completes only with each
/// frame's output reported under its lease).
pub async fn render_leased(orch: &Orchestrator, lease: LeaseRef, frames: (u32, u32)) {
    orch.progress(lease, None, None).await.expect("start");
    for frame in frames.0..=frames.1 {
        let file = orch
            .record_output(lease, frame, frame_output(frame))
            .await
            .expect("output");
        orch.progress(lease, Some(frame), Some(file))
            .await
            .expect("frame");
    }
    orch.complete(lease).await.expect("complete");
}

/// One task, claim to complete; `false` when nothing was queued for the
/// node.
pub async fn one_task(orch: &Orchestrator, node: NodeId) -> bool {
    let Some(a) = orch.claim(node).await.expect("claim") else {
        return false;
    };
    let lease = LeaseRef {
        task_id: TaskId::new(a.task_id).expect("id"),
        node_id: node,
        lease_epoch: a.lease_epoch,
    };
    render_leased(orch, lease, (a.frames.start, a.frames.end)).await;
    true
}
