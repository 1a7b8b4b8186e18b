//! Desired against actual: [`ServiceView`]s from services, their instances, and the
//! agents the target matches.
//!
//! An agent the target matches that has no instance yet (it matched since the last
//! change; the dispatcher's sync creates its instance within seconds) shows as
//! `pending`. A page of services costs three queries whatever its size.

use std::collections::{BTreeMap, HashMap};

use ris_schemas::service::{InstanceState, InstanceView, ServiceName, ServiceView};
use ris_store::{AgentRecord, InstanceRecord, ServiceRecord, TenantCtx};

use crate::error::ApiResult;
use crate::state::AppState;

/// One service with its instances.
pub(super) async fn detail(
    state: &AppState,
    tenant: &TenantCtx,
    service: ServiceRecord,
) -> ApiResult<ServiceView> {
    let mut views = build(state, tenant, vec![service], true).await?;
    Ok(views.remove(0))
}

/// Services with their counts of agents by state, without instances.
pub(super) async fn summaries(
    state: &AppState,
    tenant: &TenantCtx,
    services: Vec<ServiceRecord>,
) -> ApiResult<Vec<ServiceView>> {
    if services.is_empty() {
        return Ok(Vec::new());
    }
    build(state, tenant, services, false).await
}

async fn build(
    state: &AppState,
    tenant: &TenantCtx,
    services: Vec<ServiceRecord>,
    with_instances: bool,
) -> ApiResult<Vec<ServiceView>> {
    let names: Vec<ServiceName> = services.iter().map(|s| s.name.clone()).collect();
    let instances = state.store.service_instances(tenant, &names).await?;
    let agents = if services.iter().any(|s| s.deleted_at.is_none()) {
        state.store.list_agents(tenant).await?
    } else {
        Vec::new()
    };
    let mut by_service: HashMap<ServiceName, Vec<InstanceRecord>> = HashMap::new();
    for instance in instances {
        by_service
            .entry(instance.service.clone())
            .or_default()
            .push(instance);
    }
    Ok(services
        .into_iter()
        .map(|s| {
            let instances = by_service.remove(&s.name).unwrap_or_default();
            view(s, instances, &agents, with_instances)
        })
        .collect())
}

fn view(
    service: ServiceRecord,
    instances: Vec<InstanceRecord>,
    agents: &[AgentRecord],
    with_instances: bool,
) -> ServiceView {
    let replicas = service.spec.get().replicas.get();
    let mut views: Vec<InstanceView> = instances
        .into_iter()
        .map(|i| InstanceView {
            agent_id: i.agent_id,
            agent_name: i.agent_name,
            desired_revision: i.desired_revision,
            revision: i.revision,
            desired_replicas: if i.removing { 0 } else { replicas },
            state: i.state,
            reason: i.reason,
            error: i.error,
            containers: i.containers,
            restarts: i.restarts,
            reported_at: i.reported_at,
        })
        .collect();
    let pending = agents
        .iter()
        .filter(|a| service.targets(a) && !views.iter().any(|v| v.agent_id == a.id))
        .map(|a| InstanceView {
            agent_id: a.id,
            agent_name: a.name.to_string(),
            desired_revision: service.revision,
            revision: None,
            desired_replicas: replicas,
            state: InstanceState::Pending,
            reason: None,
            error: None,
            containers: Vec::new(),
            restarts: 0,
            reported_at: None,
        })
        .collect::<Vec<_>>();
    views.extend(pending);
    views.sort_by(|a, b| a.agent_name.cmp(&b.agent_name));
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for v in &views {
        *counts.entry(v.state.as_str().to_owned()).or_default() += 1;
    }
    ServiceView {
        name: service.name,
        revision: service.revision,
        target: service.target,
        spec: service.spec,
        created_at: service.created_at,
        updated_at: service.updated_at,
        deleted_at: service.deleted_at,
        agents: counts,
        instances: with_instances.then_some(views),
    }
}
