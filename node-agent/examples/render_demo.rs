//! Renders frames of the bundled demo scene with the builtin renderer:
//! `cargo run -p node-agent --example render_demo -- <out_dir> [first] [last]`.

use node_agent::renderer::builtin::{BuiltinRenderer, DEMO_FRAMES, DEMO_SCENE};
use node_agent::{CancelToken, FrameJob, RenderParams, Renderer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = std::path::absolute(args.next().unwrap_or_else(|| "demo-frames".into()))?;
    let first = args
        .next()
        .map_or(Ok(*DEMO_FRAMES.start()), |a| a.parse())?;
    let last = args.next().map_or(Ok(*DEMO_FRAMES.end()), |a| a.parse())?;
    std::fs::create_dir_all(&out)?;
    let scene = out.join("demo.json");
    std::fs::write(&scene, DEMO_SCENE)?;
    let renderer = BuiltinRenderer::new();
    for frame in first..=last {
        let job = FrameJob {
            scene: scene.clone(),
            frame,
            output_dir: out.clone(),
            params: RenderParams::default(),
        };
        let done = renderer.render_frame(&job, &mut |_| {}, &CancelToken::new())?;
        println!(
            "{} {}x{} {:.3}s {}",
            done.path.display(),
            done.width,
            done.height,
            done.render_seconds,
            done.sha256
        );
    }
    Ok(())
}
