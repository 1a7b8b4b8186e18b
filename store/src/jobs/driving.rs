//! [`JobDriving`]: what the dispatchers do with jobs — dispatch children under the job
//! row lock, stop them, release waiting targets, announce state changes once, and claim
//! jobs for the sweep.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::job::{JobId, JobState};
use sqlx::types::Json;
use uuid::Uuid;

use super::*;
use crate::pg::micros;
use crate::tasks::{task_columns, TaskRow};
use crate::tenants::joined;
use crate::{PgStore, StoreError, TaskRecord, Tenant, TenantCtx};

#[async_trait]
pub trait JobDriving: Send + Sync {
    /// Under the job row lock: while the job is `running`, creates the child tasks
    /// (`queued`) of the next pending targets, as many as `max_concurrency` leaves room
    /// for. Returns them, for placement.
    async fn dispatch_children(
        &self,
        tenant: &TenantCtx,
        id: JobId,
    ) -> Result<Vec<TaskRecord>, StoreError>;
    /// Children of a stopping job that are not finished and not yet asked to stop.
    async fn children_to_stop(
        &self,
        tenant: &TenantCtx,
        id: JobId,
    ) -> Result<Vec<TaskRecord>, StoreError>;
    /// Records a cancel request on a `routing` or `executing` task without changing its
    /// state (its agent reports how it ended). `None` when the task is in another state
    /// or a request was already recorded.
    async fn request_cancel(
        &self,
        tenant: &TenantCtx,
        task: TaskId,
    ) -> Result<Option<TaskRecord>, StoreError>;
    /// Agents of the targets still waiting to come online.
    async fn waiting_targets(
        &self,
        tenant: &TenantCtx,
        id: JobId,
    ) -> Result<Vec<AgentId>, StoreError>;
    /// Waiting targets of these agents become `pending`; when `expire`, the other waiting
    /// targets become `skipped_offline`.
    async fn release_waiting(
        &self,
        tenant: &TenantCtx,
        id: JobId,
        online: &[AgentId],
        expire: bool,
    ) -> Result<(), StoreError>;
    /// The job's state changes not yet announced on `ris.events`, in order (each state,
    /// then `ended`); marks them announced, so each is announced once.
    async fn announce_job(
        &self,
        tenant: &TenantCtx,
        id: JobId,
    ) -> Result<Option<(JobRecord, Vec<String>)>, StoreError>;
    /// Cross-tenant: jobs that are not ended (or not announced ended), each leased so
    /// concurrent dispatchers do not sweep the same job at once.
    async fn claim_jobs(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<(Tenant, JobRecord)>, StoreError>;
}

#[async_trait]
impl JobDriving for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, job_id = %id))]
    async fn dispatch_children(
        &self,
        tenant: &TenantCtx,
        id: JobId,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let Some(row) = lock_job(&mut tx, tenant, id).await? else {
            return Ok(Vec::new());
        };
        let job = JobRecord::try_from(row)?;
        if !job.wants_children() {
            return Ok(Vec::new());
        }
        let room = job.max_concurrency - job.active();
        let seqs: Vec<(i32, Uuid)> = sqlx::query_as(
            "SELECT seq, agent_id FROM job_targets
             WHERE job_id = $1 AND state = 'pending' ORDER BY seq LIMIT $2",
        )
        .bind(id.0)
        .bind(i64::from(room))
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<Uuid> = seqs.iter().map(|_| TaskId::new().0).collect();
        let requests = seqs
            .iter()
            .map(|(_, agent)| serde_json::to_value(job.request.child(AgentId(*agent))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::corrupt("child request", e))?;
        let seq_numbers: Vec<i32> = seqs.iter().map(|(s, _)| *s).collect();
        // The targets name their task first: the trigger finds a child's target by it.
        sqlx::query(
            "UPDATE job_targets SET task_id = x.task_id
             FROM UNNEST($2::integer[], $3::uuid[]) AS x(seq, task_id)
             WHERE job_targets.job_id = $1 AND job_targets.seq = x.seq",
        )
        .bind(id.0)
        .bind(&seq_numbers)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET started_at = COALESCE(started_at, clock_timestamp()) WHERE id = $1",
        )
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
        let template = &job.request;
        let rows: Vec<TaskRow> = sqlx::query_as(concat!(
            "WITH t AS (
                 INSERT INTO tasks (id, tenant_id, state, kind, request, queue_deadline,
                                    next_placement_at, metadata, job_id)
                 SELECT x.id, $1, 'queued', $2, x.request, now() + $3 * interval '1 second',
                        now(), $4, $5
                 FROM UNNEST($6::uuid[], $7::jsonb[]) WITH ORDINALITY AS x(id, request, n)
                 ORDER BY x.n
                 RETURNING ",
            task_columns!(),
            "
             ), e AS (
                 INSERT INTO task_events (tenant_id, task_id, state, attempt, detail)
                 SELECT tenant_id, id, state, attempts, jsonb_build_object('job_id', job_id)
                 FROM t
             )
             SELECT * FROM t ORDER BY created_at, id"
        ))
        .bind(tenant.id)
        .bind(template.task.kind())
        .bind(i64::from(template.queue_timeout_secs.secs()))
        .bind(Json(&template.metadata))
        .bind(id.0)
        .bind(&ids)
        .bind(&requests)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(TaskRecord::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, job_id = %id))]
    async fn children_to_stop(
        &self,
        tenant: &TenantCtx,
        id: JobId,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows: Vec<TaskRow> = sqlx::query_as(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks
              WHERE job_id = $1 AND tenant_id = $2
                AND state IN ('queued', 'retrying', 'routing', 'executing')
                AND cancel_requested_at IS NULL
              ORDER BY created_at"
        ))
        .bind(id.0)
        .bind(tenant.id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(TaskRecord::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, task_id = %task))]
    async fn request_cancel(
        &self,
        tenant: &TenantCtx,
        task: TaskId,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<TaskRow> = sqlx::query_as(concat!(
            "UPDATE tasks SET cancel_requested_at = now()
             WHERE tenant_id = $1 AND id = $2 AND state IN ('routing', 'executing')
               AND cancel_requested_at IS NULL
             RETURNING ",
            task_columns!()
        ))
        .bind(tenant.id)
        .bind(task.0)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(TaskRecord::try_from).transpose()
    }

    async fn waiting_targets(
        &self,
        tenant: &TenantCtx,
        id: JobId,
    ) -> Result<Vec<AgentId>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT agent_id FROM job_targets
             WHERE tenant_id = $1 AND job_id = $2 AND state = 'waiting' ORDER BY seq",
        )
        .bind(tenant.id)
        .bind(id.0)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(|(a,)| AgentId(a)).collect())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, job_id = %id))]
    async fn release_waiting(
        &self,
        tenant: &TenantCtx,
        id: JobId,
        online: &[AgentId],
        expire: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let Some(row) = lock_job(&mut tx, tenant, id).await? else {
            return Ok(());
        };
        if row.state != JobState::Running.as_str() {
            return Ok(());
        }
        let agents: Vec<Uuid> = online.iter().map(|a| a.0).collect();
        sqlx::query(
            "WITH moved AS (
                 UPDATE job_targets SET state = 'pending', updated_at = now()
                 WHERE job_id = $1 AND state = 'waiting' AND agent_id = ANY($2)
                 RETURNING 1
             )
             UPDATE jobs SET counts = ris_job_move(counts, 'waiting', 'pending',
                                                   (SELECT count(*)::integer FROM moved)),
                             updated_at = now()
             WHERE id = $1",
        )
        .bind(id.0)
        .bind(&agents)
        .execute(&mut *tx)
        .await?;
        if expire {
            move_targets(&mut tx, id, "waiting", "skipped_offline").await?;
        }
        settle(&mut tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, job_id = %id))]
    async fn announce_job(
        &self,
        tenant: &TenantCtx,
        id: JobId,
    ) -> Result<Option<(JobRecord, Vec<String>)>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        // Most calls find everything announced: look before taking the row lock, which
        // every child's state change takes in turn. A change committed after this read
        // is announced by whoever made it (or by the job sweep).
        let Some(row) = job_row(&mut tx, tenant, id, false).await? else {
            return Ok(None);
        };
        let (job, previous, key) = announcement(row)?;
        if previous.as_deref() == Some(key.as_str()) {
            return Ok(Some((job, Vec::new())));
        }
        let Some(row) = lock_job(&mut tx, tenant, id).await? else {
            return Ok(None);
        };
        let (job, previous, key) = announcement(row)?;
        if previous.as_deref() == Some(key.as_str()) {
            return Ok(Some((job, Vec::new())));
        }
        sqlx::query("UPDATE jobs SET announced = $2 WHERE id = $1")
            .bind(id.0)
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let events = announcements(previous.as_deref(), job.state, job.ended_at.is_some());
        Ok(Some((job, events)))
    }

    async fn claim_jobs(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<(Tenant, JobRecord)>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Claimed {
            #[sqlx(flatten)]
            job: JobRow,
            tenant_name: String,
            tenant_created_at: DateTime<Utc>,
        }
        let rows: Vec<Claimed> = sqlx::query_as(concat!(
            "WITH c AS (
                 UPDATE jobs SET next_sweep_at = now() + $2 * interval '1 microsecond'
                 WHERE id IN (
                     SELECT id FROM jobs
                     WHERE (ended_at IS NULL OR announced IS DISTINCT FROM state || ':ended')
                       AND next_sweep_at <= now()
                     ORDER BY next_sweep_at
                     LIMIT $1
                     FOR UPDATE SKIP LOCKED
                 )
                 RETURNING ",
            job_columns!(),
            "
             )
             SELECT c.*, tn.name AS tenant_name, tn.created_at AS tenant_created_at
             FROM c JOIN tenants tn ON tn.id = c.tenant_id"
        ))
        .bind(limit.clamp(0, MAX_SWEEP))
        .bind(micros(lease))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                let tenant = joined(r.job.tenant_id, r.tenant_name, r.tenant_created_at)?;
                Ok((tenant, r.job.try_into()?))
            })
            .collect()
    }
}

/// The job, the announcement key recorded last, and the key it has now.
fn announcement(row: JobRow) -> Result<(JobRecord, Option<String>, String), StoreError> {
    let previous = row.announced.clone();
    let job = JobRecord::try_from(row)?;
    let key = announce_key(job.state, job.ended_at.is_some());
    Ok((job, previous, key))
}

/// The announcement key of a job: its state, `:ended` once ended.
fn announce_key(state: JobState, ended: bool) -> String {
    if ended {
        format!("{state}:ended")
    } else {
        state.to_string()
    }
}

/// What to announce going from `previous` (an announce key, `None` for nothing yet) to
/// `state`/`ended`: the states in between on the job's path, then `ended`.
fn announcements(previous: Option<&str>, state: JobState, ended: bool) -> Vec<String> {
    let (prev_state, prev_ended) = match previous {
        None => (None, false),
        Some(p) => match p.strip_suffix(":ended") {
            Some(s) => (JobState::parse(s), true),
            None => (JobState::parse(p), false),
        },
    };
    let mut out = Vec::new();
    if prev_state != Some(state) {
        let path: &[JobState] = match state {
            JobState::Halted => &[JobState::Running, JobState::Halting, JobState::Halted],
            JobState::Halting => &[JobState::Running, JobState::Halting],
            JobState::Running => &[JobState::Running],
            JobState::Cancelled => &[JobState::Running, JobState::Cancelled],
            JobState::Completed => &[JobState::Running, JobState::Completed],
        };
        // From the step after the previous state; from the start when nothing was
        // announced; only the state itself when the previous is off this path.
        let from = match prev_state {
            None => 0,
            Some(p) => path
                .iter()
                .position(|s| *s == p)
                .map_or(path.len() - 1, |i| i + 1),
        };
        out.extend(path[from.min(path.len())..].iter().map(|s| s.to_string()));
    }
    if ended && !prev_ended {
        out.push("ended".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_follow_the_path() {
        use JobState::*;
        assert_eq!(announcements(None, Running, false), ["running"]);
        assert_eq!(
            announcements(Some("running"), Running, false),
            Vec::<String>::new()
        );
        assert_eq!(
            announcements(Some("running"), Halted, false),
            ["halting", "halted"]
        );
        assert_eq!(
            announcements(Some("halting"), Halted, true),
            ["halted", "ended"]
        );
        assert_eq!(
            announcements(None, Completed, true),
            ["running", "completed", "ended"]
        );
        assert_eq!(announcements(Some("cancelled"), Cancelled, true), ["ended"]);
        assert_eq!(
            announcements(Some("halting"), Cancelled, false),
            ["cancelled"]
        );
    }

    #[test]
    fn job_cursor_round_trip() {
        let c = JobCursor {
            created_at: DateTime::<Utc>::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: JobId::new(),
        };
        assert_eq!(JobCursor::decode(&c.encode()), Some(c));
        assert_eq!(JobCursor::decode("x"), None);
    }
}
