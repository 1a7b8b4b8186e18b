//! The heartbeat against a fake API WebSocket endpoint.
#![allow(clippy::unwrap_used)] // Tests may unwrap (clippy.toml only covers #[test] fns).

mod common;

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use ris_agent::heartbeat::{self, HeartbeatConfig, CAPABILITIES};
use ris_agent::machine::Machine;
use ris_agent::running::Running;
use ris_schemas::heartbeat::{HeartbeatFrame, HeartbeatReply};
use ris_schemas::ids::{AgentId, TaskId};
use ris_schemas::version::V1;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type Frames = mpsc::UnboundedSender<(AgentId, HeartbeatFrame)>;

/// Accepts `Bearer hb-token`; takes one frame per connection, replies, then closes,
/// so the agent has to reconnect for the next one.
async fn endpoint(
    ws: WebSocketUpgrade,
    Path(agent_id): Path<AgentId>,
    headers: HeaderMap,
    State(frames): State<Frames>,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer hb-token") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    ws.on_upgrade(move |socket| one_frame(socket, agent_id, frames))
}

async fn one_frame(mut socket: WebSocket, agent_id: AgentId, frames: Frames) {
    while let Some(Ok(message)) = socket.recv().await {
        if let Message::Text(text) = message {
            let frame: HeartbeatFrame = serde_json::from_str(text.as_str()).unwrap();
            let _ = frames.send((agent_id, frame));
            let reply = HeartbeatReply {
                v: V1,
                received_at: Utc::now(),
                interval_secs: 1,
                signing_keys: Vec::new(),
            };
            let text = serde_json::to_string(&reply).unwrap();
            let _ = socket.send(Message::Text(text.into())).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    }
}

#[tokio::test]
async fn frames_carry_load_and_the_socket_is_reconnected() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .route("/v1/agents/{id}/heartbeat", get(endpoint))
        .with_state(tx);
    let base = common::serve(router).await;
    let agent_id = AgentId::new();
    let running = Running::new(4);
    let task = TaskId::new();
    let _guard = running.register(task);
    let tmp = common::TempDir::new();
    let config = HeartbeatConfig {
        url: heartbeat::heartbeat_url(&base, agent_id),
        token: "hb-token".into(),
        interval: Duration::from_secs(1),
        capacity: 4,
        labels: common::labels(&[("env", "prod")]),
        docker: None,
        trust: Default::default(),
        ca_file: None,
        client_cert: None,
    };
    let stop = CancellationToken::new();
    let handle = tokio::spawn(heartbeat::run(
        config,
        running,
        Machine::new(tmp.path()),
        stop.clone(),
    ));

    for _ in 0..2 {
        let (id, frame) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a heartbeat frame within 10 s")
            .unwrap();
        assert_eq!(id, agent_id);
        assert_eq!(frame.running, 1);
        assert_eq!(frame.running_tasks, vec![task]);
        assert_eq!(frame.capacity, 4);
        assert_eq!(frame.capabilities, CAPABILITIES.map(String::from).to_vec());
        assert_eq!(frame.labels.get("env"), Some("prod"));
        assert_eq!(frame.version, env!("CARGO_PKG_VERSION"));
        assert!(frame.memory_total_bytes > 0);
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("heartbeat stops on cancel")
        .unwrap();
}

#[tokio::test]
async fn a_refused_token_keeps_retrying_until_stopped() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .route("/v1/agents/{id}/heartbeat", get(endpoint))
        .with_state(tx);
    let base = common::serve(router).await;
    let tmp = common::TempDir::new();
    let config = HeartbeatConfig {
        url: heartbeat::heartbeat_url(&base, AgentId::new()),
        token: "wrong".into(),
        interval: Duration::from_secs(1),
        capacity: 1,
        labels: common::labels(&[]),
        docker: None,
        trust: Default::default(),
        ca_file: None,
        client_cert: None,
    };
    let stop = CancellationToken::new();
    let handle = tokio::spawn(heartbeat::run(
        config,
        Running::new(1),
        Machine::new(tmp.path()),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!handle.is_finished(), "keeps retrying");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
}
