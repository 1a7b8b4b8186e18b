//! `fanout`: one unit of work to each of N agents, as one request: a fleet job
//! (`POST /v1/jobs`, selector, `mode: all`, every child at once). The figure is the time
//! from sending the request until the job is `completed`, which it becomes in the
//! transaction that records its last child's result.

use std::time::{Duration, Instant};

use ris_tests::System;
use serde_json::{json, Value};

use crate::procstat::Watch;
use crate::stats::{ms, round2};
use crate::swarm::{Swarm, SwarmOptions};

pub async fn run(
    system: &System,
    agents: usize,
    per_connection: usize,
) -> anyhow::Result<(Value, String)> {
    let tenant = system.tenant().await;
    let swarm = Swarm::start(
        &tenant,
        &SwarmOptions {
            agents,
            capacity: 4,
            per_connection,
            labels: vec![("fan".into(), "yes".into())],
            ..Default::default()
        },
    )
    .await?;
    let online_secs = swarm.wait_online(&tenant, Duration::from_secs(300)).await?;
    // One request: a fleet job over every agent the selector matches, all at once.
    let body = json!({
        "target": { "selector": "fan=yes", "mode": "all" },
        "task": { "kind": "noop" },
        "max_concurrency": "100%",
    });
    let watch = Watch::start(&[
        ("api", system.api_pid(0)),
        ("dispatcher", system.dispatcher_pid(0)),
    ]);
    let start = Instant::now();
    let (status, job) = tenant
        .request(reqwest::Method::POST, "/v1/jobs", Some(body))
        .await;
    let created = start.elapsed();
    anyhow::ensure!(
        status == reqwest::StatusCode::CREATED,
        "POST /v1/jobs: {status} {job}"
    );
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    anyhow::ensure!(
        job["target_count"].as_u64() == Some(agents as u64),
        "the job matched {} agents, not {agents}: {job}",
        job["target_count"]
    );
    // The job completes when its last child's result is committed (the counts are kept
    // in the children's own transactions).
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let (_, view) = tenant
            .request(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None)
            .await;
        if view["state"] != "running" {
            break view;
        }
        anyhow::ensure!(Instant::now() < deadline, "job {id} still running: {view}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let total = start.elapsed();
    let processes = watch.finish();
    anyhow::ensure!(
        done["state"] == "completed" && done["counts"]["completed"].as_u64() == Some(agents as u64),
        "job {id} ended without every child completed: {done}"
    );
    let out = json!({
        "scenario": "fanout", "agents": agents,
        "method": "one fleet job (POST /v1/jobs, selector, mode all, max_concurrency 100%)",
        "swarm_connections": swarm.connections(),
        "enroll_secs": round2(swarm.enroll_secs), "swarm_start_secs": round2(swarm.start_secs), "online_secs": round2(online_secs),
        "create_ms": ms(created), "all_persisted_ms": ms(total), "processes": processes,
    });
    let human = format!(
        "fanout: one job to {agents} swarm agents: every result persisted {} ms after the request (creating the job took {} ms; target <= 2000 ms). Enrolling took {:.1} s.",
        ms(total), ms(created), swarm.enroll_secs
    );
    swarm.stop().await;
    Ok((out, human))
}
