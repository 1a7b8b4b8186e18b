//! Parking messages we cannot process on `ris.dead`, with the reason, for inspection and
//! replay through the API. A consumer never crashes on input and never requeues poison.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;

use crate::error::BrokerError;
use crate::names::{
    DEAD_EXCHANGE, HEADER_DEAD_AT, HEADER_DEAD_REASON, HEADER_DEAD_SOURCE, HEADER_DEAD_USER,
};
use crate::publisher::Publisher;

/// Longest reason kept, in bytes: headers must fit in one frame with everything else.
const MAX_REASON_BYTES: usize = 1024;

/// AMQP delivery mode 2: parked messages survive a broker restart.
const PERSISTENT: u8 = 2;

/// Parks a delivery we could not process: republishes its body and properties to
/// `ris.dead` with the original headers plus [`HEADER_DEAD_REASON`],
/// [`HEADER_DEAD_SOURCE`] and [`HEADER_DEAD_AT`], waits for the confirm, then acks the
/// original. If the republish fails, rejects the original without requeue (the queue's
/// own dead-letter exchange catches it). Never panics on any input.
///
/// `Ok` means the delivery is settled (acked or rejected); `Err` means settling it failed
/// too (the channel is gone), and the broker will redeliver it.
///
/// Two properties are not carried over: `expiration` (a parked message must not expire)
/// and `user_id` (the broker would refuse it from another user; it goes to
/// [`HEADER_DEAD_USER`] instead).
#[tracing::instrument(skip(publisher, delivery), fields(routing_key = %delivery.routing_key))]
pub async fn dead_letter(
    publisher: &Publisher,
    delivery: &Delivery,
    source_queue: &str,
    reason: &str,
) -> Result<(), BrokerError> {
    tracing::warn!("dead-lettering message");
    let properties = parked_properties(&delivery.properties, source_queue, reason);
    let key = delivery.routing_key.as_str();
    let parked = publisher
        .publish_raw(DEAD_EXCHANGE, key, &delivery.data, properties, true)
        .await;
    match parked {
        Ok(()) => {
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
        Err(error) => {
            tracing::warn!(%error, "could not park on ris.dead; rejecting to the queue's dead-letter exchange");
            let options = BasicRejectOptions { requeue: false };
            delivery.acker.reject(options).await?;
        }
    }
    Ok(())
}

/// The original properties minus `expiration` and `user_id`, persistent, with the
/// dead-letter headers added to the original ones. Incoming `x-ris-dead-*` headers are
/// dropped first: only this function may set them (a publisher could otherwise forge
/// `x-ris-dead-user-id` and have a replay go out as another user).
fn parked_properties(original: &BasicProperties, source: &str, reason: &str) -> BasicProperties {
    let mut headers = lapin::types::FieldTable::default();
    for (name, value) in original.headers().iter().flat_map(|h| h.inner()) {
        if !name.as_str().starts_with("x-ris-dead-") {
            headers.insert(name.clone(), value.clone());
        }
    }
    let mut put = |name: &str, value: &str| {
        headers.insert(ShortString::from(name), AMQPValue::LongString(value.into()));
    };
    put(HEADER_DEAD_REASON, truncate(reason, MAX_REASON_BYTES));
    put(HEADER_DEAD_SOURCE, source);
    put(HEADER_DEAD_AT, &chrono::Utc::now().to_rfc3339());
    if let Some(user) = original.user_id() {
        put(HEADER_DEAD_USER, user.as_str());
    }
    copy_properties(original, headers)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn copy_properties(original: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut props = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(PERSISTENT);
    let o = original;
    if let Some(v) = o.content_type() {
        props = props.with_content_type(v.clone());
    }
    if let Some(v) = o.content_encoding() {
        props = props.with_content_encoding(v.clone());
    }
    if let Some(v) = o.priority() {
        props = props.with_priority(*v);
    }
    if let Some(v) = o.correlation_id() {
        props = props.with_correlation_id(v.clone());
    }
    if let Some(v) = o.reply_to() {
        props = props.with_reply_to(v.clone());
    }
    if let Some(v) = o.message_id() {
        props = props.with_message_id(v.clone());
    }
    if let Some(v) = o.timestamp() {
        props = props.with_timestamp(*v);
    }
    if let Some(v) = o.kind() {
        props = props.with_type(v.clone());
    }
    if let Some(v) = o.app_id() {
        props = props.with_app_id(v.clone());
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_properties_keep_headers_and_drop_expiration_and_user() {
        let mut headers = FieldTable::default();
        headers.insert("x-orig".into(), AMQPValue::LongString("1".into()));
        let original = BasicProperties::default()
            .with_headers(headers)
            .with_expiration("100".into())
            .with_user_id("ris.t.agent.x".into())
            .with_message_id("m-1".into());
        let parked = parked_properties(&original, "ris.submit", &"é".repeat(10_000));
        let h = parked.headers().clone().unwrap();
        for name in [
            "x-orig",
            HEADER_DEAD_REASON,
            HEADER_DEAD_SOURCE,
            HEADER_DEAD_AT,
        ] {
            assert!(h.contains_key(name), "{name}");
        }
        assert!(h.contains_key(HEADER_DEAD_USER));
        assert_eq!(parked.expiration(), &None);
        assert_eq!(parked.user_id(), &None);
        assert_eq!(parked.message_id().as_ref().unwrap().as_str(), "m-1");
        assert_eq!(parked.delivery_mode(), &Some(PERSISTENT));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("éé", 3), "é");
        assert_eq!(truncate("", 0), "");
    }
}
