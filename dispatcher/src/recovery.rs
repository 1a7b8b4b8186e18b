//! Recovery decisions: retries with backoff, lost agents, assignments that never started.
//!
//! Nothing here sleeps: a retry is a task in `retrying` whose next attempt time is in
//! PostgreSQL, picked up by the placement sweep when due. Every step is fenced by
//! attempt number, so a late or repeated decision changes nothing.

use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use ris_broker::{names, PublishOptions, Publisher};
use ris_schemas::ids::TaskId;
use ris_schemas::messages::ControlMessage;
use ris_schemas::task::{Outcome, RetryOn, RetryPolicy, TaskResult, TaskState};
use ris_schemas::version::V1;
use ris_store::{AgentRecord, TaskRecord, TenantCtx, TransitionOutcome};

use crate::context::Context;
use crate::events;
use crate::retry::{until_ok, Stop};

/// How long an assignment may wait in an agent's queue before it expires (it is
/// shorter when the task's queue deadline is nearer). Short enough that work stuck
/// behind a busy or vanished agent moves on quickly; long enough for an agent that is
/// merely reconnecting.
pub const ASSIGNMENT_WINDOW: Duration = Duration::from_secs(10);
/// A task still `routing` this long after its placement has lost its assignment (the
/// message expired, or was never published because a dispatcher died in between).
pub const STALE_ROUTING: Duration = Duration::from_secs(ASSIGNMENT_WINDOW.as_secs() + 10);

/// Why an attempt ended, as a retry policy sees it.
pub fn retry_cause(result: &TaskResult) -> Option<RetryOn> {
    match (result.outcome, result.reason.as_deref()) {
        (Outcome::Failed, Some("agent_shutdown" | "agent_restarted" | "agent_lost")) => {
            Some(RetryOn::AgentLost)
        }
        (Outcome::Failed, _) => Some(RetryOn::Failed),
        (Outcome::TimedOut, _) => Some(RetryOn::TimedOut),
        (Outcome::Completed | Outcome::Cancelled, _) => None,
    }
}

/// The wait before the next attempt, if `policy` allows one after attempt `attempt`
/// ended for `why`: full jitter, uniform in `[0, cap]`.
pub fn retry_delay(policy: &RetryPolicy, why: RetryOn, attempt: u32) -> Option<Duration> {
    if !policy.allows(why, attempt) {
        return None;
    }
    let cap = policy.backoff_cap_ms(attempt);
    Some(Duration::from_millis(rand::thread_rng().gen_range(0..=cap)))
}

/// The policy that governs `task`: its own, else the tenant's default, else none.
pub fn policy_of(task: &TaskRecord, tenant_default: Option<&RetryPolicy>) -> RetryPolicy {
    task.request
        .retry
        .clone()
        .or_else(|| tenant_default.cloned())
        .unwrap_or_else(RetryPolicy::none)
}

/// An assignment of `attempt` did not start in time (it expired in the agent's queue,
/// or never got there): place the task again while its queue deadline allows, else fail
/// it with `queue_timeout`.
pub async fn assignment_lapsed(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    task_id: TaskId,
    attempt: u32,
) -> Result<(), Stop<ris_store::StoreError>> {
    let Some(task) = until_ok("get_task", &ctx.shutdown, || {
        ctx.store.get_task(tenant, task_id)
    })
    .await?
    else {
        return Ok(());
    };
    if task.state != TaskState::Routing || task.attempts != attempt {
        return Ok(()); // it started, or was handled already
    }
    let outcome = if task.queue_deadline > Utc::now() {
        until_ok("requeue_task", &ctx.shutdown, || {
            ctx.store
                .requeue_task(tenant, task_id, "assignment_expired", Duration::ZERO)
        })
        .await?
    } else {
        until_ok("end_attempt", &ctx.shutdown, || {
            ctx.store
                .end_attempt(tenant, task_id, attempt, "queue_timeout", None)
        })
        .await?
    };
    if let TransitionOutcome::Applied(task) = outcome {
        tracing::info!(task_id = %task.id, attempt, state = %task.state, "assignment lapsed");
        if let Some(agent) = task.agent_id {
            drop(
                ctx.presence
                    .inflight_done(&tenant.name, agent, task.id)
                    .await,
            );
        }
        events::task_changed(publisher, &tenant.name, &task).await;
        crate::replies::task_ended(ctx, tenant, publisher, &task).await;
    }
    Ok(())
}

/// The agent stopped heartbeating: what was waiting in its queue goes to other agents;
/// what it was running is retried if the task's policy allows `agent_lost`, else failed
/// with reason `agent_lost`.
#[tracing::instrument(skip_all, fields(tenant = %tenant.name, agent_id = %agent.id))]
pub async fn agent_lost(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    agent: &AgentRecord,
) -> Result<(), Stop<ris_store::StoreError>> {
    // Empty its queue first, so assignments re-placed below cannot also run there if
    // the agent comes back.
    let queue = names::agent_queue(agent.id);
    if let Err(err) = publisher
        .channel()
        .queue_purge(queue.as_str().into(), Default::default())
        .await
    {
        tracing::warn!(error = %err, %queue, "could not purge the lost agent's queue");
    }
    let tasks = until_ok("active_tasks_of", &ctx.shutdown, || {
        ctx.store.active_tasks_of(tenant, agent.id)
    })
    .await?;
    let default = tenant_default(ctx, tenant).await;
    for task in tasks {
        let outcome = match task.state {
            TaskState::Routing => {
                revoke(ctx, tenant, publisher, agent.id, &task).await;
                until_ok("requeue_task", &ctx.shutdown, || {
                    ctx.store
                        .requeue_task(tenant, task.id, "agent_lost", Duration::ZERO)
                })
                .await?
            }
            _ => {
                let delay = retry_delay(
                    &policy_of(&task, default.as_ref()),
                    RetryOn::AgentLost,
                    task.attempts,
                );
                until_ok("end_attempt", &ctx.shutdown, || {
                    ctx.store
                        .end_attempt(tenant, task.id, task.attempts, "agent_lost", delay)
                })
                .await?
            }
        };
        drop(
            ctx.presence
                .inflight_done(&tenant.name, agent.id, task.id)
                .await,
        );
        if let TransitionOutcome::Applied(task) = outcome {
            tracing::info!(task_id = %task.id, state = %task.state, "task of a lost agent handled");
            events::task_changed(publisher, &tenant.name, &task).await;
            crate::replies::task_ended(ctx, tenant, publisher, &task).await;
        }
    }
    Ok(())
}

/// Tells the lost agent, should it come back, not to start `task`'s current attempt: its
/// assignment may already sit in the agent's memory (delivered, waiting for a slot),
/// beyond the reach of the queue purge. The control queue is not purged, so the order
/// waits there for the agent.
async fn revoke(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    agent: ris_schemas::ids::AgentId,
    task: &TaskRecord,
) {
    let order = ControlMessage::Revoke {
        v: V1,
        task_id: task.id,
        attempt: task.attempts,
    };
    let key = names::agent_control_key(agent);
    let opts = PublishOptions::default();
    let sent =
        crate::signing::publish(ctx, publisher, &tenant.name, agent, &key, &order, opts).await;
    if let Err(err) = sent {
        tracing::warn!(error = %err, task_id = %task.id, "revoke not sent; the agent may still run the old attempt (its result is fenced)");
    }
}

/// The tenant's default retry policy, cached for a few seconds.
pub async fn tenant_default(ctx: &Context, tenant: &TenantCtx) -> Option<RetryPolicy> {
    const FRESH: Duration = Duration::from_secs(5);
    if let Some((at, policy)) = ctx
        .retry_defaults
        .read()
        .ok()
        .and_then(|m| m.get(&tenant.id).cloned())
    {
        if at.elapsed() < FRESH {
            return policy;
        }
    }
    match ctx.store.tenant_default_retry(tenant).await {
        Ok(policy) => {
            if let Ok(mut map) = ctx.retry_defaults.write() {
                map.insert(tenant.id, (std::time::Instant::now(), policy.clone()));
            }
            policy
        }
        Err(err) => {
            tracing::warn!(error = %err, "tenant retry default unavailable; using none");
            None
        }
    }
}
