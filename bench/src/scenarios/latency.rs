//! `latency`: sequential `shell` tasks running `true` on one agent (a real `ris-agent`
//! process): p50/p95/p99 from `POST /v1/tasks` to the `task.completed` event, which the
//! dispatcher publishes after the result is committed.

use std::time::{Duration, Instant};

use ris_tests::System;
use serde_json::{json, Value};

use crate::events::{listen, Seen};
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
    let mut phases = Phases::default();
    for _ in 0..tasks {
        let start = Instant::now();
        let id = tenant.submit(body.clone()).await;
        let answered = Instant::now();
        events
            .wait_done(std::slice::from_ref(&id), Duration::from_secs(10))
            .await?;
        let end = events.done_at(&id).unwrap_or_else(Instant::now);
        samples.push(ms_between(start, end));
        phases.record(&events.seen(&id), start, answered, end);
    }
    let mut out = summary(samples);
    out["scenario"] = json!("latency");
    out["tasks"] = json!(tasks);
    out["agent"] = json!("ris-agent process");
    out["phases_p50_ms"] = phases.medians();
    let human = format!(
        "latency: {tasks} sequential shell `true` tasks on one agent: p50 {} ms, p95 {} ms, p99 {} ms (target p50 <= 4, p99 <= 15); medians by phase: {}",
        out["p50_ms"], out["p95_ms"], out["p99_ms"], out["phases_p50_ms"]
    );
    Ok((out, human))
}

fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// Where a task's time went, as the benchmark sees it: the `POST` answered, then the
/// `task.routing`, `task.executing` and terminal events arriving on `ris.events`. Each
/// event is published after its state change is committed, so a phase ends a publish
/// (and a broker hop) after the work it names.
#[derive(Default)]
struct Phases {
    submit: Vec<f64>,
    to_routed: Vec<f64>,
    to_executing: Vec<f64>,
    to_done: Vec<f64>,
}

impl Phases {
    fn record(&mut self, seen: &Seen, start: Instant, answered: Instant, end: Instant) {
        self.submit.push(ms_between(start, answered));
        let (Some((routed, _)), Some((executing, _))) =
            (seen.routed.first(), seen.executing.first())
        else {
            return;
        };
        self.to_routed.push(ms_between(start, *routed));
        self.to_executing.push(ms_between(*routed, *executing));
        self.to_done.push(ms_between(*executing, end));
    }

    fn medians(&self) -> Value {
        let p50 = |v: &Vec<f64>| summary(v.clone())["p50_ms"].clone();
        json!({
            "post_answered": p50(&self.submit),
            "start_to_routing_event": p50(&self.to_routed),
            "routing_to_executing_event": p50(&self.to_executing),
            "executing_to_done_event": p50(&self.to_done),
        })
    }
}
