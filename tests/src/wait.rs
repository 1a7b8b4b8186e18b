//! Polling with a deadline instead of sleeping and hoping.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::TenantClient;

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after
/// `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the task reaches `state` and returns its JSON view. Panics if it ends in
/// another terminal state. A task not found yet is waited for: a submission through the
/// broker (or a dead letter's replay) is accepted before the dispatcher records it.
pub async fn wait_for_task(tenant: &TenantClient, id: &str, state: &str) -> Value {
    eventually(
        &format!("task {id} to be {state}"),
        Duration::from_secs(30),
        || async {
            let path = format!("/v1/tasks/{id}");
            let (status, task) = tenant.request(Method::GET, &path, None).await;
            if status == StatusCode::NOT_FOUND {
                return None;
            }
            assert_eq!(status, StatusCode::OK, "GET {path}: {task}");
            let current = task["state"].as_str().unwrap_or_default().to_owned();
            if current == state {
                return Some(task);
            }
            let terminal = ["completed", "failed", "timed_out", "cancelled"];
            assert!(
                !terminal.contains(&current.as_str()),
                "task {id} ended {current}, expected {state}: {task:#}"
            );
            None
        },
    )
    .await
}
