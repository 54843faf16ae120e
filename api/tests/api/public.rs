//! The public REST API as a client written from its contract would use
//! it: JWTs, tenant isolation on every route, bad input refused with the
//! contract's error body and nothing appended, idempotent submissions.

use std::sync::Arc;

use api::AppState;
use api::public::auth::{Auth, Jwt, RateLimit};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use domain::identity::Role;
use eventstore::EventStore as _;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

const SECRET: &[u8] = b"a test secret of at least 32 bytes, not a real one";

/// A server state whose tokens are signed with [`SECRET`], and two tenants.
pub struct Api {
    pub state: AppState,
    pub dir: std::path::PathBuf,
    pub a: Uuid,
    pub b: Uuid,
    jwt: Jwt,
    /// A registered member of each tenant.
    users: std::collections::HashMap<Uuid, Uuid>,
}

/// Registers a member of `tenant`.
pub async fn member(state: &AppState, tenant: Uuid) -> Uuid {
    api::users::create(
        &state.store,
        domain::TenantId::new(tenant).unwrap(),
        "artist@example.com",
        "Artist",
        Role::Member,
        chrono::Utc::now(),
    )
    .await
    .unwrap()
    .as_uuid()
}

impl Api {
    pub async fn new() -> Self {
        let (state, dir) = crate::state().await;
        let jwt = Jwt::hs256(SECRET, "flatrender", "flatrender-api").unwrap();
        let state = state.with_auth(Auth::new(jwt.clone(), RateLimit::new(1000, 2000)));
        let a = api::seed::tenant(&state.orchestrator, "Studio A", 1, 10, 100_000)
            .await
            .unwrap()
            .as_uuid();
        let b = api::seed::tenant(&state.orchestrator, "Studio B", 1, 10, 100_000)
            .await
            .unwrap()
            .as_uuid();
        let mut users = std::collections::HashMap::new();
        users.insert(a, member(&state, a).await);
        users.insert(b, member(&state, b).await);
        let api = Self {
            state,
            dir,
            a,
            b,
            jwt,
            users,
        };
        api.catch_up().await;
        api
    }

    pub fn token(&self, tenant: Uuid) -> String {
        self.jwt
            .issue(
                self.users[&tenant],
                tenant,
                Role::Member,
                chrono::Duration::hours(1),
            )
            .unwrap()
    }

    /// A token of a new operator of `tenant` (role `operator`).
    pub async fn operator_token(&self, tenant: Uuid) -> String {
        let user = api::users::create(
            &self.state.store,
            domain::TenantId::new(tenant).unwrap(),
            &format!("op-{}@example.com", Uuid::new_v4().simple()),
            "Operator",
            Role::Operator,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
        self.jwt
            .issue(
                user.as_uuid(),
                tenant,
                Role::Operator,
                chrono::Duration::hours(1),
            )
            .unwrap()
    }

    /// The read models caught up with the log.
    pub async fn catch_up(&self) {
        let mut runner = projections::Runner::new(
            self.state.store.clone(),
            projections::RunnerOptions::default(),
        );
        runner.catch_up(|_, _, _| {}).await.unwrap();
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value, Vec<u8>) {
        let response = api::router(self.state.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value, bytes)
    }

    pub async fn call(
        &self,
        tenant: Uuid,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.token(tenant)));
        let body = match body {
            Some(v) => {
                request = request.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let (status, value, _) = self.send(request.body(body).unwrap()).await;
        (status, value)
    }

    /// Uploads the demo scene for `tenant`; returns its file id.
    pub async fn scene(&self, tenant: Uuid) -> String {
        let request = Request::post("/v1/files?name=demo.json")
            .header("authorization", format!("Bearer {}", self.token(tenant)))
            .body(Body::from(node_agent::renderer::builtin::DEMO_SCENE))
            .unwrap();
        let (status, body, _) = self.send(request).await;
        assert!(status.is_success(), "{status} {body}");
        body["id"].as_str().unwrap().to_string()
    }

    pub async fn events(&self) -> usize {
        crate::log(&self.state.store).await.len()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A webhook endpoint of tenant A (a public address: nothing is sent to
/// it unless a dispatcher runs).
async fn a_webhook(api: &Api) -> domain::EndpointId {
    api::webhooks::register(
        &api.state.store,
        &api.state.vault,
        &api.state.webhooks,
        domain::TenantId::new(api.a).unwrap(),
        "http://93.184.216.34/hook",
        vec![domain::notification::NotificationKind::RenderCompleted],
        eventstore::Actor::User { id: Uuid::new_v4() },
    )
    .await
    .unwrap()
    .endpoint_id
}

/// An admin of `tenant` and a token of theirs.
pub async fn admin(api: &Api, tenant: Uuid) -> (Uuid, String) {
    let user = api::users::create(
        &api.state.store,
        domain::TenantId::new(tenant).unwrap(),
        &format!("admin-{}@example.com", Uuid::new_v4().simple()),
        "Admin",
        Role::Admin,
        chrono::Utc::now(),
    )
    .await
    .unwrap()
    .as_uuid();
    let token = api
        .jwt
        .issue(user, tenant, Role::Admin, chrono::Duration::hours(1))
        .unwrap();
    (user, token)
}

/// An API key of an admin of tenant A (its id).
async fn an_api_key(api: &Api) -> Uuid {
    let (user, _) = admin(api, api.a).await;
    api::users::issue_api_key(
        &api.state.store,
        &api.state.vault,
        domain::UserId::new(user).unwrap(),
        vec![domain::identity::Scope::RendersRead],
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap()
    .api_key_id
    .as_uuid()
}

pub fn render_body(scene: &str) -> Value {
    json!({ "scene_file_id": scene, "renderer": "builtin", "frames": { "start": 1, "end": 6 }, "chunk_size": 2 })
}

/// The contract's error body, with its code.
fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    let e = &body["error"];
    assert_eq!(e["code"], code, "{body}");
    assert!(
        e["message"].is_string() && e["details"].is_object() && e["trace_id"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn a_studio_uploads_submits_lists_and_controls_a_render() {
    let api = Api::new().await;
    let scene = api.scene(api.a).await;
    api.catch_up().await;
    // The same bytes again are the same file.
    assert_eq!(api.scene(api.a).await, scene);

    let submit = |key: &'static str, body: Value| {
        let token = api.token(api.a);
        Request::post("/v1/renders")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let (status, first, _) = api.send(submit("shot-010-v1", render_body(&scene))).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(
        first["schedulable"], false,
        "no node offers builtin yet: {first}"
    );
    let (status, again, _) = api.send(submit("shot-010-v1", render_body(&scene))).await;
    assert_eq!(
        (status, &again),
        (StatusCode::CREATED, &first),
        "a retry answers the same"
    );
    let mut other = render_body(&scene);
    other["frames"]["end"] = json!(7);
    let (status, reused, _) = api.send(submit("shot-010-v1", other)).await;
    assert_error(
        status,
        &reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );

    api.catch_up().await;
    let id = first["id"].as_str().unwrap();
    let (status, list) = api
        .call(api.a, "GET", "/v1/renders?page=1&page_size=10", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], id);
    assert_eq!(list["items"][0]["frames_total"], 6);
    let (_, none) = api
        .call(api.a, "GET", "/v1/renders?status=completed", None)
        .await;
    assert_eq!(none["total"], 0);
    let (_, named) = api
        .call(api.a, "GET", "/v1/renders?name_contains=RENDER", None)
        .await;
    assert_eq!(named["total"], 1);
    let (status, shown) = api
        .call(api.a, "GET", &format!("/v1/renders/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["tasks"]["total"], 3);
    let (_, tasks) = api
        .call(
            api.a,
            "GET",
            &format!("/v1/renders/{id}/tasks?page_size=2"),
            None,
        )
        .await;
    assert_eq!(
        (
            tasks["total"].clone(),
            tasks["items"].as_array().unwrap().len()
        ),
        (json!(3), 2)
    );
    let (_, history) = api
        .call(api.a, "GET", &format!("/v1/renders/{id}/events"), None)
        .await;
    assert_eq!(
        history["items"][0]["routing_key"],
        "render.job.submitted.v1"
    );

    let priority = |p: u8| Some(json!({ "priority": p }));
    let path = format!("/v1/renders/{id}/priority");
    let (code, body) = api.call(api.a, "POST", &path, priority(90)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    api.catch_up().await;
    let (_, shown) = api
        .call(api.a, "GET", &format!("/v1/renders/{id}"), None)
        .await;
    assert_eq!(shown["priority"], 90);
    let (code, body) = api.call(api.a, "POST", &path, priority(101)).await;
    assert_error(
        code,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    for (verb, status) in [
        ("pause", "paused"),
        ("resume", "active"),
        ("cancel", "cancelled"),
    ] {
        let (code, body) = api
            .call(api.a, "POST", &format!("/v1/renders/{id}/{verb}"), None)
            .await;
        assert_eq!(
            (code, body["status"].as_str()),
            (StatusCode::OK, Some(status)),
            "{verb}: {body}"
        );
    }
    let (code, body) = api
        .call(api.a, "POST", &format!("/v1/renders/{id}/pause"), None)
        .await;
    assert!(
        code.is_client_error(),
        "a cancelled render does not pause: {body}"
    );
    let (code, body) = api.call(api.a, "POST", &path, priority(10)).await;
    assert!(
        code.is_client_error(),
        "a cancelled render keeps its priority: {body}"
    );
    api.catch_up().await;
    let (_, tenant) = api.call(api.a, "GET", "/v1/tenant", None).await;
    assert_eq!(tenant["balance_minor"], 100_000);
    let (status, _) = api.call(api.a, "GET", "/v1/tenant/usage", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// The public routes as `api/src/public/mod.rs` declares them: (method, path).
fn declared_routes() -> Vec<(&'static str, String)> {
    let out = routes_in(include_str!("../../src/public/mod.rs"));
    assert!(out.len() >= 17, "the route table was not found");
    out
}

/// The `.route(` calls of a router's source: (method, path).
pub fn routes_in(source: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        let call = &rest[at + ".route(".len()..];
        let mut depth = 1;
        let end = call
            .char_indices()
            .find(|(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .unwrap();
        let args = &call[..end];
        let path = args.split('"').nth(1).unwrap().to_string();
        for (m, method) in [("get(", "GET"), ("post(", "POST"), ("delete(", "DELETE")] {
            if args.contains(m) {
                out.push((method, path.clone()));
            }
        }
        rest = &call[end..];
    }
    out
}

/// Every public route of `api/src/public/mod.rs`, with a path for it
/// naming tenant A's objects; a route missing here fails the test.
fn routes_with_ids(
    render: &str,
    scene: &str,
    webhook: &str,
    api_key: &str,
) -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("GET", "/v1/api-keys", "/v1/api-keys".into()),
        ("POST", "/v1/api-keys", "/v1/api-keys".into()),
        (
            "DELETE",
            "/v1/api-keys/{api_key_id}",
            format!("/v1/api-keys/{api_key}"),
        ),
        ("GET", "/v1/webhooks", "/v1/webhooks".into()),
        ("POST", "/v1/webhooks", "/v1/webhooks".into()),
        (
            "DELETE",
            "/v1/webhooks/{webhook_id}",
            format!("/v1/webhooks/{webhook}"),
        ),
        ("GET", "/v1/openapi.json", "/v1/openapi.json".into()),
        ("POST", "/v1/files", "/v1/files?name=x.json".into()),
        ("GET", "/v1/files/{file_id}", format!("/v1/files/{scene}")),
        (
            "GET",
            "/v1/files/{file_id}/content",
            format!("/v1/files/{scene}/content"),
        ),
        ("GET", "/v1/renders", "/v1/renders".into()),
        ("POST", "/v1/renders", "/v1/renders".into()),
        (
            "GET",
            "/v1/renders/{render_id}",
            format!("/v1/renders/{render}"),
        ),
        (
            "GET",
            "/v1/renders/{render_id}/tasks",
            format!("/v1/renders/{render}/tasks"),
        ),
        (
            "GET",
            "/v1/renders/{render_id}/events",
            format!("/v1/renders/{render}/events"),
        ),
        (
            "GET",
            "/v1/renders/{render_id}/frames",
            format!("/v1/renders/{render}/frames"),
        ),
        (
            "GET",
            "/v1/renders/{render_id}/frames/{frame}",
            format!("/v1/renders/{render}/frames/1"),
        ),
        (
            "POST",
            "/v1/renders/{render_id}/pause",
            format!("/v1/renders/{render}/pause"),
        ),
        (
            "POST",
            "/v1/renders/{render_id}/resume",
            format!("/v1/renders/{render}/resume"),
        ),
        (
            "POST",
            "/v1/renders/{render_id}/cancel",
            format!("/v1/renders/{render}/cancel"),
        ),
        (
            "POST",
            "/v1/renders/{render_id}/retry",
            format!("/v1/renders/{render}/retry"),
        ),
        (
            "GET",
            "/v1/renders/{render_id}/archive",
            format!("/v1/renders/{render}/archive"),
        ),
        (
            "POST",
            "/v1/renders/{render_id}/priority",
            format!("/v1/renders/{render}/priority"),
        ),
        ("GET", "/v1/tenant", "/v1/tenant".into()),
        ("GET", "/v1/tenant/usage", "/v1/tenant/usage".into()),
        ("POST", "/v1/auth/token", "/v1/auth/token".into()),
        (
            "GET",
            "/v1/renders/{render_id}/frames/{frame}/thumbnail",
            format!("/v1/renders/{render}/frames/1/thumbnail"),
        ),
        // The farm's nodes: 403 for every role but `operator`.
        ("GET", "/v1/nodes", "/v1/nodes".into()),
        (
            "POST",
            "/v1/nodes/{node_id}/drain",
            format!("/v1/nodes/{scene}/drain"),
        ),
        (
            "POST",
            "/v1/nodes/{node_id}/enable",
            format!("/v1/nodes/{scene}/enable"),
        ),
        (
            "POST",
            "/v1/nodes/{node_id}/disable",
            format!("/v1/nodes/{scene}/disable"),
        ),
        (
            "GET",
            "/v1/renders/{render_id}/tasks/{task_id}/attempts",
            format!("/v1/renders/{render}/tasks/{scene}/attempts"),
        ),
        (
            "GET",
            "/v1/renders/{render_id}/tasks/{task_id}/attempts/{attempt}/log",
            format!("/v1/renders/{render}/tasks/{scene}/attempts/1/log"),
        ),
        // The WebSocket's token is in the query (TOKEN: the caller's).
        (
            "GET",
            "/v1/ws/renders/{render_id}",
            format!("/v1/ws/renders/{render}?token=TOKEN"),
        ),
        ("GET", "/v1/ws/renders", "/v1/ws/renders?token=TOKEN".into()),
    ]
}

#[tokio::test]
async fn another_tenants_ids_are_not_found_on_every_route() {
    let api = Api::new().await;
    let scene = api.scene(api.a).await;
    let (_, render) = api
        .call(api.a, "POST", "/v1/renders", Some(render_body(&scene)))
        .await;
    let render = render["id"].as_str().unwrap().to_string();
    api.catch_up().await;

    // The route table in the source: every `.route(` is covered below.
    // A's webhook endpoint (a public address: no receiver needed).
    let webhook = a_webhook(&api).await.to_string();
    let api_key = an_api_key(&api).await.to_string();
    let table = routes_with_ids(&render, &scene, &webhook, &api_key);
    let declared = declared_routes();
    for (method, path) in &declared {
        assert!(
            table.iter().any(|(m, p, _)| m == method && p == path),
            "{method} {path} has no tenant-isolation case"
        );
    }
    let declared = declared.len();
    assert_eq!(declared, table.len());

    let before = api.events().await;
    for (method, template, path) in &table {
        let path = &path.replace("TOKEN", &api.token(api.b));
        let scoped = template.contains('{');
        let body = match (*method, *template) {
            ("POST", "/v1/renders") => Some(render_body(&scene)),
            ("POST", "/v1/renders/{render_id}/priority") => Some(json!({ "priority": 90 })),
            ("POST", "/v1/api-keys") => Some(json!({ "scopes": ["renders:read"] })),
            // Refused (a private address): B registers nothing of its own.
            ("POST", "/v1/webhooks") => {
                Some(json!({ "url": "http://10.0.0.1/", "events": ["render.completed"] }))
            }
            _ => None,
        };
        let (status, value) = if *template == "/v1/files" {
            let request = Request::post(path.as_str())
                .header("authorization", format!("Bearer {}", api.token(api.b)))
                .body(Body::from("not a scene"))
                .unwrap();
            let (s, v, _) = api.send(request).await;
            (s, v)
        } else {
            api.call(api.b, method, path, body).await
        };
        if template.starts_with("/v1/nodes") || template.starts_with("/v1/api-keys") {
            // Nodes are the farm's, keys the admins': a member is refused.
            // Nodes are the farm's: a member of any tenant is refused.
            assert_error(status, &value, StatusCode::FORBIDDEN, "forbidden");
        } else if scoped || *template == "/v1/renders" && *method == "POST" {
            // Tenant A's render, file or scene named by tenant B.
            assert_error(status, &value, StatusCode::NOT_FOUND, "not_found");
        } else {
            // Tenant-wide routes answer B about B only.
            assert!(
                !value.to_string().contains(&render) && !value.to_string().contains(&scene),
                "{method} {path} leaked A's data to B: {value}"
            );
        }
    }
    assert_eq!(
        api.events().await,
        before,
        "tenant B's calls appended something"
    );
    let (_, list) = api.call(api.b, "GET", "/v1/renders", None).await;
    assert_eq!(list["total"], 0);
}

#[tokio::test]
async fn bad_input_gets_the_error_body_and_appends_nothing() {
    let api = Api::new().await;
    let scene = api.scene(api.a).await;
    api.catch_up().await;
    let token = api.token(api.a);
    let post = |body: Body, content_type: Option<&str>| {
        let mut r = Request::post("/v1/renders").header("authorization", format!("Bearer {token}"));
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        r.body(body).unwrap()
    };
    let json_post = |v: Value| post(Body::from(v.to_string()), Some("application/json"));
    let mut cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            post(Body::from("{\"scene_file_id\":"), Some("application/json")),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "no JSON content type",
            post(Body::from(render_body(&scene).to_string()), None),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "wrong type",
            json_post(
                json!({ "scene_file_id": scene, "renderer": "builtin", "frames": { "start": "one", "end": 6 } }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "unknown field",
            json_post(
                json!({ "scene_file_id": scene, "renderer": "builtin", "frames": { "start": 1, "end": 6 }, "command": "rm -rf /" }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "reversed frames",
            json_post(
                json!({ "scene_file_id": scene, "renderer": "builtin", "frames": { "start": 9, "end": 2 } }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "negative frame",
            json_post(
                json!({ "scene_file_id": scene, "renderer": "builtin", "frames": { "start": -1, "end": 2 } }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "chunk size 0",
            json_post(
                json!({ "scene_file_id": scene, "renderer": "builtin", "frames": { "start": 1, "end": 2 }, "chunk_size": 0 }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "priority 101",
            json_post(
                json!({ "scene_file_id": scene, "renderer": "builtin", "frames": { "start": 1, "end": 2 }, "priority": 101 }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "unknown renderer",
            json_post(
                json!({ "scene_file_id": scene, "renderer": "evil", "frames": { "start": 1, "end": 2 } }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_renderer",
        ),
        (
            "a JSON scene for blender",
            json_post(
                json!({ "scene_file_id": scene, "renderer": "blender", "frames": { "start": 1, "end": 2 } }),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_a_scene",
        ),
        (
            "no such scene",
            json_post(
                json!({ "scene_file_id": Uuid::new_v4(), "renderer": "builtin", "frames": { "start": 1, "end": 2 } }),
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "huge body",
            post(
                Body::from(vec![b' '; 3 * 1024 * 1024]),
                Some("application/json"),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    let get = |path: &str| {
        Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    cases.push((
        "invalid UUID",
        get("/v1/renders/not-a-uuid"),
        StatusCode::BAD_REQUEST,
        "invalid_id",
    ));
    cases.push((
        "upper-case UUID",
        get(&format!(
            "/v1/renders/{}",
            Uuid::new_v4().to_string().to_uppercase()
        )),
        StatusCode::BAD_REQUEST,
        "invalid_id",
    ));
    cases.push((
        "page 0",
        get("/v1/renders?page=0"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    ));
    cases.push((
        "page_size 1000",
        get("/v1/renders?page_size=1000"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    ));
    cases.push((
        "unknown parameter",
        get("/v1/renders?sort=evil"),
        StatusCode::BAD_REQUEST,
        "invalid_parameter",
    ));
    cases.push((
        "bad time",
        get("/v1/renders?created_after=yesterday"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    ));
    let upload = |name: &str, bytes: &'static [u8]| {
        Request::post(format!("/v1/files?name={name}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(bytes))
            .unwrap()
    };
    cases.push((
        "random bytes as a .blend",
        upload("shot.blend", b"\x00\x01garbage"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_a_scene",
    ));
    cases.push((
        "a .json that is no scene",
        upload("shot.json", b"{\"hello\": 1}"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_a_scene",
    ));
    cases.push((
        "an .exe",
        upload("shot.exe", b"MZ"),
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_a_scene",
    ));
    cases.push((
        "wrong method",
        Request::delete("/v1/renders")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    ));

    let before = api.events().await;
    for (what, request, status, code) in cases {
        let (got, body, _) = api.send(request).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_error(got, &body, status, code);
    }
    assert_eq!(
        api.events().await,
        before,
        "a refused request appended something"
    );
}

#[tokio::test]
async fn tokens_are_checked_before_anything_else() {
    let api = Api::new().await;
    let now = chrono::Utc::now().timestamp();
    let claims = |exp: i64, nbf: i64, aud: &str, iss: &str| json!({ "sub": api.users[&api.a], "tenant_id": api.a, "role": "member", "iss": iss, "aud": aud, "iat": now, "nbf": nbf, "exp": exp });
    let sign = |claims: &Value, secret: &[u8]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let good = claims(now + 600, now, "flatrender-api", "flatrender");
    let none = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT" })),
        b64(&good)
    );
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let tokens = [
        (
            "expired",
            sign(
                &claims(now - 600, now - 1200, "flatrender-api", "flatrender"),
                SECRET,
            ),
        ),
        (
            "not yet valid",
            sign(
                &claims(now + 1200, now + 600, "flatrender-api", "flatrender"),
                SECRET,
            ),
        ),
        (
            "wrong audience",
            sign(
                &claims(now + 600, now, "someone-else", "flatrender"),
                SECRET,
            ),
        ),
        (
            "wrong issuer",
            sign(&claims(now + 600, now, "flatrender-api", "evil"), SECRET),
        ),
        (
            "forged",
            sign(&good, b"another secret of at least thirty-two bytes"),
        ),
        ("alg none", none),
        ("another algorithm", hs384),
        ("garbage", "not.a.token".to_string()),
    ];
    // A removed user, a user of another tenant, and another role than the
    // user has.
    let removed = member(&api.state, api.a).await;
    api::users::remove(
        &api.state.store,
        domain::UserId::new(removed).unwrap(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let with = |sub: Uuid, tenant: Uuid, role: &str| {
        let mut c = good.clone();
        c["sub"] = json!(sub);
        c["tenant_id"] = json!(tenant);
        c["role"] = json!(role);
        sign(&c, SECRET)
    };
    let tokens: Vec<(&str, String)> = tokens
        .into_iter()
        .chain([
            ("a removed user", with(removed, api.a, "member")),
            (
                "a user of another tenant",
                with(api.users[&api.b], api.a, "member"),
            ),
            (
                "a role the user does not have",
                with(api.users[&api.a], api.a, "admin"),
            ),
            ("no such user", with(Uuid::new_v4(), api.a, "member")),
        ])
        .collect();
    let before = api.events().await;
    for (what, token) in tokens {
        let request = Request::post("/v1/renders")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let (status, body, _) = api.send(request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let (status, body, _) = api
        .send(Request::get("/v1/renders").body(Body::empty()).unwrap())
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    // The good token works (so the refusals above are the token's).
    let request = Request::get("/v1/renders")
        .header("authorization", format!("Bearer {}", sign(&good, SECRET)))
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(request).await.0, StatusCode::OK);
    assert_eq!(api.events().await, before);
}

#[tokio::test]
async fn the_same_submission_sent_twice_at_once_creates_one_render() {
    let api = Arc::new(Api::new().await);
    let scene = api.scene(api.a).await;
    let mut handles = Vec::new();
    for _ in 0..2 {
        let api = api.clone();
        let body = render_body(&scene);
        handles.push(tokio::spawn(async move {
            let request = Request::post("/v1/renders")
                .header("authorization", format!("Bearer {}", api.token(api.a)))
                .header("content-type", "application/json")
                .header("idempotency-key", "concurrent-1")
                .body(Body::from(body.to_string()))
                .unwrap();
            api.send(request).await
        }));
    }
    let mut answers = Vec::new();
    for h in handles {
        let (status, body, _) = h.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        answers.push(body);
    }
    assert_eq!(answers[0], answers[1]);
    let submitted = crate::by(
        &crate::log(&api.state.store).await,
        "render.job.submitted.v1",
    )
    .count();
    assert_eq!(submitted, 1);
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_with_retry_after() {
    let (state, dir) = crate::state().await;
    let jwt = Jwt::hs256(SECRET, "flatrender", "flatrender-api").unwrap();
    let state = state.with_auth(Auth::new(jwt.clone(), RateLimit::new(1, 3)));
    let tenant = api::seed::tenant(&state.orchestrator, "Busy", 1, 10, 0)
        .await
        .unwrap()
        .as_uuid();
    let user = member(&state, tenant).await;
    let token = jwt
        .issue(user, tenant, Role::Member, chrono::Duration::hours(1))
        .unwrap();
    let mut limited = None;
    for _ in 0..5 {
        let response = api::router(state.clone())
            .oneshot(
                Request::get("/v1/tenant")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = response.headers().get("retry-after").cloned();
            break;
        }
    }
    assert!(limited.is_some(), "no 429 with Retry-After");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The document the server serves is the committed contract, and the
/// router and the contract name the same operations.
#[tokio::test]
async fn the_served_contract_is_the_committed_one_and_covers_every_route() {
    let api = Api::new().await;
    let (status, served, _) = api
        .send(
            Request::get("/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let committed: Value = serde_yaml::from_str(include_str!(
        "../../../contracts/rest/gateway-public.openapi.yaml"
    ))
    .unwrap();
    assert_eq!(served, committed);
    let routed: std::collections::BTreeSet<String> = declared_routes()
        .into_iter()
        .map(|(m, p)| format!("{} {p}", m.to_lowercase()))
        .collect();
    let documented: std::collections::BTreeSet<String> = contracts::gateway_public::operations()
        .iter()
        .map(|o| format!("{} {}", o.method.to_lowercase(), o.path))
        .collect();
    assert_eq!(routed, documented, "the router and the contract differ");
}

/// One request per documented operation (a missing one fails), each
/// answer checked against the schema the contract gives its status.
#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    let api = Api::new().await;
    // Work to show: a node that renders one task of a render.
    let (scene, render, task, lease) = started_task(&api).await;
    let node = lease.node_id;
    for frame in task.frames.start..=task.frames.end {
        frame_done(&api, lease, frame, &crate::png_of(8, 8)).await;
    }
    api.state.orchestrator.complete(lease).await.unwrap();
    api.state.orchestrator.tick().await.unwrap();
    api.catch_up().await;
    api.state
        .logs
        .append(
            api::task_logs::Attempt {
                tenant_id: api.a,
                render_id: Uuid::parse_str(&render).unwrap(),
                task_id: task.task_id,
                attempt: task.lease_epoch,
            },
            &[api::task_logs::LogLine {
                stream: api::task_logs::Stream::Stdout,
                text: "Fra:1 rendering".into(),
            }],
        )
        .await
        .unwrap();

    let token = api.token(api.a);
    let req = |method: &str, path: String, body: Option<Body>| {
        let mut r = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        let body = match body {
            Some(b) => {
                r = r.header("content-type", "application/json");
                b
            }
            None => Body::empty(),
        };
        r.body(body).unwrap()
    };
    let webhook = a_webhook(&api).await;
    let (_, admin_token) = admin(&api, api.a).await;
    let as_admin = |method: &str, path: String, body: Option<Value>| {
        let r = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {admin_token}"));
        match body {
            Some(v) => r
                .header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => r.body(Body::empty()).unwrap(),
        }
    };
    let issued = api
        .send(as_admin(
            "POST",
            "/v1/api-keys".into(),
            Some(json!({ "scopes": ["renders:read"] })),
        ))
        .await
        .1;
    let revoked_key = issued["id"].as_str().unwrap().to_string();
    api.send(as_admin(
        "DELETE",
        format!("/v1/api-keys/{revoked_key}"),
        None,
    ))
    .await;
    let frame = task.frames.start;
    let operator = api.operator_token(api.a).await;
    let as_operator = |method: &str, path: String| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {operator}"))
            .body(Body::empty())
            .unwrap()
    };
    let user = api::users::create(
        &api.state.store,
        domain::TenantId::new(api.a).unwrap(),
        "signs-in@example.com",
        "Signs in",
        Role::Member,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    api::users::set_password(
        &api.state.store,
        user.as_uuid(),
        "correct horse battery",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let sign_in = |password: &str| {
        Request::post("/v1/auth/token")
            .header("content-type", "application/json")
            .body(Body::from(
                json!({ "email": "signs-in@example.com", "password": password }).to_string(),
            ))
            .unwrap()
    };
    let cases: Vec<(&str, Request<Body>)> = vec![
        ("signIn", sign_in("correct horse battery")),
        ("signIn", sign_in("wrong")),
        (
            "getRenderFrameThumbnail",
            req(
                "GET",
                format!("/v1/renders/{render}/frames/{frame}/thumbnail"),
                None,
            ),
        ),
        (
            "getRenderFrameThumbnail",
            req(
                "GET",
                format!("/v1/renders/{render}/frames/9999/thumbnail"),
                None,
            ),
        ),
        ("listNodes", as_operator("GET", "/v1/nodes".into())),
        (
            "listNodes",
            as_operator("GET", "/v1/nodes?status=online&page_size=1".into()),
        ),
        (
            "listNodes",
            as_operator("GET", "/v1/nodes?status=asleep".into()),
        ),
        ("listNodes", req("GET", "/v1/nodes".into(), None)),
        (
            "drainNode",
            as_operator("POST", format!("/v1/nodes/{node}/drain")),
        ),
        (
            "drainNode",
            as_operator("POST", format!("/v1/nodes/{node}/drain")),
        ),
        (
            "enableNode",
            as_operator("POST", format!("/v1/nodes/{node}/enable")),
        ),
        (
            "disableNode",
            as_operator("POST", format!("/v1/nodes/{node}/disable")),
        ),
        (
            "enableNode",
            as_operator("POST", format!("/v1/nodes/{node}/enable")),
        ),
        (
            "disableNode",
            req("POST", format!("/v1/nodes/{node}/disable"), None),
        ),
        (
            "drainNode",
            as_operator("POST", format!("/v1/nodes/{}/drain", Uuid::new_v4())),
        ),
        (
            "drainNode",
            as_operator("POST", "/v1/nodes/NOT-AN-ID/drain".into()),
        ),
        ("getOpenApi", req("GET", "/v1/openapi.json".into(), None)),
        (
            "uploadFile",
            Request::post("/v1/files?name=again.json")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(node_agent::renderer::builtin::DEMO_SCENE))
                .unwrap(),
        ),
        ("getFile", req("GET", format!("/v1/files/{scene}"), None)),
        (
            "downloadFile",
            req("GET", format!("/v1/files/{scene}/content"), None),
        ),
        (
            "listRenders",
            req("GET", "/v1/renders?page_size=5".into(), None),
        ),
        (
            "submitRender",
            req(
                "POST",
                "/v1/renders".into(),
                Some(Body::from(render_body(&scene).to_string())),
            ),
        ),
        (
            "getRender",
            req("GET", format!("/v1/renders/{render}"), None),
        ),
        (
            "listRenderTasks",
            req("GET", format!("/v1/renders/{render}/tasks"), None),
        ),
        (
            "listRenderEvents",
            req("GET", format!("/v1/renders/{render}/events?limit=3"), None),
        ),
        (
            "listRenderFrames",
            req("GET", format!("/v1/renders/{render}/frames"), None),
        ),
        (
            "getRenderFrame",
            req("GET", format!("/v1/renders/{render}/frames/{frame}"), None),
        ),
        (
            "pauseRender",
            req("POST", format!("/v1/renders/{render}/pause"), None),
        ),
        (
            "resumeRender",
            req("POST", format!("/v1/renders/{render}/resume"), None),
        ),
        (
            "retryRender",
            req("POST", format!("/v1/renders/{render}/retry"), None),
        ),
        (
            "getRenderArchive",
            req("GET", format!("/v1/renders/{render}/archive"), None),
        ),
        (
            "changeRenderPriority",
            req(
                "POST",
                format!("/v1/renders/{render}/priority"),
                Some(Body::from(json!({ "priority": 80 }).to_string())),
            ),
        ),
        (
            "cancelRender",
            req("POST", format!("/v1/renders/{render}/cancel"), None),
        ),
        (
            "listTaskAttempts",
            req(
                "GET",
                format!("/v1/renders/{render}/tasks/{}/attempts", task.task_id),
                None,
            ),
        ),
        (
            "getTaskLog",
            req(
                "GET",
                format!(
                    "/v1/renders/{render}/tasks/{}/attempts/{}/log?tail=1",
                    task.task_id, task.lease_epoch
                ),
                None,
            ),
        ),
        (
            "getTaskLog",
            req(
                "GET",
                format!(
                    "/v1/renders/{render}/tasks/{}/attempts/99/log",
                    task.task_id
                ),
                None,
            ),
        ),
        // Without an upgrade: 400 `websocket_required`, after the token and
        // the render were checked.
        (
            "watchRender",
            req(
                "GET",
                format!("/v1/ws/renders/{render}?token={token}"),
                None,
            ),
        ),
        (
            "watchRenders",
            req("GET", "/v1/ws/renders?token=forged".into(), None),
        ),
        ("getTenant", req("GET", "/v1/tenant".into(), None)),
        ("listApiKeys", as_admin("GET", "/v1/api-keys".into(), None)),
        ("listApiKeys", req("GET", "/v1/api-keys".into(), None)),
        (
            "issueApiKey",
            as_admin(
                "POST",
                "/v1/api-keys".into(),
                Some(json!({ "scopes": ["renders:read", "files:write"], "expires_at": "2099-01-01T00:00:00Z" })),
            ),
        ),
        (
            "issueApiKey",
            as_admin("POST", "/v1/api-keys".into(), Some(json!({ "scopes": [] }))),
        ),
        (
            "issueApiKey",
            req("POST", "/v1/api-keys".into(), Some(Body::from(r#"{"scopes":["renders:read"]}"#))),
        ),
        (
            "revokeApiKey",
            as_admin("DELETE", format!("/v1/api-keys/{revoked_key}"), None),
        ),
        (
            "revokeApiKey",
            as_admin("DELETE", format!("/v1/api-keys/{}", Uuid::new_v4()), None),
        ),
        (
            "revokeApiKey",
            Request::delete(format!("/v1/api-keys/{revoked_key}"))
                .header("authorization", format!("Bearer {admin_token}"))
                .header("content-type", "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        ),
        (
            "issueApiKey",
            as_admin(
                "POST",
                "/v1/api-keys".into(),
                Some(json!({ "scopes": ["audit:read"] })),
            ),
        ),
        ("listWebhooks", req("GET", "/v1/webhooks".into(), None)),
        (
            "registerWebhook",
            req(
                "POST",
                "/v1/webhooks".into(),
                Some(Body::from(
                    json!({ "url": "http://93.184.216.34/hook", "events": ["render.failed", "tenant.credit_low"] })
                        .to_string(),
                )),
            ),
        ),
        (
            "registerWebhook",
            req(
                "POST",
                "/v1/webhooks".into(),
                Some(Body::from(
                    json!({ "url": "http://127.0.0.1/hook", "events": ["render.failed"] }).to_string(),
                )),
            ),
        ),
        (
            "removeWebhook",
            req("DELETE", format!("/v1/webhooks/{webhook}"), None),
        ),
        (
            "removeWebhook",
            req("DELETE", format!("/v1/webhooks/{webhook}"), None),
        ),
        (
            "getTenantUsage",
            req("GET", "/v1/tenant/usage".into(), None),
        ),
        // Refusals are documented too.
        (
            "getRender",
            req("GET", format!("/v1/renders/{}", Uuid::new_v4()), None),
        ),
        ("listRenders", req("GET", "/v1/renders?page=0".into(), None)),
        (
            "submitRender",
            req("POST", "/v1/renders".into(), Some(Body::from("{}"))),
        ),
    ];
    // The archive holds every frame's current output, byte for byte.
    let (status, _, tar) = api
        .send(req("GET", format!("/v1/renders/{render}/archive"), None))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut entries = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at] != 0 {
        let name = String::from_utf8_lossy(&tar[at..at + 100])
            .trim_end_matches('\0')
            .to_string();
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&tar[at + 124..at + 135]).trim(), 8)
                .unwrap();
        let data = &tar[at + 512..at + 512 + size];
        entries.push((
            name,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data)),
        ));
        at += 512 + size.div_ceil(512) * 512;
    }
    assert_eq!(tar.len(), at + 1024, "two zero blocks end the archive");
    let frames_done: Vec<u32> = (task.frames.start..=task.frames.end).collect();
    assert_eq!(entries.len(), frames_done.len());
    let png = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(crate::png_of(8, 8)));
    for ((name, sha), frame) in entries.iter().zip(&frames_done) {
        assert_eq!(name, &format!("frame_{frame:04}.png"));
        assert_eq!(sha, &png);
    }
    let covered: std::collections::BTreeSet<&str> = cases.iter().map(|(op, _)| *op).collect();
    for op in contracts::gateway_public::operations() {
        assert!(
            covered.contains(op.id.as_str()),
            "{} has no request here",
            op.id
        );
    }
    for (op, request) in cases {
        let response = api::router(api.state.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        if let Err(problems) = contracts::gateway_public::validate_response(
            op,
            status,
            content_type.as_deref(),
            &bytes,
        ) {
            panic!(
                "{op} answered {status} off contract: {}\n{}",
                contracts::gateway_public::describe(&problems),
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

/// With a public key, tokens of that algorithm signed by its private key
/// pass; an HS256 token whose secret is the public key (the classic key
/// confusion) and a token of the other asymmetric algorithm do not.
#[tokio::test]
async fn public_key_tokens_pass_and_key_confusion_is_refused() {
    let ed_private = include_bytes!("keys/test-only-ed25519.pem");
    let ed_public = include_bytes!("keys/test-only-ed25519.pub.pem");
    let rsa_private = include_bytes!("keys/test-only-rsa.pem");
    let rsa_public = include_bytes!("keys/test-only-rsa.pub.pem");
    let (state, dir) = crate::state().await;
    let tenant = api::seed::tenant(&state.orchestrator, "Keys", 1, 10, 0)
        .await
        .unwrap()
        .as_uuid();
    let user = member(&state, tenant).await;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({ "sub": user, "tenant_id": tenant, "role": "member", "iss": "flatrender", "aud": "flatrender-api", "iat": now, "nbf": now, "exp": now + 600 });
    let sign = |alg: jsonwebtoken::Algorithm, key: jsonwebtoken::EncodingKey| {
        jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).unwrap()
    };
    use jsonwebtoken::{Algorithm, EncodingKey};
    let ed = sign(
        Algorithm::EdDSA,
        EncodingKey::from_ed_pem(ed_private).unwrap(),
    );
    let rs = sign(
        Algorithm::RS256,
        EncodingKey::from_rsa_pem(rsa_private).unwrap(),
    );
    let hs_with_ed_public = sign(Algorithm::HS256, EncodingKey::from_secret(ed_public));
    let hs_with_rsa_public = sign(Algorithm::HS256, EncodingKey::from_secret(rsa_public));
    for (algorithm, public, good, bad) in [
        ("EdDSA", &ed_public[..], &ed, [&rs, &hs_with_ed_public]),
        ("RS256", &rsa_public[..], &rs, [&ed, &hs_with_rsa_public]),
    ] {
        let jwt = Jwt::public_key(algorithm, public, "flatrender", "flatrender-api").unwrap();
        assert!(
            jwt.issue(user, tenant, Role::Member, chrono::Duration::hours(1))
                .is_none()
        );
        let state = state
            .clone()
            .with_auth(Auth::new(jwt, RateLimit::default()));
        let call = |token: &str| {
            api::router(state.clone()).oneshot(
                Request::get("/v1/renders")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
        };
        assert_eq!(
            call(good).await.unwrap().status(),
            StatusCode::OK,
            "{algorithm}"
        );
        for token in bad {
            assert_eq!(
                call(token).await.unwrap().status(),
                StatusCode::UNAUTHORIZED,
                "{algorithm}"
            );
        }
    }
    assert!(Jwt::public_key("HS256", ed_public, "flatrender", "flatrender-api").is_err());
    assert!(Jwt::hs256(b"too short", "flatrender", "flatrender-api").is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

/// Timeouts and dependencies are checked at submit: out-of-range values,
/// another tenant's render, an unknown one, one named twice are refused
/// with nothing appended; a render of one's own makes the new one wait.
#[tokio::test]
async fn timeouts_and_dependencies_are_checked_at_submit() {
    let api = Api::new().await;
    let scene_a = api.scene(api.a).await;
    let scene_b = api.scene(api.b).await;
    let (_, first) = api
        .call(api.a, "POST", "/v1/renders", Some(render_body(&scene_a)))
        .await;
    let first = first["id"].as_str().unwrap().to_string();
    let with = |scene: &str, extra: Value| {
        let mut body = render_body(scene);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let before = api.events().await;
    for (tenant, body, code) in [
        (
            api.a,
            with(&scene_a, json!({ "task_timeout_seconds": 0 })),
            "invalid_field",
        ),
        (
            api.a,
            with(&scene_a, json!({ "stall_timeout_seconds": 604_801 })),
            "invalid_field",
        ),
        (
            api.a,
            with(&scene_a, json!({ "task_timeout_seconds": -5 })),
            "invalid_body",
        ),
        (
            api.b,
            with(&scene_b, json!({ "depends_on": [first] })),
            "invalid_dependency",
        ),
        (
            api.a,
            with(&scene_a, json!({ "depends_on": [Uuid::new_v4()] })),
            "invalid_dependency",
        ),
        (
            api.a,
            with(&scene_a, json!({ "depends_on": [first, first] })),
            "invalid_field",
        ),
        (
            api.a,
            with(&scene_a, json!({ "depends_on": ["not-a-uuid"] })),
            "invalid_body",
        ),
    ] {
        let (status, value) = api
            .call(tenant, "POST", "/v1/renders", Some(body.clone()))
            .await;
        assert_error(status, &value, StatusCode::UNPROCESSABLE_ENTITY, code);
        assert_eq!(api.events().await, before, "{body}: nothing appended");
    }
    let (status, waiting) = api
        .call(
            api.a,
            "POST",
            "/v1/renders",
            Some(with(
                &scene_a,
                json!({ "depends_on": [first], "task_timeout_seconds": 600, "stall_timeout_seconds": 60 }),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{waiting}");
    assert_eq!(waiting["status"], "waiting");
    assert_eq!(waiting["depends_on"], json!([first]));
    api.catch_up().await;
    let (_, shown) = api
        .call(
            api.a,
            "GET",
            &format!("/v1/renders/{}", waiting["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(shown["status"], "waiting", "{shown}");
    assert_eq!(shown["task_timeout_seconds"], 600);
    assert_eq!(shown["stall_timeout_seconds"], 60);
    assert_eq!(shown["depends_on"], json!([first]));
}

#[tokio::test]
async fn operators_drain_enable_and_disable_nodes_and_nobody_else_does() {
    let api = Api::new().await;
    let node = crate::builtin_node(&api.state.orchestrator, "render-07").await;
    api.catch_up().await;
    let operator = api.operator_token(api.a).await;
    let shared = &api;
    let call = |token: String, method: &'static str, path: String| {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        async move {
            let (status, value, _) = shared.send(request).await;
            (status, value)
        }
    };
    // A member sees no node and changes none; nothing is appended.
    let before = api.events().await;
    let (status, body) = call(api.token(api.a), "GET", "/v1/nodes".into()).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = call(api.token(api.b), "POST", format!("/v1/nodes/{node}/drain")).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(api.events().await, before);

    let (status, list) = call(operator.clone(), "GET", "/v1/nodes".into()).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let row = &list["items"][0];
    assert_eq!(row["id"], node.to_string());
    assert_eq!(row["name"], "render-07");
    assert_eq!(row["status"], "online");
    assert_eq!(row["capabilities"]["cores"], 4);
    assert!(row["last_seen_at"].is_string());

    // Drained: it gets no new work, though work is queued.
    let scene = api.scene(api.a).await;
    let (status, _) = api
        .call(api.a, "POST", "/v1/renders", Some(render_body(&scene)))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = call(operator.clone(), "POST", format!("/v1/nodes/{node}/drain")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(api.state.orchestrator.claim(node).await.unwrap().is_none());
    // Draining twice is refused by the domain, in the error body.
    let (status, body) = call(operator.clone(), "POST", format!("/v1/nodes/{node}/drain")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    api.catch_up().await;
    let (_, list) = call(operator.clone(), "GET", "/v1/nodes?status=draining".into()).await;
    assert_eq!(list["total"], 1, "{list}");
    // Enabled again: it gets work.
    let (status, _) = call(operator.clone(), "POST", format!("/v1/nodes/{node}/enable")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(api.state.orchestrator.claim(node).await.unwrap().is_some());
    // Disabled: out of scheduling; an unknown node is 404.
    let (status, _) = call(
        operator.clone(),
        "POST",
        format!("/v1/nodes/{node}/disable"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    api.catch_up().await;
    let (_, list) = call(operator.clone(), "GET", "/v1/nodes?status=disabled".into()).await;
    assert_eq!(list["total"], 1, "{list}");
    let (status, body) = call(
        operator.clone(),
        "POST",
        format!("/v1/nodes/{}/enable", Uuid::new_v4()),
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    // Each change is an event of the node's stream, by the operator.
    let node_events = api
        .state
        .store
        .read_stream(node.as_uuid(), 1, 100)
        .await
        .unwrap();
    let keys: Vec<&str> = node_events.iter().map(|e| e.routing_key.as_str()).collect();
    assert!(
        keys.ends_with(&["node.drained.v1", "node.enabled.v1", "node.disabled.v1"]),
        "{keys:?}"
    );
    let actor = &node_events.last().unwrap().metadata["actor"];
    assert_eq!(actor["kind"], "user", "{actor}");
}

/// A render of tenant A with its first task leased to a new node and
/// started: (scene, render id, the assignment, its lease).
pub async fn started_task(
    api: &Api,
) -> (String, String, orchestrator::Assignment, domain::LeaseRef) {
    let node = crate::builtin_node(&api.state.orchestrator, "n1").await;
    let scene = api.scene(api.a).await;
    let (_, submitted) = api
        .call(api.a, "POST", "/v1/renders", Some(render_body(&scene)))
        .await;
    let render = submitted["id"].as_str().unwrap().to_string();
    let task = api.state.orchestrator.claim(node).await.unwrap().unwrap();
    let lease = domain::LeaseRef {
        task_id: domain::TaskId::new(task.task_id).unwrap(),
        node_id: node,
        lease_epoch: task.lease_epoch,
    };
    api.state
        .orchestrator
        .progress(lease, None, None)
        .await
        .unwrap();
    (scene, render, task, lease)
}

/// Stores `png` as the lease's output of `frame` and reports the frame done.
pub async fn frame_done(api: &Api, lease: domain::LeaseRef, frame: u32, png: &[u8]) -> String {
    let stored = api.state.blobs.put(png, None).await.unwrap();
    let file = api
        .state
        .orchestrator
        .record_output(
            lease,
            frame,
            orchestrator::FileOutput {
                name: domain::FileName::parse(format!("frame_{frame:04}.png")).unwrap(),
                content_type: domain::ContentType::parse("image/png").unwrap(),
                size_bytes: stored.size_bytes,
                sha256: domain::Sha256Digest::parse(stored.sha256.clone()).unwrap(),
            },
        )
        .await
        .unwrap();
    api.state
        .orchestrator
        .progress(lease, Some(frame), Some(file))
        .await
        .unwrap();
    stored.sha256
}

#[tokio::test]
async fn a_frame_thumbnail_is_a_small_png_cached_by_content() {
    let api = Api::new().await;
    let (_, render, task, lease) = started_task(&api).await;
    let frame = task.frames.start;
    let sha256 = frame_done(&api, lease, frame, &crate::png_of(600, 300)).await;
    api.catch_up().await;
    let path = format!("/v1/renders/{render}/frames/{frame}/thumbnail");
    let token = api.token(api.a);
    let req = |path: &str| {
        Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };
    let (status, _, bytes) = api.send(req(&path)).await;
    assert_eq!(status, StatusCode::OK);
    let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
    let info = decoder.read_info().unwrap().info().clone();
    assert_eq!((info.width, info.height), (256, 128));
    let cached = api
        .state
        .blobs
        .root()
        .join("thumbnails")
        .join(format!("{sha256}-256.png"));
    assert_eq!(std::fs::read(&cached).unwrap(), bytes);
    // Served from the cache the second time: the same bytes.
    let (_, _, again) = api.send(req(&path)).await;
    assert_eq!(again, bytes);
    // Other sizes: their own files; a size not offered is 422.
    let (status, _, small) = api.send(req(&format!("{path}?size=128"))).await;
    assert_eq!(status, StatusCode::OK);
    let decoder = png::Decoder::new(std::io::Cursor::new(&small));
    let info = decoder.read_info().unwrap().info().clone();
    assert_eq!((info.width, info.height), (128, 64));
    let (status, large, _) = api.send(req(&format!("{path}?size=300"))).await;
    assert_error(
        status,
        &large,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    // Another tenant's caller: 404, no thumbnail.
    let (status, body) = api
        .call(
            api.b,
            "GET",
            &format!("/v1/renders/{render}/frames/{frame}/thumbnail"),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_password_signs_in_and_guesses_are_refused() {
    let api = Api::new().await;
    let tenant = domain::TenantId::new(api.a).unwrap();
    let now = chrono::Utc::now();
    let user = api::users::create(
        &api.state.store,
        tenant,
        "Ann@Example.com",
        "Ann",
        Role::Admin,
        now,
    )
    .await
    .unwrap();
    let password = "a long enough passphrase";
    // Too short: refused, nothing stored.
    assert!(matches!(
        api::users::set_password(&api.state.store, user.as_uuid(), "short", now).await,
        Err(api::users::PasswordError::Length)
    ));
    assert!(
        api.state
            .store
            .user_password("ann@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let before = api.events().await;
    api::users::set_password(&api.state.store, user.as_uuid(), password, now)
        .await
        .unwrap();
    // The password is kept beside the log: nothing appended, nothing in it.
    assert_eq!(api.events().await, before);
    let log = api.state.store.read_all(0, 100_000).await.unwrap();
    let text = serde_json::to_string(&log.iter().map(|e| &e.payload).collect::<Vec<_>>()).unwrap();
    assert!(!text.contains(password) && !text.contains("argon2"));
    // Another user with the same address cannot take it.
    let other = api::users::create(
        &api.state.store,
        domain::TenantId::new(api.b).unwrap(),
        "ann@example.com",
        "Ann B",
        Role::Member,
        now,
    )
    .await
    .unwrap();
    assert!(matches!(
        api::users::set_password(
            &api.state.store,
            other.as_uuid(),
            "another passphrase!",
            now
        )
        .await,
        Err(api::users::PasswordError::EmailTaken(_))
    ));

    let sign_in = |email: &str, password: &str| {
        Request::post("/v1/auth/token")
            .header("content-type", "application/json")
            .body(Body::from(
                json!({ "email": email, "password": password }).to_string(),
            ))
            .unwrap()
    };
    // Right password (any case of the address): a token that works.
    let (status, body, _) = api.send(sign_in(" ANN@example.com ", password)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tenant_id"], api.a.to_string());
    assert_eq!(body["role"], "admin");
    let token = body["token"].as_str().unwrap();
    let (status, tenant_body, _) = api
        .send(
            Request::get("/v1/tenant")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tenant_body}");
    assert_eq!(tenant_body["id"], api.a.to_string());
    // A wrong password and an unknown address answer the same.
    let (status, wrong, _) = api.send(sign_in("ann@example.com", "not it at all")).await;
    assert_error(status, &wrong, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, unknown, _) = api.send(sign_in("nobody@example.com", password)).await;
    assert_error(status, &unknown, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(wrong["error"]["message"], unknown["error"]["message"]);
    // Guessing: after 5 failures the address is refused, even with the right password.
    for _ in 1..api::public::auth::SignInLimit::FAILURES {
        let (status, _, _) = api
            .send(sign_in("ann@example.com", "guess guess guess"))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, limited, _) = api.send(sign_in("ann@example.com", password)).await;
    assert_error(
        status,
        &limited,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    // A removed user cannot sign in.
    api::users::set_password(&api.state.store, other.as_uuid(), "irrelevant here", now)
        .await
        .ok();
    let bob = api::users::create(
        &api.state.store,
        tenant,
        "bob@example.com",
        "Bob",
        Role::Member,
        now,
    )
    .await
    .unwrap();
    api::users::set_password(&api.state.store, bob.as_uuid(), "bob's passphrase", now)
        .await
        .unwrap();
    api::users::remove(&api.state.store, bob, now)
        .await
        .unwrap();
    let (status, removed, _) = api
        .send(sign_in("bob@example.com", "bob's passphrase"))
        .await;
    assert_error(status, &removed, StatusCode::UNAUTHORIZED, "unauthorized");
    // Bad bodies get the error body.
    let (status, body, _) = api
        .send(
            Request::post("/v1/auth/token")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"email": "ann@example.com"}"#))
                .unwrap(),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
}

#[tokio::test]
async fn an_operator_lists_reads_and_controls_every_tenants_renders_and_others_cannot() {
    let api = Api::new().await;
    let scene_b = api.scene(api.b).await;
    let (status, theirs) = api
        .call(api.b, "POST", "/v1/renders", Some(render_body(&scene_b)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{theirs}");
    let theirs = theirs["id"].as_str().unwrap().to_string();
    api.catch_up().await;
    let operator = api.operator_token(api.a).await;
    let as_operator = |method: &str, path: String| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {operator}"))
            .body(Body::empty())
            .unwrap()
    };
    // A member of A: B's render does not exist, the farm's list is refused.
    let (status, body) = api
        .call(api.a, "GET", "/v1/renders?all_tenants=true", None)
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = api
        .call(api.a, "GET", &format!("/v1/renders/{theirs}"), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    // Without all_tenants the operator's list is its own tenant's.
    let (_, own) = {
        let (s, v, _) = api.send(as_operator("GET", "/v1/renders".into())).await;
        (s, v)
    };
    assert_eq!(own["total"], 0, "{own}");
    // With it: every tenant's, each with its tenant.
    let (status, all, _) = api
        .send(as_operator("GET", "/v1/renders?all_tenants=true".into()))
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["total"], 1, "{all}");
    assert_eq!(all["items"][0]["id"], theirs);
    assert_eq!(all["items"][0]["tenant_id"], api.b.to_string());
    // Read and control it by id.
    let (status, shown, _) = api
        .send(as_operator("GET", format!("/v1/renders/{theirs}")))
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["tenant_id"], api.b.to_string());
    let (status, tasks, _) = api
        .send(as_operator("GET", format!("/v1/renders/{theirs}/tasks")))
        .await;
    assert_eq!(status, StatusCode::OK, "{tasks}");
    let (status, paused, _) = api
        .send(as_operator("POST", format!("/v1/renders/{theirs}/pause")))
        .await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["status"], "paused");
    // The pause is the operator's, in B's render stream.
    let events = api
        .state
        .store
        .read_stream(Uuid::parse_str(&theirs).unwrap(), 1, 100)
        .await
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.routing_key, "render.job.paused.v1");
    assert_eq!(last.tenant_id, Some(api.b));
    // An unknown render is still 404 for an operator.
    let (status, body, _) = api
        .send(as_operator(
            "GET",
            format!("/v1/renders/{}", Uuid::new_v4()),
        ))
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn usage_per_day_has_the_charges_the_credit_added_and_the_closing_balance() {
    let api = Api::new().await;
    let tenant = domain::TenantId::new(api.a).unwrap();
    api.state
        .orchestrator
        .tenant_command(
            tenant,
            domain::TenantCommand::AddCredit {
                amount: domain::AmountMinor::new(2_500).unwrap(),
                reference: domain::Label::parse("top-up").unwrap(),
                at: chrono::Utc::now(),
            },
        )
        .await
        .unwrap();
    // One task rendered and charged.
    let (_, _, task, lease) = started_task(&api).await;
    for frame in task.frames.start..=task.frames.end {
        frame_done(&api, lease, frame, &crate::png_of(8, 8)).await;
    }
    api.state.orchestrator.complete(lease).await.unwrap();
    api.state.orchestrator.tick().await.unwrap();
    api.catch_up().await;
    let (status, usage) = api.call(api.a, "GET", "/v1/tenant/usage", None).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    let (_, shown) = api.call(api.a, "GET", "/v1/tenant", None).await;
    let today = &usage["items"].as_array().unwrap().last().unwrap().clone();
    // Everything happened today: the seed's credit and the top-up added,
    // the task charged, and the balance at the end is the balance now.
    assert_eq!(
        today["added_minor"], shown["added_minor"],
        "{usage} {shown}"
    );
    assert_eq!(
        today["charged_minor"], shown["charged_minor"],
        "{usage} {shown}"
    );
    assert_eq!(
        today["balance_minor"], shown["balance_minor"],
        "{usage} {shown}"
    );
    assert!(today["added_minor"].as_i64().unwrap() >= 100_000 + 2_500);
    assert!(today["charged_minor"].as_i64().unwrap() > 0);
    assert_eq!(today["tasks"], 1);
}
