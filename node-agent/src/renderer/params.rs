//! Typed render parameters and the checks every renderer applies to them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::RenderError;

/// The largest image side any renderer accepts, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// The most samples per pixel any renderer accepts.
pub const MAX_SAMPLES: u32 = 16_384;
/// The most named options a job may carry.
pub const MAX_OPTIONS: usize = 16;
/// The longest option key or value, in bytes.
pub const MAX_TOKEN_LEN: usize = 64;
/// The highest frame number (Blender's own limit).
pub const MAX_FRAME: u32 = 1_048_574;

/// The output size of a frame in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    /// Width in pixels, `1..=MAX_SIDE` (a renderer may allow less).
    pub width: u32,
    /// Height in pixels, `1..=MAX_SIDE` (a renderer may allow less).
    pub height: u32,
}

/// What a job may ask of a renderer: typed values only, never a command
/// line. Every field is optional; a renderer falls back to the scene's own
/// settings. [`Renderer::validate`](super::Renderer::validate) rejects
/// anything out of bounds before anything runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderParams {
    /// Output resolution, overriding the scene's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Samples per pixel, overriding the scene's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u32>,
    /// Renderer-specific named options (for example Blender's
    /// `cycles_device = "CPU"`). Keys and values are short tokens of
    /// `[A-Za-z0-9_.-]` (no `..`, not starting with `-` or `.`); each renderer
    /// accepts only the keys and values it knows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl RenderParams {
    /// The checks every renderer applies: sides in `1..=max_side`, samples in
    /// `1..=max_samples`, at most [`MAX_OPTIONS`] options, every key one of
    /// `allowed_options` and every key and value a safe token.
    pub fn check(
        &self,
        max_side: u32,
        max_samples: u32,
        allowed_options: &[&str],
    ) -> Result<(), RenderError> {
        if let Some(r) = self.resolution {
            for (side, v) in [("width", r.width), ("height", r.height)] {
                if v == 0 || v > max_side.min(MAX_SIDE) {
                    return Err(RenderError::invalid(format!(
                        "resolution {side} {v} is outside 1..={}",
                        max_side.min(MAX_SIDE)
                    )));
                }
            }
        }
        if let Some(s) = self.samples
            && (s == 0 || s > max_samples.min(MAX_SAMPLES))
        {
            return Err(RenderError::invalid(format!(
                "samples {s} is outside 1..={}",
                max_samples.min(MAX_SAMPLES)
            )));
        }
        if self.options.len() > MAX_OPTIONS {
            return Err(RenderError::invalid(format!(
                "{} options given, at most {MAX_OPTIONS} allowed",
                self.options.len()
            )));
        }
        for (key, value) in &self.options {
            check_token("option name", key)?;
            check_token("option value", value)?;
            if !allowed_options.contains(&key.as_str()) {
                return Err(RenderError::invalid(format!(
                    "option {key:?} is not known to this renderer"
                )));
            }
        }
        Ok(())
    }

    /// The value of a named option, if given.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }
}

/// Accepts only a short token of ASCII letters, digits, `_`, `-` and `.`,
/// not empty, not starting with `-` or `.`, without `..`: no shell
/// metacharacters, no spaces, no path separators, no traversal.
pub fn check_token(what: &str, value: &str) -> Result<(), RenderError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_TOKEN_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !value.starts_with(['-', '.'])
        && !value.contains("..");
    if ok {
        Ok(())
    } else {
        Err(RenderError::invalid(format!(
            "{what} {:?} is not a token of [A-Za-z0-9_.-] (at most {MAX_TOKEN_LEN} bytes, no '..', not starting with '-' or '.')",
            truncate(value, MAX_TOKEN_LEN)
        )))
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        for ok in ["CPU", "cycles_device", "v3.4", "a-b"] {
            assert!(check_token("t", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "; rm -rf /",
            "$(touch x)",
            "`id`",
            "../../etc/passwd",
            "a/b",
            "a b",
            "-x",
            ".hidden",
            "a..b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(check_token("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bounds() {
        let p = RenderParams {
            resolution: Some(Resolution {
                width: 0,
                height: 10,
            }),
            ..Default::default()
        };
        assert!(p.check(100, 10, &[]).is_err());
        let p = RenderParams {
            samples: Some(11),
            ..Default::default()
        };
        assert!(p.check(100, 10, &[]).is_err());
        let p = RenderParams {
            samples: Some(10),
            resolution: Some(Resolution {
                width: 100,
                height: 1,
            }),
            ..Default::default()
        };
        assert!(p.check(100, 10, &[]).is_ok());
        assert!(truncate("héllo", 2) == "h");
    }
}
