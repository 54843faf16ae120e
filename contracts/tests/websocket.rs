//! The WebSocket contract's examples validate against its schemas, every
//! message type has an example, and a broken message does not validate.

use contracts::websocket::{examples, message_types, validate_message};
use serde_json::json;

#[test]
fn every_example_validates_and_every_type_has_one() {
    let examples = examples().expect("examples");
    let types = message_types().expect("schemas compile");
    assert!(types.len() >= 12, "{types:?}");
    for example in &examples {
        validate_message(example).unwrap_or_else(|e| panic!("{example}: {e}"));
    }
    for kind in &types {
        assert!(
            examples.iter().any(|e| e["type"] == kind.as_str()),
            "no example of `{kind}`"
        );
    }
}

#[test]
fn broken_messages_do_not_validate() {
    let examples = examples().expect("examples");
    let frame_done = examples
        .iter()
        .find(|e| e["type"] == "frame.done")
        .expect("a frame.done example")
        .clone();
    let mut no_position = frame_done.clone();
    no_position
        .as_object_mut()
        .expect("object")
        .remove("position");
    let mut extra = frame_done.clone();
    extra["secret"] = json!("x");
    let mut bad_id = frame_done.clone();
    bad_id["task_id"] = json!("task-1");
    for broken in [
        no_position,
        extra,
        bad_id,
        json!({"type": "nope"}),
        json!({}),
    ] {
        assert!(validate_message(&broken).is_err(), "{broken}");
    }
    let mut percent = examples
        .iter()
        .find(|e| e["type"] == "progress")
        .expect("a progress example")
        .clone();
    percent["percent"] = json!(101);
    assert!(validate_message(&percent).is_err());
}
