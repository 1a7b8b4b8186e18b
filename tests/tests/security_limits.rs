//! Rate limits (429 with `Retry-After`, then recovery) and tenant quotas.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use ris_tests::System;
use serde_json::json;

#[tokio::test]
async fn exceeding_the_rate_limit_gets_429_and_recovers() {
    let system = System::start().await;
    let t = system.tenant().await;
    let (_, other) = t.create_key("viewer", None).await;
    let (status, body) = system
        .admin(
            Method::PUT,
            &format!("/v1/tenants/{}/limits", t.name),
            Some(json!({ "requests_per_minute_per_key": 30 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let settings = t.get("/v1/settings").await;
    assert_eq!(
        settings["limits"]["requests_per_minute_per_key"], 30,
        "{settings}"
    );

    let http = reqwest::Client::new();
    let mut refused = None;
    for _ in 0..40 {
        let resp = http
            .get(format!("{}/v1/tasks", t.api_url))
            .bearer_auth(&t.key)
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = refused.expect("no 429 within 40 requests at 30 per minute");
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry_after), "Retry-After {retry_after}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["field"], "requests_per_minute_per_key");

    // Another key of the tenant has its own budget.
    t.with_key(&other).get("/v1/tasks").await;

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, body) = t.request(Method::GET, "/v1/tasks", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "no recovery after Retry-After: {body}"
    );
}

#[tokio::test]
async fn quotas_on_queued_tasks_and_agents_are_named() {
    let system = System::start().await;
    let t = system.tenant().await;
    let (status, body) = system
        .admin(
            Method::PUT,
            &format!("/v1/tenants/{}/limits", t.name),
            Some(json!({ "max_queued_tasks": 2, "max_agents": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let task = json!({
        "target": { "selector": "nobody=here" },
        "task": { "kind": "shell", "argv": ["true"] },
        "queue_timeout_secs": 600,
    });
    t.submit(task.clone()).await;
    t.submit(task.clone()).await;
    let (status, body) = t.request(Method::POST, "/v1/tasks", Some(task)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], "quota_exceeded");
    assert_eq!(body["field"], "max_queued_tasks");

    let (status, body) = t.enroll_http("first").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = t.enrollment_token().await;
    let (status, body) = t.enroll_with_token(&token, "second").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["field"], "max_agents");
    // The token was not spent: raising the quota lets it through.
    let (status, _) = system
        .admin(
            Method::PUT,
            &format!("/v1/tenants/{}/limits", t.name),
            Some(json!({ "max_agents": 2 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = t.enroll_with_token(&token, "second").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Only the platform admin sets limits.
    let (status, _) = t
        .request(
            Method::PUT,
            &format!("/v1/tenants/{}/limits", t.name),
            Some(json!({ "max_agents": 100 })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
