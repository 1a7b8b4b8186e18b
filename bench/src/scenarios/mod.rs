//! One module per scenario; each returns its JSON result and a human summary.

pub mod api;
pub mod failover;
pub mod fanout;
pub mod fleet;
pub mod job_create;
pub mod latency;
pub mod throughput;

use std::sync::Arc;
use std::time::Instant;

use reqwest::StatusCode;
use ris_tests::TenantClient;
use serde_json::Value;
use tokio::sync::Semaphore;

/// Submits `bodies` from `submitters` concurrent clients; returns (task id, sent at) in
/// submission order of completion.
pub async fn submit_all(
    tenant: &TenantClient,
    bodies: Vec<Value>,
    submitters: usize,
) -> anyhow::Result<Vec<(String, Instant)>> {
    submit_paced(tenant, bodies, submitters, None).await
}

/// Like [`submit_all`], but when `rate` is given the submissions start at that many per
/// second (an open loop: the offered load does not slow down when the system does).
pub async fn submit_paced(
    tenant: &TenantClient,
    bodies: Vec<Value>,
    submitters: usize,
    rate: Option<f64>,
) -> anyhow::Result<Vec<(String, Instant)>> {
    let gate = Arc::new(Semaphore::new(submitters.max(1)));
    let mut handles = Vec::with_capacity(bodies.len());
    let start = tokio::time::Instant::now();
    for (i, body) in bodies.into_iter().enumerate() {
        if let Some(rate) = rate.filter(|r| *r > 0.0) {
            tokio::time::sleep_until(start + std::time::Duration::from_secs_f64(i as f64 / rate))
                .await;
        }
        let permit = gate.clone().acquire_owned().await?;
        let tenant = tenant.clone();
        handles.push(tokio::spawn(async move {
            let sent = Instant::now();
            let (status, resp) = tenant
                .request(reqwest::Method::POST, "/v1/tasks", Some(body))
                .await;
            drop(permit);
            if status != StatusCode::ACCEPTED {
                anyhow::bail!("submit: {status} {resp}");
            }
            let id = resp["id"].as_str().unwrap_or_default().to_owned();
            Ok((id, sent))
        }));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await??);
    }
    Ok(out)
}

pub fn noop_selector(selector: &str) -> Value {
    serde_json::json!({ "target": { "selector": selector }, "task": { "kind": "noop" } })
}

pub fn shell_selector(selector: &str, argv: &[&str]) -> Value {
    serde_json::json!({ "target": { "selector": selector }, "task": { "kind": "shell", "argv": argv } })
}
