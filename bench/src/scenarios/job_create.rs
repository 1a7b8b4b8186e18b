//! `job-create`: API time to create a fleet job over N agents (inserted straight into
//! PostgreSQL: the figure is the job's own cost, not enrollment's), to read its status,
//! and to read one page of its targets.

use std::time::Instant;

use anyhow::bail;
use reqwest::Method;
use ris_tests::{System, TenantClient};
use serde_json::{json, Value};

/// `n` enrolled-looking agents labelled `bench=jobs`, none online.
async fn fake_agents(system: &System, tenant: &TenantClient, n: usize) -> anyhow::Result<()> {
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", system.database);
    let pool = sqlx::PgPool::connect(&url).await?;
    sqlx::query(
        "INSERT INTO agents (id, tenant_id, name, labels, capacity, version, hostname,
                             heartbeat_token_hash)
         SELECT gen_random_uuid(), t.id, 'bench-' || g, '{\"bench\": \"jobs\"}', 4, '0.1.0',
                'bench-' || g || '.local', '\\x00'
         FROM tenants t, generate_series(1, $2) g WHERE t.name = $1",
    )
    .bind(&tenant.name)
    .bind(i64::try_from(n)?)
    .execute(&pool)
    .await?;
    pool.close().await;
    Ok(())
}

/// Milliseconds since `start`, to 0.1 ms.
fn ms(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 10_000.0).round() / 10.0
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub async fn run(system: &System, agents: usize, repeat: usize) -> anyhow::Result<(Value, String)> {
    let tenant = system.tenant().await;
    fake_agents(system, &tenant, agents).await?;
    let body = json!({ "target": { "selector": "bench=jobs" }, "task": { "kind": "noop" } });
    let (mut create, mut get, mut page) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let (status, job) = tenant
            .request(Method::POST, "/v1/jobs", Some(body.clone()))
            .await;
        create.push(ms(start));
        if status.as_u16() != 201 || job["target_count"] != json!(agents) {
            bail!("job not created over {agents} agents: {status} {job}");
        }
        let id = job["id"].as_str().unwrap_or_default().to_owned();
        let start = Instant::now();
        tenant.get(&format!("/v1/jobs/{id}")).await;
        get.push(ms(start));
        let start = Instant::now();
        tenant
            .get(&format!(
                "/v1/jobs/{id}/tasks?limit=200&state=skipped_offline"
            ))
            .await;
        page.push(ms(start));
    }
    let result = json!({
        "scenario": "job-create",
        "agents": agents,
        "repeat": create.len(),
        "create_ms": create.clone(),
        "create_median_ms": median(&mut create),
        "get_median_ms": median(&mut get),
        "targets_page_median_ms": median(&mut page),
    });
    let human = format!(
        "job-create over {agents} agents: create {} ms (median), status {} ms, a page of 200 targets {} ms",
        result["create_median_ms"], result["get_median_ms"], result["targets_page_median_ms"]
    );
    Ok((result, human))
}
