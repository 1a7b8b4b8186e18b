//! Dead letters: messages parked on a tenant's `ris.dead` queue, as stored and as
//! `GET /v1/dead-letters` shows them.
//!
//! A dead letter keeps everything needed to replay it: the original exchange and
//! routing key, the AMQP properties ([`MessageProperties`]), the headers (as JSON) and
//! the body (bytes; shown as text when it is UTF-8, else as base64).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

crate::ids::uuid_id!(
    /// Identifies a dead letter (time-ordered UUIDv7).
    DeadLetterId
);

/// AMQP message headers as JSON: strings stay strings, numbers numbers, tables objects,
/// arrays arrays; byte arrays become base64 strings; timestamps become seconds since
/// the epoch; `void` is `null`.
pub type Headers = BTreeMap<String, serde_json::Value>;

/// The AMQP basic properties of a message (headers apart), each absent when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MessageProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// 1 transient, 2 persistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_mode: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds, as AMQP carries it (a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The broker user that published the message (RabbitMQ validates it). For a
    /// message the platform parked itself this comes from `x-ris-dead-user-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
}

/// A dead letter, in `GET /v1/dead-letters` and its siblings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetterView {
    pub id: DeadLetterId,
    /// The queue the message was taken from (`ris.submit`, `ris.results`,
    /// `ris.agent.<id>`, ...).
    pub source_queue: String,
    /// Why it was parked: the consumer's explanation, or the broker's reason
    /// (`rejected`, `expired`, `maxlen`, `delivery_limit`).
    pub reason: String,
    /// The exchange a replay publishes to: where the message was first published
    /// (empty when unknown: such a dead letter cannot be replayed).
    pub exchange: String,
    /// The routing key a replay publishes with.
    pub routing_key: String,
    pub headers: Headers,
    pub properties: MessageProperties,
    /// The body, when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body in standard base64 (with padding), when it is not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    pub dead_at: DateTime<Utc>,
    /// The latest replay, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_at: Option<DateTime<Utc>>,
    pub replay_count: u32,
}

/// `(body, body_base64)` of a [`DeadLetterView`]: exactly one is set.
pub fn body_fields(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(base64(bytes))),
    }
}

/// Standard base64 (RFC 4648 §4) with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn body_is_text_when_utf8_else_base64() {
        assert_eq!(body_fields(b"hello"), (Some("hello".into()), None));
        assert_eq!(body_fields(b"\x00\x01\xff"), (None, Some("AAH/".into())));
    }

    #[test]
    fn view_round_trip() {
        let view = DeadLetterView {
            id: DeadLetterId::new(),
            source_queue: "ris.submit".into(),
            reason: "unparseable submission".into(),
            exchange: "ris.submit".into(),
            routing_key: String::new(),
            headers: [("x-ris-dead-reason".to_owned(), serde_json::json!("x"))].into(),
            properties: MessageProperties {
                content_type: Some("application/json".into()),
                kind: Some("t".into()),
                timestamp: Some(1),
                ..MessageProperties::default()
            },
            body: Some("{".into()),
            body_base64: None,
            dead_at: Utc::now(),
            replayed_at: None,
            replay_count: 0,
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["properties"]["type"], "t");
        assert!(json.get("body_base64").is_none());
        assert_eq!(
            serde_json::from_value::<DeadLetterView>(json).unwrap(),
            view
        );
        let id: DeadLetterId = view.id.to_string().parse().unwrap();
        assert_eq!(id, view.id);
    }
}
