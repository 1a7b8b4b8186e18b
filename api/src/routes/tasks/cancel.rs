//! `POST /v1/tasks/{id}/cancel`.
//!
//! The store decides, under the task's row lock, what the cancel does
//! ([`ris_store::cancel`]); this handler tells the agent when one is involved and
//! answers:
//!
//! - not yet on an agent (`queued`, `retrying`): `cancelled` at once, 200;
//! - assigned (`routing`): `cancelled` at once, 200, and the agent is sent
//!   `task.cancel` so it drops the assignment if it still arrives;
//! - running (`executing`): the agent is sent `task.cancel`, 202 with
//!   `cancel_requested: true`; the task ends `cancelled` when the agent reports;
//! - finished: 409 `task_finished`; unknown or another tenant's: 404.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use ris_broker::envelope::publish_to_agent;
use ris_broker::{names, BrokerError, PublishOptions};
use ris_schemas::api::TaskCancelled;
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::messages::ControlMessage;
use ris_schemas::version::V1;
use ris_store::{CancelOutcome, TenantCtx};
use serde_json::json;

use super::task_view;
use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::events;
use crate::extract::parse_param;
use crate::state::AppState;

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, task_id = %id, agent_id))]
pub(super) async fn cancel(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<TaskCancelled>)> {
    let id: TaskId = parse_param("id", &id)?;
    let tenant = &caller.tenant;
    let detail = json!({ "cancelled_by": "api", "api_key_id": caller.key_id });
    match state.store.cancel_task(tenant, id, detail).await? {
        CancelOutcome::NotFound => Err(ApiError::not_found("task")),
        CancelOutcome::Finished(s) => Err(ApiError::conflict(
            "task_finished",
            format!("task already {s}"),
        )),
        CancelOutcome::Cancelled { task, notify } => {
            if let Some(agent) = notify {
                record_agent(agent);
                drop_assignment(&state, tenant, agent, id).await;
            }
            tracing::info!(api_key_id = %caller.key_id, "task cancelled");
            events::task_changed(&state, &tenant.name, &task).await;
            crate::routes::integrations::task_ended(&state, tenant, &task).await;
            let body = TaskCancelled {
                task: task_view(task),
                cancel_requested: false,
            };
            Ok((StatusCode::OK, Json(body)))
        }
        CancelOutcome::Requested { task, agent } => {
            record_agent(agent);
            // Nothing else stops a running task: without the message the request is
            // only recorded, so the caller is told to retry.
            tell_agent(&state, tenant, agent, id).await?;
            tracing::info!(api_key_id = %caller.key_id, "cancel requested; the agent was told to stop the task");
            let body = TaskCancelled {
                task: task_view(task),
                cancel_requested: true,
            };
            Ok((StatusCode::ACCEPTED, Json(body)))
        }
    }
}

fn record_agent(agent: AgentId) {
    tracing::Span::current().record("agent_id", tracing::field::display(agent));
}

/// The task was assigned to `agent` and is now cancelled: the agent is told so it drops
/// the assignment when it arrives, and the placement stops counting against its load.
/// Failures are logged, not returned: the cancel is recorded and a late run's reports
/// can no longer change the task.
async fn drop_assignment(state: &AppState, tenant: &TenantCtx, agent: AgentId, id: TaskId) {
    if let Err(err) = tell_agent(state, tenant, agent, id).await {
        metrics::counter!("ris_cancel_publish_failures_total").increment(1);
        tracing::warn!(error = %err, "agent not told of the cancel; it may still run the task");
    }
    if let Err(err) = state.presence.inflight_done(&tenant.name, agent, id).await {
        tracing::debug!(error = %err, "in-flight placement not cleared; it expires by itself");
    }
}

/// Publishes `task.cancel` to the agent's control queue (confirmed, mandatory).
async fn tell_agent(
    state: &AppState,
    tenant: &TenantCtx,
    agent: AgentId,
    id: TaskId,
) -> Result<(), BrokerError> {
    let message = ControlMessage::Cancel { v: V1, task_id: id };
    let opts = PublishOptions {
        message_id: Some(format!("{id}.cancel")),
        ..PublishOptions::default()
    };
    let key = names::agent_control_key(agent);
    let signer = match crate::signing::signer(state).await {
        Ok(signer) => signer,
        Err(_) => return Err(BrokerError::Signing("no signing key available".into())),
    };
    let published = match state.brokers.publisher(&tenant.name).await {
        Ok(publisher) => {
            publish_to_agent(
                &publisher,
                &signer,
                &tenant.name,
                agent,
                &key,
                &message,
                opts,
            )
            .await
        }
        Err(err) => Err(err),
    };
    // An unroutable message (the agent's queues are gone) says nothing about the
    // connection; anything else may mean it broke.
    if matches!(&published, Err(e) if !matches!(e, BrokerError::Unroutable { .. })) {
        state.brokers.forget(&tenant.name).await;
    }
    published
}
