//! The WebSocket contract with real agents, as a client written from
//! `contracts/websocket/render-progress.md` sees it: every message checked
//! against the contract's schemas, every frame once, a resumed client
//! ending with the same sequence as one that never left, a client that
//! never reads cut off without slowing the others; and task logs that
//! survive a node killed while its renderer prints.

use std::time::Duration;

use api::public::auth::{Auth, Jwt, RateLimit};
use domain::identity::Role;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::e2e::{Server, agent, server_with};

const SECRET: &[u8] = b"a websocket test secret, 32 bytes or more";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Farm {
    server: Server,
    jwt: Jwt,
    tenant: domain::TenantId,
    user: Uuid,
}

async fn farm() -> Farm {
    let jwt = Jwt::hs256(SECRET, "flatrender", "flatrender-api").unwrap();
    let auth = Auth::new(jwt.clone(), RateLimit::new(10_000, 10_000));
    let server = server_with(|s| s.with_auth(auth)).await;
    let tenant = api::seed::tenant(&server.state.orchestrator, "Studio", 1, 10, 1_000_000)
        .await
        .unwrap();
    let user = crate::public::member(&server.state, tenant.as_uuid()).await;
    Farm {
        server,
        jwt,
        tenant,
        user,
    }
}

impl Farm {
    fn token(&self) -> String {
        self.jwt
            .issue(
                self.user,
                self.tenant.as_uuid(),
                Role::Member,
                chrono::Duration::hours(1),
            )
            .unwrap()
    }

    fn ws(&self, path: &str, after: Option<i64>) -> String {
        let base = self.server.url.replace("http://", "ws://");
        let mut url = format!("{base}{path}?token={}", self.token());
        if let Some(a) = after {
            url.push_str(&format!("&after={a}"));
        }
        url
    }

    async fn connect(&self, path: &str, after: Option<i64>) -> Socket {
        tokio_tungstenite::connect_async(self.ws(path, after).as_str())
            .await
            .unwrap()
            .0
    }

    async fn render(&self, frames: u32, chunk: u32, resolution: Option<(u32, u32)>) -> Uuid {
        crate::demo_render(
            &self.server.state.orchestrator,
            &self.server.state.blobs,
            self.tenant,
            frames,
            chunk,
            resolution,
        )
        .await
        .as_uuid()
    }
}

/// The next message, checked against the contract; `None` when the
/// connection ends.
async fn next(socket: &mut Socket) -> Option<Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("a message within 60 s")?;
        match frame {
            Ok(Message::Text(text)) => {
                let message: Value = serde_json::from_str(text.as_str()).unwrap();
                contracts::websocket::validate_message(&message)
                    .unwrap_or_else(|e| panic!("off contract: {e}\n{message}"));
                return Some(message);
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn ended(m: &Value) -> bool {
    m["type"] == "render.status"
        && matches!(
            m["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
}

/// Stored-event messages (with a position), in order.
fn stored(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m["type"] != "snapshot" && m.get("position").is_some())
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_every_frame_once_and_a_resumed_one_ends_with_the_same_sequence() {
    let farm = farm().await;
    let render = farm.render(12, 2, Some((64, 48))).await;
    let path = format!("/v1/ws/renders/{render}");

    // Refused before the upgrade: no token, a forged one, another
    // tenant's render, a negative position.
    let http = reqwest::Client::new();
    for (url, status) in [
        (format!("{}{path}", farm.server.url), 401),
        (format!("{}{path}?token=forged", farm.server.url), 401),
        (
            farm.ws(&format!("/v1/ws/renders/{}", Uuid::new_v4()), None)
                .replace("ws://", "http://"),
            404,
        ),
        (farm.ws(&path, Some(-1)).replace("ws://", "http://"), 422),
    ] {
        let refused =
            tokio_tungstenite::connect_async(url.replace("http://", "ws://").as_str()).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), status, "{url}");
                let body: Value =
                    serde_json::from_slice(r.body().as_deref().unwrap_or_default()).unwrap();
                assert!(body["error"]["code"].is_string(), "{body}");
            }
            other => panic!("{url}: {other:?}"),
        }
        // A plain GET is refused the same way.
        let plain = http.get(&url).send().await.unwrap();
        assert_eq!(plain.status().as_u16(), status, "{url}");
    }

    let mut steady = farm.connect(&path, None).await;
    let mut resumed = farm.connect(&path, None).await;
    let steady_snapshot = next(&mut steady).await.unwrap();
    let first_snapshot = next(&mut resumed).await.unwrap();
    assert_eq!(steady_snapshot["type"], "snapshot");
    assert_eq!(steady_snapshot["render"]["frames_total"], 12);
    assert_eq!(steady_snapshot["tasks"].as_array().unwrap().len(), 6);

    let _a = agent(&farm.server, "ws-a").await;
    let _b = agent(&farm.server, "ws-b").await;

    let follower = tokio::spawn(async move {
        let mut seen = vec![steady_snapshot];
        while let Some(m) = next(&mut steady).await {
            let done = ended(&m);
            seen.push(m);
            if done {
                break;
            }
        }
        seen
    });
    // The second client leaves after its fourth finished frame and comes
    // back with the last position it handled.
    let mut got = vec![first_snapshot];
    let mut frames = 0;
    let mut last = got[0]["position"].as_i64().unwrap();
    while frames < 4 {
        let m = next(&mut resumed).await.expect("the stream goes on");
        if let Some(p) = m["position"].as_i64() {
            last = p;
        }
        frames += usize::from(m["type"] == "frame.done");
        got.push(m);
    }
    drop(resumed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = farm.connect(&path, Some(last)).await;
    loop {
        let m = next(&mut again).await.expect("the stream goes on");
        assert_ne!(m["type"], "snapshot", "no snapshot after ?after=");
        let done = ended(&m);
        got.push(m);
        if done {
            break;
        }
    }
    let seen = follower.await.unwrap();

    // Every frame once, each with its output.
    let mut done: Vec<u64> = seen
        .iter()
        .filter(|m| m["type"] == "frame.done")
        .map(|m| m["frame"].as_u64().unwrap())
        .collect();
    done.sort_unstable();
    assert_eq!(done, (1..=12).collect::<Vec<u64>>());
    assert!(
        seen.iter()
            .filter(|m| m["type"] == "frame.done")
            .all(|m| m["file_id"].is_string())
    );
    assert_eq!(seen.last().unwrap()["status"], "completed");

    // The same stored sequence, after the later snapshot of the two.
    let from = seen[0]["position"]
        .as_i64()
        .unwrap()
        .max(got[0]["position"].as_i64().unwrap());
    let after = |ms: &[Value]| -> Vec<Value> {
        stored(ms)
            .into_iter()
            .filter(|m| m["position"].as_i64().unwrap() > from)
            .collect()
    };
    assert_eq!(after(&seen), after(&got));

    // And that sequence is the render's stream in the log.
    let log: Vec<i64> = crate::log(&farm.server.state.store)
        .await
        .into_iter()
        .filter(|e| e.stream_id == render && e.global_position > from)
        .map(|e| e.global_position)
        .collect();
    let positions: Vec<i64> = after(&seen)
        .iter()
        .map(|m| m["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, log);
    let strictly_increasing = positions.windows(2).all(|w| w[0] < w[1]);
    assert!(strictly_increasing);

    // The tenant's stream starts with a snapshot of its unfinished renders.
    let mut tenant = farm.connect("/v1/ws/renders", None).await;
    let snapshot = next(&mut tenant).await.unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    assert!(
        snapshot["renders"].as_array().unwrap().is_empty(),
        "{snapshot}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off_and_the_others_get_everything() {
    let farm = farm().await;
    let render = farm.render(8, 2, Some((64, 48))).await;
    let path = format!("/v1/ws/renders/{render}");
    let follow = json!({ "type": "follow_logs" }).to_string();

    let mut stuck = farm.connect(&path, None).await;
    stuck.send(Message::text(follow.clone())).await.unwrap();
    let mut reader = farm.connect(&path, None).await;
    reader.send(Message::text(follow)).await.unwrap();
    assert_eq!(next(&mut reader).await.unwrap()["type"], "snapshot");
    let live = farm.server.state.live.clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while live.watchers() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    // Time for both follows to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let reading = tokio::spawn(async move {
        let mut lines = 0usize;
        let mut frames = std::collections::BTreeSet::new();
        while let Some(m) = next(&mut reader).await {
            if m["type"] == "log" {
                lines += m["lines"].as_array().unwrap().len();
            }
            if m["type"] == "frame.done" {
                frames.insert(m["frame"].as_u64().unwrap());
            }
            if ended(&m) {
                break;
            }
        }
        (lines, frames)
    });

    // Log messages of 4 KiB, paced so that a reading client keeps up,
    // far more than a socket's buffers and the channel hold together.
    let task = Uuid::new_v4();
    let text = "x".repeat(4096);
    let sent = 20_000;
    for i in 0..sent {
        live.publish(
            farm.tenant.as_uuid(),
            render,
            api::live::Kind::Log,
            task,
            &json!({
                "type": "log", "render_id": render, "task_id": task, "attempt": 1,
                "lines": [{ "stream": "stdout", "text": text }],
            }),
        );
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // The stuck client is gone; the reader still watches.
    tokio::time::timeout(Duration::from_secs(30), async {
        while live.watchers() > 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the client that never reads is disconnected");

    // The render runs to completion for the others.
    let _a = agent(&farm.server, "ws-slow-a").await;
    let (lines, frames) = tokio::time::timeout(Duration::from_secs(120), reading)
        .await
        .expect("the render completes")
        .unwrap();
    assert!(
        lines >= sent,
        "the reading client got {lines} of {sent} lines"
    );
    assert_eq!(frames, (1..=8).collect());

    // What the stuck client finds when it finally reads: its buffered
    // messages, then the end (the close code 4001 when it could be sent).
    let mut close = None;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(10), stuck.next()).await {
        match frame {
            Ok(Message::Close(Some(c))) => close = Some(u16::from(c.code)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(close.is_none_or(|c| c == 4001), "closed with {close:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_s_log_lines_are_kept_and_the_retry_has_its_own_log() {
    let farm = farm().await;
    // One task of one large frame: the builtin renderer prints a line per
    // eight rows for several seconds.
    let render = farm.render(1, 1, Some((960, 720))).await;
    let logs = farm.server.state.logs.clone();
    let mut victim = agent(&farm.server, "log-victim").await;
    let store = farm.server.state.store.clone();
    crate::until(&store, 60, "the task to start", |log| {
        crate::by(log, "render.task.started.v1").count() == 1
    })
    .await;
    let started = crate::by(&crate::log(&store).await, "render.task.started.v1")
        .next()
        .unwrap()
        .clone();
    let task = Uuid::parse_str(started.payload["task_id"].as_str().unwrap()).unwrap();
    let attempt = |n: u32| api::task_logs::Attempt {
        tenant_id: farm.tenant.as_uuid(),
        render_id: render,
        task_id: task,
        attempt: n,
    };
    // Kill -9 once a few row lines reached the server.
    let before = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(text) = logs.read(attempt(1), None).await.unwrap() {
                let rows = String::from_utf8_lossy(&text).matches("| Row ").count();
                if rows >= 3 {
                    return text;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("row lines reach the server while the frame renders");
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let before_text = String::from_utf8_lossy(&before).to_string();
    assert!(
        !before_text.contains("Saved"),
        "the frame finished before the kill: {before_text}"
    );

    let _rescuer = agent(&farm.server, "log-rescuer").await;
    crate::until(&store, 120, "the render to complete", |log| {
        crate::by(log, "render.job.completed.v1").count() == 1
    })
    .await;
    let first = String::from_utf8(logs.read(attempt(1), None).await.unwrap().unwrap()).unwrap();
    assert!(
        first.starts_with(&before_text),
        "what reached the server is kept"
    );
    assert!(!first.contains("Saved"));
    let epochs: Vec<u32> = crate::by(&crate::log(&store).await, "render.task.assigned.v1")
        .map(|e| e.payload["lease_epoch"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(epochs.len(), 2, "one retry");
    let second =
        String::from_utf8(logs.read(attempt(epochs[1]), None).await.unwrap().unwrap()).unwrap();
    assert!(second.starts_with("Fra:1 | Rendering 960x720"), "{second}");
    assert!(second.contains("Fra:1 | Saved frame_0001.png"), "{second}");

    // Over the public API, with the token: the attempts, and a tail.
    let http = reqwest::Client::new();
    let base = format!(
        "{}/v1/renders/{render}/tasks/{task}/attempts",
        farm.server.url
    );
    let attempts: Value = http
        .get(&base)
        .bearer_auth(farm.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let numbers: Vec<u64> = attempts["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![1, u64::from(epochs[1])]);
    let tail = http
        .get(format!("{base}/{}/log?tail=1", epochs[1]))
        .bearer_auth(farm.token())
        .send()
        .await
        .unwrap();
    assert_eq!(tail.headers()["content-type"], "text/plain; charset=utf-8");
    let tail = tail.text().await.unwrap();
    assert!(
        tail.starts_with("Fra:1 | Saved frame_0001.png") && tail.lines().count() == 1,
        "{tail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_every_tenants_renders_and_a_member_cannot() {
    let farm = farm().await;
    let other = api::seed::tenant(&farm.server.state.orchestrator, "Other", 1, 10, 1_000_000)
        .await
        .unwrap();
    let operator = api::users::create(
        &farm.server.state.store,
        farm.tenant,
        "ops@example.com",
        "Ops",
        Role::Operator,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let token = farm
        .jwt
        .issue(
            operator.as_uuid(),
            farm.tenant.as_uuid(),
            Role::Operator,
            chrono::Duration::hours(1),
        )
        .unwrap();
    let base = farm.server.url.replace("http://", "ws://");
    // A member asking for every tenant is refused before any upgrade.
    let refused = tokio_tungstenite::connect_async(
        format!("{}&all_tenants=true", farm.ws("/v1/ws/renders", None)).as_str(),
    )
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("a member watched the farm: {other:?}"),
    }
    // The operator sees a render of another tenant, live.
    let (mut socket, _) = tokio_tungstenite::connect_async(
        format!("{base}/v1/ws/renders?token={token}&all_tenants=true").as_str(),
    )
    .await
    .unwrap();
    let snapshot = next(&mut socket).await.unwrap();
    assert_eq!(snapshot["type"], "snapshot");
    let theirs = crate::demo_render(
        &farm.server.state.orchestrator,
        &farm.server.state.blobs,
        other,
        2,
        1,
        Some((32, 18)),
    )
    .await
    .as_uuid();
    let message = next(&mut socket).await.unwrap();
    assert_eq!(message["render_id"], theirs.to_string(), "{message}");
    assert_eq!(message["routing_key"], "render.job.submitted.v1");
    // Nodes' events reach the farm's watchers as node.status (checked
    // against the contract by `next`): registered, online, drained.
    let node = crate::builtin_node(&farm.server.state.orchestrator, "n-live").await;
    farm.server
        .state
        .orchestrator
        .operate_node(
            node,
            eventstore::Actor::User {
                id: operator.as_uuid(),
            },
            |at| domain::NodeCommand::Drain { at },
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let m = next(&mut socket).await.unwrap();
        if m["type"] == "node.status" {
            assert_eq!(m["node_id"], node.to_string(), "{m}");
            seen.push(m);
        }
    }
    assert_eq!(seen[0]["routing_key"], "node.registered.v1");
    assert_eq!(seen[0]["name"], "n-live");
    assert_eq!(seen[1]["connectivity"], "online");
    assert_eq!(seen[2]["availability"], "draining");
    assert!(seen[2]["connectivity"].is_null());
}
