//! What every part of the dispatcher shares.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ris_broker::Publisher;
use ris_presence::Presence;
use ris_schemas::ids::TenantName;
use ris_store::DynStore;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Clone)]
pub struct Context(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: DynStore,
    /// Placements and task reads, batched ([`crate::batches`]).
    pub batches: crate::batches::Batches,
    pub presence: Presence,
    /// Publisher of each tenant whose worker is connected. The sweeper uses it to place
    /// tasks of that tenant; a tenant without one is skipped until its worker connects.
    pub publishers: RwLock<HashMap<TenantName, Publisher>>,
    pub shutdown: CancellationToken,
    /// Each tenant's default retry policy and when it was read (see
    /// [`crate::recovery::tenant_default`]).
    pub retry_defaults:
        RwLock<HashMap<uuid::Uuid, (std::time::Instant, Option<ris_schemas::task::RetryPolicy>)>>,
    /// Identifies this process as the holder of leases (the reaper's).
    pub instance: String,
    /// The key signing messages to agents ([`crate::signing`]).
    pub signer: ris_broker::envelope::SignerCache,
    /// Each tenant's agent rows, cached briefly for placement.
    pub agent_lists: crate::agent_lists::AgentLists,
    /// Online agents' load and capabilities, cached very briefly for placement.
    pub online: crate::online::OnlineAgents,
}

impl Context {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    pub fn publisher(&self, tenant: &TenantName) -> Option<Publisher> {
        self.publishers
            .read()
            .ok()
            .and_then(|map| map.get(tenant).cloned())
    }

    pub fn set_publisher(&self, tenant: &TenantName, publisher: Option<Publisher>) {
        if let Ok(mut map) = self.publishers.write() {
            match publisher {
                Some(p) => map.insert(tenant.clone(), p),
                None => map.remove(tenant),
            };
        }
    }
}

impl std::ops::Deref for Context {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
