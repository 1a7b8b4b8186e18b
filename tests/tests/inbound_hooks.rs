//! Inbound webhooks: a tenant creates a hook whose template is a task with `{{field}}`
//! placeholders; a POST to `/v1/hooks/{id}` signed with the hook's secret fills them
//! from its body and runs the task. Bad, stale and replayed signatures are 401; a
//! missing field is a 400 naming it; another tenant cannot see or delete the hook.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use ris_tests::{wait_for_task, System};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "inbound-s3cr3t-s3cr3t";

/// `RIS-Signature` for `body` at unix time `t`.
fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs `body` to the hook's path with the given signature header (if any).
async fn trigger(
    api_url: &str,
    path: &str,
    body: &Value,
    signature: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{api_url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(signature) = signature {
        request = request.header("RIS-Signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_trigger_runs_the_template_and_bad_ones_are_refused() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let agent = tenant.agent("hooked", &["role=deploy"], 2).await;
    tenant.wait_online(&agent).await;

    let (status, hook) = tenant
        .request(
            Method::POST,
            "/v1/hooks",
            Some(json!({
                "name": "deploy",
                "secret": SECRET,
                "template": {
                    "target": { "selector": "role=deploy" },
                    "task": { "kind": "shell", "argv": ["echo", "{{ref}}"] }
                },
                "fields": ["ref"]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let id = hook["id"].as_str().unwrap().to_owned();
    let path = hook["path"].as_str().unwrap().to_owned();
    assert_eq!(path, format!("/v1/hooks/{id}"));
    assert!(
        hook.get("secret").is_none(),
        "the secret is write-only: {hook}"
    );

    // A correctly signed trigger runs the task with the value filled in.
    let body = json!({ "ref": "v1.2.3" });
    let signature = sign(SECRET, now(), body.to_string().as_bytes());
    let (status, accepted) = trigger(&system.api_url, &path, &body, Some(&signature)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let task_id = accepted["id"].as_str().unwrap();
    let task = wait_for_task(&tenant, task_id, "completed").await;
    assert_eq!(task["result"]["output"]["stdout"], "v1.2.3\n", "{task:#}");

    // The same signed request again: a replay.
    let (status, err) = trigger(&system.api_url, &path, &body, Some(&signature)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("already used"),
        "{err}"
    );

    // A wrong secret, a missing or malformed header, a stale timestamp: 401.
    let other = json!({ "ref": "v2" });
    let raw = other.to_string();
    let wrong = sign("not-the-secret-at-all", now(), raw.as_bytes());
    let stale = sign(SECRET, now() - 1000, raw.as_bytes());
    for (signature, says) in [
        (Some(wrong.as_str()), "does not match"),
        (None, "missing"),
        (Some("t=abc,v1=zz"), "malformed"),
        (Some(stale.as_str()), "timestamp"),
    ] {
        let (status, err) = trigger(&system.api_url, &path, &other, signature).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}: {err}");
        assert!(err["message"].as_str().unwrap().contains(says), "{err}");
    }

    // A body without a declared field: 400 naming it.
    let missing = json!({ "env": "prod" });
    let signature = sign(SECRET, now(), missing.to_string().as_bytes());
    let (status, err) = trigger(&system.api_url, &path, &missing, Some(&signature)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["field"], "ref", "{err}");

    // Placeholders that could choose the program are refused at creation.
    let (status, err) = tenant
        .request(
            Method::POST,
            "/v1/hooks",
            Some(json!({
                "name": "evil",
                "secret": SECRET,
                "template": {
                    "target": { "selector": "role=deploy" },
                    "task": { "kind": "shell", "argv": ["{{cmd}}"] }
                },
                "fields": ["cmd"]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["field"], "template.task.argv[0]", "{err}");

    // Another tenant neither sees nor deletes it; its owner does.
    let stranger = system.tenant().await;
    let listed = stranger.get("/v1/hooks").await;
    assert_eq!(listed["items"], json!([]), "{listed}");
    let (status, _) = stranger
        .request(Method::DELETE, &format!("/v1/hooks/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let listed = tenant.get("/v1/hooks").await;
    assert_eq!(listed["items"][0]["id"], id.as_str(), "{listed}");
    let (status, _) = tenant
        .request(Method::DELETE, &format!("/v1/hooks/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let body = json!({ "ref": "v9" });
    let signature = sign(SECRET, now(), body.to_string().as_bytes());
    let (status, _) = trigger(&system.api_url, &path, &body, Some(&signature)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
