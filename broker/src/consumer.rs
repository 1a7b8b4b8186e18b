//! Starting a consumer the RIS way: bounded prefetch, manual acknowledgements.

use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use crate::error::{short, BrokerError};

/// `basic_qos(prefetch)` then `basic_consume` with manual acks (`no_ack: false`) under
/// `consumer_tag` (shown in the management UI: name it after the process and purpose).
///
/// Prefetch bounds the unacked deliveries in flight: a few hundred for throughput
/// consumers, the task capacity for an agent. Every delivery must be acked, rejected or
/// dead-lettered ([`crate::dead_letter`]).
#[tracing::instrument(skip(channel))]
pub async fn consume(
    channel: &Channel,
    queue: &str,
    consumer_tag: &str,
    prefetch: u16,
) -> Result<Consumer, BrokerError> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let options = BasicConsumeOptions {
        no_ack: false,
        ..BasicConsumeOptions::default()
    };
    let consumer = channel
        .basic_consume(
            short("queue", queue)?,
            short("consumer tag", consumer_tag)?,
            options,
            FieldTable::default(),
        )
        .await?;
    Ok(consumer)
}
