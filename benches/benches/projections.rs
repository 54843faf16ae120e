//! Projection rebuild throughput against a raw ordered read of the same
//! events, measured in the same run (see `benches/README.md`).
//!
//! A store is filled with renders as a farm writes them (submitted, split
//! into 4 tasks of 2 frames, each task assigned, started, two frames with
//! their outputs, completed, charged; the render completed): 36 events per
//! render. Then, in alternating rounds, the whole log is read in order
//! through `read_all` (the baseline: what any replay costs at least) and
//! every projection is rebuilt from zero (`Runner::rebuild`).
//!
//! `cargo bench -p benches --bench projections`; `FLATRENDER_BENCH_EVENTS`
//! (default 1,000,000) sets the log's size, `FLATRENDER_BENCH_BACKEND=
//! postgres|sqlite` runs one backend, `FLATRENDER_BENCH_ROUNDS` (default 2)
//! the rounds (best kept), `FLATRENDER_BENCH_BATCH` the runner's batch.
//! `cargo test --all-targets` runs it on 5,000.

use std::time::{Duration, Instant};

use chrono::Utc;
use domain::file::{FileUploaded, OutputStored, UploadKind};
use domain::render_job::{
    JobCompleted, JobSplit, JobSubmitted, Requirements, TaskAssigned, TaskCompleted,
    TaskProgressed, TaskSpec, TaskStarted,
};
use domain::tenant::{CreditAdded, CreditCharged, TenantCreated};
use domain::{
    AmountMinor, ChunkSize, ContentType, DomainEvent, FileEvent, FileId, FileName, FrameRange,
    Identifier, JobId, Label, NodeId, Priority, RenderJobEvent, Sha256Digest, ShareWeight, TaskId,
    TenantEvent, TenantId,
};
use eventstore::{
    Actor, AnyStore, AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent,
};
use projections::{Runner, RunnerOptions};
use uuid::Uuid;

const EVENTS_PER_RENDER: u64 = 36;
const TENANTS: usize = 10;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn meta() -> EventMetadata {
    EventMetadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor::System {
            component: "bench".into(),
        },
        trace_id: None,
    }
}

fn ev<E: DomainEvent>(e: &E) -> NewEvent {
    NewEvent::from_domain(Uuid::new_v4(), e, meta())
}

fn request(
    stream: Uuid,
    stream_type: &str,
    tenant: TenantId,
    events: Vec<NewEvent>,
) -> AppendRequest {
    AppendRequest {
        stream_id: stream,
        stream_type: stream_type.into(),
        tenant_id: Some(tenant.as_uuid()),
        expected: ExpectedVersion::Any,
        events,
    }
}

fn digest(n: u128) -> Sha256Digest {
    Sha256Digest::parse(format!("{n:064x}")).expect("digest")
}

/// The appends of one render: its job stream, its scene and output files,
/// and the tenant's charges (returned apart, to batch per tenant).
fn render(tenant: TenantId, node: NodeId, n: u64) -> (Vec<AppendRequest>, Vec<NewEvent>) {
    let at = Utc::now();
    let job_id = JobId::new(Uuid::new_v4()).expect("id");
    let scene = FileId::new(Uuid::new_v4()).expect("id");
    let mut requests = vec![request(
        scene.as_uuid(),
        "file",
        tenant,
        vec![ev(&FileEvent::Uploaded(FileUploaded {
            file_id: scene,
            tenant_id: tenant,
            kind: UploadKind::Scene,
            name: FileName::parse("scene.json").expect("name"),
            content_type: ContentType::parse("application/json").expect("type"),
            size_bytes: 512,
            sha256: digest(u128::from(n) + 1),
            uploaded_at: at,
        }))],
    )];
    let tasks: Vec<TaskSpec> = (0..4u32)
        .map(|i| TaskSpec {
            task_id: TaskId::new(Uuid::new_v4()).expect("id"),
            index: i,
            frames: FrameRange::new(i * 2 + 1, i * 2 + 2).expect("frames"),
        })
        .collect();
    let mut job = vec![
        ev(&RenderJobEvent::Submitted(JobSubmitted {
            job_id,
            tenant_id: tenant,
            name: Label::parse(format!("Shot {n}")).expect("label"),
            scene_file_id: scene,
            renderer: Identifier::parse("builtin").expect("id"),
            frames: FrameRange::new(1, 8).expect("frames"),
            chunk_size: ChunkSize::new(2).expect("chunk"),
            resolution: None,
            samples: None,
            priority: Priority::new(50).expect("priority"),
            requirements: Requirements::default(),
            max_retries: 3,
            submitted_at: at,
            task_timeout_seconds: None,
            stall_timeout_seconds: None,
            depends_on: Vec::new(),
        })),
        ev(&RenderJobEvent::Split(JobSplit {
            job_id,
            tenant_id: tenant,
            tasks: tasks.clone(),
        })),
    ];
    let mut charges = Vec::new();
    for task in &tasks {
        let task_id = task.task_id;
        job.push(ev(&RenderJobEvent::TaskAssigned(TaskAssigned {
            job_id,
            tenant_id: tenant,
            task_id,
            node_id: node,
            lease_epoch: 1,
            frames: task.frames,
            assigned_at: at,
        })));
        job.push(ev(&RenderJobEvent::TaskStarted(TaskStarted {
            job_id,
            tenant_id: tenant,
            task_id,
            node_id: node,
            lease_epoch: 1,
            started_at: at,
        })));
        for (done, frame) in task.frames.frames().enumerate() {
            let file_id = FileId::new(Uuid::new_v4()).expect("id");
            requests.push(request(
                file_id.as_uuid(),
                "file",
                tenant,
                vec![ev(&FileEvent::OutputStored(OutputStored {
                    file_id,
                    tenant_id: tenant,
                    job_id,
                    task_id,
                    node_id: node,
                    frame,
                    lease_epoch: Some(1),
                    name: FileName::parse(format!("frame_{frame:04}.png")).expect("name"),
                    content_type: ContentType::parse("image/png").expect("type"),
                    size_bytes: 4096,
                    sha256: digest(file_id.as_uuid().as_u128()),
                    stored_at: at,
                }))],
            ));
            job.push(ev(&RenderJobEvent::TaskProgressed(TaskProgressed {
                job_id,
                tenant_id: tenant,
                task_id,
                node_id: node,
                lease_epoch: 1,
                frame,
                output_file_id: Some(file_id),
                supersedes_output_file_id: None,
                frames_done: done as u32 + 1,
                frames_total: 2,
                finished_at: at,
            })));
        }
        job.push(ev(&RenderJobEvent::TaskCompleted(TaskCompleted {
            job_id,
            tenant_id: tenant,
            task_id,
            node_id: node,
            lease_epoch: 1,
            render_seconds: 2,
            completed_at: at,
        })));
        charges.push(ev(&TenantEvent::CreditCharged(CreditCharged {
            tenant_id: tenant,
            job_id,
            task_id,
            render_seconds: 2,
            amount_minor: AmountMinor::new(2).expect("amount"),
            uncovered_minor: AmountMinor::new(0).expect("amount"),
            balance_after_minor: AmountMinor::new(1_000_000_000).expect("amount"),
            charged_at: at,
        })));
    }
    job.push(ev(&RenderJobEvent::Completed(JobCompleted {
        job_id,
        tenant_id: tenant,
        render_seconds: 8,
        completed_at: at,
    })));
    requests.push(request(job_id.as_uuid(), "render_job", tenant, job));
    (requests, charges)
}

/// Fills the store with about `events` events; returns how many.
async fn fill(store: &AnyStore, events: u64) -> u64 {
    let tenants: Vec<TenantId> = (0..TENANTS)
        .map(|_| TenantId::new(Uuid::new_v4()).expect("id"))
        .collect();
    let node = NodeId::new(Uuid::new_v4()).expect("id");
    for t in &tenants {
        let created = ev(&TenantEvent::Created(TenantCreated {
            tenant_id: *t,
            name: Label::parse("Studio").expect("label"),
            weight: ShareWeight::new(1).expect("weight"),
            max_running_tasks: 100,
            created_at: Utc::now(),
        }));
        let added = ev(&TenantEvent::CreditAdded(CreditAdded {
            tenant_id: *t,
            amount_minor: AmountMinor::new(1_000_000_000).expect("amount"),
            balance_after_minor: AmountMinor::new(1_000_000_000).expect("amount"),
            reference: Label::parse("top-up").expect("label"),
            added_at: Utc::now(),
        }));
        store
            .append(request(t.as_uuid(), "tenant", *t, vec![created, added]))
            .await
            .expect("tenant");
    }
    let renders = events.div_ceil(EVENTS_PER_RENDER);
    let mut n = 0;
    while n < renders {
        let chunk = (renders - n).min(100);
        let mut requests = Vec::new();
        let mut charges: Vec<Vec<NewEvent>> = vec![Vec::new(); TENANTS];
        for i in 0..chunk {
            let t = ((n + i) as usize) % TENANTS;
            let (r, c) = render(tenants[t], node, n + i);
            requests.extend(r);
            charges[t].extend(c);
        }
        for (t, c) in charges.into_iter().enumerate() {
            if !c.is_empty() {
                requests.push(request(tenants[t].as_uuid(), "tenant", tenants[t], c));
            }
        }
        for result in store.append_many(requests).await {
            result.expect("append");
        }
        n += chunk;
    }
    renders * EVENTS_PER_RENDER + 2 * TENANTS as u64
}

/// Reads the whole log in order; returns (events, elapsed).
async fn raw_read(store: &AnyStore) -> (u64, Duration) {
    let started = Instant::now();
    let (mut at, mut n) = (0, 0u64);
    loop {
        let batch = store.read_all(at, 2000).await.expect("read");
        let Some(last) = batch.last() else { break };
        at = last.global_position;
        n += batch.len() as u64;
    }
    (n, started.elapsed())
}

async fn rebuild(store: &AnyStore) -> (u64, Duration) {
    let started = Instant::now();
    let options = RunnerOptions {
        batch: env_or(
            "FLATRENDER_BENCH_BATCH",
            RunnerOptions::default().batch as u64,
        ) as usize,
        ..RunnerOptions::default()
    };
    let mut runner = Runner::new(store.clone(), options);
    let n = runner
        .rebuild(&projections::PROJECTIONS, |_, _, _| {})
        .await
        .expect("rebuild");
    runner.release().await;
    (n, started.elapsed())
}

async fn measure(name: &str, store: &AnyStore, events: u64, rounds: u64) {
    let filled = Instant::now();
    let stored = fill(store, events).await;
    let fill_s = filled.elapsed().as_secs_f64();
    let (mut raw_best, mut rebuild_best) = (0f64, 0f64);
    for _ in 0..rounds {
        let (n, t) = raw_read(store).await;
        assert_eq!(n, stored, "the raw read saw every event");
        raw_best = raw_best.max(n as f64 / t.as_secs_f64());
        let (n, t) = rebuild(store).await;
        assert_eq!(n, stored, "the rebuild applied every event");
        rebuild_best = rebuild_best.max(n as f64 / t.as_secs_f64());
    }
    let renders = projections::query::count(store, "rm_renders", "status = 'completed'", &[])
        .await
        .expect("count");
    assert_eq!(
        renders as u64,
        stored / EVENTS_PER_RENDER,
        "every render is in the read model"
    );
    println!(
        "| {name:<8} | {stored:>9} | {fill_s:>7.1} | {raw_best:>12.0} | {rebuild_best:>14.0} | {:>5.2} |",
        rebuild_best / raw_best
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let events = if full {
        env_or("FLATRENDER_BENCH_EVENTS", 1_000_000)
    } else {
        5_000
    };
    let rounds = if full {
        env_or("FLATRENDER_BENCH_ROUNDS", 2)
    } else {
        1
    };
    let only = std::env::var("FLATRENDER_BENCH_BACKEND").unwrap_or_default();
    println!("Projection rebuild against a raw ordered read of the same log ({events} events)");
    println!("| backend  | events    | fill s  | raw read ev/s | rebuild ev/s   | ratio |");
    println!("|----------|-----------|---------|--------------|----------------|-------|");
    if only.is_empty() || only == "postgres" {
        let pg = benches::FreshPg::create(8).await;
        measure(
            "postgres",
            &AnyStore::Postgres(pg.store.clone()),
            events,
            rounds,
        )
        .await;
        pg.drop_now().await;
    }
    if only.is_empty() || only == "sqlite" {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = eventstore::SqliteStore::open(&dir.path().join("events.sqlite"))
            .await
            .expect("sqlite");
        measure("sqlite", &AnyStore::Sqlite(store), events, rounds).await;
    }
}
