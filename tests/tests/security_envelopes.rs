//! Signed task envelopes: an agent runs only what the platform signed for it. A task
//! message published straight to an agent's queue with the platform's own broker
//! credentials — unsigned, signed with another key, or a genuine signature over a
//! changed body — is not run and is dead-lettered with reason `bad_signature`; so is a
//! forged control order.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use reqwest::Method;
use ris_broker::envelope::{Scope, Signer};
use ris_broker::{BrokerConfig, PublishOptions, Publisher, AGENTS_EXCHANGE};
use ris_schemas::ids::{AgentId, TaskId, TenantName};
use ris_tests::{eventually, wait_for_task, System, TenantClient};
use serde_json::{json, Value};

async fn admin_publisher(tenant: &TenantClient) -> (ris_broker::lapin::Connection, Publisher) {
    let vhost = format!("ris.{}", tenant.name);
    let conn = ris_broker::connect_admin(&BrokerConfig::default(), &vhost, "e2e forger")
        .await
        .unwrap();
    let publisher = Publisher::new(&conn).await.unwrap();
    (conn, publisher)
}

/// An assignment that would create `marker` if it ran.
fn assignment(agent: &str, task: TaskId, marker: &Path) -> Value {
    json!({
        "type": "task.assign", "v": 1, "task_id": task.to_string(), "attempt": 1,
        "agent_id": agent,
        "task": { "kind": "shell", "argv": ["touch", marker.to_str().unwrap()] },
        "timeout_secs": 30, "output_cap_bytes": 65536,
        "assigned_at": Utc::now().to_rfc3339(),
    })
}

async fn bad_signature_letters(tenant: &TenantClient) -> Vec<Value> {
    let page = tenant.get("/v1/dead-letters?limit=200").await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["reason"] == "bad_signature")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_assignments_and_orders_are_refused_and_dead_lettered() {
    let system = System::start().await;
    let t = system.tenant().await;
    let agent = t.agent("target", &["role=target"], 2).await;
    t.wait_online(&agent).await;

    // Genuine work still runs (the platform signs it).
    let genuine = t
        .submit(json!({
            "target": { "agent_id": agent.id },
            "task": { "kind": "shell", "argv": ["echo", "signed"] },
        }))
        .await;
    wait_for_task(&t, &genuine, "completed").await;

    let (_conn, publisher) = admin_publisher(&t).await;
    let tenant = TenantName::parse(&t.name).unwrap();
    let agent_id = AgentId(uuid::Uuid::parse_str(&agent.id).unwrap());
    let dir = t.workdir().join("forgeries");
    std::fs::create_dir_all(&dir).unwrap();
    let marker = |n: &str| dir.join(format!("ran-{n}"));

    // 1. No signature at all.
    let body =
        serde_json::to_vec(&assignment(&agent.id, TaskId::new(), &marker("unsigned"))).unwrap();
    publisher
        .publish_bytes(AGENTS_EXCHANGE, &agent.id, &body, PublishOptions::default())
        .await
        .unwrap();

    // 2. Signed, but with a key the platform never published.
    let (kid, seed, _) = Signer::generate();
    let stranger = Signer::from_seed(kid, &seed);
    let task = TaskId::new();
    let body = serde_json::to_vec(&assignment(&agent.id, task, &marker("stranger"))).unwrap();
    let scope = Scope {
        tenant: &tenant,
        agent: agent_id,
        task: Some(task),
        attempt: 1,
    };
    let headers = stranger.headers(&scope, Utc::now() + chrono::Duration::hours(1), &body);
    let opts = PublishOptions {
        headers: headers.clone(),
        ..PublishOptions::default()
    };
    publisher
        .publish_bytes(AGENTS_EXCHANGE, &agent.id, &body, opts)
        .await
        .unwrap();

    // 3. The platform's kid in the headers, a signature that does not match the body.
    let keys = system.admin(Method::GET, "/v1/signing-keys", None).await.1;
    let real_kid = keys[0]["kid"].as_str().unwrap().to_owned();
    let forged_headers: Vec<(String, String)> = headers
        .into_iter()
        .map(|(k, v)| {
            if k == "x-ris-sig-kid" {
                (k, real_kid.clone())
            } else {
                (k, v)
            }
        })
        .collect();
    let opts = PublishOptions {
        headers: forged_headers,
        ..PublishOptions::default()
    };
    publisher
        .publish_bytes(AGENTS_EXCHANGE, &agent.id, &body, opts)
        .await
        .unwrap();

    // 4. A forged cancel of a running task (control queue).
    let long = t
        .submit(json!({
            "target": { "agent_id": agent.id },
            "task": { "kind": "shell", "argv": ["sleep", "4"] },
        }))
        .await;
    wait_for_task(&t, &long, "executing").await;
    let cancel = json!({ "type": "task.cancel", "v": 1, "task_id": long });
    publisher
        .publish_bytes(
            AGENTS_EXCHANGE,
            &format!("{}.ctl", agent.id),
            &serde_json::to_vec(&cancel).unwrap(),
            PublishOptions::default(),
        )
        .await
        .unwrap();

    // All four end in ris.dead as bad_signature; nothing forged ran or took effect.
    let letters = eventually(
        "four bad_signature dead letters",
        Duration::from_secs(20),
        || async {
            let letters = bad_signature_letters(&t).await;
            (letters.len() >= 4).then_some(letters)
        },
    )
    .await;
    let sources: Vec<&str> = letters
        .iter()
        .map(|l| l["source_queue"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources.iter().filter(|q| q.ends_with(".ctl")).count(),
        1,
        "{letters:?}"
    );
    let done = wait_for_task(&t, &long, "completed").await;
    assert_eq!(
        done["state"], "completed",
        "a forged cancel took effect: {done}"
    );
    for name in ["unsigned", "stranger"] {
        assert!(!marker(name).exists(), "forged assignment `{name}` ran");
    }
    assert!(agent.log_text().contains("bad_signature"));
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_keys_rotate_without_interrupting_agents() {
    let system = System::start().await;
    let t = system.tenant().await;
    let agent = t.agent("rotating", &[], 1).await;
    t.wait_online(&agent).await;
    let (status, old) = system.admin(Method::GET, "/v1/signing-keys", None).await;
    assert!(status.is_success(), "{old}");
    let old_kid = old[0]["kid"].as_str().unwrap().to_owned();
    let (status, new) = system
        .admin(
            Method::POST,
            "/v1/signing-keys",
            Some(json!({ "activate_in_secs": 3 })),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{new}");
    // The current key cannot be retired while it signs.
    let (status, _) = system
        .admin(Method::DELETE, &format!("/v1/signing-keys/{old_kid}"), None)
        .await;
    assert_eq!(status.as_u16(), 409);
    // After activation (and the signers' caches), work is signed with the new key and
    // the agent, which learnt it from its heartbeat, runs it.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (status, _) = system
        .admin(Method::DELETE, &format!("/v1/signing-keys/{old_kid}"), None)
        .await;
    assert_eq!(status.as_u16(), 204);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let task = t
        .submit(json!({
            "target": { "agent_id": agent.id },
            "task": { "kind": "shell", "argv": ["true"] },
        }))
        .await;
    wait_for_task(&t, &task, "completed").await;
    assert!(bad_signature_letters(&t).await.is_empty());
}
