//! Who is calling.
//!
//! Credentials arrive as `Authorization: Bearer <token>`. The bootstrap platform-admin
//! key comes from configuration; tenant API keys from the store. The tenant is always
//! taken from the credential, never from a parameter the caller can change.
//!
//! Handlers state what they need by their extractor: [`PlatformAdmin`], [`TenantCaller`],
//! or [`Caller`] (either). Roles beyond these two arrive with users and JWTs; they will
//! refine [`Caller`] without touching handlers that only need a tenant.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use chrono::Utc;
use ris_store::TenantCtx;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::secrets;
use crate::state::AppState;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub enum Caller {
    PlatformAdmin,
    Tenant(TenantCaller),
}

/// A caller holding a tenant's API key.
#[derive(Debug, Clone)]
pub struct TenantCaller {
    pub tenant: TenantCtx,
    pub key_id: ris_schemas::ids::ApiKeyId,
    pub role: String,
}

/// The platform administrator.
#[derive(Debug, Clone, Copy)]
pub struct PlatformAdmin;

pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer credential"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Authorization header must be `Bearer <key>`"))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?;
        if let Some(admin_key) = state.config.bootstrap_admin_key.as_deref() {
            if bool::from(token.as_bytes().ct_eq(admin_key.as_bytes())) {
                return Ok(Caller::PlatformAdmin);
            }
        }
        let invalid = || ApiError::unauthorized("invalid or revoked API key");
        let (id, secret) = secrets::parse_api_key(token).ok_or_else(invalid)?;
        let key = state.store.find_api_key(id).await?.ok_or_else(invalid)?;
        let expired = key.expires_at.is_some_and(|at| at <= Utc::now());
        if key.revoked_at.is_some() || expired || !secrets::matches_hash(secret, &key.secret_hash) {
            return Err(invalid());
        }
        tracing::Span::current().record("tenant", key.tenant.name.as_str());
        Ok(Caller::Tenant(TenantCaller {
            tenant: key.tenant.ctx(),
            key_id: key.id,
            role: key.role,
        }))
    }
}

impl FromRequestParts<AppState> for TenantCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Tenant(t) => Ok(t),
            Caller::PlatformAdmin => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_credential_required",
                "this endpoint acts inside a tenant: use one of the tenant's API keys",
            )),
        }
    }
}

impl FromRequestParts<AppState> for PlatformAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::PlatformAdmin => Ok(PlatformAdmin),
            Caller::Tenant(_) => Err(ApiError::forbidden(
                "platform_admin_required",
                "only the platform administrator may do this",
            )),
        }
    }
}
