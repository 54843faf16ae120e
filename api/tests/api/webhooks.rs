//! Webhooks against a real HTTP receiver started here: signatures verify
//! with the Standard Webhooks algorithm (written here from the
//! specification, not from the server's code); a receiver that answers
//! 500 twice then 200 gets three attempts, each an event; one that hangs
//! is cut off and finally abandoned; private addresses are refused unless
//! allowed; another tenant's endpoint hears nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use domain::notification::NotificationKind;
use eventstore::Actor;
use hmac::{KeyInit, Mac};

use crate::public::{Api, render_body};
use crate::until;

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A receiver: `/ok` answers 200, `/flaky` 500 twice then 200, `/hang`
/// never answers in time.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let calls: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let (g, c) = (got.clone(), calls.clone());
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let (g, c) = (g.clone(), c.clone());
            async move {
                let path = uri.path().to_string();
                g.lock().unwrap().push(Received {
                    path: path.clone(),
                    headers,
                    body: body.to_vec(),
                });
                let n = {
                    let mut c = c.lock().unwrap();
                    let n = c.entry(path.clone()).or_default();
                    *n += 1;
                    *n
                };
                match path.as_str() {
                    "/flaky" if n <= 2 => StatusCode::INTERNAL_SERVER_ERROR,
                    "/hang" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        StatusCode::OK
                    }
                    "/moved" => StatusCode::FOUND,
                    _ => StatusCode::OK,
                }
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// The Standard Webhooks verification, from the specification.
fn verifies(secret: &str, r: &Received) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let h = |name: &str| r.headers.get(name).unwrap().to_str().unwrap().to_string();
    let (id, ts) = (h("webhook-id"), h("webhook-timestamp"));
    let ts_n: i64 = ts.parse().unwrap();
    if (chrono::Utc::now().timestamp() - ts_n).abs() > 300 {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    h("webhook-signature").split(' ').any(|s| s == expected)
}

fn tenant(api: &Api, t: uuid::Uuid) -> domain::TenantId {
    let _ = api;
    domain::TenantId::new(t).unwrap()
}

fn user() -> Actor {
    Actor::User {
        id: uuid::Uuid::new_v4(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_signed_retried_cut_off_and_recorded_as_events() {
    let api = Api::new().await;
    let config = api::webhooks::WebhookConfig {
        allow_private: true,
        timeout: Duration::from_millis(500),
        first_retry: Duration::from_millis(100),
        max_attempts: 3,
        ..Default::default()
    };
    let state = api.state.clone().with_webhooks(config.clone());
    let (url, got) = receiver().await;
    let store = &state.store;
    let register = |t, path: &str, kinds: Vec<NotificationKind>| {
        let url = format!("{url}{path}");
        let (state, config) = (state.clone(), config.clone());
        async move {
            api::webhooks::register(&state.store, &state.vault, &config, t, &url, kinds, user())
                .await
                .unwrap()
        }
    };
    let a = tenant(&api, api.a);
    let cancelled = vec![NotificationKind::RenderCancelled];
    let ok = register(a, "/ok", cancelled.clone()).await;
    let flaky = register(a, "/flaky", cancelled.clone()).await;
    let hang = register(a, "/hang", cancelled.clone()).await;
    let moved = register(a, "/moved", cancelled.clone()).await;
    let other_kind = register(a, "/other-kind", vec![NotificationKind::RenderCompleted]).await;
    let other_tenant = register(tenant(&api, api.b), "/b", cancelled.clone()).await;
    // The secret is never in the log.
    let log = crate::log(store).await;
    assert!(
        !log.iter()
            .any(|e| e.payload.to_string().contains(&ok.secret[6..])),
        "a secret in the log"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(state.dispatcher.clone().unwrap().run(stopped));

    let scene = api.scene(api.a).await;
    let (_, render) = api
        .call(api.a, "POST", "/v1/renders", Some(render_body(&scene)))
        .await;
    let render = render["id"].as_str().unwrap().to_string();
    let (status, body) = api
        .call(api.a, "POST", &format!("/v1/renders/{render}/cancel"), None)
        .await;
    assert!(status.is_success(), "{status} {body}");

    let of =
        |events: &[eventstore::RecordedEvent], endpoint: &api::webhooks::Registered, key: &str| {
            events
                .iter()
                .filter(|e| e.stream_id == endpoint.endpoint_id.as_uuid() && e.routing_key == key)
                .cloned()
                .collect::<Vec<_>>()
        };
    until(
        store,
        60,
        "every notification delivered or abandoned",
        |events| {
            of(events, &ok, "notification.delivered.v1").len() == 1
                && of(events, &flaky, "notification.delivered.v1").len() == 1
                && of(events, &hang, "notification.abandoned.v1").len() == 1
                && of(events, &moved, "notification.abandoned.v1").len() == 1
        },
    )
    .await;
    let events = crate::log(store).await;
    // One request each, about the render.
    for e in [&ok, &flaky, &hang, &moved] {
        let requested = of(&events, e, "notification.requested.v1");
        assert_eq!(requested.len(), 1);
        assert_eq!(requested[0].payload["job_id"], render.as_str());
        assert_eq!(requested[0].payload["kind"], "render_cancelled");
    }
    assert_eq!(
        of(&events, &ok, "notification.delivered.v1")[0].payload["attempt"],
        1
    );
    // 500, 500, 200: two failed attempts and the delivery, as events.
    let failed = of(&events, &flaky, "notification.attempt_failed.v1");
    assert_eq!(failed.len(), 2);
    for (i, f) in failed.iter().enumerate() {
        assert_eq!(f.payload["attempt"], i as u64 + 1);
        assert_eq!(f.payload["status_code"], 500);
        assert!(f.payload["next_attempt_at"].is_string());
    }
    assert_eq!(
        of(&events, &flaky, "notification.delivered.v1")[0].payload["attempt"],
        3
    );
    // A hanging receiver is cut off each time, then given up on.
    let hung = of(&events, &hang, "notification.attempt_failed.v1");
    assert_eq!(hung.len(), 3);
    assert!(
        hung.iter().all(|f| f.payload["error"] == "timed out"),
        "{hung:?}"
    );
    assert!(hung[2].payload["next_attempt_at"].is_null());
    // A redirect is not followed: a failure.
    assert_eq!(
        of(&events, &moved, "notification.attempt_failed.v1")[0].payload["status_code"],
        302
    );
    // Nothing for an endpoint that wants other events, or of another tenant.
    assert!(of(&events, &other_kind, "notification.requested.v1").is_empty());
    assert!(of(&events, &other_tenant, "notification.requested.v1").is_empty());

    // The tenant lists its endpoints (as the running dispatcher read
    // them), never their secrets; another tenant does not see them.
    let list = |t| {
        let (state, token) = (state.clone(), api.token(t));
        async move {
            use tower::ServiceExt;
            let response = api::router(state)
                .oneshot(
                    axum::http::Request::get("/v1/webhooks")
                        .header("authorization", format!("Bearer {token}"))
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            String::from_utf8(bytes.to_vec()).unwrap()
        }
    };
    let listed = list(api.a).await;
    assert!(listed.contains(&ok.endpoint_id.to_string()), "{listed}");
    assert!(!listed.contains("whsec_"), "{listed}");
    assert!(!list(api.b).await.contains(&ok.endpoint_id.to_string()));
    let received = got.lock().unwrap().clone();
    let at = |path: &str| {
        received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(at("/ok").len(), 1);
    assert_eq!(at("/flaky").len(), 3);
    assert!(!at("/moved").is_empty() && at("/other-kind").is_empty() && at("/b").is_empty());
    for r in at("/ok") {
        assert!(verifies(&ok.secret, &r), "the signature verifies");
        assert!(
            !verifies(&flaky.secret, &r),
            "not with another endpoint's secret"
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["type"], "render.cancelled");
        assert_eq!(body["data"]["render_id"], render.as_str());
    }
    let flaky_calls = at("/flaky");
    assert!(flaky_calls.iter().all(|r| verifies(&flaky.secret, r)));
    // Retries are the same message: same id, same body.
    let ids: std::collections::BTreeSet<_> = flaky_calls
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1);
    assert!(flaky_calls.iter().all(|r| r.body == flaky_calls[0].body));
    stop.send(true).unwrap();
    running.await.unwrap();

    // A dispatcher started again from its checkpoint requests nothing twice.
    let before = crate::log(store).await.len();
    let restart = || async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let again = api.state.clone().with_webhooks(config.clone());
        let running = tokio::spawn(again.dispatcher.clone().unwrap().run(stopped));
        tokio::time::sleep(Duration::from_millis(800)).await;
        stop.send(true).unwrap();
        running.await.unwrap();
    };
    restart().await;
    assert_eq!(crate::log(store).await.len(), before);
    // Nor one whose checkpoint is gone (the checkpoint moves lazily; the
    // endpoints' streams are what keep a request from being made twice):
    // it reads the whole log again and asks for nothing.
    let eventstore::AnyStore::Sqlite(sqlite) = store else {
        unreachable!("the API tests run on SQLite")
    };
    let deleted = sqlite
        .with_writer(async |conn| {
            sqlx::query("DELETE FROM follower_checkpoints WHERE name = 'webhooks'")
                .execute(&mut *conn)
                .await
                .unwrap()
                .rows_affected()
        })
        .await;
    assert_eq!(deleted, 1, "the dispatcher kept a checkpoint");
    restart().await;
    assert_eq!(crate::log(store).await.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_and_other_schemes_are_refused_unless_allowed() {
    let api = Api::new().await;
    let before = api.events().await;
    let strict = api::webhooks::WebhookConfig::default();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost/hook",
        "https://example.com/hook",
        "http://user:pass@example.com/hook",
        "ftp://example.com/hook",
        "not a url",
    ] {
        let refused = api::webhooks::register(
            &api.state.store,
            &api.state.vault,
            &strict,
            tenant(&api, api.a),
            url,
            vec![NotificationKind::RenderCompleted],
            user(),
        )
        .await;
        assert!(
            matches!(refused, Err(api::webhooks::WebhookError::Invalid(_))),
            "{url}: {refused:?}"
        );
    }
    assert_eq!(
        api.events().await,
        before,
        "a refused endpoint appended something"
    );
    // Allowed by the operator: loopback is fine.
    let allowed = api::webhooks::WebhookConfig {
        allow_private: true,
        ..Default::default()
    };
    assert!(
        api::webhooks::register(
            &api.state.store,
            &api.state.vault,
            &allowed,
            tenant(&api, api.a),
            "http://127.0.0.1:9/hook",
            vec![NotificationKind::RenderCompleted],
            user(),
        )
        .await
        .is_ok()
    );
}
