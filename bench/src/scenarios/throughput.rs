//! `throughput`: `noop` (or `shell true`) tasks from many concurrent submitters to a
//! swarm of agents: sustained tasks/s (every state change persisted by the dispatcher)
//! and the latency of each task at that rate.

use std::time::{Duration, Instant};

use ris_tests::System;
use serde_json::{json, Value};

use crate::events::listen;
use crate::procstat::Watch;
use crate::stats::{round2, summary};
use crate::swarm::{Swarm, SwarmOptions};

pub struct Opts {
    pub agents: usize,
    pub capacity: u32,
    pub tasks: usize,
    pub submitters: usize,
    pub kind: String,
    pub per_connection: usize,
    /// Submissions per second (open loop); `None`: as fast as the submitters go.
    pub rate: Option<f64>,
}

pub async fn run(system: &System, o: Opts) -> anyhow::Result<(Value, String)> {
    let tenant = system.tenant().await;
    let swarm = Swarm::start(
        &tenant,
        &SwarmOptions {
            agents: o.agents,
            capacity: o.capacity,
            per_connection: o.per_connection,
            ..Default::default()
        },
    )
    .await?;
    swarm.wait_online(&tenant, Duration::from_secs(120)).await?;
    let (_conn, events) = listen(&tenant.name).await?;
    let body = match o.kind.as_str() {
        "shell" => super::shell_selector("bench=yes", &["true"]),
        _ => super::noop_selector("bench=yes"),
    };
    // Warm-up: connection pools, prepared statements, caches.
    let warm = super::submit_all(&tenant, vec![body.clone(); 50], 8).await?;
    let warm: Vec<String> = warm.into_iter().map(|(id, _)| id).collect();
    events.wait_done(&warm, Duration::from_secs(60)).await?;

    let watch = Watch::start(&[
        ("api", system.api_pid(0)),
        ("dispatcher", system.dispatcher_pid(0)),
    ]);
    let start = Instant::now();
    let sent = super::submit_paced(&tenant, vec![body; o.tasks], o.submitters, o.rate).await?;
    let submitted_in = start.elapsed();
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    events.wait_done(&ids, Duration::from_secs(600)).await?;
    let procs = watch.finish();
    let page =
        crate::metrics::fetch(&format!("{}/metrics", system.dispatcher_metrics_url(0))).await;
    let steps = crate::metrics::placement_steps(&page);
    let last = ids
        .iter()
        .filter_map(|id| events.done_at(id))
        .max()
        .unwrap_or(start);
    let elapsed = (last - start).as_secs_f64();
    let latencies: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| events.done_at(id).map(|d| (d - *at).as_secs_f64() * 1000.0))
        .collect();
    let mut out = summary(latencies);
    let rate = round2(o.tasks as f64 / elapsed);
    out["scenario"] = json!("throughput");
    out["kind"] = json!(o.kind);
    out["agents"] = json!(o.agents);
    out["capacity"] = json!(o.capacity);
    out["swarm_connections"] = json!(swarm.connections());
    out["tasks"] = json!(o.tasks);
    out["submitters"] = json!(o.submitters);
    out["offered_per_sec"] = json!(o.rate);
    out["tasks_per_sec"] = json!(rate);
    out["submit_per_sec"] = json!(round2(o.tasks as f64 / submitted_in.as_secs_f64()));
    out["processes"] = procs;
    out["placement_steps"] = steps;
    let offered = o
        .rate
        .map_or_else(|| "as fast as they go".to_owned(), |r| format!("at {r}/s"));
    let human = format!(
        "throughput: {} {} tasks offered {offered}, {} submitters, {} swarm agents on {} shared AMQP connections: {rate} tasks/s completed, p50 {} ms, p99 {} ms (target >= 2000/s, p99 <= 100 ms)",
        o.tasks, o.kind, o.submitters, o.agents, swarm.connections(), out["p50_ms"], out["p99_ms"]
    );
    swarm.stop().await;
    Ok((out, human))
}
