//! `/healthz` (the process is up), `/readyz` (each dependency answers), `/metrics`.

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

async fn probe<E: std::fmt::Display>(check: impl Future<Output = Result<(), E>>) -> Value {
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => json!({ "status": "ok" }),
        Ok(Err(err)) => json!({ "status": "down", "error": err.to_string() }),
        Err(_) => json!({ "status": "down", "error": "timed out" }),
    }
}

/// 200 when PostgreSQL, Redis and the RabbitMQ management API all answer; 503 with the
/// failing ones otherwise.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (postgres, redis, rabbitmq) = tokio::join!(
        probe(state.store.ping()),
        probe(state.presence.ping()),
        probe(state.management.ping()),
    );
    let ready = [&postgres, &redis, &rabbitmq]
        .iter()
        .all(|p| p["status"] == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": { "postgres": postgres, "redis": redis, "rabbitmq": rabbitmq },
    });
    (status, Json(body))
}

async fn metrics_text() -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        ris_runtime::prometheus().render(),
    )
}
