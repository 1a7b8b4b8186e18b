//! Hardening: oversized bodies and headers, deeply nested JSON, and secrets that never
//! show up in logs or listings.

#![allow(clippy::unwrap_used)]

use reqwest::{Method, StatusCode};
use ris_tests::System;
use serde_json::json;

#[tokio::test]
async fn oversized_body_gets_413() {
    let system = System::start().await;
    let t = system.tenant().await;
    let http = reqwest::Client::new();
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(3 * 1024 * 1024));
    let resp = http
        .post(format!("{}/v1/tasks", t.api_url))
        .bearer_auth(&t.key)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "body_too_large");
}

#[tokio::test]
async fn deep_json_gets_400_naming_the_limit() {
    let system = System::start().await;
    let t = system.tenant().await;
    let mut nested = json!("leaf");
    for _ in 0..100 {
        nested = json!({ "a": nested });
    }
    let (status, body) = t
        .request(
            Method::POST,
            "/v1/tasks",
            Some(json!({
                "target": { "selector": "a=b" },
                "task": { "kind": "shell", "argv": ["true"] },
                "metadata": nested,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "json_too_deep");
    assert!(body["message"].as_str().unwrap().contains("64"), "{body}");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let system = System::start().await;
    let t = system.tenant().await;
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/tasks", t.api_url))
        .bearer_auth(&t.key)
        .header("x-padding", "p".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[tokio::test]
async fn secrets_never_appear_in_logs_or_listings() {
    let system = System::start().await;
    let t = system.tenant().await;
    let webhook_secret = "whsec-0123456789abcdef-unique";
    let (status, body) = t
        .request(
            Method::POST,
            "/v1/webhooks",
            Some(json!({
                "url": "https://example.com/h", "events": ["task.*"],
                "secret": webhook_secret,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = t.enrollment_token().await;
    let (status, enrolled) = t.enroll_with_token(&token, "secretive").await;
    assert_eq!(status, StatusCode::CREATED, "{enrolled}");
    let (_, other_key) = t.create_key("viewer", None).await;
    // Failed logins with real-looking secrets.
    let id = t.key.split('_').nth(1).unwrap();
    let wrong = format!("ris_{id}_wrongsecretwrongsecretwrongsecret12");
    let (status, _) = t
        .with_key(&wrong)
        .request(Method::GET, "/v1/tasks", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let mut secrets = vec![
        t.key.rsplit('_').next().unwrap().to_owned(),
        other_key.rsplit('_').next().unwrap().to_owned(),
        wrong.rsplit('_').next().unwrap().to_owned(),
        system.admin_key.clone(),
        webhook_secret.to_owned(),
        token.clone(),
        enrolled["heartbeat_token"].as_str().unwrap().to_owned(),
        enrolled["amqp"]["password"].as_str().unwrap().to_owned(),
    ];
    secrets.retain(|s| s.len() >= 12);

    let mut listings = String::new();
    for path in [
        "/v1/webhooks",
        "/v1/api-keys",
        "/v1/agents",
        "/v1/audit",
        "/v1/settings",
    ] {
        listings.push_str(&t.get(path).await.to_string());
    }
    // Give the processes a moment to flush what they log.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let logs = format!(
        "{}{}",
        system.log("api.log"),
        system.log("dispatcher-0.log")
    );
    assert!(!logs.is_empty());
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
        assert!(
            !listings.contains(secret.as_str()),
            "a secret is in a listing"
        );
    }
}
