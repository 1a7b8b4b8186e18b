//! `GET /v1/events/stream` (tenant API key): the tenant's events as Server-Sent Events.
//!
//! `types` is a comma-separated list of AMQP topic patterns over the routing key
//! (`task.*,agent.offline`; default `#`, everything). Each event is sent as
//! `event: <routing key>`, `id: <event id>`, `data: <event JSON>`, with a keep-alive
//! comment every 15 s. The stream is a live view: there is no replay, and a client too
//! slow to keep up loses its oldest events (see [`crate::event_streams`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use axum::{Extension, Router};
use futures::{Stream, StreamExt};
use ris_broker::lapin::message::Delivery;
use serde::Deserialize;

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::event_streams::{EventStreams, Subscription, TopicPattern};
use crate::state::AppState;

pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Expects an `Extension<Arc<EventStreams>>` layered around it (see [`super::router`]).
pub fn router() -> Router<AppState> {
    Router::new().route("/events/stream", get(stream))
}

#[derive(Debug, Deserialize)]
struct StreamParams {
    types: Option<String>,
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name))]
async fn stream(
    State(state): State<AppState>,
    Extension(streams): Extension<Arc<EventStreams>>,
    caller: TenantCaller,
    Query(params): Query<StreamParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let patterns = TopicPattern::parse_list(params.types.as_deref())
        .map_err(|msg| ApiError::invalid("types", format!("`types` is invalid: {msg}")))?;
    let subscription = streams
        .subscribe(&state.config.broker, &caller.tenant.name, &patterns)
        .await?;
    tracing::debug!(patterns = ?patterns, "event stream opened");
    Ok(Sse::new(events(subscription)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The subscription's deliveries as SSE events. Ends when the channel does (the client
/// reconnects); dropping it (the client went away) closes the channel.
fn events(subscription: Subscription) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::unfold(subscription, |mut sub| async move {
        loop {
            match sub.consumer.next().await? {
                Ok(delivery) => {
                    if let Some(event) = to_sse(&delivery) {
                        return Some((Ok(event), sub));
                    }
                }
                Err(err) => {
                    tracing::info!(error = %err, "event stream ended by the broker");
                    return None;
                }
            }
        }
    })
}

/// `event:` is the routing key, `id:` the message id (the event id), `data:` the body.
/// A message that cannot be framed safely (not UTF-8, line breaks in a header) is skipped.
fn to_sse(delivery: &Delivery) -> Option<SseEvent> {
    let safe = |s: &str| !s.contains(['\n', '\r', '\0']);
    let data = std::str::from_utf8(&delivery.data).ok()?;
    let kind = delivery.routing_key.as_str();
    if !safe(kind) {
        return None;
    }
    let mut event = SseEvent::default().event(kind).data(data);
    if let Some(id) = delivery.properties.message_id() {
        if safe(id.as_str()) {
            event = event.id(id.as_str());
        }
    }
    Some(event)
}
