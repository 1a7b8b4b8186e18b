//! The dispatcher's own small HTTP surface: `/healthz` (the process is up), `/readyz`
//! (PostgreSQL and Redis answer, and how many tenant workers hold a broker connection)
//! and `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::context::Context;

pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async { ris_runtime::prometheus().render() }),
        )
        .with_state(ctx)
}

async fn probe<E: std::fmt::Display>(
    check: impl std::future::Future<Output = Result<(), E>>,
) -> Value {
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => json!({ "status": "ok" }),
        Ok(Err(err)) => json!({ "status": "down", "error": err.to_string() }),
        Err(_) => json!({ "status": "down", "error": "timed out" }),
    }
}

async fn readyz(State(ctx): State<Context>) -> (StatusCode, Json<Value>) {
    let (postgres, redis) = tokio::join!(probe(ctx.store.ping()), probe(ctx.presence.ping()));
    let connected = ctx.publishers.read().map(|m| m.len()).unwrap_or(0);
    let ready = postgres["status"] == "ok" && redis["status"] == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": { "postgres": postgres, "redis": redis, "rabbitmq": { "tenants_connected": connected } },
    });
    (status, Json(body))
}

pub async fn serve(listener: TcpListener, ctx: Context) {
    let shutdown = ctx.shutdown.clone();
    let server =
        axum::serve(listener, router(ctx)).with_graceful_shutdown(shutdown.cancelled_owned());
    if let Err(err) = server.await {
        tracing::error!(error = %err, "metrics server failed");
    }
}
