//! Task timeouts and dependencies between renders, with real agents and a
//! test renderer (a fake `blender` that hangs or fails on demand), and an
//! in-process node that does not stop when told.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use domain::{JobId, LeaseRef, TaskId};
use eventstore::RecordedEvent;

use crate::e2e::{Server, agent_with, server};
use crate::{by, log, until};

/// A fake `blender`: reads `-o` and `-f`, then by the scene's content
/// hangs silently once (`STALL`), prints without end once (`BUSY`), fails
/// (`FAIL`), or prints its samples and writes the frame.
fn fake_blender(dir: &Path) -> PathBuf {
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, 4, 3);
        enc.set_color(png::ColorType::Rgb);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[90; 4 * 3 * 3]).unwrap();
    }
    std::fs::write(dir.join("fixture.png"), png).unwrap();
    let exe = dir.join("fake-blender");
    let script = format!(
        r#"#!/bin/sh
out=""; frame=""; scene=""
while [ $# -gt 0 ]; do
  case "$1" in
    -Y) scene="$2"; shift 2;;
    -o) out="$2"; shift 2;;
    -f) frame="$2"; shift 2;;
    *) shift;;
  esac
done
echo "Fra:$frame | Sample 1/4"
if grep -q FAIL "$scene"; then echo "Error: cannot read scene" >&2; exit 1; fi
if grep -q STALL "$scene" && [ ! -e "{dir}/stalled" ]; then touch "{dir}/stalled"; sleep 600; fi
if grep -q BUSY "$scene" && [ ! -e "{dir}/busy" ]; then
  touch "{dir}/busy"
  while true; do echo "Fra:$frame | still busy"; sleep 0.2; done
fi
echo "Fra:$frame | Sample 4/4"
cp "{dir}/fixture.png" "$(printf '%s/frame_%04d.png' "$(dirname "$out")" "$frame")"
"#,
        dir = dir.display()
    );
    std::fs::write(&exe, script).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

async fn blender_render(
    server: &Server,
    tenant: domain::TenantId,
    content: &str,
    render: api::seed::Render,
) -> JobId {
    let orch = &server.state.orchestrator;
    let scene = api::seed::scene(
        orch,
        &server.state.blobs,
        tenant,
        "shot.blend",
        format!("BLENDER-v304 {content}").as_bytes(),
    )
    .await
    .unwrap();
    api::seed::submit(
        orch,
        tenant,
        scene,
        &api::seed::Render {
            renderer: "blender".into(),
            ..render
        },
    )
    .await
    .unwrap()
}

fn of(events: &[RecordedEvent], job: JobId, key: &str) -> Vec<RecordedEvent> {
    by(events, key)
        .filter(|e| e.stream_id == job.as_uuid())
        .cloned()
        .collect()
}

fn position(events: &[RecordedEvent], job: JobId, key: &str) -> i64 {
    of(events, job, key)
        .first()
        .unwrap_or_else(|| panic!("no {key} for {job}"))
        .global_position
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_renderer_is_stopped_by_each_timeout_and_the_retry_succeeds() {
    let server = server().await;
    let tenant = api::seed::tenant(&server.state.orchestrator, "Studio", 1, 10, 1_000_000)
        .await
        .unwrap();
    let bin = server.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let blender = fake_blender(&bin);
    let _agent = agent_with(
        &server,
        "timeouts",
        &["--blender".as_ref(), blender.as_os_str()],
    )
    .await;
    let stalled = blender_render(
        &server,
        tenant,
        "STALL",
        api::seed::Render {
            frames: (1, 1),
            chunk_size: 1,
            stall_timeout_seconds: Some(2),
            ..Default::default()
        },
    )
    .await;
    let busy = blender_render(
        &server,
        tenant,
        "BUSY",
        api::seed::Render {
            frames: (1, 1),
            chunk_size: 1,
            task_timeout_seconds: Some(3),
            stall_timeout_seconds: Some(2),
            ..Default::default()
        },
    )
    .await;
    let store = server.state.store.clone();
    until(&store, 90, "both renders to complete", |events| {
        [stalled, busy]
            .iter()
            .all(|j| !of(events, *j, "render.job.completed.v1").is_empty())
    })
    .await;
    let events = log(&store).await;
    for (job, cause) in [(stalled, "stalled"), (busy, "timed_out")] {
        let failed = of(&events, job, "render.task.failed.v1");
        assert_eq!(failed.len(), 1, "{cause}: one failed attempt");
        assert_eq!(failed[0].payload["cause"], cause);
        // The agent stopped it (the orchestrator's would say the node
        // did not).
        let error = failed[0].payload["error"].as_str().unwrap();
        assert!(
            error.starts_with(cause) && !error.contains("did not stop"),
            "{error}"
        );
        let requeued = of(&events, job, "render.task.requeued.v1");
        assert_eq!(requeued[0].payload["reason"], "retry");
        assert_eq!(of(&events, job, "render.task.assigned.v1").len(), 2);
        // The stopped attempt's log says why, the retry's finished.
        let task = failed[0].payload["task_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let attempt = |n| api::task_logs::Attempt {
            tenant_id: tenant.as_uuid(),
            render_id: job.as_uuid(),
            task_id: task,
            attempt: n,
        };
        let first = server
            .state
            .logs
            .read(attempt(1), None)
            .await
            .unwrap()
            .unwrap();
        let first = String::from_utf8(first).unwrap();
        assert!(
            first.contains(&format!("[flatrender-node] {cause}")),
            "{first}"
        );
        let second = server
            .state
            .logs
            .read(attempt(2), None)
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8(second).unwrap().contains("Sample 4/4"));
    }
    // The busy render printed all along: it was the task timeout, not
    // the stall timeout, that stopped it.
    let first_busy = of(&events, busy, "render.task.started.v1")[0].recorded_at;
    let failed_busy = of(&events, busy, "render.task.failed.v1")[0].recorded_at;
    assert!((failed_busy - first_busy).num_milliseconds() >= 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_stop_is_failed_by_the_orchestrator_and_its_late_reports_refused() {
    let server = server().await;
    let orch = server.state.orchestrator.clone();
    let tenant = api::seed::tenant(&orch, "Studio", 1, 10, 1_000_000)
        .await
        .unwrap();
    let node = crate::builtin_node(&orch, "stubborn").await;
    let scene = api::seed::scene(
        &orch,
        &server.state.blobs,
        tenant,
        "demo.json",
        node_agent::renderer::builtin::DEMO_SCENE.as_bytes(),
    )
    .await
    .unwrap();
    let mut leases = Vec::new();
    for (task, stall) in [(Some(1), None), (None, Some(1))] {
        let job = api::seed::submit(
            &orch,
            tenant,
            scene,
            &api::seed::Render {
                frames: (1, 1),
                chunk_size: 1,
                task_timeout_seconds: task,
                stall_timeout_seconds: stall,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let a = orch.claim(node).await.unwrap().expect("a task");
        assert_eq!(a.job_id, job.as_uuid());
        assert_eq!(a.task_timeout_seconds, task);
        assert_eq!(a.stall_timeout_seconds, stall);
        let lease = LeaseRef {
            task_id: TaskId::new(a.task_id).unwrap(),
            node_id: node,
            lease_epoch: a.lease_epoch,
        };
        orch.progress(lease, None, None).await.unwrap();
        leases.push((job, lease));
    }
    // The node keeps heartbeating (so its leases do not expire) and never
    // stops; the orchestrator fails both a few seconds past their limits.
    let store = server.state.store.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let held: Vec<LeaseRef> = leases.iter().map(|(_, l)| *l).collect();
    let told_to_stop = loop {
        let told_to_stop = orch.heartbeat(node, &held).await.unwrap();
        let events = log(&store).await;
        let failed = by(&events, "render.task.failed.v1").count();
        if failed == 2 && told_to_stop.len() == 2 {
            break told_to_stop;
        }
        assert!(std::time::Instant::now() < deadline, "not failed in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(told_to_stop.len(), 2, "told to stop on its next request");
    let events = log(&store).await;
    for ((job, lease), cause) in leases.iter().zip(["timed_out", "stalled"]) {
        let failed = of(&events, *job, "render.task.failed.v1");
        assert_eq!(failed[0].payload["cause"], cause);
        assert!(
            failed[0].payload["error"]
                .as_str()
                .unwrap()
                .contains("did not stop")
        );
        // Its late reports are refused by the fencing token.
        let before = log(&store).await.len();
        let late = orch.complete(*lease).await;
        assert!(late.is_err(), "a late completion is refused: {late:?}");
        assert_eq!(log(&store).await.len(), before, "nothing recorded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_chain_runs_in_order_and_a_failure_fails_what_waits_for_it() {
    let server = server().await;
    let orch = server.state.orchestrator.clone();
    let tenant = api::seed::tenant(&orch, "Studio", 1, 10, 1_000_000)
        .await
        .unwrap();
    let other = api::seed::tenant(&orch, "Other", 1, 10, 1_000_000)
        .await
        .unwrap();
    let bin = server.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let blender = fake_blender(&bin);
    let store = server.state.store.clone();

    let frames = |depends_on: Vec<JobId>, max_retries| api::seed::Render {
        frames: (1, 2),
        chunk_size: 1,
        max_retries,
        depends_on,
        ..Default::default()
    };
    let a = blender_render(&server, tenant, "ok", frames(vec![], 3)).await;
    let b = blender_render(&server, tenant, "ok", frames(vec![a], 3)).await;
    let c = blender_render(&server, tenant, "ok", frames(vec![b], 3)).await;
    let a2 = blender_render(&server, tenant, "FAIL", frames(vec![], 0)).await;
    let b2 = blender_render(&server, tenant, "ok", frames(vec![a2], 3)).await;
    let c2 = blender_render(&server, tenant, "ok", frames(vec![b2, a], 3)).await;
    let events = log(&store).await;
    for job in [b, c, b2, c2] {
        assert_eq!(of(&events, job, "render.job.waiting.v1").len(), 1);
    }

    // Refused with nothing appended: a cycle (a render that waits for
    // itself), another tenant's render, an unknown one.
    let scene = api::seed::scene(&orch, &server.state.blobs, tenant, "x.blend", b"BLENDER ok")
        .await
        .unwrap();
    let own = JobId::new(uuid::Uuid::new_v4()).unwrap();
    let foreign = blender_render(&server, other, "ok", frames(vec![], 0)).await;
    let after_foreign = log(&store).await.len();
    for (depends_on, what) in [
        (vec![own], "cycle"),
        (vec![foreign], "this tenant"),
        (
            vec![JobId::new(uuid::Uuid::new_v4()).unwrap()],
            "this tenant",
        ),
    ] {
        let refused = orch
            .submit(domain::SubmitJob {
                job_id: own,
                tenant_id: tenant,
                name: domain::Label::parse("loop").unwrap(),
                scene_file_id: scene,
                renderer: domain::Identifier::parse("blender").unwrap(),
                frames: domain::FrameRange::new(1, 1).unwrap(),
                chunk_size: domain::ChunkSize::new(1).unwrap(),
                resolution: None,
                samples: None,
                priority: domain::Priority::new(50).unwrap(),
                requirements: Default::default(),
                max_retries: 0,
                task_timeout_seconds: None,
                stall_timeout_seconds: None,
                depends_on,
                at: chrono::Utc::now(),
            })
            .await;
        match refused {
            Err(orchestrator::OrchestratorError::InvalidDependency(m)) => {
                assert!(m.contains(what), "{m}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(log(&store).await.len(), after_foreign, "nothing appended");
    }

    let _agent = agent_with(
        &server,
        "deps",
        &["--blender".as_ref(), blender.as_os_str()],
    )
    .await;
    until(&store, 120, "the chains to end", |events| {
        !of(events, c, "render.job.completed.v1").is_empty()
            && !of(events, c2, "render.job.dependency_failed.v1").is_empty()
    })
    .await;
    let events = log(&store).await;
    // In order: each render's tasks are leased only after what it waits
    // for completed and it was released.
    for (before, after) in [(a, b), (b, c)] {
        let done = position(&events, before, "render.job.completed.v1");
        let released = position(&events, after, "render.job.released.v1");
        let first_lease = position(&events, after, "render.task.assigned.v1");
        assert!(
            done < released && released < first_lease,
            "{before} then {after}"
        );
    }
    assert_eq!(of(&events, a2, "render.job.failed.v1").len(), 1);
    for (job, dependency) in [(b2, a2), (c2, b2)] {
        let failed = of(&events, job, "render.job.dependency_failed.v1");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].payload["dependency_id"], dependency.to_string());
        assert_eq!(failed[0].payload["dependency_status"], "failed");
        assert!(
            of(&events, job, "render.task.assigned.v1").is_empty(),
            "never leased"
        );
    }
}
