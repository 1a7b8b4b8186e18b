//! Agent configuration: where the state lives and the delays the runtime uses.
//!
//! `ris-agent run` takes no flags besides the state directory: everything else comes
//! from the identity saved at enrollment. The delays are plain fields so a test or a
//! benchmark swarm can shorten them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ris_broker::BrokerConfig;

use crate::identity::Identity;

/// Environment variable naming the state directory when `--state-dir` is not given
/// (precedence: flag, then this variable, then [`DEFAULT_STATE_DIR`]).
pub const STATE_DIR_ENV: &str = "RIS_AGENT_STATE_DIR";
/// State directory when neither `--state-dir` nor [`STATE_DIR_ENV`] is given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/ris-agent";

/// Environment variable naming the Docker engine socket when `--docker-socket` is not
/// given (precedence: flag, then this variable, then [`DEFAULT_DOCKER_SOCKET`]).
pub const DOCKER_SOCKET_ENV: &str = "RIS_AGENT_DOCKER_SOCKET";
pub use crate::docker::engine::DEFAULT_SOCKET as DEFAULT_DOCKER_SOCKET;

/// What the agent needs before it loads its identity.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Holds `identity.json`, `journal/`, `outbox/` and `services/`.
    pub state_dir: PathBuf,
    pub timings: Timings,
    pub docker: DockerConfig,
    /// Set only by a benchmark swarm: a shared broker connection and machine sampler.
    pub swarm: Option<crate::swarm::SwarmLinks>,
}

/// The Docker engine the agent runs services and docker tasks on.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Unix socket of the engine. Absent or not answering: the agent advertises no
    /// `docker` capability, docker tasks fail `docker_unavailable`.
    pub socket: PathBuf,
    /// How often the engine is pinged (the capability follows).
    pub probe_every: Duration,
    pub services: crate::service::ServiceTimings,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_DOCKER_SOCKET),
            probe_every: Duration::from_secs(15),
            services: crate::service::ServiceTimings::default(),
        }
    }
}

impl AgentConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            timings: Timings::default(),
            docker: DockerConfig::default(),
            swarm: None,
        }
    }

    pub fn journal_dir(&self) -> PathBuf {
        journal_dir(&self.state_dir)
    }

    pub fn outbox_dir(&self) -> PathBuf {
        outbox_dir(&self.state_dir)
    }

    pub fn services_dir(&self) -> PathBuf {
        services_dir(&self.state_dir)
    }
}

/// One `<service>.json` per Docker service this agent runs.
pub fn services_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("services")
}

pub fn journal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("journal")
}

pub fn outbox_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("outbox")
}

/// Delays and limits of the runtime.
#[derive(Debug, Clone)]
pub struct Timings {
    /// How long running tasks may finish on their own after a stop is asked.
    pub shutdown_grace: Duration,
    /// After the grace, how long killed tasks get to report before the agent exits
    /// (covers the executor's cancel grace).
    pub shutdown_kill_wait: Duration,
    /// Longest wait for one publisher confirm before the result goes to the outbox.
    pub publish_timeout: Duration,
    /// How often a non-empty outbox is retried while connected.
    pub outbox_retry: Duration,
    /// Longest wait for channels and consumers to be set up after connecting.
    pub setup_timeout: Duration,
    /// Journal done-markers older than this are deleted at startup.
    pub journal_marker_ttl: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(10),
            shutdown_kill_wait: Duration::from_secs(7),
            publish_timeout: Duration::from_secs(10),
            outbox_retry: Duration::from_secs(5),
            setup_timeout: Duration::from_secs(15),
            journal_marker_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The CA certificate (PEM) the agent trusts for the API and the broker, copied into
/// the state directory by `ris-agent enroll --ca`.
pub const CA_FILE: &str = "ca.pem";

/// The client certificate and key the agent presents to the API (mutual TLS), saved by
/// `ris-agent enroll --client-cert --client-key`.
pub const CLIENT_CERT_FILE: &str = "client.pem";
pub const CLIENT_KEY_FILE: &str = "client-key.pem";

/// `(<state_dir>/client.pem, <state_dir>/client-key.pem)` when enrollment saved them.
pub fn client_cert(state_dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let cert = state_dir.join(CLIENT_CERT_FILE);
    let key = state_dir.join(CLIENT_KEY_FILE);
    (cert.is_file() && key.is_file()).then_some((cert, key))
}

/// `<state_dir>/ca.pem` when enrollment saved one (else the system's roots are trusted).
pub fn ca_file(state_dir: &Path) -> Option<PathBuf> {
    let path = state_dir.join(CA_FILE);
    path.is_file().then_some(path)
}

/// Broker settings for this agent: the URL from the enrollment, the CA from the state
/// directory, defaults for the rest. The credentials are passed to `ris_broker::connect`
/// separately. The agent dials the scheme the API handed it (`amqps://` unless the
/// servers run with `insecure_amqp`).
pub fn broker_config(identity: &Identity, state_dir: &Path) -> BrokerConfig {
    BrokerConfig {
        amqp_url: identity.enrollment.amqp.url.clone(),
        ca_file: ca_file(state_dir),
        insecure_amqp: true,
        ..BrokerConfig::default()
    }
}
