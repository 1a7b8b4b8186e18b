//! Outbound webhooks: `POST /v1/webhooks`, `GET /v1/webhooks`,
//! `GET|DELETE /v1/webhooks/{id}`, `GET /v1/webhooks/{id}/deliveries`,
//! `POST /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver`.
//!
//! A webhook subscribes a URL to the tenant's events by topic pattern; the dispatcher
//! POSTs each matching event, signed with the webhook's secret, and retries with
//! backoff (see `ris_dispatcher::webhooks`). The secret is write-only: no response
//! carries it. Another tenant's webhook is a 404.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use ris_schemas::api::Page;
use ris_schemas::webhooks::{
    CreateWebhook, DeliveryId, DeliveryView, EventPatterns, WebhookId, WebhookView,
};
use ris_store::{DeliveryRecord, TenantCtx, WebhookRecord};
use serde::Deserialize;

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_param, ValidJson};
use crate::state::AppState;

/// Webhooks a tenant may hold.
const MAX_WEBHOOKS: usize = 100;
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show).delete(remove))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route(
            "/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            post(redeliver),
        )
}

fn view(w: WebhookRecord) -> WebhookView {
    WebhookView {
        id: w.id,
        url: w.url,
        events: w.events,
        created_at: w.created_at,
    }
}

fn delivery_view(d: DeliveryRecord) -> DeliveryView {
    use ris_schemas::webhooks::DeliveryStatus::{Failed, Pending};
    let waiting = matches!(d.status, Pending | Failed);
    DeliveryView {
        id: d.id,
        webhook_id: d.webhook_id,
        event_id: d.event_id,
        event_type: d.event_type,
        attempt: d.attempt,
        status: d.status,
        response_status: d.response_status,
        error: d.error,
        next_attempt_at: waiting.then_some(d.next_attempt_at),
        attempts: d.attempts,
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

/// Routes the events a new webhook asks for to `ris.webhooks` now, so its first events
/// are not missed. The dispatchers keep the bindings in step with the webhooks (and
/// make this one within a few seconds if it fails here), so a failure is only logged.
async fn bind_events(state: &AppState, tenant: &TenantCtx, patterns: &EventPatterns) {
    let bound = async {
        let channel = state.brokers.channel(&tenant.name).await?;
        ris_broker::declare_webhook_queue(&channel).await?;
        for pattern in patterns.as_slice() {
            ris_broker::bind_events(&channel, ris_broker::WEBHOOKS_QUEUE, pattern.as_str()).await?;
        }
        drop(channel.close(200, "webhook bound".into()).await);
        Ok::<_, ris_broker::BrokerError>(())
    };
    if let Err(err) = bound.await {
        tracing::warn!(error = %err, "webhook events not bound yet; the dispatchers will");
    }
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name))]
async fn create(
    State(state): State<AppState>,
    caller: TenantCaller,
    ValidJson(body): ValidJson<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookView>)> {
    if state.store.list_webhooks(&caller.tenant).await?.len() >= MAX_WEBHOOKS {
        return Err(ApiError::conflict(
            "too_many_webhooks",
            format!("a tenant may hold at most {MAX_WEBHOOKS} webhooks"),
        ));
    }
    let webhook = state.store.create_webhook(&caller.tenant, &body).await?;
    tracing::info!(webhook = %webhook.id, url = %webhook.url.as_url(), "webhook created");
    bind_events(&state, &caller.tenant, &webhook.events).await;
    Ok((StatusCode::CREATED, Json(view(webhook))))
}

async fn list(
    State(state): State<AppState>,
    caller: TenantCaller,
) -> ApiResult<Json<Page<WebhookView>>> {
    let hooks = state.store.list_webhooks(&caller.tenant).await?;
    Ok(Json(Page {
        items: hooks.into_iter().map(view).collect(),
        next_cursor: None,
    }))
}

async fn find(state: &AppState, caller: &TenantCaller, id: &str) -> ApiResult<WebhookRecord> {
    let id: WebhookId = parse_param("id", id)?;
    state
        .store
        .get_webhook(&caller.tenant, id)
        .await?
        .ok_or(ApiError::not_found("webhook"))
}

async fn show(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookView>> {
    Ok(Json(view(find(&state, &caller, &id).await?)))
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, webhook = %id))]
async fn remove(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: WebhookId = parse_param("id", &id)?;
    if !state.store.delete_webhook(&caller.tenant, id).await? {
        return Err(ApiError::not_found("webhook"));
    }
    tracing::info!("webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct DeliveryParams {
    limit: Option<String>,
}

/// Newest first; `?limit=` 1..=200 (default 50).
async fn deliveries(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
    Query(params): Query<DeliveryParams>,
) -> ApiResult<Json<Page<DeliveryView>>> {
    let limit = match params.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("`limit` must be between 1 and {MAX_PAGE}"),
                ))
            }
        },
    };
    let webhook = find(&state, &caller, &id).await?;
    let items = state
        .store
        .list_deliveries(&caller.tenant, webhook.id, limit)
        .await?;
    Ok(Json(Page {
        items: items.into_iter().map(delivery_view).collect(),
        next_cursor: None,
    }))
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, webhook = %id, delivery = %delivery_id))]
async fn redeliver(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let webhook: WebhookId = parse_param("id", &id)?;
    let delivery: DeliveryId = parse_param("delivery_id", &delivery_id)?;
    let record = state
        .store
        .redeliver(&caller.tenant, webhook, delivery)
        .await?
        .ok_or(ApiError::not_found("delivery"))?;
    tracing::info!("redelivery requested");
    Ok((StatusCode::ACCEPTED, Json(delivery_view(record))))
}
