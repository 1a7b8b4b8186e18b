//! Dead letters from `ris.dead`, moved into PostgreSQL where the API lists, replays and
//! discards them.
//!
//! A message reaches `ris.dead` in one of two ways. Our consumers park what they cannot
//! process with `x-ris-dead-*` headers (see [`ris_broker::dead_letter`]); the broker
//! dead-letters what an agent rejected, what expired and what went past a quorum
//! queue's delivery limit, with an `x-death` header (newest death first) and
//! `x-first-death-*`. [`parse`] reads either into a [`NewDeadLetter`], including where
//! a replay should publish it. Each message is stored (retrying while the database is
//! down), then acked; one that cannot be stored at all is logged and acked anyway — it
//! is already a dead letter, and holding it would block the queue. Nothing here fails
//! on input: unexpected header shapes fall back to defaults.

use chrono::{DateTime, Utc};
use ris_broker::lapin::message::Delivery;
use ris_broker::lapin::types::{AMQPValue, FieldTable};
use ris_broker::lapin::BasicProperties;
use ris_broker::{
    Publisher, HEADER_DEAD_AT, HEADER_DEAD_REASON, HEADER_DEAD_SOURCE, HEADER_DEAD_USER,
    RESULTS_EXCHANGE, RESULTS_QUEUE, SUBMIT_EXCHANGE, SUBMIT_QUEUE,
};
use ris_schemas::dead_letters::{base64, Headers, MessageProperties};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::messages::AgentMessage;
use ris_store::{NewDeadLetter, TenantCtx};
use serde_json::Value;

use crate::context::Context;
use crate::retry::{until_ok, Stop};
use crate::submit::{ack, Handled};

/// Unacked deliveries of `ris.dead` in flight (and handled at once) per tenant: dead
/// letters are rare, and each costs one insert.
pub const PREFETCH: u16 = 64;

/// Reasons the broker gives in `x-death` (anything else is counted as `other`).
const BROKER_REASONS: [&str; 4] = ["rejected", "expired", "maxlen", "delivery_limit"];

/// A task assignment that expired unread in its agent's queue: that attempt never
/// reached the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiredAssignment {
    pub task_id: TaskId,
    pub attempt: u32,
    pub agent_id: AgentId,
}

#[tracing::instrument(skip_all, fields(tenant = %tenant.name, source_queue, dead_letter))]
pub async fn handle(
    ctx: &Context,
    tenant: &TenantCtx,
    publisher: &Publisher,
    delivery: Delivery,
) -> Handled {
    let mut letter = parse(
        delivery.routing_key.as_str(),
        &delivery.properties,
        &delivery.data,
        Utc::now(),
    );
    if let Some(reason) = crate::signing::refused_signature(
        ctx,
        &tenant.name,
        &letter,
        &delivery.properties,
        &delivery.data,
    )
    .await
    {
        tracing::warn!(source_queue = %letter.source_queue, "an agent refused a message with a bad or missing signature");
        letter.reason = reason.to_owned();
    }
    let span = tracing::Span::current();
    span.record("source_queue", letter.source_queue.as_str());
    let cause = cause(&delivery.properties, &letter);
    let stored = until_ok("insert_dead_letter", &ctx.shutdown, || {
        ctx.store.insert_dead_letter(tenant, letter.clone())
    })
    .await;
    match stored {
        Ok(record) => {
            span.record("dead_letter", tracing::field::display(record.id));
            tracing::info!(reason = %letter.reason, "dead letter stored");
            metrics::counter!("ris_dead_letters_stored_total", "cause" => cause).increment(1);
        }
        Err(Stop::Shutdown) => return Handled::Released,
        Err(Stop::Failed(err)) => {
            tracing::error!(error = %err, reason = %letter.reason, "dead letter could not be stored; dropping it");
            metrics::counter!("ris_dead_letters_dropped_total").increment(1);
        }
    }
    if let Some(expired) = classify(&letter) {
        tracing::info!(
            task_id = %expired.task_id,
            attempt = expired.attempt,
            agent_id = %expired.agent_id,
            "assignment expired before its agent took it"
        );
        let lapsed = crate::recovery::assignment_lapsed(
            ctx,
            tenant,
            publisher,
            expired.task_id,
            expired.attempt,
        );
        if let Err(crate::retry::Stop::Shutdown) = lapsed.await {
            return Handled::Released; // handled again after a restart
        }
    }
    ack(&delivery).await
}

/// A task assignment (`task.assign`) that expired (broker reason `expired`) in the
/// agent queue `ris.agent.<id>` of the agent it names.
pub fn classify(letter: &NewDeadLetter) -> Option<ExpiredAssignment> {
    if letter.reason != "expired" {
        return None;
    }
    let queue_agent: AgentId = letter
        .source_queue
        .strip_prefix("ris.agent.")?
        .parse()
        .ok()?;
    let Ok(AgentMessage::Assign(a)) = serde_json::from_slice::<AgentMessage>(&letter.body) else {
        return None;
    };
    (a.agent_id == queue_agent).then_some(ExpiredAssignment {
        task_id: a.task_id,
        attempt: a.attempt,
        agent_id: a.agent_id,
    })
}

/// Reads a delivery from `ris.dead` (its routing key, properties and body) into a dead
/// letter. `now` is its time when no header tells when it died.
///
/// - Source queue and reason: our `x-ris-dead-*` headers, else the newest `x-death`
///   entry, else `x-first-death-*`.
/// - Exchange and routing key for replays: `ris.submit` for `ris.submit`; for
///   `ris.results` the `ris.results` exchange with the reporting agent's id (recovered
///   from `x-ris-dead-user-id`) as key; for any other queue, what `x-death` says; else
///   none (not replayable). The routing key falls back to the delivery's, which
///   dead-lettering preserves.
/// - Properties: all of them; `user_id`, which parking moves to `x-ris-dead-user-id`,
///   is restored from there. Headers: all of them, as JSON.
pub fn parse(
    routing_key: &str,
    properties: &BasicProperties,
    body: &[u8],
    now: DateTime<Utc>,
) -> NewDeadLetter {
    let empty = FieldTable::default();
    let headers = properties.headers().as_ref().unwrap_or(&empty);
    let header = |name: &str| text(headers.inner().get(name));
    let death = newest_death(headers);
    let from_death = |field: &str| death.and_then(|d| text(d.inner().get(field)));
    let source_queue = header(HEADER_DEAD_SOURCE)
        .or_else(|| from_death("queue"))
        .or_else(|| header("x-first-death-queue"))
        .unwrap_or_default();
    let reason = header(HEADER_DEAD_REASON)
        .or_else(|| from_death("reason"))
        .or_else(|| header("x-first-death-reason"))
        .unwrap_or_else(|| "unknown".to_owned());
    let dead_user = header(HEADER_DEAD_USER);
    let (exchange, routing_key) = origin(&source_queue, death, routing_key, dead_user.as_deref());
    let dead_at = header(HEADER_DEAD_AT)
        .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
        .map(|at| at.with_timezone(&Utc))
        .or_else(|| match death?.inner().get("time")? {
            AMQPValue::Timestamp(secs) => DateTime::from_timestamp(i64::try_from(*secs).ok()?, 0),
            _ => None,
        })
        .unwrap_or(now);
    let mut properties = message_properties(properties);
    if properties.user_id.is_none() {
        properties.user_id = dead_user;
    }
    NewDeadLetter {
        source_queue,
        reason,
        exchange,
        routing_key,
        headers: headers
            .inner()
            .iter()
            .map(|(k, v)| (k.to_string(), json(v)))
            .collect::<Headers>(),
        properties,
        body: body.to_vec(),
        dead_at,
    }
}

/// Where a replay should publish the message: `(exchange, routing key)`.
///
/// The work queues' own exchanges come first: a message taken from `ris.submit` goes
/// back to `ris.submit` even if an older `x-death` (it was moved there by hand, say)
/// names another exchange.
fn origin(
    source: &str,
    death: Option<&FieldTable>,
    key: &str,
    dead_user: Option<&str>,
) -> (String, String) {
    match source {
        SUBMIT_QUEUE => (SUBMIT_EXCHANGE.to_owned(), key.to_owned()),
        RESULTS_QUEUE => {
            let agent = dead_user.and_then(agent_of_user);
            let key = agent.map_or_else(|| key.to_owned(), |a| a.to_string());
            (RESULTS_EXCHANGE.to_owned(), key)
        }
        _ => match death.and_then(|d| text(d.inner().get("exchange"))) {
            Some(exchange) => {
                let first_key = match death.and_then(|d| d.inner().get("routing-keys")) {
                    Some(AMQPValue::FieldArray(keys)) => text(keys.as_slice().first()),
                    _ => None,
                };
                (exchange, first_key.unwrap_or_else(|| key.to_owned()))
            }
            None => (String::new(), key.to_owned()),
        },
    }
}

/// The agent of an agent broker user `ris.<tenant>.agent.<uuid>`.
fn agent_of_user(user: &str) -> Option<AgentId> {
    let (_tenant, rest) = user.strip_prefix("ris.")?.split_once('.')?;
    rest.strip_prefix("agent.")?.parse().ok()
}

/// The newest entry of `x-death`, if the header has the expected shape.
fn newest_death(headers: &FieldTable) -> Option<&FieldTable> {
    match headers.inner().get("x-death")? {
        AMQPValue::FieldArray(deaths) => match deaths.as_slice().first()? {
            AMQPValue::FieldTable(death) => Some(death),
            _ => None,
        },
        _ => None,
    }
}

/// A string-valued header.
fn text(value: Option<&AMQPValue>) -> Option<String> {
    match value? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// For the metric: `consumer` when one of ours parked it, else the broker's reason.
fn cause(properties: &BasicProperties, letter: &NewDeadLetter) -> &'static str {
    let ours = properties
        .headers()
        .as_ref()
        .is_some_and(|h| text(h.inner().get(HEADER_DEAD_SOURCE)).is_some());
    if ours {
        return "consumer";
    }
    BROKER_REASONS
        .into_iter()
        .find(|r| *r == letter.reason)
        .unwrap_or("other")
}

/// An AMQP field value as JSON (see [`Headers`]).
fn json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::from(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(f) => Value::from(*f),
        AMQPValue::Double(f) => Value::from(*f),
        AMQPValue::DecimalValue(d) => {
            Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(json).collect()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner()
                .iter()
                .map(|(k, v)| (k.to_string(), json(v)))
                .collect(),
        ),
        AMQPValue::ByteArray(b) => Value::from(base64(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

fn message_properties(p: &BasicProperties) -> MessageProperties {
    let s = |v: &Option<ris_broker::lapin::types::ShortString>| v.as_ref().map(|v| v.to_string());
    MessageProperties {
        content_type: s(p.content_type()),
        content_encoding: s(p.content_encoding()),
        delivery_mode: *p.delivery_mode(),
        priority: *p.priority(),
        correlation_id: s(p.correlation_id()),
        reply_to: s(p.reply_to()),
        expiration: s(p.expiration()),
        message_id: s(p.message_id()),
        timestamp: *p.timestamp(),
        kind: s(p.kind()),
        user_id: s(p.user_id()),
        app_id: s(p.app_id()),
    }
}

#[cfg(test)]
mod tests {
    use ris_broker::lapin::types::{FieldArray, LongString};
    use ris_schemas::messages::Assignment;
    use ris_schemas::task::{NoopSpec, TaskSpec};
    use ris_schemas::version::V1;

    use super::*;

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn x_death(queue: &str, reason: &str, exchange: &str, key: &str) -> AMQPValue {
        let death = table(&[
            ("queue", long(queue)),
            ("reason", long(reason)),
            ("exchange", long(exchange)),
            (
                "routing-keys",
                AMQPValue::FieldArray(FieldArray::from(vec![long(key)])),
            ),
            ("count", AMQPValue::LongLongInt(1)),
            ("time", AMQPValue::Timestamp(1_700_000_000)),
        ]);
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)]))
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn parked_by_a_consumer() {
        let agent = AgentId::new();
        let headers = table(&[
            (HEADER_DEAD_SOURCE, long(RESULTS_QUEUE)),
            (HEADER_DEAD_REASON, long("unparseable report: eof")),
            (HEADER_DEAD_AT, long("2026-01-02T03:04:05.123456Z")),
            (HEADER_DEAD_USER, long(&format!("ris.acme.agent.{agent}"))),
            ("x-custom", AMQPValue::LongLongInt(7)),
        ]);
        let props = BasicProperties::default()
            .with_headers(headers)
            .with_message_id("m-1".into())
            .with_content_type("application/json".into())
            .with_timestamp(1_700_000_000);
        let letter = parse("whatever", &props, b"{", now());
        assert_eq!(letter.source_queue, RESULTS_QUEUE);
        assert_eq!(letter.reason, "unparseable report: eof");
        assert_eq!(letter.exchange, RESULTS_EXCHANGE);
        assert_eq!(letter.routing_key, agent.to_string());
        assert_eq!(
            letter.dead_at.to_rfc3339(),
            "2026-01-02T03:04:05.123456+00:00"
        );
        assert_eq!(
            letter.properties.user_id,
            Some(format!("ris.acme.agent.{agent}"))
        );
        assert_eq!(letter.properties.message_id.as_deref(), Some("m-1"));
        assert_eq!(letter.properties.timestamp, Some(1_700_000_000));
        assert_eq!(letter.headers["x-custom"], serde_json::json!(7));
        assert_eq!(letter.body, b"{");
        assert_eq!(cause(&props, &letter), "consumer");
        assert_eq!(classify(&letter), None);
    }

    #[test]
    fn parked_submission_keeps_its_routing_key() {
        let headers = table(&[
            (HEADER_DEAD_SOURCE, long(SUBMIT_QUEUE)),
            (HEADER_DEAD_REASON, long("submission refused")),
        ]);
        let props = BasicProperties::default().with_headers(headers);
        let letter = parse("key-1", &props, b"x", now());
        assert_eq!(
            (letter.exchange.as_str(), letter.routing_key.as_str()),
            (SUBMIT_EXCHANGE, "key-1")
        );
        assert_eq!(letter.dead_at, now());
    }

    #[test]
    fn dead_lettered_by_the_broker() {
        let headers = table(&[
            (
                "x-death",
                x_death(SUBMIT_QUEUE, "delivery_limit", SUBMIT_EXCHANGE, "rk"),
            ),
            ("x-first-death-queue", long("elsewhere")),
            ("x-first-death-reason", long("rejected")),
        ]);
        let props = BasicProperties::default()
            .with_headers(headers)
            .with_user_id("guest".into());
        let letter = parse("rk", &props, b"poison", now());
        assert_eq!(letter.source_queue, SUBMIT_QUEUE);
        assert_eq!(letter.reason, "delivery_limit");
        assert_eq!(letter.exchange, SUBMIT_EXCHANGE);
        assert_eq!(letter.routing_key, "rk");
        assert_eq!(letter.dead_at.timestamp(), 1_700_000_000);
        assert_eq!(letter.properties.user_id.as_deref(), Some("guest"));
        assert_eq!(letter.headers["x-death"][0]["reason"], "delivery_limit");
        assert_eq!(letter.headers["x-death"][0]["count"], 1);
        assert_eq!(cause(&props, &letter), "delivery_limit");
    }

    #[test]
    fn the_work_queue_wins_over_a_stale_x_death() {
        let headers = table(&[
            (HEADER_DEAD_SOURCE, long(SUBMIT_QUEUE)),
            (HEADER_DEAD_REASON, long("unparseable submission")),
            (
                "x-death",
                x_death("ris.agent.x", "expired", "ris.agents", "x"),
            ),
        ]);
        let props = BasicProperties::default().with_headers(headers);
        let letter = parse("", &props, b"", now());
        assert_eq!(
            (letter.source_queue.as_str(), letter.reason.as_str()),
            (SUBMIT_QUEUE, "unparseable submission")
        );
        assert_eq!(
            (letter.exchange.as_str(), letter.routing_key.as_str()),
            (SUBMIT_EXCHANGE, "")
        );
    }

    #[test]
    fn first_death_headers_are_the_last_resort() {
        let headers = table(&[
            ("x-first-death-queue", long("ris.agent.x")),
            ("x-first-death-reason", long("maxlen")),
        ]);
        let props = BasicProperties::default().with_headers(headers);
        let letter = parse("", &props, b"", now());
        assert_eq!(letter.source_queue, "ris.agent.x");
        assert_eq!(letter.reason, "maxlen");
        assert_eq!(letter.exchange, "");
    }

    #[test]
    fn odd_headers_fall_back_to_defaults() {
        for headers in [
            None,
            Some(table(&[("x-death", long("not an array"))])),
            Some(table(&[(
                "x-death",
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Void])),
            )])),
            Some(table(&[
                (HEADER_DEAD_SOURCE, AMQPValue::Boolean(true)),
                (HEADER_DEAD_AT, long("yesterday")),
                ("bytes", AMQPValue::ByteArray(vec![0u8, 1, 255].into())),
            ])),
        ] {
            let mut props = BasicProperties::default();
            if let Some(h) = headers {
                props = props.with_headers(h);
            }
            let letter = parse("k", &props, b"\xff", now());
            assert_eq!(letter.source_queue, "");
            assert_eq!(letter.reason, "unknown");
            assert_eq!(
                (letter.exchange.as_str(), letter.routing_key.as_str()),
                ("", "k")
            );
            assert_eq!(letter.dead_at, now());
            assert_eq!(cause(&props, &letter), "other");
        }
    }

    fn assignment(agent: AgentId) -> Vec<u8> {
        serde_json::to_vec(&AgentMessage::Assign(Assignment {
            v: V1,
            task_id: TaskId::new(),
            attempt: 2,
            agent_id: agent,
            task: TaskSpec::Noop(NoopSpec {}),
            timeout_secs: 60,
            output_cap_bytes: 1024,
            assigned_at: Utc::now(),
        }))
        .unwrap()
    }

    #[test]
    fn an_expired_assignment_is_recognised() {
        let agent = AgentId::new();
        let queue = format!("ris.agent.{agent}");
        let body = assignment(agent);
        let headers = table(&[(
            "x-death",
            x_death(&queue, "expired", "ris.agents", &agent.to_string()),
        )]);
        let props = BasicProperties::default().with_headers(headers);
        let letter = parse(&agent.to_string(), &props, &body, now());
        assert_eq!(
            (letter.exchange.as_str(), letter.reason.as_str()),
            ("ris.agents", "expired")
        );
        let expired = classify(&letter).unwrap();
        assert_eq!(expired.agent_id, agent);
        assert_eq!(expired.attempt, 2);

        // Not: another reason, the control queue, another agent's queue, another body.
        let other = AgentId::new();
        let cases = [
            NewDeadLetter {
                reason: "rejected".into(),
                ..letter.clone()
            },
            NewDeadLetter {
                source_queue: format!("{queue}.ctl"),
                ..letter.clone()
            },
            NewDeadLetter {
                source_queue: format!("ris.agent.{other}"),
                ..letter.clone()
            },
            NewDeadLetter {
                body: b"{}".to_vec(),
                ..letter.clone()
            },
            NewDeadLetter {
                source_queue: SUBMIT_QUEUE.into(),
                ..letter.clone()
            },
        ];
        for case in cases {
            assert_eq!(classify(&case), None, "{case:?}");
        }
    }

    #[test]
    fn agent_users() {
        let agent = AgentId::new();
        assert_eq!(
            agent_of_user(&format!("ris.acme.agent.{agent}")),
            Some(agent)
        );
        assert_eq!(agent_of_user("guest"), None);
        assert_eq!(agent_of_user("ris.acme.agent.nope"), None);
        assert_eq!(agent_of_user(&format!("ris.acme.admin.{agent}")), None);
    }
}
