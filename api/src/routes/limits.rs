//! Tenant limits: `GET`/`PUT /v1/tenants/{name}/limits` (platform admin). Rate limits
//! per key and per tenant, and quotas; absent fields take the configured defaults. A
//! tenant reads what applies to it in `GET /v1/settings`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use ris_schemas::ids::TenantName;
use ris_schemas::security::TenantLimits;
use ris_store::TenantCtx;

use crate::auth::PlatformAdmin;
use crate::error::{ApiError, ApiResult};
use crate::extract::ValidJson;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/tenants/{name}/limits", get(show).put(update))
}

async fn tenant(state: &AppState, name: &str) -> ApiResult<TenantCtx> {
    let name = TenantName::parse(name).map_err(|e| ApiError::invalid("name", e.to_string()))?;
    Ok(state
        .store
        .get_tenant(&name)
        .await?
        .ok_or(ApiError::not_found("tenant"))?
        .ctx())
}

async fn show(
    State(state): State<AppState>,
    _: PlatformAdmin,
    Path(name): Path<String>,
) -> ApiResult<Json<TenantLimits>> {
    let tenant = tenant(&state, &name).await?;
    Ok(Json(state.store.tenant_limits(&tenant).await?))
}

#[tracing::instrument(skip_all, fields(tenant = %name))]
async fn update(
    State(state): State<AppState>,
    _: PlatformAdmin,
    Path(name): Path<String>,
    ValidJson(limits): ValidJson<TenantLimits>,
) -> ApiResult<Json<TenantLimits>> {
    let tenant = tenant(&state, &name).await?;
    for (field, value) in [
        (
            "requests_per_minute_per_key",
            limits.requests_per_minute_per_key,
        ),
        ("requests_per_minute", limits.requests_per_minute),
    ] {
        if value == Some(0) {
            return Err(ApiError::invalid(
                field,
                format!("`{field}` must be at least 1"),
            ));
        }
    }
    state.store.set_tenant_limits(&tenant, &limits).await?;
    crate::limits::forget(&state, &tenant);
    tracing::info!(?limits, "tenant limits set");
    Ok(Json(limits))
}
