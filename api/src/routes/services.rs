//! Docker services: `PUT|GET|DELETE /v1/services/{name}`, `GET /v1/services`,
//! `GET /v1/services/{name}/revisions`, `POST /v1/services/{name}/scale`,
//! `POST /v1/services/{name}/restart`, `GET /v1/services/{name}/logs` (in [`logs`]).
//!
//! Every change is one store transaction ([`ris_store::ServiceRepo::change_service`]):
//! a new revision, and per agent what it must run now. The orders are published to the
//! agents' control queues at once ([`orders`]); the dispatcher's service sync re-sends
//! what an agent has not acknowledged, and covers agents that match later. See
//! `docs/services.md`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ris_schemas::api::Page;
use ris_schemas::service::{
    PutService, ScaleService, ServiceName, ServiceRevision, ServiceTarget, ServiceView,
};
use ris_store::{ChangeOutcome, ServiceChange, ServiceRecord, TenantCtx};

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ValidJson;
use crate::pagination;
use crate::state::AppState;

pub mod logs;
mod orders;
mod views;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/services", get(list))
        .route("/services/{name}", put(declare).get(show).delete(remove))
        .route("/services/{name}/revisions", get(revisions))
        .route("/services/{name}/scale", post(scale))
        .route("/services/{name}/restart", post(restart))
        .route("/services/{name}/logs", get(logs::logs))
}

/// The `{name}` path parameter.
fn service_name(raw: &str) -> ApiResult<ServiceName> {
    ServiceName::parse(raw).map_err(|e| ApiError::invalid("name", e.to_string()))
}

/// The service, or 404.
async fn find(
    state: &AppState,
    tenant: &TenantCtx,
    name: &ServiceName,
) -> ApiResult<ServiceRecord> {
    state
        .store
        .get_service(tenant, name)
        .await?
        .ok_or(ApiError::not_found("service"))
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, service = %name))]
async fn declare(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(name): Path<String>,
    ValidJson(body): ValidJson<PutService>,
) -> ApiResult<(StatusCode, Json<ServiceView>)> {
    let name = service_name(&name)?;
    if let ServiceTarget::Agent(id) = &body.target {
        if state.store.get_agent(&caller.tenant, *id).await?.is_none() {
            return Err(
                ApiError::new(StatusCode::NOT_FOUND, "agent_not_found", "agent not found")
                    .with_field("target.agent_id"),
            );
        }
    }
    let exists = state
        .store
        .get_service(&caller.tenant, &name)
        .await?
        .is_some_and(|s| s.deleted_at.is_none());
    if !exists {
        // Two concurrent creations may both pass: the quota can be exceeded by the
        // number of racing requests, never by more.
        let current = state.store.count_services(&caller.tenant).await?;
        crate::limits::check_services(&state, &caller.tenant, current).await?;
    }
    let change = ServiceChange::Put {
        target: body.target,
        spec: Box::new(body.spec),
    };
    let (created, view) = apply(&state, &caller, &name, change).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, service = %name))]
async fn scale(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(name): Path<String>,
    ValidJson(body): ValidJson<ScaleService>,
) -> ApiResult<Json<ServiceView>> {
    let name = service_name(&name)?;
    let (_, view) = apply(&state, &caller, &name, ServiceChange::Scale(body.replicas)).await?;
    Ok(Json(view))
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, service = %name))]
async fn restart(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(name): Path<String>,
) -> ApiResult<Json<ServiceView>> {
    let name = service_name(&name)?;
    let (_, view) = apply(&state, &caller, &name, ServiceChange::Restart).await?;
    Ok(Json(view))
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant.name, service = %name))]
async fn remove(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<ServiceView>)> {
    let name = service_name(&name)?;
    let (_, view) = apply(&state, &caller, &name, ServiceChange::Delete).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Applies a change, tells the agents, announces it; `(created, view)`.
async fn apply(
    state: &AppState,
    caller: &TenantCaller,
    name: &ServiceName,
    change: ServiceChange,
) -> ApiResult<(bool, ServiceView)> {
    let tenant = &caller.tenant;
    let (created, service) = match state.store.change_service(tenant, name, change).await? {
        ChangeOutcome::NotFound => return Err(ApiError::not_found("service")),
        ChangeOutcome::Unchanged(service) => {
            tracing::debug!(revision = service.revision, "no change; no new revision");
            (false, service)
        }
        ChangeOutcome::Changed {
            service,
            change,
            orders,
        } => {
            tracing::info!(
                api_key_id = %caller.key_id,
                revision = service.revision,
                change,
                agents = orders.len(),
                "service changed"
            );
            metrics::counter!("ris_service_changes_total", "change" => change).increment(1);
            orders::publish(state, tenant, &orders).await;
            orders::announce(state, tenant, &service, change).await;
            (change == "create", service)
        }
    };
    let view = views::detail(state, tenant, service).await?;
    Ok((created, view))
}

async fn show(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(name): Path<String>,
) -> ApiResult<Json<ServiceView>> {
    let name = service_name(&name)?;
    let service = find(&state, &caller.tenant, &name).await?;
    Ok(Json(views::detail(&state, &caller.tenant, service).await?))
}

/// By name; `next_cursor` is the last name shown.
async fn list(
    State(state): State<AppState>,
    caller: TenantCaller,
    Query(params): Query<pagination::PageParams>,
) -> ApiResult<Json<Page<ServiceView>>> {
    let limit = pagination::limit(params.limit.as_deref())?;
    let after = pagination::cursor(params.cursor.as_deref(), |c| ServiceName::parse(c).ok())?;
    let services = state
        .store
        .list_services(&caller.tenant, limit + 1, after.as_ref())
        .await?;
    let page = pagination::page(services, limit, |s| s.name.to_string(), |s| s);
    let items = views::summaries(&state, &caller.tenant, page.items).await?;
    Ok(Json(Page {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// Newest first; `next_cursor` is the last revision shown.
async fn revisions(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(name): Path<String>,
    Query(params): Query<pagination::PageParams>,
) -> ApiResult<Json<Page<ServiceRevision>>> {
    let name = service_name(&name)?;
    let limit = pagination::limit(params.limit.as_deref())?;
    let before = pagination::cursor(params.cursor.as_deref(), |c| c.parse::<u32>().ok())?;
    find(&state, &caller.tenant, &name).await?;
    let rows = state
        .store
        .service_revisions(&caller.tenant, &name, limit + 1, before)
        .await?;
    Ok(Json(pagination::page(
        rows,
        limit,
        |r| r.revision.to_string(),
        |r| r,
    )))
}
