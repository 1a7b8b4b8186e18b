//! Point-in-time metrics, refreshed every 5 s by every dispatcher, and the task latency
//! histograms observed as tasks change state.
//!
//! Gauges (each dispatcher reports the same figures; aggregate with `max`):
//! - `ris_queue_messages{tenant,queue}`: messages in `ris.submit`, `ris.results` and
//!   `ris.dead` of each tenant whose worker is connected here, from the management API
//!   (its statistics lag by a few seconds);
//! - `ris_agents_online`: agents flagged online in PostgreSQL;
//! - `ris_service_instances{state}`: service instances (one per service and agent) by
//!   state, across tenants.
//!
//! Tasks by state are not reported: no store query counts them across tenants cheaply.
//!
//! Histograms ([`observe_transition`]):
//! - `ris_task_end_to_end_seconds{kind,state}`: creation → terminal state;
//! - `ris_dispatch_seconds{kind}`: creation → first placement (`routing`, attempt 1).

use std::time::Duration;

use chrono::Utc;
use ris_broker::{Management, DEAD_QUEUE, RESULTS_QUEUE, SUBMIT_QUEUE};
use ris_schemas::ids::TenantName;
use ris_schemas::task::TaskState;
use ris_store::TaskRecord;

use crate::context::Context;

const INTERVAL: Duration = Duration::from_secs(5);
/// A refresh slower than this is abandoned (the management API is slow or down).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(4);

pub async fn run(ctx: Context) {
    let management = match Management::new(&ctx.config.broker) {
        Ok(m) => m,
        Err(err) => return tracing::warn!(error = %err, "queue gauges disabled"),
    };
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if tokio::time::timeout(REFRESH_TIMEOUT, refresh(&ctx, &management))
            .await
            .is_err()
        {
            tracing::debug!("gauge refresh timed out");
        }
    }
}

async fn refresh(ctx: &Context, management: &Management) {
    match ctx.store.online_agents().await {
        Ok(agents) => metrics::gauge!("ris_agents_online").set(agents.len() as f64),
        Err(err) => tracing::debug!(error = %err, "cannot count online agents"),
    }
    match ctx.store.instances_by_state().await {
        Ok(counts) => {
            use ris_schemas::service::InstanceState as S;
            let states = [
                S::Pending,
                S::Converging,
                S::Running,
                S::RolledBack,
                S::Failed,
                S::Removed,
            ];
            for state in states {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == state)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("ris_service_instances", "state" => state.as_str()).set(n as f64);
            }
        }
        Err(err) => tracing::debug!(error = %err, "cannot count service instances"),
    }
    let tenants: Vec<TenantName> = ctx
        .publishers
        .read()
        .map(|map| map.keys().cloned().collect())
        .unwrap_or_default();
    for tenant in tenants {
        for queue in [SUBMIT_QUEUE, RESULTS_QUEUE, DEAD_QUEUE] {
            match management.queue_message_count(&tenant.vhost(), queue).await {
                Ok(Some(count)) => metrics::gauge!(
                    "ris_queue_messages",
                    "tenant" => tenant.to_string(),
                    "queue" => queue,
                )
                .set(count as f64),
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(%tenant, queue, error = %err, "cannot read queue depth")
                }
            }
        }
    }
}

/// Records the latency histograms for a task that just reached `task.state`.
pub fn observe_transition(task: &TaskRecord) {
    let since_created = || {
        (Utc::now() - task.created_at)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64()
    };
    let kind = task.request.task.kind();
    if task.state.is_terminal() {
        metrics::histogram!(
            "ris_task_end_to_end_seconds",
            "kind" => kind,
            "state" => task.state.as_str(),
        )
        .record(since_created());
    } else if task.state == TaskState::Routing && task.attempts <= 1 {
        metrics::histogram!("ris_dispatch_seconds", "kind" => kind).record(since_created());
    }
}
