//! An integrator follows a tenant's events live on `GET /v1/events/stream` (Server-Sent
//! Events): every state change of a task, in order; only the types it asked for; never
//! another tenant's.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use ris_tests::{eventually, wait_for_task, System, TenantClient};
use serde_json::{json, Value};

/// One SSE event as sent by the API.
#[derive(Debug)]
struct SseEvent {
    event: String,
    id: String,
    data: Value,
}

/// A minimal SSE reader over a streaming response: events are separated by a blank
/// line; comment lines (`:` keep-alives) are skipped.
struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

impl SseStream {
    async fn open(tenant: &TenantClient, query: &str) -> SseStream {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/events/stream{query}", tenant.api_url))
            .bearer_auth(&tenant.key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        SseStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, or `None` if none arrives before `deadline`.
    async fn next(&mut self, deadline: Instant) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_block(&block) {
                    return Some(event);
                }
                continue;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None)) => panic!("event stream ended"),
                Ok(Err(err)) => panic!("event stream failed: {err}"),
                Err(_) => return None,
            }
        }
    }

    /// Events until one satisfies `last` (included); panics after `timeout`.
    async fn until(
        &mut self,
        timeout: Duration,
        last: impl Fn(&SseEvent) -> bool,
    ) -> Vec<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let event = self
                .next(deadline)
                .await
                .unwrap_or_else(|| panic!("timed out; events so far: {seen:#?}"));
            let done = last(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }

    /// Every event arriving within `window`.
    async fn drain(&mut self, window: Duration) -> Vec<SseEvent> {
        let deadline = Instant::now() + window;
        let mut seen = Vec::new();
        while let Some(event) = self.next(deadline).await {
            seen.push(event);
        }
        seen
    }
}

fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut event, mut id, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {} // comments (keep-alives) and unknown fields
        }
    }
    let data = serde_json::from_str(&data.join("\n")).ok()?;
    Some(SseEvent {
        event: event?,
        id: id?,
        data,
    })
}

fn is_task(event: &SseEvent, id: &str) -> bool {
    event.data["data"]["task_id"] == id
}

const LIFECYCLE: [&str; 4] = ["queued", "routing", "executing", "completed"];

#[tokio::test(flavor = "multi_thread")]
async fn tenant_events_stream_live_filtered_and_isolated() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let other = system.tenant().await;

    // A bad pattern is refused, naming the parameter.
    for bad in ["Task.*", "task.*,", "task%20queued", "task.1"] {
        let (status, body) = tenant
            .request(Method::GET, &format!("/v1/events/stream?types={bad}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["field"], "types", "{bad}: {body}");
    }

    let agent = tenant.agent("sse", &["env=test"], 2).await;
    tenant.wait_online(&agent).await;

    let mut everything = SseStream::open(&tenant, "").await;
    let mut completed_only = SseStream::open(&tenant, "?types=task.completed").await;
    let mut tasks_elsewhere = SseStream::open(&other, "?types=task.*,agent.*").await;

    let id = tenant
        .submit(json!({ "target": { "agent_id": agent.id }, "task": { "kind": "noop" } }))
        .await;
    wait_for_task(&tenant, &id, "completed").await;

    // Every state change of the task, in lifecycle order, ending `completed`. (A result
    // may overtake its `executing` report, so `executing` may be missing; `queued` is
    // not announced for API submissions today.)
    let events = everything
        .until(Duration::from_secs(30), |e| {
            is_task(e, &id) && e.event == "task.completed"
        })
        .await;
    let states: Vec<&str> = events
        .iter()
        .filter(|e| is_task(e, &id))
        .map(|e| e.event.strip_prefix("task.").unwrap())
        .collect();
    let ranks: Vec<usize> = states
        .iter()
        .map(|s| LIFECYCLE.iter().position(|l| l == s).unwrap())
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{states:?}");
    assert!(states.contains(&"routing"), "{states:?}");
    for event in &events {
        assert_eq!(event.data["type"], event.event.as_str(), "{event:?}");
        assert_eq!(event.data["id"], event.id.as_str(), "{event:?}");
        assert_eq!(event.data["tenant"], tenant.name.as_str(), "{event:?}");
    }

    // The filtered stream delivers the completion and nothing else.
    let filtered = completed_only
        .until(Duration::from_secs(10), |e| is_task(e, &id))
        .await;
    let extra = completed_only.drain(Duration::from_secs(1)).await;
    for event in filtered.iter().chain(&extra) {
        assert_eq!(event.event, "task.completed", "{event:?}");
    }

    // Another tenant's stream sees none of it.
    let leaked = tasks_elsewhere.drain(Duration::from_secs(2)).await;
    assert!(leaked.is_empty(), "{leaked:#?}");

    // Each stream has its own queue in its tenant's vhost, gone once the client leaves.
    assert_eq!(stream_queues(&tenant).await, 2);
    assert_eq!(stream_queues(&other).await, 1);
    drop((everything, completed_only, tasks_elsewhere));
    for t in [&tenant, &other] {
        eventually(
            "stream queues to be deleted",
            Duration::from_secs(15),
            || async { (stream_queues(t).await == 0).then_some(()) },
        )
        .await;
    }
}

/// Server-named queues (`amq.gen-*`) in the tenant's vhost, from the management API.
async fn stream_queues(tenant: &TenantClient) -> usize {
    let queues: Vec<Value> = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:15672/api/queues/ris.{}",
            tenant.name
        ))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    queues
        .iter()
        .filter(|q| {
            q["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("amq.gen-"))
        })
        .count()
}
