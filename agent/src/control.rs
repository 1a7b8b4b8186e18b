//! The control consumer: orders on `ris.agent.<id>.ctl`.
//!
//! Consumed on its own channel, so a busy agent still hears `cancel`. `Cancel` cancels
//! the running task's token (the executor then kills its process group) and is
//! remembered (see [`crate::cancelled`]) so an assignment of the task that has not
//! started is dropped; `Ping` is logged. Every parsed message is acked; unparseable ones
//! are rejected without requeue. `service.apply` and `service.remove` go to the
//! [`ServiceManager`], which stores them on disk before the delivery is acked.

use futures::StreamExt;
use ris_broker::lapin::message::Delivery;
use ris_broker::lapin::options::{BasicAckOptions, BasicRejectOptions};
use ris_broker::lapin::Consumer;
use ris_schemas::messages::ControlMessage;

use crate::running::Running;
use crate::service::ServiceManager;
use crate::trust::Trust;

/// Consumes control messages until the consumer ends; returns why it ended.
pub async fn consume_control(
    running: Running,
    services: ServiceManager,
    trust: Trust,
    mut consumer: Consumer,
) -> String {
    while let Some(next) = consumer.next().await {
        match next {
            Ok(delivery) => handle(&running, &services, &trust, &delivery).await,
            Err(e) => return e.to_string(),
        }
    }
    "control consumer cancelled".to_owned()
}

async fn handle(running: &Running, services: &ServiceManager, trust: &Trust, delivery: &Delivery) {
    match serde_json::from_slice::<ControlMessage>(&delivery.data) {
        Ok(message) if trust.verify(delivery, &message).is_err() => {
            tracing::warn!(
                reason = "bad_signature",
                "control message not signed by the platform; rejected, not applied"
            );
            let options = BasicRejectOptions { requeue: false };
            if let Err(e) = delivery.acker.reject(options).await {
                tracing::warn!(error = %e, "control reject failed");
            }
        }
        Ok(message) => {
            if let Err(e) = services.handle(&message).await {
                // Not stored: the dispatcher sends the order again while this agent's
                // reports lag behind it.
                tracing::error!(error = %e, "service order not stored; rejected");
                let options = BasicRejectOptions { requeue: false };
                if let Err(e) = delivery.acker.reject(options).await {
                    tracing::warn!(error = %e, "control reject failed");
                }
                return;
            }
            apply(running, &message);
            if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                tracing::warn!(error = %e, "control ack failed");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "unparseable control message; rejected");
            let options = BasicRejectOptions { requeue: false };
            if let Err(e) = delivery.acker.reject(options).await {
                tracing::warn!(error = %e, "control reject failed");
            }
        }
    }
}

/// Carries out one order. Returns whether it changed anything.
pub fn apply(running: &Running, message: &ControlMessage) -> bool {
    match message {
        ControlMessage::Cancel { task_id, .. } => {
            // Remembered before the registry is searched, while the worker registers a
            // task before it checks this memory: whatever the interleaving, either the
            // worker sees the id and drops the task, or the search below finds it.
            running.cancelled().remember(*task_id);
            let found = running.cancel(*task_id);
            if found {
                tracing::info!(task_id = %task_id, "cancel requested; stopping the task");
            } else {
                tracing::info!(task_id = %task_id, "cancel for a task not running here; its assignment will be dropped");
            }
            found
        }
        ControlMessage::Revoke {
            task_id, attempt, ..
        } => {
            // Only assignments not started yet are affected: one already running was
            // started while this agent still held the attempt, and its result is fenced.
            running.revoked().remember((*task_id, *attempt));
            tracing::info!(task_id = %task_id, attempt, "attempt revoked; its assignment will be dropped");
            false
        }
        ControlMessage::Ping { nonce, .. } => {
            tracing::info!(nonce = %nonce, "ping from the control queue");
            false
        }
        // Carried out by the service manager (see `handle`).
        ControlMessage::ServiceApply { .. } | ControlMessage::ServiceRemove { .. } => false,
    }
}
