//! An operator cancels tasks with `POST /v1/tasks/{id}/cancel`: a waiting task is
//! cancelled at once and never runs; a running one is stopped by its agent (process
//! group SIGTERM, then SIGKILL after the grace) and ends `cancelled`; an assignment still
//! waiting in the agent's queue is dropped unrun; a finished task is a 409, an unknown or
//! another tenant's task a 404.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use ris_broker::lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use ris_broker::lapin::types::FieldTable;
use ris_broker::BrokerConfig;
use ris_tests::{eventually, unique, wait_for_task, System, TenantClient};
use serde_json::{json, Value};

async fn cancel(tenant: &TenantClient, id: &str) -> (StatusCode, Value) {
    tenant
        .request(Method::POST, &format!("/v1/tasks/{id}/cancel"), None)
        .await
}

async fn states(tenant: &TenantClient, id: &str) -> Vec<String> {
    let events = tenant.get(&format!("/v1/tasks/{id}/events")).await;
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .collect()
}

/// A file the task writes its shell's pid to, removed when dropped.
struct PidFile(PathBuf);

impl PidFile {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("{}.pid", unique("ris-cancel-"))))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// Waits until the task has written it.
    async fn pid(&self) -> u32 {
        eventually("the task to write its pid", Duration::from_secs(15), || {
            let text = std::fs::read_to_string(&self.0).unwrap_or_default();
            std::future::ready(text.trim().parse().ok())
        })
        .await
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        drop(std::fs::remove_file(&self.0));
    }
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Cancels an executing task: 202 with `cancel_requested`, the state still `executing`.
async fn request_cancel(tenant: &TenantClient, id: &str) {
    let (status, body) = cancel(tenant, id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["cancel_requested"], true, "{body}");
    assert_eq!(body["state"], "executing", "{body}");
    assert!(body["cancel_requested_at"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_task_is_cancelled_at_once_and_never_runs() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let vhost = format!("ris.{}", tenant.name);
    let conn = ris_broker::connect_admin(&BrokerConfig::default(), &vhost, "e2e events")
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            "ris.events".into(),
            "task.cancelled".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // No agent matches: the task waits.
    let target = json!({ "selector": "pool=late" });
    let id = tenant
        .submit(json!({ "target": target, "task": { "kind": "noop" } }))
        .await;
    assert_eq!(
        tenant.get(&format!("/v1/tasks/{id}")).await["state"],
        "queued"
    );

    let (status, body) = cancel(&tenant, &id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "cancelled");
    assert_eq!(body["reason"], "cancelled");
    assert_eq!(body["cancel_requested"], false);
    assert!(body["cancel_requested_at"].is_string(), "{body}");
    let events = tenant.get(&format!("/v1/tasks/{id}/events")).await;
    let last = events["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["state"], "cancelled");
    assert_eq!(last["detail"]["cancelled_by"], "api", "{last}");
    assert!(last["detail"]["api_key_id"].is_string(), "{last}");

    // Announced on `ris.events` like any other state change.
    let event: Value = eventually("a task.cancelled event", Duration::from_secs(10), || {
        let (channel, queue) = (channel.clone(), queue.name().clone());
        async move {
            let msg = channel
                .basic_get(queue, BasicGetOptions { no_ack: true })
                .await
                .unwrap()?;
            Some(serde_json::from_slice(&msg.delivery.data).unwrap())
        }
    })
    .await;
    assert_eq!(event["type"], "task.cancelled");
    assert_eq!(event["data"]["task_id"], id.as_str());
    assert_eq!(event["data"]["reason"], "cancelled");

    // A matching agent appears and runs later work, but never the cancelled task.
    let agent = tenant.agent("late", &["pool=late"], 2).await;
    tenant.wait_online(&agent).await;
    let probe = tenant
        .submit(json!({ "target": target, "task": { "kind": "noop" } }))
        .await;
    wait_for_task(&tenant, &probe, "completed").await;
    tokio::time::sleep(Duration::from_secs(2)).await; // several placement sweeps
    let task = tenant.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(task["state"], "cancelled", "{task}");
    assert_eq!(task["attempts"], 0, "{task}");
    assert_eq!(states(&tenant, &id).await, ["queued", "cancelled"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executing_task_is_stopped_and_its_process_is_gone() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    // Capacity 1, busy with this very task: the control queue must still be heard.
    let agent = tenant.agent("busy", &[], 1).await;
    tenant.wait_online(&agent).await;

    let argv = tenant
        .submit(
            json!({ "target": { "agent_id": agent.id }, "timeout_secs": 120,
                        "task": { "kind": "shell", "argv": ["sleep", "60"] } }),
        )
        .await;
    wait_for_task(&tenant, &argv, "executing").await;
    request_cancel(&tenant, &argv).await;
    let task = wait_for_task(&tenant, &argv, "cancelled").await;
    assert_eq!(task["reason"], "cancelled");
    assert_eq!(task["result"]["outcome"], "cancelled");
    assert_eq!(task["result"]["reason"], "cancelled");
    let ms = task["result"]["duration_ms"].as_u64().unwrap();
    assert!(ms < 30_000, "a cancelled sleep 60 ran {ms} ms");

    // A script whose process is checked for afterwards.
    let pid_file = PidFile::new();
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.path());
    let id = tenant
        .submit(
            json!({ "target": { "agent_id": agent.id }, "timeout_secs": 120,
                        "task": { "kind": "shell", "script": script } }),
        )
        .await;
    wait_for_task(&tenant, &id, "executing").await;
    let pid = pid_file.pid().await;
    assert!(alive(pid));
    let asked = Instant::now();
    request_cancel(&tenant, &id).await;
    let task = wait_for_task(&tenant, &id, "cancelled").await;
    // Well within the 5 s grace: SIGTERM was enough.
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "cancel took {:?}",
        asked.elapsed()
    );
    assert_eq!(task["result"]["reason"], "cancelled");
    assert_eq!(task["result"]["output"]["signal"], 15, "{task}");
    assert!(task["cancel_requested_at"].is_string(), "{task}");
    assert!(!alive(pid), "process {pid} outlived the cancel");
    let (status, body) = cancel(&tenant, &id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let agent = tenant.agent("stubborn", &[], 1).await;
    tenant.wait_online(&agent).await;

    // The ignored disposition is inherited by every `sleep` it starts.
    let pid_file = PidFile::new();
    let script = format!(
        "trap '' TERM; echo $$ > {}; while true; do sleep 1; done",
        pid_file.path()
    );
    let id = tenant
        .submit(
            json!({ "target": { "agent_id": agent.id }, "timeout_secs": 120,
                        "task": { "kind": "shell", "script": script } }),
        )
        .await;
    wait_for_task(&tenant, &id, "executing").await;
    let pid = pid_file.pid().await;
    let asked = Instant::now();
    request_cancel(&tenant, &id).await;
    let task = wait_for_task(&tenant, &id, "cancelled").await;
    let took = asked.elapsed();
    // The agent's grace between SIGTERM and SIGKILL is 5 s.
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(20),
        "cancel took {took:?}"
    );
    assert_eq!(task["result"]["outcome"], "cancelled");
    assert_eq!(task["result"]["output"]["signal"], 9, "{task}");
    assert!(!alive(pid), "process {pid} outlived the cancel");
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_unknown_and_foreign_tasks_cannot_be_cancelled() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let other = system.tenant().await;
    let agent = tenant.agent("done", &[], 1).await;
    tenant.wait_online(&agent).await;

    let done = tenant
        .submit(json!({ "target": { "agent_id": agent.id }, "task": { "kind": "noop" } }))
        .await;
    wait_for_task(&tenant, &done, "completed").await;
    let (status, body) = cancel(&tenant, &done).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body,
        json!({ "code": "task_finished", "message": "task already completed" })
    );

    let (status, body) = cancel(&tenant, &uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "not_found");

    // Another tenant's waiting task: not found, and left alone.
    let waiting = tenant
        .submit(json!({ "target": { "selector": "pool=none" }, "task": { "kind": "noop" } }))
        .await;
    let (status, body) = cancel(&other, &waiting).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let task = tenant.get(&format!("/v1/tasks/{waiting}")).await;
    assert_eq!(task["state"], "queued", "{task}");
    assert!(task.get("cancel_requested_at").is_none(), "{task}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_assignment_waiting_in_the_agents_queue_is_dropped_unrun() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let agent = tenant.agent("one-slot", &[], 1).await;
    tenant.wait_online(&agent).await;

    let first = tenant
        .submit(json!({ "target": { "agent_id": agent.id },
                        "task": { "kind": "shell", "argv": ["sleep", "5"] } }))
        .await;
    wait_for_task(&tenant, &first, "executing").await;
    // Assigned to the agent, whose only slot is taken: it waits there, `routing`.
    let marker = std::env::temp_dir().join(unique("ris-cancel-ran-"));
    let second = tenant
        .submit(json!({ "target": { "agent_id": agent.id },
                        "task": { "kind": "shell", "argv": ["touch", marker.to_str().unwrap()] } }))
        .await;
    wait_for_task(&tenant, &second, "routing").await;

    let (status, body) = cancel(&tenant, &second).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "cancelled");
    assert_eq!(body["attempts"], 1);

    wait_for_task(&tenant, &first, "completed").await;
    eventually(
        "the agent to drop the cancelled assignment",
        Duration::from_secs(15),
        || {
            let log = agent.log_text();
            std::future::ready(
                log.lines()
                    .any(|l| l.contains("acked and dropped") && l.contains(&second))
                    .then_some(()),
            )
        },
    )
    .await;
    // The slot is free again and the agent still works.
    let probe = tenant
        .submit(json!({ "target": { "agent_id": agent.id }, "task": { "kind": "noop" } }))
        .await;
    wait_for_task(&tenant, &probe, "completed").await;

    assert!(!marker.exists(), "the cancelled task ran");
    assert_eq!(
        states(&tenant, &second).await,
        ["queued", "routing", "cancelled"]
    );
    let task = tenant.get(&format!("/v1/tasks/{second}")).await;
    assert_eq!(task["state"], "cancelled", "{task}");
    assert!(task.get("result").is_none(), "{task}");
}
