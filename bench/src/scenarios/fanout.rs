//! `fanout`: one unit of work to each of N agents. Until jobs (`mode: all`) land, the
//! fan-out is N tasks submitted through `POST /v1/tasks`, each targeting one agent by
//! `agent_id`; the figure is the time from the first submission to the last result
//! persisted.

use std::time::{Duration, Instant};

use ris_tests::System;
use serde_json::{json, Value};

use crate::events::listen;
use crate::stats::{ms, round2};
use crate::swarm::{Swarm, SwarmOptions};

pub async fn run(
    system: &System,
    agents: usize,
    submitters: usize,
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
    let (_conn, events) = listen(&tenant.name).await?;
    let bodies: Vec<Value> = swarm
        .ids()
        .iter()
        .map(|id| json!({ "target": { "agent_id": id }, "task": { "kind": "noop" } }))
        .collect();
    let start = Instant::now();
    let sent = super::submit_all(&tenant, bodies, submitters).await?;
    let submitted = start.elapsed();
    let ids: Vec<String> = sent.into_iter().map(|(id, _)| id).collect();
    events.wait_done(&ids, Duration::from_secs(300)).await?;
    let last = ids
        .iter()
        .filter_map(|id| events.done_at(id))
        .max()
        .unwrap_or(start);
    let total = last - start;
    let out = json!({
        "scenario": "fanout", "agents": agents, "method": "one task per agent (agent_id target) via POST /v1/tasks",
        "submitters": submitters, "swarm_connections": swarm.connections(),
        "enroll_secs": round2(swarm.enroll_secs), "swarm_start_secs": round2(swarm.start_secs), "online_secs": round2(online_secs),
        "submit_ms": ms(submitted), "all_persisted_ms": ms(total),
    });
    let human = format!(
        "fanout: one task to each of {agents} swarm agents (agent_id targets): all results persisted in {} ms (submissions took {} ms; target <= 2000 ms). Enrolling took {:.1} s.",
        ms(total), ms(submitted), swarm.enroll_secs
    );
    swarm.stop().await;
    Ok((out, human))
}
