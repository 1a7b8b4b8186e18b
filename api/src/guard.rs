//! The one gate every request passes: authentication, the permission matrix
//! ([`crate::permissions`]), rate limits ([`crate::limits`]) and the audit log
//! ([`crate::audit`]). Installed as a route layer, so it knows the matched route.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::audit::{self, AuditNote, RequestFacts};
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::permissions::{self, Access, Open, Permission, Scope};
use crate::state::AppState;

pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
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
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
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
        Access::Open(kind) => {
            let actor = match kind {
                Open::Public => "anonymous",
                Open::EnrollmentToken => "enrollment-token",
                Open::AgentToken => "agent",
                Open::Signature => "signed-request",
                Open::Password | Open::RefreshToken => "anonymous",
            };
            // Credentials in the body can be guessed at: limit them per source address.
            let guessable = !matches!(kind, Open::Public | Open::AgentToken);
            let limited = match (&facts.source, guessable) {
                (Some(ip), true) => crate::limits::charge_address(&state, ip).await,
                _ => None,
            };
            let response = match limited {
                Some(response) => response,
                None => next.run(req).await,
            };
            (None, actor.to_owned(), response)
        }
        Access::Needs(permission) => match auth::authenticate(&state, req.headers()).await {
            Err(failure) => {
                if failure.error.status == StatusCode::UNAUTHORIZED {
                    facts.action = "auth.failed";
                }
                (failure.tenant, failure.actor, failure.error.into_response())
            }
            Ok(caller) => {
                let tenant = caller.tenant().cloned();
                let actor = caller.actor();
                let response = match authorize(&caller, permission) {
                    Err(e) => e.into_response(),
                    Ok(()) => {
                        let limited = match &caller {
                            Caller::Tenant(t) => crate::limits::charge(&state, t).await,
                            Caller::PlatformAdmin | Caller::PlatformUser(_) => None,
                        };
                        match limited {
                            Some(response) => response,
                            None => {
                                req.extensions_mut().insert(caller);
                                next.run(req).await
                            }
                        }
                    }
                };
                (tenant, actor, response)
            }
        },
    };
    let status = response.status();
    if audit::worth_recording(&method, status) {
        let note = response.extensions().get::<AuditNote>();
        audit::record(&state, &facts, tenant, actor, status, note).await;
    }
    response
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
