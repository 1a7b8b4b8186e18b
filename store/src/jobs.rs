//! Fleet jobs: creation (targets inserted in bulk), status, dispatching children,
//! cancelling, and the dispatchers' job sweep.
//!
//! Counts, halting and ending are kept by the database trigger of the jobs migration, in
//! the transaction of every child's state change; see its header. The rule that makes
//! the halt hold across dispatchers: every decision to dispatch a child locks the job
//! row (`FOR UPDATE`), and so does every child change (the trigger), so a dispatch either
//! commits before the change that halts the job, or sees the job halting and dispatches
//! nothing. Placing a child on an agent re-checks the job under a share lock
//! ([`crate::placement`]).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::job::{JobId, JobRequest, JobState, JobTarget};
use ris_schemas::labels::Requirement;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::pg::{micros, to_i32, to_u32};
use crate::tasks::{task_columns, TaskRow};
use crate::tenants::joined;
use crate::{PgStore, StoreError, TaskRecord, Tenant, TenantCtx};

/// Lists return at most this many rows.
const MAX_PAGE: i64 = 500;
/// Sweeps handle at most this many jobs per call.
const MAX_SWEEP: i64 = 200;

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub tenant_id: Uuid,
    pub state: JobState,
    pub request: JobRequest,
    pub max_concurrency: u32,
    pub max_errors: u32,
    pub cancel_running_on_halt: bool,
    pub target_count: u32,
    /// Targets by state (`ris_schemas::job::TARGET_STATES`); zeros left out.
    pub counts: BTreeMap<String, u32>,
    pub errors: u32,
    /// Children not yet started when the job began halting, and not yet ended.
    pub unsettled: u32,
    pub reason: Option<String>,
    pub halting_at: Option<DateTime<Utc>>,
    pub halted_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    /// When the first child was dispatched.
    pub started_at: Option<DateTime<Utc>>,
    pub wait_until: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl JobRecord {
    pub fn count(&self, state: &str) -> u32 {
        self.counts.get(state).copied().unwrap_or(0)
    }

    /// Children dispatched and not ended: what `max_concurrency` bounds.
    pub fn active(&self) -> u32 {
        ["queued", "routing", "executing", "retrying"]
            .iter()
            .map(|s| self.count(s))
            .sum()
    }

    /// Whether the job would dispatch a child now.
    pub fn wants_children(&self) -> bool {
        self.state == JobState::Running
            && self.count("pending") > 0
            && self.active() < self.max_concurrency
    }

    /// The job's current state as the data of a `job.<state>` event.
    pub fn event_data(&self) -> ris_schemas::event::JobEventData {
        ris_schemas::event::JobEventData {
            job_id: self.id,
            state: self.state,
            target_count: self.target_count,
            counts: self.counts.clone(),
            reason: self.reason.clone(),
            ended_at: self.ended_at,
        }
    }
}

/// One target of a job, with its child's outcome when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct JobTargetRecord {
    pub seq: u32,
    pub agent_id: AgentId,
    pub agent_name: String,
    pub state: String,
    pub task_id: Option<TaskId>,
    pub attempts: Option<u32>,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A job to create; targets resolved by the caller.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub request: JobRequest,
    pub targets: Vec<NewTarget>,
    /// A note on the job (e.g. "the selector matched no agent").
    pub reason: Option<String>,
}

/// A resolved target: the agent, and whether it was online when the job was created.
#[derive(Debug, Clone)]
pub struct NewTarget {
    pub agent_id: AgentId,
    pub name: String,
    pub online: bool,
}

/// What [`JobRepo::cancel_job`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum JobCancel {
    /// The job is now `cancelled` (or was already); its children are to be stopped.
    Cancelled(JobRecord),
    /// Every target had already ended; nothing changed.
    Ended(JobRecord),
    NotFound,
}

/// Where a page of jobs ended (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor {
    pub created_at: DateTime<Utc>,
    pub id: JobId,
}

impl JobCursor {
    pub fn encode(&self) -> String {
        format!(
            "{}_{}",
            self.created_at.timestamp_micros(),
            self.id.0.simple()
        )
    }

    pub fn decode(s: &str) -> Option<JobCursor> {
        let (micros, id) = s.split_once('_')?;
        let created_at = DateTime::<Utc>::from_timestamp_micros(micros.parse().ok()?)?;
        let id = Uuid::try_parse(id).ok().map(JobId)?;
        Some(JobCursor { created_at, id })
    }
}

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
    /// Under the job row lock: while the job is `running`, creates the child tasks
    /// (`queued`) of the next pending targets, as many as `max_concurrency` leaves room
    /// for. Returns them, for placement.
    async fn dispatch_children(
        &self,
        tenant: &TenantCtx,
        id: JobId,
    ) -> Result<Vec<TaskRecord>, StoreError>;
    /// Cancels the job: targets not dispatched are `skipped_cancelled` at once; the
    /// caller then stops the children ([`JobRepo::children_to_stop`]).
    async fn cancel_job(&self, tenant: &TenantCtx, id: JobId) -> Result<JobCancel, StoreError>;
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

macro_rules! job_columns {
    () => {
        "id, tenant_id, state, request, max_concurrency, max_errors, cancel_running_on_halt, \
         target_count, counts, errors, unsettled, reason, halting_at, halted_at, cancelled_at, \
         started_at, wait_until, ended_at, announced, created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    tenant_id: Uuid,
    state: String,
    request: serde_json::Value,
    max_concurrency: i32,
    max_errors: i32,
    cancel_running_on_halt: bool,
    target_count: i32,
    counts: Json<BTreeMap<String, i64>>,
    errors: i32,
    unsettled: i32,
    reason: Option<String>,
    halting_at: Option<DateTime<Utc>>,
    halted_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    wait_until: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    announced: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;
    fn try_from(r: JobRow) -> Result<Self, Self::Error> {
        let counts = r
            .counts
            .0
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|(k, n)| {
                u32::try_from(n)
                    .map(|n| (k.clone(), n))
                    .map_err(|_| StoreError::Corrupt(format!("job count `{k}` is {n}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(JobRecord {
            id: JobId(r.id),
            tenant_id: r.tenant_id,
            state: JobState::parse(&r.state)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown job state `{}`", r.state)))?,
            request: serde_json::from_value(r.request)
                .map_err(|e| StoreError::corrupt("job request", e))?,
            max_concurrency: to_u32("max_concurrency", r.max_concurrency)?,
            max_errors: to_u32("max_errors", r.max_errors)?,
            cancel_running_on_halt: r.cancel_running_on_halt,
            target_count: to_u32("target_count", r.target_count)?,
            counts,
            errors: to_u32("errors", r.errors)?,
            unsettled: to_u32("unsettled", r.unsettled)?,
            reason: r.reason,
            halting_at: r.halting_at,
            halted_at: r.halted_at,
            cancelled_at: r.cancelled_at,
            started_at: r.started_at,
            wait_until: r.wait_until,
            ended_at: r.ended_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
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

async fn lock_job(
    conn: &mut PgConnection,
    tenant: &TenantCtx,
    id: JobId,
) -> Result<Option<JobRow>, StoreError> {
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
    ))
    .bind(tenant.id)
    .bind(id.0)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row)
}

async fn settle(conn: &mut PgConnection, id: JobId) -> Result<(), StoreError> {
    sqlx::query("SELECT ris_job_settle($1)")
        .bind(id.0)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn fetch_job(
    conn: &mut PgConnection,
    tenant: &TenantCtx,
    id: JobId,
) -> Result<Option<JobRecord>, StoreError> {
    let row: Option<JobRow> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant.id)
    .bind(id.0)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(JobRecord::try_from).transpose()
}

/// Moves every target of the job in state `from` to `to`, counts included.
async fn move_targets(
    conn: &mut PgConnection,
    id: JobId,
    from: &str,
    to: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH moved AS (
             UPDATE job_targets SET state = $3, updated_at = now()
             WHERE job_id = $1 AND state = $2
             RETURNING 1
         )
         UPDATE jobs SET counts = ris_job_move(counts, $2, $3, (SELECT count(*)::integer FROM moved)),
                         updated_at = now()
         WHERE id = $1",
    )
    .bind(id.0)
    .bind(from)
    .bind(to)
    .execute(&mut *conn)
    .await?;
    Ok(())
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
        let Some(row) = lock_job(&mut tx, tenant, id).await? else {
            return Ok(None);
        };
        let previous = row.announced.clone();
        let job = JobRecord::try_from(row)?;
        let ended = job.ended_at.is_some();
        let key = announce_key(job.state, ended);
        if previous.as_deref() == Some(key.as_str()) {
            return Ok(Some((job, Vec::new())));
        }
        sqlx::query("UPDATE jobs SET announced = $2 WHERE id = $1")
            .bind(id.0)
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let events = announcements(previous.as_deref(), job.state, ended);
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
