//! An operator watches a shell task's output live on `GET /v1/tasks/{id}/output?follow=true`
//! (Server-Sent Events): lines arrive while the task is still executing, in order, and the
//! stream ends with the task's final state; the stored result keeps the full output.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use ris_tests::{wait_for_task, System, TenantClient};
use serde_json::{json, Value};

#[derive(Debug)]
struct SseEvent {
    event: String,
    data: Value,
}

/// A minimal SSE reader: events end with a blank line; comments are skipped; `None` at
/// the end of the response.
struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

impl SseStream {
    async fn open(tenant: &TenantClient, id: &str, query: &str) -> SseStream {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/tasks/{id}/output{query}", tenant.api_url))
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

    async fn next(&mut self, deadline: Instant) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_block(&block) {
                    return Some(event);
                }
                continue;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("timed out waiting for an output event");
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None)) => return None,
                Ok(Err(err)) => panic!("output stream failed: {err}"),
                Err(_) => panic!("timed out waiting for an output event"),
            }
        }
    }
}

fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut event, mut data) = (None, Vec::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    Some(SseEvent {
        event: event?,
        data: serde_json::from_str(&data.join("\n")).ok()?,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_output_streams_live_and_is_stored() {
    let system = System::start().await;
    let tenant = system.tenant().await;
    let other = system.tenant().await;
    let agent = tenant.agent("live", &["role=live"], 1).await;
    tenant.wait_online(&agent).await;

    // The first second gives the stream time to subscribe before any output exists.
    let script = "sleep 1; for i in 1 2 3 4; do echo line $i; sleep 1; done";
    let id = tenant
        .submit(json!({
            "target": { "agent_id": agent.id },
            "task": { "kind": "shell", "script": script },
        }))
        .await;
    let mut stream = SseStream::open(&tenant, &id, "?follow=true").await;
    let deadline = Instant::now() + Duration::from_secs(30);

    // The first chunk arrives while the task is still running.
    let first = stream.next(deadline).await.expect("stream ended early");
    assert_eq!(first.event, "stdout", "{first:?}");
    assert_eq!(first.data["task_id"], id.as_str());
    assert_eq!(first.data["stream"], "stdout");
    assert_eq!(first.data["agent_id"], agent.id.as_str());
    assert!(
        first.data["data"].as_str().unwrap().starts_with("line 1"),
        "{first:?}"
    );
    let state = tenant.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(state["state"], "executing", "{state:#}");

    // The rest, in order, then `end` with the final state.
    let mut text = first.data["data"].as_str().unwrap().to_owned();
    let mut seqs = vec![first.data["seq"].as_u64().unwrap()];
    let end = loop {
        let event = stream
            .next(deadline)
            .await
            .expect("stream ended without `end`");
        match event.event.as_str() {
            "stdout" => {
                text.push_str(event.data["data"].as_str().unwrap());
                seqs.push(event.data["seq"].as_u64().unwrap());
            }
            "end" => break event,
            other => panic!("unexpected event {other}: {event:?}"),
        }
    };
    assert_eq!(text, "line 1\nline 2\nline 3\nline 4\n");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(end.data["state"], "completed");
    assert!(
        stream.next(deadline).await.is_none(),
        "the stream goes on after `end`"
    );

    // The stored result still has the whole output.
    let task = wait_for_task(&tenant, &id, "completed").await;
    assert_eq!(
        task["result"]["output"]["stdout"],
        "line 1\nline 2\nline 3\nline 4\n"
    );

    // Without follow (and with follow on a finished task): the stored output, then end.
    for query in ["", "?follow=true"] {
        let mut stored = SseStream::open(&tenant, &id, query).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let out = stored.next(deadline).await.unwrap();
        assert_eq!(out.event, "stdout");
        assert_eq!(out.data["data"], "line 1\nline 2\nline 3\nline 4\n");
        let err = stored.next(deadline).await.unwrap();
        assert_eq!(
            (err.event.as_str(), &err.data["data"]),
            ("stderr", &json!(""))
        );
        let end = stored.next(deadline).await.unwrap();
        assert_eq!(end.event, "end");
        assert_eq!(end.data["state"], "completed");
        assert!(stored.next(deadline).await.is_none());
    }

    // Another tenant's task is not found; a bad `follow` is refused.
    let (status, _) = other
        .request(Method::GET, &format!("/v1/tasks/{id}/output"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = tenant
        .request(
            Method::GET,
            &format!("/v1/tasks/{id}/output?follow=yes"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "follow");
}
