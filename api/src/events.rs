//! Task events the API causes itself, on `ris.events` (topic exchange, routing key
//! `task.<state>`, `agent.online`): a submission, a cancel that takes effect at once,
//! an agent's first heartbeat. Same shape as the
//! dispatcher's events (`ris_schemas::event::Event::task`).
//!
//! The `task_events` table is the record; the exchange is a notification. An event that
//! cannot be published is logged and counted, never allowed to fail the request.

use ris_broker::publish_event;
use ris_schemas::event::Event;
use ris_schemas::ids::TenantName;
use ris_store::TaskRecord;

use crate::state::AppState;

/// Announces the task's current state through the tenant's publisher.
pub async fn task_changed(state: &AppState, tenant: &TenantName, task: &TaskRecord) {
    metrics::counter!("ris_task_transitions_total", "state" => task.state.as_str()).increment(1);
    publish(
        state,
        tenant,
        &Event::task(tenant.as_str(), task.event_data()),
    )
    .await;
}

/// Publishes `event` through the tenant's publisher; a failure is logged and counted.
pub async fn publish(state: &AppState, tenant: &TenantName, event: &Event) {
    let published = match state.brokers.publisher(tenant).await {
        Ok(publisher) => publish_event(&publisher, event).await,
        Err(err) => Err(err),
    };
    if let Err(err) = published {
        metrics::counter!("ris_event_publish_failures_total").increment(1);
        tracing::warn!(event = %event.kind, error = %err, "event not published");
        state.brokers.forget(tenant).await;
    }
}
