//! Service instances: one agent's side of one service.
//!
//! - Agents' reports ([`record_status`]): applied under the instance's row lock; a
//!   report older than the stored one is ignored; `removed` after a remove order
//!   deletes the row.
//! - The dispatcher's sync: in [`crate::service_sync`].

use chrono::{DateTime, Utc};
use ris_schemas::ids::AgentId;
use ris_schemas::service::{ContainerStatus, InstanceState, ServiceName, ServiceStatusReport};
use sqlx::types::Json;
use uuid::Uuid;

use crate::pg::{to_i32, to_u32};
use crate::services::service_name;
use crate::{PgStore, StoreError, TenantCtx};

/// One agent's side of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    pub service: ServiceName,
    pub agent_id: AgentId,
    pub agent_name: String,
    /// The revision last sent to the agent.
    pub desired_revision: u32,
    /// The agent was told to remove the service.
    pub removing: bool,
    /// From the latest report: the revision the agent says it was told, and the one its
    /// replicas run.
    pub reported_desired_revision: Option<u32>,
    pub revision: Option<u32>,
    pub state: InstanceState,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub containers: Vec<ContainerStatus>,
    pub restarts: u32,
    pub reported_at: Option<DateTime<Utc>>,
    pub last_applied_at: Option<DateTime<Utc>>,
}

impl InstanceRecord {
    /// The agent has not yet acknowledged the latest order.
    pub fn lags(&self) -> bool {
        self.reported_desired_revision
            .is_none_or(|r| r < self.desired_revision)
    }
}

/// What an agent's report did.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusOutcome {
    /// No instance of that service on that agent (unknown, or already removed): ignored.
    Unknown,
    /// Older than the report already stored: ignored.
    Stale,
    /// The agent removed the service as told; the instance is gone.
    Removed { before: InstanceState },
    Updated {
        before: InstanceState,
        restarts_before: u32,
        instance: InstanceRecord,
    },
}

#[derive(sqlx::FromRow)]
pub(crate) struct InstanceRow {
    service: String,
    agent_id: Uuid,
    agent_name: String,
    desired_revision: i32,
    removing: bool,
    reported_desired_revision: Option<i32>,
    revision: Option<i32>,
    state: String,
    reason: Option<String>,
    error: Option<String>,
    containers: serde_json::Value,
    restarts: i32,
    reported_at: Option<DateTime<Utc>>,
    last_applied_at: Option<DateTime<Utc>>,
}

pub(crate) const INSTANCE_COLUMNS: &str =
    "i.service, i.agent_id, a.name AS agent_name, i.desired_revision, \
     i.removing, i.reported_desired_revision, i.revision, i.state, i.reason, i.error, \
     i.containers, i.restarts, i.reported_at, i.last_applied_at";

pub(crate) fn parse_state(s: &str) -> Result<InstanceState, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|e| StoreError::corrupt("instance state", e))
}

fn opt_u32(what: &str, v: Option<i32>) -> Result<Option<u32>, StoreError> {
    v.map(|v| to_u32(what, v)).transpose()
}

impl TryFrom<InstanceRow> for InstanceRecord {
    type Error = StoreError;
    fn try_from(r: InstanceRow) -> Result<Self, Self::Error> {
        Ok(InstanceRecord {
            service: service_name(r.service)?,
            agent_id: AgentId(r.agent_id),
            agent_name: r.agent_name,
            desired_revision: to_u32("desired revision", r.desired_revision)?,
            removing: r.removing,
            reported_desired_revision: opt_u32(
                "reported desired revision",
                r.reported_desired_revision,
            )?,
            revision: opt_u32("instance revision", r.revision)?,
            state: parse_state(&r.state)?,
            reason: r.reason,
            error: r.error,
            containers: serde_json::from_value(r.containers)
                .map_err(|e| StoreError::corrupt("instance containers", e))?,
            restarts: to_u32("instance restarts", r.restarts)?,
            reported_at: r.reported_at,
            last_applied_at: r.last_applied_at,
        })
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
pub(crate) async fn instances(
    store: &PgStore,
    tenant: &TenantCtx,
    services: &[ServiceName],
) -> Result<Vec<InstanceRecord>, StoreError> {
    let names: Vec<&str> = services.iter().map(ServiceName::as_str).collect();
    let mut tx = store.tenant_tx(tenant).await?;
    let rows: Vec<InstanceRow> = sqlx::query_as(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM service_instances i
         JOIN agents a ON a.tenant_id = i.tenant_id AND a.id = i.agent_id
         WHERE i.tenant_id = $1 AND i.service = ANY($2::text[])
         ORDER BY i.service, a.name"
    ))
    .bind(tenant.id)
    .bind(&names)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.into_iter().map(InstanceRecord::try_from).collect()
}

#[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, service = %report.service, agent_id = %agent))]
pub(crate) async fn record_status(
    store: &PgStore,
    tenant: &TenantCtx,
    agent: AgentId,
    sent_at: DateTime<Utc>,
    report: &ServiceStatusReport,
) -> Result<StatusOutcome, StoreError> {
    let mut tx = store.tenant_tx(tenant).await?;
    let current: Option<(String, bool, i32, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT state, removing, restarts, report_sent_at FROM service_instances
         WHERE tenant_id = $1 AND service = $2 AND agent_id = $3 FOR UPDATE",
    )
    .bind(tenant.id)
    .bind(report.service.as_str())
    .bind(agent.0)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((state, removing, restarts, last_sent)) = current else {
        return Ok(StatusOutcome::Unknown);
    };
    if last_sent.is_some_and(|last| last > sent_at) {
        return Ok(StatusOutcome::Stale);
    }
    let before = parse_state(&state)?;
    if removing && report.state == InstanceState::Removed {
        sqlx::query(
            "DELETE FROM service_instances WHERE tenant_id = $1 AND service = $2 AND agent_id = $3",
        )
        .bind(tenant.id)
        .bind(report.service.as_str())
        .bind(agent.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(StatusOutcome::Removed { before });
    }
    let row: InstanceRow = sqlx::query_as(&format!(
        "WITH i AS (
             UPDATE service_instances SET reported_desired_revision = $4, revision = $5,
                 state = $6, reason = $7, error = $8, containers = $9, restarts = $10,
                 report_sent_at = $11, reported_at = now()
             WHERE tenant_id = $1 AND service = $2 AND agent_id = $3
             RETURNING *)
         SELECT {INSTANCE_COLUMNS} FROM i
         JOIN agents a ON a.tenant_id = i.tenant_id AND a.id = i.agent_id"
    ))
    .bind(tenant.id)
    .bind(report.service.as_str())
    .bind(agent.0)
    .bind(to_i32(report.desired_revision))
    .bind(to_i32(report.revision))
    .bind(report.state.as_str())
    .bind(report.reason.as_deref())
    .bind(report.error.as_deref())
    .bind(Json(&report.containers))
    .bind(to_i32(report.restarts))
    .bind(sent_at)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(StatusOutcome::Updated {
        before,
        restarts_before: to_u32("instance restarts", restarts)?,
        instance: row.try_into()?,
    })
}

#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn by_state(store: &PgStore) -> Result<Vec<(InstanceState, i64)>, StoreError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM service_instances GROUP BY state")
            .fetch_all(store.pool())
            .await?;
    rows.into_iter()
        .map(|(s, n)| Ok((parse_state(&s)?, n)))
        .collect()
}
