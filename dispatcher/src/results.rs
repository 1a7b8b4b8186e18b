//! An agent's report from `ris.results`.
//!
//! Reports are checked against the broker-validated `user_id` (an agent may only report
//! as itself; the platform's broker user, which replays dead letters, for any agent),
//! then applied through the store, which deduplicates results by
//! `(task_id, attempt)` and fences out stale attempts. A report that does not parse, or
//! names a task the tenant does not have, is dead-lettered with the reason. Live output
//! (`task.output`) is not stored but relayed to `ris.events`. Service reports
//! (`service.status`) update the agent's instance ([`crate::services::report`]).

use ris_broker::lapin::message::Delivery;
use ris_broker::{names, Publisher, RESULTS_QUEUE};
use ris_schemas::event::Event;
use ris_schemas::messages::{Executing, Finished, OutputChunk, ResultMessage};
use ris_schemas::task::TaskState;
use ris_store::{ResultOutcome, StoreError, TenantCtx, Transition, TransitionOutcome};

use crate::context::Context;
use crate::events;
use crate::report_batcher::ReportBatcher;
use crate::retry::{until_ok, Stop};
use crate::submit::{ack, dead_letter_from, Handled};

#[tracing::instrument(skip_all, fields(tenant = %tenant.name, task_id, agent_id))]
pub async fn handle(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    batcher: &ReportBatcher,
    delivery: Delivery,
) -> Handled {
    let report: ResultMessage = match serde_json::from_slice(&delivery.data) {
        Ok(r) => r,
        Err(err) => {
            return reject(publisher, &delivery, &format!("unparseable report: {err}")).await
        }
    };
    let span = tracing::Span::current();
    if let Some(task_id) = report.task_id() {
        span.record("task_id", tracing::field::display(task_id));
    }
    span.record("agent_id", tracing::field::display(report.agent_id()));
    let expected_user = names::agent_user(&tenant.name, report.agent_id());
    let user = delivery
        .properties
        .user_id()
        .as_ref()
        .map(|u| u.as_str().to_owned());
    // The platform's own broker user may report for any agent: only the platform can
    // publish as it (the broker validates user_id), and replaying a dead-lettered
    // report through the API does (an agent's user_id cannot be replayed as is).
    let platform = user.as_deref() == Some(ctx.config.broker.username.as_str());
    if user.as_deref() != Some(expected_user.as_str()) && !platform {
        let reason = format!(
            "report for agent {} not published by that agent (user_id {user:?})",
            report.agent_id()
        );
        return reject(publisher, &delivery, &reason).await;
    }
    let handled = match report {
        ResultMessage::Executing(e) => executing(ctx, tenant, publisher, batcher, &e).await,
        ResultMessage::Finished(f) => finished(ctx, tenant, publisher, batcher, &f).await,
        ResultMessage::Output(chunk) => {
            relay_output(publisher, tenant, chunk).await;
            Ok(true)
        }
        ResultMessage::ServiceStatus(status) => {
            crate::services::report(ctx, tenant, publisher, &status).await
        }
    };
    match handled {
        Ok(true) => ack(&delivery).await,
        Ok(false) => reject(publisher, &delivery, "unknown task").await,
        Err(Stop::Shutdown) => Handled::Released,
        Err(Stop::Failed(err)) => {
            reject(publisher, &delivery, &format!("report refused: {err}")).await
        }
    }
}

/// Live output is not stored: it is republished on `ris.events` (`task.output`) for
/// whoever watches, best effort. A failed publish is logged and dropped.
async fn relay_output(publisher: &Publisher, tenant: &TenantCtx, chunk: OutputChunk) {
    let event = Event::output(tenant.name.as_str(), chunk);
    if let Err(err) = ris_broker::publish_event(publisher, &event).await {
        tracing::debug!(error = %err, "live output not relayed; dropped");
    }
}

async fn reject(publisher: &Publisher, delivery: &Delivery, reason: &str) -> Handled {
    dead_letter_from(publisher, delivery, RESULTS_QUEUE, reason).await
}

/// `Ok(true)` when applied or harmlessly ignored, `Ok(false)` for an unknown task.
async fn executing(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    batcher: &ReportBatcher,
    e: &Executing,
) -> Result<bool, Stop<StoreError>> {
    let change = Transition {
        to: TaskState::Executing,
        attempt: Some(e.attempt),
        agent_id: Some(e.agent_id),
        reason: None,
        detail: serde_json::json!({ "started_at": e.started_at }),
    };
    let transition = || batcher.transition(e.task_id, change.clone());
    match until_ok("transition_task", &ctx.shutdown, transition).await? {
        TransitionOutcome::Applied(task) => {
            events::task_changed(publisher, &tenant.name, &task).await
        }
        TransitionOutcome::NotFound => return Ok(false),
        // Its result overtook it, or the attempt was superseded: nothing to do.
        other => tracing::debug!(?other, "executing report ignored"),
    }
    Ok(true)
}

async fn finished(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    batcher: &ReportBatcher,
    f: &Finished,
) -> Result<bool, Stop<StoreError>> {
    let outcome = until_ok("record_result", &ctx.shutdown, || batcher.result(f)).await?;
    tracing::debug!(?outcome, "result recorded");
    // The agent's in-flight count is cleared while the result is announced: neither
    // waits for the other.
    let clear = async {
        if let Err(err) = ctx
            .presence
            .inflight_done(&tenant.name, f.agent_id, f.task_id)
            .await
        {
            tracing::warn!(error = %err, "in-flight count not cleared; it expires by itself");
        }
    };
    let ((), known) = tokio::join!(clear, announce(ctx, tenant, publisher, f, outcome));
    Ok(known)
}

/// Publishes what a recorded result did (and steps its job); false for an unknown task.
async fn announce(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    f: &Finished,
    outcome: ResultOutcome,
) -> bool {
    match outcome {
        ResultOutcome::Applied(task) => {
            metrics::histogram!("ris_task_run_seconds", "state" => task.state.as_str())
                .record(f.result.duration_ms as f64 / 1000.0);
            events::task_changed(publisher, &tenant.name, &task).await;
            crate::replies::task_ended(ctx, tenant, publisher, &task).await;
            if let Some(job) = task.job_id {
                // Room for the next child, or the halt to act on. The result is recorded
                // whatever happens here: a failed step is left to the job sweep.
                if let Err(Stop::Failed(err)) = crate::jobs::step(ctx, tenant, publisher, job).await
                {
                    tracing::warn!(job_id = %job, error = %err, "job step failed; the job sweep retries");
                }
            }
        }
        ResultOutcome::NotFound => return false,
        ResultOutcome::Duplicate => {
            metrics::counter!("ris_results_duplicate_total").increment(1);
            tracing::debug!("duplicate result ignored");
        }
        ResultOutcome::Stale { current_attempt } => {
            tracing::info!(
                attempt = f.attempt,
                current_attempt,
                "stale result kept but not applied"
            );
        }
        ResultOutcome::Invalid(err) => tracing::info!(error = %err, "result not applied"),
    }
    true
}
