//! Bad input gets a clear 4xx naming the field; never a 5xx, a hang or a lost task.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use reqwest::{Method, StatusCode};
use ris_tests::System;
use serde_json::{json, Value};

async fn post_raw(system: &System, key: &str, path: &str, body: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", system.api_url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn task_submissions_are_validated() {
    let system = System::start().await;
    let tenant = system.tenant().await;

    let (status, body) = post_raw(&system, &tenant.key, "/v1/tasks", "{not json").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_json")),
        "{body}"
    );

    let cases = [
        (json!({ "task": { "kind": "noop" } }), "", "target"),
        (
            json!({ "target": { "selector": "a=b" }, "task": { "kind": "ftp" } }),
            "task.kind",
            "ftp",
        ),
        (
            json!({ "target": { "selector": "a=b" }, "task": { "kind": "shell", "argv": "ls" } }),
            "task.argv",
            "sequence",
        ),
        (
            json!({ "target": { "selector": "a=b" }, "task": { "kind": "shell" } }),
            "task",
            "argv",
        ),
        (
            json!({ "target": { "selector": "a=b" }, "task": { "kind": "http", "url": "ftp://x" } }),
            "task.url",
            "scheme",
        ),
        (
            json!({ "target": { "selector": "not a selector" }, "task": { "kind": "noop" } }),
            "target.selector",
            "selector",
        ),
        (
            json!({ "target": {}, "task": { "kind": "noop" } }),
            "target",
            "exactly one",
        ),
        (
            json!({ "target": { "selector": "a=b" }, "timeout_secs": 0, "task": { "kind": "noop" } }),
            "timeout_secs",
            "between",
        ),
        (
            json!({ "target": { "selector": "a=b" }, "timeout_secs": "60", "task": { "kind": "noop" } }),
            "timeout_secs",
            "",
        ),
    ];
    for (body, field, words) in cases {
        let (status, err) = tenant
            .request(Method::POST, "/v1/tasks", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {err}");
        if !field.is_empty() {
            assert_eq!(err["field"], field, "{body} → {err}");
        }
        assert!(
            err["message"].as_str().unwrap_or_default().contains(words),
            "{body} → {err}"
        );
    }

    let (status, err) = tenant
        .request(
            Method::POST,
            "/v1/tasks",
            Some(json!({ "target": { "agent_id": uuid::Uuid::now_v7() }, "task": { "kind": "noop" } })),
        )
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("agent_not_found")),
        "{err}"
    );

    let (status, err) = tenant
        .request(Method::GET, "/v1/tasks/not-a-uuid", None)
        .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id")),
        "{err}"
    );
    let (status, err) = tenant
        .request(Method::GET, "/v1/tasks?state=sleeping", None)
        .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("state")),
        "{err}"
    );
    let (status, _) = tenant
        .request(
            Method::GET,
            &format!("/v1/tasks/{}", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_checked() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/v1/tasks", system.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = client
        .get(format!("{}/v1/tasks", system.api_url))
        .bearer_auth("ris_0000_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Tenant keys cannot create tenants; the admin key cannot act inside a tenant.
    let (status, _) = tenant
        .request(Method::POST, "/v1/tenants", Some(json!({ "name": "x" })))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = system.admin(Method::GET, "/v1/tasks", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A tenant key may create keys for its own tenant only.
    let (status, body) = tenant
        .request(
            Method::POST,
            "/v1/api-keys",
            Some(json!({ "name": "second" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = tenant
        .request(
            Method::POST,
            "/v1/api-keys",
            Some(json!({ "name": "x", "tenant": "someone-else" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_validated_and_idempotent() {
    let system = System::start().await;
    for bad in [
        "Acme",
        "-acme",
        "ac_me",
        "",
        "a-very-long-tenant-name-that-is-too-long",
    ] {
        let (status, err) = system
            .admin(Method::POST, "/v1/tenants", Some(json!({ "name": bad })))
            .await;
        assert_eq!(
            (status, err["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("name")),
            "{bad}: {err}"
        );
    }
    let tenant = system.tenant().await;
    let (status, body) = system
        .admin(
            Method::POST,
            "/v1/tenants",
            Some(json!({ "name": tenant.name })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "second create is idempotent: {body}"
    );
    assert_eq!(body["vhost"], format!("ris.{}", tenant.name));

    let management = reqwest::Client::new();
    let vhost_url = format!("http://127.0.0.1:15672/api/vhosts/ris.{}", tenant.name);
    let vhost = management
        .get(&vhost_url)
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap();
    assert_eq!(vhost.status(), StatusCode::OK, "vhost exists");

    for _ in 0..2 {
        let (status, _) = system
            .admin(
                Method::DELETE,
                &format!("/v1/tenants/{}", tenant.name),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let vhost = management
        .get(&vhost_url)
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap();
    assert_eq!(vhost.status(), StatusCode::NOT_FOUND, "vhost removed");
    let (status, _) = tenant.request(Method::GET, "/v1/tasks", None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the tenant's keys died with it"
    );
}
