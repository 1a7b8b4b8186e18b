//! Outbound webhooks: a tenant subscribes a URL to its task events; every matching
//! event arrives signed (`RIS-Signature`), is retried with backoff while the receiver
//! fails, and is accepted exactly once; the deliveries list shows each attempt. Bad
//! input names the field; another tenant's webhook is a 404.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use ris_tests::{eventually, wait_for_task, System};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "s3cr3t-s3cr3t-s3cr3t";
/// Attempts the receiver fails (HTTP 500) per delivery before it accepts.
const FAILURES: u32 = 2;
/// Signatures older than this are refused, as a receiver should (replay protection).
const TOLERANCE_SECS: i64 = 300;

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// Requests per `RIS-Delivery-Id`.
    attempts: HashMap<String, u32>,
    /// Accepted deliveries: (delivery id, event type header, event).
    accepted: Vec<(String, String, Value)>,
    /// Requests refused for a bad signature.
    bad_signatures: u32,
}

type Shared = Arc<Mutex<Seen>>;

/// Verifies `RIS-Signature: t=<secs>,v1=<hex>` over `"<t>.<body>"`.
fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(header) = headers.get("ris-signature").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - t).abs() > TOLERANCE_SECS {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

async fn receive(State(seen): State<Shared>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let mut seen = seen.lock().unwrap();
    if !verify(&headers, &body) {
        seen.bad_signatures += 1;
        return AxumStatus::UNAUTHORIZED;
    }
    assert_eq!(headers["content-type"], "application/json");
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let id = header("ris-delivery-id");
    let n = seen.attempts.entry(id.clone()).or_default();
    *n += 1;
    if *n <= FAILURES {
        return AxumStatus::INTERNAL_SERVER_ERROR;
    }
    let event: Value = serde_json::from_slice(&body).unwrap();
    seen.accepted.push((id, header("ris-event-type"), event));
    AxumStatus::OK
}

/// A receiver on 127.0.0.1:<random>; returns the URL of `/hook` (`/slow` beside it).
async fn start_receiver(seen: Shared) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hook", post(receive))
        // Never answers in time: deliveries here must not hold anything else up.
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                AxumStatus::OK
            }),
        )
        .with_state(seen);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

/// Accepted events of the task, by type.
fn accepted_for(seen: &Shared, task: &str) -> HashMap<String, Vec<(String, Value)>> {
    let mut by_type: HashMap<String, Vec<(String, Value)>> = HashMap::new();
    for (delivery, kind, event) in &seen.lock().unwrap().accepted {
        if event["data"]["task_id"] == task {
            assert_eq!(&event["type"], kind.as_str(), "RIS-Event-Type");
            by_type
                .entry(kind.clone())
                .or_default()
                .push((delivery.clone(), event.clone()));
        }
    }
    by_type
}

/// The events every run of a task publishes. (`task.queued` may come first, and
/// `task.executing` between them unless the noop's result overtook its executing
/// report; each of them, when published, is accepted once too.)
const LIFECYCLE: [&str; 2] = ["task.routing", "task.completed"];

#[tokio::test(flavor = "multi_thread")]
async fn task_events_arrive_signed_retried_and_once() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let other = system.tenant().await;
    let seen = Shared::default();
    let url = start_receiver(seen.clone()).await;

    let (status, hook) = tenant
        .request(
            Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": url, "events": ["task.*"], "secret": SECRET })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    assert!(hook.get("secret").is_none(), "{hook}");
    assert_eq!(hook["events"], json!(["task.*"]));
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let listed = tenant.get("/v1/webhooks").await;
    assert_eq!(listed["items"], json!([hook.clone()]));
    assert_eq!(tenant.get(&format!("/v1/webhooks/{hook_id}")).await, hook);

    // Another tenant sees none of it.
    assert_eq!(other.get("/v1/webhooks").await["items"], json!([]));
    let any = "00000000-0000-0000-0000-000000000000";
    for (method, path) in [
        (Method::GET, format!("/v1/webhooks/{hook_id}")),
        (Method::GET, format!("/v1/webhooks/{hook_id}/deliveries")),
        (
            Method::POST,
            format!("/v1/webhooks/{hook_id}/deliveries/{any}/redeliver"),
        ),
        (Method::DELETE, format!("/v1/webhooks/{hook_id}")),
    ] {
        let (status, body) = other.request(method.clone(), &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }

    let slow_url = url.replace("/hook", "/slow");
    let (status, slow) = tenant
        .request(
            Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": slow_url, "events": ["task.completed"], "secret": SECRET })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{slow}");
    let slow_id = slow["id"].as_str().unwrap().to_owned();

    let agent = tenant.agent("hooked", &[], 2).await;
    tenant.wait_online(&agent).await;
    let task = tenant
        .submit(json!({ "target": { "agent_id": agent.id }, "task": { "kind": "noop" } }))
        .await;
    wait_for_task(&tenant, &task, "completed").await;

    let by_type = eventually(
        "every lifecycle event accepted",
        Duration::from_secs(30),
        || async {
            let by_type = accepted_for(&seen, &task);
            LIFECYCLE
                .iter()
                .all(|t| by_type.contains_key(*t))
                .then_some(by_type)
        },
    )
    .await;
    for (kind, accepted) in &by_type {
        assert_eq!(accepted.len(), 1, "{kind} accepted once: {by_type:?}");
        let (_, event) = &accepted[0];
        assert_eq!(event["tenant"], tenant.name.as_str());
        assert_eq!(event["v"], 1);
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.bad_signatures, 0);
        // `agent.online` was published too, but `task.*` does not match it.
        assert!(
            seen.accepted.iter().all(|(_, k, _)| k.starts_with("task.")),
            "only task events"
        );
    }

    // Each delivery: two failed attempts with their status codes, then success.
    let deliveries = tenant
        .get(&format!("/v1/webhooks/{hook_id}/deliveries"))
        .await["items"]
        .as_array()
        .unwrap()
        .clone();
    let completed_id = by_type["task.completed"][0].0.clone();
    let completed = deliveries
        .iter()
        .find(|d| d["id"] == completed_id.as_str())
        .unwrap_or_else(|| panic!("delivery {completed_id} listed: {deliveries:#?}"));
    assert_eq!(completed["status"], "succeeded", "{completed:#}");
    assert_eq!(completed["event_type"], "task.completed");
    assert_eq!(completed["attempt"], 3);
    assert_eq!(completed["response_status"], 200);
    let codes: Vec<&Value> = completed["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["response_status"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(500), &json!(200)]);
    assert_eq!(completed["attempts"][0]["attempt"], 1);
    assert!(completed["attempts"][0]["error"]
        .as_str()
        .unwrap()
        .contains("500"));
    assert!(completed.get("next_attempt_at").is_none(), "{completed:#}");

    // Redelivery on request: sent again under the same delivery id.
    let (status, redelivered) = tenant
        .request(
            Method::POST,
            &format!("/v1/webhooks/{hook_id}/deliveries/{completed_id}/redeliver"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{redelivered}");
    assert_eq!(redelivered["status"], "pending");
    eventually("the redelivery", Duration::from_secs(15), || async {
        (accepted_for(&seen, &task)["task.completed"].len() == 2).then_some(())
    })
    .await;

    // The endpoint that never answers: its attempt timed out (10 s) and is retried;
    // meanwhile everything above went through.
    let timed_out = eventually(
        "the slow endpoint's attempt to time out",
        Duration::from_secs(20),
        || async {
            let items = tenant
                .get(&format!("/v1/webhooks/{slow_id}/deliveries"))
                .await["items"]
                .clone();
            let first = items.as_array()?.first()?.clone();
            (first["attempt"] == 1).then_some(first)
        },
    )
    .await;
    assert_eq!(timed_out["event_type"], "task.completed", "{timed_out:#}");
    assert_eq!(timed_out["status"], "failed", "{timed_out:#}");
    assert!(timed_out.get("response_status").is_none(), "{timed_out:#}");
    assert!(
        timed_out["error"].as_str().unwrap().contains("timed out"),
        "{timed_out:#}"
    );
    assert!(timed_out["next_attempt_at"].is_string(), "{timed_out:#}");

    // Long after every retry: still each event accepted once (the completed one
    // twice, the second time on request).
    for (kind, accepted) in accepted_for(&seen, &task) {
        let expected = if kind == "task.completed" { 2 } else { 1 };
        assert_eq!(accepted.len(), expected, "{kind}: {accepted:?}");
    }

    // Gone once deleted.
    let (status, _) = tenant
        .request(Method::DELETE, &format!("/v1/webhooks/{hook_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = tenant
        .request(Method::GET, &format!("/v1/webhooks/{hook_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_webhooks_are_refused_naming_the_field() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let good = json!({ "url": "https://example.com/h", "events": ["#"], "secret": SECRET });
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let cases = [
        (with("url", json!("ftp://example.com/h")), "url"),
        (with("secret", json!("too-short")), "secret"),
        (with("events", json!(["task..completed"])), "events[0]"),
        (with("events", json!(["task.*", "Task.X"])), "events[1]"),
        (with("events", json!([])), "events"),
    ];
    for (body, field) in cases {
        let (status, err) = tenant
            .request(Method::POST, "/v1/webhooks", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {err}");
        assert_eq!(err["field"], field, "{body} → {err}");
    }
    assert_eq!(tenant.get("/v1/webhooks").await["items"], json!([]));
}

/// The routing keys `ris.events` → `ris.webhooks` bindings of the tenant's vhost carry.
async fn webhook_bindings(tenant: &str) -> Vec<String> {
    let url =
        format!("http://127.0.0.1:15672/api/bindings/ris.{tenant}/e/ris.events/q/ris.webhooks");
    let bindings: Value = reqwest::Client::new()
        .get(&url)
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut keys: Vec<String> = bindings
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["routing_key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

/// Events reach `ris.webhooks` only for the patterns some webhook asks for: none for a
/// tenant without webhooks, a webhook's patterns from its creation on, and none again
/// once it is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn events_are_routed_to_the_webhook_queue_only_for_wanted_patterns() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let queue_url = format!(
        "http://127.0.0.1:15672/api/queues/ris.{}/ris.webhooks",
        tenant.name
    );
    eventually(
        "the dispatcher to declare ris.webhooks",
        Duration::from_secs(30),
        || async {
            let resp = reqwest::Client::new()
                .get(&queue_url)
                .basic_auth("guest", Some("guest"))
                .send()
                .await
                .ok()?;
            resp.status().is_success().then_some(())
        },
    )
    .await;
    assert_eq!(
        webhook_bindings(&tenant.name).await,
        Vec::<String>::new(),
        "a tenant without webhooks routes no event to ris.webhooks"
    );

    let (status, hook) = tenant
        .request(
            Method::POST,
            "/v1/webhooks",
            Some(json!({ "url": "http://127.0.0.1:9/hook", "events": ["task.completed", "agent.*"], "secret": SECRET })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    // Bound by the API as it created the webhook, not a sync round later.
    assert_eq!(
        webhook_bindings(&tenant.name).await,
        ["agent.*", "task.completed"]
    );

    let (status, _) = tenant
        .request(
            Method::DELETE,
            &format!("/v1/webhooks/{}", hook["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    eventually(
        "the deleted webhook's bindings to go",
        Duration::from_secs(30),
        || async {
            webhook_bindings(&tenant.name)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
}
