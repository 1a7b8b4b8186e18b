//! `GET /v1/services/{name}/logs?agent_id=&tail=&since=`: container logs, fetched from
//! the agents through the broker.
//!
//! For each agent asked (the one named, else every agent holding an instance) the API
//! submits an ordinary task `{kind: docker, op: logs}` targeted at that agent
//! (metadata `ris.internal=service-logs`, so it shows as what it is in task listings),
//! then waits for the results, at most [`WAIT`]. The logs are what came back: one entry
//! per agent, with the lines, or why there are none. If no agent answered in time (its
//! task still waiting, or failed without reaching it: `no_agent`, `queue_timeout`,
//! `agent_lost`) the answer is 504 `agent_timeout`; tasks still waiting then are
//! cancelled.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::DateTime;
use futures::future::join_all;
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::result::TaskOutput;
use ris_schemas::service::{AgentLogs, ServiceLogs, ServiceName};
use ris_schemas::task::TaskRequest;
use ris_store::{InstanceRecord, TaskRecord, TenantCtx};
use serde::Deserialize;
use serde_json::json;

use super::{find, service_name};
use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::parse_param;
use crate::state::AppState;

/// How long the API waits for the agents' answers.
pub const WAIT: Duration = Duration::from_secs(15);
/// Lines per container when `tail` is not given, and the most `tail` may ask.
const DEFAULT_TAIL: u32 = 100;
const MAX_TAIL: u32 = 10_000;
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Deserialize)]
pub(super) struct LogParams {
    agent_id: Option<String>,
    tail: Option<String>,
    since: Option<String>,
}

/// `since`: unix seconds, or an RFC 3339 time.
fn parse_since(raw: &str) -> ApiResult<i64> {
    if let Ok(secs) = raw.parse::<i64>() {
        return Ok(secs);
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp())
        .map_err(|_| ApiError::invalid("since", "`since` must be unix seconds or an RFC 3339 time"))
}

fn parse_tail(raw: Option<&str>) -> ApiResult<u32> {
    match raw {
        None => Ok(DEFAULT_TAIL),
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=MAX_TAIL).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(
                "tail",
                format!("`tail` must be between 1 and {MAX_TAIL}"),
            )),
        },
    }
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, service = %name))]
pub(super) async fn logs(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(name): Path<String>,
    Query(params): Query<LogParams>,
) -> ApiResult<Json<ServiceLogs>> {
    let name = service_name(&name)?;
    let tail = parse_tail(params.tail.as_deref())?;
    let since = params.since.as_deref().map(parse_since).transpose()?;
    let only: Option<AgentId> = params
        .agent_id
        .as_deref()
        .map(|s| parse_param("agent_id", s))
        .transpose()?;
    let tenant = &caller.tenant;
    let service = find(&state, tenant, &name).await?;
    let mut instances = state
        .store
        .service_instances(tenant, std::slice::from_ref(&service.name))
        .await?;
    if let Some(agent) = only {
        instances.retain(|i| i.agent_id == agent);
        if instances.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "instance_not_found",
                "this service has no instance on that agent",
            )
            .with_field("agent_id"));
        }
    }
    let submitted = join_all(
        instances
            .iter()
            .map(|i| submit(&state, tenant, &name, i.agent_id, tail, since)),
    )
    .await
    .into_iter()
    .collect::<ApiResult<Vec<TaskId>>>()?;
    let finished = wait(&state, tenant, &submitted).await?;
    let answered = finished.iter().flatten().any(answered);
    if !answered && !submitted.is_empty() {
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "agent_timeout",
            format!(
                "no agent answered within {} s (offline or busy); try again later",
                WAIT.as_secs()
            ),
        ));
    }
    let items = instances
        .into_iter()
        .zip(submitted)
        .zip(finished)
        .map(|((instance, task_id), task)| entry(instance, task_id, task))
        .collect();
    Ok(Json(ServiceLogs {
        service: name,
        items,
    }))
}

/// Submits the logs task for one agent.
async fn submit(
    state: &AppState,
    tenant: &TenantCtx,
    service: &ServiceName,
    agent: AgentId,
    tail: u32,
    since: Option<i64>,
) -> ApiResult<TaskId> {
    let wait_secs = WAIT.as_secs();
    let request: TaskRequest = serde_json::from_value(json!({
        "target": { "agent_id": agent },
        "task": { "kind": "docker", "op": "logs", "service": service, "tail": tail, "since": since },
        "timeout_secs": wait_secs,
        "queue_timeout_secs": wait_secs,
        "metadata": { "ris.internal": "service-logs", "service": service },
    }))
    .map_err(|e| ApiError::internal(&e))?;
    let task = crate::routes::tasks::accept(state, tenant, &request, None).await?;
    Ok(task.id)
}

/// Polls the tasks until each has ended or [`WAIT`] passed; `None` for those still
/// running then (which are cancelled, best effort).
async fn wait(
    state: &AppState,
    tenant: &TenantCtx,
    ids: &[TaskId],
) -> ApiResult<Vec<Option<TaskRecord>>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut done: Vec<Option<TaskRecord>> = vec![None; ids.len()];
    loop {
        for (slot, id) in done.iter_mut().zip(ids) {
            if slot.is_none() {
                let task = state.store.get_task(tenant, *id).await?;
                *slot = task.filter(|t| t.state.is_terminal());
            }
        }
        if done.iter().all(Option::is_some) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    for (slot, id) in done.iter().zip(ids) {
        if slot.is_none() {
            let detail =
                json!({ "cancelled_by": "api", "why": "service logs not answered in time" });
            if let Err(err) = state.store.cancel_task(tenant, *id, detail).await {
                tracing::debug!(task_id = %id, error = %err, "unanswered logs task not cancelled");
            }
        }
    }
    Ok(done)
}

/// Task reasons that mean the agent never got to it: no answer from the agent.
const UNANSWERED: &[&str] = &["no_agent", "queue_timeout", "agent_lost"];

/// Whether the ended task carries the agent's answer (logs, or why there are none,
/// such as `docker_unavailable`), rather than a placement that never reached it.
fn answered(task: &TaskRecord) -> bool {
    task.result.is_some()
        || !task
            .reason
            .as_deref()
            .is_some_and(|r| UNANSWERED.contains(&r))
}

fn entry(instance: InstanceRecord, task_id: TaskId, task: Option<TaskRecord>) -> AgentLogs {
    let mut logs = AgentLogs {
        agent_id: instance.agent_id,
        agent_name: instance.agent_name,
        task_id,
        outcome: "no_answer".into(),
        reason: None,
        error: None,
        lines: Vec::new(),
        truncated: false,
    };
    let Some(task) = task else {
        return logs;
    };
    if answered(&task) {
        logs.outcome = task.state.as_str().to_owned();
    }
    logs.reason = task.reason;
    if let Some(result) = task.result {
        logs.error = result.error;
        if let TaskOutput::Docker(out) = result.output {
            logs.lines = out.stdout.lines().map(str::to_owned).collect();
            logs.lines.extend(out.stderr.lines().map(str::to_owned));
            logs.truncated = out.truncated;
        }
    }
    logs
}
