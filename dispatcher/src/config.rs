//! Dispatcher configuration: defaults, then the TOML file named by `RIS_CONFIG`, then
//! `RIS_*` environment variables (`__` separates nested keys). The database, Redis and
//! broker settings use the same names as the API's, so one file can serve both.

use std::net::SocketAddr;

use ris_broker::BrokerConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub database_url: String,
    pub database_max_connections: u32,
    pub redis_url: String,
    pub redis_prefix: String,
    pub broker: BrokerConfig,
    /// Seconds a heartbeat keeps an agent present (must match the API's).
    pub presence_ttl_secs: u32,
    /// How long past its presence an agent must stay silent before the reaper declares
    /// it lost (offline, its tasks recovered).
    pub agent_lost_grace_ms: u64,
    /// Where `/healthz` and `/metrics` are served.
    pub metrics_listen: SocketAddr,
    /// How often the tenant list is re-read to start or stop tenant workers.
    pub tenant_refresh_ms: u64,
    /// How often PostgreSQL is swept for tasks waiting for an agent.
    pub sweep_interval_ms: u64,
    /// Deliveries handled at once per consumer (also the prefetch).
    pub consumer_concurrency: u16,
    /// How often each tenant's services are reconciled with its agents.
    pub service_sync_ms: u64,
    /// Seconds before an order an agent has not acknowledged is sent again.
    pub service_resend_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/ris".into(),
            database_max_connections: 16,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "ris".into(),
            broker: BrokerConfig::default(),
            presence_ttl_secs: 10,
            agent_lost_grace_ms: 5000,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            tenant_refresh_ms: 1000,
            sweep_interval_ms: 250,
            consumer_concurrency: 64,
            service_sync_ms: 3000,
            service_resend_secs: 15,
        }
    }
}
