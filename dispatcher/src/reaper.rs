//! The agent reaper: notices agents that stopped heartbeating.
//!
//! Presence is a Redis key renewed by each heartbeat; when it expires the agent has been
//! silent for `presence_ttl_secs` (default 15 s). Every few seconds one dispatcher (the
//! holder of the `reaper` lease in Redis, so instances never do this twice at once)
//! compares the agents marked online in PostgreSQL with their presence, marks the silent
//! ones offline, announces `agent.offline`, and recovers their tasks
//! ([`recovery::agent_lost`]). The API marks an agent online again on its first
//! heartbeat.

use std::collections::BTreeMap;
use std::time::Duration;

use ris_schemas::ids::AgentId;
use ris_store::{AgentRecord, Tenant};

use crate::context::Context;
use crate::events;
use crate::recovery;

const INTERVAL: Duration = Duration::from_secs(2);
/// Longer than a round, so the lease survives between rounds of its holder.
const LEASE: Duration = Duration::from_secs(10);

pub async fn run(ctx: Context) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match ctx.presence.lease("reaper", &ctx.instance, LEASE).await {
            Ok(true) => reap(&ctx).await,
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "reaper lease unavailable"),
        }
    }
}

async fn reap(ctx: &Context) {
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
        for (agent, present) in agents.iter().zip(presence) {
            if present.is_none() {
                lost(ctx, &tenant, agent).await;
            }
        }
    }
}

async fn lost(ctx: &Context, tenant: &Tenant, agent: &AgentRecord) {
    // Without the tenant's connection the tasks cannot be recovered: try next round.
    let Some(publisher) = ctx.publisher(&tenant.name) else {
        return;
    };
    let tenant_ctx = tenant.ctx();
    tracing::warn!(tenant = %tenant.name, agent_id = %agent.id, "agent silent past its presence TTL: offline");
    if recovery::agent_lost(ctx, &tenant_ctx, &publisher, agent)
        .await
        .is_err()
    {
        return; // shutting down, or a permanent store error (logged): next round
    }
    match ctx
        .store
        .set_agent_online(&tenant_ctx, agent.id, false)
        .await
    {
        Ok(true) => events::agent_changed(&publisher, &tenant.name, agent, false).await,
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "could not mark the agent offline"),
    }
}
