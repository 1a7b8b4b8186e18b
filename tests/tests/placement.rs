//! Placement by load: a busy agent is passed over for an idle one with the same labels.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::time::Duration;

use ris_tests::{eventually, wait_for_task, AgentProc, System, TenantClient};
use serde_json::json;

/// Waits until the agent's last heartbeat reports no running task: one that just
/// finished may still be reported for up to one heartbeat interval, and placement
/// believes the heartbeat.
async fn wait_idle(tenant: &TenantClient, agent: &AgentProc) {
    eventually(
        &format!("agent {} to report no running task", agent.name),
        Duration::from_secs(10),
        || async {
            let view = tenant.get(&format!("/v1/agents/{}", agent.id)).await;
            (view["load"]["running"] == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_agent_is_passed_over_for_idle_one() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let a = tenant.agent("pool-a", &["pool=web"], 1).await;
    let b = tenant.agent("pool-b", &["pool=web"], 1).await;
    tenant.wait_online(&a).await;
    tenant.wait_online(&b).await;

    for round in 0..3 {
        // Alternate which agent is busy so a lucky tie-break cannot pass the test.
        let (busy, idle) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let long = tenant
            .submit(json!({ "target": { "agent_id": busy.id }, "task": { "kind": "shell", "argv": ["sleep", "3"] } }))
            .await;
        wait_for_task(&tenant, &long, "executing").await;
        wait_idle(&tenant, idle).await;
        let id = tenant
            .submit(json!({ "target": { "selector": "pool=web" }, "task": { "kind": "shell", "argv": ["true"] } }))
            .await;
        let task = wait_for_task(&tenant, &id, "completed").await;
        assert_eq!(
            task["agent_id"],
            idle.id.as_str(),
            "round {round}: placed on the busy agent"
        );
        wait_for_task(&tenant, &long, "completed").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn task_waits_for_a_matching_agent_then_runs() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let id = tenant
        .submit(json!({ "target": { "selector": "role=late" }, "task": { "kind": "noop" } }))
        .await;
    // Readable as queued the moment the 202 returned, and it stays queued.
    assert_eq!(
        tenant.get(&format!("/v1/tasks/{id}")).await["state"],
        "queued"
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        tenant.get(&format!("/v1/tasks/{id}")).await["state"],
        "queued"
    );

    let agent = tenant.agent("late", &["role=late"], 1).await;
    let task = wait_for_task(&tenant, &id, "completed").await;
    assert_eq!(task["agent_id"], agent.id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_agent_before_queue_timeout_fails_the_task() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let id = tenant
        .submit(json!({ "target": { "selector": "role=nobody" }, "queue_timeout_secs": 2, "task": { "kind": "noop" } }))
        .await;
    let task = wait_for_task(&tenant, &id, "failed").await;
    assert_eq!(task["reason"], "no_agent");
    assert_eq!(task["attempts"], 0);
}
