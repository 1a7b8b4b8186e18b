//! A short-lived cache of each tenant's agents (their rows: labels, capacity), so a
//! placement does not read every agent of the tenant from PostgreSQL.
//!
//! Presence (online, load, capabilities) is not kept here: placement reads it from Redis,
//! through a quarter-second cache of the agents found online ([`crate::online`]), and
//! reads the in-flight counts for every task. What the cache can miss for up to [`TTL`] is a row change: a
//! newly enrolled agent, changed labels, a deleted agent. Placement therefore reads the
//! rows afresh before giving up on a task (no agent matched, or none of the matching
//! ones is online), and for a named agent that is not in the cached list; a deleted
//! agent placed on from a stale list has no queue, so the assignment comes back
//! unroutable and the task is queued again, as when the deletion races a fresh read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ris_store::{AgentRecord, DynStore, StoreError, TenantCtx};
use uuid::Uuid;

/// How long a tenant's list is served without reading it again.
pub const TTL: Duration = Duration::from_secs(1);

type Entry = (Instant, Arc<Vec<AgentRecord>>);

#[derive(Default)]
pub struct AgentLists {
    lists: Mutex<HashMap<Uuid, Entry>>,
}

/// A tenant's agents, and whether they came from the cache.
pub struct Listed {
    pub agents: Arc<Vec<AgentRecord>>,
    pub cached: bool,
}

impl AgentLists {
    /// The tenant's agents, from the cache when younger than [`TTL`].
    pub async fn get(&self, store: &DynStore, tenant: &TenantCtx) -> Result<Listed, StoreError> {
        if let Some((at, agents)) = self.lock().get(&tenant.id) {
            if at.elapsed() < TTL {
                return Ok(Listed {
                    agents: agents.clone(),
                    cached: true,
                });
            }
        }
        let agents = Arc::new(store.list_agents(tenant).await?);
        self.lock()
            .insert(tenant.id, (Instant::now(), agents.clone()));
        Ok(Listed {
            agents,
            cached: false,
        })
    }

    /// Drops the tenant's list: the next `get` reads it afresh.
    pub fn invalidate(&self, tenant: &TenantCtx) {
        self.lock().remove(&tenant.id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.lists.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
