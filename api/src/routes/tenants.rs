//! Tenants: `POST/GET /v1/tenants`, `GET/DELETE /v1/tenants/{name}` (platform admin).
//!
//! A tenant is a row, a RabbitMQ vhost `ris.<name>` with its topology, and a scope on
//! everything else. Creating and deleting are idempotent: a retry after a partial
//! failure finishes the job.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use ris_schemas::api::{CreateTenant, TenantView};
use ris_schemas::ids::TenantName;
use ris_store::Tenant;

use crate::auth::PlatformAdmin;
use crate::error::{ApiError, ApiResult};
use crate::extract::ValidJson;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tenants", post(create).get(list))
        .route("/tenants/{name}", get(show).delete(remove))
}

fn view(t: Tenant) -> TenantView {
    TenantView {
        vhost: t.name.vhost(),
        name: t.name,
        created_at: t.created_at,
    }
}

fn parse_name(raw: &str) -> ApiResult<TenantName> {
    TenantName::parse(raw).map_err(|e| ApiError::invalid("name", e.0))
}

#[tracing::instrument(skip_all, fields(tenant = %body.name))]
async fn create(
    State(state): State<AppState>,
    _: PlatformAdmin,
    ValidJson(body): ValidJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantView>)> {
    let (tenant, created) = state.store.create_tenant(&body.name).await?;
    ris_broker::provision_tenant(&state.config.broker, &state.management, &tenant.name).await?;
    let status = if created {
        tracing::info!("tenant created");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(tenant))))
}

async fn list(State(state): State<AppState>, _: PlatformAdmin) -> ApiResult<Json<Vec<TenantView>>> {
    let tenants = state.store.list_tenants().await?;
    Ok(Json(tenants.into_iter().map(view).collect()))
}

async fn show(
    State(state): State<AppState>,
    _: PlatformAdmin,
    Path(name): Path<String>,
) -> ApiResult<Json<TenantView>> {
    let name = parse_name(&name)?;
    let tenant = state
        .store
        .get_tenant(&name)
        .await?
        .ok_or(ApiError::not_found("tenant"))?;
    Ok(Json(view(tenant)))
}

/// Tears down the broker side first (users, then the vhost with its queues), then the
/// rows, then live state. 204 whether or not the tenant existed.
#[tracing::instrument(skip_all, fields(tenant = %name))]
async fn remove(
    State(state): State<AppState>,
    _: PlatformAdmin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let name = parse_name(&name)?;
    state.brokers.forget(&name).await;
    ris_broker::deprovision_tenant(&state.management, &name).await?;
    if state.store.delete_tenant(&name).await? {
        tracing::info!("tenant deleted");
    }
    state.caches.forget_all();
    state.presence.purge_tenant(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
