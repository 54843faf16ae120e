//! The renderers, end to end: the builtin ray tracer, Blender driven through
//! fake executables, the real Blender when installed, and parameters shaped
//! like shell injection.

mod blender_fake;
mod blender_real;
mod builtin;
mod injection;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use node_agent::{FrameJob, RenderParams, Resolution};

/// Tests that write an executable and then spawn processes hold this, so no
/// other test forks while a freshly written script is still open for writing
/// (which would make exec fail with ETXTBSY).
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

fn spawn_lock() -> MutexGuard<'static, ()> {
    SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn job(scene: &Path, frame: u32, out: &Path, params: RenderParams) -> FrameJob {
    FrameJob {
        scene: scene.to_owned(),
        frame,
        output_dir: out.to_owned(),
        params,
    }
}

fn size(width: u32, height: u32, samples: u32) -> RenderParams {
    RenderParams {
        resolution: Some(Resolution { width, height }),
        samples: Some(samples),
        ..Default::default()
    }
}

/// Decodes a PNG completely, returning width, height and pixels.
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut buf).expect("PNG data");
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// All files under `dir`, recursively (empty if it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
