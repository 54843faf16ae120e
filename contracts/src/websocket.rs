//! The WebSocket contract (`websocket/render-progress.md`): the schema of
//! each message type, read from the document's schemas block, and the
//! examples the document gives.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

/// The document.
pub const RENDER_PROGRESS: &str = include_str!("../websocket/render-progress.md");

/// The schemas block: `$defs` and one schema per message type.
fn schemas_block() -> Result<Value, String> {
    let start = RENDER_PROGRESS
        .find("<!-- schemas -->")
        .ok_or("no `<!-- schemas -->` marker")?;
    let rest = &RENDER_PROGRESS[start..];
    let open = rest
        .find("```yaml\n")
        .ok_or("no yaml block after the marker")?
        + 8;
    let close = rest[open..]
        .find("\n```")
        .ok_or("the yaml block is not closed")?;
    serde_yaml::from_str(&rest[open..open + close]).map_err(|e| format!("schemas: {e}"))
}

type Validators = BTreeMap<String, Result<jsonschema::Validator, String>>;

fn validators() -> &'static Result<Validators, String> {
    static VALIDATORS: OnceLock<Result<Validators, String>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let block = schemas_block()?;
        let defs = block.get("$defs").cloned().unwrap_or(Value::Null);
        let messages = block
            .get("messages")
            .and_then(Value::as_object)
            .ok_or("no `messages` in the schemas block")?;
        Ok(messages
            .iter()
            .map(|(name, schema)| {
                let mut schema = schema.clone();
                if let Some(object) = schema.as_object_mut() {
                    object.insert("$defs".into(), defs.clone());
                }
                let validator = jsonschema::draft202012::options()
                    .should_validate_formats(true)
                    .build(&schema)
                    .map_err(|e| format!("the schema of `{name}` does not compile: {e}"));
                (name.clone(), validator)
            })
            .collect())
    })
}

/// The message types the contract defines.
pub fn message_types() -> Result<Vec<String>, String> {
    validators()
        .as_ref()
        .map(|v| v.keys().cloned().collect())
        .map_err(Clone::clone)
}

/// Checks a message the server sends against the schema of its `type`.
pub fn validate_message(message: &Value) -> Result<(), String> {
    let validators = validators().as_ref().map_err(Clone::clone)?;
    let kind = message
        .get("type")
        .and_then(Value::as_str)
        .ok_or("a message without a string `type`")?;
    let validator = match validators.get(kind) {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(e.clone()),
        None => return Err(format!("no message type `{kind}` in the contract")),
    };
    let errors: Vec<String> = validator
        .iter_errors(message)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("`{kind}`: {}", errors.join("; ")))
    }
}

/// The JSON examples of the document, in order.
pub fn examples() -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let mut rest = RENDER_PROGRESS;
    while let Some(at) = rest.find("```json\n") {
        rest = &rest[at + 8..];
        let end = rest.find("\n```").ok_or("a json block is not closed")?;
        out.push(serde_json::from_str(&rest[..end]).map_err(|e| format!("an example: {e}"))?);
        rest = &rest[end..];
    }
    Ok(out)
}
