//! The dispatcher's own small HTTP surface: `/healthz` and `/metrics`.

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub fn router() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|| async { ris_runtime::prometheus().render() }),
        )
}

pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    let server = axum::serve(listener, router()).with_graceful_shutdown(shutdown.cancelled_owned());
    if let Err(err) = server.await {
        tracing::error!(error = %err, "metrics server failed");
    }
}
