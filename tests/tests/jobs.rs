//! Fleet jobs end to end, with real agent processes: every target runs exactly once, at
//! most `max_concurrency` at a time (from the agents' own start/stop records), a job
//! halts at its error threshold and nothing starts after the halt (two dispatchers),
//! cancel stops the rest, counts always add up, and bad input is refused.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use ris_tests::jobs::{fleet, max_overlap, recording_script, runs, Run};
use ris_tests::{eventually, unique, System, SystemOptions, TenantClient};
use serde_json::{json, Value};

fn ns(at: &Value) -> i64 {
    at.as_str()
        .unwrap()
        .parse::<DateTime<Utc>>()
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

async fn create_job(tenant: &TenantClient, body: Value) -> Value {
    let (status, job) = tenant.request(Method::POST, "/v1/jobs", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    job
}

/// Waits until the job has ended (every target final) and returns it.
async fn wait_ended(tenant: &TenantClient, id: &str, timeout: Duration) -> Value {
    eventually(&format!("job {id} to end"), timeout, || async {
        let job = tenant.get(&format!("/v1/jobs/{id}")).await;
        // At every moment, not only at the end.
        assert_counts_add_up(&job);
        job.get("ended_at").is_some().then_some(job)
    })
    .await
}

fn counts(job: &Value) -> BTreeMap<String, u64> {
    job["counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// The counts add up to the target count.
fn assert_counts_add_up(job: &Value) {
    let sum: u64 = counts(job).values().sum();
    assert_eq!(sum, job["target_count"].as_u64().unwrap(), "{job:#}");
}

/// Every target of the job, following the cursor through pages of `limit`.
async fn all_targets(tenant: &TenantClient, id: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/jobs/{id}/tasks?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = tenant.get(&path).await;
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// The tenant's `job.*` events as a raw Server-Sent Events stream.
async fn job_events(tenant: &TenantClient) -> reqwest::Response {
    let response = reqwest::Client::new()
        .get(format!("{}/v1/events/stream?types=job.*", tenant.api_url))
        .bearer_auth(&tenant.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response
}

/// The types of the events of job `id`, in order, read until its `job.ended`.
async fn job_event_types(stream: &mut reqwest::Response, id: &str) -> Vec<String> {
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut types = Vec::new();
    loop {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let kind = block.lines().find_map(|l| l.strip_prefix("event: "));
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(kind), Some(data)) = (kind, data) {
                let data: Value = serde_json::from_str(data).unwrap();
                if data["data"]["job_id"] == id {
                    types.push(kind.to_owned());
                    if kind == "job.ended" {
                        return types;
                    }
                }
            }
        }
        let left = deadline
            .checked_duration_since(std::time::Instant::now())
            .unwrap_or_else(|| panic!("no job.ended; events so far: {types:?}"));
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no job.ended; events so far: {types:?}"))
            .unwrap()
            .expect("event stream ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

fn record_file(system: &System) -> PathBuf {
    let path = system.workdir.path().join(unique("job-runs-"));
    std::fs::write(&path, "").unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn job_runs_once_on_every_agent_within_max_concurrency() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let agents = fleet(&tenant, "once", 6, |_| false).await;
    let record = record_file(&system);
    let mut events = job_events(&tenant).await;

    let job = create_job(
        &tenant,
        json!({
            "target": { "selector": "fleet=once", "mode": "all" },
            "task": { "kind": "shell", "script": recording_script(&record, 0.4, 0.0) },
            "max_concurrency": "34%", // of 6 targets: 3 (rounded up)
            "metadata": { "suite": "jobs" },
        }),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["target_count"], 6, "{job:#}");
    assert_eq!(job["max_concurrency"], 3, "{job:#}");
    assert_counts_add_up(&job);

    let job = wait_ended(&tenant, &id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "completed", "{job:#}");
    assert_eq!(counts(&job), BTreeMap::from([("completed".into(), 6)]));
    assert!(ns(&job["started_at"]) <= ns(&job["ended_at"]), "{job:#}");
    // Each state change announced once, in order.
    assert_eq!(
        job_event_types(&mut events, &id).await,
        ["job.running", "job.completed", "job.ended"]
    );

    // Each target ran exactly once, and never more than 3 at a time.
    let runs = runs(&record);
    let mut per_agent: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        *per_agent.entry(r.agent.clone()).or_default() += 1;
        assert!(r.stop.is_some(), "{r:?} never stopped");
    }
    let expected: BTreeMap<String, usize> = agents.iter().map(|a| (a.name.clone(), 1)).collect();
    assert_eq!(per_agent, expected, "runs: {runs:?}");
    let most = max_overlap(&runs);
    assert!(most <= 3, "{most} children ran at once: {runs:?}");
    assert!(
        most >= 2,
        "the job never ran children side by side: {runs:?}"
    );

    // Per-agent rows, paginated; children are normal tasks that link to the job.
    let targets = all_targets(&tenant, &id, 4).await;
    assert_eq!(targets.len(), 6);
    let seqs: Vec<u64> = targets.iter().map(|t| t["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..6).collect::<Vec<_>>());
    for t in &targets {
        assert_eq!(t["state"], "completed", "{t}");
        let task = tenant
            .get(&format!("/v1/tasks/{}", t["task_id"].as_str().unwrap()))
            .await;
        assert_eq!(task["job_id"], id.as_str(), "{task}");
        assert_eq!(
            task["request"]["target"]["agent_id"], t["agent_id"],
            "{task}"
        );
        assert_eq!(task["metadata"]["suite"], "jobs", "{task}");
    }
    let completed = tenant
        .get(&format!("/v1/jobs/{id}/tasks?state=completed&limit=10"))
        .await;
    assert_eq!(completed["items"].as_array().unwrap().len(), 6);
    let listed = tenant.get("/v1/jobs?limit=5").await;
    assert_eq!(listed["items"][0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn job_halts_at_the_threshold_and_nothing_starts_after_the_halt() {
    let system = System::start_with(SystemOptions {
        dispatchers: 2,
        ..SystemOptions::default()
    })
    .await;
    let tenant = system.tenant().await;
    // Targets are dispatched by agent name: failures come early and mixed with
    // successes, so results race with dispatches.
    let _agents = fleet(&tenant, "halt", 8, |i| i % 2 == 1).await;
    let record = record_file(&system);

    let job = create_job(
        &tenant,
        json!({
            "target": { "selector": "fleet=halt" },
            "task": { "kind": "shell", "script": recording_script(&record, 0.3, 0.05) },
            "max_concurrency": 3,
            "max_errors": 1,
        }),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    let job = wait_ended(&tenant, &id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "halted", "{job:#}");
    assert!(job["errors"].as_u64().unwrap() >= 2, "{job:#}");
    assert!(
        job["reason"].as_str().unwrap().contains("max_errors"),
        "{job:#}"
    );
    assert_counts_add_up(&job);
    let c = counts(&job);
    assert!(c.get("skipped_halted").copied().unwrap_or(0) > 0, "{job:#}");

    let halting_at = ns(&job["halting_at"]);
    let halted_at = ns(&job["halted_at"]);
    assert!(halting_at <= halted_at, "{job:#}");

    // No child started after the halt (agents' own records).
    let runs = runs(&record);
    println!("{job:#}\nruns: {runs:#?}");
    let late: Vec<&Run> = runs.iter().filter(|r| r.start > halted_at).collect();
    assert!(
        late.is_empty(),
        "started after halted_at {halted_at}: {late:?}"
    );

    // No child was created or placed after the threshold was crossed (the database's
    // records, both dispatchers).
    let targets = all_targets(&tenant, &id, 200).await;
    let mut ran = 0;
    for t in &targets {
        let Some(task) = t["task_id"].as_str() else {
            assert_eq!(t["state"], "skipped_halted", "{t}");
            continue;
        };
        let events = tenant.get(&format!("/v1/tasks/{task}/events")).await;
        for e in events["items"].as_array().unwrap() {
            if e["state"] == "queued" || e["state"] == "routing" {
                assert!(ns(&e["at"]) <= halting_at, "{e} after halting_at: {job:#}");
            }
        }
        if ["completed", "failed", "timed_out", "cancelled"].contains(&t["state"].as_str().unwrap())
        {
            ran += 1;
        }
    }
    // Each agent ran at most once, and every run is a child the job knows ran.
    let mut per_agent: HashMap<&str, usize> = HashMap::new();
    for r in &runs {
        *per_agent.entry(r.agent.as_str()).or_default() += 1;
    }
    assert!(per_agent.values().all(|n| *n == 1), "{runs:?}");
    assert!(
        runs.len() <= ran,
        "{} runs, {ran} children ran: {runs:?}",
        runs.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_the_running_children_and_skips_the_rest() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let agents = fleet(&tenant, "cancel", 6, |_| false).await;
    let record = record_file(&system);
    let job = create_job(
        &tenant,
        json!({
            "target": { "agent_ids": agents.iter().map(|a| a.id.clone()).collect::<Vec<_>>() },
            "task": { "kind": "shell", "script": recording_script(&record, 60.0, 0.0) },
            "max_concurrency": 2,
        }),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    eventually("two children running", Duration::from_secs(30), || async {
        let job = tenant.get(&format!("/v1/jobs/{id}")).await;
        (job["counts"]["executing"] == 2).then_some(())
    })
    .await;

    let (status, body) = tenant
        .request(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["job"]["state"], "cancelled", "{body}");
    let cancelled_at = ns(&body["job"]["cancelled_at"]);

    let job = wait_ended(&tenant, &id, Duration::from_secs(30)).await;
    assert_eq!(job["state"], "cancelled", "{job:#}");
    assert_counts_add_up(&job);
    assert_eq!(
        counts(&job),
        BTreeMap::from([("cancelled".into(), 2), ("skipped_cancelled".into(), 4)]),
        "{job:#}"
    );
    let runs = runs(&record);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| r.start < cancelled_at), "{runs:?}");

    let (status, body) = tenant
        .request(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn selector_matching_nothing_completes_and_bad_input_names_the_field() {
    let system = System::start().await;
    let tenant = system.tenant().await;

    let job = create_job(
        &tenant,
        json!({ "target": { "selector": "role=nothing-here" }, "task": { "kind": "noop" } }),
    )
    .await;
    assert_eq!(job["state"], "completed", "{job:#}");
    assert_eq!(job["target_count"], 0);
    assert!(job.get("ended_at").is_some(), "{job:#}");
    assert!(
        job["reason"].as_str().unwrap().contains("matched no agent"),
        "{job:#}"
    );

    let base = json!({ "target": { "selector": "a=b" }, "task": { "kind": "noop" } });
    for (field, value) in [
        ("max_concurrency", json!("150%")),
        ("max_concurrency", json!(-2)),
        ("max_concurrency", json!("ten")),
        ("max_errors", json!("-5%")),
        ("max_errors", json!(-1)),
        ("max_errors", json!("5.555%")),
        ("wait_offline_secs", json!(-1)),
    ] {
        let mut body = base.clone();
        body[field] = value.clone();
        let (status, err) = tenant.request(Method::POST, "/v1/jobs", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={value}: {err}");
        assert_eq!(err["field"], field, "{field}={value}: {err}");
    }
    let (status, err) = tenant
        .request(
            Method::POST,
            "/v1/jobs",
            Some(json!({ "target": { "selector": "a=b", "mode": "any" }, "task": { "kind": "noop" } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["field"], "target.mode", "{err}");
    let (status, err) = tenant
        .request(
            Method::POST,
            "/v1/jobs",
            Some(json!({ "target": { "agent_ids": [uuid_like()] }, "task": { "kind": "noop" } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["field"], "target.agent_ids", "{err}");
    let (status, err) = tenant
        .request(
            Method::GET,
            &format!("/v1/jobs/{}/tasks?state=nope", job["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["field"], "state", "{err}");
    let (status, _) = tenant
        .request(Method::GET, &format!("/v1/jobs/{}", uuid_like()), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn uuid_like() -> String {
    "0190a4f2-0000-7000-8000-000000000000".to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_targets_are_skipped_or_waited_for() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let mut agents = fleet(&tenant, "late", 3, |_| false).await;
    agents[2].kill().await;
    eventually("late-2 offline", Duration::from_secs(30), || async {
        let view = tenant.get(&format!("/v1/agents/{}", agents[2].id)).await;
        (view["status"] == "offline").then_some(())
    })
    .await;
    let body = |wait: Option<u32>| {
        let mut body = json!({
            "target": { "selector": "fleet=late" },
            "task": { "kind": "shell", "argv": ["true"] },
            "max_concurrency": 3,
        });
        if let Some(secs) = wait {
            body["wait_offline_secs"] = json!(secs);
        }
        body
    };

    // Not waited for: skipped.
    let job = create_job(&tenant, body(None)).await;
    assert_eq!(job["counts"]["skipped_offline"], 1, "{job:#}");
    let job = wait_ended(
        &tenant,
        job["id"].as_str().unwrap(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(job["state"], "completed", "{job:#}");
    assert_eq!(
        counts(&job),
        BTreeMap::from([("completed".into(), 2), ("skipped_offline".into(), 1)])
    );
    let skipped = tenant
        .get(&format!(
            "/v1/jobs/{}/tasks?state=skipped_offline",
            job["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(skipped["items"][0]["agent_name"], "late-2", "{skipped:#}");

    // Waited for: runs once its agent is back.
    let job = create_job(&tenant, body(Some(120))).await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["counts"]["waiting"], 1, "{job:#}");
    assert!(job.get("wait_until").is_some(), "{job:#}");
    eventually(
        "the online targets to complete",
        Duration::from_secs(30),
        || async {
            let job = tenant.get(&format!("/v1/jobs/{id}")).await;
            (job["counts"]["completed"] == 2).then_some(())
        },
    )
    .await;
    let job = tenant.get(&format!("/v1/jobs/{id}")).await;
    assert!(job.get("ended_at").is_none(), "still waiting: {job:#}");
    agents[2].restart().await;
    let job = wait_ended(&tenant, &id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "completed", "{job:#}");
    assert_eq!(counts(&job), BTreeMap::from([("completed".into(), 3)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_running_on_halt_stops_the_running_children() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let _agents = fleet(&tenant, "stop", 4, |i| i == 3).await;
    let record = record_file(&system);
    let job = create_job(
        &tenant,
        json!({
            "target": { "selector": "fleet=stop" },
            "task": { "kind": "shell", "script": recording_script(&record, 60.0, 1.0) },
            "max_concurrency": 4,
            "max_errors": 0,
            "cancel_running_on_halt": true,
        }),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    // Ends long before the 60 s the healthy children would run.
    let job = wait_ended(&tenant, &id, Duration::from_secs(30)).await;
    assert_eq!(job["state"], "halted", "{job:#}");
    assert_eq!(job["errors"], 1, "{job:#}");
    assert_counts_add_up(&job);
    let c = counts(&job);
    assert_eq!(c.get("failed"), Some(&1), "{job:#}");
    assert_eq!(
        c.get("cancelled").unwrap_or(&0) + c.get("skipped_halted").unwrap_or(&0),
        3,
        "{job:#}"
    );
    let halted_at = ns(&job["halted_at"]);
    let runs = runs(&record);
    assert!(
        runs.iter().all(|r| r.start <= halted_at),
        "{runs:?} {job:#}"
    );
    // The stopped children never reached their `stop` line.
    assert!(
        runs.iter().filter(|r| r.stop.is_some()).count() <= 1,
        "{runs:?}"
    );
}
