//! `latency`: sequential `shell` tasks running `true` on one agent (a real `ris-agent`
//! process): p50/p95/p99 from `POST /v1/tasks` to the `task.completed` event, which the
//! dispatcher publishes after the result is committed.

use std::time::{Duration, Instant};

use ris_tests::System;
use serde_json::{json, Value};

use crate::events::listen;
use crate::stats::summary;

pub async fn run(system: &System, tasks: usize) -> anyhow::Result<(Value, String)> {
    let tenant = system.tenant().await;
    let agent = tenant.agent("lat-0", &["bench=yes"], 4).await;
    tenant.wait_online(&agent).await;
    let (_conn, events) = listen(&tenant.name).await?;
    let body = super::shell_selector("bench=yes", &["true"]);
    for _ in 0..20 {
        let id = tenant.submit(body.clone()).await;
        events.wait_done(&[id], Duration::from_secs(10)).await?;
    }
    let mut samples = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let start = Instant::now();
        let id = tenant.submit(body.clone()).await;
        events
            .wait_done(std::slice::from_ref(&id), Duration::from_secs(10))
            .await?;
        let end = events.done_at(&id).unwrap_or_else(Instant::now);
        samples.push((end - start).as_secs_f64() * 1000.0);
    }
    let mut out = summary(samples);
    out["scenario"] = json!("latency");
    out["tasks"] = json!(tasks);
    out["agent"] = json!("ris-agent process");
    let human = format!(
        "latency: {tasks} sequential shell `true` tasks on one agent: p50 {} ms, p95 {} ms, p99 {} ms (target p50 <= 4, p99 <= 15)",
        out["p50_ms"], out["p95_ms"], out["p99_ms"]
    );
    Ok((out, human))
}
