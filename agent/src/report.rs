//! Reporting results: publish with a confirm, or keep them in the outbox.
//!
//! Results go to `ris.results` with the agent id as routing key and the agent's AMQP
//! username as `user_id` (the broker checks it). The publisher belongs to the current
//! connection; the supervisor installs it on connect and removes it on loss, and task
//! runs that finish meanwhile fall back to the outbox.

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use ris_broker::{BrokerError, PublishOptions, Publisher};
use ris_schemas::messages::ResultMessage;

use crate::outbox::{Flushed, Outbox, OutboxError};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("no publisher confirm within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Where a result ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Published,
    /// Kept in the outbox under this sequence number.
    Outboxed(u64),
}

pub struct Reporter {
    exchange: String,
    /// Routing key: the agent id.
    routing_key: String,
    /// The agent's AMQP username, set as `user_id`.
    username: String,
    publish_timeout: Duration,
    /// `Publisher` is a cheap handle (clones share its channels).
    publisher: RwLock<Option<Publisher>>,
    outbox: Outbox,
}

impl Reporter {
    pub fn new(
        exchange: String,
        routing_key: String,
        username: String,
        publish_timeout: Duration,
        outbox: Outbox,
    ) -> Self {
        Self {
            exchange,
            routing_key,
            username,
            publish_timeout,
            publisher: RwLock::new(None),
            outbox,
        }
    }

    /// Installs (on connect) or removes (on loss) the publisher.
    pub fn set_publisher(&self, publisher: Option<Publisher>) {
        *self
            .publisher
            .write()
            .unwrap_or_else(PoisonError::into_inner) = publisher;
    }

    fn current(&self) -> Option<Publisher> {
        self.publisher
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Publishes and waits for the confirm; no outbox fallback.
    pub async fn publish(&self, message: &ResultMessage) -> Result<(), ReportError> {
        let publisher = self.current().ok_or(ReportError::NotConnected)?;
        let message_id = match message {
            ResultMessage::Executing(e) => format!("{}.{}.executing", e.task_id, e.attempt),
            ResultMessage::Finished(f) => format!("{}.{}.finished", f.task_id, f.attempt),
            ResultMessage::Output(o) => format!("{}.{}.output.{}", o.task_id, o.attempt, o.seq),
            ResultMessage::ServiceStatus(s) => format!(
                "{}.service.{}.{}",
                s.agent_id,
                s.report.service,
                s.sent_at.timestamp_nanos_opt().unwrap_or_default()
            ),
        };
        let options = PublishOptions {
            message_id: Some(message_id),
            user_id: Some(self.username.clone()),
            mandatory: Some(true),
            ..PublishOptions::default()
        };
        let publish = publisher.publish_json(&self.exchange, &self.routing_key, message, options);
        match tokio::time::timeout(self.publish_timeout, publish).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ReportError::Timeout(self.publish_timeout)),
        }
    }

    /// Publishes live output: best effort, failures are dropped (logged at debug).
    pub async fn publish_live(&self, message: &ResultMessage) {
        if let Err(e) = self.publish(message).await {
            tracing::debug!(error = %e, "live output not published; dropped");
        }
    }

    /// Publishes, or appends to the outbox when publishing fails. Errs only when the
    /// outbox cannot be written either.
    pub async fn deliver(&self, message: &ResultMessage) -> Result<Delivered, OutboxError> {
        match self.publish(message).await {
            Ok(()) => Ok(Delivered::Published),
            Err(e) => {
                let seq = self.outbox.append(message).await?;
                tracing::warn!(error = %e, seq, "result not published; kept in the outbox");
                Ok(Delivered::Outboxed(seq))
            }
        }
    }

    /// Appends straight to the outbox (startup recovery, before any connection).
    pub async fn defer(&self, message: &ResultMessage) -> Result<u64, OutboxError> {
        self.outbox.append(message).await
    }

    /// True when the outbox holds results (or cannot be read, so a flush will say why).
    pub fn has_pending(&self) -> bool {
        !self.outbox.is_empty().unwrap_or(false)
    }

    /// Publishes the outbox in order; logs what it did.
    pub async fn flush_outbox(&self) -> Result<Flushed, OutboxError> {
        let flushed = self
            .outbox
            .flush(|m| async move { self.publish(&m).await })
            .await?;
        if flushed.published > 0 || flushed.remaining > 0 {
            tracing::info!(
                published = flushed.published,
                remaining = flushed.remaining,
                "outbox flushed"
            );
        }
        Ok(flushed)
    }
}
