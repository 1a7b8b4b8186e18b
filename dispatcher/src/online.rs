//! The online agents' load and capabilities, as their last heartbeat stated them, kept
//! for [`TTL`] so that a burst of placements over the same agents reads and parses each
//! agent's presence from Redis once, not once per task (a selector over 100 agents was
//! 100 presence frames parsed per placement).
//!
//! Only agents found online are kept; an agent not found is looked up again on the next
//! placement, so one that comes online is seen at once. One that goes offline may still
//! be chosen for up to [`TTL`] — the same as when it dies between two heartbeats, only
//! much shorter: its assignment waits in its queue and comes back when the assignment
//! window lapses (`recovery::assignment_lapsed`). The load that spreads a burst, the
//! in-flight placements, is read from Redis for every placement, never from here.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use ris_presence::{Presence, PresenceError};
use ris_schemas::ids::AgentId;
use ris_store::TenantCtx;
use uuid::Uuid;

/// How long an agent's presence is used without reading it again.
pub const TTL: Duration = Duration::from_millis(250);

/// What placement needs of an online agent's last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    pub running: u32,
    pub capacity: u32,
    pub capabilities: Vec<String>,
}

pub struct OnlineAgents {
    loads: Cache<(Uuid, AgentId), Arc<Load>>,
}

impl Default for OnlineAgents {
    fn default() -> Self {
        OnlineAgents {
            loads: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(TTL)
                .build(),
        }
    }
}

impl OnlineAgents {
    /// For each of `agents`, in order: its load if it is online.
    pub async fn loads(
        &self,
        presence: &Presence,
        tenant: &TenantCtx,
        agents: &[AgentId],
    ) -> Result<Vec<Option<Arc<Load>>>, PresenceError> {
        let mut loads: Vec<Option<Arc<Load>>> = agents
            .iter()
            .map(|agent| self.loads.get(&(tenant.id, *agent)))
            .collect();
        let missing: Vec<AgentId> = agents
            .iter()
            .zip(&loads)
            .filter(|(_, load)| load.is_none())
            .map(|(agent, _)| *agent)
            .collect();
        if missing.is_empty() {
            return Ok(loads);
        }
        let read = presence.get_many(&tenant.name, &missing).await?;
        let slots = loads.iter_mut().filter(|load| load.is_none());
        for (slot, (agent, record)) in slots.zip(missing.into_iter().zip(read)) {
            let Some(record) = record else { continue };
            let load = Arc::new(Load {
                running: record.frame.running,
                capacity: record.frame.capacity,
                capabilities: record.frame.capabilities,
            });
            self.loads.insert((tenant.id, agent), load.clone());
            *slot = Some(load);
        }
        Ok(loads)
    }
}
