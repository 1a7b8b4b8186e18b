//! Handles shared by every request.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use ris_broker::{BrokerConfig, BrokerError, Management, Publisher};
use ris_presence::Presence;
use ris_schemas::ids::TenantName;
use ris_store::DynStore;
use tokio::sync::Mutex;

use crate::config::Config;

/// Cheap to clone; everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: DynStore,
    pub presence: Presence,
    pub management: Management,
    pub brokers: TenantBrokers,
    /// Appends audit entries in batches ([`crate::audit::AuditWriter`]).
    pub audit: crate::audit::AuditWriter,
    /// API keys and finished tasks' bodies ([`crate::cache`]).
    pub caches: crate::cache::Caches,
    /// Live tasks' reads, batched per tenant ([`crate::task_reads`]).
    pub task_reads: crate::task_reads::TaskReads,
    /// Tenants' rate limits and quotas, briefly cached ([`crate::limits`]).
    pub limits_cache: crate::limits::LimitsCache,
    /// Tenants' queued-task counts, briefly cached ([`crate::limits`]).
    pub queued_counts: crate::limits::QueuedCounts,
    /// Message signing keys, briefly cached ([`crate::signing`]).
    pub signing: crate::signing::SigningState,
    /// Access token keys, briefly cached ([`crate::jwt`]).
    pub jwt: crate::jwt::JwtState,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// One AMQP connection per tenant vhost (a connection is bound to one vhost), opened
/// lazily on first use and replaced when it breaks.
pub struct TenantBrokers {
    config: BrokerConfig,
    connections: Mutex<HashMap<TenantName, (lapin::Connection, Publisher)>>,
}

use ris_broker::lapin;

impl TenantBrokers {
    pub fn new(config: BrokerConfig) -> Self {
        Self {
            config,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// A confirm-mode publisher on the tenant's vhost.
    pub async fn publisher(&self, tenant: &TenantName) -> Result<Publisher, BrokerError> {
        let mut connections = self.connections.lock().await;
        Ok(self.live(&mut connections, tenant).await?.1.clone())
    }

    /// A new channel on the tenant's connection, for topology changes (an error there
    /// closes only this channel). Close it when done.
    pub async fn channel(&self, tenant: &TenantName) -> Result<lapin::Channel, BrokerError> {
        let mut connections = self.connections.lock().await;
        let (conn, _) = self.live(&mut connections, tenant).await?;
        Ok(conn.create_channel().await?)
    }

    /// The tenant's connection and publisher, (re)opened unless both are alive.
    async fn live<'a>(
        &self,
        connections: &'a mut HashMap<TenantName, (lapin::Connection, Publisher)>,
        tenant: &TenantName,
    ) -> Result<&'a (lapin::Connection, Publisher), BrokerError> {
        let open = || async {
            let name = format!("ris-api {tenant}");
            let conn = ris_broker::connect_admin(&self.config, &tenant.vhost(), &name).await?;
            let publisher = Publisher::new(&conn).await?;
            Ok::<_, BrokerError>((conn, publisher))
        };
        match connections.entry(tenant.clone()) {
            Entry::Occupied(entry)
                if entry.get().0.status().connected() && entry.get().1.is_open() =>
            {
                Ok(entry.into_mut())
            }
            Entry::Occupied(mut entry) => {
                entry.insert(open().await?);
                Ok(entry.into_mut())
            }
            Entry::Vacant(entry) => Ok(entry.insert(open().await?)),
        }
    }

    /// Drops the tenant's connection (after an error, or when the tenant is deleted).
    pub async fn forget(&self, tenant: &TenantName) {
        if let Some((conn, _)) = self.connections.lock().await.remove(tenant) {
            // The connection is gone either way; a close error says nothing useful.
            drop(conn.close(200, "tenant connection released".into()).await);
        }
    }

    pub async fn close_all(&self) {
        let drained: Vec<_> = self.connections.lock().await.drain().collect();
        for (_, (conn, _)) in drained {
            drop(conn.close(200, "shutting down".into()).await);
        }
    }
}
