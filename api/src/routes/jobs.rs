//! Fleet jobs: `POST /v1/jobs`, `GET /v1/jobs`, `GET /v1/jobs/{id}`,
//! `GET /v1/jobs/{id}/tasks`, `POST /v1/jobs/{id}/cancel`.
//!
//! Creating a job resolves its target once — one query for the tenant's agents, one
//! Redis round trip for their presence — and stores the job with all its targets in one
//! transaction (targets inserted with a single statement). The children are created and
//! placed by the dispatchers, `max_concurrency` at a time (see `docs/jobs.md`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use ris_schemas::api::Page;
use ris_schemas::event::Event;
use ris_schemas::ids::AgentId;
use ris_schemas::job::{
    JobCancelled, JobId, JobRequest, JobTarget, JobTargetView, JobView, MAX_TARGETS, TARGET_STATES,
};
use ris_store::{JobCancel, JobCursor, JobRecord, JobTargetRecord, NewJob, NewTarget, TenantCtx};
use serde::Deserialize;

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_param, ValidJson};
use crate::pagination;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs", post(create).get(list))
        .route("/jobs/{id}", get(show))
        .route("/jobs/{id}/tasks", get(targets))
        .route("/jobs/{id}/cancel", post(cancel))
}

pub fn job_view(j: JobRecord) -> JobView {
    JobView {
        id: j.id,
        state: j.state,
        request: j.request,
        max_concurrency: j.max_concurrency,
        max_errors: j.max_errors,
        target_count: j.target_count,
        counts: j.counts,
        errors: j.errors,
        reason: j.reason,
        created_at: j.created_at,
        updated_at: j.updated_at,
        started_at: j.started_at,
        halting_at: j.halting_at,
        halted_at: j.halted_at,
        cancelled_at: j.cancelled_at,
        wait_until: j.wait_until,
        ended_at: j.ended_at,
    }
}

fn target_view(t: JobTargetRecord) -> JobTargetView {
    JobTargetView {
        seq: t.seq,
        agent_id: t.agent_id,
        agent_name: t.agent_name,
        state: t.state,
        task_id: t.task_id,
        attempts: t.attempts,
        reason: t.reason,
        error: t.error,
        updated_at: t.updated_at,
    }
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, job_id, targets))]
async fn create(
    State(state): State<AppState>,
    caller: TenantCaller,
    ValidJson(request): ValidJson<JobRequest>,
) -> ApiResult<(StatusCode, HeaderMap, Json<JobView>)> {
    let tenant = &caller.tenant;
    let started = std::time::Instant::now();
    let agents = resolve(&state, tenant, &request.target).await?;
    let resolved = started.elapsed();
    let ids: Vec<AgentId> = agents.iter().map(|(id, _)| *id).collect();
    let presence = state.presence.get_many(&tenant.name, &ids).await?;
    let presence_read = started.elapsed();
    let targets: Vec<NewTarget> = agents
        .into_iter()
        .zip(presence)
        .map(|((agent_id, name), p)| NewTarget {
            agent_id,
            name,
            online: p.is_some(),
        })
        .collect();
    let reason = match (&request.target, targets.is_empty()) {
        (JobTarget::Selector(_), true) => Some("the selector matched no agent".to_owned()),
        _ => None,
    };
    let id = JobId::new();
    let span = tracing::Span::current();
    span.record("job_id", tracing::field::display(id));
    span.record("targets", targets.len());
    let job = NewJob {
        id,
        request,
        targets,
        reason,
    };
    let job = state.store.create_job(tenant, job).await?;
    metrics::counter!("ris_jobs_created_total").increment(1);
    metrics::histogram!("ris_job_create_seconds").record(started.elapsed().as_secs_f64());
    tracing::info!(
        api_key_id = %caller.key_id,
        state = %job.state,
        resolve_ms = resolved.as_millis() as u64,
        presence_ms = (presence_read - resolved).as_millis() as u64,
        store_ms = (started.elapsed() - presence_read).as_millis() as u64,
        "job created"
    );
    let job = announce(&state, tenant, job).await;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(job_view(job))))
}

/// The agents a target names, in dispatch order: by name for a selector, as listed for
/// explicit ids. One query either way; unknown ids are refused.
async fn resolve(
    state: &AppState,
    tenant: &TenantCtx,
    target: &JobTarget,
) -> ApiResult<Vec<(AgentId, String)>> {
    let found = state.store.resolve_targets(tenant, target).await?;
    let chosen = match target {
        JobTarget::Selector(_) => found,
        JobTarget::Agents(ids) => {
            let mut by_id: HashMap<AgentId, String> = found.into_iter().collect();
            let mut chosen = Vec::with_capacity(ids.len());
            let mut unknown = Vec::new();
            for id in ids {
                match by_id.remove(id) {
                    Some(name) => chosen.push((*id, name)),
                    None => unknown.push(id.to_string()),
                }
            }
            if !unknown.is_empty() {
                let shown: Vec<&str> = unknown.iter().take(5).map(String::as_str).collect();
                return Err(ApiError::invalid(
                    "target.agent_ids",
                    format!(
                        "{} unknown agent id(s): {}",
                        unknown.len(),
                        shown.join(", ")
                    ),
                ));
            }
            chosen
        }
    };
    if chosen.len() > MAX_TARGETS {
        return Err(ApiError::invalid(
            "target",
            format!(
                "the target names {} agents; a job may have at most {MAX_TARGETS}",
                chosen.len()
            ),
        ));
    }
    Ok(chosen)
}

/// Publishes the job's unannounced state changes (`job.running`, or `job.completed` and
/// `job.ended` for a job with nothing to run). Returns the freshest record.
async fn announce(state: &AppState, tenant: &TenantCtx, job: JobRecord) -> JobRecord {
    match state.store.announce_job(tenant, job.id).await {
        Ok(Some((fresh, changes))) => {
            for what in changes {
                metrics::counter!("ris_job_events_total", "event" => what.clone()).increment(1);
                let event = Event::job(tenant.name.as_str(), &what, fresh.event_data());
                crate::events::publish(state, &tenant.name, &event).await;
            }
            fresh
        }
        Ok(None) => job,
        Err(err) => {
            // A dispatcher's job sweep announces it instead.
            tracing::warn!(error = %err, "job state not announced");
            job
        }
    }
}

async fn show(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    let id: JobId = parse_param("id", &id)?;
    let job = state
        .store
        .get_job(&caller.tenant, id)
        .await?
        .ok_or(ApiError::not_found("job"))?;
    Ok(Json(job_view(job)))
}

async fn list(
    State(state): State<AppState>,
    caller: TenantCaller,
    Query(params): Query<pagination::PageParams>,
) -> ApiResult<Json<Page<JobView>>> {
    let limit = pagination::limit(params.limit.as_deref())?;
    let cursor = pagination::cursor(params.cursor.as_deref(), JobCursor::decode)?;
    let jobs = state
        .store
        .list_jobs(&caller.tenant, limit + 1, cursor.as_ref())
        .await?;
    let cursor_of = |j: &JobRecord| {
        JobCursor {
            created_at: j.created_at,
            id: j.id,
        }
        .encode()
    };
    Ok(Json(pagination::page(jobs, limit, cursor_of, job_view)))
}

#[derive(Debug, Deserialize)]
struct TargetParams {
    state: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn targets(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
    Query(params): Query<TargetParams>,
) -> ApiResult<Json<Page<JobTargetView>>> {
    let id: JobId = parse_param("id", &id)?;
    let filter = params
        .state
        .as_deref()
        .map(|s| {
            TARGET_STATES.contains(&s).then_some(s).ok_or_else(|| {
                ApiError::invalid(
                    "state",
                    format!("unknown state `{s}`; one of {}", TARGET_STATES.join(", ")),
                )
            })
        })
        .transpose()?;
    let limit = pagination::limit(params.limit.as_deref())?;
    let after = pagination::cursor(params.cursor.as_deref(), |c| c.parse::<u32>().ok())?;
    if state.store.get_job(&caller.tenant, id).await?.is_none() {
        return Err(ApiError::not_found("job"));
    }
    let rows = state
        .store
        .job_targets(&caller.tenant, id, filter, after, limit + 1)
        .await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |t| t.seq.to_string(),
        target_view,
    )))
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, job_id = %id))]
async fn cancel(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<JobCancelled>)> {
    let id: JobId = parse_param("id", &id)?;
    match state.store.cancel_job(&caller.tenant, id).await? {
        JobCancel::NotFound => Err(ApiError::not_found("job")),
        JobCancel::Ended(job) => Err(ApiError::conflict(
            "job_ended",
            format!("job already {}", job.state),
        )),
        JobCancel::Cancelled(job) => {
            tracing::info!(api_key_id = %caller.key_id, "job cancelled");
            let job = announce(&state, &caller.tenant, job).await;
            // The dispatchers stop the children (next job sweep).
            Ok((
                StatusCode::ACCEPTED,
                Json(JobCancelled { job: job_view(job) }),
            ))
        }
    }
}
