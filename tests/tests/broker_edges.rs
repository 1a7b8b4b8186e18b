//! What happens at the broker: garbage is dead-lettered with a reason while valid work
//! keeps flowing; agent credentials reach only that agent's queues; a result delivered
//! twice is recorded once.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::time::Duration;

use ris_broker::lapin::options::BasicConsumeOptions;
use ris_broker::lapin::types::FieldTable;
use ris_broker::{BrokerConfig, PublishOptions, Publisher};
use ris_tests::{eventually, wait_for_task, AgentProc, System};
use serde_json::{json, Value};

async fn admin_publisher(vhost: &str) -> (ris_broker::lapin::Connection, Publisher) {
    let conn = ris_broker::connect_admin(&BrokerConfig::default(), vhost, "e2e admin")
        .await
        .unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    (conn, publisher)
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_is_dead_lettered_with_a_reason_while_valid_tasks_flow() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let agent = tenant.agent("dl", &["env=test"], 2).await;
    tenant.wait_online(&agent).await;
    let vhost = format!("ris.{}", tenant.name);
    let (_conn, publisher) = admin_publisher(&vhost).await;

    publisher
        .publish_bytes(
            "ris.submit",
            "",
            b"this is not json",
            PublishOptions::default(),
        )
        .await
        .unwrap();
    publisher
        .publish_json(
            "ris.submit",
            "",
            &json!({ "type": "task.submit", "v": 1, "task_id": "nope" }),
            PublishOptions::default(),
        )
        .await
        .unwrap();
    publisher
        .publish_bytes(
            "ris.results",
            "garbage",
            b"\x00\x01garbage",
            PublishOptions::default(),
        )
        .await
        .unwrap();

    let id = tenant
        .submit(json!({ "target": { "selector": "env=test" }, "task": { "kind": "noop" } }))
        .await;
    wait_for_task(&tenant, &id, "completed").await;

    // Dead letters are parked on ris.dead with their reason, then listed by the API.
    let mut reasons: Vec<(String, String)> =
        eventually("three dead letters", Duration::from_secs(15), || async {
            let page = tenant.get("/v1/dead-letters").await;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            (items.len() == 3).then(|| {
                items
                    .iter()
                    .map(|d| {
                        (
                            d["source_queue"].as_str().unwrap_or_default().to_owned(),
                            d["reason"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
        })
        .await;
    reasons.sort();
    assert_eq!(reasons[0].0, "ris.results");
    assert!(reasons[0].1.contains("unparseable report"), "{reasons:?}");
    assert!(
        reasons[1..]
            .iter()
            .all(|(q, r)| q == "ris.submit" && r.contains("unparseable submission")),
        "{reasons:?}"
    );

    // And the consumers are still alive.
    let id = tenant
        .submit(json!({ "target": { "selector": "env=test" }, "task": { "kind": "noop" } }))
        .await;
    wait_for_task(&tenant, &id, "completed").await;
}

async fn agent_connection(agent: &AgentProc) -> (ris_broker::lapin::Connection, Value) {
    let amqp = agent.identity()["enrollment"]["amqp"].clone();
    let conn = ris_broker::connect(
        &BrokerConfig::default(),
        amqp["vhost"].as_str().unwrap(),
        amqp["username"].as_str().unwrap(),
        amqp["password"].as_str().unwrap(),
        "e2e as agent",
    )
    .await
    .unwrap();
    (conn, amqp)
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_credentials_reach_only_their_own_queues() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let mut a = tenant.agent("perm-a", &[], 1).await;
    let b = tenant.agent("perm-b", &[], 1).await;
    a.kill().await; // its queue is free for this test to consume
    let (conn, amqp) = agent_connection(&a).await;

    // Its own queue: allowed.
    let own = conn.create_channel().await.unwrap();
    own.basic_consume(
        amqp["queue"].as_str().unwrap().into(),
        "own".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("an agent may consume its own queue");

    // Another agent's queue and control queue: refused.
    for queue in [
        format!("ris.agent.{}", b.id),
        format!("ris.agent.{}.ctl", b.id),
    ] {
        let channel = conn.create_channel().await.unwrap();
        let err = channel
            .basic_consume(
                queue.as_str().into(),
                "steal".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect_err("consuming another agent's queue must be refused");
        assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");
    }

    // Publishing a submission, or a result as another agent: refused.
    let cases = [
        ("ris.submit", String::new()),
        ("ris.results", b.id.clone()),
        ("ris.agents", b.id.clone()),
    ];
    for (exchange, key) in cases {
        let publisher = Publisher::new(&conn).await.unwrap();
        let err = publisher
            .publish_bytes(exchange, &key, b"{}", PublishOptions::default())
            .await
            .expect_err("publish must be refused");
        assert!(err.is_access_refused(), "{exchange}/{key}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_delivered_twice_is_recorded_once() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let mut agent = tenant.agent("dup", &[], 1).await;
    let witness = tenant.agent("witness", &["role=witness"], 1).await;
    tenant.wait_online(&agent).await;
    tenant.wait_online(&witness).await;
    let id = tenant
        .submit(json!({ "target": { "agent_id": agent.id }, "task": { "kind": "shell", "argv": ["echo", "once"] } }))
        .await;
    let task = wait_for_task(&tenant, &id, "completed").await;
    let events_before = tenant.get(&format!("/v1/tasks/{id}/events")).await["items"]
        .as_array()
        .unwrap()
        .len();
    agent.kill().await;

    // Redeliver the same result (same task, same attempt) as the agent itself.
    let (conn, amqp) = agent_connection(&agent).await;
    let publisher = Publisher::new(&conn).await.unwrap();
    let finished = json!({
        "type": "task.finished", "v": 1, "task_id": id, "attempt": 1, "agent_id": agent.id,
        "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z",
        "result": { "outcome": "failed", "reason": "exit_status", "duration_ms": 1,
                    "output": { "kind": "shell", "exit_code": 9, "signal": null, "stdout": "", "stderr": "",
                                "stdout_truncated": false, "stderr_truncated": false } },
    });
    let opts = PublishOptions {
        user_id: amqp["username"].as_str().map(str::to_owned),
        ..Default::default()
    };
    publisher
        .publish_json("ris.results", &agent.id, &finished, opts.clone())
        .await
        .unwrap();
    publisher
        .publish_json("ris.results", &agent.id, &finished, opts)
        .await
        .unwrap();

    // A later result through the same queue tells the duplicates have been handled.
    let probe = tenant
        .submit(json!({ "target": { "selector": "role=witness" }, "task": { "kind": "noop" } }))
        .await;
    wait_for_task(&tenant, &probe, "completed").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = tenant.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(after["state"], "completed");
    assert_eq!(after["result"], task["result"]);
    let events_after = tenant.get(&format!("/v1/tasks/{id}/events")).await["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(events_before, events_after);
    drop(conn.close(200, "done".into()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_credentials_cannot_open_another_tenants_vhost() {
    let system = System::start().await;
    let ours = system.tenant().await;
    let theirs = system.tenant().await;
    let mut agent = ours.agent("vhost-a", &[], 1).await;
    agent.kill().await;
    let amqp = agent.identity()["enrollment"]["amqp"].clone();
    let (user, password) = (
        amqp["username"].as_str().unwrap(),
        amqp["password"].as_str().unwrap(),
    );
    // Its own vhost: allowed.
    let own = ris_broker::connect(
        &BrokerConfig::default(),
        amqp["vhost"].as_str().unwrap(),
        user,
        password,
        "e2e own vhost",
    )
    .await
    .expect("an agent may open its tenant's vhost");
    drop(own.close(200, "done".into()).await);
    // Another tenant's vhost, and the default one: refused.
    for vhost in [format!("ris.{}", theirs.name), "/".to_owned()] {
        let err = ris_broker::connect(&BrokerConfig::default(), &vhost, user, password, "e2e")
            .await
            .expect_err("opening another tenant's vhost must be refused");
        assert!(
            err.is_access_refused() || err.to_string().contains("access"),
            "{vhost}: {err}"
        );
    }
}
