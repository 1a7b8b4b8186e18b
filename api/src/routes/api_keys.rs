//! API keys: `POST /v1/api-keys`.
//!
//! The platform admin creates a tenant's first key (naming the tenant in the body);
//! a tenant key may create more keys for its own tenant only. The key is shown once;
//! only a hash is kept.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use ris_schemas::api::{ApiKeyCreated, CreateApiKey};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ValidJson;
use crate::secrets;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api-keys", post(create))
}

const DEFAULT_ROLE: &str = "tenant-admin";

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<ApiKeyCreated>)> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 || name.contains('\0') {
        return Err(ApiError::invalid(
            "name",
            "`name` must be 1 to 100 characters",
        ));
    }
    let tenant = match (caller, body.tenant) {
        (Caller::PlatformAdmin, None) => {
            return Err(ApiError::invalid(
                "tenant",
                "`tenant` is required when the platform admin creates a key",
            ))
        }
        (Caller::PlatformAdmin, Some(name)) => state
            .store
            .get_tenant(&name)
            .await?
            .ok_or(ApiError::not_found("tenant"))?
            .ctx(),
        (Caller::Tenant(t), None) => t.tenant,
        (Caller::Tenant(t), Some(name)) if name == t.tenant.name => t.tenant,
        (Caller::Tenant(_), Some(_)) => {
            return Err(ApiError::forbidden(
                "other_tenant",
                "a tenant key can create keys for its own tenant only",
            )
            .with_field("tenant"))
        }
    };
    let (id, key, hash) = secrets::new_api_key();
    let record = state
        .store
        .insert_api_key(&tenant, id, name, DEFAULT_ROLE, &hash)
        .await?;
    tracing::info!(tenant = %tenant.name, key_id = %id, "api key created");
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyCreated {
            id,
            name: record.name,
            tenant: tenant.name,
            key,
            created_at: record.created_at,
        }),
    ))
}
