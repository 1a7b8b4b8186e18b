//! API keys: `POST /v1/api-keys`, `GET /v1/api-keys`, `DELETE /v1/api-keys/{id}`.
//!
//! The platform admin creates a tenant's first key (naming the tenant in the body, or
//! with `?tenant=` to list and revoke); a `tenant-admin` key manages its own tenant's
//! keys only. A key carries a role (`tenant-admin` by default, `operator`, `viewer`)
//! and an optional expiry. The secret is shown once; only a hash is kept, and listings
//! never show it. Revoked and expired keys get 401.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use chrono::Utc;
use ris_schemas::api::{ApiKeyCreated, CreateApiKey};
use ris_schemas::ids::{ApiKeyId, TenantName};
use ris_schemas::security::{ApiKeyView, Role};
use ris_store::{ApiKeyRecord, TenantCtx};
use serde::Deserialize;

use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_param, ValidJson};
use crate::secrets;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api-keys", post(create).get(list))
        .route("/api-keys/{id}", delete(revoke))
}

/// Role of a key whose creator names none: what keys always were before roles.
pub const DEFAULT_ROLE: Role = Role::TenantAdmin;

#[derive(Debug, Deserialize)]
struct TenantQuery {
    tenant: Option<TenantName>,
}

/// The tenant a key call acts on: the caller's own, or the one the platform admin names.
async fn target_tenant(
    state: &AppState,
    caller: Caller,
    named: Option<TenantName>,
) -> ApiResult<TenantCtx> {
    match (caller, named) {
        (Caller::PlatformAdmin | Caller::PlatformUser(_), None) => Err(ApiError::invalid(
            "tenant",
            "`tenant` is required when the platform admin manages keys",
        )),
        (Caller::PlatformAdmin | Caller::PlatformUser(_), Some(name)) => Ok(state
            .store
            .get_tenant(&name)
            .await?
            .ok_or(ApiError::not_found("tenant"))?
            .ctx()),
        (Caller::Tenant(t), None) => Ok(t.tenant),
        (Caller::Tenant(t), Some(name)) if name == t.tenant.name => Ok(t.tenant),
        (Caller::Tenant(_), Some(_)) => Err(ApiError::forbidden(
            "other_tenant",
            "a tenant key can manage keys of its own tenant only",
        )
        .with_field("tenant")),
    }
}

#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<CreateApiKey>,
) -> ApiResult<Response> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 || name.contains('\0') {
        return Err(ApiError::invalid(
            "name",
            "`name` must be 1 to 100 characters",
        ));
    }
    let role = body.role.unwrap_or(DEFAULT_ROLE);
    if !matches!(role, Role::TenantAdmin | Role::Operator | Role::Viewer) {
        return Err(ApiError::invalid(
            "role",
            "an API key's role is `tenant-admin`, `operator` or `viewer`",
        ));
    }
    if body.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::invalid(
            "expires_at",
            "`expires_at` must be in the future",
        ));
    }
    let tenant = target_tenant(&state, caller, body.tenant).await?;
    let (id, key, hash) = secrets::new_api_key();
    let record = state
        .store
        .insert_api_key(&tenant, id, name, role.as_str(), &hash, body.expires_at)
        .await?;
    tracing::info!(tenant = %tenant.name, key_id = %id, %role, "api key created");
    let created = ApiKeyCreated {
        id,
        name: record.name,
        tenant: tenant.name.clone(),
        key,
        created_at: record.created_at,
        role,
        expires_at: record.expires_at,
    };
    let note = AuditNote {
        tenant: Some(tenant),
        target: Some(format!("api-key:{id}")),
        ..AuditNote::default()
    };
    Ok(note.attach((StatusCode::CREATED, Json(created)).into_response()))
}

fn view(r: ApiKeyRecord) -> ApiKeyView {
    ApiKeyView {
        id: r.id,
        role: Role::parse(&r.role).unwrap_or(Role::Viewer),
        name: r.name,
        tenant: r.tenant.name,
        created_at: r.created_at,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
    }
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<TenantQuery>,
) -> ApiResult<Json<Vec<ApiKeyView>>> {
    let tenant = target_tenant(&state, caller, q.tenant).await?;
    let keys = state.store.list_api_keys(&tenant).await?;
    Ok(Json(keys.into_iter().map(view).collect()))
}

#[tracing::instrument(skip_all)]
async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<TenantQuery>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id: ApiKeyId = parse_param("id", &id)?;
    let tenant = target_tenant(&state, caller, q.tenant).await?;
    if !state.store.revoke_api_key(&tenant, id).await? {
        return Err(ApiError::not_found("api key"));
    }
    state.caches.forget_credential(id);
    tracing::info!(tenant = %tenant.name, key_id = %id, "api key revoked");
    let note = AuditNote {
        tenant: Some(tenant),
        target: Some(format!("api-key:{id}")),
        ..AuditNote::default()
    };
    Ok(note.attach(StatusCode::NO_CONTENT.into_response()))
}
