//! The node-agent contract as code (`contracts::node_agent`): the document's
//! schemas compile, its invalid examples are refused by its own schemas and
//! name documented statuses and codes, and what the Rust types write is what
//! the schemas allow.

use contracts::node_agent::{
    self, operation, operations, parse_query, request_body, validate_path_parameter,
    validate_response, validate_schema,
};
use domain::DomainEvent;
use serde_json::{Value, json};

fn error_body(code: &str) -> Vec<u8> {
    json!({ "error": { "code": code, "message": "m", "details": {}, "trace_id": "0".repeat(32) } })
        .to_string()
        .into_bytes()
}

#[test]
fn every_agent_endpoint_is_an_operation_with_an_id() {
    let mut ids: Vec<&str> = operations().iter().map(|o| o.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [
            "claim",
            "complete",
            "download",
            "fail",
            "heartbeat",
            "logs",
            "progress",
            "register",
            "release",
            "upload_output"
        ]
    );
    let (op, params) = node_agent::route(
        "POST",
        "/v1/agent/tasks/7e6d5c4b-3a29-4817-a6b5-c4d3e2f1a0b9/fail",
    )
    .unwrap();
    assert_eq!(op.id, "fail");
    assert_eq!(params["task_id"], "7e6d5c4b-3a29-4817-a6b5-c4d3e2f1a0b9");
    assert!(node_agent::route("GET", "/v1/agent/register").is_none());
    assert!(node_agent::route("POST", "/v1/agent/tasks//fail").is_none());
}

#[test]
fn every_schema_compiles_and_every_error_status_has_the_error_body() {
    let schemas = node_agent::document()["components"]["schemas"]
        .as_object()
        .unwrap();
    for name in schemas.keys() {
        if let Err(problems) = validate_schema(name, &Value::Null) {
            for p in problems {
                assert!(!p.message.contains("compile"), "{name}: {p:?}");
            }
        }
    }
    for op in operations() {
        let statuses = op.statuses();
        for status in [400, 401, 408, 413, 500, 503] {
            if status == 400 && op.id == "download" {
                continue;
            }
            assert!(statuses.contains(&status), "{} lacks {status}", op.id);
        }
        for status in statuses.iter().filter(|s| **s >= 400) {
            let result = validate_response(&op.id, *status, Some("application/json"), b"{}");
            let problems = result.expect_err("an empty object is no error body");
            assert!(
                problems.iter().all(|p| !p.message.contains("compile")),
                "{} {status}: {problems:?}",
                op.id
            );
            let mut wrong =
                json!({ "error": { "code": "x", "message": "m", "details": {}, "trace_id": "t" } });
            wrong["error"]["trace_id"] = json!("0".repeat(32));
            assert!(
                validate_response(
                    &op.id,
                    *status,
                    Some("application/json"),
                    wrong.to_string().as_bytes()
                )
                .is_err(),
                "{} {status} accepts any code",
                op.id
            );
        }
        assert!(
            validate_response(&op.id, 418, None, b"").is_err(),
            "an undocumented status passes"
        );
    }
}

/// The body an invalid example describes, as bytes.
fn example_body(example: &Value) -> Option<Vec<u8>> {
    if let Some(raw) = example["raw"].as_str() {
        return Some(raw.as_bytes().to_vec());
    }
    let mut body = example.get("body")?.clone();
    if let Some(fill) = example.get("fill") {
        let text = fill["char"]
            .as_str()
            .unwrap()
            .repeat(fill["length"].as_u64().unwrap() as usize);
        *body.pointer_mut(fill["pointer"].as_str().unwrap()).unwrap() = json!(text);
    }
    Some(body.to_string().into_bytes())
}

#[test]
fn every_invalid_example_is_refused_by_the_contract_itself_with_a_documented_code() {
    let mut count = 0;
    for op in operations() {
        let examples = op.spec()["x-invalid-examples"]
            .as_array()
            .unwrap_or_else(|| panic!("{} has no x-invalid-examples", op.id));
        assert!(!examples.is_empty(), "{}", op.id);
        for example in examples {
            count += 1;
            let what = format!("{} / {}", op.id, example["summary"]);
            let status = example["status"].as_u64().unwrap() as u16;
            let code = example["code"].as_str().unwrap();
            assert_eq!(
                validate_response(&op.id, status, Some("application/json"), &error_body(code)),
                Ok(()),
                "{what}: {status} {code} is not documented"
            );
            let query = example["query"].as_str();
            match code {
                "invalid_body" => {
                    let body = example_body(example).expect("a body");
                    let problems = request_body(&op.id, &body)
                        .expect_err(&format!("{what}: the schema accepts it"));
                    for p in &problems {
                        assert!(!p.message.is_empty());
                        assert!(!p.message.contains("Some("), "{what}: {p:?}");
                    }
                }
                "invalid_query" => {
                    parse_query(&op.id, query).expect_err(&format!("{what}: the query passes"));
                }
                "payload_too_large" => {
                    let body = example_body(example).expect("a body");
                    assert!(body.len() > 1024 * 1024, "{what}: not over 1 MiB");
                }
                _ => {
                    if let Some(body) = example_body(example)
                        && !body.is_empty()
                        && example.get("png").is_none()
                    {
                        request_body(&op.id, &body).unwrap_or_else(|p| {
                            panic!("{what}: its body should pass the schema: {p:?}")
                        });
                    }
                    if example.get("png").is_none() {
                        parse_query(&op.id, query)
                            .unwrap_or_else(|p| panic!("{what}: its query should pass: {p:?}"));
                    }
                }
            }
        }
    }
    assert!(count >= 40, "only {count} invalid examples");
}

#[test]
fn problems_name_the_field_in_words_without_echoing_the_value() {
    let body = json!({
        "cores": 8, "memory_bytes": 1, "gpus": [], "renderers": [{ "name": "builtin", "version": "1" }],
        "tags": ["ok", "Not An Identifier"], "node_class": "standard",
    });
    let problems = validate_schema("Capabilities", &body).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "/tags/1");
    assert!(
        problems[0].message.starts_with("`tags/1` does not match"),
        "{}",
        problems[0].message
    );
    assert!(!problems[0].message.contains("Not An Identifier"));
    let array = request_body("register", b"[8, 1]").unwrap_err();
    assert_eq!(array[0].field, "");
    assert_eq!(array[0].message, "the body is not of type \"object\"");
    let missing = request_body("register", br#"{"cores": 8}"#).unwrap_err();
    assert!(
        missing
            .iter()
            .any(|p| p.message == "\"node_class\" is a required property"),
        "{missing:?}"
    );
    let huge = format!("[{}]", vec!["1"; 100_000].join(","));
    let problems = request_body("heartbeat", huge.as_bytes()).unwrap_err();
    assert!(problems.iter().all(|p| p.message.chars().count() <= 301));
}

/// Whether a frame comes with its output is the server's to say (422
/// `invalid_output`, after the lease: `api/tests/api/refusals.rs`); the
/// schema bounds each field.
#[test]
fn progress_fields_are_bounded_and_a_frame_s_output_is_left_to_the_server() {
    let id = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";
    for ok in [
        json!({ "lease_epoch": 1 }),
        json!({ "lease_epoch": 1, "frame": null, "output_file_id": null }),
        json!({ "lease_epoch": 1, "frame": 0, "output_file_id": id }),
        json!({ "lease_epoch": 4_294_967_295u64, "frame": 4_294_967_295u64, "output_file_id": id }),
        json!({ "lease_epoch": 1, "frame": 3 }),
        json!({ "lease_epoch": 1, "output_file_id": id }),
    ] {
        assert_eq!(
            node_agent::validate_request("progress", &ok),
            Ok(()),
            "{ok}"
        );
    }
    for bad in [
        json!({ "lease_epoch": 0 }),
        json!({ "lease_epoch": 4_294_967_296u64 }),
        json!({ "lease_epoch": 1, "frame": 4_294_967_296u64, "output_file_id": id }),
        json!({ "lease_epoch": 1, "frame": -1 }),
        json!({ "lease_epoch": 1, "frame": 1, "output_file_id": id.to_uppercase().replace('-', "") }),
        json!({ "lease_epoch": 1, "error": "boom" }),
    ] {
        assert!(
            node_agent::validate_request("progress", &bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn whole_numbers_written_with_a_fraction_are_integers() {
    assert_eq!(
        request_body("complete", br#"{"lease_epoch": 3.0}"#),
        Ok(json!({ "lease_epoch": 3 }))
    );
    assert_eq!(
        request_body("complete", br#"{"lease_epoch": 3}"#).unwrap()["lease_epoch"].as_u64(),
        Some(3)
    );
    assert!(request_body("complete", br#"{"lease_epoch": 3.5}"#).is_err());
    assert_eq!(
        request_body("heartbeat", b""),
        Ok(json!({})),
        "an empty heartbeat is no leases"
    );
    assert!(request_body("claim", b"{}").is_err(), "a claim has no body");
    assert_eq!(request_body("claim", b""), Ok(Value::Null));
}

#[test]
fn queries_and_path_parameters_are_bounded_as_documented() {
    assert_eq!(parse_query("claim", None).unwrap().len(), 0);
    assert_eq!(
        parse_query("claim", Some("wait_seconds=30")).unwrap()["wait_seconds"],
        json!(30)
    );
    assert_eq!(
        parse_query("claim", Some("&wait_seconds=0&")).unwrap()["wait_seconds"],
        json!(0)
    );
    for bad in [
        "wait_seconds=31",
        "wait_seconds=-1",
        "wait_seconds=",
        "wait_seconds=1e1",
        "wait_seconds=99999999999999999999999",
        "wait_seconds=1&wait_seconds=1",
        "max=1",
        "wait_seconds=%zz",
    ] {
        let problems = parse_query("claim", Some(bad)).expect_err(bad);
        assert!(!problems[0].message.is_empty());
    }
    assert!(parse_query("upload_output", None).is_err());
    assert!(parse_query("upload_output", Some("lease_epoch=0")).is_err());
    assert!(parse_query("upload_output", Some("lease_epoch=4294967296")).is_err());
    assert_eq!(
        parse_query("upload_output", Some("lease_epoch=4294967295")).unwrap()["lease_epoch"],
        json!(4_294_967_295u64)
    );
    let task = "7e6d5c4b-3a29-4817-a6b5-c4d3e2f1a0b9";
    assert_eq!(validate_path_parameter("progress", "task_id", task), Ok(()));
    assert!(validate_path_parameter("progress", "task_id", "task-1").is_err());
    assert_eq!(
        validate_path_parameter("upload_output", "frame", "0"),
        Ok(())
    );
    assert!(validate_path_parameter("upload_output", "frame", "-1").is_err());
    assert!(validate_path_parameter("download", "sha256", &"A".repeat(64)).is_err());
}

#[test]
fn what_the_rust_types_write_is_what_the_schemas_allow() {
    // The capabilities of every node sample event.
    let mut checked = 0;
    for event in domain::NodeEvent::samples() {
        let payload = event.to_payload();
        if let Some(capabilities) = payload.get("capabilities") {
            assert_eq!(
                validate_schema("Capabilities", capabilities),
                Ok(()),
                "{capabilities}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
    // The worked assignment example, signed.
    let example = &node_agent::document()["x-signing"]["assignment-example"];
    let mut assignment = example["assignment"].clone();
    assignment["orchestrator_signature"] = example["orchestrator_signature"].clone();
    assert_eq!(validate_schema("Assignment", &assignment), Ok(()));
    assignment["params"] = json!({});
    assert_eq!(validate_schema("Assignment", &assignment), Ok(()));
    assignment["params"] = json!({ "width": 320 });
    assert!(validate_schema("Assignment", &assignment).is_err());
    assert!(operation("claim").is_some());
}
