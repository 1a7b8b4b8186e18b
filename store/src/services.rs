//! Docker services: declarations, their revisions, and what each agent was told.
//!
//! A change ([`ServiceChange`]) is applied in one transaction that locks the service
//! row: it bumps the revision, appends the revision row, resolves the target to the
//! tenant's agents (a selector matches every enrolled agent whose labels match), and
//! records per agent what it must now run ([`ServiceOrder`]): `apply` for matching
//! agents, `remove` for agents that held an instance and no longer match (or all of
//! them, on delete). The caller publishes the orders after the commit.
//!
//! The change itself is in [`crate::service_changes`]; reports, the dispatcher's sync
//! and the instances in [`crate::service_instances`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ris_schemas::ids::AgentId;
use ris_schemas::messages::ControlMessage;
use ris_schemas::service::{
    InstanceState, Replicas, ServiceName, ServiceRevision, ServiceSpec, ServiceStatusReport,
    ServiceTarget,
};
use ris_schemas::version::V1;

use crate::pg::{to_i32, to_u32};
use crate::service_instances::{InstanceRecord, StatusOutcome};
use crate::service_sync::{SyncState, SyncStep};
use crate::{AgentRecord, PgStore, StoreError, TenantCtx};

/// A service as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecord {
    pub name: ServiceName,
    pub revision: u32,
    pub target: ServiceTarget,
    pub spec: ServiceSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set by a delete; the service is listed until its last instance is removed.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl ServiceRecord {
    /// Whether `agent` is one the service should run on.
    pub fn targets(&self, agent: &AgentRecord) -> bool {
        self.deleted_at.is_none() && target_matches(&self.target, agent)
    }
}

/// Whether `target` names or selects `agent`.
pub fn target_matches(target: &ServiceTarget, agent: &AgentRecord) -> bool {
    match target {
        ServiceTarget::Agent(id) => *id == agent.id,
        ServiceTarget::Selector(selector) => selector.matches(&agent.labels),
    }
}

/// A change to a service; each one that changes something is a new revision.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceChange {
    /// `PUT`: create, update, or declare again after a delete. The stored restart
    /// generation is kept (clients do not set it).
    Put {
        target: ServiceTarget,
        spec: Box<ServiceSpec>,
    },
    Scale(Replicas),
    /// Replace every replica (bumps the spec's restart generation).
    Restart,
    Delete,
}

/// What [`ServiceRepo::change_service`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeOutcome {
    /// No such service (or it is deleted, for a scale, restart or delete).
    NotFound,
    /// The change would change nothing (same spec and target; same replicas; a delete
    /// already under way): no new revision.
    Unchanged(ServiceRecord),
    Changed {
        service: ServiceRecord,
        /// `create`, `update`, `scale`, `restart` or `delete`.
        change: &'static str,
        /// Orders to publish to agents, now.
        orders: Vec<ServiceOrder>,
    },
}

/// An order for one agent's control queue.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceOrder {
    pub agent_id: AgentId,
    pub service: ServiceName,
    pub revision: u32,
    /// `Some`: run this spec (`service.apply`); `None`: remove the service.
    pub spec: Option<ServiceSpec>,
}

impl ServiceOrder {
    pub fn message(&self) -> ControlMessage {
        match &self.spec {
            Some(spec) => ControlMessage::ServiceApply {
                v: V1,
                service: self.service.clone(),
                revision: self.revision,
                spec: Box::new(spec.clone()),
            },
            None => ControlMessage::ServiceRemove {
                v: V1,
                service: self.service.clone(),
                revision: self.revision,
            },
        }
    }

    /// A message id that names the order (a re-send carries the same one).
    pub fn message_id(&self) -> String {
        let what = if self.spec.is_some() {
            "apply"
        } else {
            "remove"
        };
        format!(
            "service.{}.{}.{what}.{}",
            self.service, self.revision, self.agent_id
        )
    }
}

/// Services, their revisions and instances.
#[async_trait]
pub trait ServiceRepo: Send + Sync {
    /// Applies `change` to the service `name` (see the module documentation).
    async fn change_service(
        &self,
        tenant: &TenantCtx,
        name: &ServiceName,
        change: ServiceChange,
    ) -> Result<ChangeOutcome, StoreError>;
    /// `None` when absent, or deleted with no instance left.
    async fn get_service(
        &self,
        tenant: &TenantCtx,
        name: &ServiceName,
    ) -> Result<Option<ServiceRecord>, StoreError>;
    /// By name, those strictly after `after`; deleted services while instances remain.
    async fn list_services(
        &self,
        tenant: &TenantCtx,
        limit: i64,
        after: Option<&ServiceName>,
    ) -> Result<Vec<ServiceRecord>, StoreError>;
    /// Instances of the given services, by service then agent name, with agent names.
    async fn service_instances(
        &self,
        tenant: &TenantCtx,
        services: &[ServiceName],
    ) -> Result<Vec<InstanceRecord>, StoreError>;
    /// Services declared and not deleted (what the `max_services` quota counts).
    async fn count_services(&self, tenant: &TenantCtx) -> Result<i64, StoreError>;
    /// Newest first, revisions strictly below `before`.
    async fn service_revisions(
        &self,
        tenant: &TenantCtx,
        name: &ServiceName,
        limit: i64,
        before: Option<u32>,
    ) -> Result<Vec<ServiceRevision>, StoreError>;
    /// Everything the dispatcher's sync needs about one tenant, in three queries.
    async fn service_sync_state(&self, tenant: &TenantCtx) -> Result<SyncState, StoreError>;
    /// Records the steps the sync decided, each guarded against a concurrent change
    /// (a step computed against an older revision, or a re-send within
    /// `resend_after` of the previous order, does nothing); the orders to publish for
    /// the steps that took effect.
    async fn record_sync(
        &self,
        tenant: &TenantCtx,
        steps: &[SyncStep],
        resend_after: std::time::Duration,
    ) -> Result<Vec<ServiceOrder>, StoreError>;
    /// Orders that could not be published: their instances become due for a re-send at
    /// once.
    async fn orders_unsent(
        &self,
        tenant: &TenantCtx,
        orders: &[ServiceOrder],
    ) -> Result<(), StoreError>;
    /// Applies an agent's report to its instance.
    async fn record_service_status(
        &self,
        tenant: &TenantCtx,
        agent: AgentId,
        sent_at: DateTime<Utc>,
        report: &ServiceStatusReport,
    ) -> Result<StatusOutcome, StoreError>;
    /// Cross-tenant: instances by state (for metrics).
    async fn instances_by_state(&self) -> Result<Vec<(InstanceState, i64)>, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(crate) struct ServiceRow {
    name: String,
    revision: i32,
    target: serde_json::Value,
    spec: serde_json::Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
}

pub(crate) const SERVICE_COLUMNS: &str =
    "s.name, s.revision, s.target, s.spec, s.created_at, s.updated_at, s.deleted_at";

pub(crate) fn service_name(raw: String) -> Result<ServiceName, StoreError> {
    ServiceName::try_from(raw).map_err(|e| StoreError::corrupt("service name", e))
}

pub(crate) fn spec_of(v: serde_json::Value) -> Result<ServiceSpec, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::corrupt("service spec", e))
}

pub(crate) fn target_of(v: serde_json::Value) -> Result<ServiceTarget, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::corrupt("service target", e))
}

impl TryFrom<ServiceRow> for ServiceRecord {
    type Error = StoreError;
    fn try_from(r: ServiceRow) -> Result<Self, Self::Error> {
        Ok(ServiceRecord {
            name: service_name(r.name)?,
            revision: to_u32("service revision", r.revision)?,
            target: target_of(r.target)?,
            spec: spec_of(r.spec)?,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deleted_at: r.deleted_at,
        })
    }
}

#[async_trait]
impl ServiceRepo for PgStore {
    async fn change_service(
        &self,
        tenant: &TenantCtx,
        name: &ServiceName,
        change: ServiceChange,
    ) -> Result<ChangeOutcome, StoreError> {
        crate::service_changes::change(self, tenant, name, change).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, service = %name))]
    async fn get_service(
        &self,
        tenant: &TenantCtx,
        name: &ServiceName,
    ) -> Result<Option<ServiceRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let row: Option<ServiceRow> = sqlx::query_as(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services s
             WHERE s.tenant_id = $1 AND s.name = $2 AND {NOT_GONE}"
        ))
        .bind(tenant.id)
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(ServiceRecord::try_from).transpose()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
    async fn list_services(
        &self,
        tenant: &TenantCtx,
        limit: i64,
        after: Option<&ServiceName>,
    ) -> Result<Vec<ServiceRecord>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows: Vec<ServiceRow> = sqlx::query_as(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services s
             WHERE s.tenant_id = $1 AND {NOT_GONE} AND ($2::text IS NULL OR s.name > $2)
             ORDER BY s.name LIMIT $3"
        ))
        .bind(tenant.id)
        .bind(after.map(ServiceName::as_str))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(ServiceRecord::try_from).collect()
    }

    async fn service_instances(
        &self,
        tenant: &TenantCtx,
        services: &[ServiceName],
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        crate::service_instances::instances(self, tenant, services).await
    }

    async fn count_services(&self, tenant: &TenantCtx) -> Result<i64, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM services WHERE tenant_id = $1 AND deleted_at IS NULL",
        )
        .bind(tenant.id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, service = %name))]
    async fn service_revisions(
        &self,
        tenant: &TenantCtx,
        name: &ServiceName,
        limit: i64,
        before: Option<u32>,
    ) -> Result<Vec<ServiceRevision>, StoreError> {
        let mut tx = self.tenant_tx(tenant).await?;
        let rows: Vec<(
            i32,
            String,
            serde_json::Value,
            serde_json::Value,
            DateTime<Utc>,
        )> = sqlx::query_as(
            "SELECT revision, change, target, spec, created_at FROM service_revisions
                 WHERE tenant_id = $1 AND service = $2 AND ($3::integer IS NULL OR revision < $3)
                 ORDER BY revision DESC LIMIT $4",
        )
        .bind(tenant.id)
        .bind(name.as_str())
        .bind(before.map(to_i32))
        .bind(limit.clamp(1, 1000))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|(revision, change, target, spec, created_at)| {
                Ok(ServiceRevision {
                    revision: to_u32("service revision", revision)?,
                    change,
                    target: target_of(target)?,
                    spec: spec_of(spec)?,
                    created_at,
                })
            })
            .collect()
    }

    async fn service_sync_state(&self, tenant: &TenantCtx) -> Result<SyncState, StoreError> {
        crate::service_sync::sync_state(self, tenant).await
    }

    async fn record_sync(
        &self,
        tenant: &TenantCtx,
        steps: &[SyncStep],
        resend_after: std::time::Duration,
    ) -> Result<Vec<ServiceOrder>, StoreError> {
        crate::service_sync::record_sync(self, tenant, steps, resend_after).await
    }

    async fn orders_unsent(
        &self,
        tenant: &TenantCtx,
        orders: &[ServiceOrder],
    ) -> Result<(), StoreError> {
        crate::service_sync::orders_unsent(self, tenant, orders).await
    }

    async fn record_service_status(
        &self,
        tenant: &TenantCtx,
        agent: AgentId,
        sent_at: DateTime<Utc>,
        report: &ServiceStatusReport,
    ) -> Result<StatusOutcome, StoreError> {
        crate::service_instances::record_status(self, tenant, agent, sent_at, report).await
    }

    async fn instances_by_state(&self) -> Result<Vec<(InstanceState, i64)>, StoreError> {
        crate::service_instances::by_state(self).await
    }
}

/// SQL condition: the service `s` is still listed (not deleted, or instances remain).
pub(crate) const NOT_GONE: &str = "(s.deleted_at IS NULL OR EXISTS (
    SELECT 1 FROM service_instances i WHERE i.tenant_id = s.tenant_id AND i.service = s.name))";
