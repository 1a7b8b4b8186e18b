//! The heartbeat: a WebSocket to the API, independent of AMQP.
//!
//! Every `interval` the agent sends a [`HeartbeatFrame`] (load, running tasks — the
//! tasks' lease —, machine figures, labels, addresses) and reads the API's
//! [`HeartbeatReply`], whose `interval_secs` it follows. Pings are answered. A lost
//! socket is reconnected with exponential backoff and jitter (200 ms to 10 s, forever);
//! a disconnect is logged once, and the retries that follow only at debug level.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use futures::{SinkExt, StreamExt};
use ris_schemas::heartbeat::{HeartbeatFrame, HeartbeatReply};
use ris_schemas::ids::AgentId;
use ris_schemas::labels::Labels;
use ris_schemas::version::V1;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header::AUTHORIZATION, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::docker::Engine;
use crate::machine::Machine;
use crate::running::Running;
use crate::trust::Trust;

/// What the agent can run, as announced in each frame.
pub const CAPABILITIES: [&str; 3] = ["shell", "http", "noop"];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Everything the heartbeat needs, so it can run without the rest of the agent.
#[derive(Clone)]
pub struct HeartbeatConfig {
    /// `ws(s)://…/v1/agents/{id}/heartbeat`.
    pub url: String,
    pub token: String,
    pub interval: Duration,
    pub capacity: u32,
    pub labels: Labels,
    /// The Docker engine: `docker` is advertised only while it answers (`None`: never).
    pub docker: Option<Engine>,
    /// Updated with the signing keys of each reply.
    pub trust: Trust,
    /// CA (PEM) a `wss://` API must chain to; `None`: the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate and key presented to the API (mutual TLS).
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("invalid heartbeat request: {0}")]
    Request(String),
    #[error("{0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("connect timed out")]
    Timeout,
    #[error("{0}")]
    Tls(#[from] ris_runtime::tls::TlsError),
}

/// `http://api` → `ws://api/v1/agents/{id}/heartbeat` (and `https` → `wss`).
pub fn heartbeat_url(api_url: &str, agent_id: AgentId) -> String {
    let base = api_url.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    format!("{ws}/v1/agents/{agent_id}/heartbeat")
}

/// Runs until `stop` fires, reconnecting whenever the socket is lost.
pub async fn run(
    config: HeartbeatConfig,
    running: Running,
    machine: Machine,
    stop: CancellationToken,
) {
    run_shared(config, running, Arc::new(Mutex::new(machine)), stop).await;
}

/// [`run`] with a machine sampler shared with other agents (a benchmark swarm).
pub async fn run_shared(
    config: HeartbeatConfig,
    running: Running,
    machine: Arc<Mutex<Machine>>,
    stop: CancellationToken,
) {
    let mut backoff = new_backoff();
    // Failed connects since the last good session; only the first is a warning.
    let mut failures: u32 = 0;
    let mut down_since: Option<Instant> = None;
    while !stop.is_cancelled() {
        match connect(&config).await {
            Ok(socket) => {
                match down_since.take() {
                    Some(t) => tracing::info!(
                        after_secs = t.elapsed().as_secs(),
                        attempts = failures,
                        "heartbeat reconnected"
                    ),
                    None => tracing::info!("heartbeat connected"),
                }
                backoff = new_backoff();
                let why = session(socket, &config, &running, &machine, &stop).await;
                if stop.is_cancelled() {
                    return;
                }
                tracing::warn!(reason = %why, "heartbeat disconnected; reconnecting");
                down_since = Some(Instant::now());
                failures = 1;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %e, "heartbeat cannot connect; retrying with backoff");
                    down_since.get_or_insert_with(Instant::now);
                } else {
                    tracing::debug!(error = %e, attempt = failures, "heartbeat connect failed");
                }
            }
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(10));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
    }
}

fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn connect(config: &HeartbeatConfig) -> Result<Socket, HeartbeatError> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| HeartbeatError::Request(e.to_string()))?;
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", config.token))
        .map_err(|_| HeartbeatError::Request("the heartbeat token is not a valid header".into()))?;
    auth.set_sensitive(true);
    request.headers_mut().insert(AUTHORIZATION, auth);
    let tls = match (&config.ca_file, &config.client_cert) {
        (Some(ca), Some((cert, key))) => {
            Some(ris_runtime::tls::client_config_with_cert(ca, cert, key)?)
        }
        (Some(ca), None) => Some(ris_runtime::tls::client_config(ca)?),
        (None, _) => None,
    };
    let connector = tls.map(|c| tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(c)));
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(HeartbeatError::Timeout),
    }
}

/// One connected socket: send frames on the interval, read replies; returns why it ended.
async fn session(
    mut socket: Socket,
    config: &HeartbeatConfig,
    running: &Running,
    machine: &Arc<Mutex<Machine>>,
    stop: &CancellationToken,
) -> String {
    let mut period = config.interval.max(Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                return "stopping".to_owned();
            }
            _ = ticker.tick() => {
                // Silence for three periods means a dead peer that TCP has not noticed.
                if last_heard.elapsed() > period * 3 + Duration::from_secs(5) {
                    return "no reply from the API".to_owned();
                }
                let frame = build_frame(config, running, machine).await;
                let text = match serde_json::to_string(&frame) {
                    Ok(t) => t,
                    Err(e) => return format!("cannot encode a frame: {e}"),
                };
                if let Err(e) = socket.send(Message::text(text)).await {
                    return e.to_string();
                }
            }
            message = socket.next() => {
                last_heard = Instant::now();
                match message {
                    None => return "closed".to_owned(),
                    Some(Err(e)) => return e.to_string(),
                    Some(Ok(Message::Close(frame))) => {
                        return frame.map_or_else(|| "closed by the API".to_owned(), |f| format!("closed by the API: {}", f.reason));
                    }
                    Some(Ok(Message::Text(text))) => {
                        if let Some(next) = follow_reply(&text, period, &config.trust) {
                            period = next;
                            ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                        }
                    }
                    // tungstenite queues the pong itself; flushing sends it now.
                    Some(Ok(Message::Ping(_))) => {
                        if let Err(e) = socket.flush().await {
                            return e.to_string();
                        }
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

/// The new period when a reply asks for a different one.
fn follow_reply(text: &str, period: Duration, trust: &Trust) -> Option<Duration> {
    match serde_json::from_str::<HeartbeatReply>(text) {
        Ok(reply) => {
            trust.replace(&reply.signing_keys);
            let asked = Duration::from_secs(u64::from(reply.interval_secs));
            (reply.interval_secs > 0 && asked != period).then_some(asked)
        }
        Err(e) => {
            tracing::debug!(error = %e, "unexpected heartbeat reply");
            None
        }
    }
}

async fn build_frame(
    config: &HeartbeatConfig,
    running: &Running,
    machine: &Arc<Mutex<Machine>>,
) -> HeartbeatFrame {
    let machine = machine.clone();
    let sample = tokio::task::spawn_blocking(move || {
        machine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sample()
    })
    .await
    .unwrap_or_default();
    let running_tasks = running.task_ids();
    HeartbeatFrame {
        v: V1,
        sent_at: Utc::now(),
        running: u32::try_from(running_tasks.len()).unwrap_or(u32::MAX),
        capacity: config.capacity,
        running_tasks,
        cpu_percent: sample.cpu_percent,
        memory_used_bytes: sample.memory_used_bytes,
        memory_total_bytes: sample.memory_total_bytes,
        disk_used_bytes: sample.disk_used_bytes,
        disk_total_bytes: sample.disk_total_bytes,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        hostname: if sample.hostname.is_empty() {
            crate::machine::hostname()
        } else {
            sample.hostname
        },
        labels: config.labels.clone(),
        addresses: sample.addresses,
        capabilities: capabilities(config.docker.as_ref()),
    }
}

/// [`CAPABILITIES`], plus `docker` while the engine answers.
pub fn capabilities(docker: Option<&Engine>) -> Vec<String> {
    let mut caps: Vec<String> = CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    if docker.is_some_and(Engine::is_available) {
        caps.push(ris_schemas::docker::DOCKER_CAPABILITY.to_owned());
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls() {
        let id = AgentId::new();
        assert_eq!(
            heartbeat_url("https://api.example/", id),
            format!("wss://api.example/v1/agents/{id}/heartbeat")
        );
        assert_eq!(
            heartbeat_url("http://127.0.0.1:8080", id),
            format!("ws://127.0.0.1:8080/v1/agents/{id}/heartbeat")
        );
    }
}
