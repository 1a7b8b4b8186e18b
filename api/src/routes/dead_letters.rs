//! Dead letters: `GET /v1/dead-letters`, `GET /v1/dead-letters/{id}`,
//! `POST /v1/dead-letters/{id}/replay`, `DELETE /v1/dead-letters/{id}`.
//!
//! The dispatcher moves every message that reaches a tenant's `ris.dead` queue into
//! PostgreSQL (see `ris_dispatcher::dead_letters`); here operators list them, discard
//! them, or replay one once its cause is fixed. A replay republishes the body and
//! properties to the original exchange and routing key, with confirm, as the platform's
//! broker user, and marks the dead letter replayed (it stays listed until deleted). If
//! the replayed message fails again it comes back as a new dead letter carrying
//! `x-ris-replay-of`.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use ris_broker::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use ris_broker::lapin::BasicProperties;
use ris_broker::BrokerError;
use ris_schemas::api::Page;
use ris_schemas::dead_letters::{body_fields, DeadLetterId, DeadLetterView};
use ris_store::{DeadLetterCursor, DeadLetterRecord};
use serde_json::Value;

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::parse_param;
use crate::pagination;
use crate::state::AppState;

/// Header set on a replayed message: the id of the dead letter it replays.
pub const HEADER_REPLAY_OF: &str = "x-ris-replay-of";

/// Headers describing a previous death, dropped on replay so that a new death is
/// described afresh (and not mistaken for the old one).
const DEATH_HEADERS: [&str; 8] = [
    "x-death",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-first-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-last-death-exchange",
    "x-delivery-count",
];

/// Prefix of the headers `ris_broker::dead_letter` adds when parking a message.
const PARKING_HEADER_PREFIX: &str = "x-ris-dead-";

/// AMQP delivery mode 2, for a replay whose original did not say.
const PERSISTENT: u8 = 2;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dead-letters", get(list))
        .route("/dead-letters/{id}", get(show).delete(remove))
        .route("/dead-letters/{id}/replay", post(replay))
}

fn view(d: DeadLetterRecord) -> DeadLetterView {
    let (body, body_base64) = body_fields(&d.body);
    DeadLetterView {
        id: d.id,
        source_queue: d.source_queue,
        reason: d.reason,
        exchange: d.exchange,
        routing_key: d.routing_key,
        headers: d.headers,
        properties: d.properties,
        body,
        body_base64,
        dead_at: d.dead_at,
        replayed_at: d.replayed_at,
        replay_count: d.replay_count,
    }
}

async fn list(
    State(state): State<AppState>,
    caller: TenantCaller,
    Query(params): Query<pagination::PageParams>,
) -> ApiResult<Json<Page<DeadLetterView>>> {
    let limit = pagination::limit(params.limit.as_deref())?;
    let cursor = pagination::cursor(params.cursor.as_deref(), DeadLetterCursor::decode)?;
    let letters = state
        .store
        .list_dead_letters(&caller.tenant, limit + 1, cursor.as_ref())
        .await?;
    let cursor_of = |d: &DeadLetterRecord| DeadLetterCursor::after(d).encode();
    Ok(Json(pagination::page(letters, limit, cursor_of, view)))
}

async fn find(state: &AppState, caller: &TenantCaller, id: &str) -> ApiResult<DeadLetterRecord> {
    let id: DeadLetterId = parse_param("id", id)?;
    state
        .store
        .get_dead_letter(&caller.tenant, id)
        .await?
        .ok_or(ApiError::not_found("dead letter"))
}

async fn show(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeadLetterView>> {
    Ok(Json(view(find(&state, &caller, &id).await?)))
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, dead_letter = %id))]
async fn remove(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: DeadLetterId = parse_param("id", &id)?;
    if !state.store.delete_dead_letter(&caller.tenant, id).await? {
        return Err(ApiError::not_found("dead letter"));
    }
    tracing::info!("dead letter discarded");
    Ok(StatusCode::NO_CONTENT)
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, dead_letter = %id))]
async fn replay(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<DeadLetterView>)> {
    let letter = find(&state, &caller, &id).await?;
    if letter.exchange.is_empty() {
        return Err(ApiError::conflict(
            "not_replayable",
            "where this message was first published is unknown, so it cannot be replayed",
        ));
    }
    let tenant = &caller.tenant;
    let properties = replay_properties(&letter, &state.config.broker.username);
    let publisher = state.brokers.publisher(&tenant.name).await?;
    let published = publisher
        .publish_raw(
            &letter.exchange,
            &letter.routing_key,
            &letter.body,
            properties,
            true,
        )
        .await;
    match published {
        Ok(()) => {}
        Err(BrokerError::Unroutable { .. }) => {
            return Err(ApiError::conflict(
                "unroutable",
                format!(
                    "no queue takes messages to `{}` with routing key `{}` any more",
                    letter.exchange, letter.routing_key
                ),
            ))
        }
        Err(err) => {
            state.brokers.forget(&tenant.name).await;
            return Err(err.into());
        }
    }
    metrics::counter!("ris_dead_letters_replayed_total").increment(1);
    tracing::info!(exchange = %letter.exchange, routing_key = %letter.routing_key, "dead letter replayed");
    // Deleted meanwhile: it was replayed all the same.
    let id = letter.id;
    let record = state
        .store
        .mark_replayed(tenant, id)
        .await?
        .unwrap_or(letter);
    Ok((StatusCode::ACCEPTED, Json(view(record))))
}

/// The original properties and headers, minus what described the previous death, plus
/// [`HEADER_REPLAY_OF`]. A `user_id` (an agent's) becomes `platform_user`: the broker
/// accepts only the connection's own user there, and the dispatcher accepts reports
/// from the platform's user. Persistent unless the original said otherwise.
fn replay_properties(letter: &DeadLetterRecord, platform_user: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in &letter.headers {
        let stale = DEATH_HEADERS.contains(&name.as_str())
            || name.starts_with(PARKING_HEADER_PREFIX)
            || name == HEADER_REPLAY_OF;
        if let (false, Some(name)) = (stale, short(name)) {
            headers.insert(name, amqp(value));
        }
    }
    headers.insert(
        ShortString::from(HEADER_REPLAY_OF),
        AMQPValue::LongString(LongString::from(letter.id.to_string())),
    );
    let p = &letter.properties;
    let mut props = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(p.delivery_mode.unwrap_or(PERSISTENT));
    let set = |v: &Option<String>| v.as_deref().and_then(short);
    if let Some(v) = set(&p.content_type) {
        props = props.with_content_type(v);
    }
    if let Some(v) = set(&p.content_encoding) {
        props = props.with_content_encoding(v);
    }
    if let Some(v) = p.priority {
        props = props.with_priority(v);
    }
    if let Some(v) = set(&p.correlation_id) {
        props = props.with_correlation_id(v);
    }
    if let Some(v) = set(&p.reply_to) {
        props = props.with_reply_to(v);
    }
    if let Some(v) = set(&p.expiration) {
        props = props.with_expiration(v);
    }
    if let Some(v) = set(&p.message_id) {
        props = props.with_message_id(v);
    }
    if let Some(v) = p.timestamp {
        props = props.with_timestamp(v);
    }
    if let Some(v) = set(&p.kind) {
        props = props.with_type(v);
    }
    if let Some(v) = set(&p.app_id) {
        props = props.with_app_id(v);
    }
    if let (Some(_), Some(user)) = (&p.user_id, short(platform_user)) {
        props = props.with_user_id(user);
    }
    props
}

/// An AMQP short string; `None` over 255 bytes (a value that came from AMQP fits).
fn short(s: &str) -> Option<ShortString> {
    ShortString::try_new(s).ok()
}

/// A header value back from JSON: integers as signed 64-bit, other numbers as doubles,
/// strings as long strings (byte arrays and timestamps were turned into strings and
/// numbers when stored and stay so).
fn amqp(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(items) => {
            AMQPValue::FieldArray(items.iter().map(amqp).collect::<Vec<_>>().into())
        }
        Value::Object(fields) => AMQPValue::FieldTable(
            fields
                .iter()
                .filter_map(|(k, v)| Some((short(k)?, amqp(v))))
                .collect::<BTreeMap<_, _>>()
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use ris_schemas::dead_letters::MessageProperties;
    use serde_json::json;

    use super::*;

    fn record() -> DeadLetterRecord {
        DeadLetterRecord {
            id: DeadLetterId::new(),
            tenant_id: uuid::Uuid::new_v4(),
            source_queue: "ris.results".into(),
            reason: "report refused".into(),
            exchange: "ris.results".into(),
            routing_key: "agent".into(),
            headers: [
                ("x-ris-dead-reason".to_owned(), json!("report refused")),
                ("x-ris-dead-user-id".to_owned(), json!("ris.t.agent.a")),
                ("x-death".to_owned(), json!([{ "count": 1 }])),
                ("x-first-death-queue".to_owned(), json!("ris.results")),
                (HEADER_REPLAY_OF.to_owned(), json!("old")),
                (
                    "x-trace".to_owned(),
                    json!({ "span": "abc", "n": [1, 2.5, true, null] }),
                ),
            ]
            .into(),
            properties: MessageProperties {
                content_type: Some("application/json".into()),
                message_id: Some("m-1".into()),
                user_id: Some("ris.t.agent.a".into()),
                timestamp: Some(1_700_000_000),
                kind: Some("k".into()),
                ..MessageProperties::default()
            },
            body: b"{}".to_vec(),
            dead_at: Utc::now(),
            replayed_at: None,
            replay_count: 0,
        }
    }

    #[test]
    fn replay_drops_death_headers_and_publishes_as_the_platform() {
        let letter = record();
        let props = replay_properties(&letter, "guest");
        let headers = props.headers().clone().unwrap();
        let names: Vec<&str> = headers.inner().keys().map(ShortString::as_str).collect();
        assert_eq!(names, [HEADER_REPLAY_OF, "x-trace"]);
        assert_eq!(
            headers.inner()[HEADER_REPLAY_OF],
            AMQPValue::LongString(letter.id.to_string().into())
        );
        let AMQPValue::FieldTable(trace) = &headers.inner()["x-trace"] else {
            panic!("x-trace is not a table");
        };
        assert_eq!(trace.inner()["span"], AMQPValue::LongString("abc".into()));
        assert_eq!(
            props.user_id().as_ref().map(ShortString::as_str),
            Some("guest")
        );
        assert_eq!(
            props.message_id().as_ref().map(ShortString::as_str),
            Some("m-1")
        );
        assert_eq!(props.kind().as_ref().map(ShortString::as_str), Some("k"));
        assert_eq!(props.timestamp(), &Some(1_700_000_000));
        assert_eq!(props.delivery_mode(), &Some(PERSISTENT));
    }

    #[test]
    fn no_user_id_is_invented() {
        let mut letter = record();
        letter.properties.user_id = None;
        assert_eq!(replay_properties(&letter, "guest").user_id(), &None);
    }

    #[test]
    fn view_shows_text_or_base64() {
        let mut letter = record();
        let v = view(letter.clone());
        assert_eq!(
            (v.body.as_deref(), v.body_base64.as_deref()),
            (Some("{}"), None)
        );
        letter.body = vec![0xff, 0x00];
        let v = view(letter);
        assert_eq!((v.body, v.body_base64.as_deref()), (None, Some("/wA=")));
    }
}
