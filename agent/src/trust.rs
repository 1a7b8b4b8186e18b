//! Which messages the agent believes: only assignments and control orders signed by a
//! platform key ([`ris_broker::envelope`]) for this very agent of its tenant.
//!
//! The keys come from enrollment and are replaced by the set in every heartbeat reply
//! (that is how rotations and retirements arrive). The API is the root of trust: the
//! heartbeat runs over the same (TLS) connection the identity came from.

use std::sync::{Arc, PoisonError, RwLock};

use chrono::Utc;
use ris_broker::envelope::{EnvelopeError, KeyRing, Scope, ToAgent};
use ris_broker::lapin::message::Delivery;
use ris_schemas::ids::{AgentId, TenantName};
use ris_schemas::security::SigningKeyView;

/// The agent's trusted keys, shared by the consumers and the heartbeat.
#[derive(Clone, Default)]
pub struct Trust {
    ring: Arc<RwLock<KeyRing>>,
    tenant: Option<TenantName>,
    agent: Option<AgentId>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trust").field("agent", &self.agent).finish()
    }
}

fn ring_of(keys: &[SigningKeyView]) -> KeyRing {
    KeyRing::from_hex(keys.iter().map(|k| (k.kid.as_str(), k.public_key.as_str())))
}

impl Trust {
    pub fn new(tenant: TenantName, agent: AgentId, keys: &[SigningKeyView]) -> Self {
        Self {
            ring: Arc::new(RwLock::new(ring_of(keys))),
            tenant: Some(tenant),
            agent: Some(agent),
        }
    }

    /// Replaces the key set (from a heartbeat reply); an empty set changes nothing.
    pub fn replace(&self, keys: &[SigningKeyView]) {
        if keys.is_empty() {
            return;
        }
        let ring = ring_of(keys);
        let mut current = self.ring.write().unwrap_or_else(PoisonError::into_inner);
        if *current != ring {
            tracing::info!(keys = keys.len(), "signing keys updated");
            *current = ring;
        }
    }

    /// Checks that `delivery` is `message`, signed for this agent.
    pub fn verify<M: ToAgent>(
        &self,
        delivery: &Delivery,
        message: &M,
    ) -> Result<(), EnvelopeError> {
        let (Some(tenant), Some(agent)) = (&self.tenant, self.agent) else {
            return Err(EnvelopeError::Missing);
        };
        let (task, attempt) = message.task_and_attempt();
        let scope = Scope {
            tenant,
            agent,
            task,
            attempt,
        };
        self.ring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .verify(
                delivery.properties.headers().as_ref(),
                &scope,
                &delivery.data,
                Utc::now(),
            )
    }
}
