//! Inbound webhooks: `POST /v1/hooks`, `GET /v1/hooks`, `DELETE /v1/hooks/{id}` (tenant
//! key), and the trigger `POST /v1/hooks/{id}` (no key: signed with the hook's secret).
//!
//! A trigger carries `RIS-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<raw body>")>`, the scheme of RIS's outbound webhooks. It is refused (401) when
//! the header is missing or malformed, the HMAC does not match, `t` is more than
//! [`TOLERANCE_SECS`] from now, or the same signature was already used (Redis remembers
//! it for [`REPLAY_TTL`], longer than the window in which it could be accepted). The
//! body's declared fields then fill the template's placeholders; the result must be a
//! valid task, stored and published exactly as `POST /v1/tasks` does.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::Utc;
use hmac::{Hmac, Mac};
use ris_schemas::api::{Page, TaskAccepted};
use ris_schemas::hooks::{CreateInboundHook, HookTemplate, InboundHookId, InboundHookView};
use ris_schemas::task::TaskRequest;
use ris_store::{InboundHookRecord, NewInboundHook, TenantCtx};
use sha2::Sha256;

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{parse_json, parse_param, ValidJson};
use crate::state::AppState;

/// Hooks a tenant may hold.
const MAX_HOOKS: usize = 100;
/// How far a trigger's `t` may be from now, either way.
pub const TOLERANCE_SECS: i64 = 300;
/// How long a used signature is remembered: past the tolerance on both sides.
const REPLAY_TTL: Duration = Duration::from_secs(600);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/hooks", get(list).post(create))
        .route("/hooks/{id}", delete(remove).post(trigger))
}

fn view(h: InboundHookRecord) -> InboundHookView {
    InboundHookView {
        path: format!("/v1/hooks/{}", h.id),
        id: h.id,
        name: h.name,
        template: h.template.template().clone(),
        fields: h.template.fields().to_vec(),
        created_at: h.created_at,
    }
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, hook))]
async fn create(
    State(state): State<AppState>,
    caller: TenantCaller,
    ValidJson(body): ValidJson<CreateInboundHook>,
) -> ApiResult<(StatusCode, Json<InboundHookView>)> {
    let template = HookTemplate::new(body.template, body.fields)
        .map_err(|e| ApiError::invalid(e.field, e.message))?;
    let tenant = &caller.tenant;
    if state.store.list_inbound_hooks(tenant).await?.len() >= MAX_HOOKS {
        return Err(ApiError::conflict(
            "too_many_hooks",
            format!("a tenant may hold at most {MAX_HOOKS} inbound hooks"),
        ));
    }
    let hook = NewInboundHook {
        id: InboundHookId::new(),
        name: body.name,
        secret: body.secret,
        template,
    };
    let record = state
        .store
        .insert_inbound_hook(tenant, &hook)
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "hook_exists",
                "the tenant already has a hook with this name",
            )
            .with_field("name")
        })?;
    tracing::Span::current().record("hook", tracing::field::display(record.id));
    tracing::info!("inbound hook created");
    Ok((StatusCode::CREATED, Json(view(record))))
}

async fn list(
    State(state): State<AppState>,
    caller: TenantCaller,
) -> ApiResult<Json<Page<InboundHookView>>> {
    let hooks = state.store.list_inbound_hooks(&caller.tenant).await?;
    Ok(Json(Page {
        items: hooks.into_iter().map(view).collect(),
        next_cursor: None,
    }))
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, hook = %id))]
async fn remove(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id: InboundHookId = parse_param("id", &id)?;
    if !state.store.delete_inbound_hook(&caller.tenant, id).await? {
        return Err(ApiError::not_found("hook"));
    }
    tracing::info!("inbound hook deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[tracing::instrument(skip_all, fields(hook = %id, tenant, task_id))]
async fn trigger(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::response::Response> {
    let id: InboundHookId = parse_param("id", &id)?;
    let (tenant, hook) = state
        .store
        .find_inbound_hook(id)
        .await?
        .ok_or(ApiError::not_found("hook"))?;
    tracing::Span::current().record("tenant", tracing::field::display(&tenant.name));
    let signature = verify(&headers, hook.secret.expose().as_bytes(), &body)?;
    let replay_key = format!("hookreplay:{id}:{signature}");
    if !state
        .presence
        .remember_once(&replay_key, REPLAY_TTL)
        .await?
    {
        return Err(ApiError::unauthorized(
            "this signature was already used (replayed request)",
        ));
    }
    let values: serde_json::Value = parse_json(&body)?;
    let rendered = hook
        .template
        .render(&values)
        .map_err(|e| ApiError::invalid(e.field, e.message))?;
    let request: TaskRequest = parse_json(rendered.to_string().as_bytes()).map_err(|e| {
        let field = e
            .field
            .map_or("template".to_owned(), |f| format!("template.{f}"));
        ApiError::invalid(
            field,
            format!("the filled-in template is not a valid task: {}", e.message),
        )
    })?;
    let tenant = TenantCtx::from(&tenant);
    let task = crate::routes::tasks::accept(&state, &tenant, &request, None).await?;
    tracing::Span::current().record("task_id", tracing::field::display(task.id));
    tracing::info!("inbound hook triggered a task");
    let note = crate::audit::AuditNote {
        tenant: Some(tenant),
        actor: Some(format!("hook:{}", hook.id)),
        target: Some(format!("task:{}", task.id)),
    };
    let accepted = (
        StatusCode::ACCEPTED,
        Json(TaskAccepted {
            id: task.id,
            state: task.state,
        }),
    );
    Ok(note.attach(axum::response::IntoResponse::into_response(accepted)))
}

/// Checks `RIS-Signature` against `secret` and the clock; returns the signature (lower
/// hex) for replay protection.
fn verify(headers: &HeaderMap, secret: &[u8], body: &[u8]) -> ApiResult<String> {
    let header = headers
        .get("ris-signature")
        .ok_or_else(|| ApiError::unauthorized("missing `RIS-Signature` header"))?;
    let (t, v1) = header
        .to_str()
        .ok()
        .and_then(parse_signature)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "malformed `RIS-Signature` header: expected `t=<unix seconds>,v1=<hex HMAC-SHA256>`",
            )
        })?;
    if (Utc::now().timestamp() - t).abs() > TOLERANCE_SECS {
        return Err(ApiError::unauthorized(format!(
            "`RIS-Signature` timestamp is more than {TOLERANCE_SECS} s from now"
        )));
    }
    // HMAC takes keys of any length: this never fails.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|_| ApiError::unauthorized("signature does not match"))?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    // Constant-time comparison.
    mac.verify_slice(&v1)
        .map_err(|_| ApiError::unauthorized("signature does not match"))?;
    Ok(hex::encode(v1))
}

/// `t=<digits>,v1=<64 hex digits>`, in either order, each exactly once.
fn parse_signature(raw: &str) -> Option<(i64, Vec<u8>)> {
    let (mut t, mut v1) = (None, None);
    for part in raw.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "t" if t.is_none() && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                t = Some(v.parse().ok()?)
            }
            "v1" if v1.is_none() && v.len() == 64 => v1 = Some(hex::decode(v).ok()?),
            _ => return None,
        }
    }
    Some((t?, v1?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signature_headers_are_parsed_strictly() {
        let hex64 = "ab".repeat(32);
        assert_eq!(
            parse_signature(&format!("t=12,v1={hex64}")),
            Some((12, vec![0xab; 32]))
        );
        assert!(parse_signature(&format!("v1={hex64}, t=12")).is_some());
        for bad in [
            String::new(),
            "t=12".into(),
            format!("v1={hex64}"),
            format!("t=-1,v1={hex64}"),
            format!("t=12,v1={}", "zz".repeat(32)),
            format!("t=12,v1={hex64},v1={hex64}"),
            format!("t=12,v1={hex64},x=1"),
            "t=12,v1=abcd".into(),
        ] {
            assert!(parse_signature(&bad).is_none(), "{bad}");
        }
    }
}
