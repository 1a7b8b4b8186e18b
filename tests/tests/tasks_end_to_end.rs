//! An operator runs shell and HTTP tasks on two real agents, by agent id and by label
//! selector, and reads back state, results, history and presence.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use reqwest::{Method, StatusCode};
use ris_tests::{wait_for_task, System};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn shell_and_http_tasks_run_on_real_agents() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let eu = tenant.agent("web-eu", &["env=prod", "region=eu"], 2).await;
    let us = tenant.agent("web-us", &["env=prod", "region=us"], 2).await;

    // Presence: both online with their load, labels, version and addresses.
    let view = tenant.wait_online(&eu).await;
    assert_eq!(view["labels"], json!({ "env": "prod", "region": "eu" }));
    assert_eq!(view["load"]["capacity"], 2);
    assert!(
        view["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{view}"
    );
    assert!(view["last_seen"].is_string(), "{view}");
    tenant.wait_online(&us).await;
    let agents = tenant.get("/v1/agents").await;
    assert_eq!(
        agents["items"].as_array().map(Vec::len),
        Some(2),
        "{agents}"
    );

    // Shell by agent id, argv form: captured stdout, exit code, duration.
    let id = tenant
        .submit(json!({ "target": { "agent_id": eu.id }, "task": { "kind": "shell", "argv": ["uname", "-s"] } }))
        .await;
    let task = wait_for_task(&tenant, &id, "completed").await;
    assert_eq!(task["agent_id"], eu.id.as_str());
    assert_eq!(task["attempts"], 1);
    assert_eq!(task["result"]["output"]["exit_code"], 0);
    assert_eq!(
        task["result"]["output"]["stdout"].as_str().map(str::trim),
        Some("Linux")
    );

    // Output with NUL bytes (which PostgreSQL's jsonb cannot hold) is recorded, each
    // NUL as U+FFFD.
    let nul = tenant
        .submit(json!({ "target": { "agent_id": eu.id }, "task": { "kind": "shell", "argv": ["printf", "a\\000b"] } }))
        .await;
    let task = wait_for_task(&tenant, &nul, "completed").await;
    assert_eq!(
        task["result"]["output"]["stdout"].as_str(),
        Some("a\u{FFFD}b"),
        "{task:#}"
    );

    // History: every state change, in order, with time.
    let events = tenant.get(&format!("/v1/tasks/{id}/events")).await;
    let states: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["state"].as_str())
        .collect();
    assert_eq!(
        states,
        ["queued", "routing", "executing", "completed"],
        "{events:#}"
    );
    assert!(events["items"][3]["at"].is_string());

    // Script form, failing: stderr apart from stdout, exit code kept, reason given.
    let id = tenant
        .submit(json!({
            "target": { "selector": "region=eu" },
            "task": { "kind": "shell", "script": "echo out; echo err >&2; exit 3", "env": { "X": "1" } },
        }))
        .await;
    let task = wait_for_task(&tenant, &id, "failed").await;
    assert_eq!(task["reason"], "exit_status");
    let output = &task["result"]["output"];
    assert_eq!(
        (
            output["exit_code"].clone(),
            output["stdout"].clone(),
            output["stderr"].clone()
        ),
        (json!(3), json!("out\n"), json!("err\n"))
    );

    // Timeout kills the process and ends `timed_out`.
    let id = tenant
        .submit(json!({ "target": { "agent_id": us.id }, "timeout_secs": 1, "task": { "kind": "shell", "argv": ["sleep", "30"] } }))
        .await;
    let task = wait_for_task(&tenant, &id, "timed_out").await;
    assert!(
        task["result"]["duration_ms"]
            .as_u64()
            .is_some_and(|ms| ms < 10_000),
        "{task}"
    );

    // HTTP by selector: lands on the only matching agent and records status and body.
    let id = tenant
        .submit(json!({
            "target": { "selector": "env=prod,region=us" },
            "task": { "kind": "http", "url": format!("{}/healthz", system.api_url) },
        }))
        .await;
    let task = wait_for_task(&tenant, &id, "completed").await;
    assert_eq!(task["agent_id"], us.id.as_str());
    assert_eq!(task["result"]["output"]["status"], 200);
    assert!(task["result"]["output"]["body"]
        .as_str()
        .unwrap_or_default()
        .contains("ok"));

    // An unexpected HTTP status is a failure with a reason.
    let id = tenant
        .submit(json!({
            "target": { "agent_id": us.id },
            "task": { "kind": "http", "url": format!("{}/no-such-page", system.api_url) },
        }))
        .await;
    let task = wait_for_task(&tenant, &id, "failed").await;
    assert_eq!(task["reason"], "unexpected_status");
    assert_eq!(task["result"]["output"]["status"], 404);

    // Listing: newest first, filtered, paginated with a cursor.
    let page = tenant.get("/v1/tasks?limit=2").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], id.as_str(), "newest first");
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let rest = tenant
        .get(&format!("/v1/tasks?limit=10&cursor={cursor}"))
        .await;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(4));
    assert!(rest["next_cursor"].is_null());
    let failed = tenant.get("/v1/tasks?state=failed").await;
    assert_eq!(failed["items"].as_array().map(Vec::len), Some(2));
    let on_us = tenant.get(&format!("/v1/tasks?agent_id={}", us.id)).await;
    assert_eq!(on_us["items"].as_array().map(Vec::len), Some(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_cannot_see_each_other() {
    let system = System::start().await;
    let acme = system.tenant().await;
    let globex = system.tenant().await;
    let agent = acme.agent("a1", &["env=prod"], 1).await;
    acme.wait_online(&agent).await;
    let id = acme
        .submit(json!({ "target": { "agent_id": agent.id }, "task": { "kind": "noop" } }))
        .await;
    wait_for_task(&acme, &id, "completed").await;

    let (status, _) = globex
        .request(Method::GET, &format!("/v1/tasks/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = globex
        .request(Method::GET, &format!("/v1/agents/{}", agent.id), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(globex.get("/v1/tasks").await["items"], json!([]));
    assert_eq!(globex.get("/v1/agents").await["items"], json!([]));
    // Another tenant's agent id is unknown here, so targeting it is a 404.
    let (status, body) = globex
        .request(
            Method::POST,
            "/v1/tasks",
            Some(json!({ "target": { "agent_id": agent.id }, "task": { "kind": "noop" } })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
