//! Recovery: retries with backoff, agent loss, and assignments that never started.
//!
//! A retry is a state, not a sleeping process: the task waits in `retrying` with
//! `next_placement_at` set to its next attempt time, and the dispatchers' placement sweep
//! picks it up then, so a retry survives any dispatcher restart. Agent liveness as the
//! reaper last saw it is the `online` flag on `agents`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::messages::Finished;
use ris_schemas::task::{RetryPolicy, TaskResult, TaskState};
use serde_json::json;
use sqlx::types::Json;

use crate::agents::AgentWithTenantRow;
use crate::pg::micros;
use crate::task_results::{self, RetryDecision};
use crate::tasks::{task_columns, TaskRow, TaskWithTenantRow};
use crate::tenants::joined;
use crate::transitions::{apply, check, lock_task, Change};
use crate::{
    AgentRecord, PgStore, ResultOutcome, StoreError, TaskRecord, Tenant, TenantCtx,
    TransitionOutcome,
};

/// Sweeps handle at most this many rows per call.
const MAX_SWEEP: i64 = 1000;

/// The result of one attempt, as the agent reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub attempt: u32,
    pub agent_id: AgentId,
    pub result: TaskResult,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

#[async_trait]
pub trait RecoveryRepo: Send + Sync {
    /// [`crate::TaskRepo::record_result`], except that when `retry` returns a delay for
    /// the locked task and its result, the task goes to `retrying` (result kept, next
    /// attempt after the delay) instead of the outcome's state.
    async fn record_result_or_retry(
        &self,
        tenant: &TenantCtx,
        finished: &Finished,
        retry: RetryDecision<'_>,
    ) -> Result<ResultOutcome, StoreError>;
    /// Applies agents' reports — state changes such as `executing`, and results — in
    /// one transaction, each as [`crate::TaskRepo::transition_task`] or
    /// [`RecoveryRepo::record_result_or_retry`] would alone (see [`crate::reports`]).
    /// Outcomes are in the reports' order. All or nothing: after an error, nothing of
    /// the batch is kept.
    async fn apply_reports(
        &self,
        tenant: &TenantCtx,
        reports: &[crate::Report],
        retry: RetryDecision<'_>,
    ) -> Result<Vec<crate::ReportOutcome>, StoreError>;
    /// The attempt `attempt` is over without a result (its agent was lost): to
    /// `retrying` (next attempt after `delay`) when `delay` is `Some`, else `failed`;
    /// `reason` either way. Fenced by attempt.
    async fn end_attempt(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        attempt: u32,
        reason: &str,
        delay: Option<Duration>,
    ) -> Result<TransitionOutcome, StoreError>;
    /// Sets the agent's online flag; `true` when it changed (an online/offline edge).
    async fn set_agent_online(
        &self,
        tenant: &TenantCtx,
        id: AgentId,
        online: bool,
    ) -> Result<bool, StoreError>;
    /// Cross-tenant: agents whose flag says online.
    async fn online_agents(&self) -> Result<Vec<(Tenant, AgentRecord)>, StoreError>;
    /// The agent's tasks in `routing` or `executing`.
    async fn active_tasks_of(
        &self,
        tenant: &TenantCtx,
        agent: AgentId,
    ) -> Result<Vec<TaskRecord>, StoreError>;
    /// Cross-tenant: tasks in `routing` since before `older_than` ago, oldest first.
    async fn stale_routing(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<(Tenant, TaskRecord)>, StoreError>;
    /// Every attempt's result, by attempt (stale ones included).
    async fn attempt_results(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
    ) -> Result<Vec<AttemptResult>, StoreError>;
    async fn tenant_default_retry(
        &self,
        tenant: &TenantCtx,
    ) -> Result<Option<RetryPolicy>, StoreError>;
    async fn set_tenant_default_retry(
        &self,
        tenant: &TenantCtx,
        policy: Option<&RetryPolicy>,
    ) -> Result<(), StoreError>;
}

#[async_trait]
impl RecoveryRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %finished.task_id))]
    async fn record_result_or_retry(
        &self,
        tenant: &TenantCtx,
        finished: &Finished,
        retry: RetryDecision<'_>,
    ) -> Result<ResultOutcome, StoreError> {
        task_results::record_result(self, tenant, finished, retry).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, reports = reports.len()))]
    async fn apply_reports(
        &self,
        tenant: &TenantCtx,
        reports: &[crate::Report],
        retry: RetryDecision<'_>,
    ) -> Result<Vec<crate::ReportOutcome>, StoreError> {
        crate::reports::apply_reports(self, tenant, reports, retry).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %id))]
    async fn end_attempt(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
        attempt: u32,
        reason: &str,
        delay: Option<Duration>,
    ) -> Result<TransitionOutcome, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let Some(current) = lock_task(&mut tx, tenant, id).await? else {
            return Ok(TransitionOutcome::NotFound);
        };
        let to = if delay.is_some() {
            TaskState::Retrying
        } else {
            TaskState::Failed
        };
        if let Err(refusal) = check(&current, Some(attempt), to) {
            return Ok(refusal.into());
        }
        let change = Change {
            reason: Some(reason.to_owned()),
            detail: json!({ "retry_in_ms": delay.map(|d| d.as_millis() as u64) }),
            ..Change::new(&current, to, delay.unwrap_or(Duration::ZERO))
        };
        let record = apply(&mut tx, &current, change).await?;
        tx.commit().await?;
        Ok(TransitionOutcome::Applied(record))
    }

    async fn set_agent_online(
        &self,
        tenant: &TenantCtx,
        id: AgentId,
        online: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let changed = sqlx::query(
            "UPDATE agents SET online = $3, status_changed_at = now()
             WHERE tenant_id = $1 AND id = $2 AND online <> $3",
        )
        .bind(tenant.id)
        .bind(id.0)
        .bind(online)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(changed > 0)
    }

    async fn online_agents(&self) -> Result<Vec<(Tenant, AgentRecord)>, StoreError> {
        let rows: Vec<AgentWithTenantRow> = sqlx::query_as(
            "SELECT a.*, t.name AS tenant_name, t.created_at AS tenant_created_at
             FROM agents a JOIN tenants t ON t.id = a.tenant_id
             WHERE a.online",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|row| {
                let tenant = joined(row.agent.tenant_id, row.tenant_name, row.tenant_created_at)?;
                Ok((tenant, row.agent.try_into()?))
            })
            .collect()
    }

    async fn active_tasks_of(
        &self,
        tenant: &TenantCtx,
        agent: AgentId,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows: Vec<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE tenant_id = $1 AND agent_id = $2 AND state IN ('routing', 'executing')
              ORDER BY created_at"
        ))
        .bind(tenant.id)
        .bind(agent.0)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(TaskRecord::try_from).collect()
    }

    async fn stale_routing(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<(Tenant, TaskRecord)>, StoreError> {
        let rows: Vec<TaskWithTenantRow> = sqlx::query_as(concat!(
            "WITH s AS (SELECT ",
            task_columns!(),
            " FROM tasks
                 WHERE state = 'routing' AND updated_at < now() - $1 * interval '1 microsecond'
                 ORDER BY updated_at LIMIT $2)
             SELECT s.*, tn.name AS tenant_name, tn.created_at AS tenant_created_at
             FROM s JOIN tenants tn ON tn.id = s.tenant_id
             ORDER BY s.updated_at"
        ))
        .bind(micros(older_than))
        .bind(limit.clamp(0, MAX_SWEEP))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn attempt_results(
        &self,
        tenant: &TenantCtx,
        id: TaskId,
    ) -> Result<Vec<AttemptResult>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        type Row = (
            i32,
            uuid::Uuid,
            Json<TaskResult>,
            DateTime<Utc>,
            DateTime<Utc>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT attempt, agent_id, result, started_at, finished_at FROM task_results
             WHERE tenant_id = $1 AND task_id = $2 ORDER BY attempt",
        )
        .bind(tenant.id)
        .bind(id.0)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|(attempt, agent, Json(result), started_at, finished_at)| {
                Ok(AttemptResult {
                    attempt: crate::pg::to_u32("attempt", attempt)?,
                    agent_id: AgentId(agent),
                    result,
                    started_at,
                    finished_at,
                })
            })
            .collect()
    }

    async fn tenant_default_retry(
        &self,
        tenant: &TenantCtx,
    ) -> Result<Option<RetryPolicy>, StoreError> {
        let row: Option<(Option<Json<RetryPolicy>>,)> =
            sqlx::query_as("SELECT default_retry FROM tenants WHERE id = $1")
                .bind(tenant.id)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.and_then(|(policy,)| policy.map(|Json(p)| p)))
    }

    async fn set_tenant_default_retry(
        &self,
        tenant: &TenantCtx,
        policy: Option<&RetryPolicy>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE tenants SET default_retry = $2 WHERE id = $1")
            .bind(tenant.id)
            .bind(policy.map(Json))
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
