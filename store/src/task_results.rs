//! Recording results, deduplicated by `(task_id, attempt)`.

use std::borrow::Cow;
use std::time::Duration;

use ris_schemas::messages::Finished;
use ris_schemas::task::{InvalidTransition, TaskResult, TaskState};
use serde_json::json;
use sqlx::types::Json;

use crate::pg::to_i32;
use crate::transitions::{apply, check, lock_job_of, lock_task, Change, Refusal};
use sqlx::PgConnection;

use crate::{PgStore, StoreError, TaskRecord, TenantCtx};

// Returned once per call and matched at once, never stored in bulk: boxing the
// record would only cost callers a dereference.
/// What [`crate::TaskRepo::record_result`] did.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ResultOutcome {
    /// The task went to the outcome's state.
    Applied(TaskRecord),
    /// This attempt's result was recorded before (a redelivery); nothing changed.
    Duplicate,
    /// The result belongs to another attempt than the current one: it is kept with the
    /// task's results, but the task is untouched.
    Stale {
        current_attempt: u32,
    },
    NotFound,
    /// The task's state does not allow the outcome (it was cancelled meanwhile, say).
    /// The result is kept.
    Invalid(InvalidTransition),
}

/// Reason of the result an agent reports for an assignment it dropped without running
/// it (the task was cancelled before it started).
pub const NOT_STARTED: &str = "not_started";

/// Decides, for the locked task and the result of its current attempt, whether to try
/// again and after how long. `None`: the result stands.
pub type RetryDecision<'a> = &'a (dyn Fn(&TaskRecord, &TaskResult) -> Option<Duration> + Sync);

/// The event detail of a result: its duration and outcome, and the retry delay when the
/// task will try again.
fn result_detail(result: &TaskResult, retry_in: Option<Duration>) -> serde_json::Value {
    let mut detail = json!({ "duration_ms": result.duration_ms, "outcome": result.outcome });
    if let Some(delay) = retry_in {
        detail["retry_in_ms"] = json!(delay.as_millis() as u64);
    }
    detail
}

/// The result as PostgreSQL can store it: `jsonb` cannot hold U+0000, which a
/// command's output may well contain, so each one in a string becomes U+FFFD (the
/// replacement character). Without this the result of `printf '\0'` could not be
/// recorded at all.
fn storable(result: &TaskResult) -> Result<Cow<'_, TaskResult>, StoreError> {
    let mut value = serde_json::to_value(result).map_err(|e| StoreError::corrupt("result", e))?;
    if !replace_nul(&mut value) {
        return Ok(Cow::Borrowed(result));
    }
    serde_json::from_value(value)
        .map(Cow::Owned)
        .map_err(|e| StoreError::corrupt("result", e))
}

/// Replaces U+0000 in every string of `value`; whether there was one.
fn replace_nul(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => {
            *s = s.replace('\0', "\u{FFFD}");
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |any, v| replace_nul(v) | any),
        Value::Object(fields) => fields
            .values_mut()
            .fold(false, |any, v| replace_nul(v) | any),
        _ => false,
    }
}

/// [`crate::RecoveryRepo::record_result_or_retry`].
pub(crate) async fn record_result(
    store: &PgStore,
    tenant: &TenantCtx,
    finished: &Finished,
    retry: RetryDecision<'_>,
) -> Result<ResultOutcome, StoreError> {
    let mut tx = store.tenant_tx(tenant).await?;
    let outcome = record_result_in(&mut tx, tenant, finished, retry).await?;
    // Committed whatever the outcome: the result row is kept.
    tx.commit().await?;
    Ok(outcome)
}

/// [`record_result`] inside the caller's tenant transaction.
pub(crate) async fn record_result_in(
    tx: &mut PgConnection,
    tenant: &TenantCtx,
    finished: &Finished,
    retry: RetryDecision<'_>,
) -> Result<ResultOutcome, StoreError> {
    let result = &*storable(&finished.result)?;
    // Lock first: results of one task are then recorded one at a time, and a result for
    // an unknown (or another tenant's) task is refused before anything is written.
    let Some(current) = lock_task(&mut *tx, tenant, finished.task_id).await? else {
        return Ok(ResultOutcome::NotFound);
    };
    let inserted = sqlx::query(
        "INSERT INTO task_results (tenant_id, task_id, attempt, agent_id, outcome, result,
                                   started_at, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (task_id, attempt) DO NOTHING",
    )
    .bind(tenant.id)
    .bind(finished.task_id.0)
    .bind(to_i32(finished.attempt))
    .bind(finished.agent_id.0)
    .bind(result.outcome.state().as_str())
    .bind(Json(result))
    .bind(finished.started_at)
    .bind(finished.finished_at)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(ResultOutcome::Duplicate);
    }
    let retry_in = match check(&current, Some(finished.attempt), TaskState::Retrying) {
        Ok(()) => retry(&current, result),
        Err(_) => None,
    };
    let to = if retry_in.is_some() {
        TaskState::Retrying
    } else {
        result.outcome.state()
    };
    let outcome = match check(&current, Some(finished.attempt), to) {
        Err(Refusal::Stale { current_attempt }) => ResultOutcome::Stale { current_attempt },
        Err(Refusal::Invalid(e)) => ResultOutcome::Invalid(e),
        Ok(()) => {
            // The result overtook its `executing` report (they travel as separate
            // messages): record the start first, from the result's own `started_at`, so
            // the history never skips it. The late report then changes nothing.
            // An agent that dropped a cancelled assignment unrun says so (`not_started`):
            // there was no start to record.
            let unrun = result.reason.as_deref() == Some(NOT_STARTED);
            let current = if current.state == TaskState::Routing && !unrun {
                lock_job_of(&mut *tx, &current).await?;
                let started = Change {
                    detail: json!({ "started_at": finished.started_at, "from": "result" }),
                    ..Change::new(&current, TaskState::Executing, Duration::ZERO)
                };
                apply(&mut *tx, &current, started).await?
            } else {
                current
            };
            let change = Change {
                reason: result.reason.clone(),
                result: Some(result.clone()),
                detail: result_detail(result, retry_in),
                ..Change::new(&current, to, retry_in.unwrap_or(Duration::ZERO))
            };
            ResultOutcome::Applied(apply(&mut *tx, &current, change).await?)
        }
    };
    Ok(outcome)
}
