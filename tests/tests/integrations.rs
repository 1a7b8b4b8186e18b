//! Integrators: an integration gets a broker user that may submit tasks, follow events
//! and use its own queues, and nothing else; a submission with `reply_to` gets the
//! task's final outcome on that queue. The Python example in `examples/python/` is run
//! as the integrator would run it.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use ris_broker::lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use ris_broker::lapin::types::FieldTable;
use ris_broker::{BrokerConfig, PublishOptions, Publisher};
use ris_tests::{eventually, AgentProc, System, TenantClient};
use serde_json::{json, Value};
use tokio::process::Command;

async fn create_integration(tenant: &TenantClient, name: &str) -> Value {
    let (status, body) = tenant
        .request(
            Method::POST,
            "/v1/integrations",
            Some(json!({ "name": name })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "create integration: {body}");
    body
}

async fn connect_as(
    created: &Value,
) -> Result<ris_broker::lapin::Connection, ris_broker::BrokerError> {
    let amqp = &created["amqp"];
    ris_broker::connect(
        &BrokerConfig::default(),
        amqp["vhost"].as_str().unwrap(),
        amqp["username"].as_str().unwrap(),
        amqp["password"].as_str().unwrap(),
        "e2e as integrator",
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn integrations_are_created_listed_validated_and_deleted() {
    let system = System::start().await;
    let tenant = system.tenant().await;

    let created = create_integration(&tenant, "billing").await;
    let user = format!("ris.{}.int.billing", tenant.name);
    assert_eq!(created["name"], "billing");
    assert_eq!(created["amqp"]["username"], user.as_str());
    assert_eq!(created["amqp"]["vhost"], format!("ris.{}", tenant.name));
    assert!(created["amqp"]["password"].as_str().unwrap().len() >= 32);
    assert_eq!(created["contract"]["submit_exchange"], "ris.submit");
    assert_eq!(created["contract"]["events_exchange"], "ris.events");
    assert_eq!(created["contract"]["queue_prefix"], "ris.int.billing.");

    // A name like a tenant name, named in the 400; a second one of the same name is 409.
    for bad in [
        json!({ "name": "Bad.Name" }),
        json!({ "name": "" }),
        json!({ "name": 7 }),
    ] {
        let (status, body) = tenant
            .request(Method::POST, "/v1/integrations", Some(bad.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["field"], "name", "{bad}: {body}");
    }
    // A missing field is named in the message (the shared extractor's way).
    let (status, body) = tenant
        .request(Method::POST, "/v1/integrations", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("`name`"),
        "{body}"
    );
    let (status, body) = tenant
        .request(
            Method::POST,
            "/v1/integrations",
            Some(json!({ "name": "billing" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let list = tenant.get("/v1/integrations").await;
    assert_eq!(list["items"][0]["name"], "billing", "{list}");
    assert_eq!(list["items"][0]["username"], user.as_str(), "{list}");
    assert!(list["items"][0].get("password").is_none());

    // Another tenant sees none of it.
    let other = system.tenant().await;
    assert_eq!(other.get("/v1/integrations").await["items"], json!([]));
    let (status, _) = other
        .request(Method::DELETE, "/v1/integrations/billing", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The credentials work until the integration is deleted.
    let conn = connect_as(&created).await.unwrap();
    drop(conn.close(200, "done".into()).await);
    let (status, body) = tenant
        .request(Method::DELETE, "/v1/integrations/billing", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let err = connect_as(&created).await.expect_err("deleted user");
    assert!(err.is_access_refused(), "{err}");
    assert_eq!(tenant.get("/v1/integrations").await["items"], json!([]));
    let (status, _) = tenant
        .request(Method::DELETE, "/v1/integrations/billing", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn integrator_credentials_reach_only_submit_events_and_their_own_queues() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let mut agent = tenant.agent("int-perm", &[], 1).await;
    agent.kill().await;
    let billing = create_integration(&tenant, "billing").await;
    let erp = create_integration(&tenant, "erp").await;

    // The other integrator declares a queue of its own.
    let erp_conn = connect_as(&erp).await.unwrap();
    erp_conn
        .create_channel()
        .await
        .unwrap()
        .queue_declare(
            "ris.int.erp.inbox".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let conn = connect_as(&billing).await.unwrap();
    // Its own queue, bound to ris.events: allowed.
    let own = conn.create_channel().await.unwrap();
    own.queue_declare(
        "ris.int.billing.events".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    own.queue_bind(
        "ris.int.billing.events".into(),
        "ris.events".into(),
        "task.#".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .expect("an integrator may bind its own queue to ris.events");
    own.basic_consume(
        "ris.int.billing.events".into(),
        "own".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("an integrator may consume its own queue");

    // Another integrator's queue, an agent's queues, the platform's queues: refused.
    for queue in [
        "ris.int.erp.inbox".to_owned(),
        format!("ris.agent.{}", agent.id),
        format!("ris.agent.{}.ctl", agent.id),
        "ris.submit".to_owned(),
        "ris.results".to_owned(),
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
            .expect_err("consuming a queue not its own must be refused");
        assert!(err.to_string().contains("ACCESS_REFUSED"), "{queue}: {err}");
    }
    // Declaring outside its prefix: refused.
    let channel = conn.create_channel().await.unwrap();
    let err = channel
        .queue_declare(
            "ris.int.erp.mine".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("declaring another integrator's name must be refused");
    assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");

    // Publishing anywhere but ris.submit, the default exchange included: refused.
    for (exchange, key) in [
        ("ris.agents", agent.id.clone()),
        ("ris.results", agent.id.clone()),
        ("", "ris.int.erp.inbox".to_owned()),
        ("", format!("ris.agent.{}", agent.id)),
        ("ris.dead", String::new()),
        ("ris.events", "task.completed".to_owned()),
    ] {
        let publisher = Publisher::new(&conn).await.unwrap();
        let err = publisher
            .publish_bytes(exchange, &key, b"{}", PublishOptions::default())
            .await
            .expect_err("publish must be refused");
        assert!(err.is_access_refused(), "{exchange:?}/{key}: {err}");
    }

    // A reply_to outside its own queues is refused: the submission is dead-lettered
    // with the reason, and no task is created.
    let publisher = Publisher::new(&conn).await.unwrap();
    let task_id = uuid::Uuid::now_v7().to_string();
    let submission = json!({
        "type": "task.submit", "v": 1, "task_id": task_id,
        "request": { "target": { "agent_id": agent.id }, "task": { "kind": "noop" } },
    });
    publisher
        .publish_json(
            "ris.submit",
            "",
            &submission,
            PublishOptions {
                reply_to: Some(format!("ris.agent.{}", agent.id)),
                user_id: Some(billing["amqp"]["username"].as_str().unwrap().to_owned()),
                ..PublishOptions::default()
            },
        )
        .await
        .expect("ris.submit is open to integrators");
    let reason: String = eventually(
        "reply_to dead-lettered",
        Duration::from_secs(15),
        || async {
            let page = tenant.get("/v1/dead-letters").await;
            page["items"].as_array().and_then(|items| {
                items
                    .iter()
                    .find(|d| d["source_queue"] == "ris.submit")
                    .map(|d| d["reason"].as_str().unwrap_or_default().to_owned())
            })
        },
    )
    .await;
    assert!(reason.contains("reply_to"), "{reason}");
    let (status, _) = tenant
        .request(Method::GET, &format!("/v1/tasks/{task_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A virtualenv with pika, in `dir`.
async fn python_with_pika(dir: &Path) -> PathBuf {
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(dir)
        .status()
        .await
        .expect("run python3 -m venv");
    assert!(status.success(), "python3 -m venv failed");
    let out = Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "pika"])
        .output()
        .await
        .expect("run pip");
    assert!(
        out.status.success(),
        "pip install pika: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("bin/python")
}

async fn run_example(python: &Path, created: &Value, agent: &AgentProc) -> (bool, String) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/submit_and_wait.py");
    let amqp = &created["amqp"];
    let run = Command::new(python)
        .arg(script)
        .env("RIS_AMQP_URL", amqp["url"].as_str().unwrap())
        .env("RIS_VHOST", amqp["vhost"].as_str().unwrap())
        .env("RIS_USERNAME", amqp["username"].as_str().unwrap())
        .env("RIS_PASSWORD", amqp["password"].as_str().unwrap())
        .env("RIS_AGENT_ID", &agent.id)
        .env("RIS_TIMEOUT", "30")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the example ends by itself")
        .expect("run the example");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_example_gets_the_reply_and_the_completion_event() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let agent = tenant.agent("int-run", &["env=int"], 2).await;
    tenant.wait_online(&agent).await;
    let created = create_integration(&tenant, "billing").await;
    let venv = tempfile::tempdir().unwrap();
    let python = python_with_pika(venv.path()).await;

    let (ok, output) = run_example(&python, &created, &agent).await;
    assert!(ok, "example failed:\n{output}");
    assert!(output.contains("\"type\": \"task.completed\""), "{output}");
    assert!(output.contains("\"type\": \"task.reply\""), "{output}");
    assert!(output.contains("completed: Linux"), "{output}");

    // The task is an ordinary task: the operator sees it through the API.
    let task_id = output
        .lines()
        .find_map(|l| l.strip_prefix("submitted task "))
        .unwrap()
        .trim()
        .to_owned();
    let task = tenant.get(&format!("/v1/tasks/{task_id}")).await;
    assert_eq!(task["state"], "completed", "{task}");
}

/// The next message on `consumer` as (correlation_id, JSON body), within 30 s.
async fn next_reply(consumer: &mut ris_broker::lapin::Consumer) -> (Option<String>, Value) {
    use futures::StreamExt;
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("a reply within 30 s")
        .expect("consumer open")
        .unwrap();
    let correlation = delivery
        .properties
        .correlation_id()
        .as_ref()
        .map(|c| c.as_str().to_owned());
    (correlation, serde_json::from_slice(&delivery.data).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_fails_gets_its_reply_and_a_republished_submission_gets_it_again() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let created = create_integration(&tenant, "billing").await;
    let user = created["amqp"]["username"].as_str().unwrap().to_owned();
    let conn = connect_as(&created).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let queue = "ris.int.billing.replies";
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "replies".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    let task_id = uuid::Uuid::now_v7().to_string();
    // No agent matches: it fails `no_agent` after its one-second queue timeout.
    let submission = json!({
        "type": "task.submit", "v": 1, "task_id": task_id,
        "request": {
            "target": { "selector": "env=nowhere" },
            "task": { "kind": "noop" },
            "queue_timeout_secs": 1,
        },
    });
    let submit = |correlation: &str| PublishOptions {
        reply_to: Some(queue.to_owned()),
        correlation_id: Some(correlation.to_owned()),
        user_id: Some(user.clone()),
        ..PublishOptions::default()
    };
    publisher
        .publish_json("ris.submit", "", &submission, submit("first"))
        .await
        .unwrap();
    let (correlation, reply) = next_reply(&mut consumer).await;
    assert_eq!(correlation.as_deref(), Some("first"));
    assert_eq!(reply["type"], "task.reply", "{reply}");
    assert_eq!(reply["v"], 1, "{reply}");
    assert_eq!(reply["task_id"], task_id.as_str(), "{reply}");
    assert_eq!(reply["state"], "failed", "{reply}");
    assert_eq!(reply["reason"], "no_agent", "{reply}");
    assert_eq!(reply["attempts"], 0, "{reply}");

    // The same submission again (say the integrator lost the first reply): the task is
    // not run again, and the final outcome is sent again with the new correlation id.
    publisher
        .publish_json("ris.submit", "", &submission, submit("second"))
        .await
        .unwrap();
    let (correlation, again) = next_reply(&mut consumer).await;
    assert_eq!(correlation.as_deref(), Some("second"));
    assert_eq!(again["state"], "failed", "{again}");
    assert_eq!(again["task_id"], task_id.as_str(), "{again}");
    let events = tenant.get(&format!("/v1/tasks/{task_id}/events")).await;
    let states: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "failed"], "{events}");

    // A task an operator cancels while it waits gets its reply too.
    let waiting_id = uuid::Uuid::now_v7().to_string();
    let waiting = json!({
        "type": "task.submit", "v": 1, "task_id": waiting_id,
        "request": { "target": { "selector": "env=nowhere" }, "task": { "kind": "noop" } },
    });
    publisher
        .publish_json("ris.submit", "", &waiting, submit("third"))
        .await
        .unwrap();
    let path = format!("/v1/tasks/{waiting_id}");
    eventually("the task stored", Duration::from_secs(15), || async {
        let (status, _) = tenant.request(Method::GET, &path, None).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    let (status, body) = tenant
        .request(
            Method::POST,
            &format!("/v1/tasks/{waiting_id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (correlation, cancelled) = next_reply(&mut consumer).await;
    assert_eq!(correlation.as_deref(), Some("third"));
    assert_eq!(cancelled["task_id"], waiting_id.as_str(), "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
}
