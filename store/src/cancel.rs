//! Cancelling a task through the API.
//!
//! What a cancel does depends on where the task is, decided in one transaction that
//! locks the task row:
//!
//! - Not yet handed to an agent (`queued`, `retrying`): `cancelled` at once. A
//!   dispatcher that later handles its submission, or a sweep, finds it no longer
//!   waiting.
//! - Assigned (`routing`): `cancelled` at once too, but the assignment may still sit in
//!   the agent's queue, so the outcome names the agent that must be told to drop it.
//! - Running (`executing`): only the agent can stop the process. The state stays
//!   `executing` until the agent reports `cancelled` through the normal result path;
//!   the request is recorded in `cancel_requested_at` (a request is not a state
//!   change, so it is not a `task_events` row).
//! - Finished: nothing changes.
//!
//! Every accepted request sets `cancel_requested_at` (the first request wins), so the
//! column always reads "a cancel was requested through the API at this time".

use std::time::Duration;

use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::task::TaskState;
use sqlx::PgConnection;

use crate::tasks::{task_columns, TaskRow};
use crate::transitions::{apply, lock_task, Change};
use crate::{PgStore, StoreError, TaskRecord, TenantCtx};

/// Reason recorded on tasks cancelled through the API (the agent reports the same
/// reason for a task it stopped).
pub const CANCELLED: &str = "cancelled";

// Returned once per call and matched at once, never stored in bulk: boxing the
// record would only cost callers a dereference.
/// What [`crate::TaskRepo::cancel_task`] did.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The task is now `cancelled` (event appended). `notify` is the agent it was
    /// assigned to when it was `routing`: that agent may still receive the assignment
    /// and must be told to drop it. `None` when no assignment was in flight.
    Cancelled {
        task: TaskRecord,
        notify: Option<AgentId>,
    },
    /// The task is `executing` on `agent` and stays so until the agent, told to stop
    /// it, reports the outcome. `task.cancel_requested_at` is set.
    Requested {
        task: TaskRecord,
        agent: AgentId,
    },
    /// The task had already ended in this state; nothing changed.
    Finished(TaskState),
    NotFound,
}

/// [`crate::TaskRepo::cancel_task`].
pub(crate) async fn cancel_task(
    store: &PgStore,
    tenant: &TenantCtx,
    id: TaskId,
    detail: serde_json::Value,
) -> Result<CancelOutcome, StoreError> {
    let mut tx = store.tenant_tx(tenant).await?;
    let Some(current) = lock_task(&mut tx, tenant, id).await? else {
        return Ok(CancelOutcome::NotFound);
    };
    // The lifecycle lets every state but the terminal ones go to `cancelled`.
    if current.state.transition(TaskState::Cancelled).is_err() {
        return Ok(CancelOutcome::Finished(current.state));
    }
    let requested = mark_requested(&mut tx, &current).await?;
    let outcome = if current.state == TaskState::Executing {
        let agent = requested
            .agent_id
            .ok_or_else(|| StoreError::Corrupt(format!("executing task {id} has no agent")))?;
        CancelOutcome::Requested {
            task: requested,
            agent,
        }
    } else {
        let change = Change {
            reason: Some(CANCELLED.to_owned()),
            detail,
            ..Change::new(&requested, TaskState::Cancelled, Duration::ZERO)
        };
        let notify = match current.state {
            TaskState::Routing => current.agent_id,
            _ => None,
        };
        let task = apply(&mut tx, &requested, change).await?;
        CancelOutcome::Cancelled { task, notify }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Sets `cancel_requested_at` unless an earlier request did; returns the row.
async fn mark_requested(
    conn: &mut PgConnection,
    current: &TaskRecord,
) -> Result<TaskRecord, StoreError> {
    let row: TaskRow = sqlx::query_as(concat!(
        "UPDATE tasks SET cancel_requested_at = COALESCE(cancel_requested_at, now())
         WHERE tenant_id = $1 AND id = $2
         RETURNING ",
        task_columns!()
    ))
    .bind(current.tenant_id)
    .bind(current.id.0)
    .fetch_one(&mut *conn)
    .await?;
    row.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finished_tasks_cannot_be_cancelled() {
        for state in TaskState::ALL {
            assert_eq!(
                state.transition(TaskState::Cancelled).is_err(),
                state.is_terminal(),
                "{state}"
            );
        }
    }
}
