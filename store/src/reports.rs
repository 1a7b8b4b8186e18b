//! Agents' reports applied in batches: many tasks' `executing` reports and results in
//! one transaction (group commit), each handled exactly as it would be alone.
//!
//! Under load the dispatcher receives reports faster than it can commit them one by
//! one; every commit costs a round trip for `BEGIN` and the tenant settings, one for
//! `COMMIT`, and a WAL flush. A batch pays those once. Reports are applied in task id
//! order (so two batches lock the tasks they share in the same order), and in arrival
//! order for one task (its `executing` report before its result). If any statement
//! fails the whole batch rolls back and nothing of it is kept; the caller then applies
//! its reports one by one, so one bad report cannot hold the others back.

use ris_schemas::ids::TaskId;
use ris_schemas::messages::Finished;

use crate::task_results::{self, ResultOutcome, RetryDecision};
use crate::transitions::{self, Transition, TransitionOutcome};
use crate::{PgStore, StoreError, TenantCtx};

/// The most reports applied in one transaction.
pub const MAX_REPORT_BATCH: usize = 128;

/// A report to apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A state change of a task, such as its `executing` report
    /// ([`crate::TaskRepo::transition_task`]).
    Transition { task: TaskId, change: Transition },
    /// A result ([`crate::RecoveryRepo::record_result_or_retry`]).
    Result(Finished),
}

impl Report {
    pub fn task_id(&self) -> TaskId {
        match self {
            Report::Transition { task, .. } => *task,
            Report::Result(f) => f.task_id,
        }
    }
}

/// What a [`Report`] did.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ReportOutcome {
    Transition(TransitionOutcome),
    Result(ResultOutcome),
}

/// [`crate::RecoveryRepo::apply_reports`].
pub(crate) async fn apply_reports(
    store: &PgStore,
    tenant: &TenantCtx,
    reports: &[Report],
    retry: RetryDecision<'_>,
) -> Result<Vec<ReportOutcome>, StoreError> {
    if reports.len() > MAX_REPORT_BATCH {
        return Err(StoreError::Invalid(format!(
            "{} reports in one batch, at most {MAX_REPORT_BATCH}",
            reports.len()
        )));
    }
    // A stable sort: one task's reports keep their order.
    let mut order: Vec<usize> = (0..reports.len()).collect();
    order.sort_by_key(|&i| reports[i].task_id());
    let mut tx = store.tenant_tx(tenant).await?;
    let mut outcomes = Vec::with_capacity(reports.len());
    for i in order {
        let outcome = match &reports[i] {
            Report::Transition { task, change } => ReportOutcome::Transition(
                transitions::transition_in(&mut tx, tenant, *task, change.clone()).await?,
            ),
            Report::Result(finished) => ReportOutcome::Result(
                task_results::record_result_in(&mut tx, tenant, finished, retry).await?,
            ),
        };
        outcomes.push((i, outcome));
    }
    tx.commit().await?;
    outcomes.sort_by_key(|(i, _)| *i);
    Ok(outcomes.into_iter().map(|(_, o)| o).collect())
}
