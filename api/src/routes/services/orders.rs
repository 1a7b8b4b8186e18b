//! Telling agents about a service change, and announcing it.
//!
//! Orders go to each agent's control queue (`ris.agent.<id>.ctl`, through the
//! `ris.agents` exchange, confirmed and mandatory) right after the change commits. One
//! that cannot be published is marked unsent in the store, so the dispatcher's service
//! sync sends it on its next round instead of waiting out the re-send interval.

use futures::future::join_all;
use ris_broker::envelope::publish_to_agent;
use ris_broker::{names, BrokerError, PublishOptions};
use ris_schemas::event::{Event, ServiceEventData};
use ris_store::{ServiceOrder, ServiceRecord, TenantCtx};

use crate::state::AppState;

/// Publishes every order; failures are logged and handed back to the sync.
pub(super) async fn publish(state: &AppState, tenant: &TenantCtx, orders: &[ServiceOrder]) {
    if orders.is_empty() {
        return;
    }
    let signer = match crate::signing::signer(state).await {
        Ok(signer) => signer,
        Err(_) => {
            let err = BrokerError::Signing("no signing key available".into());
            return unsent(state, tenant, orders.to_vec(), &err).await;
        }
    };
    let publisher = match state.brokers.publisher(&tenant.name).await {
        Ok(p) => p,
        Err(err) => return unsent(state, tenant, orders.to_vec(), &err).await,
    };
    let sends = orders.iter().map(|order| {
        let publisher = publisher.clone();
        let signer = &signer;
        async move {
            let opts = PublishOptions {
                message_id: Some(order.message_id()),
                ..PublishOptions::default()
            };
            let key = names::agent_control_key(order.agent_id);
            let sent = publish_to_agent(
                &publisher,
                signer,
                &tenant.name,
                order.agent_id,
                &key,
                &order.message(),
                opts,
            )
            .await;
            (order, sent)
        }
    });
    let mut failed = Vec::new();
    let mut broken = None;
    for (order, sent) in join_all(sends).await {
        if let Err(err) = sent {
            tracing::warn!(agent_id = %order.agent_id, error = %err, "service order not published");
            if !matches!(err, BrokerError::Unroutable { .. }) {
                broken = Some(err);
            }
            failed.push(order.clone());
        }
    }
    if let Some(err) = broken {
        state.brokers.forget(&tenant.name).await;
        unsent(state, tenant, failed, &err).await;
    } else if !failed.is_empty() {
        // The agents' queues are gone (agents deleted): nothing to retry soon.
        tracing::info!(count = failed.len(), "orders unroutable");
    }
}

async fn unsent(
    state: &AppState,
    tenant: &TenantCtx,
    orders: Vec<ServiceOrder>,
    err: &BrokerError,
) {
    metrics::counter!("ris_service_order_publish_failures_total").increment(orders.len() as u64);
    tracing::warn!(error = %err, count = orders.len(), "service orders left to the dispatcher's sync");
    if let Err(err) = state.store.orders_unsent(tenant, &orders).await {
        tracing::warn!(error = %err, "could not mark orders unsent; they are re-sent after the interval");
    }
}

/// `service.updated` for a new revision, `service.deleted` for a delete.
pub(super) async fn announce(
    state: &AppState,
    tenant: &TenantCtx,
    service: &ServiceRecord,
    change: &str,
) {
    let what = if change == "delete" {
        "deleted"
    } else {
        "updated"
    };
    let event = Event::service(
        tenant.name.as_str(),
        what,
        ServiceEventData {
            service: service.name.clone(),
            revision: service.revision,
            agent_id: None,
            state: None,
            reason: Some(change.to_owned()),
            restarts: None,
        },
    );
    crate::events::publish(state, &tenant.name, &event).await;
}
