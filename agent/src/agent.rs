//! [`Agent`]: the top-level loop of one agent.
//!
//! `run` reports tasks a previous run died in, probes the Docker engine and starts the
//! service reconcilers, then the heartbeat and the AMQP supervisor, and waits for the
//! shutdown token. On shutdown it stops taking tasks, gives running ones the grace
//! period, kills what is left (reported as failed with reason `agent_shutdown`), stops
//! the reconcilers (containers keep running), lets the results out, and closes the
//! connections.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ris_schemas::ids::AgentId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{AgentConfig, DockerConfig, Timings};
use crate::docker::{Engine, Owner};
use crate::executor::{DockerExecutor, Executors};
use crate::heartbeat::{self, HeartbeatConfig};
use crate::identity::{Identity, IdentityError};
use crate::journal::{Journal, JournalError};
use crate::machine::Machine;
use crate::outbox::{Outbox, OutboxError};
use crate::report::Reporter;
use crate::running::Running;
use crate::service::forward;
use crate::service::{ServiceConfig, ServiceError, ServiceManager};
use crate::trust::Trust;
use crate::{supervisor, worker};

/// How long the heartbeat and the broker connection get to close at the very end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("the identity's capacity must be at least 1")]
    ZeroCapacity,
    #[error(transparent)]
    Services(#[from] ServiceError),
}

/// What the worker, the supervisor and the task runs share.
pub(crate) struct Shared {
    pub identity: Identity,
    pub agent_id: AgentId,
    pub journal: Journal,
    pub reporter: Reporter,
    pub running: Running,
    pub executors: Executors,
    /// Every task run, so shutdown can wait for them.
    pub tracker: TaskTracker,
    pub timings: Timings,
    pub state_dir: PathBuf,
    /// The local Docker engine (probed; the heartbeat's `docker` capability follows).
    pub engine: Engine,
    pub docker: DockerConfig,
    /// Docker services on this agent; their reports go out through `status_rx`.
    pub services: ServiceManager,
    pub status_rx: std::sync::Mutex<Option<forward::StatusReceiver>>,
    /// Stops the service reconcilers and the engine probe (after the drain).
    pub services_stop: CancellationToken,
    /// The keys assignments and control orders must be signed with.
    pub trust: Trust,
    /// Shared connection and sampler when this agent is one of a swarm.
    pub swarm: Option<crate::swarm::SwarmLinks>,
}

pub struct Agent {
    shared: Arc<Shared>,
}

impl Agent {
    /// Loads the identity from the configured state directory.
    pub fn load(config: AgentConfig) -> Result<Self, AgentError> {
        let identity = Identity::load(&config.state_dir)?;
        Self::build(identity, config)
    }

    /// An agent from an identity held in memory (a benchmark swarm enrolls many); its
    /// journal and outbox live under `state_dir`.
    pub async fn from_identity(identity: Identity, state_dir: PathBuf) -> Result<Self, AgentError> {
        Self::with_config(identity, AgentConfig::new(state_dir)).await
    }

    /// Like [`Agent::from_identity`], with the timings of `config`.
    pub async fn with_config(identity: Identity, config: AgentConfig) -> Result<Self, AgentError> {
        tokio::task::spawn_blocking(move || Self::build(identity, config))
            .await
            .map_err(|_| AgentError::Journal(JournalError::Blocking))?
    }

    fn build(identity: Identity, config: AgentConfig) -> Result<Self, AgentError> {
        if identity.capacity == 0 {
            return Err(AgentError::ZeroCapacity);
        }
        let amqp = &identity.enrollment.amqp;
        let agent_id = identity.enrollment.agent_id;
        let outbox = Outbox::open(config.outbox_dir())?;
        let reporter = Reporter::new(
            amqp.results_exchange.clone(),
            agent_id.to_string(),
            amqp.username.clone(),
            config.timings.publish_timeout,
            outbox,
        );
        let engine = Engine::new(config.docker.socket.clone());
        let owner = Owner::new(identity.enrollment.tenant.to_string(), agent_id.to_string());
        let (status_tx, status_rx) = tokio::sync::mpsc::unbounded_channel();
        let services_stop = CancellationToken::new();
        let services = ServiceManager::open(
            ServiceConfig {
                dir: config.services_dir(),
                owner: owner.clone(),
                engine: engine.clone(),
                timings: config.docker.services.clone(),
            },
            status_tx,
            services_stop.clone(),
        )?;
        let shared = Shared {
            journal: Journal::open(config.journal_dir())?,
            reporter,
            running: Running::new(identity.capacity),
            executors: Executors::new(DockerExecutor::new(engine.clone(), owner))?,
            engine,
            docker: config.docker,
            services,
            status_rx: std::sync::Mutex::new(Some(status_rx)),
            services_stop,
            tracker: TaskTracker::new(),
            timings: config.timings,
            swarm: config.swarm,
            state_dir: config.state_dir,
            trust: Trust::new(
                identity.enrollment.tenant.clone(),
                agent_id,
                &identity.enrollment.signing_keys,
            ),
            agent_id,
            identity,
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    pub fn agent_id(&self) -> AgentId {
        self.shared.agent_id
    }

    /// The registry of running tasks (for a swarm's statistics).
    pub fn running(&self) -> Running {
        self.shared.running.clone()
    }

    /// Runs until `shutdown` is cancelled, then drains and returns.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let shared = self.shared;
        let enrollment = &shared.identity.enrollment;
        tracing::info!(
            agent_id = %shared.agent_id,
            tenant = %enrollment.tenant,
            name = %enrollment.name,
            capacity = shared.running.capacity(),
            version = env!("CARGO_PKG_VERSION"),
            "agent starting"
        );
        match shared
            .journal
            .prune_markers(shared.timings.journal_marker_ttl)
        {
            Ok(n) if n > 0 => tracing::debug!(pruned = n, "old journal markers removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot prune the journal"),
        }
        let recovered = worker::recover_unfinished(&shared).await;
        if recovered > 0 {
            tracing::warn!(
                tasks = recovered,
                "reported tasks interrupted by the last stop as failed"
            );
        }

        let docker = start_docker(&shared).await;

        let conn_stop = CancellationToken::new();
        let heartbeat_stop = CancellationToken::new();
        let machine = match &shared.swarm {
            Some(links) => links.machine.clone(),
            None => Arc::new(std::sync::Mutex::new(Machine::new(&shared.state_dir))),
        };
        let heartbeat = tokio::spawn(heartbeat::run_shared(
            heartbeat_config(&shared),
            shared.running.clone(),
            machine,
            heartbeat_stop.clone(),
        ));
        let supervisor = tokio::spawn(supervisor::supervise(
            shared.clone(),
            shutdown.clone(),
            conn_stop.clone(),
        ));

        shutdown.cancelled().await;
        drain(&shared).await;
        stop_docker(&shared, docker).await;
        // The heartbeat ran until now: it is the lease of the tasks still running.
        conn_stop.cancel();
        heartbeat_stop.cancel();
        for (name, handle) in [("broker connection", supervisor), ("heartbeat", heartbeat)] {
            match tokio::time::timeout(CLOSE_TIMEOUT, handle).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "{name} task failed"),
                Err(_) => tracing::warn!("{name} did not close in time"),
            }
        }
        tracing::info!("agent stopped");
        Ok(())
    }
}

/// The engine probe and the service report forwarder.
struct DockerTasks {
    probe: JoinHandle<()>,
    forwarder: Option<JoinHandle<()>>,
}

/// Probes the engine once (so the first heartbeat tells the truth), then starts the
/// periodic probe, the report forwarder and the service reconcilers.
async fn start_docker(shared: &Arc<Shared>) -> DockerTasks {
    if !shared.engine.probe().await {
        tracing::warn!(socket = %shared.engine.socket().display(), "no docker engine answers; docker work is not advertised");
    }
    let stop = shared.services_stop.clone();
    let probe = tokio::spawn(
        shared
            .engine
            .clone()
            .run_probe(shared.docker.probe_every, stop.clone()),
    );
    let receiver = shared
        .status_rx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let forwarder = receiver.map(|rx| tokio::spawn(forward::forward(shared.clone(), rx, stop)));
    shared.services.start().await;
    DockerTasks { probe, forwarder }
}

/// Stops the reconcilers (containers keep running without the agent) and lets their
/// last reports out while the connection is still up.
async fn stop_docker(shared: &Shared, tasks: DockerTasks) {
    if tokio::time::timeout(CLOSE_TIMEOUT, shared.services.wait())
        .await
        .is_err()
    {
        tracing::warn!("service reconcilers did not stop in time (a pull in progress?)");
    }
    shared.services_stop.cancel();
    let _ = tasks.probe.await;
    if let Some(forwarder) = tasks.forwarder {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, forwarder).await;
    }
}

/// Waits for running tasks, kills them after the grace period, and logs what happened.
async fn drain(shared: &Shared) {
    let timings = &shared.timings;
    let running = shared.running.count();
    shared.tracker.close();
    if running == 0 {
        tracing::info!("stopping: no task running");
    } else {
        tracing::info!(
            running,
            grace_secs = timings.shutdown_grace.as_secs(),
            "stopping: no new tasks; waiting for running ones"
        );
    }
    if tokio::time::timeout(timings.shutdown_grace, shared.tracker.wait())
        .await
        .is_ok()
    {
        if running > 0 {
            tracing::info!("all tasks finished within the grace period");
        }
        return;
    }
    let left = shared.running.task_ids();
    tracing::warn!(tasks = ?left, "tasks still running after the grace period; killing them");
    shared.running.kill_all();
    if tokio::time::timeout(timings.shutdown_kill_wait, shared.tracker.wait())
        .await
        .is_ok()
    {
        tracing::info!(
            killed = left.len(),
            "killed tasks reported as failed (agent_shutdown)"
        );
    } else {
        tracing::error!(tasks = ?shared.running.task_ids(), "tasks did not stop; the next start reports them as agent_restarted");
    }
}

fn heartbeat_config(shared: &Shared) -> HeartbeatConfig {
    let identity = &shared.identity;
    HeartbeatConfig {
        url: heartbeat::heartbeat_url(&identity.api_url, shared.agent_id),
        token: identity.enrollment.heartbeat_token.clone(),
        interval: Duration::from_secs(u64::from(
            identity.enrollment.heartbeat_interval_secs.max(1),
        )),
        capacity: identity.capacity,
        labels: identity.labels.clone(),
        docker: Some(shared.engine.clone()),
        trust: shared.trust.clone(),
        ca_file: crate::config::ca_file(&shared.state_dir),
        client_cert: crate::config::client_cert(&shared.state_dir),
    }
}
