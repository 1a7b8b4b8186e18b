//! The http executor against a local axum server.
#![allow(clippy::unwrap_used)] // Tests may unwrap (clippy.toml only covers #[test] fns).

mod common;

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use ris_agent::executor::{reason, HttpExecutor, Limits};
use ris_schemas::task::{HttpOutput, HttpSpec, Outcome, TaskOutput, TaskResult};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn router() -> Router {
    Router::new()
        .route("/ok", get(|| async { "hello" }))
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route("/big", get(|| async { "x".repeat(100_000) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: String| async move {
                let tag = headers
                    .get("x-ris-test")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                ([("x-echo", tag)], body)
            }),
        )
}

fn spec(value: serde_json::Value) -> HttpSpec {
    serde_json::from_value(value).unwrap()
}

async fn run(spec: &HttpSpec, timeout_secs: u64, cap: usize) -> TaskResult {
    let limits = Limits {
        timeout: Duration::from_secs(timeout_secs),
        output_cap: cap,
    };
    let executor = HttpExecutor::new().unwrap();
    executor.run(spec, limits, &CancellationToken::new()).await
}

fn output(result: &TaskResult) -> &HttpOutput {
    match &result.output {
        TaskOutput::Http(out) => out,
        other => panic!("expected http output, got {other:?}"),
    }
}

#[tokio::test]
async fn status_200_is_completed() {
    let base = common::serve(router()).await;
    let result = run(&spec(json!({"url": format!("{base}/ok")})), 10, 1024).await;
    assert_eq!(result.outcome, Outcome::Completed, "{result:?}");
    assert_eq!(output(&result).status, 200);
    assert_eq!(output(&result).body, "hello");
    assert!(!output(&result).body_truncated);
}

#[tokio::test]
async fn status_500_is_unexpected_status() {
    let base = common::serve(router()).await;
    let result = run(&spec(json!({"url": format!("{base}/fail")})), 10, 1024).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.reason.as_deref(), Some(reason::UNEXPECTED_STATUS));
    assert_eq!(output(&result).status, 500);
    assert_eq!(output(&result).body, "boom");
}

#[tokio::test]
async fn expected_404_is_completed() {
    let base = common::serve(router()).await;
    let spec = spec(json!({"url": format!("{base}/nothing-here"), "expected_status": 404}));
    let result = run(&spec, 10, 1024).await;
    assert_eq!(result.outcome, Outcome::Completed, "{result:?}");
    assert_eq!(output(&result).status, 404);
}

#[tokio::test]
async fn body_is_capped() {
    let base = common::serve(router()).await;
    let result = run(&spec(json!({"url": format!("{base}/big")})), 10, 1000).await;
    assert_eq!(result.outcome, Outcome::Completed);
    assert_eq!(output(&result).body.len(), 1000);
    assert!(output(&result).body_truncated);
}

#[tokio::test]
async fn method_headers_and_body_are_sent() {
    let base = common::serve(router()).await;
    let spec = spec(json!({
        "method": "POST",
        "url": format!("{base}/echo"),
        "headers": {"x-ris-test": "abc"},
        "body": "payload",
    }));
    let result = run(&spec, 10, 1024).await;
    assert_eq!(result.outcome, Outcome::Completed, "{result:?}");
    assert_eq!(output(&result).body, "payload");
    assert_eq!(
        output(&result).headers.get("x-echo").map(String::as_str),
        Some("abc")
    );
}

#[tokio::test]
async fn connection_refused_is_http_error() {
    // Bind then drop a listener: nothing listens on that port any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let result = run(&spec(json!({"url": format!("http://{addr}/")})), 10, 1024).await;
    assert_eq!(result.outcome, Outcome::Failed);
    assert_eq!(result.reason.as_deref(), Some(reason::HTTP_ERROR));
    assert!(result.error.is_some());
    assert_eq!(result.output, TaskOutput::None);
}

#[tokio::test]
async fn slow_server_times_out() {
    let base = common::serve(router()).await;
    let result = run(&spec(json!({"url": format!("{base}/slow")})), 1, 1024).await;
    assert_eq!(result.outcome, Outcome::TimedOut);
    assert_eq!(result.reason.as_deref(), Some(reason::TIMEOUT));
}

#[tokio::test]
async fn cancellation_stops_the_request() {
    let base = common::serve(router()).await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let limits = Limits {
        timeout: Duration::from_secs(30),
        output_cap: 1024,
    };
    let executor = HttpExecutor::new().unwrap();
    let result = executor
        .run(
            &spec(json!({"url": format!("{base}/slow")})),
            limits,
            &cancel,
        )
        .await;
    assert_eq!(result.outcome, Outcome::Cancelled);
}
