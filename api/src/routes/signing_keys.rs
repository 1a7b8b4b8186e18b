//! Message signing keys (platform admin): `GET /v1/signing-keys`, `POST
//! /v1/signing-keys` (rotate: publish a new key that starts signing after
//! `activate_in_secs`, default 60, so every agent learns it from its heartbeat first),
//! `DELETE /v1/signing-keys/{kid}` (retire a key that no longer signs).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use ris_schemas::security::{RotateSigningKey, SigningKeyView};

use crate::auth::PlatformAdmin;
use crate::error::{ApiError, ApiResult};
use crate::extract::ValidJson;
use crate::signing;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signing-keys", get(list).post(rotate))
        .route("/signing-keys/{kid}", delete(retire))
}

const MAX_DELAY_SECS: u32 = 24 * 3600;

async fn list(
    State(state): State<AppState>,
    _: PlatformAdmin,
) -> ApiResult<Json<Vec<SigningKeyView>>> {
    signing::forget(&state).await;
    Ok(Json(signing::public_keys(&state).await?))
}

#[tracing::instrument(skip_all)]
async fn rotate(
    State(state): State<AppState>,
    _: PlatformAdmin,
    ValidJson(body): ValidJson<RotateSigningKey>,
) -> ApiResult<(StatusCode, Json<SigningKeyView>)> {
    let delay = body.activate_in_secs.unwrap_or(60);
    if delay > MAX_DELAY_SECS {
        return Err(ApiError::invalid(
            "activate_in_secs",
            format!("`activate_in_secs` is at most {MAX_DELAY_SECS}"),
        ));
    }
    let record = state
        .store
        .add_signing_key(signing::new_key(), Duration::from_secs(u64::from(delay)))
        .await?;
    signing::forget(&state).await;
    tracing::info!(kid = %record.kid, activate_at = %record.activate_at, "signing key added");
    Ok((StatusCode::CREATED, Json(signing::view(&record))))
}

#[tracing::instrument(skip_all, fields(kid = %kid))]
async fn retire(
    State(state): State<AppState>,
    _: PlatformAdmin,
    Path(kid): Path<String>,
) -> ApiResult<StatusCode> {
    let current = state.store.current_signing_key(signing::new_key()).await?;
    if current.kid == kid {
        return Err(ApiError::conflict(
            "signing_key_in_use",
            "this key signs now: add a new key and wait for it to activate first",
        ));
    }
    if !state.store.retire_signing_key(&kid).await? {
        return Err(ApiError::not_found("signing key"));
    }
    signing::forget(&state).await;
    tracing::info!("signing key retired");
    Ok(StatusCode::NO_CONTENT)
}
