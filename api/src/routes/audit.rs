//! The audit log: `GET /v1/audit` (filtered, paginated, newest first) and
//! `GET /v1/audit/verify` (recomputes the hash chain, reports the first broken link).
//!
//! A tenant credential reads its own tenant's chain; the platform admin reads the
//! platform's chain, or a tenant's with `?tenant=`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ris_schemas::api::Page;
use ris_schemas::ids::TenantName;
use ris_schemas::security::{AuditEntryView, AuditOutcome, AuditVerifyReport};
use ris_store::{AuditFilter, AuditRecord, TenantCtx};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

use crate::pagination;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/audit", get(list))
        .route("/audit/verify", get(verify))
}

/// The chain the caller reads: `None` is the platform's.
async fn chain(
    state: &AppState,
    caller: Caller,
    q: &HashMap<String, String>,
) -> ApiResult<Option<TenantCtx>> {
    let named = q
        .get("tenant")
        .map(|t| TenantName::parse(t).map_err(|e| ApiError::invalid("tenant", e.to_string())))
        .transpose()?;
    match (caller, named) {
        (Caller::Tenant(t), None) => Ok(Some(t.tenant)),
        (Caller::Tenant(t), Some(n)) if n == t.tenant.name => Ok(Some(t.tenant)),
        (Caller::Tenant(_), Some(_)) => Err(ApiError::forbidden(
            "other_tenant",
            "a tenant key reads its own tenant's audit log only",
        )
        .with_field("tenant")),
        (Caller::PlatformAdmin | Caller::PlatformUser(_), None) => Ok(None),
        (Caller::PlatformAdmin | Caller::PlatformUser(_), Some(n)) => Ok(Some(
            state
                .store
                .get_tenant(&n)
                .await?
                .ok_or(ApiError::not_found("tenant"))?
                .ctx(),
        )),
    }
}

fn time_param(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<DateTime<Utc>>> {
    q.get(name)
        .map(|raw| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::invalid(name, format!("`{name}` must be an RFC 3339 time")))
        })
        .transpose()
}

pub fn view(r: AuditRecord) -> AuditEntryView {
    AuditEntryView {
        seq: r.seq,
        tenant: r.tenant(),
        actor: r.actor,
        action: r.action,
        target: r.target,
        outcome: AuditOutcome::parse(&r.outcome).unwrap_or(AuditOutcome::Failed),
        status: u16::try_from(r.status).unwrap_or(0),
        request_id: r.request_id,
        source: r.source,
        at: r.at,
        prev_hash: hex::encode(r.prev_hash),
        hash: hex::encode(r.hash),
    }
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Page<AuditEntryView>>> {
    let tenant = chain(&state, caller, &q).await?;
    let limit = pagination::limit(q.get("limit").map(String::as_str))?;
    let before = pagination::cursor(q.get("cursor").map(String::as_str), |c| {
        c.parse::<i64>().ok()
    })?;
    let filter = AuditFilter {
        action: q.get("action").cloned(),
        actor: q.get("actor").cloned(),
        since: time_param(&q, "since")?,
        until: time_param(&q, "until")?,
    };
    let rows = state
        .store
        .list_audit(tenant.as_ref(), &filter, limit + 1, before)
        .await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |r| r.seq.to_string(),
        view,
    )))
}

async fn verify(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<AuditVerifyReport>> {
    let tenant = chain(&state, caller, &q).await?;
    let (checked, first_broken) = state.store.verify_audit(tenant.as_ref()).await?;
    if let Some(b) = &first_broken {
        tracing::warn!(seq = b.seq, problem = %b.problem, "audit chain broken");
    }
    Ok(Json(AuditVerifyReport {
        ok: first_broken.is_none(),
        checked,
        first_broken,
    }))
}
