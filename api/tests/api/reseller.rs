//! The reseller API as a reseller's client written from
//! `contracts/rest/reseller-api.openapi.yaml` alone would use it: keys
//! issued over the public API, every request signed by hand from the
//! contract's canonical form, the same renders and files as the public
//! API for the key's tenant; and every way a request can be wrong —
//! signature, replay, time, revoked key (on another instance too), scope,
//! another tenant's ids, a body that is not the signed one, a retried or
//! reused `Idempotency-Key` — refused with the contract's error body and
//! nothing appended.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hmac::{KeyInit, Mac};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use uuid::Uuid;

use crate::public::{Api, admin, render_body};

/// A reseller's key as `POST /v1/api-keys` answered it.
#[derive(Clone)]
struct Key {
    id: String,
    secret: String,
}

/// One request as the client builds it.
struct Call<'a> {
    method: &'a str,
    path_and_query: String,
    body: Vec<u8>,
    content_type: Option<&'a str>,
    idempotency_key: Option<String>,
    timestamp: i64,
    nonce: String,
}

impl<'a> Call<'a> {
    fn new(method: &'a str, path_and_query: impl Into<String>) -> Self {
        Self {
            method,
            path_and_query: path_and_query.into(),
            body: Vec::new(),
            content_type: None,
            idempotency_key: (method == "POST").then(|| Uuid::new_v4().to_string()),
            timestamp: chrono::Utc::now().timestamp(),
            nonce: Uuid::new_v4().simple().to_string(),
        }
    }

    fn json(mut self, body: &Value) -> Self {
        self.body = body.to_string().into_bytes();
        self.content_type = Some("application/json");
        self
    }

    fn bytes(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self.content_type = Some("application/octet-stream");
        self
    }

    fn key(mut self, key: &str) -> Self {
        self.idempotency_key = Some(key.to_string());
        self
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The contract's "Signing a request", step by step.
fn signature(key: &Key, call: &Call<'_>, body_sha256: &str) -> String {
    let (path, query) = call
        .path_and_query
        .split_once('?')
        .unwrap_or((&call.path_and_query, ""));
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    params.sort();
    let canonical = [
        "FLATRENDER-RESELLER-HMAC-SHA256-V1".to_string(),
        call.method.to_uppercase(),
        path.to_string(),
        params.join("&"),
        key.id.clone(),
        call.timestamp.to_string(),
        call.nonce.clone(),
        body_sha256.to_string(),
    ]
    .join("\n");
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key.secret.as_bytes()).unwrap();
    mac.update(canonical.as_bytes());
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The request, signed by `key`; `tamper` may change it after signing.
fn signed(key: &Key, call: &Call<'_>, tamper: impl FnOnce(&mut Request<Body>)) -> Request<Body> {
    let digest = hex_sha256(&call.body);
    let mut builder = Request::builder()
        .method(call.method)
        .uri(&call.path_and_query)
        .header("x-api-key", &key.id)
        .header("x-flatrender-timestamp", call.timestamp.to_string())
        .header("x-flatrender-nonce", &call.nonce)
        .header("x-flatrender-content-sha256", &digest)
        .header("x-flatrender-signature", signature(key, call, &digest));
    if let Some(c) = call.content_type {
        builder = builder.header("content-type", c);
    }
    if let Some(k) = &call.idempotency_key {
        builder = builder.header("idempotency-key", k);
    }
    let mut request = builder.body(Body::from(call.body.clone())).unwrap();
    tamper(&mut request);
    request
}

async fn send(state: &api::AppState, request: Request<Body>) -> (StatusCode, Value, Vec<u8>) {
    let response = api::router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        bytes,
    )
}

/// A key for an admin of `tenant`, issued over the public API.
async fn issue(api: &Api, tenant: Uuid, scopes: &[&str]) -> (Key, String) {
    let (_, token) = admin(api, tenant).await;
    let request = Request::post("/v1/api-keys")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({ "scopes": scopes }).to_string()))
        .unwrap();
    let (status, body, _) = send(&api.state, request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = Key {
        id: body["id"].as_str().unwrap().to_string(),
        secret: body["secret"].as_str().unwrap().to_string(),
    };
    assert!(
        key.secret
            .starts_with(&body["prefix"].as_str().unwrap().to_string())
    );
    (key, token)
}

const ALL: [&str; 5] = [
    "renders:read",
    "renders:write",
    "files:read",
    "files:write",
    "billing:read",
];

fn assert_refused(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["trace_id"].is_string(), "{body}");
}

async fn upload_scene(api: &Api, key: &Key) -> String {
    let call = Call::new("POST", "/v1/reseller/files?name=demo.json")
        .bytes(node_agent::renderer::builtin::DEMO_SCENE.as_bytes());
    let (status, body, _) = send(&api.state, signed(key, &call, |_| {})).await;
    assert!(status.is_success(), "{status} {body}");
    body["id"].as_str().unwrap().to_string()
}

/// The documented operations answer as documented, the events of a
/// reseller's render name its key as their actor and never its secret,
/// and the secret is nowhere in the log.
#[tokio::test]
async fn a_client_written_from_the_contract_uploads_submits_follows_and_controls() {
    let api = Api::new().await;
    let (key, _) = issue(&api, api.a, &ALL).await;
    let scene = upload_scene(&api, &key).await;
    let submit = Call::new("POST", "/v1/reseller/renders").json(&render_body(&scene));
    let (status, render, _) = send(&api.state, signed(&key, &submit, |_| {})).await;
    assert_eq!(status, StatusCode::CREATED, "{render}");
    let render_id = render["id"].as_str().unwrap().to_string();
    api.catch_up().await;
    let cases: Vec<(&str, Call<'_>)> = vec![
        (
            "getFile",
            Call::new("GET", format!("/v1/reseller/files/{scene}")),
        ),
        (
            "downloadFile",
            Call::new("GET", format!("/v1/reseller/files/{scene}/content")),
        ),
        (
            "listRenders",
            Call::new("GET", "/v1/reseller/renders?page_size=5&page=1"),
        ),
        (
            "getRender",
            Call::new("GET", format!("/v1/reseller/renders/{render_id}")),
        ),
        (
            "listRenderTasks",
            Call::new("GET", format!("/v1/reseller/renders/{render_id}/tasks")),
        ),
        (
            "listRenderEvents",
            Call::new("GET", format!("/v1/reseller/renders/{render_id}/events")),
        ),
        (
            "listRenderFrames",
            Call::new("GET", format!("/v1/reseller/renders/{render_id}/frames")),
        ),
        ("getTenant", Call::new("GET", "/v1/reseller/tenant")),
        (
            "getTenantUsage",
            Call::new("GET", "/v1/reseller/tenant/usage"),
        ),
        (
            "changeRenderPriority",
            Call::new("POST", format!("/v1/reseller/renders/{render_id}/priority"))
                .json(&json!({ "priority": 80 })),
        ),
        (
            "pauseRender",
            Call::new("POST", format!("/v1/reseller/renders/{render_id}/pause")),
        ),
        (
            "resumeRender",
            Call::new("POST", format!("/v1/reseller/renders/{render_id}/resume")),
        ),
        (
            "cancelRender",
            Call::new("POST", format!("/v1/reseller/renders/{render_id}/cancel")),
        ),
        (
            "retryRender",
            Call::new("POST", format!("/v1/reseller/renders/{render_id}/retry")),
        ),
        (
            "getRenderFrame",
            Call::new("GET", format!("/v1/reseller/renders/{render_id}/frames/1")),
        ),
        (
            "getRenderArchive",
            Call::new("GET", format!("/v1/reseller/renders/{render_id}/archive")),
        ),
    ];
    for (op, call) in &cases {
        let response = api::router(api.state.clone())
            .oneshot(signed(&key, call, |_| {}))
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        if let Err(problems) =
            contracts::reseller_api::validate_response(op, status, content_type.as_deref(), &bytes)
        {
            panic!(
                "{op} answered {status} off contract: {}\n{}",
                contracts::reseller_api::describe(&problems),
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // What a reseller sees is what the public API shows the tenant.
    api.catch_up().await;
    let (_, via_public) = api
        .call(api.a, "GET", &format!("/v1/renders/{render_id}"), None)
        .await;
    let (_, via_reseller, _) = send(
        &api.state,
        signed(
            &key,
            &Call::new("GET", format!("/v1/reseller/renders/{render_id}")),
            |_| {},
        ),
    )
    .await;
    assert_eq!(via_public, via_reseller);
    assert_eq!(via_public["status"], "cancelled");
    // The render's own events are the key's doing; the secret is nowhere.
    let log = crate::log(&api.state.store).await;
    let render_uuid = Uuid::parse_str(&render_id).unwrap();
    let mine: Vec<_> = log.iter().filter(|e| e.stream_id == render_uuid).collect();
    assert!(mine.len() >= 5);
    for e in &mine {
        assert_eq!(
            e.metadata["actor"],
            json!({ "kind": "api_key", "id": key.id }),
            "{}",
            e.event_type
        );
    }
    let hex_secret = key.secret.trim_start_matches("frs_");
    for e in &log {
        let text = serde_json::to_string(&e.payload).unwrap();
        assert!(
            !text.contains(hex_secret),
            "the secret is in {}",
            e.event_type
        );
    }
    let issued = log
        .iter()
        .find(|e| e.event_type == "identity.api_key.issued" && e.payload["api_key_id"] == key.id)
        .unwrap();
    assert_eq!(
        issued.payload["key_hash"],
        hex_sha256(key.secret.as_bytes())
    );
    assert_eq!(
        issued.metadata["actor"],
        json!({ "kind": "user", "id": issued.payload["user_id"] })
    );
}

/// Every bad request: the contract's error body, nothing appended.
#[tokio::test]
async fn every_bad_request_is_refused_and_appends_nothing() {
    let api = Api::new().await;
    let (key, token) = issue(&api, api.a, &ALL).await;
    let (reader, _) = issue(&api, api.a, &["renders:read"]).await;
    let (other_tenant, _) = issue(&api, api.b, &ALL).await;
    let scene = upload_scene(&api, &key).await;
    let (_, render, _) = send(
        &api.state,
        signed(
            &key,
            &Call::new("POST", "/v1/reseller/renders").json(&render_body(&scene)),
            |_| {},
        ),
    )
    .await;
    let render_id = render["id"].as_str().unwrap().to_string();
    let submit = || Call::new("POST", "/v1/reseller/renders").json(&render_body(&scene));
    let before = api.events().await;
    let unauthorized = StatusCode::UNAUTHORIZED;
    // A wrong signature: another secret, a changed body, a changed path.
    let wrong = Key {
        id: key.id.clone(),
        secret: format!("frs_{}", "0".repeat(64)),
    };
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "another secret",
            signed(&wrong, &submit(), |_| {}),
            unauthorized,
            "unauthorized",
        ),
        (
            "a body that is not the signed one",
            signed(&key, &submit(), |r| {
                *r.body_mut() = Body::from(
                    render_body(&scene)
                        .to_string()
                        .replace("\"end\":6", "\"end\":7"),
                );
            }),
            unauthorized,
            "unauthorized",
        ),
        (
            "an upload that is not the signed one",
            {
                let call = Call::new("POST", "/v1/reseller/files?name=demo.json")
                    .bytes(node_agent::renderer::builtin::DEMO_SCENE.as_bytes());
                signed(&key, &call, |r| {
                    let mut other = node_agent::renderer::builtin::DEMO_SCENE
                        .as_bytes()
                        .to_vec();
                    other.push(b' ');
                    *r.body_mut() = Body::from(other);
                })
            },
            unauthorized,
            "unauthorized",
        ),
        (
            "a signature for another path",
            signed(&key, &submit(), |r| {
                *r.uri_mut() = "/v1/reseller/renders?x=1".parse().unwrap();
            }),
            unauthorized,
            "unauthorized",
        ),
        (
            "a stale timestamp",
            signed(
                &key,
                &Call {
                    timestamp: chrono::Utc::now().timestamp() - 301,
                    ..submit()
                },
                |_| {},
            ),
            unauthorized,
            "unauthorized",
        ),
        (
            "a timestamp from the future",
            signed(
                &key,
                &Call {
                    // Well past the 300 s window: the case is sent after the
                    // ones before it, and a margin of one second raced the clock.
                    timestamp: chrono::Utc::now().timestamp() + 360,
                    ..submit()
                },
                |_| {},
            ),
            unauthorized,
            "unauthorized",
        ),
        (
            "an unknown key",
            signed(
                &Key {
                    id: Uuid::new_v4().to_string(),
                    secret: key.secret.clone(),
                },
                &submit(),
                |_| {},
            ),
            unauthorized,
            "unauthorized",
        ),
        (
            "no signing headers",
            Request::post("/v1/reseller/renders")
                .header("content-type", "application/json")
                .header("idempotency-key", "k")
                .body(Body::from(render_body(&scene).to_string()))
                .unwrap(),
            unauthorized,
            "unauthorized",
        ),
        (
            "a bearer token instead",
            Request::get("/v1/reseller/renders")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
            unauthorized,
            "unauthorized",
        ),
        (
            "a key without renders:write submits",
            signed(&reader, &submit(), |_| {}),
            StatusCode::FORBIDDEN,
            "missing_scope",
        ),
        (
            "a key without renders:write pauses",
            signed(
                &reader,
                &Call::new("POST", format!("/v1/reseller/renders/{render_id}/pause")),
                |_| {},
            ),
            StatusCode::FORBIDDEN,
            "missing_scope",
        ),
        (
            "a key without files:write uploads",
            signed(
                &reader,
                &Call::new("POST", "/v1/reseller/files?name=demo.json")
                    .bytes(node_agent::renderer::builtin::DEMO_SCENE.as_bytes()),
                |_| {},
            ),
            StatusCode::FORBIDDEN,
            "missing_scope",
        ),
        (
            "a POST without Idempotency-Key",
            signed(
                &key,
                &Call {
                    idempotency_key: None,
                    ..submit()
                },
                |_| {},
            ),
            StatusCode::BAD_REQUEST,
            "idempotency_key_required",
        ),
        (
            "another tenant's render",
            signed(
                &other_tenant,
                &Call::new("POST", format!("/v1/reseller/renders/{render_id}/cancel")),
                |_| {},
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "another tenant's render read",
            signed(
                &other_tenant,
                &Call::new("GET", format!("/v1/reseller/renders/{render_id}")),
                |_| {},
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "another tenant's scene",
            signed(&other_tenant, &submit(), |_| {}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "another tenant's file",
            signed(
                &other_tenant,
                &Call::new("GET", format!("/v1/reseller/files/{scene}/content")),
                |_| {},
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "the operators' flag",
            signed(
                &key,
                &Call::new("GET", "/v1/reseller/renders?all_tenants=true"),
                |_| {},
            ),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ];
    for (what, request, want, code) in cases {
        let (status, body, _) = send(&api.state, request).await;
        assert_eq!(status, want, "{what}: {body}");
        assert_refused(status, &body, want, code);
    }
    // A replayed request: the first passes, its copy is refused.
    let call = Call::new("GET", "/v1/reseller/renders");
    let (status, _, _) = send(&api.state, signed(&key, &call, |_| {})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = send(&api.state, signed(&key, &call, |_| {})).await;
    assert_refused(status, &body, unauthorized, "unauthorized");
    let replayed_post = submit().key("replayed");
    let (status, _, _) = send(&api.state, signed(&key, &replayed_post, |_| {})).await;
    assert_eq!(status, StatusCode::CREATED);
    let after_one = api.events().await;
    let (status, body, _) = send(&api.state, signed(&key, &replayed_post, |_| {})).await;
    assert_refused(status, &body, unauthorized, "unauthorized");
    assert_eq!(api.events().await, after_one, "a replay appended");
    // Everything but that one submission appended nothing.
    let appended = after_one - before;
    assert!(appended > 0);
    let log = crate::log(&api.state.store).await;
    assert!(
        log[before..after_one]
            .iter()
            .all(|e| e.stream_type == "render_job"),
        "a refused request appended {:?}",
        log[before..after_one]
            .iter()
            .map(|e| &e.event_type)
            .collect::<Vec<_>>()
    );
}

/// A retried POST with the same key creates one render and answers the
/// first answer, whether sent again in turn or many at once; the same key
/// with another body is refused; a retried upload stores one file.
#[tokio::test]
async fn a_retried_post_with_the_same_idempotency_key_creates_one_render() {
    let api = Api::new().await;
    let (key, _) = issue(&api, api.a, &ALL).await;
    let scene = upload_scene(&api, &key).await;
    let first = Call::new("POST", "/v1/reseller/renders")
        .json(&render_body(&scene))
        .key("order-1");
    let (status, answer, _) = send(&api.state, signed(&key, &first, |_| {})).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let before = api.events().await;
    // The retry: new nonce and time (a new signed request), same key.
    let retry = Call::new("POST", "/v1/reseller/renders")
        .json(&render_body(&scene))
        .key("order-1");
    let response = api::router(api.state.clone())
        .oneshot(signed(&key, &retry, |_| {}))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let again: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(again, answer);
    assert_eq!(api.events().await, before, "the retry appended");
    // The same key for another request.
    let mut other_body = render_body(&scene);
    other_body["priority"] = json!(90);
    let reused = Call::new("POST", "/v1/reseller/renders")
        .json(&other_body)
        .key("order-1");
    let (status, body, _) = send(&api.state, signed(&key, &reused, |_| {})).await;
    assert_refused(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    // Eight racing copies of a new submission: one render.
    let racers = (0..8).map(|_| {
        let state = api.state.clone();
        let request = signed(
            &key,
            &Call::new("POST", "/v1/reseller/renders")
                .json(&render_body(&scene))
                .key("order-2"),
            |_| {},
        );
        tokio::spawn(async move { send(&state, request).await })
    });
    let answers = futures_util::future::join_all(racers).await;
    let mut ids = std::collections::BTreeSet::new();
    for a in answers {
        let (status, body, _) = a.unwrap();
        match status {
            StatusCode::CREATED => {
                ids.insert(body["id"].as_str().unwrap().to_string());
            }
            StatusCode::CONFLICT => {
                assert_eq!(
                    body["error"]["code"], "idempotency_key_in_progress",
                    "{body}"
                )
            }
            other => panic!("{other} {body}"),
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let log = crate::log(&api.state.store).await;
    let submitted = log
        .iter()
        .filter(|e| e.event_type == "render.job.submitted")
        .count();
    assert_eq!(submitted, 2, "two keys, two renders");
    // A retried upload: one file.
    let upload = Call::new("POST", "/v1/reseller/files?name=again.json")
        .bytes(br#"{"width":8,"height":8,"frames":2}"#)
        .key("upload-1");
    let (s1, f1, _) = send(&api.state, signed(&key, &upload, |_| {})).await;
    let retry_upload = Call::new("POST", "/v1/reseller/files?name=again.json")
        .bytes(br#"{"width":8,"height":8,"frames":2}"#)
        .key("upload-1");
    let (s2, f2, _) = send(&api.state, signed(&key, &retry_upload, |_| {})).await;
    assert_eq!((s1, &f1), (s2, &f2), "{f1} {f2}");
}

/// A key revoked through one instance is refused by another from its
/// next request, and so is a key whose user was removed; a key expires.
#[tokio::test]
async fn a_revoked_key_is_refused_by_every_instance_from_its_next_request() {
    let api = Api::new().await;
    let (key, token) = issue(&api, api.a, &ALL).await;
    // A second instance over the same store and master key.
    let store = eventstore::AnyStore::Sqlite(
        eventstore::SqliteStore::open(&api.dir.join("events.sqlite"))
            .await
            .unwrap(),
    );
    let blobs = api::files::BlobStore::open(&api.dir.join("blobs"), 1024 * 1024)
        .await
        .unwrap();
    let mut second = api::AppState::open(
        store,
        blobs,
        std::sync::Arc::new(eventstore::SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .unwrap();
    second.vault = api.state.vault.clone();
    let list = || Call::new("GET", "/v1/reseller/renders");
    let first = list();
    let (status, _, _) = send(&second, signed(&key, &first, |_| {})).await;
    assert_eq!(status, StatusCode::OK);
    // The same request replayed to the other instance: refused there too.
    let (status, body, _) = send(&api.state, signed(&key, &first, |_| {})).await;
    assert_refused(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    // Another tenant's admin cannot revoke it.
    let (_, other_admin) = admin(&api, api.b).await;
    let revoke = |token: &str| {
        Request::delete(format!("/v1/api-keys/{}", key.id))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let (status, body, _) = send(&api.state, revoke(&other_admin)).await;
    assert_refused(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, _, _) = send(&second, signed(&key, &list(), |_| {})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = send(&api.state, revoke(&token)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let before = api.events().await;
    for state in [&second, &api.state] {
        let (status, body, _) = send(state, signed(&key, &list(), |_| {})).await;
        assert_refused(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(api.events().await, before);
    // The admin's list shows it revoked.
    let request = Request::get("/v1/api-keys")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let (_, listed, _) = send(&api.state, request).await;
    let item = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == key.id)
        .unwrap();
    assert!(item["revoked_at"].is_string());
    assert!(item.get("secret").is_none());
    // A key of a removed user.
    let (key2, _) = issue(&api, api.a, &ALL).await;
    let (status, _, _) = send(&second, signed(&key2, &list(), |_| {})).await;
    assert_eq!(status, StatusCode::OK);
    let owner = crate::log(&api.state.store)
        .await
        .iter()
        .find(|e| e.event_type == "identity.api_key.issued" && e.payload["api_key_id"] == key2.id)
        .map(|e| e.stream_id)
        .unwrap();
    api::users::remove(
        &api.state.store,
        domain::UserId::new(owner).unwrap(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let (status, body, _) = send(&second, signed(&key2, &list(), |_| {})).await;
    assert_refused(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    // An expired key.
    let (_, token3) = admin(&api, api.a).await;
    let request = Request::post("/v1/api-keys")
        .header("authorization", format!("Bearer {token3}"))
        .header("content-type", "application/json")
        .body(Body::from(
            json!({ "scopes": ["renders:read"], "expires_at": "2020-01-01T00:00:00Z" }).to_string(),
        ))
        .unwrap();
    let (status, body, _) = send(&api.state, request).await;
    assert_refused(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
}

/// The served document is the committed one, and the router serves
/// exactly the contract's operations.
#[tokio::test]
async fn the_served_contract_is_the_committed_one_and_the_router_agrees() {
    let api = Api::new().await;
    let (status, served, _) = send(
        &api.state,
        Request::get("/v1/reseller/openapi.json")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let committed: Value = serde_yaml::from_str(include_str!(
        "../../../contracts/rest/reseller-api.openapi.yaml"
    ))
    .unwrap();
    assert_eq!(served, committed);
    let routed: std::collections::BTreeSet<String> =
        crate::public::routes_in(include_str!("../../src/reseller/mod.rs"))
            .into_iter()
            .map(|(m, p)| format!("{} {p}", m.to_lowercase()))
            .collect();
    let documented: std::collections::BTreeSet<String> = contracts::reseller_api::operations()
        .iter()
        .map(|o| format!("{} {}", o.method.to_lowercase(), o.path))
        .collect();
    assert_eq!(routed, documented);
}
