//! Users: `POST /v1/users`, `GET /v1/users` (platform admin, or a tenant admin for its
//! own tenant), and TOTP set-up for oneself: `POST /v1/users/me/totp` (a new secret,
//! pending) and `POST /v1/users/me/totp/confirm` (a code from it turns it on).
//!
//! Admin roles get TOTP at creation: the answer carries the `otpauth://` URI once, for
//! the new user's authenticator app. Only an argon2id hash of the password is kept.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use ris_schemas::ids::TenantName;
use ris_schemas::security::Role;
use ris_schemas::users::{CreateUser, TotpConfirm, TotpEnrollment, UserCreated, UserView};
use ris_store::{NewUser, TenantCtx, UserRecord};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ValidJson;
use crate::passwords;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", post(create).get(list))
        .route("/users/me/totp", post(totp_begin))
        .route("/users/me/totp/confirm", post(totp_confirm))
}

pub fn view(u: &UserRecord) -> UserView {
    UserView {
        id: u.id,
        email: u.email.clone(),
        role: Role::parse(&u.role).unwrap_or(Role::Viewer),
        tenant: u.tenant.as_ref().map(|t| t.name.clone()),
        totp_enabled: u.totp_enabled,
        created_at: u.created_at,
    }
}

async fn tenant_of(
    state: &AppState,
    caller: &Caller,
    named: Option<TenantName>,
) -> ApiResult<Option<TenantCtx>> {
    match (caller.tenant(), named) {
        (Some(own), None) => Ok(Some(own.clone())),
        (Some(own), Some(n)) if n == own.name => Ok(Some(own.clone())),
        (Some(_), Some(_)) => Err(ApiError::forbidden(
            "other_tenant",
            "a tenant admin manages users of its own tenant only",
        )
        .with_field("tenant")),
        (None, None) => Ok(None),
        (None, Some(n)) => Ok(Some(
            state
                .store
                .get_tenant(&n)
                .await?
                .ok_or(ApiError::not_found("tenant"))?
                .ctx(),
        )),
    }
}

#[tracing::instrument(skip_all)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserCreated>)> {
    let email = body.email.trim().to_lowercase();
    if email.len() < 3
        || email.len() > 254
        || !email.contains('@')
        || email.chars().any(char::is_whitespace)
    {
        return Err(ApiError::invalid(
            "email",
            "`email` must be an email address",
        ));
    }
    let len = body.password.chars().count();
    if !(passwords::MIN_PASSWORD..=passwords::MAX_PASSWORD).contains(&len) {
        return Err(ApiError::invalid(
            "password",
            format!(
                "`password` must be {} to {} characters",
                passwords::MIN_PASSWORD,
                passwords::MAX_PASSWORD
            ),
        ));
    }
    let tenant = tenant_of(&state, &caller, body.tenant).await?;
    match (body.role, &tenant) {
        (Role::PlatformAdmin, None)
        | (Role::TenantAdmin | Role::Operator | Role::Viewer, Some(_)) => {}
        (Role::Agent, _) => return Err(ApiError::invalid("role", "`agent` is not a user role")),
        (Role::PlatformAdmin, Some(_)) => {
            return Err(ApiError::invalid(
                "role",
                "a tenant's user cannot be a platform admin",
            ))
        }
        (_, None) => {
            return Err(ApiError::invalid(
                "tenant",
                "`tenant` is required for this role",
            ))
        }
    }
    let admin = matches!(body.role, Role::PlatformAdmin | Role::TenantAdmin);
    let totp_secret = admin.then(passwords::new_totp_secret);
    let password = body.password;
    let password_hash = tokio::task::spawn_blocking(move || passwords::hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))?;
    let new = NewUser {
        id: Uuid::now_v7(),
        email: email.clone(),
        role: body.role.as_str().to_owned(),
        password_hash,
        totp_secret: totp_secret.clone(),
    };
    let user = state
        .store
        .insert_user(tenant.as_ref(), new)
        .await?
        .ok_or_else(|| {
            ApiError::conflict("email_taken", "a user with this email exists").with_field("email")
        })?;
    tracing::info!(user_id = %user.id, role = %body.role, "user created");
    let totp = totp_secret.map(|s| TotpEnrollment {
        otpauth_uri: passwords::otpauth_uri(&email, &s),
        secret: passwords::base32(&s),
    });
    Ok((
        StatusCode::CREATED,
        Json(UserCreated {
            user: view(&user),
            totp,
        }),
    ))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<UserView>>> {
    let named = q
        .get("tenant")
        .map(|t| TenantName::parse(t).map_err(|e| ApiError::invalid("tenant", e.to_string())))
        .transpose()?;
    let tenant = tenant_of(&state, &caller, named).await?;
    let users = state.store.list_users(tenant.as_ref()).await?;
    Ok(Json(users.iter().map(view).collect()))
}

fn me(caller: &Caller) -> ApiResult<Uuid> {
    caller.user().ok_or_else(|| {
        ApiError::forbidden(
            "user_credential_required",
            "sign in as a user (not with an API key)",
        )
    })
}

async fn find_me(state: &AppState, caller: &Caller) -> ApiResult<UserRecord> {
    let id = me(caller)?;
    let users = state.store.list_users(caller.tenant()).await?;
    users
        .into_iter()
        .find(|u| u.id == id)
        .ok_or(ApiError::not_found("user"))
}

#[tracing::instrument(skip_all)]
async fn totp_begin(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<TotpEnrollment>)> {
    let user = find_me(&state, &caller).await?;
    let secret = passwords::new_totp_secret();
    // Pending until confirmed, unless TOTP was already on (admins): then it replaces
    // the old secret at once, and the caller proved the old one at login.
    state
        .store
        .set_totp(user.id, &secret, user.totp_enabled)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TotpEnrollment {
            otpauth_uri: passwords::otpauth_uri(&user.email, &secret),
            secret: passwords::base32(&secret),
        }),
    ))
}

#[tracing::instrument(skip_all)]
async fn totp_confirm(
    State(state): State<AppState>,
    caller: Caller,
    ValidJson(body): ValidJson<TotpConfirm>,
) -> ApiResult<StatusCode> {
    let user = find_me(&state, &caller).await?;
    let secret = user
        .totp_secret
        .ok_or_else(|| ApiError::conflict("no_totp", "start with POST /v1/users/me/totp"))?;
    if passwords::verify_totp(&secret, &body.code, Utc::now().timestamp()).is_none() {
        return Err(ApiError::invalid("code", "the code does not match"));
    }
    state.store.enable_totp(user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
