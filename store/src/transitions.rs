//! The one path by which a task changes state.
//!
//! Every change — a plain [`Transition`], a placement, a requeue, a result — locks the
//! task row, lets [`TaskState::transition`] decide, then applies the change with one
//! statement that updates the row and appends the matching `task_events` row, so the
//! event log never contradicts the state.

use std::time::Duration;

use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::task::{InvalidTransition, TaskResult, TaskState};
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::pg::{micros, to_i32};
use crate::tasks::{task_columns, TaskRow};
use crate::{PgStore, StoreError, TaskRecord, TenantCtx};

/// A requested state change.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub to: TaskState,
    /// Fence: refused as stale when `Some(a)` and `a` is not the current attempt.
    pub attempt: Option<u32>,
    /// Replaces the task's agent when `Some`.
    pub agent_id: Option<AgentId>,
    pub reason: Option<String>,
    /// Recorded in the event.
    pub detail: serde_json::Value,
}

impl Transition {
    /// A change to `to` with no fence, agent, reason or detail.
    pub fn to(to: TaskState) -> Self {
        Transition {
            to,
            attempt: None,
            agent_id: None,
            reason: None,
            detail: serde_json::Value::Object(Default::default()),
        }
    }
}

// Returned once per call and matched at once, never stored in bulk: boxing the
// record would only cost callers a dereference.
/// What a state change did.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum TransitionOutcome {
    Applied(TaskRecord),
    NotFound,
    Invalid(InvalidTransition),
    /// The change was for another attempt than the current one; nothing changed.
    Stale {
        current_attempt: u32,
    },
    /// The task is not as the caller expected it (a placement chosen from a submission
    /// found it no longer `queued`, or holding another request); nothing changed.
    Unexpected,
}

/// Loads the task and locks its row until the transaction ends.
pub(crate) async fn lock_task(
    conn: &mut PgConnection,
    tenant: &TenantCtx,
    id: TaskId,
) -> Result<Option<TaskRecord>, StoreError> {
    let row: Option<TaskRow> = sqlx::query_as(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(tenant.id)
    .bind(id.0)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(TaskRecord::try_from).transpose()
}

/// Locks the row of the task's job, if it is a job's child, until the transaction ends.
///
/// A child's final change locks its job's row, then its target row; a move between live
/// states locks only the target row (migration 20250200000000_job_active_bucket.sql). A
/// transaction that makes both kinds of change to a child takes this first, so that it
/// too locks the job row before the target row.
pub(crate) async fn lock_job_of(
    conn: &mut PgConnection,
    task: &TaskRecord,
) -> Result<(), StoreError> {
    if let Some(job) = task.job_id {
        sqlx::query("SELECT 1 FROM jobs WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(task.tenant_id)
            .bind(job.0)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A change already allowed by [`TaskState::transition`], ready to be written.
pub(crate) struct Change {
    pub to: TaskState,
    pub attempts: u32,
    /// Replaces the task's agent when `Some`.
    pub agent_id: Option<AgentId>,
    /// Replaces the task's reason (cleared when `None`).
    pub reason: Option<String>,
    /// Replaces the task's result when `Some`.
    pub result: Option<TaskResult>,
    /// Recorded in the event.
    pub detail: serde_json::Value,
    /// Entering `queued` or `retrying`: placeable again after this delay.
    pub placeable_in: Option<Duration>,
    /// A new queue deadline, this long from now: when a retry starts waiting (delay +
    /// queue timeout), or when a retry is requeued (queue timeout).
    pub fresh_deadline: Option<Duration>,
}

impl Change {
    /// The change to `to` for `current`, keeping attempts, agent and result. Entering
    /// `queued` sets the placement delay and, coming from `retrying`, a fresh deadline;
    /// entering `retrying` makes the task placeable after the delay, with a deadline
    /// that long plus its queue timeout.
    pub fn new(current: &TaskRecord, to: TaskState, placeable_in: Duration) -> Self {
        let queued = to == TaskState::Queued;
        let retrying = to == TaskState::Retrying;
        let queue_timeout =
            Duration::from_secs(u64::from(current.request.queue_timeout_secs.secs()));
        let fresh_deadline = if retrying {
            Some(placeable_in + queue_timeout)
        } else if queued && current.state == TaskState::Retrying {
            Some(queue_timeout)
        } else {
            None
        };
        Change {
            to,
            attempts: current.attempts,
            agent_id: None,
            reason: None,
            result: None,
            detail: serde_json::Value::Object(Default::default()),
            placeable_in: (queued || retrying).then_some(placeable_in),
            fresh_deadline,
        }
    }
}

/// Writes `change` to the locked task `current` and appends its event.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    current: &TaskRecord,
    change: Change,
) -> Result<TaskRecord, StoreError> {
    debug_assert!(
        current.state.transition(change.to).is_ok(),
        "{} -> {} was not checked",
        current.state,
        change.to
    );
    let fresh_deadline = change.fresh_deadline.map(micros);
    let row: TaskRow = sqlx::query_as(concat!(
        "WITH t AS (
             UPDATE tasks SET
                 state = $3,
                 attempts = $4,
                 agent_id = COALESCE($5, agent_id),
                 reason = $6,
                 result = COALESCE($7, result),
                 next_placement_at =
                     COALESCE(now() + $8 * interval '1 microsecond', next_placement_at),
                 queue_deadline = COALESCE(now() + $9 * interval '1 microsecond', queue_deadline),
                 updated_at = now()
             WHERE tenant_id = $1 AND id = $2
             RETURNING ",
        task_columns!(),
        "
         ), e AS (
             INSERT INTO task_events (tenant_id, task_id, state, attempt, agent_id, reason, detail)
             SELECT tenant_id, id, state, attempts, agent_id, reason, $10 FROM t
         )
         SELECT * FROM t"
    ))
    .bind(current.tenant_id)
    .bind(current.id.0)
    .bind(change.to.as_str())
    .bind(to_i32(change.attempts))
    .bind(change.agent_id.map(|a| a.0))
    .bind(change.reason)
    .bind(change.result.as_ref().map(Json))
    .bind(change.placeable_in.map(micros))
    .bind(fresh_deadline)
    .bind(Json(&change.detail))
    .fetch_one(&mut *conn)
    .await?;
    row.try_into()
}

/// [`crate::TaskRepo::transition_task`].
pub(crate) async fn transition_task(
    store: &PgStore,
    tenant: &TenantCtx,
    id: TaskId,
    t: Transition,
) -> Result<TransitionOutcome, StoreError> {
    let mut tx = store.tenant_tx(tenant).await?;
    let outcome = transition_in(&mut tx, tenant, id, t).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// [`transition_task`] inside the caller's tenant transaction.
pub(crate) async fn transition_in(
    conn: &mut PgConnection,
    tenant: &TenantCtx,
    id: TaskId,
    t: Transition,
) -> Result<TransitionOutcome, StoreError> {
    let Some(current) = lock_task(conn, tenant, id).await? else {
        return Ok(TransitionOutcome::NotFound);
    };
    if let Err(refusal) = check(&current, t.attempt, t.to) {
        return Ok(refusal.into());
    }
    let change = Change {
        agent_id: t.agent_id,
        reason: t.reason,
        detail: t.detail,
        ..Change::new(&current, t.to, Duration::ZERO)
    };
    let record = apply(conn, &current, change).await?;
    Ok(TransitionOutcome::Applied(record))
}

/// Why a change was refused.
pub(crate) enum Refusal {
    Stale { current_attempt: u32 },
    Invalid(InvalidTransition),
}

impl From<Refusal> for TransitionOutcome {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Stale { current_attempt } => TransitionOutcome::Stale { current_attempt },
            Refusal::Invalid(e) => TransitionOutcome::Invalid(e),
        }
    }
}

/// Whether `current` may go to `to` for attempt `fence`. The fence is checked first, so
/// a late message of an earlier attempt reads as stale rather than invalid.
pub(crate) fn check(
    current: &TaskRecord,
    fence: Option<u32>,
    to: TaskState,
) -> Result<(), Refusal> {
    if let Some(attempt) = fence {
        if attempt != current.attempts {
            return Err(Refusal::Stale {
                current_attempt: current.attempts,
            });
        }
    }
    current
        .state
        .transition(to)
        .map(drop)
        .map_err(Refusal::Invalid)
}
