//! Placing tasks: the dispatcher's cross-tenant sweeps (claim, expire) and the
//! per-task steps of a placement (begin an attempt, requeue).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::job::JobId;
use ris_schemas::task::{TaskRequest, TaskState};
use uuid::Uuid;

use crate::pg::micros;
use crate::tasks::{task_columns, TaskRow, TaskWithTenantRow};
use crate::transitions::{apply, check, lock_task, Change};
use crate::{PgStore, StoreError, TaskRecord, Tenant, TenantCtx, TransitionOutcome};

/// Sweeps handle at most this many tasks per call.
const MAX_SWEEP: i64 = 1000;

/// Reason given to tasks that waited past their queue deadline.
pub const NO_AGENT: &str = "no_agent";

/// The most placements recorded, or tasks read, in one transaction.
pub const MAX_PLACEMENT_BATCH: usize = 128;

/// A placement to record ([`crate::TaskRepo::begin_attempts`]): `task` on `agent`.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub task: TaskId,
    pub agent: AgentId,
    /// The request `agent` was chosen for, when the caller chose it from a submission
    /// without reading the task first: the placement then applies only to a stored,
    /// `queued` task holding this very request, and is otherwise refused
    /// ([`TransitionOutcome::Unexpected`], nothing changed).
    pub submitted: Option<Arc<TaskRequest>>,
}

impl Placement {
    /// A placement of a task the caller has read (and found waiting).
    pub fn new(task: TaskId, agent: AgentId) -> Self {
        Placement {
            task,
            agent,
            submitted: None,
        }
    }

    /// A placement of a task known only from its submission, as it was submitted.
    pub fn of_submitted(task: TaskId, agent: AgentId, request: Arc<TaskRequest>) -> Self {
        Placement {
            task,
            agent,
            submitted: Some(request),
        }
    }

    /// Whether `current` (the task as stored, if it is) is what this placement was
    /// chosen for.
    fn expects(&self, current: Option<&TaskRecord>) -> bool {
        match (&self.submitted, current) {
            (None, _) => true,
            (Some(request), Some(task)) => {
                task.state == TaskState::Queued && task.request == **request
            }
            (Some(_), None) => false,
        }
    }
}

/// [`crate::TaskRepo::begin_attempts`]. The tasks are locked in id order by one
/// statement (two batches that share tasks lock them in the same order), then their
/// jobs' rows, shared, by another; each placement is then checked and applied as it
/// would be alone, in the order given (a task placed twice in one batch is refused the
/// second time, as it would be after the first).
pub(crate) async fn begin_attempts(
    store: &PgStore,
    tenant: &TenantCtx,
    placements: &[Placement],
) -> Result<Vec<TransitionOutcome>, StoreError> {
    if placements.len() > MAX_PLACEMENT_BATCH {
        return Err(StoreError::Invalid(format!(
            "{} placements in one batch, at most {MAX_PLACEMENT_BATCH}",
            placements.len()
        )));
    }
    let ids: Vec<TaskId> = placements.iter().map(|p| p.task).collect();
    let mut tx = store.tenant_tx(tenant).await?;
    let mut tasks = tasks_by_id(&mut tx, tenant, &ids, Lock::ForUpdate).await?;
    // A child of a job that stopped dispatching is cancelled instead of placed. The
    // share lock on the job row waits for a change that is halting the job (which takes
    // it exclusively) and holds off the next, while the job's other placements go on
    // (moving to `routing` does not lock the job row: 20250200000000_job_active_bucket).
    let stopped = stopped_jobs(&mut tx, tenant, &tasks).await?;
    // `None`: a child to cancel once the share locks are released.
    let mut outcomes: Vec<Option<TransitionOutcome>> = Vec::with_capacity(placements.len());
    for placement in placements {
        let (id, agent) = (placement.task, placement.agent);
        let current = tasks.get(&id);
        if !placement.expects(current) {
            outcomes.push(Some(TransitionOutcome::Unexpected));
            continue;
        }
        let Some(current) = current else {
            outcomes.push(Some(TransitionOutcome::NotFound));
            continue;
        };
        // Only `queued` and `retrying` may go to `routing`.
        if let Err(refusal) = check(current, None, TaskState::Routing) {
            outcomes.push(Some(refusal.into()));
            continue;
        }
        if current.job_id.is_some_and(|job| stopped.contains(&job)) {
            outcomes.push(None);
            continue;
        }
        let change = Change {
            attempts: current.attempts.saturating_add(1),
            agent_id: Some(agent),
            ..Change::new(current, TaskState::Routing, Duration::ZERO)
        };
        let record = apply(&mut tx, current, change).await?;
        tasks.insert(id, record.clone());
        outcomes.push(Some(TransitionOutcome::Applied(record)));
    }
    tx.commit().await?;
    // Cancelling is a final change, which locks the job row exclusively: not while
    // holding the share lock, which another such placement may hold too.
    let mut done = Vec::with_capacity(outcomes.len());
    for (outcome, placement) in outcomes.into_iter().zip(placements) {
        done.push(match outcome {
            Some(outcome) => outcome,
            None => cancel_stopped_child(store, tenant, placement.task).await?,
        });
    }
    Ok(done)
}

/// Locks the rows of the jobs of `tasks`, shared, in id order; the ids of those that
/// stopped dispatching.
async fn stopped_jobs(
    conn: &mut sqlx::PgConnection,
    tenant: &TenantCtx,
    tasks: &HashMap<TaskId, TaskRecord>,
) -> Result<HashSet<JobId>, StoreError> {
    let mut jobs: Vec<Uuid> = tasks
        .values()
        .filter_map(|t| t.job_id.map(|j| j.0))
        .collect();
    if jobs.is_empty() {
        return Ok(HashSet::new());
    }
    jobs.sort_unstable();
    jobs.dedup();
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, state FROM jobs WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id FOR SHARE",
    )
    .bind(tenant.id)
    .bind(&jobs)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, state)| stop_reason(state).is_some())
        .map(|(id, _)| JobId(id))
        .collect())
}

/// [`crate::TaskRepo::get_tasks`].
pub(crate) async fn get_tasks(
    store: &PgStore,
    tenant: &TenantCtx,
    ids: &[TaskId],
) -> Result<Vec<Option<TaskRecord>>, StoreError> {
    if ids.len() > MAX_PLACEMENT_BATCH {
        return Err(StoreError::Invalid(format!(
            "{} tasks read in one batch, at most {MAX_PLACEMENT_BATCH}",
            ids.len()
        )));
    }
    let mut tx = store.tenant_tx(tenant).await?;
    let found = tasks_by_id(&mut tx, tenant, ids, Lock::None).await?;
    tx.commit().await?;
    Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
}

/// [`crate::TaskRepo::get_tasks`], answered per task: if the batch fails, each task is
/// read alone, so that one failure does not fail the others (for batching callers).
pub async fn get_tasks_each<S: crate::TaskRepo + ?Sized>(
    store: &S,
    tenant: &TenantCtx,
    ids: &[TaskId],
) -> Vec<Result<Option<TaskRecord>, StoreError>> {
    match store.get_tasks(tenant, ids).await {
        Ok(found) => found.into_iter().map(Ok).collect(),
        Err(err) if ids.len() > 1 => {
            tracing::info!(error = %err, tasks = ids.len(), "batched read failed; reading its tasks one by one");
            let mut found = Vec::with_capacity(ids.len());
            for &id in ids {
                found.push(store.get_task(tenant, id).await);
            }
            found
        }
        Err(err) => vec![Err(err)],
    }
}

/// Whether [`tasks_by_id`] locks the rows it reads.
#[derive(Clone, Copy)]
enum Lock {
    None,
    /// `FOR UPDATE`, in id order.
    ForUpdate,
}

/// The tenant's tasks among `ids`, by id (one statement).
async fn tasks_by_id(
    conn: &mut sqlx::PgConnection,
    tenant: &TenantCtx,
    ids: &[TaskId],
    lock: Lock,
) -> Result<HashMap<TaskId, TaskRecord>, StoreError> {
    let sql = match lock {
        Lock::None => concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE tenant_id = $1 AND id = ANY($2)"
        ),
        Lock::ForUpdate => concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE"
        ),
    };
    let keys: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows: Vec<TaskRow> = sqlx::query_as(sql)
        .bind(tenant.id)
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await?;
    let mut tasks = HashMap::with_capacity(rows.len());
    for row in rows {
        let task = TaskRecord::try_from(row)?;
        tasks.insert(task.id, task);
    }
    Ok(tasks)
}

/// Cancels a child about to be placed whose job stopped dispatching.
async fn cancel_stopped_child(
    store: &PgStore,
    tenant: &TenantCtx,
    id: TaskId,
) -> Result<TransitionOutcome, StoreError> {
    let mut tx = store.tenant_tx(tenant).await?;
    let Some(current) = lock_task(&mut tx, tenant, id).await? else {
        return Ok(TransitionOutcome::NotFound);
    };
    if let Err(refusal) = check(&current, None, TaskState::Cancelled) {
        return Ok(refusal.into());
    }
    // A stopped job never runs again, and deleting it deletes its children.
    let Some(stopped) = job_stopped(&mut tx, &current).await? else {
        return Err(StoreError::Corrupt(format!(
            "the job of task {id} stopped dispatching, then no longer had"
        )));
    };
    let change = Change {
        reason: Some(stopped.to_owned()),
        detail: serde_json::json!({ "job_id": current.job_id }),
        ..Change::new(&current, TaskState::Cancelled, Duration::ZERO)
    };
    let record = apply(&mut tx, &current, change).await?;
    tx.commit().await?;
    Ok(TransitionOutcome::Applied(record))
}

/// Reason given to children of a job that halted or was cancelled before they started.
pub const JOB_HALTED: &str = "job_halted";
pub const JOB_CANCELLED: &str = "job_cancelled";

/// For a child of a job that no longer dispatches: the reason to cancel it with. Locks
/// the job row until the transaction ends.
async fn job_stopped(
    conn: &mut sqlx::PgConnection,
    task: &TaskRecord,
) -> Result<Option<&'static str>, StoreError> {
    let Some(job) = task.job_id else {
        return Ok(None);
    };
    let state: Option<(String,)> =
        sqlx::query_as("SELECT state FROM jobs WHERE tenant_id = $1 AND id = $2 FOR UPDATE")
            .bind(task.tenant_id)
            .bind(job.0)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(state.and_then(|(s,)| stop_reason(&s)))
}

/// For a job in `state`: the reason to cancel its unplaced children with, if it no
/// longer dispatches.
fn stop_reason(state: &str) -> Option<&'static str> {
    match state {
        "running" => None,
        "cancelled" => Some(JOB_CANCELLED),
        _ => Some(JOB_HALTED),
    }
}

/// [`crate::TaskRepo::requeue_task`].
pub(crate) async fn requeue_task(
    store: &PgStore,
    tenant: &TenantCtx,
    id: TaskId,
    reason: &str,
    retry_in: Duration,
) -> Result<TransitionOutcome, StoreError> {
    let mut tx = store.tenant_tx(tenant).await?;
    let Some(current) = lock_task(&mut tx, tenant, id).await? else {
        return Ok(TransitionOutcome::NotFound);
    };
    if let Err(refusal) = check(&current, None, TaskState::Queued) {
        return Ok(refusal.into());
    }
    let change = Change {
        reason: Some(reason.to_owned()),
        ..Change::new(&current, TaskState::Queued, retry_in)
    };
    let record = apply(&mut tx, &current, change).await?;
    tx.commit().await?;
    Ok(TransitionOutcome::Applied(record))
}

/// [`crate::TaskRepo::claim_unplaced`]. Rows another dispatcher holds are skipped, and
/// a claimed row is not due again until its lease ends, so no task is handed to two
/// callers at once.
pub(crate) async fn claim_unplaced(
    store: &PgStore,
    limit: i64,
    lease: Duration,
) -> Result<Vec<(Tenant, TaskRecord)>, StoreError> {
    // The states are spelled out (not bound) so the partial index applies.
    let rows: Vec<TaskWithTenantRow> = sqlx::query_as(concat!(
        "WITH claimed AS (
             UPDATE tasks SET next_placement_at = now() + $2 * interval '1 microsecond'
             WHERE id IN (
                 SELECT id FROM tasks
                 WHERE state IN ('queued', 'retrying') AND next_placement_at <= now()
                   AND queue_deadline > now()
                 ORDER BY next_placement_at
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED
             )
             RETURNING ",
        task_columns!(),
        "
         )
         SELECT c.*, tn.name AS tenant_name, tn.created_at AS tenant_created_at
         FROM claimed c JOIN tenants tn ON tn.id = c.tenant_id
         ORDER BY c.created_at, c.id"
    ))
    .bind(limit.clamp(0, MAX_SWEEP))
    .bind(micros(lease))
    .fetch_all(store.pool())
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// [`crate::TaskRepo::expire_unplaced`]. One statement fails the tasks and appends
/// their events. `queued → failed` is a transition the lifecycle allows (a unit test
/// holds it to that).
pub(crate) async fn expire_unplaced(
    store: &PgStore,
    limit: i64,
) -> Result<Vec<(Tenant, TaskRecord)>, StoreError> {
    let rows: Vec<TaskWithTenantRow> = sqlx::query_as(concat!(
        "WITH expired AS (
             UPDATE tasks SET state = $2, reason = $3, updated_at = now()
             WHERE id IN (
                 SELECT id FROM tasks
                 WHERE state IN ('queued', 'retrying') AND queue_deadline <= now()
                 ORDER BY queue_deadline
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED
             )
             RETURNING ",
        task_columns!(),
        "
         ), e AS (
             INSERT INTO task_events (tenant_id, task_id, state, attempt, agent_id, reason)
             SELECT tenant_id, id, state, attempts, agent_id, reason FROM expired
         )
         SELECT x.*, tn.name AS tenant_name, tn.created_at AS tenant_created_at
         FROM expired x JOIN tenants tn ON tn.id = x.tenant_id
         ORDER BY x.created_at, x.id"
    ))
    .bind(limit.clamp(0, MAX_SWEEP))
    .bind(TaskState::Failed.as_str())
    .bind(NO_AGENT)
    .fetch_all(store.pool())
    .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_a_lifecycle_transition() {
        assert_eq!(
            TaskState::Queued.transition(TaskState::Failed),
            Ok(TaskState::Failed)
        );
    }
}
