//! Publishing events on `ris.events` (topic exchange, routing key = the event's type).
//!
//! Events are notifications, not the record: nobody may be listening, so they are not
//! mandatory (an unroutable event is not an error), and callers log a failure rather
//! than fail the work that caused it.

use ris_schemas::event::Event;

use crate::{BrokerError, PublishOptions, Publisher, EVENTS_EXCHANGE};

/// Publishes `event` (message id = event id) and waits for the confirm.
pub async fn publish_event(publisher: &Publisher, event: &Event) -> Result<(), BrokerError> {
    let opts = PublishOptions {
        message_id: Some(event.id.to_string()),
        mandatory: Some(false),
        ..PublishOptions::default()
    };
    publisher
        .publish_json(EVENTS_EXCHANGE, &event.kind, event, opts)
        .await
}
