//! Fleet jobs: creation (targets inserted in bulk), status, dispatching children,
//! cancelling, and the dispatchers' job sweep.
//!
//! [`JobRepo`] (in `repo`) is what the API needs: resolve a target, create, read, list,
//! cancel. [`JobDriving`] (in `driving`) is what the dispatchers need: dispatch children,
//! stop them, release waiting targets, announce changes, claim jobs for the sweep.
//!
//! Counts, halting and ending are kept by the database trigger of the jobs migration, in
//! the transaction of every child's state change; see its header. The rule that makes
//! the halt hold across dispatchers: every decision to dispatch a child locks the job
//! row (`FOR UPDATE`), and so does every child change (the trigger), so a dispatch either
//! commits before the change that halts the job, or sees the job halting and dispatches
//! nothing. Placing a child on an agent re-checks the job under a share lock
//! ([`crate::placement`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::job::{JobId, JobRequest, JobState};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::pg::to_u32;
use crate::{StoreError, TenantCtx};

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

// `counts` as stored counts a dispatched child's live states as one bucket, `active`;
// `ris_job_counts` splits it by the children's states (migration
// 20250200000000_job_active_bucket.sql).
macro_rules! job_columns {
    () => {
        "id, tenant_id, state, request, max_concurrency, max_errors, cancel_running_on_halt, \
         target_count, ris_job_counts(id, counts) AS counts, errors, unsettled, reason, \
         halting_at, halted_at, cancelled_at, started_at, wait_until, ended_at, announced, \
         created_at, updated_at"
    };
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
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

/// The job's row, locked until the transaction ends.
pub(super) async fn lock_job(
    conn: &mut PgConnection,
    tenant: &TenantCtx,
    id: JobId,
) -> Result<Option<JobRow>, StoreError> {
    job_row(conn, tenant, id, true).await
}

/// The job's row, locked (`FOR UPDATE`) or not.
pub(super) async fn job_row(
    conn: &mut PgConnection,
    tenant: &TenantCtx,
    id: JobId,
    lock: bool,
) -> Result<Option<JobRow>, StoreError> {
    const SELECT: &str = concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = $1 AND id = $2"
    );
    const LOCK: &str = concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
    );
    let row: Option<JobRow> = sqlx::query_as(if lock { LOCK } else { SELECT })
        .bind(tenant.id)
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row)
}

pub(super) async fn settle(conn: &mut PgConnection, id: JobId) -> Result<(), StoreError> {
    sqlx::query("SELECT ris_job_settle($1)")
        .bind(id.0)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn fetch_job(
    conn: &mut PgConnection,
    tenant: &TenantCtx,
    id: JobId,
) -> Result<Option<JobRecord>, StoreError> {
    job_row(conn, tenant, id, false)
        .await?
        .map(JobRecord::try_from)
        .transpose()
}

/// Moves every target of the job in state `from` to `to`, counts included.
pub(super) async fn move_targets(
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

// After `job_columns!`, which they use (macros are in scope from their definition on).
mod driving;
mod repo;

pub use driving::JobDriving;
pub use repo::JobRepo;
