//! The dispatcher's service sync, its store side: it reads the services, instances and
//! agents of a tenant ([`sync_state`], three queries), decides in memory, and records
//! its steps ([`record_sync`]) in three batched statements, each guarded so that a step
//! decided against an older revision (a change committed meanwhile) or a re-send within
//! the interval does nothing.

use std::time::Duration;

use ris_schemas::ids::AgentId;
use ris_schemas::service::ServiceName;
use uuid::Uuid;

use crate::agents::AgentRow;
use crate::pg::{micros, to_i32, to_u32};
use crate::service_instances::{InstanceRecord, InstanceRow, INSTANCE_COLUMNS};
use crate::services::{
    service_name, spec_of, ServiceOrder, ServiceRecord, ServiceRow, NOT_GONE, SERVICE_COLUMNS,
};
use crate::{AgentRecord, PgStore, StoreError, TenantCtx};

/// A tenant's services (those still listed), their instances and its agents.
#[derive(Debug, Clone, Default)]
pub struct SyncState {
    pub services: Vec<ServiceRecord>,
    pub instances: Vec<InstanceRecord>,
    pub agents: Vec<AgentRecord>,
}

/// One step the sync decided.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncStep {
    /// The agent matches the service and has no instance, or one told to remove it (or
    /// behind `revision`): create or revive it and send it the service. Only if the
    /// service is still at `revision` and not deleted.
    Create {
        service: ServiceName,
        agent: AgentId,
        revision: u32,
    },
    /// The agent no longer matches (or the service is deleted): tell it to remove the
    /// service. Only if the service is still at `revision`.
    Remove {
        service: ServiceName,
        agent: AgentId,
        revision: u32,
    },
    /// The agent lags: send its order again. Only if its instance still wants
    /// `desired_revision` (and `removing`), and no order went out within the interval.
    Resend {
        service: ServiceName,
        agent: AgentId,
        desired_revision: u32,
        removing: bool,
    },
}

#[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
pub(crate) async fn sync_state(
    store: &PgStore,
    tenant: &TenantCtx,
) -> Result<SyncState, StoreError> {
    let mut tx = store.tenant_tx(tenant).await?;
    let services: Vec<ServiceRow> = sqlx::query_as(&format!(
        "SELECT {SERVICE_COLUMNS} FROM services s WHERE s.tenant_id = $1 AND {NOT_GONE}"
    ))
    .bind(tenant.id)
    .fetch_all(&mut *tx)
    .await?;
    let instances: Vec<InstanceRow> = sqlx::query_as(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM service_instances i
         JOIN agents a ON a.tenant_id = i.tenant_id AND a.id = i.agent_id
         WHERE i.tenant_id = $1"
    ))
    .bind(tenant.id)
    .fetch_all(&mut *tx)
    .await?;
    let agents: Vec<AgentRow> = if services.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as("SELECT * FROM agents WHERE tenant_id = $1")
            .bind(tenant.id)
            .fetch_all(&mut *tx)
            .await?
    };
    tx.commit().await?;
    Ok(SyncState {
        services: services
            .into_iter()
            .map(ServiceRecord::try_from)
            .collect::<Result<_, _>>()?,
        instances: instances
            .into_iter()
            .map(InstanceRecord::try_from)
            .collect::<Result<_, _>>()?,
        agents: agents
            .into_iter()
            .map(AgentRecord::try_from)
            .collect::<Result<_, _>>()?,
    })
}

/// A row an order is built from.
#[derive(sqlx::FromRow)]
struct OrderRow {
    service: String,
    agent_id: Uuid,
    revision: i32,
    removing: bool,
    spec: serde_json::Value,
}

impl TryFrom<OrderRow> for ServiceOrder {
    type Error = StoreError;
    fn try_from(r: OrderRow) -> Result<Self, Self::Error> {
        Ok(ServiceOrder {
            agent_id: AgentId(r.agent_id),
            service: service_name(r.service)?,
            revision: to_u32("order revision", r.revision)?,
            spec: if r.removing {
                None
            } else {
                Some(spec_of(r.spec)?)
            },
        })
    }
}

/// Columns of one kind of step, for `unnest`.
#[derive(Default)]
struct Batch {
    services: Vec<String>,
    agents: Vec<Uuid>,
    revisions: Vec<i32>,
    removing: Vec<bool>,
}

impl Batch {
    fn push(&mut self, service: &ServiceName, agent: AgentId, revision: u32, removing: bool) {
        self.services.push(service.as_str().to_owned());
        self.agents.push(agent.0);
        self.revisions.push(to_i32(revision));
        self.removing.push(removing);
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, steps = steps.len()))]
pub(crate) async fn record_sync(
    store: &PgStore,
    tenant: &TenantCtx,
    steps: &[SyncStep],
    resend_after: Duration,
) -> Result<Vec<ServiceOrder>, StoreError> {
    let (mut create, mut remove, mut resend) =
        (Batch::default(), Batch::default(), Batch::default());
    for step in steps {
        match step {
            SyncStep::Create {
                service,
                agent,
                revision,
            } => create.push(service, *agent, *revision, false),
            SyncStep::Remove {
                service,
                agent,
                revision,
            } => remove.push(service, *agent, *revision, true),
            SyncStep::Resend {
                service,
                agent,
                desired_revision,
                removing,
            } => resend.push(service, *agent, *desired_revision, *removing),
        }
    }
    let mut tx = store.tenant_tx(tenant).await?;
    let mut rows: Vec<OrderRow> = Vec::new();
    if !create.agents.is_empty() {
        rows.extend(
            sqlx::query_as::<_, OrderRow>(
                "INSERT INTO service_instances AS i
                     (tenant_id, service, agent_id, desired_revision, last_applied_at)
                 SELECT $1, s.name, w.agent, s.revision, now()
                 FROM unnest($2::text[], $3::uuid[], $4::integer[]) AS w(service, agent, revision)
                 JOIN services s ON s.tenant_id = $1 AND s.name = w.service
                     AND s.revision = w.revision AND s.deleted_at IS NULL
                 JOIN agents a ON a.tenant_id = $1 AND a.id = w.agent
                 ON CONFLICT (tenant_id, service, agent_id) DO UPDATE SET
                     desired_revision = EXCLUDED.desired_revision, removing = false,
                     last_applied_at = now()
                 WHERE i.removing OR i.desired_revision < EXCLUDED.desired_revision
                 RETURNING i.service, i.agent_id, i.desired_revision AS revision, i.removing,
                     (SELECT spec FROM services s2
                      WHERE s2.tenant_id = i.tenant_id AND s2.name = i.service) AS spec",
            )
            .bind(tenant.id)
            .bind(&create.services)
            .bind(&create.agents)
            .bind(&create.revisions)
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    if !remove.agents.is_empty() {
        rows.extend(
            sqlx::query_as::<_, OrderRow>(
                "UPDATE service_instances i SET removing = true, desired_revision = s.revision,
                     last_applied_at = now()
                 FROM unnest($2::text[], $3::uuid[], $4::integer[]) AS w(service, agent, revision),
                     services s
                 WHERE i.tenant_id = $1 AND i.service = w.service AND i.agent_id = w.agent
                     AND NOT i.removing
                     AND s.tenant_id = $1 AND s.name = w.service AND s.revision = w.revision
                 RETURNING i.service, i.agent_id, i.desired_revision AS revision, i.removing,
                     s.spec",
            )
            .bind(tenant.id)
            .bind(&remove.services)
            .bind(&remove.agents)
            .bind(&remove.revisions)
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    if !resend.agents.is_empty() {
        rows.extend(
            sqlx::query_as::<_, OrderRow>(
                "UPDATE service_instances i SET last_applied_at = now()
                 FROM unnest($2::text[], $3::uuid[], $4::integer[], $5::boolean[])
                     AS w(service, agent, revision, removing)
                 WHERE i.tenant_id = $1 AND i.service = w.service AND i.agent_id = w.agent
                     AND i.desired_revision = w.revision AND i.removing = w.removing
                     AND (i.last_applied_at IS NULL
                          OR i.last_applied_at < now() - $6 * interval '1 microsecond')
                 RETURNING i.service, i.agent_id, i.desired_revision AS revision, i.removing,
                     (SELECT r.spec FROM service_revisions r
                      WHERE r.tenant_id = i.tenant_id AND r.service = i.service
                          AND r.revision = i.desired_revision) AS spec",
            )
            .bind(tenant.id)
            .bind(&resend.services)
            .bind(&resend.agents)
            .bind(&resend.revisions)
            .bind(&resend.removing)
            .bind(micros(resend_after))
            .fetch_all(&mut *tx)
            .await?,
        );
    }
    tx.commit().await?;
    rows.into_iter().map(ServiceOrder::try_from).collect()
}

#[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name))]
pub(crate) async fn orders_unsent(
    store: &PgStore,
    tenant: &TenantCtx,
    orders: &[ServiceOrder],
) -> Result<(), StoreError> {
    if orders.is_empty() {
        return Ok(());
    }
    let services: Vec<&str> = orders.iter().map(|o| o.service.as_str()).collect();
    let agents: Vec<Uuid> = orders.iter().map(|o| o.agent_id.0).collect();
    let revisions: Vec<i32> = orders.iter().map(|o| to_i32(o.revision)).collect();
    let mut tx = store.tenant_tx(tenant).await?;
    sqlx::query(
        "UPDATE service_instances i SET last_applied_at = NULL
         FROM unnest($2::text[], $3::uuid[], $4::integer[]) AS w(service, agent, revision)
         WHERE i.tenant_id = $1 AND i.service = w.service AND i.agent_id = w.agent
             AND i.desired_revision = w.revision",
    )
    .bind(tenant.id)
    .bind(&services)
    .bind(&agents)
    .bind(&revisions)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
