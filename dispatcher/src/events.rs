//! Task events on `ris.events` (topic exchange, routing key `task.<state>`).
//!
//! The `task_events` table is the record; the exchange is a notification. An event that
//! cannot be published is logged and counted, never retried at the cost of task
//! processing.

use ris_broker::{publish_event, Publisher};
use ris_schemas::event::{AgentEventData, Event};
use ris_schemas::ids::TenantName;
use ris_store::TaskRecord;

/// Announces the task's current state.
pub async fn task_changed(publisher: &Publisher, tenant: &TenantName, task: &TaskRecord) {
    metrics::counter!("ris_task_transitions_total", "state" => task.state.as_str()).increment(1);
    crate::gauges::observe_transition(task);
    let event = Event::task(tenant.as_str(), task.event_data());
    if let Err(err) = publish_event(publisher, &event).await {
        metrics::counter!("ris_event_publish_failures_total").increment(1);
        tracing::warn!(task_id = %task.id, error = %err, "event not published");
    }
}

/// Announces that an agent came online or went offline.
pub async fn agent_changed(
    publisher: &Publisher,
    tenant: &TenantName,
    agent: &ris_store::AgentRecord,
    online: bool,
) {
    let status = if online { "online" } else { "offline" };
    let event = Event::agent(
        tenant.as_str(),
        AgentEventData {
            agent_id: agent.id,
            name: agent.name.to_string(),
            status: status.to_owned(),
        },
    );
    metrics::counter!("ris_agent_status_changes_total", "status" => status).increment(1);
    if let Err(err) = publish_event(publisher, &event).await {
        tracing::warn!(agent_id = %agent.id, error = %err, "event not published");
    }
}
