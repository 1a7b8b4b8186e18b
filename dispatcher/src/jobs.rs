//! Driving fleet jobs: dispatching children as room frees up, releasing targets that
//! came online, stopping children when a job halts or is cancelled, and announcing job
//! state changes on `ris.events`.
//!
//! Every decision that matters is taken by the store under the job's row lock (see
//! `ris_store::jobs`); this module only acts on them, so any dispatcher may drive any
//! job at any time, and two driving the same job at once do no harm. A job is driven
//! right after one of its children changes (results path) and by the job sweep
//! ([`sweep`]), which catches everything else: new jobs, targets coming online, a
//! dispatcher that died half-way.

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use ris_broker::{names, PublishOptions, Publisher};
use ris_schemas::event::Event;
use ris_schemas::ids::AgentId;
use ris_schemas::job::{JobId, JobState};
use ris_schemas::messages::ControlMessage;
use ris_schemas::task::TaskState;
use ris_schemas::version::V1;
use ris_store::placement::{JOB_CANCELLED, JOB_HALTED};
use ris_store::{JobRecord, StoreError, TaskRecord, TenantCtx, Transition, TransitionOutcome};

use crate::context::Context;
use crate::events;
use crate::placement;
use crate::retry::{until_ok, Stop};

/// Children placed at once by one step.
const PLACE_CONCURRENCY: usize = 16;
/// Jobs claimed per sweep, and how long a claimed job is left to its claimer.
const SWEEP_BATCH: i64 = 100;
const SWEEP_LEASE: Duration = Duration::from_millis(500);

/// One pass over the jobs that are not ended: each is driven once.
pub async fn sweep(ctx: &Context) {
    let claimed = match ctx.store.claim_jobs(SWEEP_BATCH, SWEEP_LEASE).await {
        Ok(c) => c,
        Err(err) => return tracing::warn!(error = %err, "job sweep failed"),
    };
    for (tenant, job) in claimed {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        // Until the tenant's worker is connected there is no publisher; the lease
        // expires and a later sweep retries.
        if let Some(publisher) = ctx.publisher(&tenant.name) {
            if let Err(Stop::Failed(err)) = step(ctx, &tenant.ctx(), &publisher, job.id).await {
                tracing::warn!(tenant = %tenant.name, job_id = %job.id, error = %err, "job step failed");
            }
        }
    }
}

/// Brings the job forward: announce, release waiting targets, dispatch, stop, announce.
#[tracing::instrument(skip_all, fields(tenant = %tenant.name, job_id = %id))]
pub async fn step(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    id: JobId,
) -> Result<(), Stop<StoreError>> {
    let Some(mut job) = announce(ctx, tenant, publisher, id).await? else {
        return Ok(());
    };
    if job.state == JobState::Running && job.count("waiting") > 0 {
        release_waiting(ctx, tenant, &job).await?;
        job = match until_ok("get_job", &ctx.shutdown, || ctx.store.get_job(tenant, id)).await? {
            Some(job) => job,
            None => return Ok(()),
        };
    }
    let dispatching = job.wants_children();
    if dispatching {
        dispatch(ctx, tenant, publisher, id).await?;
    }
    let stopping = job.state.is_stopping() && job.ended_at.is_none();
    if stopping {
        stop_children(ctx, tenant, publisher, &job).await?;
    }
    // What was done here may have changed the job (its last child dispatched or
    // stopped); otherwise the first announcement saw it as it is.
    if dispatching || stopping {
        announce(ctx, tenant, publisher, id).await?;
    }
    Ok(())
}

/// Publishes the job's state changes not announced yet (each exactly once, by whichever
/// dispatcher gets there first). Returns the job.
async fn announce(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    id: JobId,
) -> Result<Option<JobRecord>, Stop<StoreError>> {
    let Some((job, changes)) = until_ok("announce_job", &ctx.shutdown, || {
        ctx.store.announce_job(tenant, id)
    })
    .await?
    else {
        return Ok(None);
    };
    for what in changes {
        metrics::counter!("ris_job_events_total", "event" => what.clone()).increment(1);
        if what == "ended" {
            let secs = (job.ended_at.unwrap_or_else(Utc::now) - job.created_at)
                .num_milliseconds()
                .max(0) as f64
                / 1000.0;
            metrics::histogram!("ris_job_duration_seconds", "state" => job.state.as_str())
                .record(secs);
        }
        tracing::info!(event = %what, state = %job.state, counts = ?job.counts, "job changed");
        let event = Event::job(tenant.name.as_str(), &what, job.event_data());
        if let Err(err) = ris_broker::publish_event(publisher, &event).await {
            metrics::counter!("ris_event_publish_failures_total").increment(1);
            tracing::warn!(error = %err, "job event not published");
        }
    }
    Ok(Some(job))
}

/// Waiting targets whose agent is online now become pending; once the wait is over the
/// rest are skipped.
async fn release_waiting(
    ctx: &Context,
    tenant: &TenantCtx,
    job: &JobRecord,
) -> Result<(), Stop<StoreError>> {
    let waiting = until_ok("waiting_targets", &ctx.shutdown, || {
        ctx.store.waiting_targets(tenant, job.id)
    })
    .await?;
    let online: Vec<AgentId> = match ctx.presence.get_many(&tenant.name, &waiting).await {
        Ok(presence) => waiting
            .iter()
            .zip(presence)
            .filter_map(|(agent, p)| p.map(|_| *agent))
            .collect(),
        Err(err) => {
            tracing::warn!(error = %err, "presence unreadable; waiting targets stay waiting");
            return Ok(());
        }
    };
    let expire = job.wait_until.is_some_and(|until| until <= Utc::now());
    if online.is_empty() && !expire {
        return Ok(());
    }
    until_ok("release_waiting", &ctx.shutdown, || {
        ctx.store.release_waiting(tenant, job.id, &online, expire)
    })
    .await
}

/// Creates the next children the job has room for and places them.
async fn dispatch(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    id: JobId,
) -> Result<(), Stop<StoreError>> {
    let children = until_ok("dispatch_children", &ctx.shutdown, || {
        ctx.store.dispatch_children(tenant, id)
    })
    .await?;
    if children.is_empty() {
        return Ok(());
    }
    metrics::counter!("ris_job_children_dispatched_total").increment(children.len() as u64);
    tracing::debug!(children = children.len(), "children dispatched");
    futures::stream::iter(children)
        .for_each_concurrent(PLACE_CONCURRENCY, |child| async move {
            events::task_changed(publisher, &tenant.name, &child).await;
            placement::place(ctx, tenant, publisher, child).await;
        })
        .await;
    Ok(())
}

/// Stops the children of a halting, halted or cancelled job that are not asked to stop
/// yet: those not placed are cancelled at once; those assigned to an agent are asked to
/// stop (the agent drops an assignment it has not started and reports `not_started`, or
/// stops the run); running ones too when the job is cancelled or says
/// `cancel_running_on_halt`.
async fn stop_children(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    job: &JobRecord,
) -> Result<(), Stop<StoreError>> {
    let reason = if job.state == JobState::Cancelled {
        JOB_CANCELLED
    } else {
        JOB_HALTED
    };
    let cancel_running = job.state == JobState::Cancelled || job.cancel_running_on_halt;
    let children = until_ok("children_to_stop", &ctx.shutdown, || {
        ctx.store.children_to_stop(tenant, job.id)
    })
    .await?;
    for child in children {
        match child.state {
            TaskState::Queued | TaskState::Retrying => {
                cancel_unplaced(ctx, tenant, publisher, &child, reason).await?;
            }
            TaskState::Routing => request_stop(ctx, tenant, publisher, &child).await?,
            TaskState::Executing if cancel_running => {
                request_stop(ctx, tenant, publisher, &child).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

async fn cancel_unplaced(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    child: &TaskRecord,
    reason: &str,
) -> Result<(), Stop<StoreError>> {
    let transition = || {
        ctx.store.transition_task(
            tenant,
            child.id,
            Transition {
                to: TaskState::Cancelled,
                attempt: Some(child.attempts),
                agent_id: None,
                reason: Some(reason.to_owned()),
                detail: serde_json::json!({ "job_id": child.job_id }),
            },
        )
    };
    if let TransitionOutcome::Applied(task) =
        until_ok("transition_task", &ctx.shutdown, transition).await?
    {
        events::task_changed(publisher, &tenant.name, &task).await;
    }
    // Placed meanwhile: the next step finds it `routing`.
    Ok(())
}

/// Records the cancel request and tells the agent.
async fn request_stop(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    child: &TaskRecord,
) -> Result<(), Stop<StoreError>> {
    let Some(task) = until_ok("request_cancel", &ctx.shutdown, || {
        ctx.store.request_cancel(tenant, child.id)
    })
    .await?
    else {
        return Ok(());
    };
    let Some(agent) = task.agent_id else {
        return Ok(());
    };
    let order = ControlMessage::Cancel {
        v: V1,
        task_id: task.id,
    };
    let opts = PublishOptions {
        message_id: Some(format!("{}.cancel", task.id)),
        ..PublishOptions::default()
    };
    if let Err(err) = crate::signing::publish(
        ctx,
        publisher,
        &tenant.name,
        agent,
        &names::agent_control_key(agent),
        &order,
        opts,
    )
    .await
    {
        // The child stays `routing`/`executing`; a lapsed assignment is cancelled when
        // it comes back for placement, a lost agent's attempt is ended by the reaper.
        tracing::warn!(task_id = %task.id, %agent, error = %err, "cancel order not sent");
    }
    Ok(())
}
