//! Swarm mode: many agents in this one process, running the real agent code
//! (`ris_agent::Agent`): real AMQP consumers on their own per-agent queues, real
//! WebSocket heartbeats to the API, real result publishing with confirms, the `noop`
//! and `shell` executors, each agent with its own journal and outbox on disk.
//!
//! What differs from separate `ris-agent` processes, and why:
//! - **Shared AMQP connections.** Agents share one connection per `per_connection`
//!   agents, each agent opening its own channels (publisher, tasks, control) on it.
//!   A lapin connection costs an OS thread and, with the default `frame_max`, ~7.6 MiB of
//!   buffers; RabbitMQ a file descriptor and ~136 KiB. The shared connections use
//!   `frame_max=16384` and log in as one swarm broker user with the `impersonator` tag,
//!   so each agent still publishes its results with its own `user_id` (which the
//!   dispatcher checks). The swarm user may read `ris.agent.*` and write `ris.results`.
//! - **One machine sampler** for all agents (a heartbeat frame's CPU/memory/disk figures
//!   are sampled at most once a second for the whole swarm).
//! - **No Docker engine**: the swarm points agents at a socket that does not exist, so
//!   they do not advertise `docker`.
//!
//! Enrollment goes through the API (`POST /v1/agents/enrollment-tokens` then
//! `POST /v1/agents/enroll`, as `ris-agent enroll` does), `enroll_concurrency` at a time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use ris_agent::enroll::{enroll, EnrollOptions};
use ris_agent::machine::Machine;
use ris_agent::swarm::{SwarmLinks, CHANNELS_PER_AGENT, CHANNEL_MAX};
use ris_agent::{Agent, AgentConfig, Identity};
use ris_broker::lapin::Connection;
use ris_broker::{BrokerConfig, Management};
use ris_schemas::ids::AgentName;
use ris_tests::TenantClient;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct SwarmOptions {
    pub agents: usize,
    pub capacity: u32,
    pub labels: Vec<(String, String)>,
    /// Agents per shared AMQP connection, each with
    /// [`ris_agent::swarm::CHANNELS_PER_AGENT`] channels: at most
    /// [`ris_agent::swarm::CHANNEL_MAX`] / that (409).
    pub per_connection: usize,
    pub enroll_concurrency: usize,
    /// Name prefix, so two swarms of one tenant do not collide.
    pub prefix: String,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        Self {
            agents: 100,
            capacity: 16,
            labels: vec![("bench".into(), "yes".into())],
            per_connection: 100,
            enroll_concurrency: 32,
            prefix: "swarm".into(),
        }
    }
}

struct Member {
    id: String,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

pub struct Swarm {
    members: Vec<Member>,
    connections: Vec<Arc<Connection>>,
    pub enroll_secs: f64,
    pub start_secs: f64,
    _dir: tempfile::TempDir,
}

impl Swarm {
    pub fn ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.id.clone()).collect()
    }

    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Enrolls `opts.agents` agents, opens the shared connections, starts every agent.
    pub async fn start(tenant: &TenantClient, opts: &SwarmOptions) -> anyhow::Result<Swarm> {
        let most = CHANNEL_MAX / CHANNELS_PER_AGENT;
        if opts.per_connection > most {
            anyhow::bail!(
                "{} agents per connection need {} channels; RabbitMQ allows {CHANNEL_MAX} \
                 per connection: at most {most} agents per connection",
                opts.per_connection,
                opts.per_connection * CHANNELS_PER_AGENT
            );
        }
        let dir = tempfile::tempdir()?;
        let t0 = Instant::now();
        let identities: Vec<(Identity, std::path::PathBuf)> = futures::stream::iter(0..opts.agents)
            .map(|i| enroll_one(tenant, opts, dir.path(), i))
            .buffer_unordered(opts.enroll_concurrency.max(1))
            .try_collect()
            .await?;
        let enroll_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let first = &identities.first().context("a swarm needs agents")?.0;
        let amqp = first.enrollment.amqp.clone();
        let (user, password) = swarm_user(tenant, &amqp.vhost).await?;
        let cfg = BrokerConfig {
            amqp_url: amqp.url.clone(),
            frame_max: Some(16384),
            ..BrokerConfig::default()
        };
        let n_conns = opts.agents.div_ceil(opts.per_connection.max(1));
        let mut connections = Vec::with_capacity(n_conns);
        for c in 0..n_conns {
            let name = format!("ris-bench swarm {c}");
            let conn = ris_broker::connect(&cfg, &amqp.vhost, &user, &password, &name).await?;
            connections.push(Arc::new(conn));
        }
        let machine = Arc::new(Mutex::new(
            Machine::new(dir.path()).reusing_samples_for(Duration::from_secs(1)),
        ));
        let mut members = Vec::with_capacity(identities.len());
        for (i, (identity, state_dir)) in identities.into_iter().enumerate() {
            let id = identity.enrollment.agent_id.to_string();
            let mut config = AgentConfig::new(state_dir.clone());
            config.docker.socket = state_dir.join("no-docker.sock");
            config.timings.shutdown_grace = Duration::from_secs(2);
            config.timings.shutdown_kill_wait = Duration::from_secs(2);
            config.swarm = Some(SwarmLinks {
                connection: connections[i / opts.per_connection.max(1)].clone(),
                machine: machine.clone(),
            });
            let agent = Agent::with_config(identity, config).await?;
            let stop = CancellationToken::new();
            let token = stop.clone();
            let handle = tokio::spawn(async move {
                if let Err(e) = agent.run(token).await {
                    eprintln!("swarm agent ended: {e:#}");
                }
            });
            members.push(Member { id, stop, handle });
        }
        Ok(Swarm {
            members,
            connections,
            enroll_secs,
            start_secs: t1.elapsed().as_secs_f64(),
            _dir: dir,
        })
    }

    /// Waits until `GET /v1/agents` shows every swarm agent online.
    pub async fn wait_online(
        &self,
        tenant: &TenantClient,
        timeout: Duration,
    ) -> anyhow::Result<f64> {
        let t0 = Instant::now();
        loop {
            let online = online_count(tenant, &self.ids()).await;
            if online == self.members.len() {
                return Ok(t0.elapsed().as_secs_f64());
            }
            if t0.elapsed() > timeout {
                return Err(anyhow!(
                    "only {online} of {} swarm agents online after {timeout:?}",
                    self.members.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops every agent (graceful), then closes the shared connections.
    pub async fn stop(self) {
        for m in &self.members {
            m.stop.cancel();
        }
        for m in self.members {
            let _ = tokio::time::timeout(Duration::from_secs(15), m.handle).await;
        }
        // Bounded: a close whose `close-ok` never comes (seen once in the quick run of
        // the test suite) must not hang the benchmark; dropping the connection ends it.
        for conn in self.connections {
            let close = conn.close(200, "ris-bench swarm done".into());
            let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
        }
    }
}

/// How many of `ids` `GET /v1/agents` shows online.
pub async fn online_count(tenant: &TenantClient, ids: &[String]) -> usize {
    let (_, body) = tenant.request(Method::GET, "/v1/agents", None).await;
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|a| a["status"] == "online")
                .filter(|a| a["id"].as_str().is_some_and(|id| wanted.contains(id)))
                .count()
        })
        .unwrap_or(0)
}

async fn enroll_one(
    tenant: &TenantClient,
    opts: &SwarmOptions,
    dir: &std::path::Path,
    i: usize,
) -> anyhow::Result<(Identity, std::path::PathBuf)> {
    let (status, body) = tenant
        .request(
            Method::POST,
            "/v1/agents/enrollment-tokens",
            Some(json!({ "ttl_secs": 3600 })),
        )
        .await;
    let token = body["token"]
        .as_str()
        .with_context(|| format!("enrollment token: {status} {body}"))?
        .to_owned();
    let name = format!("{}-{i}", opts.prefix);
    let state_dir = dir.join(&name);
    let (identity, _) = enroll(EnrollOptions {
        api_url: tenant.api_url.clone(),
        token,
        name: AgentName::parse(&name)?,
        labels: opts.labels.iter().cloned().collect(),
        capacity: opts.capacity,
        state_dir: state_dir.clone(),
        force: false,
        ca: None,
        client_cert: None,
    })
    .await
    .with_context(|| format!("enrolling {name}"))?;
    Ok((identity, state_dir))
}

/// The swarm's broker user in `vhost`: tagged `impersonator` (it publishes results with
/// each agent's `user_id`), reading only agent queues, writing only `ris.results`. Its
/// name starts with the tenant's user prefix, so the tenant's cleanup deletes it.
async fn swarm_user(tenant: &TenantClient, vhost: &str) -> anyhow::Result<(String, String)> {
    let mgmt = Management::new(&BrokerConfig::default())?;
    let user = format!("ris.{}.bench-swarm", tenant.name);
    let password = format!("swarm-{:016x}", rand_u64());
    mgmt.put_user(&user, &password, "impersonator").await?;
    mgmt.set_permissions(vhost, &user, "^$", r"^ris\.results$", r"^ris\.agent\..*$")
        .await?;
    Ok((user, password))
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}
