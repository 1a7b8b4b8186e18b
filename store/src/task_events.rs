//! A task's history: one row per state change, appended in the same transaction as
//! the change (see [`crate::transitions`]).

use chrono::{DateTime, Utc};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::task::TaskState;
use uuid::Uuid;

use crate::pg::to_u32;
use crate::tasks::parse_state;
use crate::{PgStore, StoreError, TenantCtx};

/// One row of a task's history.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEventRecord {
    pub seq: i64,
    pub task_id: TaskId,
    pub state: TaskState,
    pub attempt: u32,
    pub agent_id: Option<AgentId>,
    pub reason: Option<String>,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    task_id: Uuid,
    state: String,
    attempt: i32,
    agent_id: Option<Uuid>,
    reason: Option<String>,
    detail: serde_json::Value,
    at: DateTime<Utc>,
}

impl TryFrom<EventRow> for TaskEventRecord {
    type Error = StoreError;
    fn try_from(r: EventRow) -> Result<Self, Self::Error> {
        Ok(TaskEventRecord {
            seq: r.seq,
            task_id: TaskId(r.task_id),
            state: parse_state(&r.state)?,
            attempt: to_u32("event attempt", r.attempt)?,
            agent_id: r.agent_id.map(AgentId),
            reason: r.reason,
            detail: r.detail,
            at: r.at,
        })
    }
}

/// [`crate::TaskRepo::task_events`].
pub(crate) async fn task_events(
    store: &PgStore,
    tenant: &TenantCtx,
    id: TaskId,
) -> Result<Vec<TaskEventRecord>, StoreError> {
    let mut tx = store.tenant_tx(tenant).await?;
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT seq, task_id, state, attempt, agent_id, reason, detail, at
             FROM task_events WHERE tenant_id = $1 AND task_id = $2 ORDER BY seq",
    )
    .bind(tenant.id)
    .bind(id.0)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.into_iter().map(TaskEventRecord::try_from).collect()
}
