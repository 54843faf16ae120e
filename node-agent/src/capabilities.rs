//! What this machine offers: cores, memory, GPUs (where `nvidia-smi` exists),
//! and the renderers configured on it.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// One GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// Its model name.
    pub model: String,
    /// Its memory.
    pub memory_bytes: u64,
}

/// What the machine offers, as reported at registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detected {
    /// Logical CPU cores.
    pub cores: u32,
    /// Physical memory.
    pub memory_bytes: u64,
    /// GPUs found by `nvidia-smi`, if it is installed.
    pub gpus: Vec<Gpu>,
}

/// Detects cores, memory and GPUs. Never fails: what cannot be read is
/// reported as the least (1 core, 0 bytes, no GPUs) and logged.
pub fn detect() -> Detected {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| parse_meminfo(&text))
        .unwrap_or_else(|| {
            tracing::warn!("could not read the machine's memory from /proc/meminfo");
            0
        });
    Detected {
        cores,
        memory_bytes,
        gpus: nvidia_gpus(Path::new("nvidia-smi")),
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => value.checked_mul(1024),
        _ => None,
    }
}

/// GPUs as listed by `nvidia-smi --query-gpu=name,memory.total
/// --format=csv,noheader,nounits` (memory in MiB); none if it is missing or fails.
pub fn nvidia_gpus(executable: &Path) -> Vec<Gpu> {
    let output = Command::new(executable)
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output();
    match output {
        Ok(out) if out.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout)),
        Ok(out) => {
            tracing::warn!(status = %out.status, "nvidia-smi failed; reporting no GPUs");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

/// Parses `name, memory MiB` lines.
pub fn parse_nvidia_smi(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let (name, mib) = line.rsplit_once(',')?;
            let mib: u64 = mib.trim().parse().ok()?;
            let model = name.trim();
            (!model.is_empty()).then(|| Gpu {
                model: model.to_string(),
                memory_bytes: mib * 1024 * 1024,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_total_memory() {
        let text = "MemTotal:       24683472 kB\nMemFree:        20029800 kB\n";
        assert_eq!(parse_meminfo(text), Some(24_683_472 * 1024));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn reads_nvidia_smi_lines_and_skips_garbage() {
        let text = "NVIDIA GeForce RTX 4090, 24564\nTesla T4, 15360\nnot a gpu line\n, 12\n";
        assert_eq!(
            parse_nvidia_smi(text),
            vec![
                Gpu {
                    model: "NVIDIA GeForce RTX 4090".into(),
                    memory_bytes: 24564 * 1024 * 1024
                },
                Gpu {
                    model: "Tesla T4".into(),
                    memory_bytes: 15360 * 1024 * 1024
                },
            ]
        );
    }

    #[test]
    fn a_missing_nvidia_smi_means_no_gpus() {
        assert!(nvidia_gpus(Path::new("/nonexistent/nvidia-smi")).is_empty());
    }

    #[test]
    fn this_machine_has_at_least_one_core_and_some_memory() {
        let found = detect();
        assert!(found.cores >= 1);
        assert!(found.memory_bytes > 0);
    }
}
