//! Roles and API keys: what each role may do, and keys that expire or are revoked.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use ris_tests::{System, SystemOptions};
use serde_json::json;

fn queued_task() -> serde_json::Value {
    json!({
        "target": { "selector": "nobody=here" },
        "task": { "kind": "shell", "argv": ["true"] },
        "queue_timeout_secs": 600,
    })
}

#[tokio::test]
async fn viewer_reads_but_cannot_submit_or_cancel() {
    let system = System::start().await;
    let admin = system.tenant().await;
    let task = admin.submit(queued_task()).await;
    let (_, key) = admin.create_key("viewer", None).await;
    let viewer = admin.with_key(&key);

    assert_eq!(
        viewer.get(&format!("/v1/tasks/{task}")).await["id"],
        task.as_str()
    );
    viewer.get("/v1/agents").await;
    let (status, body) = viewer
        .request(Method::POST, "/v1/tasks", Some(queued_task()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "permission_denied");
    assert!(
        body["message"].as_str().unwrap().contains("tasks:submit"),
        "{body}"
    );
    let (status, body) = viewer
        .request(Method::POST, &format!("/v1/tasks/{task}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        admin.get(&format!("/v1/tasks/{task}")).await["state"],
        "queued"
    );
    // Nor anything else that changes state.
    let (status, _) = viewer
        .request(
            Method::POST,
            "/v1/agents/enrollment-tokens",
            Some(json!({ "ttl_secs": 60 })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn operator_works_tasks_but_cannot_manage_keys_or_settings() {
    let system = System::start().await;
    let admin = system.tenant().await;
    let (admin_key_id, _) = admin.create_key("tenant-admin", None).await;
    let (_, key) = admin.create_key("operator", None).await;
    let operator = admin.with_key(&key);

    let task = operator.submit(queued_task()).await;
    let (status, body) = operator
        .request(Method::POST, &format!("/v1/tasks/{task}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/api-keys".to_owned(),
            Some(json!({ "name": "x" })),
        ),
        (Method::GET, "/v1/api-keys".to_owned(), None),
        (Method::DELETE, format!("/v1/api-keys/{admin_key_id}"), None),
        (Method::PUT, "/v1/settings".to_owned(), Some(json!({}))),
        (Method::GET, "/v1/audit".to_owned(), None),
    ] {
        let (status, resp) = operator.request(method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {resp}");
    }
}

#[tokio::test]
async fn expired_key_gets_401() {
    let system = System::start().await;
    let admin = system.tenant().await;
    let at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (_, key) = admin.create_key("viewer", Some(&at)).await;
    let viewer = admin.with_key(&key);
    viewer.get("/v1/tasks").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = viewer.request(Method::GET, "/v1/tasks", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // A key cannot be made already expired.
    let (status, body) = admin
        .request(
            Method::POST,
            "/v1/api-keys",
            Some(json!({ "name": "old", "expires_at": "2020-01-01T00:00:00Z" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "expires_at");
}

#[tokio::test]
async fn revoked_key_gets_401_and_listing_shows_no_secret() {
    let system = System::start().await;
    let admin = system.tenant().await;
    let (id, key) = admin.create_key("operator", None).await;
    let operator = admin.with_key(&key);
    operator.get("/v1/tasks").await;

    let list = admin.get("/v1/api-keys").await;
    let text = list.to_string();
    let secret = key.rsplit('_').next().unwrap();
    assert!(!text.contains(secret), "listing shows a secret: {text}");
    assert!(!text.contains(&admin.key), "listing shows a key: {text}");
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap();
    assert_eq!(listed["role"], "operator");

    let (status, _) = admin
        .request(Method::DELETE, &format!("/v1/api-keys/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = operator.request(Method::GET, "/v1/tasks", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let list = admin.get("/v1/api-keys").await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap();
    assert!(listed["revoked_at"].is_string(), "{listed}");
    // The platform admin revokes by naming the tenant.
    let (id2, key2) = admin.create_key("viewer", None).await;
    let (status, _) = system
        .admin(
            Method::DELETE,
            &format!("/v1/api-keys/{id2}?tenant={}", admin.name),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin
        .with_key(&key2)
        .request(Method::GET, "/v1/tasks", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn key_roles_are_checked_at_creation() {
    let system = System::start().await;
    let admin = system.tenant().await;
    for role in ["platform-admin", "agent", "root"] {
        let (status, body) = admin
            .request(
                Method::POST,
                "/v1/api-keys",
                Some(json!({ "name": "x", "role": role })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{role}: {body}");
    }
    // Keys created without a role keep working as tenant admins (as before roles).
    let (status, body) = admin
        .request(Method::PUT, "/v1/settings", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_key_revoked_through_one_api_instance_stops_working_on_the_others() {
    let system = System::start_with(SystemOptions {
        apis: 2,
        ..SystemOptions::default()
    })
    .await;
    let admin = system.tenant().await;
    let (id, key) = admin.create_key("viewer", None).await;
    let mut elsewhere = admin.with_key(&key);
    elsewhere.api_url = system.api_urls[1].clone();
    // The second instance has read (and cached) the key.
    elsewhere.get("/v1/tasks").await;

    let (status, _) = admin
        .request(Method::DELETE, &format!("/v1/api-keys/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    // It keeps a key's record for `credential_cache_ms` (2 s by default) at most.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    loop {
        let (status, body) = elsewhere.request(Method::GET, "/v1/tasks", None).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "a revoked key still works on another API instance after 6 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
