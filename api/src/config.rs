//! API configuration.
//!
//! Read from the TOML file named by `RIS_CONFIG` (optional), then overridden by `RIS_*`
//! environment variables, nested keys separated by `__`: `RIS_LISTEN=0.0.0.0:8080`,
//! `RIS_BROKER__AMQP_URL=amqp://rabbit:5672`. The defaults work on a developer machine
//! with the services on localhost.

use std::net::SocketAddr;

use ris_broker::BrokerConfig;
use ris_runtime::tls::ServerTls;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address the server binds (HTTPS, or HTTP with `insecure_http`).
    pub listen: SocketAddr,
    /// Certificate and key the API serves HTTPS and WSS with (`RIS_TLS__CERT`,
    /// `RIS_TLS__KEY`); `client_ca` turns on mutual TLS. Required unless `insecure_http`.
    pub tls: Option<ServerTls>,
    /// Serve plain HTTP when no `tls` is configured: for local development only.
    pub insecure_http: bool,
    pub database_url: String,
    /// Connections in the PostgreSQL pool.
    pub database_max_connections: u32,
    pub redis_url: String,
    /// Prefix of every Redis key, so deployments (or test runs) can share a Redis.
    pub redis_prefix: String,
    pub broker: BrokerConfig,
    /// Key of the platform administrator, sent as `Authorization: Bearer`. Without it no
    /// one can create tenants. Keep it out of files in production (`RIS_BOOTSTRAP_ADMIN_KEY`).
    pub bootstrap_admin_key: Option<String>,
    /// Seconds between agent heartbeats (told to agents at enrollment).
    pub heartbeat_interval_secs: u32,
    /// Seconds without a heartbeat after which an agent shows offline (the dispatcher
    /// declares it lost `agent_lost_grace_ms` later).
    pub presence_ttl_secs: u32,
    /// Default rate limits and quotas of every tenant (a tenant's own, set with
    /// `PUT /v1/tenants/{name}/limits`, win): `RIS_LIMITS__MAX_AGENTS=50`, ...
    pub limits: ris_schemas::security::TenantLimits,
    /// Requests a minute from one address to routes whose credential is in the body
    /// (login, refresh, enrollment, signed hooks), against guessing.
    pub unauthenticated_per_minute_per_ip: u32,
    /// Milliseconds an API key's record is reused before it is read again; another
    /// instance's revocation takes effect here within this time (0: read every time).
    pub credential_cache_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            insecure_http: false,
            database_url: "postgres://postgres@127.0.0.1:5432/ris".into(),
            database_max_connections: 16,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "ris".into(),
            broker: BrokerConfig::default(),
            bootstrap_admin_key: None,
            heartbeat_interval_secs: 5,
            presence_ttl_secs: 10,
            limits: crate::limits::defaults(),
            unauthenticated_per_minute_per_ip: 600,
            credential_cache_ms: 2000,
        }
    }
}
