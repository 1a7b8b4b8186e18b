//! Tasks: `POST /v1/tasks`, `GET /v1/tasks`, `GET /v1/tasks/{id}`,
//! `GET /v1/tasks/{id}/events`, `POST /v1/tasks/{id}/cancel` (in [`cancel`]),
//! `GET /v1/tasks/{id}/output` (in [`output`]).
//!
//! A submission is written to PostgreSQL as `queued` before the 202 returns, so it is
//! readable at once and survives anything that happens next. It is then published to
//! the tenant's `ris.submit` queue, the fast path to a dispatcher. If that publish fails
//! the task is not lost: dispatchers also sweep PostgreSQL for unplaced tasks.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ris_broker::{PublishOptions, SUBMIT_EXCHANGE};
use ris_schemas::api::{AttemptView, Page, TaskAccepted, TaskEventView, TaskView};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::messages::{Submit, SubmitMessage};
use ris_schemas::task::{Target, TaskRequest, TaskState};
use ris_schemas::version::V1;
use ris_store::{Cursor, Inserted, TaskEventRecord, TaskFilter, TaskRecord, TenantCtx};
use serde::Deserialize;

use crate::audit::AuditNote;
use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_param, ValidJson};
use crate::pagination;
use crate::state::AppState;

mod cancel;
mod output;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tasks", post(submit).get(list))
        .route("/tasks/{id}", get(show))
        .route("/tasks/{id}/events", get(events))
        .route("/tasks/{id}/attempts", get(attempts))
        .route("/tasks/{id}/cancel", post(cancel::cancel))
        .route("/tasks/{id}/output", get(output::output))
}

pub fn task_view(t: TaskRecord) -> TaskView {
    TaskView {
        id: t.id,
        state: t.state,
        metadata: t.request.metadata.clone(),
        request: t.request,
        attempts: t.attempts,
        agent_id: t.agent_id,
        reason: t.reason,
        result: t.result,
        created_at: t.created_at,
        updated_at: t.updated_at,
        cancel_requested_at: t.cancel_requested_at,
        next_attempt_at: (t.state == TaskState::Retrying).then_some(t.next_placement_at),
        job_id: t.job_id,
    }
}

fn event_view(e: TaskEventRecord) -> TaskEventView {
    TaskEventView {
        seq: e.seq,
        state: e.state,
        attempt: e.attempt,
        agent_id: e.agent_id,
        reason: e.reason,
        detail: e.detail,
        at: e.at,
    }
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid(
            "Idempotency-Key",
            "`Idempotency-Key` must be 1 to 255 visible ASCII characters",
        )
    };
    let key = raw.to_str().map_err(|_| invalid())?;
    if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, task_id))]
async fn submit(
    State(state): State<AppState>,
    caller: TenantCaller,
    headers: HeaderMap,
    ValidJson(request): ValidJson<TaskRequest>,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    let task = accept(&state, &caller.tenant, &request, key.as_deref()).await?;
    tracing::Span::current().record("task_id", tracing::field::display(task.id));
    let mut out = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/tasks/{}", task.id)) {
        out.insert(header::LOCATION, location);
    }
    let accepted = (
        StatusCode::ACCEPTED,
        out,
        Json(TaskAccepted {
            id: task.id,
            state: task.state,
        }),
    );
    Ok(AuditNote::target(format!("task:{}", task.id)).attach(accepted.into_response()))
}

/// Stores a submission as `queued` and publishes it to `ris.submit` (the tail of
/// `POST /v1/tasks`, shared with inbound hooks). A known idempotency key returns the
/// task it already made.
pub(crate) async fn accept(
    state: &AppState,
    tenant: &TenantCtx,
    request: &TaskRequest,
    key: Option<&str>,
) -> ApiResult<TaskRecord> {
    if let Target::Agent(agent_id) = &request.target {
        if state.store.get_agent(tenant, *agent_id).await?.is_none() {
            return Err(
                ApiError::new(StatusCode::NOT_FOUND, "agent_not_found", "agent not found")
                    .with_field("target.agent_id"),
            );
        }
    }
    crate::limits::check_queued_tasks(state, tenant).await?;
    let id = TaskId::new();
    let task = match state.store.insert_task(tenant, id, request, key).await? {
        Inserted::New(task) => {
            metrics::counter!("ris_tasks_submitted_total", "kind" => request.task.kind())
                .increment(1);
            state.queued_counts.queued_one(tenant);
            // Announced before the submission goes out, so `task.queued` precedes the
            // dispatcher's `task.routing` on `ris.events`.
            crate::events::task_changed(state, &tenant.name, &task).await;
            publish_submission(state, tenant, task.id, request).await;
            task
        }
        Inserted::Existing(task) => task,
    };
    Ok(task)
}

/// Hands the task to a dispatcher through `ris.submit`. Failure is logged, not returned:
/// the task is already durable and the dispatchers' sweep will place it.
async fn publish_submission(
    state: &AppState,
    tenant: &TenantCtx,
    id: TaskId,
    request: &TaskRequest,
) {
    let message = SubmitMessage::Submit(Submit {
        v: V1,
        task_id: id,
        request: request.clone(),
    });
    let opts = PublishOptions {
        message_id: Some(id.to_string()),
        // Vouched for by the broker: the dispatcher trusts that a submission from the
        // platform is for a task stored as it says, and places it without reading it.
        user_id: Some(state.config.broker.username.clone()),
        ..PublishOptions::default()
    };
    let result = match state.brokers.publisher(&tenant.name).await {
        Ok(publisher) => {
            publisher
                .publish_json(SUBMIT_EXCHANGE, "", &message, opts)
                .await
        }
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        metrics::counter!("ris_submit_publish_failures_total").increment(1);
        tracing::warn!(error = %err, "submission not published; the placement sweep will pick it up");
        state.brokers.forget(&tenant.name).await;
        // No message will place it: due for the sweep now rather than after the grace
        // left to submissions. If even this fails, the grace runs out and the sweep
        // takes it then.
        if let Err(err) = state.store.task_due_now(tenant, id).await {
            tracing::warn!(error = %err, "task not marked due; the sweep takes it after the grace");
        }
    }
}

/// A finished task's body is served from [`crate::cache`] once read: it never changes.
async fn show(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id: TaskId = parse_param("id", &id)?;
    let tenant = caller.tenant.id;
    let body = match state.caches.finished_task(tenant, id) {
        Some(body) => body,
        None => {
            let task = state
                .task_reads
                .get(&caller.tenant, id)
                .await?
                .ok_or(ApiError::not_found("task"))?;
            let finished = task.state.is_terminal();
            let json = serde_json::to_vec(&task_view(task)).map_err(|e| ApiError::internal(&e))?;
            let body = axum::body::Bytes::from(json);
            if finished {
                state.caches.keep_finished_task(tenant, id, body.clone());
            }
            body
        }
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct ListParams {
    state: Option<String>,
    agent_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: TenantCaller,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<Page<TaskView>>> {
    let filter = TaskFilter {
        state: params
            .state
            .as_deref()
            .map(|s| {
                TaskState::parse(s)
                    .ok_or_else(|| ApiError::invalid("state", format!("unknown state `{s}`")))
            })
            .transpose()?,
        agent_id: params
            .agent_id
            .as_deref()
            .map(|s| parse_param::<AgentId>("agent_id", s))
            .transpose()?,
    };
    let limit = pagination::limit(params.limit.as_deref())?;
    let cursor = pagination::cursor(params.cursor.as_deref(), Cursor::decode)?;
    let tasks = state
        .store
        .list_tasks(&caller.tenant, &filter, limit + 1, cursor.as_ref())
        .await?;
    let cursor_of = |t: &TaskRecord| {
        Cursor {
            created_at: t.created_at,
            id: t.id,
        }
        .encode()
    };
    Ok(Json(pagination::page(tasks, limit, cursor_of, task_view)))
}

async fn events(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Page<TaskEventView>>> {
    let id: TaskId = parse_param("id", &id)?;
    if state.store.get_task(&caller.tenant, id).await?.is_none() {
        return Err(ApiError::not_found("task"));
    }
    let events = state.store.task_events(&caller.tenant, id).await?;
    Ok(Json(Page {
        items: events.into_iter().map(event_view).collect(),
        next_cursor: None,
    }))
}

async fn attempts(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Page<AttemptView>>> {
    let id: TaskId = parse_param("id", &id)?;
    if state.store.get_task(&caller.tenant, id).await?.is_none() {
        return Err(ApiError::not_found("task"));
    }
    let items = state
        .store
        .attempt_results(&caller.tenant, id)
        .await?
        .into_iter()
        .map(|a| AttemptView {
            attempt: a.attempt,
            agent_id: a.agent_id,
            result: a.result,
            started_at: a.started_at,
            finished_at: a.finished_at,
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}
