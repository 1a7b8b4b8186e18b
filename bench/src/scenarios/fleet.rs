//! `fleet`: N swarm agents heartbeating every 10 s for a while: CPU and peak RSS of the
//! API and the dispatcher (from `/proc`), the API's heartbeat handling p99 (its
//! `ris_heartbeat_handle_seconds` summary), and every agent online at the end.

use std::time::{Duration, Instant};

use ris_tests::System;
use serde_json::{json, Value};

use crate::metrics;
use crate::procstat::{machine_busy_ticks, Watch};
use crate::stats::round2;
use crate::swarm::{online_count, Swarm, SwarmOptions};

pub async fn run(
    system: &System,
    agents: usize,
    duration: Duration,
    per_connection: usize,
    enroll_concurrency: usize,
) -> anyhow::Result<(Value, String)> {
    let tenant = system.tenant().await;
    let watch_all = Watch::start(&[
        ("api", system.api_pid(0)),
        ("dispatcher", system.dispatcher_pid(0)),
    ]);
    let swarm = Swarm::start(
        &tenant,
        &SwarmOptions {
            agents,
            capacity: 1,
            per_connection,
            enroll_concurrency,
            labels: vec![("fleet".into(), "yes".into())],
            ..Default::default()
        },
    )
    .await?;
    let online_secs = swarm.wait_online(&tenant, Duration::from_secs(600)).await?;
    let setup = watch_all.finish();
    let metrics_url = format!("{}/metrics", system.api_url);
    let before = metrics::fetch(&metrics_url).await;
    let watch = Watch::start(&[
        ("api", system.api_pid(0)),
        ("dispatcher", system.dispatcher_pid(0)),
    ]);
    let busy0 = machine_busy_ticks();
    let t0 = Instant::now();
    tokio::time::sleep(duration).await;
    let steady = watch.finish();
    let machine_cpu = match (busy0, machine_busy_ticks()) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            round2((b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
        }
        _ => f64::NAN,
    };
    let page = metrics::fetch(&metrics_url).await;
    let name = "ris_heartbeat_handle_seconds";
    let frames =
        metrics::count(&page, name).unwrap_or(0.0) - metrics::count(&before, name).unwrap_or(0.0);
    let p99 = metrics::quantile(&page, name, "0.99").map(|s| round2(s * 1000.0));
    let p50 = metrics::quantile(&page, name, "0.5").map(|s| round2(s * 1000.0));
    let online = online_count(&tenant, &swarm.ids()).await;
    let secs = t0.elapsed().as_secs_f64();
    let out = json!({
        "scenario": "fleet", "agents": agents, "heartbeat_interval_secs": 10,
        "duration_secs": round2(secs), "swarm_connections": swarm.connections(),
        "enroll_secs": round2(swarm.enroll_secs), "swarm_start_secs": round2(swarm.start_secs), "online_after_secs": round2(online_secs),
        "heartbeats_handled": frames, "heartbeats_per_sec": round2(frames / secs),
        "heartbeat_handle_p50_ms": p50, "heartbeat_handle_p99_ms": p99,
        "steady": steady, "setup": setup, "machine_cpu_percent": machine_cpu,
        "online_at_end": online, "presence_correct": online == agents,
    });
    let human = format!(
        "fleet: {agents} swarm agents ({} shared AMQP connections) heartbeating every 10 s for {secs:.0} s: {frames} frames, handling p99 {p99:?} ms; steady state {steady}; online at end {online}/{agents} (targets: API peak RSS <= 512 MiB, p99 <= 50 ms)",
        swarm.connections()
    );
    swarm.stop().await;
    Ok((out, human))
}
