//! The reseller contract (`rest/reseller-api.openapi.yaml`): its worked
//! signing example agrees with the code, every tampered part of a request
//! is refused, and its operations are the public API's, with the same
//! parameters, bodies, answers and schemas.

use contracts::reseller_signing::{
    ApiKeySecret, SignatureError, SignedParts, canonical_request, content_sha256, sign_request,
    verify_request,
};
use serde_json::Value;

fn doc(text: &str) -> Value {
    serde_yaml::from_str(text).expect("an OpenAPI document parses")
}

fn reseller() -> Value {
    doc(contracts::reseller_api::OPENAPI)
}

fn public() -> Value {
    doc(contracts::gateway_public::OPENAPI)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string"))
}

fn example() -> Value {
    reseller()["x-signing"]["request-example"].clone()
}

fn parts(v: &Value) -> SignedParts<'_> {
    SignedParts {
        method: text(v, "method"),
        path: text(v, "path"),
        query: text(v, "query"),
        api_key: text(v, "api_key"),
        timestamp: v["timestamp"].as_i64().unwrap(),
        nonce: text(v, "nonce"),
        content_sha256: text(v, "content_sha256"),
    }
}

#[test]
fn the_worked_example_matches_the_code() {
    let ex = example();
    let secret = ApiKeySecret::parse(text(&ex, "secret")).unwrap();
    assert_eq!(
        content_sha256(text(&ex, "body").as_bytes()),
        text(&ex, "content_sha256")
    );
    assert_eq!(canonical_request(&parts(&ex)), text(&ex, "canonical"));
    assert_eq!(sign_request(&secret, &parts(&ex)), text(&ex, "signature"));
    let now = ex["timestamp"].as_i64().unwrap();
    assert_eq!(
        verify_request(&secret, &parts(&ex), text(&ex, "signature"), now),
        Ok(())
    );
    // The example's body is a valid submission of the public contract.
    let body: Value = serde_json::from_str(text(&ex, "body")).unwrap();
    contracts::gateway_public::validate_schema("SubmitRender", &body).unwrap();
}

/// A change to one signed part of a request.
type Mutation = Box<dyn Fn(&mut SignedParts<'_>)>;

#[test]
fn every_tampered_part_and_a_stale_time_are_refused() {
    let ex = example();
    let secret = ApiKeySecret::parse(text(&ex, "secret")).unwrap();
    let signature = text(&ex, "signature").to_string();
    let now = ex["timestamp"].as_i64().unwrap();
    let other_body: &'static str = Box::leak(content_sha256(b"{}").into_boxed_str());
    let mutations: Vec<Mutation> = vec![
        Box::new(|p| p.method = "GET"),
        Box::new(|p| p.path = "/v1/renders"),
        Box::new(|p| p.query = "a=1"),
        Box::new(|p| p.api_key = "0f1e2d3c-4b5a-4968-8776-655443322111"),
        Box::new(|p| p.timestamp += 1),
        Box::new(|p| p.nonce = "Zb3kP9qLm2Xc7VtS"),
        Box::new(move |p| p.content_sha256 = other_body),
    ];
    for (i, mutate) in mutations.iter().enumerate() {
        let mut p = parts(&ex);
        mutate(&mut p);
        assert_eq!(
            verify_request(&secret, &p, &signature, now),
            Err(SignatureError::BadSignature),
            "mutation {i} was accepted"
        );
    }
    let other = ApiKeySecret::from_random([9; 32]);
    assert_eq!(
        verify_request(&other, &parts(&ex), &signature, now),
        Err(SignatureError::BadSignature)
    );
    assert_eq!(
        verify_request(&secret, &parts(&ex), &signature, now + 301),
        Err(SignatureError::Stale)
    );
    assert!(matches!(
        verify_request(&secret, &parts(&ex), "v1=ABC", now),
        Err(SignatureError::Malformed(_))
    ));
    // The node contract's scheme over the same parts is another signature.
    let node_secret =
        contracts::node_signing::NodeSecret::from_bytes(text(&ex, "secret").as_bytes().to_vec())
            .unwrap();
    let p = parts(&ex);
    let node_signature = contracts::node_signing::sign_request(
        &node_secret,
        &contracts::node_signing::SignedParts {
            method: p.method,
            path: p.path,
            query: p.query,
            node_id: p.api_key,
            key_id: p.api_key,
            timestamp: p.timestamp,
            nonce: p.nonce,
            content_sha256: p.content_sha256,
        },
    );
    assert_eq!(
        verify_request(&secret, &p, &node_signature, now),
        Err(SignatureError::BadSignature)
    );
    assert!(ApiKeySecret::parse("frs_00").is_err());
    assert!(format!("{secret:?}").contains("redacted"));
    assert_eq!(secret.prefix(), "frs_00112233");
}

/// The public operation a reseller path stands for.
fn public_path(path: &str) -> String {
    path.replacen("/v1/reseller/", "/v1/", 1)
}

fn without(params: &Value, names: &[&str]) -> Vec<Value> {
    params
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !names.iter().any(|n| p["name"] == *n))
        .collect()
}

#[test]
fn every_operation_is_the_public_one_signed_and_scoped() {
    let (r, p) = (reseller(), public());
    let signing = ["ApiKey", "Timestamp", "Nonce", "ContentSha256", "Signature"];
    let scopes = [
        "renders:read",
        "renders:write",
        "files:read",
        "files:write",
        "billing:read",
    ];
    let mut count = 0;
    for (path, item) in r["paths"].as_object().unwrap() {
        assert!(path.starts_with("/v1/reseller/"), "{path}");
        for (method, op) in item.as_object().unwrap() {
            let id = text(op, "operationId");
            if id == "getOpenApi" {
                assert_eq!(op["security"], serde_json::json!([]));
                continue;
            }
            count += 1;
            assert_eq!(op["x-public-operation"], op["operationId"], "{id}");
            assert!(
                scopes.contains(&text(op, "x-scope")),
                "{id} has no known scope"
            );
            let public_op = &p["paths"][public_path(path)][method];
            assert_eq!(
                public_op["operationId"], op["operationId"],
                "{method} {path}"
            );
            assert_eq!(public_op["requestBody"], op["requestBody"], "{id} body");
            for (status, answer) in public_op["responses"].as_object().unwrap() {
                assert_eq!(&op["responses"][status], answer, "{id} {status}");
            }
            for status in ["400", "401", "403"] {
                assert!(op["responses"][status].is_object(), "{id} lacks {status}");
            }
            let refs: Vec<String> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["$ref"].as_str())
                .map(|r| r.rsplit('/').next().unwrap().to_string())
                .collect();
            for name in signing {
                assert!(refs.iter().any(|r| r == name), "{id} lacks {name}");
            }
            assert_eq!(
                method == "post",
                refs.iter().any(|r| r == "IdempotencyKey"),
                "{id}: Idempotency-Key on every POST and nowhere else"
            );
            // Every public parameter is there (but the operators' flag and
            // the optional Idempotency-Key, required here).
            let mine = op["parameters"].as_array().unwrap();
            for param in without(
                &public_op["parameters"],
                &["all_tenants", "Idempotency-Key"],
            ) {
                assert!(mine.contains(&param), "{id} lacks {param}");
            }
        }
    }
    assert!(count >= 20, "only {count} operations");
    for (name, schema) in r["components"]["schemas"].as_object().unwrap() {
        assert_eq!(
            &p["components"]["schemas"][name], schema,
            "schema {name} differs from the public one"
        );
    }
    for name in signing.iter().chain(&["IdempotencyKey"]) {
        let param = &r["components"]["parameters"][name];
        assert_eq!(param["in"], "header", "{name}");
        assert_eq!(param["required"], true, "{name}");
    }
    // The machinery reads it.
    assert!(contracts::reseller_api::operations().len() > count);
    assert!(contracts::reseller_api::operation("submitRender").is_some());
}
