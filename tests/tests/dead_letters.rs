//! Dead letters through the API: what could not be processed is listed with its reason,
//! source queue and original headers; it can be discarded, or replayed once its cause
//! is fixed; another tenant sees none of it. Messages the broker itself dead-letters
//! (past a quorum queue's delivery limit) are listed too.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use ris_broker::lapin::options::{
    BasicConsumeOptions, BasicNackOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use ris_broker::lapin::types::{AMQPValue, FieldTable};
use ris_broker::lapin::Connection;
use ris_broker::{BrokerConfig, PublishOptions, Publisher};
use ris_tests::{eventually, unique, wait_for_task, AgentProc, System, TenantClient};
use serde_json::{json, Value};

async fn admin_publisher(vhost: &str) -> (Connection, Publisher) {
    let conn = ris_broker::connect_admin(&BrokerConfig::default(), vhost, "e2e admin")
        .await
        .unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    (conn, publisher)
}

fn vhost(tenant: &TenantClient) -> String {
    format!("ris.{}", tenant.name)
}

/// Every dead letter of the tenant, newest first, following the cursor 2 at a time.
async fn all_dead_letters(tenant: &TenantClient) -> Vec<Value> {
    let mut items = Vec::new();
    let mut path = "/v1/dead-letters?limit=2".to_owned();
    loop {
        let page = tenant.get(&path).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/dead-letters?limit=2&cursor={cursor}"),
            None => return items,
        }
    }
}

/// Waits for a dead letter matching `pred` to be listed.
async fn wait_for_dead_letter(
    tenant: &TenantClient,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, Duration::from_secs(30), || async {
        all_dead_letters(tenant).await.into_iter().find(&pred)
    })
    .await
}

fn has_reason(d: &Value, source: &str, reason: &str) -> bool {
    d["source_queue"] == source && d["reason"].as_str().is_some_and(|r| r.contains(reason))
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_is_listed_with_its_reason_and_discarded_and_other_tenants_see_none() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let other = system.tenant().await;
    let (conn, publisher) = admin_publisher(&vhost(&tenant)).await;

    let opts = PublishOptions {
        headers: vec![("x-origin".into(), "e2e".into())],
        message_id: Some("garbage-1".into()),
        ..PublishOptions::default()
    };
    publisher
        .publish_bytes("ris.submit", "", b"this is not json", opts)
        .await
        .unwrap();
    publisher
        .publish_bytes(
            "ris.results",
            "garbage",
            b"\x00\x01garbage\xff",
            PublishOptions::default(),
        )
        .await
        .unwrap();

    let submit = wait_for_dead_letter(&tenant, "the submission's dead letter", |d| {
        has_reason(d, "ris.submit", "unparseable submission")
    })
    .await;
    assert_eq!(submit["body"], "this is not json");
    assert!(submit.get("body_base64").is_none(), "{submit:#}");
    assert_eq!(submit["headers"]["x-origin"], "e2e");
    assert_eq!(submit["headers"]["x-ris-dead-source"], "ris.submit");
    assert_eq!(submit["properties"]["message_id"], "garbage-1");
    assert_eq!(submit["properties"]["content_type"], "application/json");
    assert_eq!(submit["exchange"], "ris.submit");
    assert_eq!(submit["replay_count"], 0);
    assert!(submit["dead_at"].is_string());

    let report = wait_for_dead_letter(&tenant, "the report's dead letter", |d| {
        has_reason(d, "ris.results", "unparseable report")
    })
    .await;
    assert!(report.get("body").is_none(), "{report:#}");
    // base64 of 00 01 "garbage" ff
    assert_eq!(report["body_base64"], "AAFnYXJiYWdl/w==");
    assert_eq!(
        (&report["exchange"], &report["routing_key"]),
        (&json!("ris.results"), &json!("garbage"))
    );

    let id = submit["id"].as_str().unwrap();
    assert_eq!(tenant.get(&format!("/v1/dead-letters/{id}")).await, submit);

    // Another tenant: an empty list, and 404 for each of them whatever the verb.
    assert_eq!(other.get("/v1/dead-letters").await["items"], json!([]));
    for (method, path) in [
        (Method::GET, format!("/v1/dead-letters/{id}")),
        (Method::POST, format!("/v1/dead-letters/{id}/replay")),
        (Method::DELETE, format!("/v1/dead-letters/{id}")),
    ] {
        let (status, body) = other.request(method.clone(), &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }

    // Discarding: gone from the list, then a 404.
    let (status, _) = tenant
        .request(Method::DELETE, &format!("/v1/dead-letters/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = tenant
        .request(Method::GET, &format!("/v1/dead-letters/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = tenant
        .request(Method::DELETE, &format!("/v1/dead-letters/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let left: Vec<Value> = all_dead_letters(&tenant).await;
    assert_eq!(left, [report]);

    // Bad parameters are 400s naming the parameter.
    for (path, field) in [
        ("/v1/dead-letters?limit=0", "limit"),
        ("/v1/dead-letters?cursor=nope", "cursor"),
        ("/v1/dead-letters/not-a-uuid", "id"),
    ] {
        let (status, body) = tenant.request(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["field"], field, "{path}: {body}");
    }
    drop(conn.close(200, "done".into()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_redelivered_past_the_delivery_limit_is_listed() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let (conn, publisher) = admin_publisher(&vhost(&tenant)).await;

    // A scratch queue declared like ris.submit (broker/src/topology.rs).
    let queue = unique("e2e.poison.");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("ris.dead".into()),
    );
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(10));
    let channel = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, args)
        .await
        .unwrap();
    // Straight to the queue through the default exchange: this test only.
    publisher
        .publish_bytes("", &queue, b"poison", PublishOptions::default())
        .await
        .unwrap();

    // A consumer that crash-loops on it: every delivery is returned to the queue.
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "e2e poison".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut deliveries = 0;
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_secs(3), consumer.next()).await
    {
        let delivery = delivery.unwrap();
        deliveries += 1;
        delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .unwrap();
        assert!(deliveries <= 20, "the delivery limit never applied");
    }
    assert!(deliveries > 10, "delivered only {deliveries} times");

    let dead = wait_for_dead_letter(&tenant, "the poison message", |d| {
        d["source_queue"] == queue.as_str()
    })
    .await;
    assert_eq!(dead["reason"], "delivery_limit", "{dead:#}");
    assert_eq!(dead["body"], "poison");
    assert_eq!(dead["headers"]["x-death"][0]["reason"], "delivery_limit");
    assert_eq!(dead["headers"]["x-death"][0]["queue"], queue.as_str());

    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    drop(conn.close(200, "done".into()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_submission_refused_for_a_taken_id_is_replayed_once_the_id_is_free() {
    let system = System::start().await;
    let owner = system.tenant().await;
    let tenant = system.tenant().await;
    let agent = tenant.agent("replay", &["env=test"], 1).await;
    tenant.wait_online(&agent).await;

    // The id is taken by another tenant (whose task waits: it has no agent).
    let noop = json!({ "target": { "selector": "env=test" }, "task": { "kind": "noop" } });
    let id = owner.submit(noop.clone()).await;
    let (conn, publisher) = admin_publisher(&vhost(&tenant)).await;
    let submission = json!({ "type": "task.submit", "v": 1, "task_id": id, "request": noop });
    publisher
        .publish_json("ris.submit", "", &submission, PublishOptions::default())
        .await
        .unwrap();
    let dead = wait_for_dead_letter(&tenant, "the refused submission", |d| {
        has_reason(d, "ris.submit", "already in use")
    })
    .await;
    let dead_id = dead["id"].as_str().unwrap().to_owned();
    let replay = format!("/v1/dead-letters/{dead_id}/replay");

    // Replayed too early: refused again, as a new dead letter that says what it replays.
    let (status, body) = tenant.request(Method::POST, &replay, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["replay_count"], 1);
    assert!(body["replayed_at"].is_string(), "{body}");
    let again = wait_for_dead_letter(&tenant, "the replay's dead letter", |d| {
        d["headers"]["x-ris-replay-of"] == dead_id.as_str()
    })
    .await;
    assert!(
        has_reason(&again, "ris.submit", "already in use"),
        "{again:#}"
    );
    assert!(again["headers"].get("x-death").is_none(), "{again:#}");
    let (status, _) = tenant
        .request(Method::GET, &format!("/v1/tasks/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The cause fixed (the other tenant is gone), the replay goes through.
    let (status, body) = system
        .admin(Method::DELETE, &format!("/v1/tenants/{}", owner.name), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = tenant.request(Method::POST, &replay, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["replay_count"], 2);
    let task = wait_for_task(&tenant, &id, "completed").await;
    assert_eq!(task["agent_id"], agent.id.as_str());
    drop(conn.close(200, "done".into()).await);
}

async fn agent_connection(agent: &AgentProc) -> (Connection, Value) {
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
async fn a_replayed_report_passes_the_user_check_as_the_platform_user() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let mut agent = tenant.agent("reporter", &[], 1).await;
    agent.kill().await;
    let (conn, amqp) = agent_connection(&agent).await;
    let publisher = Publisher::new(&conn).await.unwrap();

    // A report for a task this tenant does not have, from the agent itself.
    let report = json!({
        "type": "task.executing", "v": 1, "task_id": uuid::Uuid::new_v4(), "attempt": 1,
        "agent_id": agent.id, "started_at": "2026-01-01T00:00:00Z",
    });
    let user = amqp["username"].as_str().unwrap().to_owned();
    let opts = PublishOptions {
        user_id: Some(user.clone()),
        ..PublishOptions::default()
    };
    publisher
        .publish_json("ris.results", &agent.id, &report, opts)
        .await
        .unwrap();
    let dead = wait_for_dead_letter(&tenant, "the report", |d| {
        has_reason(d, "ris.results", "unknown task")
    })
    .await;
    assert_eq!(dead["properties"]["user_id"], user.as_str());
    assert_eq!(
        (&dead["exchange"], &dead["routing_key"]),
        (&json!("ris.results"), &json!(agent.id))
    );

    // Replayed as the platform's broker user: not refused for its user_id, so it fails
    // for the same reason as before.
    let dead_id = dead["id"].as_str().unwrap().to_owned();
    let (status, body) = tenant
        .request(
            Method::POST,
            &format!("/v1/dead-letters/{dead_id}/replay"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let again = wait_for_dead_letter(&tenant, "the replayed report", |d| {
        d["headers"]["x-ris-replay-of"] == dead_id.as_str()
    })
    .await;
    assert_eq!(again["reason"], "unknown task", "{again:#}");
    assert_eq!(again["properties"]["user_id"], "guest");
    drop(conn.close(200, "done".into()).await);
}
