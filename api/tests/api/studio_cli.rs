//! A studio's whole flow through the `flatrender` CLI against a real
//! `flatrender serve` on PostgreSQL with real agent processes: upload,
//! submit, list, watch to completion, download every frame (hashes
//! compared), and a second render cancelled mid-way whose tasks stop.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eventstore::{AnyStore, SystemClock};

use crate::faults::{PgDatabase, Serve, agent, free_port, temp_dir};
use crate::{by, log};

const SECRET: &str = "the e2e test's secret, at least 32 bytes";

/// Runs `flatrender` with the server and token of the test; (success,
/// stdout, stderr).
fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flatrender"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `flatrender` with `input` on its standard input.
fn cli_with_input(args: &[&str], env: &[(&str, &str)], input: &str) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flatrender"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_studio_renders_through_the_cli_against_a_remote_server_on_postgres() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let dir = temp_dir("studio");
    let store = AnyStore::open(Some(&db.url), &dir).await.unwrap();
    let orch = orchestrator::Orchestrator::open(
        store.clone(),
        std::sync::Arc::new(SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .unwrap();
    let tenant = api::seed::tenant(&orch, "Studio", 1, 100, 10_000_000)
        .await
        .unwrap()
        .to_string();
    let port = free_port();
    let serve = Serve::start_with(
        &dir,
        Some(&db.url),
        port,
        &[("FLATRENDER_JWT_SECRET", SECRET)],
    )
    .await;
    let _agents = [
        agent(&store, &dir, "studio-node-1", &[&serve.url]).await,
        agent(&store, &dir, "studio-node-2", &[&serve.url]).await,
    ];
    let operator = [
        ("FLATRENDER_JWT_SECRET", SECRET),
        ("DATABASE_URL", db.url.as_str()),
    ];
    let (ok, out, err) = cli(
        &[
            "user",
            "create",
            "--tenant",
            &tenant,
            "--email",
            "artist@example.com",
        ],
        &operator,
    );
    assert!(ok, "{err}");
    let user = field(&out, "user_id");
    // A user with a password (from standard input, never the command line)
    // signs in over HTTP; too short a password registers nobody.
    let create = |email: &str, password: &str| {
        cli_with_input(
            &[
                "user",
                "create",
                "--tenant",
                &tenant,
                "--email",
                email,
                "--role",
                "operator",
                "--password-stdin",
            ],
            &operator,
            &format!("{password}\n"),
        )
    };
    let (ok, _, err) = create("short@example.com", "too short");
    assert!(!ok && err.contains("12 to 1024 characters"), "{err}");
    let (ok, out, err) = create("ops@example.com", "a passphrase for the farm");
    assert!(ok, "{err}");
    let operator_id = field(&out, "user_id");
    let signed_in: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/auth/token", serve.url))
        .json(&serde_json::json!({ "email": "ops@example.com", "password": "a passphrase for the farm" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(signed_in["user_id"], operator_id, "{signed_in}");
    assert_eq!(signed_in["role"], "operator");
    // The operator's token reaches the farm's nodes (a member's would not).
    let nodes = reqwest::Client::new()
        .get(format!("{}/v1/nodes", serve.url))
        .bearer_auth(signed_in["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(nodes.status(), 200);
    let (ok, token, err) = cli(&["token", "issue", "--user", &user], &operator);
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    let env = [
        ("FLATRENDER_SERVER", serve.url.as_str()),
        ("FLATRENDER_TOKEN", token.as_str()),
    ];
    let scene = "../node-agent/scenes/demo.json";

    let submit = |frames: &str, key: &str| {
        cli(
            &[
                "render",
                "submit",
                "--scene",
                scene,
                "--last-frame",
                frames,
                "--chunk-size",
                "2",
                "--resolution",
                "64x36",
                "--idempotency-key",
                key,
            ],
            &env,
        )
    };
    let (ok, out, err) = submit("12", "e2e-first");
    assert!(ok, "{err}");
    let first = field(&out, "render_id");
    // A retried submission is the same render.
    let (ok, again, err) = submit("12", "e2e-first");
    assert!(ok, "{err}");
    assert_eq!(field(&again, "render_id"), first);

    let (ok, _, err) = cli(&["render", "watch", &first], &env);
    assert!(ok, "watch did not end with a completed render: {err}");
    let (ok, listed, err) = cli(&["render", "list", "--status", "completed"], &env);
    assert!(ok && listed.contains(&first), "{listed} {err}");

    let frames_dir = dir.join("downloaded");
    let (ok, out, err) = cli(
        &[
            "render",
            "download",
            &first,
            "--out",
            frames_dir.to_str().unwrap(),
        ],
        &env,
    );
    assert!(ok, "{err}");
    assert!(out.contains("12 frames"), "{out}");
    // Each downloaded file is the frame's current output in the log.
    let events = log(&store).await;
    let job: domain::JobId = first.parse().unwrap();
    for (frame, file_id) in orch_outputs(&store, job).await {
        let sha = by(&events, "file.output_stored.v1")
            .find(|e| e.payload["file_id"] == file_id.to_string())
            .and_then(|e| e.payload["sha256"].as_str().map(str::to_string))
            .unwrap();
        let bytes = std::fs::read(frames_dir.join(format!("frame_{frame:04}.png"))).unwrap();
        assert_eq!(sha2_hex(&bytes), sha, "frame {frame}");
    }

    // A long render, cancelled once it is under way: its tasks stop.
    let (ok, out, err) = cli(
        &[
            "render",
            "submit",
            "--scene",
            scene,
            "--last-frame",
            "400",
            "--chunk-size",
            "1",
            "--resolution",
            "320x180",
        ],
        &env,
    );
    assert!(ok, "{err}");
    let second = field(&out, "render_id");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = log(&store).await;
        let done = by(&events, "render.task.completed.v1")
            .filter(|e| e.payload["job_id"] == second.as_str())
            .count();
        if done >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second render never got going"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, out, err) = cli(&["render", "cancel", &second], &env);
    assert!(ok && out.contains("cancelled"), "{out} {err}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = log(&store).await;
    let cancelled_at = by(&events, "render.job.cancelled.v1")
        .find(|e| e.payload["job_id"] == second.as_str())
        .unwrap()
        .global_position;
    let assigned_after = by(&events, "render.task.assigned.v1")
        .filter(|e| e.payload["job_id"] == second.as_str() && e.global_position > cancelled_at)
        .count();
    assert_eq!(assigned_after, 0, "tasks were leased after the cancel");
    let completed = by(&events, "render.task.completed.v1")
        .filter(|e| e.payload["job_id"] == second.as_str())
        .count();
    assert!(completed < 400, "the cancelled render ran to the end");
    // The read model says so too, through the CLI.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, _) = cli(&["render", "show", &second], &env);
        if ok && out.contains("\"cancelled\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the read model never showed the cancel: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, out, err) = cli(&["tenant", "show"], &env);
    assert!(ok && out.contains("balance_minor"), "{out} {err}");
    // A removed user's token stops working.
    let (ok, _, err) = cli(&["user", "remove", "--user", &user], &operator);
    assert!(ok, "{err}");
    tokio::time::sleep(api::users::CHECK_TTL + Duration::from_millis(500)).await;
    let (ok, _, err) = cli(&["render", "list"], &env);
    assert!(
        !ok && err.contains("401"),
        "a removed user still lists: {err}"
    );

    drop(serve);
    drop(store);
    db.drop_it().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn orch_outputs(store: &AnyStore, job: domain::JobId) -> Vec<(u32, domain::FileId)> {
    let orch = orchestrator::Orchestrator::open(
        store.clone(),
        std::sync::Arc::new(SystemClock),
        orchestrator::Config::default(),
    )
    .await
    .unwrap();
    let outputs = orch.current_outputs(job).await;
    assert_eq!(outputs.len(), 12);
    outputs
}

fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
