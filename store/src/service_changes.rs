//! Applying a change to a service, in one transaction: the new revision, and per agent
//! what it must now run (see [`crate::services`]).

use std::collections::BTreeSet;

use ris_schemas::ids::AgentId;
use ris_schemas::service::{RawServiceSpec, ServiceName, ServiceSpec, ServiceTarget};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::pg::to_i32;
use crate::services::{
    ChangeOutcome, ServiceChange, ServiceOrder, ServiceRecord, ServiceRow, SERVICE_COLUMNS,
};
use crate::{PgStore, StoreError, TenantCtx};

#[tracing::instrument(level = "debug", skip_all, fields(tenant = %tenant.name, service = %name))]
pub(crate) async fn change(
    store: &PgStore,
    tenant: &TenantCtx,
    name: &ServiceName,
    change: ServiceChange,
) -> Result<ChangeOutcome, StoreError> {
    let mut tx = store.tenant_tx(tenant).await?;
    let current: Option<ServiceRecord> = sqlx::query_as::<_, ServiceRow>(&format!(
        "SELECT {SERVICE_COLUMNS} FROM services s
         WHERE s.tenant_id = $1 AND s.name = $2 FOR UPDATE"
    ))
    .bind(tenant.id)
    .bind(name.as_str())
    .fetch_optional(&mut *tx)
    .await?
    .map(ServiceRecord::try_from)
    .transpose()?;
    let deleting = matches!(change, ServiceChange::Delete);
    let (target, spec, change) = match next(current.as_ref(), change)? {
        Next::NotFound => {
            // A second delete while the removal runs changes nothing.
            if let (true, Some(s)) = (deleting, current) {
                if has_instances(&mut tx, tenant, name).await? {
                    return Ok(ChangeOutcome::Unchanged(s));
                }
            }
            return Ok(ChangeOutcome::NotFound);
        }
        Next::Unchanged => {
            return Ok(current.map_or(ChangeOutcome::NotFound, ChangeOutcome::Unchanged))
        }
        Next::Declare {
            target,
            spec,
            change,
        } => (target, spec, change),
    };
    let revision = current.as_ref().map_or(1, |s| s.revision.saturating_add(1));
    let service = declare(&mut tx, tenant, name, revision, &target, &spec, change).await?;
    let orders = assign(&mut tx, tenant, &service).await?;
    tx.commit().await?;
    Ok(ChangeOutcome::Changed {
        service,
        change,
        orders,
    })
}

/// The new declaration a change makes, or why it makes none.
enum Next {
    NotFound,
    Unchanged,
    Declare {
        target: ServiceTarget,
        spec: Box<ServiceSpec>,
        change: &'static str,
    },
}

fn next(current: Option<&ServiceRecord>, change: ServiceChange) -> Result<Next, StoreError> {
    let live = current.filter(|s| s.deleted_at.is_none());
    Ok(match (change, live) {
        (ServiceChange::Put { target, spec }, live) => {
            let generation = live.map_or(0, |s| s.spec.get().restart_generation);
            let spec = Box::new(with_generation(*spec, generation)?);
            match live {
                None => Next::Declare {
                    target,
                    spec,
                    change: "create",
                },
                Some(s) if s.target == target && s.spec == *spec => Next::Unchanged,
                Some(_) => Next::Declare {
                    target,
                    spec,
                    change: "update",
                },
            }
        }
        (_, None) => Next::NotFound,
        (ServiceChange::Scale(replicas), Some(s)) => {
            if s.spec.get().replicas == replicas {
                Next::Unchanged
            } else {
                Next::Declare {
                    target: s.target.clone(),
                    spec: Box::new(s.spec.with_replicas(replicas)),
                    change: "scale",
                }
            }
        }
        (ServiceChange::Restart, Some(s)) => Next::Declare {
            target: s.target.clone(),
            spec: Box::new(s.spec.restarted()),
            change: "restart",
        },
        (ServiceChange::Delete, Some(s)) => Next::Declare {
            target: s.target.clone(),
            spec: Box::new(s.spec.clone()),
            change: "delete",
        },
    })
}

/// `spec` with the restart generation the service already has (clients do not set it).
fn with_generation(spec: ServiceSpec, generation: u32) -> Result<ServiceSpec, StoreError> {
    if spec.get().restart_generation == generation {
        return Ok(spec);
    }
    let mut raw: RawServiceSpec = spec.into();
    raw.restart_generation = generation;
    ServiceSpec::try_from(raw).map_err(|e| StoreError::corrupt("service spec", e))
}

async fn has_instances(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantCtx,
    name: &ServiceName,
) -> Result<bool, StoreError> {
    let (exists,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM service_instances WHERE tenant_id = $1 AND service = $2)",
    )
    .bind(tenant.id)
    .bind(name.as_str())
    .fetch_one(&mut **tx)
    .await?;
    Ok(exists)
}

/// Writes the service row and its revision row.
async fn declare(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantCtx,
    name: &ServiceName,
    revision: u32,
    target: &ServiceTarget,
    spec: &ServiceSpec,
    change: &'static str,
) -> Result<ServiceRecord, StoreError> {
    // A create (also after a delete) starts the service afresh; a delete marks it.
    let row: ServiceRow = sqlx::query_as(&format!(
        "INSERT INTO services AS s (tenant_id, name, revision, target, spec)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, name) DO UPDATE SET
             revision = EXCLUDED.revision, target = EXCLUDED.target, spec = EXCLUDED.spec,
             updated_at = now(),
             created_at = CASE WHEN $6 = 'create' THEN now() ELSE s.created_at END,
             deleted_at = CASE WHEN $6 = 'delete' THEN now() ELSE NULL END
         RETURNING {SERVICE_COLUMNS}"
    ))
    .bind(tenant.id)
    .bind(name.as_str())
    .bind(to_i32(revision))
    .bind(Json(target))
    .bind(Json(spec))
    .bind(change)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO service_revisions (tenant_id, service, revision, change, target, spec)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant.id)
    .bind(name.as_str())
    .bind(to_i32(revision))
    .bind(change)
    .bind(Json(target))
    .bind(Json(spec))
    .execute(&mut **tx)
    .await?;
    row.try_into()
}

/// Resolves the service's target to the tenant's agents and records, per agent, what it
/// must run at `service.revision`: `apply` where the target matches, `remove` where an
/// instance exists and it no longer does (everywhere, for a deleted service).
async fn assign(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantCtx,
    service: &ServiceRecord,
) -> Result<Vec<ServiceOrder>, StoreError> {
    let agents: Vec<(Uuid, serde_json::Value)> =
        sqlx::query_as("SELECT id, labels FROM agents WHERE tenant_id = $1")
            .bind(tenant.id)
            .fetch_all(&mut **tx)
            .await?;
    let mut matching = Vec::new();
    if service.deleted_at.is_none() {
        for (id, labels) in agents {
            let labels = serde_json::from_value(labels)
                .map_err(|e| StoreError::corrupt("agent labels", e))?;
            let hit = match &service.target {
                ServiceTarget::Agent(want) => want.0 == id,
                ServiceTarget::Selector(selector) => selector.matches(&labels),
            };
            if hit {
                matching.push(id);
            }
        }
    }
    let revision = to_i32(service.revision);
    let applied: Vec<(Uuid,)> = sqlx::query_as(
        "INSERT INTO service_instances AS i
             (tenant_id, service, agent_id, desired_revision, last_applied_at)
         SELECT $1, $2, a, $3, now() FROM unnest($4::uuid[]) AS a
         ON CONFLICT (tenant_id, service, agent_id) DO UPDATE SET
             desired_revision = EXCLUDED.desired_revision, removing = false,
             last_applied_at = now()
         RETURNING i.agent_id",
    )
    .bind(tenant.id)
    .bind(service.name.as_str())
    .bind(revision)
    .bind(&matching)
    .fetch_all(&mut **tx)
    .await?;
    let removed: Vec<(Uuid,)> = sqlx::query_as(
        "UPDATE service_instances SET removing = true, desired_revision = $3,
             last_applied_at = now()
         WHERE tenant_id = $1 AND service = $2 AND NOT (agent_id = ANY($4::uuid[]))
         RETURNING agent_id",
    )
    .bind(tenant.id)
    .bind(service.name.as_str())
    .bind(revision)
    .bind(&matching)
    .fetch_all(&mut **tx)
    .await?;
    let applied: BTreeSet<Uuid> = applied.into_iter().map(|(a,)| a).collect();
    let order = |agent: Uuid, spec: Option<ServiceSpec>| ServiceOrder {
        agent_id: AgentId(agent),
        service: service.name.clone(),
        revision: service.revision,
        spec,
    };
    let mut orders: Vec<ServiceOrder> = applied
        .into_iter()
        .map(|a| order(a, Some(service.spec.clone())))
        .collect();
    orders.extend(removed.into_iter().map(|(a,)| order(a, None)));
    Ok(orders)
}
