//! Canonical JSON: object keys sorted by byte order at every depth, no white
//! space, strings and numbers as `serde_json` writes them. What is hashed
//! (event digests) and what is signed (assignments) is written this way.

use serde_json::Value;

/// The canonical text of a JSON value.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    write(&mut out, value);
    // Only `serde_json`'s writer and ASCII punctuation went in: UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Writes `value` canonically. Keys and leaves are written by `serde_json`
/// straight into `out` (no intermediate strings); an object's entries are
/// sorted only when its map does not already iterate in key order (it does,
/// unless some dependency turns on `serde_json`'s `preserve_order`).
fn write(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push(b'{');
            for (i, (name, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                key(out, name);
                out.push(b':');
                write(out, item);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, item);
            }
            out.push(b']');
        }
        other => leaf(out, other),
    }
}

/// A key as `serde_json` writes strings.
fn key(out: &mut Vec<u8>, key: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, key);
}

/// A leaf value (string, number, bool, null) as `serde_json` writes it.
fn leaf(out: &mut Vec<u8>, value: &Value) {
    // Writing a leaf into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unicode_escapes_and_numbers_are_written_as_serde_json_writes_them() {
        let value = json!({"é": "ü\u{1}\n", "n": [1.5, -0.0, 12345678901234567890u64, 1e300]});
        assert_eq!(
            canonical_json(&value),
            format!(
                "{{\"n\":{},\"é\":{}}}",
                serde_json::to_string(&value["n"]).unwrap(),
                serde_json::to_string(&value["é"]).unwrap()
            )
        );
    }

    #[test]
    fn keys_are_sorted_at_every_depth_without_white_space() {
        let value = json!({"b": 1, "a": {"d": [true, null], "c": "x\"y"}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":"x\"y","d":[true,null]},"b":1}"#
        );
    }
}
