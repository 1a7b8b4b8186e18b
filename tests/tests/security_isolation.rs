//! Tenant isolation through the API: tenant A's key cannot read, list, cancel or
//! modify anything of tenant B, and gets 404 — never 403, never data — so it cannot
//! even learn what exists.

#![allow(clippy::unwrap_used)]

use reqwest::{Method, StatusCode};
use ris_tests::System;
use serde_json::json;

fn queued_task() -> serde_json::Value {
    json!({
        "target": { "selector": "nobody=here" },
        "task": { "kind": "shell", "argv": ["true"] },
        "queue_timeout_secs": 600,
    })
}

#[tokio::test]
async fn tenant_a_cannot_read_or_touch_tenant_b() {
    let system = System::start().await;
    let a = system.tenant().await;
    let b = system.tenant().await;

    let task = b.submit(queued_task()).await;
    let (status, agent) = b.enroll_http("b-agent").await;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let agent = agent["agent_id"].as_str().unwrap().to_owned();
    let (status, hook) = b
        .request(
            Method::POST,
            "/v1/webhooks",
            Some(json!({
                "url": "https://example.com/h", "events": ["task.*"],
                "secret": "0123456789abcdef0123",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let hook = hook["id"].as_str().unwrap().to_owned();
    let (b_key_id, _) = b.create_key("viewer", None).await;

    // Reads and changes of B's things by id: 404, with nothing of B in the body.
    let attempts = [
        (Method::GET, format!("/v1/tasks/{task}")),
        (Method::GET, format!("/v1/tasks/{task}/events")),
        (Method::GET, format!("/v1/tasks/{task}/attempts")),
        (Method::POST, format!("/v1/tasks/{task}/cancel")),
        (Method::GET, format!("/v1/agents/{agent}")),
        (Method::GET, format!("/v1/webhooks/{hook}")),
        (Method::GET, format!("/v1/webhooks/{hook}/deliveries")),
        (Method::DELETE, format!("/v1/webhooks/{hook}")),
        (Method::DELETE, format!("/v1/api-keys/{b_key_id}")),
    ];
    for (method, path) in attempts {
        let (status, body) = a.request(method.clone(), &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        let text = body.to_string();
        assert!(!text.contains(&b.name), "{method} {path} leaks B: {text}");
    }

    // Lists show only A's own. (A's audit log holds the paths A itself tried, B's ids
    // included, but nothing of B's.)
    let audit = a.get("/v1/audit").await.to_string();
    assert!(!audit.contains(&b.name), "{audit}");
    for path in ["/v1/tasks", "/v1/agents", "/v1/webhooks", "/v1/api-keys"] {
        let text = a.get(path).await.to_string();
        for secret_of_b in [&task, &agent, &hook, &b_key_id, &b.name] {
            assert!(
                !text.contains(secret_of_b.as_str()),
                "{path} shows B's {secret_of_b}"
            );
        }
    }

    // Naming B explicitly is refused.
    for path in [
        format!("/v1/audit?tenant={}", b.name),
        format!("/v1/api-keys?tenant={}", b.name),
    ] {
        let (status, body) = a.request(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }
    let (status, body) = a
        .request(
            Method::POST,
            "/v1/api-keys",
            Some(json!({ "name": "x", "tenant": b.name })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // A tenant key is not the platform admin.
    let (status, _) = a.request(Method::GET, "/v1/tenants", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // B's things are untouched.
    assert_eq!(b.get(&format!("/v1/tasks/{task}")).await["state"], "queued");
    b.get(&format!("/v1/webhooks/{hook}")).await;
    let keys = b.get("/v1/api-keys").await;
    let key = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == b_key_id.as_str())
        .unwrap();
    assert!(key.get("revoked_at").is_none(), "{key}");
}

#[tokio::test]
async fn a_finished_task_read_by_its_tenant_stays_hidden_from_others() {
    let system = System::start().await;
    let a = system.tenant().await;
    let b = system.tenant().await;
    let task = b.submit(queued_task()).await;
    let (status, body) = b
        .request(Method::POST, &format!("/v1/tasks/{task}/cancel"), None)
        .await;
    assert!(status.is_success(), "{body}");
    // Finished: B's read puts the body in the API's finished-task cache.
    let path = format!("/v1/tasks/{task}");
    for _ in 0..2 {
        let view = b.get(&path).await;
        assert_eq!(view["state"], "cancelled", "{view}");
    }
    let (status, body) = a.request(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(!body.to_string().contains(&b.name), "{body}");
}
