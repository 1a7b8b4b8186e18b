//! [`JobRepo`]: what the API does with jobs — resolve a target, create a job with its
//! targets, read, list and page targets, cancel.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::job::{JobId, JobState, JobTarget};
use ris_schemas::labels::Requirement;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::*;
use crate::pg::{to_i32, to_u32};
use crate::{PgStore, StoreError, TenantCtx};

#[async_trait]
pub trait JobRepo: Send + Sync {
    /// The agents a job target names, as `(id, name)`, with one query: for a selector,
    /// every matching agent by name (the selector is evaluated by PostgreSQL on the
    /// labels); for a list, those that exist, in no particular order.
    async fn resolve_targets(
        &self,
        tenant: &TenantCtx,
        target: &JobTarget,
    ) -> Result<Vec<(AgentId, String)>, StoreError>;
    /// Inserts the job and its targets (one statement for all targets) in one
    /// transaction. Online targets are `pending`; offline ones `waiting` when the request
    /// waits for them, else `skipped_offline`. A job with no target to run ends at once
    /// (`completed`).
    async fn create_job(&self, tenant: &TenantCtx, job: NewJob) -> Result<JobRecord, StoreError>;
    async fn get_job(&self, tenant: &TenantCtx, id: JobId)
        -> Result<Option<JobRecord>, StoreError>;
    /// Newest first; rows strictly after the cursor.
    async fn list_jobs(
        &self,
        tenant: &TenantCtx,
        limit: i64,
        after: Option<&JobCursor>,
    ) -> Result<Vec<JobRecord>, StoreError>;
    /// Targets in order, optionally only those in `state`, after target `after_seq`.
    async fn job_targets(
        &self,
        tenant: &TenantCtx,
        id: JobId,
        state: Option<&str>,
        after_seq: Option<u32>,
        limit: i64,
    ) -> Result<Vec<JobTargetRecord>, StoreError>;
    /// Cancels the job: targets not dispatched are `skipped_cancelled` at once; the
    /// caller then stops the children ([`JobRepo::children_to_stop`]).
    async fn cancel_job(&self, tenant: &TenantCtx, id: JobId) -> Result<JobCancel, StoreError>;
}

#[async_trait]
impl JobRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn resolve_targets(
        &self,
        tenant: &TenantCtx,
        target: &JobTarget,
    ) -> Result<Vec<(AgentId, String)>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let mut query =
            QueryBuilder::<Postgres>::new("SELECT id, name FROM agents WHERE tenant_id = ");
        query.push_bind(tenant.id);
        match target {
            JobTarget::Selector(selector) => {
                for requirement in selector.requirements() {
                    match requirement {
                        Requirement::Equals(k, v) => query
                            .push(" AND labels->>")
                            .push_bind(k.clone())
                            .push(" = ")
                            .push_bind(v.clone()),
                        Requirement::NotEquals(k, v) => query
                            .push(" AND (labels->>")
                            .push_bind(k.clone())
                            .push(") IS DISTINCT FROM ")
                            .push_bind(v.clone()),
                    };
                }
                query.push(" ORDER BY name");
            }
            JobTarget::Agents(ids) => {
                let ids: Vec<Uuid> = ids.iter().map(|a| a.0).collect();
                query.push(" AND id = ANY(").push_bind(ids).push(")");
            }
        }
        let rows: Vec<(Uuid, String)> = query.build_query_as().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|(id, name)| (AgentId(id), name))
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, job_id = %job.id, targets = job.targets.len()))]
    async fn create_job(&self, tenant: &TenantCtx, job: NewJob) -> Result<JobRecord, StoreError> {
        let n = job.targets.len();
        let targets = u32::try_from(n).unwrap_or(u32::MAX);
        let wait = job.request.wait_offline_secs.map(|w| w.secs());
        let offline_state = if wait.is_some() {
            "waiting"
        } else {
            "skipped_offline"
        };
        let mut seqs = Vec::with_capacity(n);
        let mut agents = Vec::with_capacity(n);
        let mut names = Vec::with_capacity(n);
        let mut states = Vec::with_capacity(n);
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for (i, t) in job.targets.iter().enumerate() {
            let state = if t.online { "pending" } else { offline_state };
            *counts.entry(state.to_owned()).or_default() += 1;
            seqs.push(i32::try_from(i).unwrap_or(i32::MAX));
            agents.push(t.agent_id.0);
            names.push(t.name.clone());
            states.push(state);
        }
        let mut tx = self.tenant_tx(tenant).await?;
        sqlx::query(
            "INSERT INTO jobs (id, tenant_id, state, request, max_concurrency, max_errors,
                               cancel_running_on_halt, target_count, counts, reason, wait_until)
             VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, $8, $9,
                     now() + $10 * interval '1 second')",
        )
        .bind(job.id.0)
        .bind(tenant.id)
        .bind(Json(&job.request))
        .bind(to_i32(job.request.max_concurrency.concurrency(targets)))
        .bind(to_i32(job.request.max_errors.errors(targets)))
        .bind(job.request.cancel_running_on_halt)
        .bind(to_i32(targets))
        .bind(Json(&counts))
        .bind(job.reason.as_deref())
        .bind(wait.map(i64::from))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO job_targets (tenant_id, job_id, seq, agent_id, agent_name, state)
             SELECT $1, $2, t.seq, t.agent_id, t.agent_name, t.state
             FROM UNNEST($3::integer[], $4::uuid[], $5::text[], $6::text[])
                  AS t(seq, agent_id, agent_name, state)",
        )
        .bind(tenant.id)
        .bind(job.id.0)
        .bind(&seqs)
        .bind(&agents)
        .bind(&names)
        .bind(&states)
        .execute(&mut *tx)
        .await?;
        settle(&mut tx, job.id).await?;
        let record = fetch_job(&mut tx, tenant, job.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("job {} vanished", job.id)))?;
        tx.commit().await?;
        Ok(record)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, job_id = %id))]
    async fn get_job(
        &self,
        tenant: &TenantCtx,
        id: JobId,
    ) -> Result<Option<JobRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let job = fetch_job(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(job)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn list_jobs(
        &self,
        tenant: &TenantCtx,
        limit: i64,
        after: Option<&JobCursor>,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let mut query = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE tenant_id = "
        ));
        query.push_bind(tenant.id);
        if let Some(c) = after {
            query
                .push(" AND (created_at, id) < (")
                .push_bind(c.created_at)
                .push(", ")
                .push_bind(c.id.0)
                .push(")");
        }
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(limit.clamp(1, MAX_PAGE));
        let rows: Vec<JobRow> = query.build_query_as().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, job_id = %id))]
    async fn job_targets(
        &self,
        tenant: &TenantCtx,
        id: JobId,
        state: Option<&str>,
        after_seq: Option<u32>,
        limit: i64,
    ) -> Result<Vec<JobTargetRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        // One query for the page, children joined in: no query per row.
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT t.seq, t.agent_id, t.agent_name, t.state, t.task_id, t.updated_at,
                    k.attempts, k.reason, k.result->>'error' AS error
             FROM job_targets t
             LEFT JOIN tasks k ON k.tenant_id = t.tenant_id AND k.id = t.task_id
             WHERE t.tenant_id = ",
        );
        query
            .push_bind(tenant.id)
            .push(" AND t.job_id = ")
            .push_bind(id.0);
        if let Some(state) = state {
            query.push(" AND t.state = ").push_bind(state);
        }
        if let Some(seq) = after_seq {
            query.push(" AND t.seq > ").push_bind(to_i32(seq));
        }
        query
            .push(" ORDER BY t.seq LIMIT ")
            .push_bind(limit.clamp(1, MAX_PAGE));
        type Row = (
            i32,
            Uuid,
            String,
            String,
            Option<Uuid>,
            DateTime<Utc>,
            Option<i32>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = query.build_query_as().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        rows.into_iter()
            .map(
                |(seq, agent, name, state, task, updated_at, attempts, reason, error)| {
                    Ok(JobTargetRecord {
                        seq: to_u32("seq", seq)?,
                        agent_id: AgentId(agent),
                        agent_name: name,
                        state,
                        task_id: task.map(TaskId),
                        attempts: attempts.map(|a| to_u32("attempts", a)).transpose()?,
                        reason,
                        error,
                        updated_at,
                    })
                },
            )
            .collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, job_id = %id))]
    async fn cancel_job(&self, tenant: &TenantCtx, id: JobId) -> Result<JobCancel, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let Some(row) = lock_job(&mut tx, tenant, id).await? else {
            return Ok(JobCancel::NotFound);
        };
        let job = JobRecord::try_from(row)?;
        if job.ended_at.is_some() {
            return Ok(JobCancel::Ended(job));
        }
        if job.state != JobState::Cancelled {
            sqlx::query(
                "UPDATE jobs SET state = 'cancelled', cancelled_at = clock_timestamp(),
                                 reason = COALESCE(reason, 'cancelled'), updated_at = now(),
                                 next_sweep_at = now()
                 WHERE id = $1",
            )
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
            move_targets(&mut tx, id, "pending", "skipped_cancelled").await?;
            move_targets(&mut tx, id, "waiting", "skipped_cancelled").await?;
            settle(&mut tx, id).await?;
        }
        let job = fetch_job(&mut tx, tenant, id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished")))?;
        tx.commit().await?;
        Ok(JobCancel::Cancelled(job))
    }
}
