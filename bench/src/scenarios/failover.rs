//! `failover`: an agent (a real `ris-agent` process) is SIGKILLed while it has work
//! queued; the figures are the times from the kill until the last task that was placed on
//! it and had not started is placed on another agent (a swarm agent), and until it starts
//! executing there (behind that agent's own backlog), in ms and in heartbeat intervals.

use std::time::{Duration, Instant};

use ris_tests::System;
use serde_json::{json, Value};

use crate::events::listen;
use crate::stats::{ms, round2};
use crate::swarm::{Swarm, SwarmOptions};

/// Tasks placed on the victim and not started yet when it is killed, at least.
const KILL_WITH_WAITING: usize = 2;

pub async fn run(
    system: &System,
    heartbeat_secs: u32,
    tasks: usize,
    others: usize,
) -> anyhow::Result<(Value, String)> {
    let tenant = system.tenant().await;
    let mut victim = tenant.agent("victim", &["fo=yes"], 2).await;
    tenant.wait_online(&victim).await;
    let swarm = Swarm::start(
        &tenant,
        &SwarmOptions {
            agents: others,
            capacity: 2,
            labels: vec![("fo".into(), "yes".into())],
            ..Default::default()
        },
    )
    .await?;
    swarm.wait_online(&tenant, Duration::from_secs(120)).await?;
    let (_conn, events) = listen(&tenant.name).await?;
    // Every agent gets a backlog: tasks outnumber the slots many times over.
    let body = super::shell_selector("fo=yes", &["sleep", "0.5"]);
    let sent = super::submit_all(&tenant, vec![body; tasks], 16).await?;
    let ids: Vec<String> = sent.into_iter().map(|(id, _)| id).collect();
    // Kill once the victim has run something and has tasks placed on it that have not
    // started (right after its first start, the submissions may not have placed any).
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let (mut ran, mut waiting) = (false, 0);
        for id in &ids {
            let seen = events.seen(id);
            let started = seen.executing.iter().any(|(_, a)| *a == victim.id);
            ran |= started;
            let on_victim = seen.routed.last().is_some_and(|(_, a)| *a == victim.id);
            if on_victim && !started && seen.done.is_none() {
                waiting += 1;
            }
        }
        if ran && waiting >= KILL_WITH_WAITING {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.kill().await;
    let killed_at = Instant::now();
    events.wait_done(&ids, Duration::from_secs(300)).await?;
    // Tasks placed on the victim that had not started there before the kill.
    let mut queued = 0;
    let mut running = 0;
    // When the last of them was placed on another agent, and when it started there.
    let mut replaced: Option<Duration> = None;
    let mut worst: Option<Duration> = None;
    for id in &ids {
        let seen = events.seen(id);
        let placed_on_victim = seen
            .routed
            .iter()
            .rev()
            .find(|(at, _)| *at <= killed_at)
            .is_some_and(|(_, a)| *a == victim.id);
        if !placed_on_victim || seen.done.is_some_and(|d| d <= killed_at) {
            continue;
        }
        if seen
            .executing
            .iter()
            .any(|(at, a)| *a == victim.id && *at <= killed_at)
        {
            running += 1;
            continue;
        }
        queued += 1;
        let elsewhere = |(at, a): &&(Instant, String)| *a != victim.id && *at > killed_at;
        if let Some((at, _)) = seen.routed.iter().find(elsewhere) {
            let took = *at - killed_at;
            replaced = Some(replaced.map_or(took, |w| w.max(took)));
        }
        if let Some((at, _)) = seen.executing.iter().find(elsewhere) {
            let took = *at - killed_at;
            worst = Some(worst.map_or(took, |w| w.max(took)));
        }
    }
    anyhow::ensure!(
        queued > 0,
        "the victim had no task waiting when it was killed: nothing failed over"
    );
    let in_intervals = |d: Duration| round2(d.as_secs_f64() / f64::from(heartbeat_secs));
    let (worst_ms, intervals) = (worst.map(ms), worst.map(in_intervals));
    let (replaced_ms, replaced_intervals) = (replaced.map(ms), replaced.map(in_intervals));
    let out = json!({
        "scenario": "failover", "heartbeat_interval_secs": heartbeat_secs, "tasks": tasks,
        "other_agents": others, "victim_queued_tasks": queued, "victim_running_tasks": running,
        "requeued_within_ms": worst_ms, "heartbeat_intervals": intervals,
        "replaced_within_ms": replaced_ms, "replaced_heartbeat_intervals": replaced_intervals,
    });
    let human = format!(
        "failover: agent SIGKILLed with {queued} tasks queued (and {running} running): the last queued one was placed on another agent {replaced_ms:?} ms after the kill = {replaced_intervals:?} heartbeat intervals of {heartbeat_secs} s, and ran there {worst_ms:?} ms after it = {intervals:?} intervals, behind that agent's own backlog (target <= 3)"
    );
    swarm.stop().await;
    Ok((out, human))
}
