//! Tenant settings: `GET /v1/settings`, `PUT /v1/settings` (tenant API key).
//!
//! Today one setting: the default retry policy of tasks that carry none.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use ris_schemas::api::TenantSettings;

use crate::auth::TenantCaller;
use crate::error::ApiResult;
use crate::extract::ValidJson;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/settings", get(show).put(update))
}

async fn show(
    State(state): State<AppState>,
    caller: TenantCaller,
) -> ApiResult<Json<TenantSettings>> {
    let retry = state.store.tenant_default_retry(&caller.tenant).await?;
    let limits = Some(crate::limits::effective(&state, &caller.tenant).await?);
    Ok(Json(TenantSettings { retry, limits }))
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name))]
async fn update(
    State(state): State<AppState>,
    caller: TenantCaller,
    ValidJson(settings): ValidJson<TenantSettings>,
) -> ApiResult<Json<TenantSettings>> {
    state
        .store
        .set_tenant_default_retry(&caller.tenant, settings.retry.as_ref())
        .await?;
    tracing::info!(retry = ?settings.retry, "tenant settings updated");
    let limits = Some(crate::limits::effective(&state, &caller.tenant).await?);
    Ok(Json(TenantSettings { limits, ..settings }))
}
