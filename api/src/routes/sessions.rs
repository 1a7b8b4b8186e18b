//! Logging in: `POST /v1/auth/login` (email, password, and a TOTP code once the user
//! has one — always for admin roles) → an access JWT and a refresh token;
//! `POST /v1/auth/refresh` swaps a refresh token for a new pair (each refresh token
//! works once); `POST /v1/auth/logout` ends the session, and with it every access
//! token issued in it.
//!
//! Every attempt is in the audit log (the guard records it; these handlers name the
//! user and tenant), failed ones included.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use ris_schemas::users::{LoginRequest, RefreshRequest, TokenPair};
use ris_store::UserRecord;
use uuid::Uuid;

use crate::audit::AuditNote;
use crate::error::{ApiError, ApiResult};
use crate::extract::ValidJson;
use crate::state::AppState;
use crate::{jwt, passwords, secrets};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
}

/// Lifetime of a session (its refresh tokens).
const SESSION_DAYS: i64 = 30;

fn note(user: Option<&UserRecord>, email: &str) -> AuditNote {
    AuditNote {
        tenant: user.and_then(|u| u.tenant.as_ref().map(|t| t.ctx())),
        actor: user.map(|u| format!("user:{}", u.id)),
        target: Some(format!(
            "login:{}",
            email.chars().take(100).collect::<String>()
        )),
    }
}

fn bad_credentials() -> ApiError {
    ApiError::unauthorized("invalid email, password or code")
}

async fn pair(
    state: &AppState,
    user: &UserRecord,
    session: Uuid,
    refresh: String,
) -> ApiResult<TokenPair> {
    Ok(TokenPair {
        access_token: jwt::issue(state, &jwt::claims_for(user, session)).await?,
        token_type: "Bearer".into(),
        expires_in: jwt::ACCESS_TTL_SECS,
        refresh_token: refresh,
    })
}

#[tracing::instrument(skip_all)]
async fn login(State(state): State<AppState>, ValidJson(req): ValidJson<LoginRequest>) -> Response {
    if let Some(refused) = crate::limits::charge_login(&state, &req.email).await {
        return note(None, &req.email).attach(refused);
    }
    let user = match state.store.find_user_by_email(&req.email).await {
        Ok(u) => u,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let outcome = check_login(&state, user.as_ref(), &req).await;
    let response = match (outcome, &user) {
        (Ok(()), Some(user)) => {
            let session = Uuid::now_v7();
            let refresh = format!("rrt_{}", secrets::random_secret());
            let expires = Utc::now() + chrono::Duration::days(SESSION_DAYS);
            let stored = state
                .store
                .insert_session(session, user.id, &secrets::sha256(&refresh), expires)
                .await;
            match stored {
                Err(e) => ApiError::from(e).into_response(),
                Ok(()) => match pair(&state, user, session, refresh).await {
                    Ok(tokens) => {
                        tracing::info!(user_id = %user.id, "logged in");
                        Json(tokens).into_response()
                    }
                    Err(e) => e.into_response(),
                },
            }
        }
        (Ok(()), None) => bad_credentials().into_response(),
        (Err(e), _) => e.into_response(),
    };
    note(user.as_ref(), &req.email).attach(response)
}

async fn check_login(
    state: &AppState,
    user: Option<&UserRecord>,
    req: &LoginRequest,
) -> ApiResult<()> {
    let password = req.password.clone();
    let hash = user.map(|u| u.password_hash.clone());
    let matches =
        tokio::task::spawn_blocking(move || passwords::verify_password(&password, hash.as_deref()))
            .await
            .unwrap_or(false);
    let Some(user) = user.filter(|_| matches) else {
        return Err(bad_credentials());
    };
    let admin = matches!(user.role.as_str(), "platform-admin" | "tenant-admin");
    if !user.totp_enabled && !admin {
        return Ok(());
    }
    let Some(secret) = user.totp_secret.as_deref().filter(|_| user.totp_enabled) else {
        // An admin without TOTP cannot log in (creation sets it up; this is a guard).
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "totp_setup_required",
            "this role needs TOTP: ask an administrator to set it up",
        ));
    };
    let Some(code) = req.totp.as_deref() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "totp_required",
            "a TOTP code is required (`totp`)",
        )
        .with_field("totp"));
    };
    let step =
        passwords::verify_totp(secret, code, Utc::now().timestamp()).ok_or_else(bad_credentials)?;
    // Each code works once.
    let fresh = state
        .presence
        .remember_once(
            &format!("totp:{}:{step}", user.id),
            Duration::from_secs(120),
        )
        .await?;
    if !fresh {
        return Err(bad_credentials());
    }
    Ok(())
}

#[tracing::instrument(skip_all)]
async fn refresh(
    State(state): State<AppState>,
    ValidJson(req): ValidJson<RefreshRequest>,
) -> ApiResult<Response> {
    let next = format!("rrt_{}", secrets::random_secret());
    let rotated = state
        .store
        .rotate_refresh(
            &secrets::sha256(&req.refresh_token),
            &secrets::sha256(&next),
        )
        .await?;
    let Some((session, user)) = rotated else {
        return Err(ApiError::unauthorized(
            "invalid, used or revoked refresh token",
        ));
    };
    let tokens = pair(&state, &user, session, next).await?;
    Ok(note(Some(&user), &user.email).attach(Json(tokens).into_response()))
}

#[tracing::instrument(skip_all)]
async fn logout(
    State(state): State<AppState>,
    ValidJson(req): ValidJson<RefreshRequest>,
) -> ApiResult<StatusCode> {
    if !state
        .store
        .revoke_session(&secrets::sha256(&req.refresh_token))
        .await?
    {
        return Err(ApiError::unauthorized(
            "unknown or already revoked refresh token",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Access token keys (platform admin): `GET /v1/auth/keys` (kids only), `POST
/// /v1/auth/keys` (a new key signs from now on; tokens signed with older keys stay
/// valid), `DELETE /v1/auth/keys/{kid}` (retire: tokens it signed stop working).
pub fn keys_router() -> Router<AppState> {
    Router::new()
        .route("/auth/keys", axum::routing::get(list_keys).post(add_key))
        .route("/auth/keys/{kid}", axum::routing::delete(retire_key))
}

async fn list_keys(
    State(state): State<AppState>,
    _: crate::auth::PlatformAdmin,
) -> ApiResult<Json<Vec<ris_schemas::security::JwtKeyView>>> {
    state.store.current_jwt_key(jwt::new_key()).await?;
    let keys = state.store.jwt_keys().await?;
    Ok(Json(keys.iter().map(key_view).collect()))
}

fn key_view(k: &ris_store::JwtKeyRecord) -> ris_schemas::security::JwtKeyView {
    ris_schemas::security::JwtKeyView {
        kid: k.kid.clone(),
        activate_at: k.activate_at,
    }
}

#[tracing::instrument(skip_all)]
async fn add_key(
    State(state): State<AppState>,
    _: crate::auth::PlatformAdmin,
) -> ApiResult<(StatusCode, Json<ris_schemas::security::JwtKeyView>)> {
    let key = state.store.add_jwt_key(jwt::new_key()).await?;
    tracing::info!(kid = %key.kid, "access token key added");
    Ok((StatusCode::CREATED, Json(key_view(&key))))
}

#[tracing::instrument(skip_all, fields(kid = %kid))]
async fn retire_key(
    State(state): State<AppState>,
    _: crate::auth::PlatformAdmin,
    axum::extract::Path(kid): axum::extract::Path<String>,
) -> ApiResult<StatusCode> {
    if state.store.current_jwt_key(jwt::new_key()).await?.kid == kid {
        return Err(ApiError::conflict(
            "signing_key_in_use",
            "this key signs now: add a new key first",
        ));
    }
    if !state.store.retire_jwt_key(&kid).await? {
        return Err(ApiError::not_found("access token key"));
    }
    jwt::forget(&state).await;
    tracing::info!("access token key retired");
    Ok(StatusCode::NO_CONTENT)
}
