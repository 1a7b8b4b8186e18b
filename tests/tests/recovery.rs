//! Retries with backoff (per task and tenant default), and agent loss: waiting tasks
//! move to other agents, running ones are retried when their policy allows
//! `agent_lost`, else failed with that reason.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::time::Duration;

use reqwest::{Method, StatusCode};
use ris_tests::{eventually, wait_for_task, System, SystemOptions, TenantClient};
use serde_json::{json, Value};

async fn states(tenant: &TenantClient, id: &str) -> Vec<String> {
    let events = tenant.get(&format!("/v1/tasks/{id}/events")).await;
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_attempts_are_retried_with_backoff_and_each_result_is_kept() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let agent = tenant.agent("retry", &["role=retry"], 2).await;
    tenant.wait_online(&agent).await;
    let marker = system.workdir.path().join("flaky-marker");

    // Fails once, then succeeds: completed on the second attempt.
    let script = format!(
        "if [ -e {m} ]; then echo second; else touch {m}; echo first; exit 7; fi",
        m = marker.display()
    );
    let id = tenant
        .submit(json!({
            "target": { "selector": "role=retry" },
            "task": { "kind": "shell", "script": script },
            "retry": { "max_attempts": 3, "initial_ms": 100, "max_ms": 200, "retry_on": ["failed"] },
        }))
        .await;
    let task = wait_for_task(&tenant, &id, "completed").await;
    assert_eq!(task["attempts"], 2);
    assert_eq!(task["result"]["output"]["stdout"], "second\n");
    // Every state, in order: a result that overtakes its `executing` report still
    // records the start first.
    let history = states(&tenant, &id).await;
    let expected = [
        "queued",
        "routing",
        "executing",
        "retrying",
        "routing",
        "executing",
        "completed",
    ];
    assert_eq!(history, expected, "{history:?}");
    let attempts = tenant.get(&format!("/v1/tasks/{id}/attempts")).await;
    let attempts = attempts["items"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["result"]["output"]["exit_code"], 7);
    assert_eq!(attempts[1]["result"]["outcome"], "completed");

    // Always fails: gives up after max_attempts with the last attempt's reason.
    let id = tenant
        .submit(json!({
            "target": { "selector": "role=retry" },
            "task": { "kind": "shell", "argv": ["false"] },
            "retry": { "max_attempts": 3, "initial_ms": 50, "max_ms": 100 },
        }))
        .await;
    let task = wait_for_task(&tenant, &id, "failed").await;
    assert_eq!(task["attempts"], 3);
    assert_eq!(task["reason"], "exit_status");
    assert_eq!(
        states(&tenant, &id)
            .await
            .iter()
            .filter(|s| *s == "retrying")
            .count(),
        2
    );

    // An outcome not listed in retry_on is not retried.
    let id = tenant
        .submit(json!({
            "target": { "selector": "role=retry" },
            "timeout_secs": 1,
            "task": { "kind": "shell", "argv": ["sleep", "5"] },
            "retry": { "max_attempts": 3, "initial_ms": 50, "retry_on": ["failed"] },
        }))
        .await;
    let task = wait_for_task(&tenant, &id, "timed_out").await;
    assert_eq!(task["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_retry_shows_its_next_attempt_time_and_tenant_defaults_apply() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let agent = tenant.agent("dflt", &["role=dflt"], 1).await;
    tenant.wait_online(&agent).await;

    let (status, body) = tenant
        .request(
            Method::PUT,
            "/v1/settings",
            Some(json!({ "retry": { "max_attempts": 2, "initial_ms": 4000, "multiplier": 1.0, "max_ms": 4000 } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(tenant.get("/v1/settings").await["retry"]["max_attempts"], 2);
    let (status, body) = tenant
        .request(
            Method::PUT,
            "/v1/settings",
            Some(json!({ "retry": { "max_attempts": 0 } })),
        )
        .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("retry.max_attempts")),
        "{body}"
    );

    // No retry policy of its own: the tenant default (2 attempts) applies.
    let id = tenant.submit(json!({ "target": { "selector": "role=dflt" }, "task": { "kind": "shell", "argv": ["false"] } })).await;
    let waiting: Value = eventually(
        "the task to wait for its retry",
        Duration::from_secs(20),
        || async {
            let task = tenant.get(&format!("/v1/tasks/{id}")).await;
            let state = task["state"].as_str().unwrap_or_default().to_owned();
            assert_ne!(state, "failed", "retry skipped: {task}");
            (state == "retrying" || state == "completed").then_some(task)
        },
    )
    .await;
    if waiting["state"] == "retrying" {
        let next = waiting["next_attempt_at"]
            .as_str()
            .expect("next_attempt_at while retrying");
        let updated = waiting["updated_at"].as_str().unwrap();
        assert!(
            next >= updated,
            "next attempt {next} is not after {updated}"
        );
    }
    let task = wait_for_task(&tenant, &id, "failed").await;
    assert_eq!(task["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_agents_tasks_move_or_fail_with_agent_lost() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let mut doomed = tenant.agent("doomed", &["pool=p"], 1).await;
    tenant.wait_online(&doomed).await;

    // Running on the doomed agent: one may be retried after agent loss, one may not.
    let retried = tenant
        .submit(json!({
            "target": { "selector": "pool=p" },
            "task": { "kind": "shell", "argv": ["sleep", "2"] },
            "retry": { "max_attempts": 2, "initial_ms": 100, "retry_on": ["agent_lost"] },
        }))
        .await;
    wait_for_task(&tenant, &retried, "executing").await;
    // Capacity 1: this one waits in the doomed agent's queue.
    let waiting = tenant
        .submit(json!({ "target": { "selector": "pool=p" }, "task": { "kind": "noop" } }))
        .await;
    eventually(
        "the second task to be routed to the doomed agent",
        Duration::from_secs(10),
        || async {
            let task = tenant.get(&format!("/v1/tasks/{waiting}")).await;
            (task["state"] == "routing").then_some(())
        },
    )
    .await;

    doomed.kill().await;
    let survivor = tenant.agent("survivor", &["pool=p"], 2).await;

    let task = wait_for_task(&tenant, &retried, "completed").await;
    assert_eq!(task["agent_id"], survivor.id.as_str());
    assert_eq!(task["attempts"], 2);
    assert!(states(&tenant, &retried)
        .await
        .contains(&"retrying".to_owned()));
    let task = wait_for_task(&tenant, &waiting, "completed").await;
    assert_eq!(task["agent_id"], survivor.id.as_str());

    let view = tenant.get(&format!("/v1/agents/{}", doomed.id)).await;
    assert_eq!(view["status"], "offline");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_agent_lost_in_its_policy_a_running_task_fails() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let mut doomed = tenant.agent("doomed2", &["pool=q"], 1).await;
    tenant.wait_online(&doomed).await;
    let id = tenant.submit(json!({ "target": { "selector": "pool=q" }, "task": { "kind": "shell", "argv": ["sleep", "30"] } })).await;
    wait_for_task(&tenant, &id, "executing").await;
    doomed.kill().await;
    let task = wait_for_task(&tenant, &id, "failed").await;
    assert_eq!(task["reason"], "agent_lost");
    assert_eq!(task["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_assignment_not_started_in_time_expires_through_the_broker() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let agent = tenant.agent("slow", &["role=slow"], 1).await;
    tenant.wait_online(&agent).await;
    let target = json!({ "agent_id": agent.id });
    // One running, one held by the agent waiting for its slot: a third waits in the queue.
    // Submitted one after the other, so the order in the agent's queue is known.
    let sleep = json!({ "target": target, "task": { "kind": "shell", "argv": ["sleep", "20"] } });
    let running = tenant.submit(sleep.clone()).await;
    wait_for_task(&tenant, &running, "executing").await;
    let held = tenant.submit(sleep).await;
    wait_for_task(&tenant, &held, "routing").await;
    let late = tenant
        .submit(json!({ "target": target, "queue_timeout_secs": 3, "task": { "kind": "noop" } }))
        .await;
    let task = wait_for_task(&tenant, &late, "failed").await;
    assert_eq!(task["reason"], "queue_timeout", "{task}");
    assert_eq!(
        task["attempts"], 1,
        "it was assigned once, and never started"
    );
    let history = states(&tenant, &late).await;
    assert_eq!(history, ["queued", "routing", "failed"], "{history:?}");
    // The broker's dead letter is there for the operator to see.
    let dead = tenant.get("/v1/dead-letters").await;
    assert!(
        dead["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"] == "expired"),
        "{dead:#}"
    );
}

/// A killed agent's heartbeat socket breaks: the API marks it gone, and once its
/// presence lapses the reaper declares it lost at once, without waiting out the grace
/// (the grace covers presence wiped by a Redis restart, not a broken socket). With a
/// two-minute grace, the task waiting in its queue still moves to another agent.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_agent_is_lost_without_waiting_out_the_grace() {
    let system = System::start_with(SystemOptions {
        env: vec![("RIS_AGENT_LOST_GRACE_MS".into(), "120000".into())],
        ..Default::default()
    })
    .await;
    let tenant = system.tenant().await;
    let mut doomed = tenant.agent("killed", &["pool=k"], 1).await;
    tenant.wait_online(&doomed).await;
    let sleep = json!({ "target": { "selector": "pool=k" }, "task": { "kind": "shell", "argv": ["sleep", "60"] } });
    let running = tenant.submit(sleep).await;
    wait_for_task(&tenant, &running, "executing").await;
    // Capacity 1: this one waits in the doomed agent's queue.
    let waiting = tenant
        .submit(json!({ "target": { "selector": "pool=k" }, "task": { "kind": "noop" } }))
        .await;
    wait_for_task(&tenant, &waiting, "routing").await;

    doomed.kill().await;
    let survivor = tenant.agent("survivor-k", &["pool=k"], 1).await;
    let task = eventually(
        "the waiting task to run on the survivor, long before the grace is over",
        Duration::from_secs(60),
        || async {
            let task = tenant.get(&format!("/v1/tasks/{waiting}")).await;
            (task["state"] == "completed").then_some(task)
        },
    )
    .await;
    assert_eq!(task["agent_id"], survivor.id.as_str(), "{task}");
    let view = tenant.get(&format!("/v1/agents/{}", doomed.id)).await;
    assert_eq!(view["status"], "offline", "{view}");
}
