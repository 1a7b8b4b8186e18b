//! Group commit of agents' reports, per tenant worker.
//!
//! The `ris.results` handlers run concurrently (up to `consumer_concurrency`); each
//! hands its `executing` report or result to the tenant's batcher and waits for the
//! outcome. The batcher applies whatever has gathered while the previous batch was
//! committing — nothing waits for a batch to fill, so a lone report goes alone — in one
//! transaction ([`ris_store::RecoveryRepo::apply_reports`]). When a batch fails, its
//! reports are applied one at a time, so one report the store refuses is dead-lettered
//! alone and a dependency that is down is retried by each handler as before. A handler
//! acks its delivery only after its outcome came back, i.e. after the commit.

use ris_runtime::batch::Batcher;
use ris_schemas::ids::TaskId;
use ris_schemas::messages::Finished;
use ris_schemas::task::{RetryPolicy, TaskResult};
use ris_store::{
    Report, ReportOutcome, ResultOutcome, StoreError, TaskRecord, TenantCtx, Transition,
    TransitionOutcome, MAX_REPORT_BATCH,
};

use crate::context::Context;
use crate::recovery;

/// A handle on one tenant worker's batcher ([`ris_runtime::batch`]). The batcher stops
/// when every handle is gone.
#[derive(Clone)]
pub struct ReportBatcher {
    batcher: Batcher<Report, Result<ReportOutcome, StoreError>>,
    ctx: Context,
    tenant: TenantCtx,
}

impl ReportBatcher {
    pub fn start(ctx: Context, tenant: TenantCtx) -> Self {
        let (worker_ctx, worker_tenant) = (ctx.clone(), tenant.clone());
        let batcher = Batcher::start(MAX_REPORT_BATCH * 4, MAX_REPORT_BATCH, move |reports| {
            apply_batch(worker_ctx.clone(), worker_tenant.clone(), reports)
        });
        ReportBatcher {
            batcher,
            ctx,
            tenant,
        }
    }

    /// Applies `report` (in some batch) and returns what it did.
    pub async fn apply(&self, report: Report) -> Result<ReportOutcome, StoreError> {
        if let Some(outcome) = self.batcher.submit(report.clone()).await {
            return outcome;
        }
        // The batcher is gone (it only stops when its handles are): apply it alone.
        tracing::error!("report batcher stopped; applying a report alone");
        apply_one(&self.ctx, &self.tenant, report).await
    }
}

impl ReportBatcher {
    /// A state change of a task (its `executing` report), in some batch.
    pub async fn transition(
        &self,
        task: TaskId,
        change: Transition,
    ) -> Result<TransitionOutcome, StoreError> {
        match self.apply(Report::Transition { task, change }).await? {
            ReportOutcome::Transition(outcome) => Ok(outcome),
            ReportOutcome::Result(_) => Err(mismatched()),
        }
    }

    /// A result, in some batch.
    pub async fn result(&self, finished: &Finished) -> Result<ResultOutcome, StoreError> {
        match self.apply(Report::Result(finished.clone())).await? {
            ReportOutcome::Result(outcome) => Ok(outcome),
            ReportOutcome::Transition(_) => Err(mismatched()),
        }
    }
}

fn mismatched() -> StoreError {
    StoreError::Invalid("a report's outcome is of another kind".into())
}

async fn apply_one(
    ctx: &Context,
    tenant: &TenantCtx,
    report: Report,
) -> Result<ReportOutcome, StoreError> {
    let default = recovery::tenant_default(ctx, tenant).await;
    let decide =
        |task: &TaskRecord, result: &TaskResult| retry_decision(default.as_ref(), task, result);
    ctx.store
        .apply_reports(tenant, std::slice::from_ref(&report), &decide)
        .await?
        .pop()
        .ok_or_else(|| StoreError::Invalid("no outcome for a report".into()))
}

/// Applies `reports` in one transaction; if that fails, one by one.
async fn apply_batch(
    ctx: Context,
    tenant: TenantCtx,
    reports: Vec<Report>,
) -> Vec<Result<ReportOutcome, StoreError>> {
    metrics::histogram!("ris_report_batch_size").record(reports.len() as f64);
    let default = recovery::tenant_default(&ctx, &tenant).await;
    let decide =
        |task: &TaskRecord, result: &TaskResult| retry_decision(default.as_ref(), task, result);
    match ctx.store.apply_reports(&tenant, &reports, &decide).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(err) if reports.len() > 1 => {
            tracing::info!(error = %err, reports = reports.len(), "report batch failed; applying its reports one by one");
            let mut outcomes = Vec::with_capacity(reports.len());
            for report in reports {
                outcomes.push(apply_one(&ctx, &tenant, report).await);
            }
            outcomes
        }
        Err(err) => vec![Err(err)],
    }
}

/// Whether a result should be tried again, and after how long: the task's policy (or
/// the tenant's default), unless an operator asked the task to stop.
pub fn retry_decision(
    default: Option<&RetryPolicy>,
    task: &TaskRecord,
    result: &TaskResult,
) -> Option<std::time::Duration> {
    if task.cancel_requested_at.is_some() {
        return None; // an operator asked it to stop: do not start it again
    }
    let why = recovery::retry_cause(result)?;
    recovery::retry_delay(&recovery::policy_of(task, default), why, task.attempts)
}
