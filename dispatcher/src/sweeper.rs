//! The placement sweep: PostgreSQL is the truth about which tasks still wait.
//!
//! Every `sweep_interval_ms` each dispatcher claims a batch of waiting tasks (a short
//! lease, `FOR UPDATE SKIP LOCKED`, so two dispatchers never work on the same one) and
//! tries to place them, and fails those whose queue deadline passed with `no_agent`.
//! This catches tasks that waited for an agent to come online, and tasks whose
//! submission message never reached a dispatcher. The same pass drives fleet jobs
//! ([`crate::jobs::sweep`]).

use std::time::Duration;

use chrono::Utc;
use ris_schemas::task::TaskState;

use crate::context::Context;
use crate::events;
use crate::placement;
use crate::recovery;

const BATCH: i64 = 200;
/// How long the sweep leaves a new task to its submission message.
const SUBMIT_GRACE: chrono::Duration = chrono::Duration::seconds(2);
/// How long a claimed task is hidden from other sweeps.
const LEASE: Duration = Duration::from_secs(1);

pub async fn run(ctx: Context) {
    let mut tick =
        tokio::time::interval(Duration::from_millis(ctx.config.sweep_interval_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        expire(&ctx).await;
        place_waiting(&ctx).await;
        lapsed_assignments(&ctx).await;
        crate::jobs::sweep(&ctx).await;
    }
}

async fn expire(ctx: &Context) {
    let expired = match ctx.store.expire_unplaced(BATCH).await {
        Ok(e) => e,
        Err(err) => return tracing::warn!(error = %err, "expiry sweep failed"),
    };
    for (tenant, task) in expired {
        tracing::info!(tenant = %tenant.name, task_id = %task.id, "no agent before the queue deadline");
        if let Some(publisher) = ctx.publisher(&tenant.name) {
            events::task_changed(&publisher, &tenant.name, &task).await;
            crate::replies::task_ended(ctx, &tenant.ctx(), &publisher, &task).await;
        }
    }
}

/// Tasks `routing` for longer than an assignment can wait: their message expired
/// unnoticed or was never published (a dispatcher died between recording the
/// placement and publishing it). Place them again, or fail them `queue_timeout`.
async fn lapsed_assignments(ctx: &Context) {
    let stale = match ctx
        .store
        .stale_routing(recovery::STALE_ROUTING, BATCH)
        .await
    {
        Ok(s) => s,
        Err(err) => return tracing::warn!(error = %err, "stale-routing sweep failed"),
    };
    for (tenant, task) in stale {
        if let Some(publisher) = ctx.publisher(&tenant.name) {
            drop(
                recovery::assignment_lapsed(ctx, &tenant.ctx(), &publisher, task.id, task.attempts)
                    .await,
            );
        }
    }
}

async fn place_waiting(ctx: &Context) {
    let claimed = match ctx.store.claim_unplaced(BATCH, LEASE).await {
        Ok(c) => c,
        Err(err) => return tracing::warn!(error = %err, "placement sweep failed"),
    };
    let settled = Utc::now() - SUBMIT_GRACE;
    for (tenant, task) in claimed {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        // A brand-new task's submission message is on its way to a dispatcher; racing
        // it would only double the work. (New tasks are stored due only after
        // `ris_store::SUBMISSION_GRACE`, or made due by whoever knows no message will
        // place them: then it is past this too, unless it was just submitted.)
        if task.state == TaskState::Queued && task.attempts == 0 && task.created_at > settled {
            continue;
        }
        // Until the tenant's worker is connected there is no publisher; the lease
        // expires and a later sweep retries.
        if let Some(publisher) = ctx.publisher(&tenant.name) {
            placement::place(ctx, &tenant.ctx(), &publisher, task).await;
        }
    }
}
