//! Reading what Blender prints: progress, saved files, error lines.

/// What one line of Blender's output means to the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum BlenderLine {
    /// Progress within the frame, `0.0..=1.0` (`Sample 12/64`,
    /// `Rendering 3 / 16 samples`, `Rendered 3/12 Tiles`).
    Progress(f64),
    /// `Saved: '<path>'`: Blender says it wrote a file.
    Saved(String),
    /// `Error: <message>`: the message, a failure reason.
    Error(String),
}

/// Interprets one line of Blender's stdout; `None` for lines that say
/// nothing the agent needs. Lines Blender prints as `Error:` at exit about
/// leaked memory are not errors of the render and are ignored.
pub fn parse_line(line: &str) -> Option<BlenderLine> {
    let line = line.trim();
    if let Some(msg) = line.strip_prefix("Error:") {
        let msg = msg.trim();
        if msg.starts_with("Not freed memory blocks") {
            return None;
        }
        return Some(BlenderLine::Error(msg.to_owned()));
    }
    if let Some(rest) = line.strip_prefix("Saved:") {
        let path = rest.trim().trim_matches(['\'', '"']);
        return Some(BlenderLine::Saved(path.to_owned()));
    }
    // Progress is the last `|`-separated field of a `Fra:` status line (or a
    // whole line in older versions).
    let status = line.rsplit('|').next().unwrap_or(line).trim();
    if let Some(rest) = status.strip_prefix("Sample ") {
        return ratio(rest, "/").map(BlenderLine::Progress);
    }
    if let Some(rest) = status.strip_prefix("Rendering ")
        && let Some(counts) = rest.strip_suffix(" samples")
    {
        return ratio(counts, "/").map(BlenderLine::Progress);
    }
    if let Some(rest) = status.strip_prefix("Rendered ")
        && let Some(counts) = rest.strip_suffix(" Tiles")
    {
        return ratio(counts, "/").map(BlenderLine::Progress);
    }
    None
}

/// `"12/64"` or `"3 / 16"` as a fraction in `0..=1`.
fn ratio(s: &str, sep: &str) -> Option<f64> {
    let (done, total) = s.split_once(sep)?;
    let done: u64 = done.trim().parse().ok()?;
    let total: u64 = total.trim().parse().ok()?;
    if total == 0 {
        return None;
    }
    Some((done as f64 / total as f64).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_samples() {
        let l = "Fra:2 Mem:9.44M (Peak 10.20M) | Time:00:00.04 | Remaining:00:00.00 | Mem:0.79M, Peak:0.79M | Scene, ViewLayer | Sample 16/64";
        assert_eq!(parse_line(l), Some(BlenderLine::Progress(0.25)));
        assert_eq!(
            parse_line("Fra:1 | Sample 0/8"),
            Some(BlenderLine::Progress(0.0))
        );
    }

    #[test]
    fn eevee_and_tiles() {
        assert_eq!(
            parse_line("Fra:1 Mem:20M | Time:00:00.10 | Rendering 8 / 16 samples"),
            Some(BlenderLine::Progress(0.5))
        );
        assert_eq!(
            parse_line("Fra:1 Mem:20M | Time:00:00.10 | Rendered 3/12 Tiles"),
            Some(BlenderLine::Progress(0.25))
        );
    }

    #[test]
    fn saved_errors_and_noise() {
        assert_eq!(
            parse_line("Saved: '/tmp/out/frame_0002.png'"),
            Some(BlenderLine::Saved("/tmp/out/frame_0002.png".into()))
        );
        assert_eq!(
            parse_line("Error: Cannot read file '/x.blend': No such file or directory"),
            Some(BlenderLine::Error(
                "Cannot read file '/x.blend': No such file or directory".into()
            ))
        );
        assert_eq!(parse_line("Error: Not freed memory blocks: 2, total"), None);
        for noise in [
            "Blender 3.4.1",
            "Fra:2 Mem:8.90M | Scene, ViewLayer | Updating Lights",
            "Fra:2 | Sample x/8",
            "Fra:2 | Sample 3/0",
            " Time: 00:00.17 (Saving: 00:00.13)",
            "",
        ] {
            assert_eq!(parse_line(noise), None, "{noise}");
        }
    }
}
