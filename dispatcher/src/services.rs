//! Docker services, the dispatcher's side: keeping each agent told, and recording what
//! agents report.
//!
//! # Sync
//!
//! Every `service_sync_ms` (default 3 s), for each tenant whose worker is connected
//! here, the dispatcher holding the tenant's `service-sync:<tenant>` lease in Redis
//! reads the tenant's services, instances and agents (three queries), decides in
//! memory ([`plan`]) and records its steps in one batched call, then publishes the
//! resulting orders to the agents' control queues:
//!
//! - an agent the target matches without an instance (it enrolled, or its labels
//!   changed, since the last change) gets a `pending` instance and `service.apply`;
//! - an agent holding an instance that no longer matches, or of a deleted service, is
//!   told `service.remove`;
//! - an online agent whose last report has not caught up with the revision it was sent
//!   gets its order again once `service_resend_secs` (default 15 s) passed since the
//!   previous one. Offline agents are not re-sent anything: the order already waits in
//!   their queue, so an agent away for long does not come back to a pile of copies.
//!
//! Each step is guarded in the store (a step decided against a revision that changed
//! meanwhile does nothing; a re-send within the interval does nothing), so a second
//! dispatcher racing this one, or the API, can only make it skip work.
//!
//! # Reports
//!
//! `service.status` from `ris.results` updates the instance ([`report`]): a state change
//! is announced as `service.<state>`, restored replicas as `service.restarted`. A
//! report about a service or agent without an instance is acknowledged and dropped;
//! if it says the agent still runs the service, the agent is told to remove it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ris_broker::{names, BrokerError, PublishOptions, Publisher};
use ris_schemas::event::{Event, ServiceEventData};
use ris_schemas::ids::{AgentId, TenantName};
use ris_schemas::messages::ServiceStatus;
use ris_schemas::service::{InstanceState, ServiceName};
use ris_store::{
    target_matches, InstanceRecord, ServiceOrder, StatusOutcome, StoreError, SyncState, SyncStep,
    Tenant, TenantCtx,
};

use crate::context::Context;
use crate::retry::{until_ok, Stop};

/// Longer than a round, so the lease survives between rounds of its holder.
const LEASE: Duration = Duration::from_secs(15);

pub async fn run(ctx: Context) {
    let interval = Duration::from_millis(ctx.config.service_sync_ms.max(100));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let tenants = match ctx.store.list_tenants().await {
            Ok(t) => t,
            Err(err) => {
                tracing::warn!(error = %err, "service sync cannot list tenants");
                continue;
            }
        };
        for tenant in tenants {
            if ctx.shutdown.is_cancelled() {
                return;
            }
            let Some(publisher) = ctx.publisher(&tenant.name) else {
                continue;
            };
            let lease = format!("service-sync:{}", tenant.name);
            match ctx.presence.lease(&lease, &ctx.instance, LEASE).await {
                Ok(true) => sync(&ctx, &tenant, &publisher).await,
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "service sync lease unavailable"),
            }
        }
    }
}

/// One round for one tenant; errors are logged and the next round tries again.
#[tracing::instrument(skip_all, fields(tenant = %tenant.name))]
async fn sync(ctx: &Context, tenant: &Tenant, publisher: &Publisher) {
    let tenant_ctx = tenant.ctx();
    let state = match ctx.store.service_sync_state(&tenant_ctx).await {
        Ok(s) => s,
        Err(err) => return tracing::warn!(error = %err, "service sync cannot read state"),
    };
    if state.services.is_empty() {
        return;
    }
    let lagging: Vec<AgentId> = {
        let set: HashSet<AgentId> = state
            .instances
            .iter()
            .filter(|i| i.lags())
            .map(|i| i.agent_id)
            .collect();
        set.into_iter().collect()
    };
    let online: HashSet<AgentId> = match ctx.presence.get_many(&tenant.name, &lagging).await {
        Ok(p) => lagging
            .into_iter()
            .zip(p)
            .filter_map(|(a, p)| p.map(|_| a))
            .collect(),
        Err(err) => return tracing::warn!(error = %err, "service sync cannot read presence"),
    };
    let steps = plan(&state, &online);
    if steps.is_empty() {
        return;
    }
    let resend = Duration::from_secs(ctx.config.service_resend_secs);
    let orders = match ctx.store.record_sync(&tenant_ctx, &steps, resend).await {
        Ok(o) => o,
        Err(err) => return tracing::warn!(error = %err, "service sync cannot record its steps"),
    };
    tracing::debug!(steps = steps.len(), orders = orders.len(), "service sync");
    let unsent = publish(ctx, publisher, &tenant.name, &orders).await;
    if !unsent.is_empty() {
        if let Err(err) = ctx.store.orders_unsent(&tenant_ctx, &unsent).await {
            tracing::warn!(error = %err, "could not mark orders unsent");
        }
    }
}

/// What the sync should do, given the tenant's state and which lagging agents are
/// online.
pub fn plan(state: &SyncState, online: &HashSet<AgentId>) -> Vec<SyncStep> {
    let mut instances: HashMap<(&ServiceName, AgentId), &InstanceRecord> = HashMap::new();
    for i in &state.instances {
        instances.insert((&i.service, i.agent_id), i);
    }
    let agents: HashMap<AgentId, &ris_store::AgentRecord> =
        state.agents.iter().map(|a| (a.id, a)).collect();
    let mut steps = Vec::new();
    for service in &state.services {
        let live = service.deleted_at.is_none();
        let wanted = |agent: AgentId| {
            live && agents
                .get(&agent)
                .is_some_and(|a| target_matches(&service.target, a))
        };
        if live {
            for agent in state.agents.iter().filter(|a| wanted(a.id)) {
                let current = instances.get(&(&service.name, agent.id));
                let behind =
                    current.is_none_or(|i| i.removing || i.desired_revision < service.revision);
                if behind {
                    steps.push(SyncStep::Create {
                        service: service.name.clone(),
                        agent: agent.id,
                        revision: service.revision,
                    });
                }
            }
        }
        for i in state.instances.iter().filter(|i| i.service == service.name) {
            let want = wanted(i.agent_id);
            if !want && !i.removing {
                steps.push(SyncStep::Remove {
                    service: service.name.clone(),
                    agent: i.agent_id,
                    revision: service.revision,
                });
            } else if want != i.removing && i.lags() && online.contains(&i.agent_id) {
                // Wanted and told to run it, or unwanted and told to remove it; the
                // other two cases were handled above.
                steps.push(SyncStep::Resend {
                    service: service.name.clone(),
                    agent: i.agent_id,
                    desired_revision: i.desired_revision,
                    removing: i.removing,
                });
            }
        }
    }
    steps
}

/// Publishes orders to the agents' control queues; those that failed for a reason
/// other than a missing queue are returned.
pub async fn publish(
    ctx: &Context,
    publisher: &Publisher,
    tenant: &TenantName,
    orders: &[ServiceOrder],
) -> Vec<ServiceOrder> {
    let sends = orders.iter().map(|order| async move {
        let opts = PublishOptions {
            message_id: Some(order.message_id()),
            ..PublishOptions::default()
        };
        let key = names::agent_control_key(order.agent_id);
        let sent = crate::signing::publish(
            ctx,
            publisher,
            tenant,
            order.agent_id,
            &key,
            &order.message(),
            opts,
        )
        .await;
        (order, sent)
    });
    let mut unsent = Vec::new();
    for (order, sent) in futures::future::join_all(sends).await {
        match sent {
            Ok(()) => metrics::counter!("ris_service_orders_total").increment(1),
            Err(BrokerError::Unroutable { .. }) => {
                tracing::info!(%tenant, agent_id = %order.agent_id, "service order unroutable (agent queues gone)");
            }
            Err(err) => {
                tracing::warn!(%tenant, agent_id = %order.agent_id, error = %err, "service order not published");
                unsent.push(order.clone());
            }
        }
    }
    unsent
}

/// Applies an agent's `service.status` report. Always `Ok` unless shutting down or the
/// store fails permanently: a report about something unknown is dropped, not
/// dead-lettered (it is periodic, and the next one says the same).
#[tracing::instrument(skip_all, fields(service = %status.report.service))]
pub async fn report(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    status: &ServiceStatus,
) -> Result<bool, Stop<StoreError>> {
    let report = &status.report;
    let outcome = until_ok("record_service_status", &ctx.shutdown, || {
        ctx.store
            .record_service_status(tenant, status.agent_id, status.sent_at, report)
    })
    .await?;
    let data = |state: Option<InstanceState>, restarts: Option<u32>| ServiceEventData {
        service: report.service.clone(),
        revision: report.revision,
        agent_id: Some(status.agent_id),
        state,
        reason: report.reason.clone(),
        restarts,
    };
    match outcome {
        StatusOutcome::Unknown if report.state == InstanceState::Removed => {
            tracing::debug!("removal report for no instance; dropped")
        }
        StatusOutcome::Unknown => {
            // The agent runs a service RIS holds no instance of there (an order that
            // overtook a removal revived it after the agent forgot it): remove it, at
            // the agent's own revision so the order is not stale.
            tracing::info!(
                revision = report.desired_revision,
                "agent runs a service it should not; telling it to remove it"
            );
            let order = ServiceOrder {
                agent_id: status.agent_id,
                service: report.service.clone(),
                revision: report.desired_revision,
                spec: None,
            };
            publish(ctx, publisher, &tenant.name, std::slice::from_ref(&order)).await;
        }
        StatusOutcome::Stale => tracing::debug!("report older than the stored one; dropped"),
        StatusOutcome::Removed { .. } => {
            tracing::info!(service = %report.service, "service removed from the agent");
            let state = InstanceState::Removed;
            announce(publisher, tenant, state.as_str(), data(Some(state), None)).await;
        }
        StatusOutcome::Updated {
            before,
            restarts_before,
            instance,
        } => {
            if instance.state != before {
                tracing::info!(service = %report.service, from = before.as_str(), to = instance.state.as_str(), reason = ?report.reason, "instance state changed");
                let what = instance.state.as_str();
                announce(publisher, tenant, what, data(Some(instance.state), None)).await;
            }
            if instance.restarts > restarts_before {
                let restored = instance.restarts - restarts_before;
                tracing::info!(service = %report.service, restored, "replicas restored");
                announce(publisher, tenant, "restarted", data(None, Some(restored))).await;
            }
        }
    }
    Ok(true)
}

async fn announce(publisher: &Publisher, tenant: &TenantCtx, what: &str, data: ServiceEventData) {
    metrics::counter!("ris_service_events_total", "type" => what.to_owned()).increment(1);
    let event = Event::service(tenant.name.as_str(), what, data);
    if let Err(err) = ris_broker::publish_event(publisher, &event).await {
        metrics::counter!("ris_event_publish_failures_total").increment(1);
        tracing::warn!(event = %event.kind, error = %err, "event not published");
    }
}

#[cfg(test)]
mod tests;
