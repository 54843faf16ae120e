//! The signing scheme in `rest/node-agent.openapi.yaml` and the code agree,
//! and every tampered part of a request is refused.

use contracts::node_signing::{
    NodeSecret, NonceCache, SignatureError, SignedParts, WINDOW_SECONDS, canonical_request,
    content_sha256, sign_assignment, sign_request, verify_assignment, verify_request,
};
use serde_json::Value;

const SPEC: &str = include_str!("../rest/node-agent.openapi.yaml");

fn spec() -> Value {
    serde_yaml::from_str(SPEC).expect("node-agent.openapi.yaml parses")
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string"))
}

struct Example {
    secret: NodeSecret,
    v: Value,
}

impl Example {
    fn load() -> Self {
        let v = spec()["x-signing"]["request-example"].clone();
        Self {
            secret: NodeSecret::from_hex(text(&v, "secret_hex")).unwrap(),
            v,
        }
    }

    fn parts(&self) -> SignedParts<'_> {
        SignedParts {
            method: text(&self.v, "method"),
            path: text(&self.v, "path"),
            query: text(&self.v, "query"),
            node_id: text(&self.v, "node_id"),
            key_id: text(&self.v, "key_id"),
            timestamp: self.v["timestamp"].as_i64().unwrap(),
            nonce: text(&self.v, "nonce"),
            content_sha256: text(&self.v, "content_sha256"),
        }
    }
}

#[test]
fn the_worked_request_example_matches_the_code() {
    let ex = Example::load();
    assert_eq!(
        content_sha256(text(&ex.v, "body").as_bytes()),
        text(&ex.v, "content_sha256")
    );
    assert_eq!(canonical_request(&ex.parts()), text(&ex.v, "canonical"));
    assert_eq!(
        sign_request(&ex.secret, &ex.parts()),
        text(&ex.v, "signature")
    );
    let now = ex.parts().timestamp;
    assert_eq!(
        verify_request(&ex.secret, &ex.parts(), text(&ex.v, "signature"), now),
        Ok(())
    );
}

/// A change to one signed part of a request.
type Mutation = Box<dyn Fn(&mut SignedParts<'_>)>;

#[test]
fn every_tampered_part_is_refused() {
    let ex = Example::load();
    let signature = text(&ex.v, "signature").to_string();
    let now = ex.parts().timestamp;
    let other_body: &'static str = Box::leak(content_sha256(b"{}").into_boxed_str());
    let mutations: Vec<Mutation> = vec![
        Box::new(|p| p.method = "GET"),
        Box::new(|p| p.path = "/v1/agent/claim/"),
        Box::new(|p| p.query = "wait_seconds=21"),
        Box::new(|p| p.query = ""),
        Box::new(|p| p.node_id = "8c5d1f5e-3b0a-4c55-9a53-0d6b6f1e2a78"),
        Box::new(|p| p.key_id = "2f6a8e1c-7d4b-4e0f-b1a2-5c3d9e8f7a62"),
        Box::new(|p| p.timestamp += 1),
        Box::new(|p| p.nonce = "q7Vw2c9XJmP4sL0aZr8TkR"),
        Box::new(move |p| p.content_sha256 = other_body),
    ];
    for (i, mutate) in mutations.iter().enumerate() {
        let mut parts = ex.parts();
        mutate(&mut parts);
        assert_eq!(
            verify_request(&ex.secret, &parts, &signature, now),
            Err(SignatureError::BadSignature),
            "mutation {i} was accepted"
        );
    }
    let wrong_secret = NodeSecret::from_bytes(vec![7; 32]).unwrap();
    assert_eq!(
        verify_request(&wrong_secret, &ex.parts(), &signature, now),
        Err(SignatureError::BadSignature)
    );
    // Query parameter order does not matter; their content does.
    let mut two = ex.parts();
    two.query = "wait_seconds=20&b=1";
    let signed_two = sign_request(&ex.secret, &two);
    let mut reordered = ex.parts();
    reordered.query = "b=1&wait_seconds=20";
    assert_eq!(
        verify_request(&ex.secret, &reordered, &signed_two, now),
        Ok(())
    );
    reordered.query = "b=2&wait_seconds=20";
    assert_eq!(
        verify_request(&ex.secret, &reordered, &signed_two, now),
        Err(SignatureError::BadSignature)
    );
}

#[test]
fn the_time_window_is_three_hundred_seconds_each_way() {
    let ex = Example::load();
    let signature = text(&ex.v, "signature");
    let t = ex.parts().timestamp;
    for now in [t - WINDOW_SECONDS, t, t + WINDOW_SECONDS] {
        assert_eq!(
            verify_request(&ex.secret, &ex.parts(), signature, now),
            Ok(())
        );
    }
    for now in [t - WINDOW_SECONDS - 1, t + WINDOW_SECONDS + 1] {
        assert_eq!(
            verify_request(&ex.secret, &ex.parts(), signature, now),
            Err(SignatureError::Stale)
        );
    }
}

#[test]
fn malformed_headers_are_refused_before_any_hmac() {
    let ex = Example::load();
    let now = ex.parts().timestamp;
    for bad in ["66ad79", "v2=66ad790b", "v1=zz", ""] {
        assert!(matches!(
            verify_request(&ex.secret, &ex.parts(), bad, now),
            Err(SignatureError::Malformed(_))
        ));
    }
    for nonce in ["short", "has space in it!!", &"n".repeat(129)] {
        let mut parts = ex.parts();
        parts.nonce = nonce;
        assert!(matches!(
            verify_request(&ex.secret, &parts, text(&ex.v, "signature"), now),
            Err(SignatureError::Malformed(_))
        ));
    }
    assert!(NodeSecret::from_hex("abcd").is_err());
    assert!(NodeSecret::from_hex("not hex at all").is_err());
}

/// The contract gives ids and hex in lower case; another spelling is
/// refused even when it is signed as sent (the signature covers the text).
#[test]
fn upper_case_ids_digests_and_signatures_are_refused_even_when_signed() {
    let ex = Example::load();
    let now = ex.parts().timestamp;
    let upper_signature = text(&ex.v, "signature").replace("v1=", "").to_uppercase();
    assert!(matches!(
        verify_request(
            &ex.secret,
            &ex.parts(),
            &format!("v1={upper_signature}"),
            now
        ),
        Err(SignatureError::Malformed(_))
    ));
    let node = text(&ex.v, "node_id").to_uppercase();
    let key = text(&ex.v, "key_id").to_uppercase();
    let digest = text(&ex.v, "content_sha256").to_uppercase();
    let simple = text(&ex.v, "node_id").replace('-', "");
    let braced = format!("{{{}}}", text(&ex.v, "node_id"));
    let spellings = [
        SignedParts {
            node_id: &node,
            ..ex.parts()
        },
        SignedParts {
            key_id: &key,
            ..ex.parts()
        },
        SignedParts {
            content_sha256: &digest,
            ..ex.parts()
        },
        SignedParts {
            node_id: &simple,
            ..ex.parts()
        },
        SignedParts {
            node_id: &braced,
            ..ex.parts()
        },
    ];
    for (i, parts) in spellings.iter().enumerate() {
        let signature = sign_request(&ex.secret, parts);
        assert!(
            matches!(
                verify_request(&ex.secret, parts, &signature, now),
                Err(SignatureError::Malformed(_))
            ),
            "spelling {i} was accepted"
        );
    }
}

#[test]
fn a_nonce_is_accepted_once_per_node_within_the_window() {
    let mut cache = NonceCache::default();
    let t = 1_795_000_000;
    assert_eq!(
        cache.check_and_insert("node-a", "nonce-0000000001", t, t),
        Ok(())
    );
    assert_eq!(
        cache.check_and_insert("node-a", "nonce-0000000001", t, t + 5),
        Err(SignatureError::Replay)
    );
    assert_eq!(
        cache.check_and_insert("node-b", "nonce-0000000001", t, t + 5),
        Ok(())
    );
    // Long after the window the entry is forgotten (the timestamp check refuses such replays).
    assert_eq!(
        cache.check_and_insert("node-a", "nonce-0000000002", t, t + 10 * WINDOW_SECONDS),
        Ok(())
    );
    assert_eq!(cache.len(), 1);
}

#[test]
fn the_worked_assignment_example_matches_and_tampering_is_found() {
    let ex = spec()["x-signing"]["assignment-example"].clone();
    let secret = NodeSecret::from_hex(text(&ex, "secret_hex")).unwrap();
    let assignment = ex["assignment"].clone();
    let expected_bytes = text(&ex, "signed_bytes");
    assert_eq!(
        format!(
            "{}\n{}",
            contracts::node_signing::ASSIGNMENT_SCHEME,
            contracts::node_signing::canonical_json(&assignment)
        ),
        expected_bytes
    );
    let signature = sign_assignment(&secret, &assignment);
    assert_eq!(signature, text(&ex, "orchestrator_signature"));
    let mut signed = assignment.clone();
    signed["orchestrator_signature"] = Value::String(signature.clone());
    assert_eq!(verify_assignment(&secret, &signed), Ok(()));
    // Signing ignores an existing signature field.
    assert_eq!(sign_assignment(&secret, &signed), signature);
    for (key, value) in [
        ("lease_epoch", serde_json::json!(4)),
        ("renderer", serde_json::json!("blender")),
        ("frames", serde_json::json!({ "start": 1, "end": 400 })),
    ] {
        let mut tampered = signed.clone();
        tampered[key] = value;
        assert_eq!(
            verify_assignment(&secret, &tampered),
            Err(SignatureError::BadSignature),
            "{key}"
        );
    }
    let mut unsigned = assignment;
    unsigned
        .as_object_mut()
        .unwrap()
        .remove("orchestrator_signature");
    assert!(matches!(
        verify_assignment(&secret, &unsigned),
        Err(SignatureError::Malformed(_))
    ));
}

#[test]
fn secrets_never_print() {
    let secret = NodeSecret::from_hex(&"ab".repeat(32)).unwrap();
    assert_eq!(format!("{secret:?}"), "NodeSecret(**redacted**)");
}

#[test]
fn the_spec_lists_every_agent_endpoint() {
    let spec = spec();
    for path in [
        "/v1/agent/register",
        "/v1/agent/heartbeat",
        "/v1/agent/claim",
        "/v1/agent/tasks/{task_id}/progress",
        "/v1/agent/tasks/{task_id}/complete",
        "/v1/agent/tasks/{task_id}/fail",
        "/v1/agent/tasks/{task_id}/release",
        "/v1/agent/files/{sha256}",
        "/v1/agent/outputs/{task_id}/{frame}",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} is missing");
    }
}
