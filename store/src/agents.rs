//! Agents: identity from enrollment, facts (capabilities included) from heartbeats,
//! address history.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::ids::{AgentId, AgentName};
use ris_schemas::labels::Labels;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::pg::{to_i32, to_u32};
use crate::tenants::joined;
use crate::{AgentRepo, PgStore, StoreError, Tenant, TenantCtx};

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: AgentId,
    pub tenant_id: Uuid,
    pub name: AgentName,
    pub labels: Labels,
    pub capacity: u32,
    pub version: String,
    pub hostname: String,
    /// Addresses from the latest heartbeat; empty until the first one.
    pub addresses: Vec<String>,
    /// Hash of the heartbeat bearer token (the token itself is never stored).
    pub heartbeat_token_hash: Vec<u8>,
    pub enrolled_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// What the agent last advertised (`shell`, `docker`, ...); `None` before its first
    /// heartbeat.
    pub capabilities: Option<Vec<String>>,
}

impl AgentRecord {
    /// Whether the agent last advertised `capability`.
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities
            .as_ref()
            .is_some_and(|c| c.iter().any(|x| x == capability))
    }
}

/// What enrollment stores about a new agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgent {
    pub id: AgentId,
    pub name: AgentName,
    pub labels: Labels,
    pub capacity: u32,
    pub version: String,
    pub hostname: String,
    pub heartbeat_token_hash: Vec<u8>,
}

/// What a heartbeat tells about an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFacts {
    pub labels: Labels,
    pub capacity: u32,
    pub version: String,
    pub hostname: String,
    pub addresses: Vec<String>,
    pub capabilities: Vec<String>,
    pub seen_at: DateTime<Utc>,
}

/// An address set an agent had, and when it was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressChangeRecord {
    pub addresses: Vec<String>,
    pub changed_at: DateTime<Utc>,
}

/// The columns of [`AgentRow`], for `SELECT` and `RETURNING`.
macro_rules! agent_columns {
    () => {
        "id, tenant_id, name, labels, capacity, version, hostname, addresses, \
         heartbeat_token_hash, enrolled_at, last_seen_at, capabilities"
    };
}

#[derive(sqlx::FromRow)]
pub(crate) struct AgentRow {
    id: Uuid,
    pub(crate) tenant_id: Uuid,
    name: String,
    labels: serde_json::Value,
    capacity: i32,
    version: String,
    hostname: String,
    addresses: serde_json::Value,
    heartbeat_token_hash: Vec<u8>,
    enrolled_at: DateTime<Utc>,
    last_seen_at: Option<DateTime<Utc>>,
    capabilities: Option<Vec<String>>,
}

impl TryFrom<AgentRow> for AgentRecord {
    type Error = StoreError;
    fn try_from(r: AgentRow) -> Result<Self, Self::Error> {
        Ok(AgentRecord {
            id: AgentId(r.id),
            tenant_id: r.tenant_id,
            name: AgentName::try_from(r.name).map_err(|e| StoreError::corrupt("agent name", e))?,
            labels: serde_json::from_value(r.labels)
                .map_err(|e| StoreError::corrupt("agent labels", e))?,
            capacity: to_u32("agent capacity", r.capacity)?,
            version: r.version,
            hostname: r.hostname,
            addresses: addresses(r.addresses)?,
            heartbeat_token_hash: r.heartbeat_token_hash,
            enrolled_at: r.enrolled_at,
            last_seen_at: r.last_seen_at,
            capabilities: r.capabilities,
        })
    }
}

/// An agent row joined with its tenant, for cross-tenant lookups.
#[derive(sqlx::FromRow)]
pub(crate) struct AgentWithTenantRow {
    #[sqlx(flatten)]
    pub(crate) agent: AgentRow,
    pub(crate) tenant_name: String,
    pub(crate) tenant_created_at: DateTime<Utc>,
}

fn addresses(v: serde_json::Value) -> Result<Vec<String>, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::corrupt("agent addresses", e))
}

/// Address sets compare as sets: a reordering is not a change.
fn same_addresses(a: &[String], b: &[String]) -> bool {
    let mut a: Vec<&String> = a.iter().collect();
    let mut b: Vec<&String> = b.iter().collect();
    a.sort_unstable();
    a.dedup();
    b.sort_unstable();
    b.dedup();
    a == b
}

/// Inserts a newly enrolled agent; `None` when its name is taken in the tenant.
pub(crate) async fn insert_agent(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    agent: &NewAgent,
) -> Result<Option<AgentRecord>, StoreError> {
    let row: Option<AgentRow> = sqlx::query_as(concat!(
        "INSERT INTO agents (id, tenant_id, name, labels, capacity, version, hostname, \
         heartbeat_token_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (tenant_id, name) DO NOTHING RETURNING ",
        agent_columns!()
    ))
    .bind(agent.id.0)
    .bind(tenant_id)
    .bind(agent.name.as_str())
    .bind(Json(&agent.labels))
    .bind(to_i32(agent.capacity))
    .bind(&agent.version)
    .bind(&agent.hostname)
    .bind(&agent.heartbeat_token_hash)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(AgentRecord::try_from).transpose()
}

#[async_trait]
impl AgentRepo for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, agent_id = %id))]
    async fn get_agent(
        &self,
        tenant: &TenantCtx,
        id: AgentId,
    ) -> Result<Option<AgentRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<AgentRow> = sqlx::query_as(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.id)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(AgentRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn list_agents(&self, tenant: &TenantCtx) -> Result<Vec<AgentRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows: Vec<AgentRow> = sqlx::query_as(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(tenant.id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(AgentRecord::try_from).collect()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(agent_id = %id))]
    async fn find_agent(&self, id: AgentId) -> Result<Option<(Tenant, AgentRecord)>, StoreError> {
        let row: Option<AgentWithTenantRow> = sqlx::query_as(
            "SELECT a.*, t.name AS tenant_name, t.created_at AS tenant_created_at
             FROM agents a JOIN tenants t ON t.id = a.tenant_id
             WHERE a.id = $1",
        )
        .bind(id.0)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let tenant = joined(row.agent.tenant_id, row.tenant_name, row.tenant_created_at)?;
        Ok(Some((tenant, row.agent.try_into()?)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, agent_id = %id))]
    async fn update_agent_facts(
        &self,
        tenant: &TenantCtx,
        id: AgentId,
        facts: &AgentFacts,
    ) -> Result<bool, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let old: Option<(serde_json::Value,)> = sqlx::query_as(
            "SELECT addresses FROM agents WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(tenant.id)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((old,)) = old else { return Ok(false) };
        let old = addresses(old)?;
        let changed = !same_addresses(&old, &facts.addresses);
        if changed && !old.is_empty() {
            sqlx::query(
                "INSERT INTO agent_address_history (tenant_id, agent_id, addresses, changed_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(tenant.id)
            .bind(id.0)
            .bind(Json(&old))
            .bind(facts.seen_at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE agents SET labels = $3, capacity = $4, version = $5, hostname = $6,
                 addresses = $7, last_seen_at = GREATEST(last_seen_at, $8),
                 capabilities = $9
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.id)
        .bind(id.0)
        .bind(Json(&facts.labels))
        .bind(to_i32(facts.capacity))
        .bind(&facts.version)
        .bind(&facts.hostname)
        // An unchanged set (reordered, say) is left as stored.
        .bind(Json(if changed { &facts.addresses } else { &old }))
        .bind(facts.seen_at)
        .bind(&facts.capabilities)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(changed)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, agent_id = %id))]
    async fn touch_agent(
        &self,
        tenant: &TenantCtx,
        id: AgentId,
        seen_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        sqlx::query(
            "UPDATE agents SET last_seen_at = GREATEST(last_seen_at, $3)
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.id)
        .bind(id.0)
        .bind(seen_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, agent_id = %id))]
    async fn address_history(
        &self,
        tenant: &TenantCtx,
        id: AgentId,
        limit: i64,
    ) -> Result<Vec<AddressChangeRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows: Vec<(serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
            "SELECT addresses, changed_at FROM agent_address_history
             WHERE tenant_id = $1 AND agent_id = $2
             ORDER BY changed_at DESC, id DESC LIMIT $3",
        )
        .bind(tenant.id)
        .bind(id.0)
        .bind(limit.clamp(0, 1000))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|(a, changed_at)| {
                Ok(AddressChangeRecord {
                    addresses: addresses(a)?,
                    changed_at,
                })
            })
            .collect()
    }
}
