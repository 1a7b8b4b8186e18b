//! Task events the API causes itself, on `ris.events` (topic exchange, routing key
//! `task.<state>`): today, a cancel that takes effect at once. Same shape as the
//! dispatcher's events (`ris_schemas::event::Event::task`).
//!
//! The `task_events` table is the record; the exchange is a notification. An event that
//! cannot be published is logged and counted, never allowed to fail the request.

use ris_broker::{PublishOptions, EVENTS_EXCHANGE};
use ris_schemas::event::{Event, TaskEventData};
use ris_schemas::ids::TenantName;
use ris_store::TaskRecord;

use crate::state::AppState;

/// Announces the task's current state through the tenant's publisher.
pub async fn task_changed(state: &AppState, tenant: &TenantName, task: &TaskRecord) {
    let event = Event::task(
        tenant.as_str(),
        TaskEventData {
            task_id: task.id,
            state: task.state,
            attempt: task.attempts,
            agent_id: task.agent_id,
            reason: task.reason.clone(),
        },
    );
    let opts = PublishOptions {
        message_id: Some(event.id.to_string()),
        // Nobody may be listening: an unroutable event is not an error.
        mandatory: Some(false),
        ..PublishOptions::default()
    };
    metrics::counter!("ris_task_transitions_total", "state" => task.state.as_str()).increment(1);
    let published = match state.brokers.publisher(tenant).await {
        Ok(publisher) => {
            publisher
                .publish_json(EVENTS_EXCHANGE, &event.kind, &event, opts)
                .await
        }
        Err(err) => Err(err),
    };
    if let Err(err) = published {
        metrics::counter!("ris_event_publish_failures_total").increment(1);
        tracing::warn!(task_id = %task.id, error = %err, "event not published");
        state.brokers.forget(tenant).await;
    }
}
