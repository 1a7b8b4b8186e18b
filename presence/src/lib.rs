//! Live state of RIS in Redis: which agents are online, how loaded they are, and which
//! placements are still in flight.
//!
//! Nothing here is the system of record. Presence is a key per agent with a TTL, renewed
//! by every heartbeat: when the agent goes quiet the key expires and the agent is offline.
//! In-flight placements are a sorted set per agent whose scores are expiry times, so a
//! result that never arrives stops counting against the agent once its task could no
//! longer be running (the count heals itself instead of drifting).
//!
//! # Keys (`<p>` is the configured prefix, so several deployments or test runs can share
//! one Redis)
//!
//! - `<p>:presence:<tenant>:<agent>` — JSON [`PresenceRecord`], `EX ttl`.
//! - `<p>:inflight:<tenant>:<agent>` — sorted set of task ids scored by expiry (unix ms).
//! - `<p>:hookreplay:<hook>:<signature>` — a used inbound hook signature, `EX 600`
//!   ([`Presence::remember_once`]).
//! - `<p>:rl:key:<id>`, `<p>:rl:tenant:<name>` — GCRA rate limit state
//!   ([`Presence::rate_limit`]).
//! - `<p>:lock:<name>` — a lease held by one process (`SET NX PX`), for periodic jobs
//!   that one instance at a time should run.

use std::time::Duration;

pub mod rate_limit;
pub use rate_limit::{Limit, Refused};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use ris_schemas::heartbeat::HeartbeatFrame;
use ris_schemas::ids::{AgentId, TaskId, TenantName};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("corrupt presence record: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// What Redis holds for an online agent: its latest heartbeat and when it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub frame: HeartbeatFrame,
    pub received_at: DateTime<Utc>,
}

/// Handle on the live state. Cheap to clone; reconnects by itself (the underlying
/// [`ConnectionManager`] re-establishes a dropped connection on the next command).
#[derive(Clone)]
pub struct Presence {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
}

impl Presence {
    /// Connects to Redis. `ttl` is how long an agent stays online after its last
    /// heartbeat.
    pub async fn connect(url: &str, prefix: &str, ttl: Duration) -> Result<Self, PresenceError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            ttl,
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn presence_key(&self, tenant: &TenantName, agent: AgentId) -> String {
        format!("{}:presence:{tenant}:{agent}", self.prefix)
    }

    fn gone_key(&self, tenant: &TenantName, agent: AgentId) -> String {
        format!("{}:gone:{tenant}:{agent}", self.prefix)
    }

    fn inflight_key(&self, tenant: &TenantName, agent: AgentId) -> String {
        format!("{}:inflight:{tenant}:{agent}", self.prefix)
    }

    pub async fn ping(&self) -> Result<(), PresenceError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Records a heartbeat and renews the agent's TTL. Returns the record it replaced,
    /// if the agent was online, so the caller can notice changes (addresses, labels).
    pub async fn put(
        &self,
        tenant: &TenantName,
        agent: AgentId,
        record: &PresenceRecord,
    ) -> Result<Option<PresenceRecord>, PresenceError> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(record)?;
        // A heartbeat also clears any disconnect marker (one round trip).
        let (previous,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(self.presence_key(tenant, agent))
            .arg(json)
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .arg("GET")
            .cmd("DEL")
            .arg(self.gone_key(tenant, agent))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(previous.map(|p| serde_json::from_str(&p)).transpose()?)
    }

    /// Presence of each agent, in order; `None` for an offline agent.
    pub async fn get_many(
        &self,
        tenant: &TenantName,
        agents: &[AgentId],
    ) -> Result<Vec<Option<PresenceRecord>>, PresenceError> {
        let raw = self
            .mget(agents.iter().map(|a| self.presence_key(tenant, *a)))
            .await?;
        raw.into_iter()
            .map(|r| r.map(|s| serde_json::from_str(&s)).transpose())
            .collect::<Result<_, _>>()
            .map_err(PresenceError::from)
    }

    /// Marks the agent offline at once (its socket closed cleanly).
    pub async fn remove(&self, tenant: &TenantName, agent: AgentId) -> Result<(), PresenceError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(self.presence_key(tenant, agent)).await?;
        Ok(())
    }

    /// The agent's heartbeat socket broke (it did not close cleanly): its presence is
    /// cut to `linger` (a heartbeat on a new socket renews it in full), and a `gone`
    /// marker (cleared by the next heartbeat, [`Presence::put`]) tells the reaper that
    /// the absence that follows is a disconnect, not a Redis restart that wiped every
    /// key, so it need not wait out its grace.
    pub async fn disconnected(
        &self,
        tenant: &TenantName,
        agent: AgentId,
        linger: Duration,
    ) -> Result<(), PresenceError> {
        let mut conn = self.conn.clone();
        let linger_ms = linger.as_millis() as u64;
        redis::pipe()
            .atomic()
            // LT: only ever shortens (Redis 7).
            .cmd("PEXPIRE")
            .arg(self.presence_key(tenant, agent))
            .arg(linger_ms)
            .arg("LT")
            .ignore()
            .cmd("SET")
            .arg(self.gone_key(tenant, agent))
            .arg(1)
            .arg("PX")
            .arg(linger_ms + self.ttl.as_millis() as u64)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// For each agent, whether its heartbeat socket broke recently and it has not
    /// reconnected since ([`Presence::disconnected`]).
    pub async fn gone_many(
        &self,
        tenant: &TenantName,
        agents: &[AgentId],
    ) -> Result<Vec<bool>, PresenceError> {
        let raw = self
            .mget(agents.iter().map(|a| self.gone_key(tenant, *a)))
            .await?;
        Ok(raw.into_iter().map(|r| r.is_some()).collect())
    }

    /// The values of `keys`, in order (one round trip; none for no keys).
    async fn mget(
        &self,
        keys: impl Iterator<Item = String>,
    ) -> Result<Vec<Option<String>>, PresenceError> {
        let keys: Vec<String> = keys.collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        Ok(redis::cmd("MGET").arg(keys).query_async(&mut conn).await?)
    }

    /// Counts a placement against the agent until `expires_at` (when the task can no
    /// longer be running) or until [`Presence::inflight_done`].
    pub async fn inflight_add(
        &self,
        tenant: &TenantName,
        agent: AgentId,
        task: TaskId,
        expires_at: DateTime<Utc>,
    ) -> Result<(), PresenceError> {
        let mut conn = self.conn.clone();
        let key = self.inflight_key(tenant, agent);
        let now_ms = Utc::now().timestamp_millis();
        let ttl_ms = (expires_at.timestamp_millis() - now_ms).max(1);
        let _: () = redis::pipe()
            .zadd(&key, task.to_string(), expires_at.timestamp_millis())
            .ignore()
            .zrembyscore(&key, "-inf", now_ms)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms)
            .arg("GT")
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The placement finished: it no longer counts against the agent.
    pub async fn inflight_done(
        &self,
        tenant: &TenantName,
        agent: AgentId,
        task: TaskId,
    ) -> Result<(), PresenceError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .zrem(self.inflight_key(tenant, agent), task.to_string())
            .await?;
        Ok(())
    }

    /// Unexpired in-flight placements per agent, in order.
    pub async fn inflight_counts(
        &self,
        tenant: &TenantName,
        agents: &[AgentId],
    ) -> Result<Vec<u32>, PresenceError> {
        if agents.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let now_ms = Utc::now().timestamp_millis();
        let mut pipe = redis::pipe();
        for agent in agents {
            pipe.zcount(self.inflight_key(tenant, *agent), now_ms, "+inf");
        }
        let counts: Vec<u32> = pipe.query_async(&mut conn).await?;
        Ok(counts)
    }

    /// Sets `<p>:<key>` for `ttl` unless it exists (`SET NX EX`). `true` the first time
    /// within `ttl`, `false` after: for one-time use, e.g. replay protection of signed
    /// inbound hook requests (`hookreplay:<hook id>:<signature>`).
    pub async fn remember_once(&self, key: &str, ttl: Duration) -> Result<bool, PresenceError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}:{key}", self.prefix))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// Takes the lease `name` for `ttl` if no one holds it, or renews it if `owner`
    /// already does. `true` when `owner` holds it now.
    pub async fn lease(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, PresenceError> {
        let mut conn = self.conn.clone();
        let key = format!("{}:lock:{name}", self.prefix);
        // Take it if free; if we hold it already, extend it. One round trip, atomic.
        let script = redis::Script::new(
            r"if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
              if redis.call('GET', KEYS[1]) == ARGV[1] then
                  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1
              end
              return 0",
        );
        let held: i64 = script
            .key(key)
            .arg(owner)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    /// Forgets everything held for the tenant (it was deleted).
    pub async fn purge_tenant(&self, tenant: &TenantName) -> Result<(), PresenceError> {
        let mut conn = self.conn.clone();
        for kind in ["presence", "inflight", "gone"] {
            let pattern = format!("{}:{kind}:{tenant}:*", self.prefix);
            let keys: Vec<String> = {
                let mut iter: redis::AsyncIter<String> = conn.scan_match(&pattern).await?;
                let mut keys = Vec::new();
                while let Some(item) = iter.next_item().await {
                    keys.push(item?);
                }
                keys
            };
            if !keys.is_empty() {
                let _: i64 = conn.del(keys).await?;
            }
        }
        Ok(())
    }
}
