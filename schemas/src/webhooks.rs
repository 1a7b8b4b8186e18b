//! Outbound webhooks: `POST /v1/webhooks` bodies and the views of webhooks and their
//! deliveries.
//!
//! A webhook subscribes a URL to events of its tenant by topic pattern, with the
//! semantics of the `ris.events` topic exchange ([`EventPattern::matches`]): words
//! separated by `.`, `*` stands for exactly one word, `#` for zero or more. Every
//! delivery is signed with the webhook's secret (see `RIS-Signature` in
//! `docs/architecture.md`); the secret is write-only.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::InvalidName;
use crate::task::HttpUrl;

crate::ids::uuid_id!(
    /// Identifies a webhook (time-ordered UUIDv7).
    WebhookId
);
crate::ids::uuid_id!(
    /// Identifies one delivery: one event to one webhook, however many attempts it
    /// takes. Sent as `RIS-Delivery-Id`, so receivers can deduplicate.
    DeliveryId
);

/// Patterns a webhook may hold.
pub const MAX_PATTERNS: usize = 32;
/// Longest pattern (an AMQP routing key is at most 255 bytes).
pub const MAX_PATTERN_LEN: usize = 255;
/// Secret length bounds, in characters.
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;

/// An event topic pattern: `.`-separated words, each `*`, `#` or 1+ of
/// `[a-z0-9_-]`. `task.completed`, `task.*`, `#`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(
    with = "String",
    extend("pattern" = r"^(\*|#|[a-z0-9_-]+)(\.(\*|#|[a-z0-9_-]+))*$", "maxLength" = 255)
)]
pub struct EventPattern(String);

impl EventPattern {
    pub fn parse(s: &str) -> Result<Self, InvalidName> {
        if s.is_empty() || s.len() > MAX_PATTERN_LEN {
            return Err(InvalidName(format!(
                "event pattern must be 1 to {MAX_PATTERN_LEN} characters"
            )));
        }
        let word_ok = |w: &str| {
            w == "*"
                || w == "#"
                || (!w.is_empty()
                    && w.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    }))
        };
        if !s.split('.').all(word_ok) {
            return Err(InvalidName(format!(
                "invalid event pattern `{s}`: use `.`-separated words of [a-z0-9_-], `*` or `#`"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether an event with this routing key (`task.completed`) matches, as the topic
    /// exchange would route it.
    pub fn matches(&self, key: &str) -> bool {
        let pattern: Vec<&str> = self.0.split('.').collect();
        let key: Vec<&str> = key.split('.').collect();
        topic_match(&pattern, &key)
    }
}

fn topic_match(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| topic_match(rest, &key[skip..])),
        Some((word, rest)) => match key.split_first() {
            Some((k, key_rest)) => (*word == "*" || word == k) && topic_match(rest, key_rest),
            None => false,
        },
    }
}

impl TryFrom<String> for EventPattern {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<EventPattern> for String {
    fn from(p: EventPattern) -> Self {
        p.0
    }
}

/// 1 to [`MAX_PATTERNS`] patterns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "Vec<EventPattern>", into = "Vec<EventPattern>")]
#[schemars(with = "Vec<EventPattern>", extend("minItems" = 1, "maxItems" = 32))]
pub struct EventPatterns(Vec<EventPattern>);

impl EventPatterns {
    pub fn as_slice(&self) -> &[EventPattern] {
        &self.0
    }

    /// Whether any pattern matches the routing key.
    pub fn matches(&self, key: &str) -> bool {
        self.0.iter().any(|p| p.matches(key))
    }
}

impl TryFrom<Vec<EventPattern>> for EventPatterns {
    type Error = InvalidName;
    fn try_from(v: Vec<EventPattern>) -> Result<Self, Self::Error> {
        if v.is_empty() || v.len() > MAX_PATTERNS {
            return Err(InvalidName(format!(
                "give 1 to {MAX_PATTERNS} event patterns"
            )));
        }
        Ok(Self(v))
    }
}

impl From<EventPatterns> for Vec<EventPattern> {
    fn from(p: EventPatterns) -> Self {
        p.0
    }
}

/// A webhook's signing secret; never shown, not even in `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(try_from = "String")]
#[schemars(with = "String", extend("minLength" = 16, "maxLength" = 256))]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl TryFrom<String> for WebhookSecret {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if SECRET_LEN.contains(&s.chars().count()) {
            Ok(Self(s))
        } else {
            Err(InvalidName(format!(
                "secret must be {} to {} characters",
                SECRET_LEN.start(),
                SECRET_LEN.end()
            )))
        }
    }
}

/// `POST /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where deliveries are POSTed (`http` or `https`).
    pub url: HttpUrl,
    /// Topic patterns of the events to deliver.
    pub events: EventPatterns,
    /// Signs every delivery (HMAC-SHA256). Write-only.
    pub secret: WebhookSecret,
}

/// A webhook, as the API shows it (never with its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookView {
    pub id: WebhookId,
    pub url: HttpUrl,
    pub events: EventPatterns,
    pub created_at: DateTime<Utc>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not attempted yet (or redelivery requested).
    Pending,
    /// Accepted by the receiver (2xx).
    Succeeded,
    /// The latest attempt failed; another is due at `next_attempt_at`.
    Failed,
    /// Every attempt failed; no more are made unless redelivery is requested.
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Dead => "dead",
        }
    }
}

impl FromStr for DeliveryStatus {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            "dead" => Ok(Self::Dead),
            other => Err(InvalidName(format!("unknown delivery status `{other}`"))),
        }
    }
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryAttemptView {
    /// 1 for the first attempt; keeps counting across redeliveries.
    pub attempt: u32,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<u16>,
    /// Why the attempt failed, when it did not get an answer or got a non-2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// One event to one webhook, in `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryView {
    pub id: DeliveryId,
    pub webhook_id: WebhookId,
    pub event_id: Uuid,
    /// The event's type (`task.completed`), also its routing key.
    pub event_type: String,
    /// Attempts made so far.
    pub attempt: u32,
    pub status: DeliveryStatus,
    /// Of the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<u16>,
    /// Of the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// While `pending` or `failed`: when the next attempt is due (or, while an attempt
    /// is in flight, when it may be retried if its sender vanished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first.
    pub attempts: Vec<DeliveryAttemptView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> EventPattern {
        EventPattern::parse(s).unwrap()
    }

    #[test]
    fn patterns_match_like_a_topic_exchange() {
        assert!(p("task.completed").matches("task.completed"));
        assert!(!p("task.completed").matches("task.failed"));
        assert!(p("task.*").matches("task.queued"));
        assert!(!p("task.*").matches("task"));
        assert!(!p("task.*").matches("task.a.b"));
        assert!(p("#").matches("agent.online"));
        assert!(p("task.#").matches("task"));
        assert!(p("task.#").matches("task.a.b"));
        assert!(p("#.completed").matches("task.completed"));
        assert!(!p("agent.*").matches("task.completed"));
        assert!(p("*.online").matches("agent.online"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "task.", ".task", "Task.x", "task..x", "task.c*", "a b"] {
            assert!(EventPattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<EventPatterns>("[]").is_err());
    }

    #[test]
    fn create_is_validated() {
        let ok = r##"{"url":"https://example.com/h","events":["task.*","#"],"secret":"0123456789abcdef"}"##;
        let body: CreateWebhook = serde_json::from_str(ok).unwrap();
        assert_eq!(body.events.as_slice().len(), 2);
        assert_eq!(format!("{:?}", body.secret), "WebhookSecret(..)");
        let short = r##"{"url":"https://example.com","events":["#"],"secret":"short"}"##;
        assert!(serde_json::from_str::<CreateWebhook>(short).is_err());
        let ftp = r##"{"url":"ftp://example.com","events":["#"],"secret":"0123456789abcdef"}"##;
        assert!(serde_json::from_str::<CreateWebhook>(ftp).is_err());
    }

    #[test]
    fn delivery_view_round_trip() {
        let view = DeliveryView {
            id: DeliveryId::new(),
            webhook_id: WebhookId::new(),
            event_id: Uuid::now_v7(),
            event_type: "task.completed".into(),
            attempt: 1,
            status: DeliveryStatus::Failed,
            response_status: Some(500),
            error: None,
            next_attempt_at: Some(Utc::now()),
            attempts: vec![DeliveryAttemptView {
                attempt: 1,
                response_status: Some(500),
                error: Some("HTTP 500".into()),
                at: Utc::now(),
            }],
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["status"], "failed");
        assert!(json.get("error").is_none());
        assert_eq!(serde_json::from_value::<DeliveryView>(json).unwrap(), view);
        for s in ["pending", "succeeded", "failed", "dead"] {
            assert_eq!(s.parse::<DeliveryStatus>().unwrap().as_str(), s);
        }
    }
}
