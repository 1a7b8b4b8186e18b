//! Integrations: `POST /v1/integrations`, `GET /v1/integrations`,
//! `DELETE /v1/integrations/{name}`.
//!
//! An integration is an enterprise system that submits tasks and follows events over
//! AMQP with its own least-privilege broker user (see `ris_broker::provision_integration`
//! and `docs/integrating.md`). The password is shown once, in the 201; only RabbitMQ
//! keeps it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use ris_broker::names;
use ris_schemas::api::Page;
use ris_schemas::ids::TenantName;
use ris_schemas::integrations::{
    CreateIntegration, IntegrationCreated, IntegrationCredentials, IntegrationName,
    IntegrationView, WireContract,
};
use ris_store::{IntegrationRecord, TaskRecord, TenantCtx};

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ValidJson;
use crate::secrets;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/integrations", get(list).post(create))
        .route("/integrations/{name}", delete(remove))
}

fn view(tenant: &TenantName, record: IntegrationRecord) -> IntegrationView {
    IntegrationView {
        username: ris_broker::integration_user(tenant, &record.name),
        name: record.name,
        created_at: record.created_at,
    }
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, integration = %body.name))]
async fn create(
    State(state): State<AppState>,
    caller: TenantCaller,
    ValidJson(body): ValidJson<CreateIntegration>,
) -> ApiResult<(StatusCode, Json<IntegrationCreated>)> {
    let (tenant, name) = (&caller.tenant, body.name);
    // The row first: it is what makes the name taken, so a second create cannot reset
    // the first one's password.
    let record = state
        .store
        .insert_integration(tenant, &name)
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "integration_exists",
                "the tenant already has an integration with this name",
            )
            .with_field("name")
        })?;
    let password = secrets::random_secret();
    if let Err(err) =
        ris_broker::provision_integration(&state.management, &tenant.name, &name, &password).await
    {
        // Undo, so the caller can simply retry.
        if let Err(undo) = state.store.delete_integration(tenant, &name).await {
            tracing::warn!(error = %undo, "integration row left behind after a broker failure");
        }
        return Err(err.into());
    }
    tracing::info!("integration created");
    let broker = &state.config.broker;
    let username = ris_broker::integration_user(&tenant.name, &name);
    Ok((
        StatusCode::CREATED,
        Json(IntegrationCreated {
            amqp: IntegrationCredentials {
                url: broker
                    .public_amqp_url
                    .clone()
                    .unwrap_or_else(|| broker.amqp_url.clone()),
                vhost: tenant.name.vhost(),
                username: username.clone(),
                password,
            },
            contract: WireContract {
                submit_exchange: names::SUBMIT_EXCHANGE.to_owned(),
                events_exchange: names::EVENTS_EXCHANGE.to_owned(),
                queue_prefix: ris_broker::integration_queue_prefix(&name),
                user_id: username,
            },
            name: record.name,
            created_at: record.created_at,
        }),
    ))
}

async fn list(
    State(state): State<AppState>,
    caller: TenantCaller,
) -> ApiResult<Json<Page<IntegrationView>>> {
    let records = state.store.list_integrations(&caller.tenant).await?;
    let items = records
        .into_iter()
        .map(|r| view(&caller.tenant.name, r))
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, integration = %raw))]
async fn remove(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    let name = IntegrationName::parse(&raw).map_err(|e| ApiError::invalid("name", e.0))?;
    let tenant = &caller.tenant;
    if state.store.get_integration(tenant, &name).await?.is_none() {
        return Err(ApiError::not_found("integration"));
    }
    // The user first (closing its connections): a failure here leaves the row, so the
    // caller retries the DELETE rather than losing track of a live user.
    ris_broker::deprovision_integration(&state.management, &tenant.name, &name).await?;
    state.store.delete_integration(tenant, &name).await?;
    tracing::info!("integration deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Sends the task's final outcome to its reply target, if it has ended and has one:
/// for a cancel through the API that ends a task at once (every other way a task ends
/// is the dispatcher's, see `ris_dispatcher::replies`). Never fails the request.
pub async fn task_ended(state: &AppState, tenant: &TenantCtx, task: &TaskRecord) {
    if !task.state.is_terminal() {
        return;
    }
    let sent = match state.store.reply_target(tenant, task.id).await {
        Ok(None) => return,
        Ok(Some(target)) => match state.brokers.publisher(&tenant.name).await {
            Ok(publisher) => ris_broker::publish_reply(
                &publisher,
                &target.reply_to,
                target.correlation_id.as_deref(),
                &ris_store::reply_of(task),
            )
            .await
            .map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        },
        Err(err) => Err(err.to_string()),
    };
    if let Err(error) = sent {
        tracing::warn!(task_id = %task.id, %error, "reply not delivered (the task is not affected)");
    }
}
