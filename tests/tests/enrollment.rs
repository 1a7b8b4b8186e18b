//! Enrollment tokens are one-time and expiring; the identity is saved privately.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::os::unix::fs::PermissionsExt;

use reqwest::{Method, StatusCode};
use ris_tests::System;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_token_is_one_time_and_identity_is_private() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let dir = system.workdir.path();
    let token = tenant.enrollment_token().await;

    let (ok, out) = tenant
        .enroll_cmd(&dir.join("a1"), &token, "a1", &["--label", "env=prod"])
        .await;
    assert!(ok, "{out}");
    let identity = dir.join("a1/identity.json");
    let mode = std::fs::metadata(&identity).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "identity must be readable by the agent's user only"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&identity).unwrap()).unwrap();
    assert_eq!(
        saved["enrollment"]["amqp"]["vhost"],
        format!("ris.{}", tenant.name)
    );
    assert!(saved["enrollment"]["heartbeat_token"]
        .as_str()
        .is_some_and(|t| t.starts_with("rht_")));

    let (ok, out) = tenant.enroll_cmd(&dir.join("a2"), &token, "a2", &[]).await;
    assert!(!ok, "a used token must be refused");
    assert!(
        out.contains("already used"),
        "clear message expected, got: {out}"
    );
    let (ok, out) = tenant
        .enroll_cmd(&dir.join("a3"), "ret_nonsense", "a3", &[])
        .await;
    assert!(!ok);
    assert!(out.contains("not valid"), "{out}");

    // An expired token is refused with its own message.
    let (status, body) = tenant
        .request(
            Method::POST,
            "/v1/agents/enrollment-tokens",
            Some(json!({ "ttl_secs": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (ok, out) = tenant
        .enroll_cmd(&dir.join("a4"), body["token"].as_str().unwrap(), "a4", &[])
        .await;
    assert!(!ok);
    assert!(out.contains("expired"), "{out}");

    // A name already enrolled is a conflict, and the token survives for another try.
    let token = tenant.enrollment_token().await;
    let (ok, out) = tenant.enroll_cmd(&dir.join("a5"), &token, "a1", &[]).await;
    assert!(!ok && out.contains("already enrolled"), "{out}");
    let (ok, out) = tenant.enroll_cmd(&dir.join("a5"), &token, "a5", &[]).await;
    assert!(ok, "{out}");
}
