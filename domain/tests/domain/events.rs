//! Event enums: routing keys, event types and payload encoding.

use std::collections::BTreeSet;

use domain::*;
use serde_json::json;

fn check<E: DomainEvent>() {
    let samples = E::samples();
    assert_eq!(
        samples.len(),
        E::ROUTING_KEYS.len(),
        "{}: one sample per variant",
        E::STREAM_TYPE
    );
    for event in samples {
        let key = event.routing_key();
        assert!(E::ROUTING_KEYS.contains(&key));
        assert_eq!(
            format!("{}.v{}", event.event_type(), event.schema_version()),
            key
        );
        let payload = event.to_payload();
        assert!(
            payload.is_object(),
            "{key}: payload is an object, not tagged"
        );
        assert!(payload.get(key).is_none());
        assert_eq!(
            E::from_payload(key, &payload).unwrap(),
            event,
            "{key}: round trip"
        );
        check_payload(key, &payload).unwrap();
    }
    assert!(matches!(
        E::from_payload("render.nothing.v1", &json!({})),
        Err(EventDecodeError::UnknownRoutingKey(_))
    ));
}

#[test]
fn every_enum_encodes_and_decodes_its_samples() {
    check::<TenantEvent>();
    check::<RenderJobEvent>();
    check::<NodeEvent>();
    check::<FileEvent>();
    check::<IdentityEvent>();
    check::<NotificationEvent>();
}

#[test]
fn routing_keys_are_unique_and_prefixed_by_their_domain() {
    let keys = all_routing_keys();
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), keys.len());
    for key in &keys {
        let domain = key.split('.').next().unwrap();
        assert!(
            [
                "render",
                "node",
                "file",
                "tenant",
                "identity",
                "notification"
            ]
            .contains(&domain),
            "{key}"
        );
        assert!(key.ends_with(".v1"));
        assert!(stream_type_of(key).is_some());
    }
    assert_eq!(all_samples().len(), keys.len());
}

#[test]
fn payloads_name_their_tenant() {
    for event in RenderJobEvent::samples() {
        assert!(event.tenant_id().is_some(), "{}", event.routing_key());
    }
    for event in TenantEvent::samples() {
        assert!(event.tenant_id().is_some());
    }
    let online = NodeEvent::samples()
        .into_iter()
        .find(|e| e.routing_key() == "node.online.v1")
        .unwrap();
    assert_eq!(online.tenant_id(), None, "nodes belong to the farm");
}

#[test]
fn a_wrong_payload_is_a_decode_error() {
    let err =
        TenantEvent::from_payload("tenant.created.v1", &json!({"tenant_id": "x"})).unwrap_err();
    assert!(matches!(err, EventDecodeError::Payload { .. }));
}

#[test]
fn secrets_never_appear_in_payloads() {
    for (_, key, payload) in all_samples() {
        let text = payload.to_string();
        for word in ["\"secret\"", "\"api_key\"", "\"password\"", "\"token\""] {
            assert!(!text.contains(word), "{key} carries {word}");
        }
    }
}

#[test]
fn events_know_their_stream() {
    for event in RenderJobEvent::samples() {
        let job_id = event.to_payload()["job_id"].as_str().unwrap().to_string();
        assert_eq!(event.stream_id().to_string(), job_id);
    }
    for event in NotificationEvent::samples() {
        let endpoint_id = event.to_payload()["endpoint_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(event.stream_id().to_string(), endpoint_id);
    }
    let user = IdentityEvent::samples().remove(0);
    assert_eq!(
        user.stream_id().to_string(),
        user.to_payload()["user_id"].as_str().unwrap()
    );
}

#[test]
fn errors_have_stable_codes() {
    let e = DomainError::StaleLease {
        task_id: crate::fixtures::task_id(0),
        presented: 1,
        current: Some(2),
    };
    assert_eq!(e.code(), "stale_lease");
    assert!(e.to_string().contains("no longer yours"));
    assert!(e.to_string().contains("epoch 2"));
    // Messages are for people: no Rust debug formatting.
    let none = DomainError::StaleLease {
        task_id: crate::fixtures::task_id(0),
        presented: 1,
        current: None,
    };
    for e in [e, none] {
        let text = e.to_string();
        assert!(!text.contains("Some(") && !text.contains("None"), "{text}");
    }
    let e: DomainError = ValidationError::new("priority", "too high").into();
    assert_eq!(
        (e.code(), e.to_string().as_str()),
        ("validation_failed", "invalid priority: too high")
    );
}
