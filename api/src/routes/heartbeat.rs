//! The agent heartbeat gateway: `GET /v1/agents/{id}/heartbeat` (WebSocket).
//!
//! The agent authenticates with its heartbeat token (`Authorization: Bearer`), then sends
//! a [`HeartbeatFrame`] every few seconds. Each frame renews the agent's presence in
//! Redis (TTL) and is answered with a [`HeartbeatReply`]. Durable facts (addresses,
//! labels, version, capabilities) are written to PostgreSQL only when they change (as
//! compared with the previous frame in Redis), plus a `last_seen` touch once a minute,
//! so a large fleet costs Redis writes, not database writes.

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use ris_presence::PresenceRecord;
use ris_schemas::event::{AgentEventData, Event};
use ris_schemas::heartbeat::{HeartbeatFrame, HeartbeatReply};
use ris_schemas::ids::AgentId;
use ris_schemas::version::V1;
use ris_store::{AgentFacts, AgentRecord, Tenant};

use crate::auth::bearer;
use crate::error::{ApiError, ApiResult};
use crate::extract::parse_param;
use crate::secrets;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/agents/{id}/heartbeat", get(upgrade))
}

/// How often `last_seen_at` is written to PostgreSQL while an agent stays connected.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Read buffer of a heartbeat socket (grows for a larger message, up to the maximum).
const HEARTBEAT_BUFFER: usize = 4 * 1024;

async fn upgrade(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let id: AgentId = parse_param("id", &id)?;
    let token = bearer(&headers)?;
    let refused = || ApiError::unauthorized("invalid heartbeat token for this agent");
    let (tenant, agent) = state.store.find_agent(id).await?.ok_or_else(refused)?;
    if !secrets::matches_hash(token, &agent.heartbeat_token_hash) {
        return Err(refused());
    }
    // Frames are a few hundred bytes: small buffers (tungstenite's default is 128 KiB
    // each way) keep a fleet of 10,000 sockets in tens of MiB (see docs/benchmarks.md).
    Ok(ws
        .read_buffer_size(HEARTBEAT_BUFFER)
        .write_buffer_size(0)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| session(socket, state, tenant, agent)))
}

#[tracing::instrument(skip_all, fields(tenant = %tenant.name, agent_id = %agent.id))]
async fn session(mut socket: WebSocket, state: AppState, tenant: Tenant, agent: AgentRecord) {
    tracing::info!("heartbeat connected");
    metrics::gauge!("ris_heartbeat_connections").increment(1.0);
    let idle_limit = Duration::from_secs(u64::from(state.config.presence_ttl_secs) * 2);
    let mut last_touch: Option<Instant> = None;
    let mut clean_close = false;
    loop {
        let msg = match tokio::time::timeout(idle_limit, socket.recv()).await {
            Err(_) => {
                tracing::warn!("no heartbeat for {idle_limit:?}; closing");
                break;
            }
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(msg))) => msg,
        };
        let text = match msg {
            Message::Text(text) => text,
            Message::Close(_) => {
                clean_close = true;
                break;
            }
            _ => continue,
        };
        let frame: HeartbeatFrame = match serde_json::from_str(text.as_str()) {
            Ok(frame) => frame,
            Err(err) => {
                tracing::warn!(error = %err, "invalid heartbeat frame; closing");
                let close = CloseFrame {
                    code: axum::extract::ws::close_code::INVALID,
                    reason: format!("invalid heartbeat frame: {err}")
                        .chars()
                        .take(120)
                        .collect::<String>()
                        .into(),
                };
                drop(socket.send(Message::Close(Some(close))).await);
                break;
            }
        };
        let started = Instant::now();
        if let Err(err) = record(&state, &tenant, &agent, frame, &mut last_touch).await {
            tracing::warn!(error = %crate::error::error_chain(&*err), "heartbeat not recorded");
        }
        metrics::histogram!("ris_heartbeat_handle_seconds").record(started.elapsed().as_secs_f64());
        let reply = HeartbeatReply {
            v: V1,
            received_at: Utc::now(),
            interval_secs: state.config.heartbeat_interval_secs,
            // Rotations reach agents here; without the database the agent keeps its set.
            signing_keys: crate::signing::public_keys(&state)
                .await
                .unwrap_or_default(),
        };
        let Ok(reply) = serde_json::to_string(&reply) else {
            break;
        };
        if socket.send(Message::Text(reply.into())).await.is_err() {
            break;
        }
    }
    metrics::gauge!("ris_heartbeat_connections").decrement(1.0);
    finish(&state, &tenant, &agent, clean_close).await;
}

/// Renews presence; writes durable facts when they changed (or once a minute).
async fn record(
    state: &AppState,
    tenant: &Tenant,
    agent: &AgentRecord,
    frame: HeartbeatFrame,
    last_touch: &mut Option<Instant>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let now = Utc::now();
    let record = PresenceRecord {
        frame,
        received_at: now,
    };
    let previous = state.presence.put(&tenant.name, agent.id, &record).await?;
    if previous.is_none() {
        came_online(state, tenant, agent).await?;
    }
    let changed = previous.as_ref().is_none_or(|p| {
        let (a, b) = (&p.frame, &record.frame);
        a.addresses != b.addresses
            || a.labels != b.labels
            || a.version != b.version
            || a.hostname != b.hostname
            || a.capacity != b.capacity
            || a.capabilities != b.capabilities
    });
    let stale = last_touch.is_none_or(|t| t.elapsed() >= TOUCH_EVERY);
    if changed || stale {
        let f = &record.frame;
        let facts = AgentFacts {
            labels: f.labels.clone(),
            capacity: f.capacity,
            version: f.version.clone(),
            hostname: f.hostname.clone(),
            addresses: f.addresses.clone(),
            capabilities: f.capabilities.clone(),
            seen_at: now,
        };
        if state
            .store
            .update_agent_facts(&tenant.ctx(), agent.id, &facts)
            .await?
        {
            tracing::info!(addresses = ?f.addresses, "agent addresses changed");
        }
        *last_touch = Some(Instant::now());
    }
    Ok(())
}

/// The first heartbeat after a silence: flag the agent online (the dispatcher's reaper
/// flags it offline when its presence expires) and announce `agent.online`.
async fn came_online(
    state: &AppState,
    tenant: &Tenant,
    agent: &AgentRecord,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if !state
        .store
        .set_agent_online(&tenant.ctx(), agent.id, true)
        .await?
    {
        return Ok(());
    }
    tracing::info!("agent online");
    let event = Event::agent(
        tenant.name.as_str(),
        AgentEventData {
            agent_id: agent.id,
            name: agent.name.to_string(),
            status: "online".into(),
        },
    );
    crate::events::publish(state, &tenant.name, &event).await;
    Ok(())
}

/// The socket is gone: remember when the agent was last seen. A clean close (the agent
/// shut down) marks it offline at once; a broken socket leaves the agent two heartbeat
/// intervals to reconnect ([`ris_presence::Presence::disconnected`]).
async fn finish(state: &AppState, tenant: &Tenant, agent: &AgentRecord, clean_close: bool) {
    tracing::info!(clean_close, "heartbeat disconnected");
    if let Err(err) = state
        .store
        .touch_agent(&tenant.ctx(), agent.id, Utc::now())
        .await
    {
        tracing::warn!(error = %err, "could not record last_seen");
    }
    if clean_close {
        if let Err(err) = state.presence.remove(&tenant.name, agent.id).await {
            tracing::warn!(error = %err, "could not clear presence");
        }
        return;
    }
    // The socket broke: the agent died, or its network did. It gets two heartbeat
    // intervals (one late heartbeat) to come back on a new socket before the reaper
    // declares it lost.
    let linger = Duration::from_secs(2 * u64::from(state.config.heartbeat_interval_secs.max(1)));
    if let Err(err) = state
        .presence
        .disconnected(&tenant.name, agent.id, linger)
        .await
    {
        tracing::warn!(error = %err, "could not record the disconnect");
    }
}
