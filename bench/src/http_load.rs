//! An in-tree HTTP load generator: `concurrency` workers issue GETs for `duration` over
//! keep-alive connections; requests/s and latency percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::stats::{round2, summary};

/// GETs `paths` (round robin, each worker starting at its own offset) on `base`.
pub async fn run(
    base: &str,
    key: &str,
    paths: Arc<Vec<String>>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (client, paths) = (client.clone(), paths.clone());
        let (base, auth) = (base.to_owned(), format!("Bearer {key}"));
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = w * 7919;
            while Instant::now() < deadline {
                let path = &paths[i % paths.len()];
                i += 1;
                let sent = Instant::now();
                let ok = match client
                    .get(format!("{base}{path}"))
                    .header("authorization", &auth)
                    .send()
                    .await
                {
                    Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await?;
        all.extend(l);
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = all.len();
    let mut out = summary(all);
    out["requests"] = json!(n);
    out["errors"] = json!(errors);
    out["requests_per_sec"] = json!(round2(n as f64 / secs));
    out["concurrency"] = json!(concurrency);
    Ok(out)
}
