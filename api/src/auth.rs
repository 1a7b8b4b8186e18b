//! Who is calling.
//!
//! Credentials arrive as `Authorization: Bearer <token>`. The bootstrap platform-admin
//! key comes from configuration; tenant API keys from the store. The tenant is always
//! taken from the credential, never from a parameter the caller can change.
//!
//! [`crate::guard`] authenticates every request of a route that needs a permission
//! ([`authenticate`]), checks the permission, and leaves the [`Caller`] in the request's
//! extensions; handlers then state what they act as by their extractor: [`Caller`],
//! [`TenantCaller`] or [`PlatformAdmin`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use chrono::Utc;
use ris_schemas::security::Role;
use ris_store::TenantCtx;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::secrets;
use crate::state::AppState;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The bootstrap admin key.
    PlatformAdmin,
    /// A logged-in user with role `platform-admin`.
    PlatformUser(uuid::Uuid),
    Tenant(TenantCaller),
}

impl Caller {
    pub fn role(&self) -> Role {
        match self {
            Caller::PlatformAdmin | Caller::PlatformUser(_) => Role::PlatformAdmin,
            Caller::Tenant(t) => t.role,
        }
    }

    pub fn tenant(&self) -> Option<&TenantCtx> {
        match self {
            Caller::PlatformAdmin | Caller::PlatformUser(_) => None,
            Caller::Tenant(t) => Some(&t.tenant),
        }
    }

    /// How the audit log names the caller.
    pub fn actor(&self) -> String {
        match self {
            Caller::PlatformAdmin => "platform-admin".to_owned(),
            Caller::PlatformUser(id) => format!("user:{id}"),
            Caller::Tenant(t) => match t.user {
                Some(user) => format!("user:{user}"),
                None => format!("key:{}", t.key_id),
            },
        }
    }
}

/// A caller acting in one tenant: with one of its API keys, or as one of its users.
#[derive(Debug, Clone)]
pub struct TenantCaller {
    pub tenant: TenantCtx,
    /// The credential: the API key's id, or for a user the login session's id (rate
    /// limits are per credential).
    pub key_id: ris_schemas::ids::ApiKeyId,
    pub role: Role,
    /// The user, when a person logged in (not an API key).
    pub user: Option<uuid::Uuid>,
}

impl Caller {
    /// The signed-in user, if the credential is a user's access token.
    pub fn user(&self) -> Option<uuid::Uuid> {
        match self {
            Caller::PlatformUser(id) => Some(*id),
            Caller::Tenant(t) => t.user,
            Caller::PlatformAdmin => None,
        }
    }

    pub fn is_platform(&self) -> bool {
        self.tenant().is_none()
    }
}

/// The platform administrator.
#[derive(Debug, Clone, Copy)]
pub struct PlatformAdmin;

/// A refused credential, with the tenant it claimed when that is known (for the audit
/// log: a wrong secret for an existing key is recorded in that key's tenant).
#[derive(Debug)]
pub struct AuthFailure {
    pub error: ApiError,
    pub tenant: Option<TenantCtx>,
    pub actor: String,
}

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

/// Checks the bearer credential: the bootstrap admin key, or a tenant API key that is
/// neither revoked nor expired and whose secret matches (constant time). Key records
/// are briefly cached ([`crate::cache`]); the checks run on every request.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, AuthFailure> {
    let anonymous = |error| AuthFailure {
        error,
        tenant: None,
        actor: "anonymous".to_owned(),
    };
    let token = bearer(headers).map_err(anonymous)?;
    if crate::jwt::looks_like_jwt(token) {
        return user_caller(state, token).await;
    }
    if let Some(admin_key) = state.config.bootstrap_admin_key.as_deref() {
        if bool::from(token.as_bytes().ct_eq(admin_key.as_bytes())) {
            return Ok(Caller::PlatformAdmin);
        }
    }
    let invalid = || ApiError::unauthorized("invalid or revoked API key, or expired");
    let (id, secret) = secrets::parse_api_key(token).ok_or_else(|| anonymous(invalid()))?;
    let key = match state.caches.credential(id) {
        Some(key) => key,
        None => {
            let key = state
                .store
                .find_api_key(id)
                .await
                .map_err(|e| anonymous(e.into()))?
                .ok_or_else(|| anonymous(invalid()))?;
            let key = std::sync::Arc::new(key);
            state.caches.keep_credential(key.clone());
            key
        }
    };
    let expired = key.expires_at.is_some_and(|at| at <= Utc::now());
    let role = Role::parse(&key.role);
    let refused = |error| AuthFailure {
        error,
        tenant: Some(key.tenant.ctx()),
        actor: format!("key:{}", key.id),
    };
    if key.revoked_at.is_some() || expired || !secrets::matches_hash(secret, &key.secret_hash) {
        return Err(refused(invalid()));
    }
    let Some(role) =
        role.filter(|r| matches!(r, Role::TenantAdmin | Role::Operator | Role::Viewer))
    else {
        tracing::error!(key_id = %key.id, role = %key.role, "API key with an unknown role");
        return Err(refused(invalid()));
    };
    tracing::Span::current().record("tenant", key.tenant.name.as_str());
    Ok(Caller::Tenant(TenantCaller {
        tenant: key.tenant.ctx(),
        key_id: key.id,
        role,
        user: None,
    }))
}

/// A user's access token: valid JWT, live session, current role from the database.
async fn user_caller(state: &AppState, token: &str) -> Result<Caller, AuthFailure> {
    let refused = |why: &str, tenant: Option<TenantCtx>, actor: String| AuthFailure {
        error: ApiError::unauthorized(format!("invalid access token: {why}")),
        tenant,
        actor,
    };
    let claims = crate::jwt::verify(state, token)
        .await
        .map_err(|why| refused(why, None, "anonymous".to_owned()))?;
    let user = state
        .store
        .live_session(claims.sid)
        .await
        .map_err(|e| AuthFailure {
            error: e.into(),
            tenant: None,
            actor: "anonymous".to_owned(),
        })?
        .filter(|u| u.id == claims.sub)
        .ok_or_else(|| refused("session ended", None, format!("user:{}", claims.sub)))?;
    let Some(role) = Role::parse(&user.role) else {
        return Err(refused("unknown role", None, format!("user:{}", user.id)));
    };
    match (role, user.tenant) {
        (Role::PlatformAdmin, None) => Ok(Caller::PlatformUser(user.id)),
        (Role::TenantAdmin | Role::Operator | Role::Viewer, Some(tenant)) => {
            tracing::Span::current().record("tenant", tenant.name.as_str());
            Ok(Caller::Tenant(TenantCaller {
                tenant: tenant.ctx(),
                key_id: ris_schemas::ids::ApiKeyId(claims.sid),
                role,
                user: Some(user.id),
            }))
        }
        _ => Err(refused(
            "inconsistent user",
            None,
            format!("user:{}", user.id),
        )),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Normally the guard has authenticated the request already.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        authenticate(state, &parts.headers)
            .await
            .map_err(|f| f.error)
    }
}

impl FromRequestParts<AppState> for TenantCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Tenant(t) => Ok(t),
            Caller::PlatformAdmin | Caller::PlatformUser(_) => Err(tenant_credential_required()),
        }
    }
}

pub fn tenant_credential_required() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "tenant_credential_required",
        "this endpoint acts inside a tenant: use one of the tenant's API keys",
    )
}

impl FromRequestParts<AppState> for PlatformAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::PlatformAdmin | Caller::PlatformUser(_) => Ok(PlatformAdmin),
            Caller::Tenant(_) => Err(ApiError::forbidden(
                "platform_admin_required",
                "only the platform administrator may do this",
            )),
        }
    }
}
