//! `ris-bench`: measures a whole RIS system — real `ris-api`, `ris-dispatcher` and
//! `ris-agent` processes against the local RabbitMQ, PostgreSQL and Redis — and prints
//! one JSON line per scenario plus a human summary.
//!
//! ```text
//! cargo build --release --bins
//! cargo run --release -p ris-bench -- latency --tasks 500
//! cargo run --release -p ris-bench -- throughput --agents 10 --tasks 5000 --submitters 32
//! cargo run --release -p ris-bench -- job-create --agents 10000
//! ```
//!
//! A task's end-to-end time runs from sending `POST /v1/tasks` to receiving its
//! `task.completed` event on `ris.events`, which the dispatcher publishes after the
//! result is committed to PostgreSQL (so the result is readable through the API).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use ris_broker::lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use ris_broker::lapin::types::FieldTable;
use ris_tests::{System, TenantClient};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};

#[derive(Parser)]
#[command(about = "Benchmarks of a whole RIS system")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Sequential shell tasks running `true` on one agent: p50/p95/p99 end to end.
    Latency {
        #[arg(long, default_value_t = 500)]
        tasks: usize,
    },
    /// Many concurrent submitters, many agents: sustained tasks/s and latency at that rate.
    Throughput {
        #[arg(long, default_value_t = 10)]
        agents: usize,
        #[arg(long, default_value_t = 16)]
        capacity: u32,
        #[arg(long, default_value_t = 5000)]
        tasks: usize,
        #[arg(long, default_value_t = 32)]
        submitters: usize,
        /// `noop` or `shell` (runs `true`).
        #[arg(long, default_value = "noop")]
        kind: String,
    },
    /// API time to create a fleet job over many agents (inserted straight into the
    /// database: they never run anything), to read its status and a page of targets.
    JobCreate {
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
}

/// Creates `agents` enrolled-looking agents labelled `bench=jobs` in the system's
/// database, with one statement.
async fn fake_agents(system: &System, tenant: &TenantClient, agents: usize) -> anyhow::Result<()> {
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", system.database);
    let pool = sqlx::PgPool::connect(&url).await?;
    sqlx::query(
        "INSERT INTO agents (id, tenant_id, name, labels, capacity, version, hostname,
                             heartbeat_token_hash)
         SELECT gen_random_uuid(), t.id, 'bench-' || g, '{\"bench\": \"jobs\"}', 4, '0.1.0',
                'bench-' || g || '.local', '\\x00'
         FROM tenants t, generate_series(1, $2) g WHERE t.name = $1",
    )
    .bind(&tenant.name)
    .bind(i64::try_from(agents)?)
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(())
}

/// Milliseconds since `start`, to 0.1 ms.
fn ms(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 10_000.0).round() / 10.0
}

async fn job_create(system: &System, agents: usize, repeat: usize) -> anyhow::Result<Value> {
    use reqwest::Method;
    let tenant = system.tenant().await;
    fake_agents(system, &tenant, agents).await?;
    let body = json!({ "target": { "selector": "bench=jobs" }, "task": { "kind": "noop" } });
    let (mut create, mut get, mut page) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let (status, job) = tenant
            .request(Method::POST, "/v1/jobs", Some(body.clone()))
            .await;
        create.push(ms(start));
        if status.as_u16() != 201 || job["target_count"] != json!(agents) {
            bail!("job not created over {agents} agents: {status} {job}");
        }
        let id = job["id"].as_str().unwrap_or_default().to_owned();
        let start = Instant::now();
        tenant.get(&format!("/v1/jobs/{id}")).await;
        get.push(ms(start));
        let start = Instant::now();
        tenant
            .get(&format!(
                "/v1/jobs/{id}/tasks?limit=200&state=skipped_offline"
            ))
            .await;
        page.push(ms(start));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    Ok(json!({
        "scenario": "job-create",
        "agents": agents,
        "repeat": create.len(),
        "create_ms": create.clone(),
        "create_median_ms": median(&mut create),
        "get_median_ms": median(&mut get),
        "targets_page_median_ms": median(&mut page),
    }))
}

/// Completion times of tasks, as their events arrive.
type Completions = Arc<Mutex<HashMap<String, Instant>>>;

/// Listens to `task.completed` / `task.failed` events of the tenant.
async fn listen(tenant: &str) -> anyhow::Result<(ris_broker::lapin::Connection, Completions)> {
    let conn = ris_broker::connect_admin(
        &Default::default(),
        &format!("ris.{tenant}"),
        "ris-bench events",
    )
    .await?;
    let channel = conn.create_channel().await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in ["task.completed", "task.failed", "task.timed_out"] {
        channel
            .queue_bind(
                queue.name().clone(),
                "ris.events".into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let done: Completions = Arc::default();
    let sink = done.clone();
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let at = Instant::now();
            if let Ok(event) = serde_json::from_slice::<Value>(&delivery.data) {
                if let Some(id) = event["data"]["task_id"].as_str() {
                    sink.lock().await.insert(id.to_owned(), at);
                }
            }
        }
    });
    Ok((conn, done))
}

async fn wait_done(done: &Completions, ids: &[String], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let finished = {
            let map = done.lock().await;
            ids.iter().filter(|id| map.contains_key(*id)).count()
        };
        if finished == ids.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "only {finished} of {} tasks finished in {timeout:?}",
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "p50_ms": percentile(&ms, 50.0), "p95_ms": percentile(&ms, 95.0),
        "p99_ms": percentile(&ms, 99.0), "max_ms": ms.last().copied().unwrap_or(f64::NAN),
    })
}

fn task_body(kind: &str) -> Value {
    match kind {
        "shell" => {
            json!({ "target": { "selector": "bench=yes" }, "task": { "kind": "shell", "argv": ["true"] } })
        }
        _ => json!({ "target": { "selector": "bench=yes" }, "task": { "kind": "noop" } }),
    }
}

async fn agents(tenant: &TenantClient, n: usize, capacity: u32) -> Vec<ris_tests::AgentProc> {
    let mut procs = Vec::new();
    for i in 0..n {
        procs.push(
            tenant
                .agent(&format!("bench-{i}"), &["bench=yes"], capacity)
                .await,
        );
    }
    for agent in &procs {
        tenant.wait_online(agent).await;
    }
    procs
}

async fn latency(system: &System, tasks: usize) -> anyhow::Result<Value> {
    let tenant = system.tenant().await;
    let _agents = agents(&tenant, 1, 4).await;
    let (_conn, done) = listen(&tenant.name).await?;
    let body = task_body("shell");
    // Warm up connections and caches.
    for _ in 0..20 {
        let id = tenant.submit(body.clone()).await;
        wait_done(&done, &[id], Duration::from_secs(10)).await?;
    }
    let mut samples = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let start = Instant::now();
        let id = tenant.submit(body.clone()).await;
        wait_done(&done, std::slice::from_ref(&id), Duration::from_secs(10)).await?;
        let end = done.lock().await[&id];
        samples.push((end - start).as_secs_f64() * 1000.0);
    }
    let mut out = summary(samples);
    out["scenario"] = json!("latency");
    out["tasks"] = json!(tasks);
    Ok(out)
}

async fn throughput(
    system: &System,
    n_agents: usize,
    capacity: u32,
    tasks: usize,
    submitters: usize,
    kind: &str,
) -> anyhow::Result<Value> {
    let tenant = system.tenant().await;
    let _agents = agents(&tenant, n_agents, capacity).await;
    let (_conn, done) = listen(&tenant.name).await?;
    let body = task_body(kind);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let per = tasks.div_ceil(submitters);
    let mut handles = Vec::new();
    for s in 0..submitters {
        let (tenant, body, tx) = (tenant.clone(), body.clone(), tx.clone());
        let count = per.min(tasks.saturating_sub(s * per));
        handles.push(tokio::spawn(async move {
            for _ in 0..count {
                let sent = Instant::now();
                let id = tenant.submit(body.clone()).await;
                let _ = tx.send((id, sent));
            }
        }));
    }
    drop(tx);
    for h in handles {
        h.await?;
    }
    let submitted_in = start.elapsed();
    let mut sent = Vec::new();
    while let Some(item) = rx.recv().await {
        sent.push(item);
    }
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    wait_done(&done, &ids, Duration::from_secs(600)).await?;
    let map = done.lock().await;
    let last = sent.iter().map(|(id, _)| map[id]).max().unwrap_or(start);
    let elapsed = (last - start).as_secs_f64();
    let latencies: Vec<f64> = sent
        .iter()
        .map(|(id, at)| (map[id] - *at).as_secs_f64() * 1000.0)
        .collect();
    let mut out = summary(latencies);
    out["scenario"] = json!("throughput");
    out["kind"] = json!(kind);
    out["agents"] = json!(n_agents);
    out["tasks"] = json!(tasks);
    out["submitters"] = json!(submitters);
    out["tasks_per_sec"] = json!((tasks as f64 / elapsed * 10.0).round() / 10.0);
    out["submit_per_sec"] =
        json!((tasks as f64 / submitted_in.as_secs_f64() * 10.0).round() / 10.0);
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The ris-* binaries sit next to this one.
    let exe = std::env::current_exe().context("locating ris-bench")?;
    let dir: PathBuf = exe.parent().context("binary directory")?.to_path_buf();
    std::env::set_var("RIS_BIN_DIR", &dir);
    let system = System::start().await;
    let result = match cli.scenario {
        Scenario::Latency { tasks } => latency(&system, tasks).await?,
        Scenario::Throughput {
            agents,
            capacity,
            tasks,
            submitters,
            kind,
        } => throughput(&system, agents, capacity, tasks, submitters, &kind).await?,
        Scenario::JobCreate { agents, repeat } => {
            let result = job_create(&system, agents, repeat).await?;
            println!("{result}");
            eprintln!(
                "job-create over {agents} agents: create {} ms (median), status {} ms, a page of 200 targets {} ms",
                result["create_median_ms"], result["get_median_ms"], result["targets_page_median_ms"]
            );
            return Ok(());
        }
    };
    println!("{result}");
    eprintln!(
        "{}: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms{}",
        result["scenario"].as_str().unwrap_or_default(),
        result["p50_ms"].as_f64().unwrap_or(f64::NAN),
        result["p95_ms"].as_f64().unwrap_or(f64::NAN),
        result["p99_ms"].as_f64().unwrap_or(f64::NAN),
        result["tasks_per_sec"]
            .as_f64()
            .map(|t| format!(", {t} tasks/s sustained"))
            .unwrap_or_default(),
    );
    Ok(())
}
