//! `GET /v1/tasks/{id}/output?follow=true|false` (tenant API key): a task's output as
//! Server-Sent Events.
//!
//! - `follow=false` (default), or a task that already ended: the stored output of the
//!   latest result, as one `stdout` and one `stderr` event (possibly empty), then `end`.
//! - `follow=true` on a running task: the live chunks the agent streams (relayed by the
//!   dispatcher as `task.output` events), each as `event: stdout|stderr` with the chunk
//!   JSON as data, until the task's terminal event, then `end`. Live output is best
//!   effort: chunks sent before the stream opened, or dropped under load, are not sent;
//!   the stored result is complete up to its own cap.
//!
//! `end` carries `{"state": "<state>"}`. Stored output events carry
//! `{"task_id", "attempt", "agent_id", "stream", "data", "stored": true}`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Extension;
use futures::{Stream, StreamExt};
use ris_schemas::event::{Event, EventData};
use ris_schemas::ids::TaskId;
use ris_schemas::messages::OutputStream;
use ris_schemas::task::{TaskOutput, TaskState};
use ris_store::TaskRecord;
use serde::Deserialize;
use serde_json::json;

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::event_streams::{EventStreams, Subscription, TopicPattern};
use crate::extract::parse_param;
use crate::routes::events::KEEP_ALIVE;
use crate::state::AppState;

/// What a following stream binds: the chunks, and the states that end it.
const PATTERNS: [&str; 5] = [
    Event::OUTPUT,
    "task.completed",
    "task.failed",
    "task.timed_out",
    "task.cancelled",
];

#[derive(Debug, Deserialize)]
pub(super) struct OutputParams {
    follow: Option<String>,
}

type SseResult = Result<SseEvent, Infallible>;

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, task_id))]
pub(super) async fn output(
    State(state): State<AppState>,
    Extension(streams): Extension<Arc<EventStreams>>,
    caller: TenantCaller,
    Path(id): Path<String>,
    Query(params): Query<OutputParams>,
) -> ApiResult<Sse<impl Stream<Item = SseResult>>> {
    let id: TaskId = parse_param("id", &id)?;
    tracing::Span::current().record("task_id", tracing::field::display(id));
    let follow = match params.follow.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "follow",
                "`follow` must be `true` or `false`",
            ))
        }
    };
    let get_task = || async {
        state
            .store
            .get_task(&caller.tenant, id)
            .await?
            .ok_or(ApiError::not_found("task"))
    };
    let task = get_task().await?;
    let live = if follow && !task.state.is_terminal() {
        let patterns = PATTERNS.map(TopicPattern::fixed);
        let subscription = streams
            .subscribe(&state.config.broker, &caller.tenant.name, &patterns)
            .await?;
        // It may have ended between the first read and the subscription.
        let task = get_task().await?;
        if task.state.is_terminal() {
            None
        } else {
            Some(subscription)
        }
    } else {
        None
    };
    let body = match live {
        Some(subscription) => follow_stream(subscription, id).boxed(),
        None => {
            // Read again: a following request may have seen the task end meanwhile.
            let task = if follow { get_task().await? } else { task };
            futures::stream::iter(stored(&task).into_iter().map(Ok)).boxed()
        }
    };
    Ok(Sse::new(body).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// The stored output of the latest result (empty when there is none), then `end`.
fn stored(task: &TaskRecord) -> Vec<SseEvent> {
    let (stdout, stderr) = match task.result.as_ref().map(|r| &r.output) {
        Some(TaskOutput::Shell(shell)) => (shell.stdout.as_str(), shell.stderr.as_str()),
        _ => ("", ""),
    };
    let mut events = Vec::with_capacity(3);
    for (stream, data) in [
        (OutputStream::Stdout, stdout),
        (OutputStream::Stderr, stderr),
    ] {
        let body = json!({
            "task_id": task.id,
            "attempt": task.attempts,
            "agent_id": task.agent_id,
            "stream": stream,
            "data": data,
            "stored": true,
        });
        events.push(
            SseEvent::default()
                .event(stream.as_str())
                .data(body.to_string()),
        );
    }
    events.push(end(task.state));
    events
}

fn end(state: TaskState) -> SseEvent {
    SseEvent::default()
        .event("end")
        .data(json!({ "state": state }).to_string())
}

/// This task's live chunks until its terminal event (then `end`), or until the broker
/// ends the subscription. Dropping the stream (the client went away) closes the channel.
fn follow_stream(subscription: Subscription, id: TaskId) -> impl Stream<Item = SseResult> {
    futures::stream::unfold(Some(subscription), move |sub| async move {
        let mut sub = sub?;
        loop {
            let delivery = match sub.consumer.next().await? {
                Ok(delivery) => delivery,
                Err(err) => {
                    tracing::info!(error = %err, "output stream ended by the broker");
                    return None;
                }
            };
            let Ok(event) = serde_json::from_slice::<Event>(&delivery.data) else {
                continue;
            };
            match event.data {
                EventData::Output(chunk) if chunk.task_id == id => {
                    let Ok(data) = serde_json::to_string(&chunk) else {
                        continue;
                    };
                    let sse = SseEvent::default().event(chunk.stream.as_str()).data(data);
                    return Some((Ok(sse), Some(sub)));
                }
                EventData::Task(t) if t.task_id == id && t.state.is_terminal() => {
                    return Some((Ok(end(t.state)), None));
                }
                _ => {}
            }
        }
    })
}
