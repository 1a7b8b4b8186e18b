//! Tasks: records, submission, reads and listing. State changes live in
//! [`crate::transitions`], placement in [`crate::placement`], results in
//! [`crate::task_results`]; this file's [`TaskRepo`] impl routes to them.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::job::JobId;
use ris_schemas::messages::Finished;
use ris_schemas::task::{TaskRequest, TaskResult, TaskState};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::pg::to_u32;
use crate::tenants::joined;
use crate::{
    cancel, placement, task_events, task_results, transitions, CancelOutcome, Cursor, PgStore,
    Placement, ResultOutcome, StoreError, TaskEventRecord, TaskRepo, Tenant, TenantCtx, Transition,
    TransitionOutcome,
};

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub id: TaskId,
    pub tenant_id: Uuid,
    pub state: TaskState,
    pub request: TaskRequest,
    /// Attempts begun so far; the current attempt's number (0 until first placed).
    pub attempts: u32,
    /// Agent of the latest attempt.
    pub agent_id: Option<AgentId>,
    /// Reason given with the latest state change (`no_agent`, `exit_status`, ...).
    pub reason: Option<String>,
    /// Result of the latest finished attempt.
    pub result: Option<TaskResult>,
    pub idempotency_key: Option<String>,
    /// A task still queued at this time fails with `no_agent`.
    pub queue_deadline: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When a cancel was first requested through the API (see [`crate::cancel`]).
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// While `queued` or `retrying`: when the task may next be placed (for `retrying`,
    /// its next attempt time).
    pub next_placement_at: DateTime<Utc>,
    /// The fleet job this task is a child of.
    pub job_id: Option<JobId>,
    /// An integration asked for the outcome on its reply queue
    /// ([`crate::IntegrationRepo::reply_target`] says where).
    pub awaits_reply: bool,
}

/// What [`TaskRepo::insert_task`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    New(TaskRecord),
    /// The same id was already stored, or the same idempotency key in this tenant.
    Existing(TaskRecord),
}

impl Inserted {
    pub fn record(&self) -> &TaskRecord {
        match self {
            Inserted::New(t) | Inserted::Existing(t) => t,
        }
    }

    pub fn into_record(self) -> TaskRecord {
        match self {
            Inserted::New(t) | Inserted::Existing(t) => t,
        }
    }
}

/// Restricts [`TaskRepo::list_tasks`]; `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub agent_id: Option<AgentId>,
}

/// The columns of [`TaskRow`], for `SELECT` and `RETURNING`.
macro_rules! task_columns {
    () => {
        "id, tenant_id, state, request, attempts, agent_id, reason, result, idempotency_key, \
         queue_deadline, created_at, updated_at, cancel_requested_at, next_placement_at, job_id, \
         reply_to IS NOT NULL AS awaits_reply"
    };
}
pub(crate) use task_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct TaskRow {
    pub(crate) id: Uuid,
    pub(crate) tenant_id: Uuid,
    state: String,
    request: serde_json::Value,
    attempts: i32,
    agent_id: Option<Uuid>,
    reason: Option<String>,
    result: Option<serde_json::Value>,
    idempotency_key: Option<String>,
    queue_deadline: DateTime<Utc>,
    pub(crate) created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    cancel_requested_at: Option<DateTime<Utc>>,
    next_placement_at: DateTime<Utc>,
    job_id: Option<Uuid>,
    awaits_reply: bool,
}

pub(crate) fn parse_state(s: &str) -> Result<TaskState, StoreError> {
    TaskState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("unknown task state `{s}`")))
}

impl TryFrom<TaskRow> for TaskRecord {
    type Error = StoreError;
    fn try_from(r: TaskRow) -> Result<Self, Self::Error> {
        Ok(TaskRecord {
            id: TaskId(r.id),
            tenant_id: r.tenant_id,
            state: parse_state(&r.state)?,
            request: serde_json::from_value(r.request)
                .map_err(|e| StoreError::corrupt("task request", e))?,
            attempts: to_u32("task attempts", r.attempts)?,
            agent_id: r.agent_id.map(AgentId),
            reason: r.reason,
            result: r
                .result
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| StoreError::corrupt("task result", e))?,
            idempotency_key: r.idempotency_key,
            queue_deadline: r.queue_deadline,
            created_at: r.created_at,
            updated_at: r.updated_at,
            cancel_requested_at: r.cancel_requested_at,
            next_placement_at: r.next_placement_at,
            job_id: r.job_id.map(JobId),
            awaits_reply: r.awaits_reply,
        })
    }
}

impl TaskRecord {
    /// The task's current state as the data of a `task.<state>` event.
    pub fn event_data(&self) -> ris_schemas::event::TaskEventData {
        ris_schemas::event::TaskEventData {
            task_id: self.id,
            state: self.state,
            attempt: self.attempts,
            agent_id: self.agent_id,
            reason: self.reason.clone(),
            job_id: self.job_id,
        }
    }
}

/// A task row joined with its tenant, for cross-tenant sweeps.
#[derive(sqlx::FromRow)]
pub(crate) struct TaskWithTenantRow {
    #[sqlx(flatten)]
    task: TaskRow,
    tenant_name: String,
    tenant_created_at: DateTime<Utc>,
}

impl TryFrom<TaskWithTenantRow> for (Tenant, TaskRecord) {
    type Error = StoreError;
    fn try_from(r: TaskWithTenantRow) -> Result<Self, Self::Error> {
        let tenant = joined(r.task.tenant_id, r.tenant_name, r.tenant_created_at)?;
        Ok((tenant, r.task.try_into()?))
    }
}

/// Lists return at most this many rows.
const MAX_PAGE: i64 = 500;

/// How long the placement sweep leaves a new task to its submission message. A
/// dispatcher consuming `ris.submit` places it; racing that from the sweep only doubles
/// the work, and under a burst (a backlog in `ris.submit`) had every placement done
/// twice. When no message will place the task, whoever knows makes it due at once
/// ([`crate::TaskRepo::task_due_now`]): the API when its publish failed, the dispatcher
/// when no agent could take it. What is left for the grace is a submission lost inside
/// the broker.
pub const SUBMISSION_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

#[async_trait]
impl TaskRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %id))]
    async fn insert_task(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        request: &TaskRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Inserted, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        // One statement inserts the task and its first event, or nothing at all when
        // the id or the idempotency key is already taken. The placement sweep leaves a
        // new task to its submission message for `SUBMISSION_GRACE`
        // (`next_placement_at`); see there.
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "WITH t AS (
                 INSERT INTO tasks (id, tenant_id, state, kind, request, idempotency_key,
                                    queue_deadline, next_placement_at, metadata)
                 VALUES ($1, $2, $3, $4, $5, $6, now() + $7 * interval '1 second',
                         now() + $9 * interval '1 microsecond', $8)
                 ON CONFLICT DO NOTHING
                 RETURNING ",
            task_columns!(),
            "
             ), e AS (
                 INSERT INTO task_events (tenant_id, task_id, state, attempt)
                 SELECT tenant_id, id, state, attempts FROM t
             )
             SELECT * FROM t"
        ))
        .bind(id.0)
        .bind(tenant.id)
        .bind(TaskState::Queued.as_str())
        .bind(request.task.kind())
        .bind(Json(request))
        .bind(idempotency_key)
        .bind(i64::from(request.queue_timeout_secs.secs()))
        .bind(Json(&request.metadata))
        .bind(crate::pg::micros(SUBMISSION_GRACE))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            tx.commit().await?;
            return Ok(Inserted::New(row.try_into()?));
        }
        // A conflict: the row that won is committed by now (ON CONFLICT waits for it).
        // Two index lookups, not one `id = $2 OR idempotency_key = $3` (which the
        // planner answers by scanning the tenant's tasks).
        let existing: Option<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE tenant_id = $1 AND id = $2
              UNION ALL
              SELECT ",
            task_columns!(),
            " FROM tasks WHERE tenant_id = $1 AND idempotency_key = $3
              LIMIT 1"
        ))
        .bind(tenant.id)
        .bind(id.0)
        .bind(idempotency_key)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        match existing {
            Some(row) => Ok(Inserted::Existing(row.try_into()?)),
            None => Err(StoreError::TaskIdTaken(id)),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %id))]
    async fn get_task(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.id)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(TaskRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, tasks = ids.len()))]
    async fn get_tasks(
        &self,
        tenant: &TenantCtx,
        ids: &[TaskId],
    ) -> Result<Vec<Option<TaskRecord>>, StoreError> {
        placement::get_tasks(self, tenant, ids).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn list_tasks(
        &self,
        tenant: &TenantCtx,
        filter: &TaskFilter,
        limit: i64,
        after: Option<&Cursor>,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        // Only the conditions in use are written out, so each combination gets a plan
        // that walks `tasks_tenant_created` from the cursor on.
        let mut query = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE tenant_id = "
        ));
        query.push_bind(tenant.id);
        if let Some(state) = filter.state {
            query.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(agent) = filter.agent_id {
            query.push(" AND agent_id = ").push_bind(agent.0);
        }
        if let Some(cursor) = after {
            query
                .push(" AND (created_at, id) < (")
                .push_bind(cursor.created_at)
                .push(", ")
                .push_bind(cursor.id.0)
                .push(")");
        }
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(limit.clamp(1, MAX_PAGE));
        let rows: Vec<TaskRow> = query.build_query_as().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.into_iter().map(TaskRecord::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %id))]
    async fn task_events(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
    ) -> Result<Vec<TaskEventRecord>, StoreError> {
        task_events::task_events(self, tenant, id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %id, to = %t.to))]
    async fn transition_task(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        t: Transition,
    ) -> Result<TransitionOutcome, StoreError> {
        transitions::transition_task(self, tenant, id, t).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %id))]
    async fn cancel_task(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        detail: serde_json::Value,
    ) -> Result<CancelOutcome, StoreError> {
        cancel::cancel_task(self, tenant, id, detail).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %id, agent_id = %agent))]
    async fn begin_attempt(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        agent: AgentId,
    ) -> Result<TransitionOutcome, StoreError> {
        placement::begin_attempts(self, tenant, &[Placement::new(id, agent)])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("no outcome for a placement".into()))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, placements = placements.len()))]
    async fn begin_attempts(
        &self,
        tenant: &TenantCtx,
        placements: &[Placement],
    ) -> Result<Vec<TransitionOutcome>, StoreError> {
        placement::begin_attempts(self, tenant, placements).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %id))]
    async fn requeue_task(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        reason: &str,
        retry_in: Duration,
    ) -> Result<TransitionOutcome, StoreError> {
        placement::requeue_task(self, tenant, id, reason, retry_in).await
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(tenant = %tenant.name, task_id = %finished.task_id, attempt = finished.attempt)
    )]
    async fn record_result(
        &self,
        tenant: &TenantCtx,
        finished: &Finished,
    ) -> Result<ResultOutcome, StoreError> {
        task_results::record_result(self, tenant, finished, &|_, _| None).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn claim_unplaced(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<(Tenant, TaskRecord)>, StoreError> {
        placement::claim_unplaced(self, limit, lease).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn expire_unplaced(&self, limit: i64) -> Result<Vec<(Tenant, TaskRecord)>, StoreError> {
        placement::expire_unplaced(self, limit).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %id))]
    async fn task_due_now(&self, tenant: &TenantCtx, id: TaskId) -> Result<(), StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        sqlx::query(
            "UPDATE tasks SET next_placement_at = now()
             WHERE tenant_id = $1 AND id = $2 AND state = 'queued'",
        )
        .bind(tenant.id)
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn count_queued(&self, tenant: &TenantCtx) -> Result<i64, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM tasks WHERE tenant_id = $1 AND state = 'queued'")
                .bind(tenant.id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(n)
    }
}
