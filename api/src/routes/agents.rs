//! Agents: `GET /v1/agents`, `GET /v1/agents/{id}`.
//!
//! Identity comes from PostgreSQL, liveness from Redis: an agent is `online` while its
//! presence key (renewed by each heartbeat) exists.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use ris_presence::PresenceRecord;
use ris_schemas::api::{AddressChange, AgentLoad, AgentStatus, AgentView, Page};
use ris_schemas::ids::AgentId;
use ris_store::AgentRecord;

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::parse_param;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agents", get(list))
        .route("/agents/{id}", get(show))
}

fn view(agent: AgentRecord, presence: Option<PresenceRecord>) -> AgentView {
    let (status, load, addresses, last_seen, capabilities) = match presence {
        Some(p) => {
            let f = p.frame;
            let load = AgentLoad {
                running: f.running,
                capacity: f.capacity,
                cpu_percent: f.cpu_percent,
                memory_used_bytes: f.memory_used_bytes,
                memory_total_bytes: f.memory_total_bytes,
                disk_used_bytes: f.disk_used_bytes,
                disk_total_bytes: f.disk_total_bytes,
            };
            (
                AgentStatus::Online,
                Some(load),
                f.addresses,
                Some(p.received_at),
                f.capabilities,
            )
        }
        None => (
            AgentStatus::Offline,
            None,
            agent.addresses,
            agent.last_seen_at,
            agent.capabilities.unwrap_or_default(),
        ),
    };
    AgentView {
        id: agent.id,
        name: agent.name,
        status,
        labels: agent.labels,
        capacity: agent.capacity,
        version: agent.version,
        hostname: agent.hostname,
        addresses,
        capabilities,
        last_seen,
        load,
        address_history: Vec::new(),
        enrolled_at: agent.enrolled_at,
    }
}

async fn list(
    State(state): State<AppState>,
    caller: TenantCaller,
) -> ApiResult<Json<Page<AgentView>>> {
    let agents = state.store.list_agents(&caller.tenant).await?;
    let ids: Vec<AgentId> = agents.iter().map(|a| a.id).collect();
    let presence = state.presence.get_many(&caller.tenant.name, &ids).await?;
    let items = agents
        .into_iter()
        .zip(presence)
        .map(|(a, p)| view(a, p))
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

async fn show(
    State(state): State<AppState>,
    caller: TenantCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    let id: AgentId = parse_param("id", &id)?;
    let agent = state
        .store
        .get_agent(&caller.tenant, id)
        .await?
        .ok_or(ApiError::not_found("agent"))?;
    let presence = state
        .presence
        .get_many(&caller.tenant.name, &[id])
        .await?
        .pop()
        .flatten();
    let history = state.store.address_history(&caller.tenant, id, 20).await?;
    let mut view = view(agent, presence);
    view.address_history = history
        .into_iter()
        .map(|h| AddressChange {
            addresses: h.addresses,
            changed_at: h.changed_at,
        })
        .collect();
    Ok(Json(view))
}
