//! The agent reaper: notices agents that stopped heartbeating.
//!
//! Presence is a Redis key renewed by each heartbeat; when it expires the agent has been
//! silent for `presence_ttl_secs` (default 10 s). Every 2 s one dispatcher (the holder
//! of the `reaper` lease in Redis, so instances never do this twice at once) compares
//! the agents marked online in PostgreSQL with their presence. An agent must be seen
//! absent for `agent_lost_grace_ms` more (default 5 s; 15 s of silence in all) before
//! it is declared lost: a Redis restart wipes every presence key at once, and an agent
//! reconnecting its heartbeat after an API restart needs a moment; neither should cost
//! running work. An agent whose heartbeat socket *broke* (the API saw it go without a
//! clean close) is different: the API cut its presence to two heartbeat intervals and
//! left a `gone` marker that only a heartbeat clears
//! ([`ris_presence::Presence::disconnected`]), so when that presence lapses the agent is
//! lost at once, with no grace: a killed agent's work moves on after about two
//! intervals plus one reaper round. A lost agent is marked offline, `agent.offline` is
//! announced, and its tasks are recovered ([`recovery::agent_lost`]). The API marks an
//! agent online again on its first heartbeat.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ris_schemas::ids::AgentId;
use ris_store::{AgentRecord, Tenant};

use crate::context::Context;
use crate::events;
use crate::recovery;

const INTERVAL: Duration = Duration::from_secs(2);
/// Longer than a round, so the lease survives between rounds of its holder.
const LEASE: Duration = Duration::from_secs(10);

pub async fn run(ctx: Context) {
    let grace = Duration::from_millis(ctx.config.agent_lost_grace_ms);
    // When this process first saw each online-flagged agent without presence. Held in
    // memory: a new lease holder starts counting afresh, which only errs on the side of
    // waiting longer.
    let mut absent_since: HashMap<AgentId, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match ctx.presence.lease("reaper", &ctx.instance, LEASE).await {
            Ok(true) => reap(&ctx, &mut absent_since, grace).await,
            Ok(false) => absent_since.clear(),
            Err(err) => tracing::warn!(error = %err, "reaper lease unavailable"),
        }
    }
}

async fn reap(ctx: &Context, absent_since: &mut HashMap<AgentId, Instant>, grace: Duration) {
    let online = match ctx.store.online_agents().await {
        Ok(a) => a,
        Err(err) => return tracing::warn!(error = %err, "reaper cannot list agents"),
    };
    let mut by_tenant: BTreeMap<String, (Tenant, Vec<AgentRecord>)> = BTreeMap::new();
    for (tenant, agent) in online {
        by_tenant
            .entry(tenant.name.to_string())
            .or_insert_with(|| (tenant, Vec::new()))
            .1
            .push(agent);
    }
    for (tenant, agents) in by_tenant.into_values() {
        let ids: Vec<AgentId> = agents.iter().map(|a| a.id).collect();
        let presence = match ctx.presence.get_many(&tenant.name, &ids).await {
            Ok(p) => p,
            Err(err) => return tracing::warn!(error = %err, "reaper cannot read presence"),
        };
        let absent: Vec<&AgentRecord> = agents
            .iter()
            .zip(presence)
            .filter_map(|(agent, present)| {
                if present.is_some() {
                    absent_since.remove(&agent.id);
                    return None;
                }
                Some(agent)
            })
            .collect();
        let absent_ids: Vec<AgentId> = absent.iter().map(|a| a.id).collect();
        // Seen disconnecting (its socket broke, no reconnect since): no grace needed.
        let gone = match ctx.presence.gone_many(&tenant.name, &absent_ids).await {
            Ok(g) => g,
            Err(err) => return tracing::warn!(error = %err, "reaper cannot read presence"),
        };
        for (agent, gone) in absent.into_iter().zip(gone) {
            let since = *absent_since.entry(agent.id).or_insert_with(Instant::now);
            if (gone || since.elapsed() >= grace) && lost(ctx, &tenant, agent).await {
                absent_since.remove(&agent.id);
            }
        }
    }
}

/// Recovers a lost agent's tasks and marks it offline; `false` if that must be tried
/// again next round.
async fn lost(ctx: &Context, tenant: &Tenant, agent: &AgentRecord) -> bool {
    // Without the tenant's connection the tasks cannot be recovered: try next round.
    let Some(publisher) = ctx.publisher(&tenant.name) else {
        return false;
    };
    let tenant_ctx = tenant.ctx();
    tracing::warn!(tenant = %tenant.name, agent_id = %agent.id, "agent silent past its presence TTL and grace: lost");
    if recovery::agent_lost(ctx, &tenant_ctx, &publisher, agent)
        .await
        .is_err()
    {
        return false; // shutting down, or a permanent store error (logged): next round
    }
    match ctx
        .store
        .set_agent_online(&tenant_ctx, agent.id, false)
        .await
    {
        Ok(true) => events::agent_changed(&publisher, &tenant.name, agent, false).await,
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(error = %err, "could not mark the agent offline");
            return false;
        }
    }
    true
}
