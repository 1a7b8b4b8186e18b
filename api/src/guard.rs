//! The one gate every request passes: authentication, the permission matrix
//! ([`crate::permissions`]), rate limits ([`crate::limits`]) and the audit log
//! ([`crate::audit`]). Installed as a route layer, so it knows the matched route.

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ris_store::TenantCtx;

use crate::audit::{self, AuditNote, RequestFacts};
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::permissions::{self, Access, Open, Permission, Scope};
use crate::state::AppState;

pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    let method = req.method().clone();
    let action = crate::openapi::ROUTES
        .iter()
        .find(|r| r.method.as_str() == method.as_str() && r.path == route)
        .map_or("unknown", |r| r.operation_id);
    let mut facts = RequestFacts::new(&method, req.uri().path(), action, req.headers());
    facts.source = req
        .extensions()
        .get::<ConnectInfo<crate::app::PeerAddr>>()
        .map(|c| c.0 .0.ip().to_string());
    let Some(access) = permissions::access_of(method.as_str(), &route) else {
        tracing::error!(%method, %route, "route without a line in permissions::ROUTE_ACCESS");
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
        .into_response();
    };
    let (tenant, actor, response) = match access {
        Access::Open(kind) => open(&state, kind, &facts, req, next).await,
        Access::Needs(permission) => needs(&state, permission, &mut facts, req, next).await,
    };
    let status = response.status();
    if audit::worth_recording(&method, status) {
        let note = response.extensions().get::<AuditNote>();
        audit::record(&state, &facts, tenant, actor, status, note).await;
    }
    response
}

/// Who the audit entry names, and the answer.
type Outcome = (Option<TenantCtx>, String, Response);

/// A route whose handler checks its own credential (or none).
async fn open(
    state: &AppState,
    kind: Open,
    facts: &RequestFacts,
    req: Request,
    next: Next,
) -> Outcome {
    let actor = match kind {
        Open::Public | Open::Password | Open::RefreshToken => "anonymous",
        Open::EnrollmentToken => "enrollment-token",
        Open::AgentToken => "agent",
        Open::Signature => "signed-request",
    };
    // Credentials in the body can be guessed at: limit them per source address.
    let guessable = !matches!(kind, Open::Public | Open::AgentToken);
    let limited = match (&facts.source, guessable) {
        (Some(ip), true) => crate::limits::charge_address(state, ip).await,
        _ => None,
    };
    let response = match limited {
        Some(response) => response,
        None => next.run(req).await,
    };
    (None, actor.to_owned(), response)
}

/// A route that needs `permission`: authenticate, authorize, rate limit, then run it
/// with the [`Caller`] in the request's extensions.
async fn needs(
    state: &AppState,
    permission: Permission,
    facts: &mut RequestFacts,
    mut req: Request,
    next: Next,
) -> Outcome {
    let caller = match auth::authenticate(state, req.headers()).await {
        Ok(caller) => caller,
        Err(failure) => {
            if failure.error.status == StatusCode::UNAUTHORIZED {
                facts.action = "auth.failed";
            }
            return (failure.tenant, failure.actor, failure.error.into_response());
        }
    };
    let tenant = caller.tenant().cloned();
    let actor = caller.actor();
    if let Err(e) = authorize(&caller, permission) {
        return (tenant, actor, e.into_response());
    }
    let limited = match &caller {
        Caller::Tenant(t) => crate::limits::charge(state, t).await,
        Caller::PlatformAdmin | Caller::PlatformUser(_) => None,
    };
    if let Some(response) = limited {
        return (tenant, actor, response);
    }
    req.extensions_mut().insert(caller);
    (tenant, actor, next.run(req).await)
}

/// The permission check proper: the caller's role must hold the permission, and a
/// tenant-scoped permission needs a tenant credential.
fn authorize(caller: &Caller, permission: Permission) -> Result<(), ApiError> {
    if caller.is_platform() && permission.scope() == Scope::Tenant {
        return Err(auth::tenant_credential_required());
    }
    if permissions::grants(caller.role(), permission) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "permission_denied",
        format!(
            "role `{}` does not have permission `{}`",
            caller.role(),
            permission.name()
        ),
    ))
}
