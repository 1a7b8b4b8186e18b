//! Live subscriptions to a tenant's `ris.events` exchange, for `GET /v1/events/stream`.
//!
//! Each subscription is one channel with its own server-named, exclusive, auto-delete
//! queue bound to `ris.events` with the caller's topic patterns. The channels of a tenant
//! share one admin connection to its vhost ([`EventStreams`]), separate from the
//! publisher's: a slow or broken stream must never touch the confirm channel submissions
//! go through. Tenant isolation comes from the vhost: a connection sees only its own.

use std::collections::HashMap;
use std::sync::Arc;

use ris_broker::lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use ris_broker::lapin::types::{AMQPValue, FieldTable};
use ris_broker::lapin::{Channel, Connection, Consumer};
use ris_broker::{BrokerConfig, BrokerError, EVENTS_EXCHANGE};
use ris_schemas::ids::TenantName;
use tokio::sync::Mutex;

/// An AMQP topic pattern over the event routing key (`task.*`, `agent.offline`, `#`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern(String);

/// Most patterns one stream may bind (each is a binding on the broker).
pub const MAX_PATTERNS: usize = 16;
/// Longest pattern accepted (routing keys are short strings anyway).
const MAX_PATTERN_LEN: usize = 100;

impl TopicPattern {
    /// `[a-z_*#.]`, non-empty, at most 100 bytes.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("a pattern may not be empty".to_owned());
        }
        if raw.len() > MAX_PATTERN_LEN {
            return Err(format!("a pattern is at most {MAX_PATTERN_LEN} characters"));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || matches!(c, '_' | '*' | '#' | '.')))
        {
            return Err(format!(
                "`{raw}` contains `{bad}`: patterns use a-z, `_`, `.`, `*` and `#`"
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A comma-separated list (`task.*,agent.offline`); `None` means everything (`#`).
    pub fn parse_list(raw: Option<&str>) -> Result<Vec<Self>, String> {
        let Some(raw) = raw else {
            return Ok(vec![Self("#".to_owned())]);
        };
        let patterns = raw
            .split(',')
            .map(|p| Self::parse(p.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.len() > MAX_PATTERNS {
            return Err(format!("at most {MAX_PATTERNS} patterns"));
        }
        Ok(patterns)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A pattern the API itself binds (a routing key it knows is valid).
    pub(crate) fn fixed(raw: &'static str) -> Self {
        Self(raw.to_owned())
    }
}

/// One shared consumer connection per tenant vhost, opened on first use and replaced
/// when it breaks.
#[derive(Default)]
pub struct EventStreams {
    connections: Mutex<HashMap<TenantName, Arc<Connection>>>,
}

impl EventStreams {
    /// Opens a subscription to the tenant's events matching any of `patterns`.
    pub async fn subscribe(
        &self,
        config: &BrokerConfig,
        tenant: &TenantName,
        patterns: &[TopicPattern],
    ) -> Result<Subscription, BrokerError> {
        let channel = self.channel(config, tenant).await?;
        let guard = ChannelGuard(channel.clone());
        let consumer = bind_and_consume(&channel, patterns).await?;
        Ok(Subscription {
            consumer,
            _guard: guard,
        })
    }

    /// A fresh channel on the tenant's connection, reconnecting once if it broke.
    async fn channel(
        &self,
        config: &BrokerConfig,
        tenant: &TenantName,
    ) -> Result<Channel, BrokerError> {
        let mut connections = self.connections.lock().await;
        if let Some(conn) = connections.get(tenant) {
            if conn.status().connected() {
                match conn.create_channel().await {
                    Ok(channel) => return Ok(channel),
                    Err(err) => tracing::info!(%tenant, error = %err, "event connection broken"),
                }
            }
            connections.remove(tenant);
        }
        let name = format!("ris-api events {tenant}");
        let conn = ris_broker::connect_admin(config, &tenant.vhost(), &name).await?;
        let channel = conn.create_channel().await?;
        connections.insert(tenant.clone(), Arc::new(conn));
        Ok(channel)
    }
}

/// Declares the subscriber's queue, binds it and starts consuming without acks.
async fn bind_and_consume(
    channel: &Channel,
    patterns: &[TopicPattern],
) -> Result<Consumer, BrokerError> {
    let options = QueueDeclareOptions {
        // Server-named, gone with this channel's connection (exclusive) and with its
        // consumer (auto-delete): nothing outlives the stream.
        exclusive: true,
        auto_delete: true,
        durable: false,
        ..QueueDeclareOptions::default()
    };
    let mut args = FieldTable::default();
    // Safety net: a queue left unused for a minute is deleted even if the above failed.
    args.insert("x-expires".into(), AMQPValue::LongInt(60_000));
    // A slow client loses its oldest events instead of growing the queue without bound.
    args.insert("x-max-length".into(), AMQPValue::LongInt(10_000));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    let queue = channel.queue_declare("".into(), options, args).await?;
    for pattern in patterns {
        channel
            .queue_bind(
                queue.name().clone(),
                EVENTS_EXCHANGE.into(),
                pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let options = BasicConsumeOptions {
        // A live view: an event lost with a dropped client is not redelivered anyway.
        no_ack: true,
        exclusive: true,
        ..BasicConsumeOptions::default()
    };
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "ris-api event stream".into(),
            options,
            FieldTable::default(),
        )
        .await?;
    Ok(consumer)
}

/// A live subscription: the deliveries, and the channel that is closed when this drops.
pub struct Subscription {
    pub consumer: Consumer,
    _guard: ChannelGuard,
}

/// Closes its channel when dropped (the client went away), which deletes the queue.
struct ChannelGuard(Channel);

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        let channel = self.0.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if channel.status().connected() {
                    // Gone either way; a close error says nothing useful.
                    drop(channel.close(200, "event stream closed".into()).await);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let all = TopicPattern::parse_list(None).unwrap();
        assert_eq!(all, vec![TopicPattern("#".to_owned())]);
        let two = TopicPattern::parse_list(Some("task.*,agent.offline")).unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].as_str(), "agent.offline");
        assert!(TopicPattern::parse_list(Some("task.timed_out,#")).is_ok());
        assert!(TopicPattern::parse_list(Some("Task.*")).is_err());
        assert!(TopicPattern::parse_list(Some("task.*,")).is_err());
        assert!(TopicPattern::parse_list(Some("task queued")).is_err());
        assert!(TopicPattern::parse_list(Some("")).is_err());
        let many = vec!["#"; MAX_PATTERNS + 1].join(",");
        assert!(TopicPattern::parse_list(Some(&many)).is_err());
    }
}
