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
        Self::with_ttl(TTL)
    }
}

impl OnlineAgents {
    fn with_ttl(ttl: Duration) -> Self {
        OnlineAgents {
            loads: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(ttl)
                .build(),
        }
    }

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

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use ris_presence::PresenceRecord;
    use ris_schemas::heartbeat::HeartbeatFrame;
    use ris_schemas::ids::TenantName;
    use ris_schemas::version::V1;

    use super::*;

    fn record(running: u32) -> PresenceRecord {
        PresenceRecord {
            frame: HeartbeatFrame {
                v: V1,
                sent_at: Utc::now(),
                running,
                capacity: 4,
                running_tasks: Vec::new(),
                cpu_percent: 0.0,
                memory_used_bytes: 0,
                memory_total_bytes: 0,
                disk_used_bytes: 0,
                disk_total_bytes: 0,
                version: "test".into(),
                hostname: "test".into(),
                labels: Default::default(),
                addresses: Vec::new(),
                capabilities: vec!["shell".into()],
            },
            received_at: Utc::now(),
        }
    }

    /// Real Redis, under a prefix of this test's own.
    async fn presence() -> Presence {
        let prefix = format!("ris-test-online-{}", Uuid::new_v4().simple());
        Presence::connect("redis://127.0.0.1:6379", &prefix, Duration::from_secs(60))
            .await
            .expect("Redis on 127.0.0.1:6379")
    }

    fn tenant() -> TenantCtx {
        TenantCtx {
            id: Uuid::new_v4(),
            name: TenantName::parse("acme").expect("tenant name"),
        }
    }

    fn running(loads: &[Option<Arc<Load>>]) -> Vec<Option<u32>> {
        loads
            .iter()
            .map(|l| l.as_ref().map(|l| l.running))
            .collect()
    }

    #[tokio::test]
    async fn an_agent_not_found_online_is_looked_up_again() {
        let (presence, tenant) = (presence().await, tenant());
        let (a, b) = (AgentId::new(), AgentId::new());
        let online = OnlineAgents::with_ttl(Duration::from_secs(30));
        presence.put(&tenant.name, a, &record(1)).await.unwrap();
        let loads = online.loads(&presence, &tenant, &[b, a]).await.unwrap();
        assert_eq!(running(&loads), [None, Some(1)]);
        assert_eq!(loads[1].as_ref().unwrap().capabilities, ["shell"]);

        presence.put(&tenant.name, b, &record(2)).await.unwrap();
        let loads = online.loads(&presence, &tenant, &[b, a]).await.unwrap();
        assert_eq!(running(&loads), [Some(2), Some(1)], "seen once online");
        presence.purge_tenant(&tenant.name).await.unwrap();
    }

    #[tokio::test]
    async fn an_agent_found_online_is_kept_for_the_ttl_only() {
        let (presence, tenant) = (presence().await, tenant());
        let agent = AgentId::new();
        let (long, short) = (
            OnlineAgents::with_ttl(Duration::from_secs(30)),
            OnlineAgents::with_ttl(Duration::from_millis(50)),
        );
        presence.put(&tenant.name, agent, &record(3)).await.unwrap();
        for cache in [&long, &short] {
            let loads = cache.loads(&presence, &tenant, &[agent]).await.unwrap();
            assert_eq!(running(&loads), [Some(3)]);
        }
        presence.remove(&tenant.name, agent).await.unwrap();
        let kept = long.loads(&presence, &tenant, &[agent]).await.unwrap();
        assert_eq!(running(&kept), [Some(3)], "kept within the TTL");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let read = short.loads(&presence, &tenant, &[agent]).await.unwrap();
        assert_eq!(running(&read), [None], "read again after the TTL");
        presence.purge_tenant(&tenant.name).await.unwrap();
    }
}
