//! The catalog (`events/README.md`), the payload schemas (`events/*.yaml`)
//! and the Rust event types of `domain` agree (SPEC §1).

use std::collections::{BTreeMap, BTreeSet};

use contracts::{COMMON_TYPES, Catalog, EVENTS_README, catalog, split_routing_key};
use domain::{
    DomainEvent, FileEvent, IdentityEvent, NodeEvent, NotificationEvent, RenderJobEvent,
    TenantEvent, all_routing_keys, all_samples,
};
use serde_json::{Value, json};

/// A validator for a catalog schema, with `format` (uuid, date-time) checked.
fn validator(routing_key: &str) -> jsonschema::Validator {
    let schema = catalog()
        .schema(routing_key)
        .unwrap_or_else(|| panic!("no schema for {routing_key}"));
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("schema of {routing_key} does not compile: {e}"))
}

/// `(stream type, routing keys)` of every event enum.
fn enums() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        (TenantEvent::STREAM_TYPE, TenantEvent::ROUTING_KEYS),
        (RenderJobEvent::STREAM_TYPE, RenderJobEvent::ROUTING_KEYS),
        (NodeEvent::STREAM_TYPE, NodeEvent::ROUTING_KEYS),
        (FileEvent::STREAM_TYPE, FileEvent::ROUTING_KEYS),
        (IdentityEvent::STREAM_TYPE, IdentityEvent::ROUTING_KEYS),
        (
            NotificationEvent::STREAM_TYPE,
            NotificationEvent::ROUTING_KEYS,
        ),
    ]
}

#[test]
fn the_embedded_catalog_parses() {
    let catalog = Catalog::load().expect("catalog parses");
    assert!(catalog.entries().count() >= 40);
    for entry in catalog.entries() {
        assert!(
            !entry.emitted_by.is_empty(),
            "{}: no emitter",
            entry.routing_key
        );
        assert!(
            !entry.meaning.is_empty(),
            "{}: no meaning",
            entry.routing_key
        );
        assert!(contracts::DOMAINS.contains(&entry.domain.as_str()));
    }
}

#[test]
fn every_rust_event_has_exactly_one_row_and_a_schema() {
    let keys = all_routing_keys();
    let unique: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "a routing key is emitted by two variants"
    );
    for (stream_type, routing_keys) in enums() {
        for key in routing_keys {
            let rows = EVENTS_README
                .lines()
                .filter(|l| l.trim().starts_with(&format!("| `{key}` ")))
                .count();
            assert_eq!(
                rows, 1,
                "{key}: expected exactly one catalog row, found {rows}"
            );
            let entry = catalog().entry(key).expect("row");
            assert_eq!(
                entry.stream_type, stream_type,
                "{key}: catalog stream type differs from the Rust enum"
            );
            assert_eq!(domain::stream_type_of(key), Some(stream_type));
            assert!(
                catalog().schema(key).is_some(),
                "{key}: no schema in events/{}.yaml",
                entry.domain
            );
        }
    }
}

#[test]
fn every_row_is_emitted_by_a_rust_type() {
    let keys: BTreeSet<&str> = all_routing_keys().into_iter().collect();
    for entry in catalog().entries() {
        assert!(
            keys.contains(entry.routing_key.as_str()),
            "{}: no Rust event emits it",
            entry.routing_key
        );
    }
}

#[test]
fn every_schema_has_a_row_and_every_row_a_schema() {
    for (key, _) in catalog().schemas() {
        assert!(
            catalog().entry(key).is_some(),
            "schema {key} has no catalog row"
        );
    }
    for entry in catalog().entries() {
        assert!(
            catalog().schema(&entry.routing_key).is_some(),
            "{}: no schema",
            entry.routing_key
        );
    }
}

#[test]
fn every_routing_key_follows_the_naming_rule() {
    for entry in catalog().entries() {
        let (event_type, version) =
            split_routing_key(&entry.routing_key).expect("valid routing key");
        assert_eq!(event_type, entry.event_type);
        assert_eq!(version, entry.schema_version);
    }
    for key in all_routing_keys() {
        split_routing_key(key).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn schemas_are_valid_draft_2020_12_and_follow_the_conventions() {
    for (key, schema) in catalog().schemas() {
        jsonschema::meta::validate(schema)
            .unwrap_or_else(|e| panic!("{key}: not a valid JSON Schema: {e}"));
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{key}"
        );
        assert_eq!(schema["title"], key, "{key}: title must be the routing key");
        assert!(schema["description"].is_string(), "{key}: description");
        assert_eq!(schema["type"], "object", "{key}");
        assert_eq!(schema["additionalProperties"], false, "{key}");
        let properties: BTreeSet<&str> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .map(String::as_str)
            .collect();
        let mut required: BTreeSet<&str> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        // Properties added to a released event (`x-added`) are absent from
        // the events stored before them; every other one is required.
        let added: BTreeSet<&str> = schema["x-added"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            added.is_disjoint(&required),
            "{key}: an added property is not required"
        );
        required.extend(&added);
        assert_eq!(
            properties, required,
            "{key}: every property is required (optional ones are nullable) or listed in x-added"
        );
        for name in &properties {
            let prop = &schema["properties"][name];
            if name.ends_with("_minor") {
                assert!(
                    prop["minimum"].as_i64().is_some_and(|m| m >= 0),
                    "{key}.{name}: money is never negative"
                );
            }
            if name.ends_with("_at") {
                assert_eq!(prop["format"], "date-time", "{key}.{name}");
            }
            if name.ends_with("_id") {
                assert_eq!(prop["format"], "uuid", "{key}.{name}");
            }
        }
    }
}

/// Every sample of `E` validates against its schema, decodes back to itself,
/// and its event type and version match its catalog row.
fn check_samples<E: DomainEvent>() {
    let samples = E::samples();
    let covered: BTreeSet<&str> = samples.iter().map(DomainEvent::routing_key).collect();
    let declared: BTreeSet<&str> = E::ROUTING_KEYS.iter().copied().collect();
    assert_eq!(
        covered,
        declared,
        "{}: samples() must cover every variant",
        E::STREAM_TYPE
    );
    for event in samples {
        let key = event.routing_key();
        let payload = event.to_payload();
        if let Err(e) = validator(key).validate(&payload) {
            panic!(
                "sample of {key} does not match its schema: {e} at {}\n{payload:#}",
                e.instance_path()
            );
        }
        let decoded = E::from_payload(key, &payload).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded, event, "{key}: payload does not round-trip");
        let entry = catalog().entry(key).expect("row");
        assert_eq!(event.event_type(), entry.event_type);
        assert_eq!(event.schema_version(), entry.schema_version);
    }
}

#[test]
fn every_sample_payload_validates_and_round_trips() {
    check_samples::<TenantEvent>();
    check_samples::<RenderJobEvent>();
    check_samples::<NodeEvent>();
    check_samples::<FileEvent>();
    check_samples::<IdentityEvent>();
    check_samples::<NotificationEvent>();
}

#[test]
fn all_samples_lists_every_routing_key_once_with_its_stream_type() {
    let samples = all_samples();
    let by_key: BTreeMap<&str, &str> = samples
        .iter()
        .map(|(stream, key, _)| (*key, *stream))
        .collect();
    assert_eq!(by_key.len(), samples.len());
    assert_eq!(
        by_key.keys().copied().collect::<BTreeSet<_>>(),
        all_routing_keys().into_iter().collect()
    );
    for (stream_type, key, payload) in &samples {
        assert_eq!(&catalog().entry(key).expect("row").stream_type, stream_type);
        assert!(validator(key).is_valid(payload), "{key}");
        domain::check_payload(key, payload).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn the_schemas_reject_extra_missing_and_malformed_fields() {
    let key = "render.job.submitted.v1";
    let sample = all_samples()
        .into_iter()
        .find(|(_, k, _)| *k == key)
        .expect("sample")
        .2;
    let validator = validator(key);
    assert!(validator.is_valid(&sample));

    let mut extra = sample.clone();
    extra["command_line"] = json!("rm -rf /");
    assert!(
        !validator.is_valid(&extra),
        "an extra field must be rejected"
    );
    assert!(
        RenderJobEvent::from_payload(key, &extra).is_err(),
        "Rust also rejects the extra field"
    );

    let mut missing = sample.clone();
    missing.as_object_mut().expect("object").remove("tenant_id");
    assert!(
        !validator.is_valid(&missing),
        "a missing field must be rejected"
    );

    let mut bad_id = sample.clone();
    bad_id["job_id"] = json!("not-a-uuid");
    assert!(
        !validator.is_valid(&bad_id),
        "a malformed uuid must be rejected"
    );

    let mut bad_time = sample.clone();
    bad_time["submitted_at"] = json!("yesterday");
    assert!(
        !validator.is_valid(&bad_time),
        "a malformed timestamp must be rejected"
    );

    let mut nested = sample;
    nested["frames"]["step"] = json!(2);
    assert!(
        !validator.is_valid(&nested),
        "an extra nested field must be rejected"
    );

    let charged = "tenant.credit_charged.v1";
    let mut negative = all_samples()
        .into_iter()
        .find(|(_, k, _)| *k == charged)
        .expect("sample")
        .2;
    negative["balance_after_minor"] = json!(-1);
    assert!(
        !self::validator(charged).is_valid(&negative),
        "a negative balance must be rejected"
    );
}

#[test]
fn the_common_types_parse_and_describe_the_error_body() {
    let types: Value = serde_yaml::from_str(COMMON_TYPES).expect("common/types.yaml is YAML");
    let schemas = &types["components"]["schemas"];
    for name in [
        "Uuid",
        "Timestamp",
        "AmountMinor",
        "DurationSeconds",
        "SizeBytes",
        "Error",
        "PaginatedResponse",
    ] {
        assert!(schemas[name].is_object(), "common/types.yaml lacks {name}");
    }
    for name in ["Page", "PageSize"] {
        assert!(
            types["components"]["parameters"][name].is_object(),
            "common/types.yaml lacks parameter {name}"
        );
    }
    let error = jsonschema::draft202012::new(&schemas["Error"]).expect("Error compiles");
    let body = json!({"error": {"code": "not_found", "message": "job not found", "details": {}, "trace_id": "abc"}});
    assert!(error.is_valid(&body));
    assert!(!error.is_valid(&json!({"error": {"code": "not_found"}})));
    let page = jsonschema::draft202012::new(&schemas["PaginatedResponse"])
        .expect("PaginatedResponse compiles");
    assert!(page.is_valid(&json!({"items": [], "page": 1, "page_size": 20, "total": 0})));
    assert!(!page.is_valid(&json!({"items": [], "page": 0, "page_size": 20, "total": 0})));
}

#[test]
fn validate_payload_accepts_samples_and_explains_what_is_wrong() {
    for (_, key, payload) in domain::all_samples() {
        assert_eq!(contracts::validate_payload(key, &payload), Ok(()), "{key}");
    }
    let (_, key, mut payload) = domain::all_samples().remove(0);
    payload
        .as_object_mut()
        .unwrap()
        .insert("smuggled".into(), json!(1));
    let error = contracts::validate_payload(key, &payload).unwrap_err();
    assert!(error.contains("smuggled"), "{error}");
    assert!(contracts::validate_payload("render.job.teleported.v1", &json!({})).is_err());
}
