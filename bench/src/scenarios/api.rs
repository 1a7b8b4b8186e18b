//! `api`: `GET /v1/tasks/{id}` (finished tasks, then queued ones) and `GET /v1/agents`
//! under concurrent load from the in-tree load generator (keep-alive connections):
//! requests/s and p99. Any failed request (a 429 included) fails the scenario.

use std::sync::Arc;
use std::time::Duration;

use ris_tests::System;
use serde_json::{json, Value};

use crate::events::listen;
use crate::http_load;
use crate::procstat::Watch;
use crate::swarm::{Swarm, SwarmOptions};

pub async fn run(
    system: &System,
    agents: usize,
    tasks: usize,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<(Value, String)> {
    let tenant = system.tenant().await;
    let swarm = Swarm::start(
        &tenant,
        &SwarmOptions {
            agents,
            ..Default::default()
        },
    )
    .await?;
    swarm.wait_online(&tenant, Duration::from_secs(120)).await?;
    let (_conn, events) = listen(&tenant.name).await?;
    let sent =
        super::submit_all(&tenant, vec![super::noop_selector("bench=yes"); tasks], 16).await?;
    let ids: Vec<String> = sent.into_iter().map(|(id, _)| id).collect();
    events.wait_done(&ids, Duration::from_secs(300)).await?;
    let get = |paths: Vec<String>| {
        load(
            system,
            &tenant.api_url,
            &tenant.key,
            paths,
            concurrency,
            duration,
        )
    };
    let task = get(ids.iter().map(|id| format!("/v1/tasks/{id}")).collect()).await?;
    // Tasks no agent matches stay `queued`: their reads go to PostgreSQL every time
    // (finished tasks' bodies are cached by the API, live ones never are).
    let live_body = json!({
        "target": { "selector": "bench=nobody" },
        "task": { "kind": "noop" },
        "queue_timeout_secs": 3600,
    });
    let live = super::submit_all(&tenant, vec![live_body; tasks.min(200)], 16).await?;
    let live_task = get(live
        .iter()
        .map(|(id, _)| format!("/v1/tasks/{id}"))
        .collect())
    .await?;
    let list = get(vec!["/v1/agents".to_owned()]).await?;
    for (what, figures) in [
        ("GET /v1/tasks/{id}", &task),
        ("GET /v1/tasks/{id} (live)", &live_task),
        ("GET /v1/agents", &list),
    ] {
        if figures["errors"].as_u64() != Some(0) {
            anyhow::bail!(
                "{what}: {} requests failed (a 429 means the system's rate limits were not raised)",
                figures["errors"]
            );
        }
    }
    let out = json!({
        "scenario": "api", "agents": agents, "tasks": tasks, "concurrency": concurrency,
        "get_task": task, "get_live_task": live_task, "list_agents": list,
    });
    let human = format!(
        "api: GET /v1/tasks/{{id}} (finished): {} req/s, p99 {} ms; GET /v1/tasks/{{id}} (queued, read from PostgreSQL): {} req/s, p99 {} ms; GET /v1/agents ({agents} agents): {} req/s, p99 {} ms; {concurrency} concurrent keep-alive clients (target >= 15000 req/s, p99 <= 10 ms on tasks)",
        task["requests_per_sec"], task["p99_ms"], live_task["requests_per_sec"], live_task["p99_ms"], list["requests_per_sec"], list["p99_ms"]
    );
    swarm.stop().await;
    Ok((out, human))
}

/// GETs `paths` for `duration` ([`http_load::run`]), with the API's CPU meanwhile.
async fn load(
    system: &System,
    base: &str,
    key: &str,
    paths: Vec<String>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Value> {
    let watch = Watch::start(&[("api", system.api_pid(0))]);
    let mut figures = http_load::run(base, key, Arc::new(paths), concurrency, duration).await?;
    figures["processes"] = watch.finish();
    Ok(figures)
}
